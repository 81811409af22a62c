// Reference server for bench/run: the MCP TypeScript SDK behind its requireBearerAuth
// middleware, with a token verifier built on jose.
//
// It verifies the access tokens of the mcp-oidc mock provider the same way
// `mcp-oidc serve` and the FastMCP peer do: RS256 signature against the provider's
// JWKS, exact issuer, audience equal to the resource URL the token was requested for.
// Every request is verified in full (no verified-token cache; jose keeps only the
// fetched key set). It serves the two tools the benchmark calls, with the same answers
// as the FastMCP peer:
//
//   whoami          the caller's claims
//   process_data    "Processing for user: <sub>"
//
// Usage (after `npm ci` in this directory, which installs the versions pinned in
// package-lock.json):
//   node server.mjs --port P --jwks-uri URL --issuer URL --audience URL [--stateful] [--host H]
//
// Default: stateless Streamable HTTP with plain JSON answers, a fresh server and
// transport for every request (the SDK's stateless pattern). With --stateful: sessions
// (Mcp-Session-Id, one transport per session kept in a map) and SSE replies.

import { randomUUID } from 'node:crypto';
import { parseArgs } from 'node:util';

import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import { createMcpExpressApp } from '@modelcontextprotocol/sdk/server/express.js';
import { requireBearerAuth } from '@modelcontextprotocol/sdk/server/auth/middleware/bearerAuth.js';
import { InvalidTokenError } from '@modelcontextprotocol/sdk/server/auth/errors.js';
import { getOAuthProtectedResourceMetadataUrl } from '@modelcontextprotocol/sdk/server/auth/router.js';
import { isInitializeRequest } from '@modelcontextprotocol/sdk/types.js';
import { AjvJsonSchemaValidator } from '@modelcontextprotocol/sdk/validation/ajv';
import { createRemoteJWKSet, errors as joseErrors, jwtVerify } from 'jose';
import { z } from 'zod';

const USAGE =
  'usage: node server.mjs --port P --jwks-uri URL --issuer URL --audience URL [--stateful] [--host H]';

function options() {
  let parsed;
  try {
    parsed = parseArgs({
      options: {
        host: { type: 'string', default: '127.0.0.1' },
        port: { type: 'string' },
        'jwks-uri': { type: 'string' },
        issuer: { type: 'string' },
        audience: { type: 'string' },
        stateful: { type: 'boolean', default: false },
        help: { type: 'boolean', short: 'h', default: false },
      },
      strict: true,
      allowPositionals: false,
    }).values;
  } catch (err) {
    console.error(`${err.message}\n${USAGE}`);
    process.exit(2);
  }
  if (parsed.help) {
    console.log(USAGE);
    process.exit(0);
  }
  const missing = ['port', 'jwks-uri', 'issuer', 'audience'].filter((k) => parsed[k] === undefined);
  const port = Number(parsed.port);
  if (missing.length || !Number.isInteger(port) || port <= 0 || port > 65535) {
    console.error(
      (missing.length ? `missing --${missing.join(', --')}` : `bad --port ${parsed.port}`) + `\n${USAGE}`,
    );
    process.exit(2);
  }
  return { ...parsed, port };
}

const opts = options();
const resourceUrl = new URL(opts.audience);

// ---------------------------------------------------------------- token verification

// The key set is fetched on first use and refetched by jose when a token names a key id
// it does not know (with its own cooldown). Signature and claims are checked on every call.
const keySet = createRemoteJWKSet(new URL(opts['jwks-uri']));

const verifier = {
  async verifyAccessToken(token) {
    let payload;
    try {
      ({ payload } = await jwtVerify(token, keySet, {
        issuer: opts.issuer,
        audience: opts.audience,
        algorithms: ['RS256'],
      }));
    } catch (err) {
      if (err instanceof joseErrors.JOSEError) {
        throw new InvalidTokenError(`token rejected: ${err.code}`);
      }
      throw err;
    }
    const scope = typeof payload.scope === 'string' ? payload.scope : '';
    return {
      token,
      clientId: String(payload.client_id ?? payload.azp ?? ''),
      scopes: scope.split(' ').filter(Boolean),
      expiresAt: payload.exp,
      // jwtVerify has already required the audience to be this server's resource URL.
      resource: resourceUrl,
      extra: { claims: payload },
    };
  },
};

// ---------------------------------------------------------------- MCP server

const CLAIM_KEYS = ['sub', 'email', 'name', 'iss', 'aud', 'exp', 'iat', 'scope', 'client_id'];

function callerClaims(extra) {
  return extra?.authInfo?.extra?.claims ?? {};
}

// Stateless mode needs one McpServer per request (a server holds a single transport), so
// what can be shared between them is built once: the input schema (zod compiles each
// object schema on first use) and the JSON Schema validator (otherwise every server
// constructs its own Ajv instance). Both are options the SDK offers; neither skips work
// a request needs.
const processDataInput = z.object({ data: z.string() });
const jsonSchemaValidator = new AjvJsonSchemaValidator();

