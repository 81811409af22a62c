"""The official Python MCP SDK's OAuth client (`OAuthClientProvider`) against `mcp-oidc dev`.

    python_sdk_oauth.py oauth         python-sdk-oauth: discovery (401 -> protected-resource
                                      metadata -> provider metadata), dynamic client
                                      registration, authorization code + PKCE with a headless
                                      login, initialize / tools/list / tools/call, and a refresh
                                      through the SDK's own refresh path.
    python_sdk_oauth.py step-up       python-sdk-step-up: a client registered beforehand (as a
                                      pre-registered client); `write_note` answers 403
                                      insufficient_scope and the SDK re-authorizes with
                                      mcp:write added, then the call succeeds.
    python_sdk_oauth.py step-up-dcr   python-sdk-step-up-dcr: the same step-up with the client
                                      the SDK registered itself.

By default `mcp-oidc dev` makes the MCP server its clients' authorization server (an OAuth
proxy in front of the mock provider: registration, consent, upstream login); with `--direct`
as second argument the clients register and log in at the mock provider itself.
"""

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import anyio  # noqa: E402
import httpx2  # noqa: E402
from lib import alogin, authorization_server, assert_testuser, check, log, main, start_dev, structured, text_of  # noqa: E402
from mcp import Client  # noqa: E402
from mcp.client.auth import AuthorizationCodeResult, OAuthClientProvider  # noqa: E402
from mcp.client.streamable_http import streamable_http_client  # noqa: E402
from mcp.shared._httpx_utils import create_mcp_http_client  # noqa: E402
from mcp.shared.auth import OAuthClientInformationFull, OAuthClientMetadata, OAuthToken  # noqa: E402

REDIRECT = "http://localhost:3030/callback"


class MemoryStorage:
    """A TokenStorage keeping everything in memory, recording each token set."""

    def __init__(self):
        self.tokens: OAuthToken | None = None
        self.client: OAuthClientInformationFull | None = None
        self.history: list[OAuthToken] = []

    async def get_tokens(self):
        return self.tokens

    async def set_tokens(self, tokens):
        self.tokens = tokens
        self.history.append(tokens)

    async def get_client_info(self):
        return self.client

    async def set_client_info(self, client_info):
        self.client = client_info


class HeadlessBrowser:
    """redirect_handler + callback_handler: logs in as testuser at the URL the SDK opens."""

    def __init__(self):
        self.authorize_urls: list[str] = []
        self._pending: dict[str, str] | None = None

    async def redirect(self, url: str) -> None:
        log(f"SDK opens {url}")
        self.authorize_urls.append(url)
        self._pending = await alogin(url)
        log(f"browser steps: {self._pending['_steps']}")

    async def callback(self) -> AuthorizationCodeResult:
        check(self._pending is not None, "callback_handler called before redirect_handler")
        p, self._pending = self._pending, None
        log(f"callback: code={p['code'][:8]}..., state={p.get('state', '')[:8]}..., iss={p.get('iss')}")
        return AuthorizationCodeResult(code=p["code"], state=p.get("state"), iss=p.get("iss"))


async def preregister(issuer: str) -> OAuthClientInformationFull:
    """Registers a public client without a scope restriction, the way an administrator
    pre-registers one."""
    async with httpx2.AsyncClient(timeout=10) as http:
        meta = await http.get(f"{issuer}/.well-known/oauth-authorization-server")
        if meta.status_code != 200:
            meta = await http.get(f"{issuer}/.well-known/openid-configuration")
        meta = meta.json()
        r = await http.post(meta["registration_endpoint"], json={
            "client_name": "interop pre-registered", "redirect_uris": [REDIRECT],
            "grant_types": ["authorization_code", "refresh_token"], "response_types": ["code"],
            "token_endpoint_auth_method": "none"})
        check(r.status_code in (200, 201), f"registration answered {r.status_code}: {r.text[:200]}")
        info = OAuthClientInformationFull.model_validate(r.json())
        info.issuer = issuer
        return info


