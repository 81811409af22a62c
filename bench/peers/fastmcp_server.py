"""Reference server for bench/run: FastMCP with its JWT bearer verifier.

It verifies the access tokens of the mcp-oidc mock provider (RS256, keys from the
provider's JWKS) the same way `mcp-oidc serve` does: exact issuer, audience equal to
the resource URL requested with the token.  It serves the two tools the benchmark
calls, with the same answers as the demo server:

  whoami          the caller's claims
  process_data    "Processing for user: <sub>"

Usage (all flags required except --no-auth):
  python fastmcp_server.py --port P --jwks-uri URL --issuer URL --audience URL [--no-auth] [--stateful]

Stateless HTTP with JSON responses (the benchmark's main mode), or with --stateful
sessions (Mcp-Session-Id) with SSE replies.
"""

import argparse

from fastmcp import FastMCP
from fastmcp.server.auth import RemoteAuthProvider
from fastmcp.server.auth.providers.jwt import JWTVerifier
from fastmcp.server.dependencies import get_access_token


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--jwks-uri", required=True)
    p.add_argument("--issuer", required=True)
    p.add_argument("--audience", required=True)
    p.add_argument("--no-auth", action="store_true", help="serve without a verifier")
    p.add_argument("--stateful", action="store_true", help="sessions and SSE replies")
    return p.parse_args()


ARGS = parse_args()
PUBLIC_URL = f"http://localhost:{ARGS.port}"

auth = None
if not ARGS.no_auth:
    auth = RemoteAuthProvider(
        token_verifier=JWTVerifier(
            jwks_uri=ARGS.jwks_uri,
            issuer=ARGS.issuer,
            audience=ARGS.audience,
            algorithm="RS256",
        ),
        authorization_servers=[ARGS.issuer],
        base_url=PUBLIC_URL,
        resource_name="fastmcp-reference",
    )

mcp = FastMCP(name="fastmcp-reference", auth=auth)


def claims() -> dict:
    tok = get_access_token()
    return dict(tok.claims or {}) if tok is not None else {}


@mcp.tool
def whoami() -> dict:
    """Who is calling: the verified claims of the access token."""
    c = claims()
    keys = ("sub", "email", "name", "iss", "aud", "exp", "iat", "scope", "client_id")
    return {k: c.get(k) for k in keys}


@mcp.tool
def process_data(data: str) -> str:
    """Process some data on behalf of the calling user."""
    return "Processing for user: " + str(claims().get("sub", "anonymous"))


mcp.run(
    transport="http",
    host=ARGS.host,
    port=ARGS.port,
    path="/mcp",
    stateless_http=not ARGS.stateful,
    json_response=not ARGS.stateful,
    show_banner=False,
    log_level="warning",
    uvicorn_config={"access_log": False},
)
