// Starts npm `oauth2-mock-server` as an independent JWT issuer on 127.0.0.1:PORT (issuer
// http://localhost:PORT). Its client_credentials grant signs the `aud` it is asked for; a
// token-signing hook adds a user's identity claims, as a corporate IdP would for a user.
//   node oauth2_mock_issuer.mjs PORT
import { createRequire } from 'node:module';
import { pathToFileURL } from 'node:url';
import path from 'node:path';

const prefix = process.env.INTEROP_NODE_PREFIX;
const require = createRequire(path.join(prefix, 'package.json'));
const { OAuth2Server, Events } = await import(pathToFileURL(require.resolve('oauth2-mock-server')).href);

const port = Number(process.argv[2]);
const server = new OAuth2Server();
await server.issuer.keys.generate('RS256');
server.issuer.url = `http://localhost:${port}`;
server.service.on(Events.BeforeTokenSigning, (token, req) => {
  const user = req.body?.interop_user;
  if (user) {
    Object.assign(token.payload, {
      sub: user,
      email: `${user}@example.com`,
      name: user === 'testuser' ? 'Test User' : user,
      client_id: req.body.client_id ?? 'interop',
    });
  }
});
await server.start(port, '127.0.0.1');
console.log(`oauth2-mock-server issuer ${server.issuer.url}`);
const stop = async () => { await server.stop(); process.exit(0); };
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