async def scenario_async(mode: str, mcp_url: str, issuer: str) -> None:
    storage = MemoryStorage()
    if mode == "step-up":
        storage.client = await preregister(issuer)
    browser = HeadlessBrowser()
    provider = OAuthClientProvider(
        server_url=mcp_url,
        client_metadata=OAuthClientMetadata(
            client_name="interop python-sdk-oauth",
            redirect_uris=[REDIRECT],
            grant_types=["authorization_code", "refresh_token"],
            response_types=["code"],
            token_endpoint_auth_method="none",
        ),
        storage=storage,
        redirect_handler=browser.redirect,
        callback_handler=browser.callback,
    )
    async with create_mcp_http_client(auth=provider) as http:
        async with Client(streamable_http_client(mcp_url, http_client=http), mode="legacy") as client:
            log(f"connected: protocol {client.protocol_version}, server {client.server_info}")
            check(len(browser.authorize_urls) == 1, f"expected one authorization, saw {len(browser.authorize_urls)}")
            auth_url = browser.authorize_urls[0]
            check(auth_url.startswith(f"{issuer}/"), f"SDK authorized at {auth_url}, not at the issuer {issuer}")
            check("code_challenge_method=S256" in auth_url, "no PKCE S256 in the authorization URL")
            check("resource=" in auth_url, "no RFC 8707 resource in the authorization URL")
            check(storage.client is not None and storage.client.client_id, "no client registration")

            tools = await client.list_tools()
            names = sorted(t.name for t in tools.tools)
            log(f"tools: {names}")
            for want in ("whoami", "process_data"):
                check(want in names, f"tools/list lacks {want}: {names}")
            # mcp-oidc lists only the tools the token may call: write_note needs mcp:write.
            check("write_note" not in names, f"write_note listed for a token without mcp:write: {names}")

            who = structured(await client.call_tool("whoami", {}))
            log(f"whoami: {who}")
            assert_testuser(who, "whoami")
            check(mcp_url in who.get("aud", []), f"token aud {who.get('aud')} does not name {mcp_url}")
            check(who.get("iss") == issuer, f"iss {who.get('iss')!r} != {issuer!r}")
            check(who.get("client_id") == storage.client.client_id, "token client_id is not the registered client")

            if mode == "oauth":
                await refresh(client, provider, storage, browser, who)
            else:
                await step_up(client, browser, who)


async def refresh(client, provider, storage, browser, who: dict) -> None:
    # Refresh through the SDK's own path: mark the access token expired.
    first = storage.tokens
    check(first is not None and first.refresh_token, "the provider issued no refresh token")
    provider.context.token_expiry_time = time.time() - 1
    who2 = structured(await client.call_tool("whoami", {}))
    check(len(browser.authorize_urls) == 1, "the SDK re-authorized instead of refreshing")
    second = storage.tokens
    check(second is not first and second.access_token != first.access_token, "no new access token after refresh")
    check(second.refresh_token and second.refresh_token != first.refresh_token, "refresh token did not rotate")
    assert_testuser(who2, "whoami after refresh")
    check(who2.get("iat", 0) >= who.get("iat", 0), "refreshed token is older than the first")
    log(f"refreshed: iat {who.get('iat')} -> {who2.get('iat')}, scopes {who2.get('scopes')}")

    r = await client.call_tool("process_data", {"data": "hello"})
    check(f"Processing for user: {who['sub']}" in text_of(r), f"process_data said {text_of(r)!r}")


async def step_up(client, browser, who2: dict) -> None:
    # Step-up: write_note needs mcp:write, which the first grant lacks.
    check("mcp:write" not in (who2.get("scopes") or []), f"first grant already has mcp:write: {who2}")
    r = await client.call_tool("write_note", {"text": "hello from the Python SDK"})
    check(not r.is_error, f"write_note failed after step-up: {text_of(r)!r}")
    check("Saved a note" in text_of(r), f"write_note said {text_of(r)!r}")
    check(
        len(browser.authorize_urls) == 2,
        f"expected a second (step-up) authorization, saw {len(browser.authorize_urls)} in total",
    )
    step_up_url = browser.authorize_urls[1]
    check("mcp%3Awrite" in step_up_url, f"step-up authorization does not ask for mcp:write: {step_up_url}")
    who3 = structured(await client.call_tool("whoami", {}))
    check("mcp:write" in who3.get("scopes", []), f"token after step-up lacks mcp:write: {who3.get('scopes')}")
    for s in who2.get("scopes", []):
        check(s in who3.get("scopes", []), f"step-up lost the earlier scope {s}: {who3.get('scopes')}")
    names = sorted(t.name for t in (await client.list_tools()).tools)
    check("write_note" in names, f"write_note still hidden after the step-up: {names}")
    log(f"step-up ok: scopes {who3.get('scopes')}, tools {names}")


def scenario() -> None:
    mode = sys.argv[1] if len(sys.argv) > 1 else "oauth"
    direct = "--direct" in sys.argv[2:]
    check(mode in ("oauth", "step-up", "step-up-dcr"), f"unknown mode {mode}")
    _proc, mcp_url, _provider = start_dev(extra=["--direct"] if direct else [])
    issuer = authorization_server(mcp_url)
    log(f"authorization server: {issuer} ({'the provider, --direct' if direct else 'the OAuth proxy'})")

    async def go():
        with anyio.fail_after(90):
            await scenario_async(mode, mcp_url, issuer)

    anyio.run(go)


if __name__ == "__main__":
    main(scenario)
