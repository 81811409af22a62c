"""reference-provider: the Python `oidc-provider-mock` 0.4.8 as the OpenID provider (opaque
access tokens), `mcp-oidc serve --token-validation userinfo` verifying them, and the Python
MCP SDK calling whoami: once with a token a script obtained (authorize POST sub=testuser, code
exchange with PKCE), once through the SDK's own OAuth discovery + registration + login."""

import base64
import hashlib
import secrets
import sys
from pathlib import Path
from urllib.parse import urlencode

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import anyio  # noqa: E402
import httpx2  # noqa: E402
from lib import (  # noqa: E402
    EMAIL,
    NAME,
    USER,
    Proc,
    alogin,
    assert_testuser,
    check,
    free_port,
    log,
    login,
    main,
    start_serve,
    structured,
    wait_http,
)
from mcp import Client  # noqa: E402
from mcp.client.auth import AuthorizationCodeResult, OAuthClientProvider  # noqa: E402
from mcp.client.streamable_http import streamable_http_client  # noqa: E402
from mcp.shared._httpx_utils import create_mcp_http_client  # noqa: E402
from mcp.shared.auth import OAuthClientMetadata  # noqa: E402

VENV_BIN = Path(sys.executable).parent
REDIRECT = "http://localhost:3031/callback"


def script_token(issuer: str) -> str:
    """What a shell script would do: discover, register, authorize as testuser, exchange."""
    with httpx2.Client(timeout=10) as http:
        meta = http.get(f"{issuer}/.well-known/openid-configuration").json()
        check(meta.get("issuer") == issuer, f"provider calls itself {meta.get('issuer')!r}, expected {issuer!r}")
        reg = http.post(
            meta["registration_endpoint"],
            json={"redirect_uris": [REDIRECT], "token_endpoint_auth_method": "none", "client_name": "interop script"},
        )
        check(reg.status_code in (200, 201), f"registration answered {reg.status_code}: {reg.text[:200]}")
        client_id = reg.json()["client_id"]
        verifier = secrets.token_urlsafe(48)
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        state = secrets.token_urlsafe(16)
        url = meta["authorization_endpoint"] + "?" + urlencode(
            {
                "response_type": "code",
                "client_id": client_id,
                "redirect_uri": REDIRECT,
                "scope": "openid profile email",
                "state": state,
                "code_challenge": challenge,
                "code_challenge_method": "S256",
            }
        )
        params = login(url)
        check(params.get("state") == state, f"state mismatch: {params.get('state')!r}")
        tok = http.post(
            meta["token_endpoint"],
            data={
                "grant_type": "authorization_code",
                "code": params["code"],
                "redirect_uri": REDIRECT,
                "client_id": client_id,
                "code_verifier": verifier,
            },
        )
        check(tok.status_code == 200, f"code exchange answered {tok.status_code}: {tok.text[:300]}")
        access = tok.json()["access_token"]
        check(access.count(".") != 2, "expected an opaque access token from oidc-provider-mock, got a JWT")
        return access


async def whoami_with_bearer(mcp_url: str, token: str, issuer: str) -> None:
    async with create_mcp_http_client(headers={"Authorization": f"Bearer {token}"}) as http:
        async with Client(streamable_http_client(mcp_url, http_client=http)) as client:
            who = structured(await client.call_tool("whoami", {}))
            log(f"whoami (script token): {who}")
            assert_testuser(who, "whoami")
            check(who.get("iss") == issuer, f"iss {who.get('iss')!r} != {issuer!r}")


async def whoami_with_sdk_oauth(mcp_url: str, issuer: str) -> None:
    pending = {}
    urls = []

    class Storage:
        tokens = client = None

        async def get_tokens(self):
            return self.tokens

        async def set_tokens(self, t):
            self.tokens = t

        async def get_client_info(self):
            return self.client

        async def set_client_info(self, c):
            self.client = c

    async def redirect(url: str) -> None:
        urls.append(url)
        pending.update(await alogin(url))

    async def callback() -> AuthorizationCodeResult:
        return AuthorizationCodeResult(code=pending["code"], state=pending.get("state"), iss=pending.get("iss"))

    provider = OAuthClientProvider(
        server_url=mcp_url,
        client_metadata=OAuthClientMetadata(
            client_name="interop reference-provider",
            redirect_uris=[REDIRECT],
            token_endpoint_auth_method="none",
        ),
        storage=Storage(),
        redirect_handler=redirect,
        callback_handler=callback,
    )
    async with create_mcp_http_client(auth=provider) as http:
        async with Client(streamable_http_client(mcp_url, http_client=http), mode="legacy") as client:
            who = structured(await client.call_tool("whoami", {}))
            log(f"whoami (SDK OAuth): {who}")
            assert_testuser(who, "whoami via SDK OAuth")
            check(len(urls) == 1 and urls[0].startswith(issuer), f"SDK authorized at {urls}")


def scenario() -> None:
    port = free_port()
    issuer = f"http://localhost:{port}"
    idp = Proc("oidc-provider-mock", [VENV_BIN / "oidc-provider-mock", "--port", str(port)])
    wait_http(f"{issuer}/.well-known/openid-configuration", proc=idp)
    r = httpx2.put(f"{issuer}/users/{USER}", json={"email": EMAIL, "name": NAME}, timeout=5)
    check(r.status_code == 204, f"PUT /users/{USER} answered {r.status_code}: {r.text[:200]}")
    _serve, mcp_url = start_serve("mcp-oidc-serve", issuer, "--token-validation", "userinfo")
    token = script_token(issuer)

    async def go():
        with anyio.fail_after(60):
            await whoami_with_bearer(mcp_url, token, issuer)
            await whoami_with_sdk_oauth(mcp_url, issuer)
            # A token the provider never issued is refused.
            r = httpx2.post(mcp_url, json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
                            headers={"Authorization": "Bearer " + "x" * 42,
                                     "Accept": "application/json, text/event-stream"}, timeout=10)
            check(r.status_code == 401, f"a made-up opaque token got {r.status_code}")

    anyio.run(go)


if __name__ == "__main__":
    main(scenario)
