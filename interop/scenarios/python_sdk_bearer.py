"""python-sdk-bearer: the Python MCP SDK with a plain `Authorization: Bearer` header (a token
from `mcp-oidc token`) against `mcp-oidc dev`; and the same client without a token is refused
with the RFC 9728 challenge.

python-sdk-hibernation (argument `hibernation`): the same client on `mcp-oidc serve
--session-hibernate-secs 1`, idle long enough for its session to hibernate, then calling
again: the server resumes the session (its log says so) and the client notices nothing."""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import anyio  # noqa: E402
import httpx2  # noqa: E402
from lib import (  # noqa: E402
    Proc,
    assert_testuser,
    check,
    log,
    main,
    mcp_oidc_token,
    start_dev,
    start_serve,
    structured,
    text_of,
)
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


async def across_hibernation(mcp_url: str, token: str, server: Proc) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    async with create_mcp_http_client(headers=headers) as http:
        async with Client(streamable_http_client(mcp_url, http_client=http), mode="legacy") as client:
            assert_testuser(structured(await client.call_tool("whoami", {})), "whoami")
            check("session restored" not in server.output(), "a session was restored before any idle time")
            log("idle for 3 s (the server hibernates sessions after 1 s)")
            await anyio.sleep(3)
            assert_testuser(structured(await client.call_tool("whoami", {})), "whoami after hibernation")
            r = await client.call_tool("process_data", {"data": "x"})
            check("Processing for user: testuser" in text_of(r), f"process_data said {text_of(r)!r}")
    check(
        "session restored from external store" in server.output(),
        f"the server's log does not show the session being resumed: {server.tail()}",
    )
    log("the session hibernated and was resumed under the same id")


def hibernation() -> None:
    _dev, _dev_mcp, issuer = start_dev()
    env = {**os.environ, "RUST_LOG": "info,rmcp::transport::streamable_http_server=debug"}
    server, mcp_url = start_serve("mcp-oidc-serve-hibernating", issuer, "--session-hibernate-secs", "1", env=env)
    token = mcp_oidc_token(mcp_url)

    async def go():
        with anyio.fail_after(45):
            await across_hibernation(mcp_url, token, server)

    anyio.run(go)


def scenario() -> None:
    if sys.argv[1:2] == ["hibernation"]:
        hibernation()
        return
    _proc, mcp_url, issuer = start_dev()
    token = mcp_oidc_token(mcp_url)

    async def go():
        with anyio.fail_after(45):
            await call(mcp_url, token)
            await refused(mcp_url)

    anyio.run(go)


if __name__ == "__main__":
    main(scenario)
