"""oauth2-mock-server: npm `oauth2-mock-server` as a third, independent JWT issuer (RS256,
its own JWKS). `mcp-oidc serve --issuer <it> --audience api://mcp-interop` must accept the
tokens it signs for that audience and refuse ones signed for another audience; the Python
MCP SDK calls whoami with an accepted token."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import anyio  # noqa: E402
import httpx2  # noqa: E402
from lib import (  # noqa: E402
    NODE_BIN,
    NODE_PREFIX,
    Proc,
    assert_testuser,
    check,
    free_port,
    log,
    main,
    node_env,
    npm_tool,
    start_serve,
    structured,
    wait_http,
)
from mcp import Client  # noqa: E402
from mcp.client.streamable_http import streamable_http_client  # noqa: E402
from mcp.shared._httpx_utils import create_mcp_http_client  # noqa: E402

HERE = Path(__file__).resolve().parent.parent
AUDIENCE = "api://mcp-interop"


def token(issuer: str, aud: str, user: str | None = "testuser") -> str:
    data = {"grant_type": "client_credentials", "aud": aud, "scope": "openid profile email",
            "client_id": "interop-client"}
    if user:
        data["interop_user"] = user
    r = httpx2.post(f"{issuer}/token", data=data, timeout=10)
    check(r.status_code == 200, f"oauth2-mock-server /token answered {r.status_code}: {r.text[:200]}")
    return r.json()["access_token"]


def post_status(mcp_url: str, tok: str) -> httpx2.Response:
    return httpx2.post(mcp_url, json={"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "interop", "version": "1"}}},
        headers={"Authorization": f"Bearer {tok}", "Accept": "application/json, text/event-stream"}, timeout=10)


def scenario() -> None:
    npm_tool("oauth2-mock-server")
    port = free_port()
    issuer = f"http://localhost:{port}"
    idp = Proc("oauth2-mock-server", [NODE_BIN / "node", HERE / "oauth2_mock_issuer.mjs", str(port)],
               env=node_env({"INTEROP_NODE_PREFIX": str(NODE_PREFIX)}))
    idp.wait_for(r"issuer http://", timeout=20)
    wait_http(f"{issuer}/.well-known/openid-configuration", proc=idp)
    _serve, mcp_url = start_serve("mcp-oidc-serve", issuer, "--audience", AUDIENCE)

    good = token(issuer, AUDIENCE)

    async def go():
        with anyio.fail_after(30):
            async with create_mcp_http_client(headers={"Authorization": f"Bearer {good}"}) as http:
                async with Client(streamable_http_client(mcp_url, http_client=http)) as client:
                    who = structured(await client.call_tool("whoami", {}))
                    log(f"whoami: {who}")
                    assert_testuser(who, "whoami")
                    check(who.get("iss") == issuer, f"iss {who.get('iss')!r}")
                    check(AUDIENCE in who.get("aud", []), f"aud {who.get('aud')}")

    anyio.run(go)

    wrong = post_status(mcp_url, token(issuer, "api://someone-else"))
    check(wrong.status_code == 401 and "invalid_token" in wrong.headers.get("www-authenticate", ""),
          f"a token for another audience got {wrong.status_code} {wrong.headers.get('www-authenticate')!r}")
    nosub = post_status(mcp_url, token(issuer, AUDIENCE, user=None))
    check(nosub.status_code == 401, f"a token without sub got {nosub.status_code}")
    log("refused: wrong audience, missing sub")


if __name__ == "__main__":
    main(scenario)
