"""python-sdk-bearer: the Python MCP SDK with a plain `Authorization: Bearer` header (a token
from `mcp-oidc token`) against `mcp-oidc dev`; and the same client without a token is refused
with the RFC 9728 challenge."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import anyio  # noqa: E402
import httpx2  # noqa: E402
from lib import assert_testuser, check, log, main, mcp_oidc_token, start_dev, structured, text_of  # noqa: E402
from mcp import Client  # noqa: E402
from mcp.client.streamable_http import streamable_http_client  # noqa: E402
from mcp.shared._httpx_utils import create_mcp_http_client  # noqa: E402


async def call(mcp_url: str, token: str) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    async with create_mcp_http_client(headers=headers) as http:
        async with Client(streamable_http_client(mcp_url, http_client=http)) as client:
            log(f"connected: protocol {client.protocol_version}")
            names = sorted(t.name for t in (await client.list_tools()).tools)
            check("whoami" in names, f"tools/list lacks whoami: {names}")
            who = structured(await client.call_tool("whoami", {}))
            log(f"whoami: {who}")
            assert_testuser(who, "whoami")
            check(mcp_url in who.get("aud", []), f"aud {who.get('aud')} does not name {mcp_url}")
            r = await client.call_tool("process_data", {"data": "x"})
            check("Processing for user: testuser" in text_of(r), f"process_data said {text_of(r)!r}")
            res = await client.read_resource("user://me/profile")
            check("testuser@example.com" in str(res), f"profile resource lacks the e-mail: {res}"[:300])
            prompt = await client.get_prompt("greeting")
            check("Test User" in str(prompt), f"greeting prompt does not name the user: {prompt}"[:300])


async def refused(mcp_url: str) -> None:
    # The SDK transport with no credentials must surface the 401.
    failed = None
    try:
        async with create_mcp_http_client() as http:
            with anyio.fail_after(15):
                async with Client(streamable_http_client(mcp_url, http_client=http), mode="legacy") as client:
                    await client.list_tools()
    except BaseException as e:  # noqa: BLE001
        failed = e
    check(failed is not None, "the SDK connected without a token")
    log(f"without a token the SDK fails: {type(failed).__name__}: {str(failed)[:200]}")
    r = httpx2.post(mcp_url, json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
                    headers={"Accept": "application/json, text/event-stream"}, timeout=5)
    check(r.status_code == 401, f"unauthenticated POST answered {r.status_code}")
    www = r.headers.get("www-authenticate", "")
    check("resource_metadata=" in www and www.lower().startswith("bearer"), f"bad WWW-Authenticate: {www!r}")


def scenario() -> None:
    _proc, mcp_url, issuer = start_dev()
    token = mcp_oidc_token(mcp_url)

    async def go():
        with anyio.fail_after(45):
            await call(mcp_url, token)
            await refused(mcp_url)

    anyio.run(go)


if __name__ == "__main__":
    main(scenario)