function buildServer() {
  const server = new McpServer(
    { name: 'ts-sdk-reference', version: '1.0.0' },
    { jsonSchemaValidator },
  );

  server.registerTool(
    'whoami',
    { description: 'Who is calling: the verified claims of the access token.' },
    async (extra) => {
      const claims = callerClaims(extra);
      const picked = {};
      for (const key of CLAIM_KEYS) picked[key] = claims[key] ?? null;
      return {
        content: [{ type: 'text', text: JSON.stringify(picked) }],
        structuredContent: picked,
      };
    },
  );

  server.registerTool(
    'process_data',
    {
      description: 'Process some data on behalf of the calling user.',
      inputSchema: processDataInput,
    },
    async (_args, extra) => {
      const sub = callerClaims(extra).sub ?? 'anonymous';
      return { content: [{ type: 'text', text: `Processing for user: ${sub}` }] };
    },
  );

  return server;
}

// ---------------------------------------------------------------- HTTP

// createMcpExpressApp adds the SDK's Host-header check for loopback binds and a JSON body parser.
const app = createMcpExpressApp({ host: opts.host });

const metadataUrl = getOAuthProtectedResourceMetadataUrl(resourceUrl);
const metadataPath = new URL(metadataUrl).pathname;

// RFC 9728 protected-resource metadata; bench/run also polls it to see that the server is up.
app.get(metadataPath, (_req, res) => {
  res.json({
    resource: opts.audience,
    authorization_servers: [opts.issuer],
    bearer_methods_supported: ['header'],
    resource_name: 'ts-sdk-reference',
  });
});

const bearer = requireBearerAuth({ verifier, resourceMetadataUrl: metadataUrl });

function rpcError(res, status, message) {
  res.status(status).json({ jsonrpc: '2.0', error: { code: -32000, message }, id: null });
}

function internalError(res, err) {
  console.error('error handling an MCP request:', err);
  if (!res.headersSent) {
    res.status(500).json({ jsonrpc: '2.0', error: { code: -32603, message: 'Internal error' }, id: null });
  }
}

if (!opts.stateful) {
  // Stateless: no sessions; each POST gets its own server and transport, closed with the response.
  app.post('/mcp', bearer, async (req, res) => {
    const server = buildServer();
    const transport = new StreamableHTTPServerTransport({
      sessionIdGenerator: undefined,
      enableJsonResponse: true,
    });
    res.on('close', () => {
      transport.close();
      server.close();
    });
    try {
      await server.connect(transport);
      await transport.handleRequest(req, res, req.body);
    } catch (err) {
      internalError(res, err);
    }
  });
  const notAllowed = (_req, res) => rpcError(res, 405, 'Method not allowed: this server is stateless');
  app.get('/mcp', bearer, notAllowed);
  app.delete('/mcp', bearer, notAllowed);
} else {
  // Stateful: a transport (and its server) per session, found by the Mcp-Session-Id header.
  const sessions = new Map();

  app.post('/mcp', bearer, async (req, res) => {
    try {
      const sid = req.headers['mcp-session-id'];
      let transport = typeof sid === 'string' ? sessions.get(sid) : undefined;
      if (!transport) {
        if (sid !== undefined || !isInitializeRequest(req.body)) {
          rpcError(res, sid !== undefined ? 404 : 400,
            sid !== undefined ? 'Session not found' : 'Bad Request: no valid session ID');
          return;
        }
        transport = new StreamableHTTPServerTransport({
          sessionIdGenerator: () => randomUUID(),
          enableJsonResponse: false,
          onsessioninitialized: (id) => {
            sessions.set(id, transport);
          },
        });
        transport.onclose = () => {
          if (transport.sessionId) sessions.delete(transport.sessionId);
        };
        await buildServer().connect(transport);
      }
      await transport.handleRequest(req, res, req.body);
    } catch (err) {
      internalError(res, err);
    }
  });

  // GET opens the session's standalone SSE stream; DELETE ends the session.
  const bySession = async (req, res) => {
    const sid = req.headers['mcp-session-id'];
    const transport = typeof sid === 'string' ? sessions.get(sid) : undefined;
    if (!transport) {
      rpcError(res, sid === undefined ? 400 : 404, sid === undefined ? 'Missing Mcp-Session-Id' : 'Session not found');
      return;
    }
    try {
      await transport.handleRequest(req, res);
    } catch (err) {
      internalError(res, err);
    }
  };
  app.get('/mcp', bearer, bySession);
  app.delete('/mcp', bearer, bySession);
}

const httpServer = app.listen(opts.port, opts.host, (err) => {
  if (err) {
    console.error(`cannot listen on ${opts.host}:${opts.port}: ${err.message}`);
    process.exit(1);
  }
});
httpServer.on('error', (err) => {
  console.error(`HTTP server error: ${err.message}`);
  process.exit(1);
});
// Nagle's algorithm would hold back the small second write of a response (headers and
// body go out separately) until the client's delayed ACK, about 40 ms on Linux, which
// would make this peer look slow for reasons unrelated to the SDK. Node's HTTP server
// normally disables it already; set it explicitly on every accepted socket to be sure.
httpServer.on('connection', (socket) => socket.setNoDelay(true));

for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => {
    httpServer.close();
    httpServer.closeAllConnections();
    process.exit(0);
  });
}
