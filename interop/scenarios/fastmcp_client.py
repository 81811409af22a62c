"""fastmcp-client: FastMCP's client against `mcp-oidc dev`: `Client(url, auth=<token>)`
calling whoami; then `auth="oauth"` completing FastMCP's own OAuth flow (discovery,
registration, PKCE, its loopback callback server) with a headless browser."""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import anyio  # noqa: E402
from fastmcp import Client  # noqa: E402
from lib import LOG_DIR, assert_testuser, check, log, main, mcp_oidc_token, start_dev, structured, text_of  # noqa: E402

HERE = Path(__file__).resolve().parent.parent


async def with_token(mcp_url: str, token: str) -> None:
    async with Client(mcp_url, auth=token) as client:
        tools = await client.list_tools()
        names = sorted(t.name for t in tools)
        check("whoami" in names, f"list_tools: {names}")
        result = await client.call_tool("whoami", {})
        who = result.data if isinstance(result.data, dict) else structured(result)
        log(f"whoami (bearer): {who}")
        assert_testuser(dict(who), "whoami")
        r = await client.call_tool("process_data", {"data": "x"})
        check("Processing for user: testuser" in text_of(r), f"process_data: {text_of(r)!r}")


async def with_oauth(mcp_url: str) -> None:
    browser_log = LOG_DIR / "browser.log"
    os.environ["BROWSER"] = f"{sys.executable} {HERE / 'headless_browser.py'} %s"
    os.environ["INTEROP_BROWSER_LOG"] = str(browser_log)
    async with Client(mcp_url, auth="oauth") as client:
        result = await client.call_tool("whoami", {})
        who = result.data if isinstance(result.data, dict) else structured(result)
        log(f"whoami (FastMCP OAuth): {who}")
        assert_testuser(dict(who), "whoami via FastMCP OAuth")
    text = browser_log.read_text() if browser_log.exists() else ""
    check("callback answered 200" in text, f"the browser did not complete the callback: {text[-300:]!r}")


def scenario() -> None:
    _proc, mcp_url, issuer = start_dev()
    token = mcp_oidc_token(mcp_url)

    async def go():
        with anyio.fail_after(60):
            await with_token(mcp_url, token)
            await with_oauth(mcp_url)

    anyio.run(go)


if __name__ == "__main__":
    main(scenario)
