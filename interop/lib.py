"""Helpers shared by the interop scenarios: processes on free loopback ports, the headless
login used by every OAuth flow, and tokens from `mcp-oidc token`.

Every process started here is killed when the scenario ends (normally, on an exception, or
on a signal); the harness additionally kills the scenario's whole process group.
"""

from __future__ import annotations

import atexit
import html
from html.parser import HTMLParser
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx2

ROOT = Path(__file__).resolve().parent.parent
TARGET = ROOT / "target"
BIN = Path(os.environ.get("MCP_OIDC_BIN", TARGET / "release" / "mcp-oidc"))
CONFORMANCE_BIN = Path(os.environ.get("MCP_OIDC_CONFORMANCE_BIN", TARGET / "release" / "examples" / "conformance"))
NODE_PREFIX = Path(os.environ.get("INTEROP_NODE_PREFIX", TARGET / "interop" / "node"))
NODE_BIN = NODE_PREFIX / "node_modules" / "node" / "bin"
LOG_DIR = Path(os.environ.get("INTEROP_LOG_DIR", TARGET / "interop" / "logs" / "adhoc"))

USER = "testuser"
EMAIL = "testuser@example.com"
NAME = "Test User"

_children: list[subprocess.Popen] = []


class ScenarioFailure(Exception):
    """A check failed: the message is the reason printed on the FAIL line."""


def check(cond: object, reason: str) -> None:
    if not cond:
        raise ScenarioFailure(reason)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _kill_children() -> None:
    for p in reversed(_children):
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except (ProcessLookupError, PermissionError):
                pass
    deadline = time.monotonic() + 3
    for p in _children:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
    _children.clear()


atexit.register(_kill_children)


def _on_signal(signum, _frame):
    _kill_children()
    sys.exit(128 + signum)


signal.signal(signal.SIGTERM, _on_signal)
signal.signal(signal.SIGINT, _on_signal)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def node_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for the pinned Node 22 and the pinned npm tools."""
    env = dict(os.environ)
    env["PATH"] = f"{NODE_BIN}:{NODE_PREFIX / 'node_modules' / '.bin'}:{env.get('PATH', '')}"
    env.setdefault("NO_COLOR", "1")
    if extra:
        env.update(extra)
    return env


def npm_tool(name: str) -> Path:
    path = NODE_PREFIX / "node_modules" / ".bin" / name
    check(path.exists(), f"tool missing: {_shown(path)} (npm install failed?)")
    check((NODE_BIN / "node").exists(), "tool missing: Node 22 (npm package node@22)")
    return path


class Proc:
    """A background process whose output goes to a log file."""

    def __init__(self, name: str, cmd: list[str], env: dict[str, str] | None = None, cwd: Path | None = None):
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.log_path = LOG_DIR / f"{name}.log"
        self._log = open(self.log_path, "wb")
        log(f"start {name}: {' '.join(str(c) for c in cmd)}")
        self.p = subprocess.Popen(
            [str(c) for c in cmd],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )
        _children.append(self.p)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for(self, pattern: str, timeout: float = 30) -> re.Match:
        """Waits until the output matches `pattern`."""
        deadline = time.monotonic() + timeout
        rx = re.compile(pattern, re.M)
        while time.monotonic() < deadline:
            m = rx.search(self.output())
            if m:
                return m
            if self.p.poll() is not None:
                raise ScenarioFailure(f"{self.name} exited with {self.p.returncode}: {self.tail()}")
            time.sleep(0.05)
        raise ScenarioFailure(f"{self.name}: no /{pattern}/ within {timeout}s: {self.tail()}")

    def tail(self, n: int = 5) -> str:
        lines = [line for line in self.output().splitlines() if line.strip()]
        return " | ".join(lines[-n:])

    def stop(self) -> None:
        if self.p.poll() is None:
            try:
                os.killpg(self.p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(self.p.pid, signal.SIGKILL)


def wait_http(url: str, timeout: float = 30, proc: Proc | None = None) -> None:
    """Waits until `url` answers anything over HTTP."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if proc is not None and proc.p.poll() is not None:
            raise ScenarioFailure(f"{proc.name} exited with {proc.p.returncode}: {proc.tail()}")
        try:
            httpx2.get(url, timeout=2)
            return
        except httpx2.HTTPError as e:
            last = str(e)
        time.sleep(0.1)
    raise ScenarioFailure(f"{url} not reachable within {timeout}s: {last}")


def _shown(path: Path) -> str:
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)


def require_binary(path: Path) -> Path:
    check(path.exists(), f"binary missing: {_shown(path)} (build failed?)")
    return path


def start_dev(name: str = "mcp-oidc-dev", extra: list[str] | None = None) -> tuple[Proc, str, str]:
    """`mcp-oidc dev` on free ports: returns the process, the MCP URL and the mock provider's
    issuer. By default the MCP server is its clients' authorization server (OAuth proxy, the
    provider upstream); with `--direct` clients log in at the provider itself."""
    proc = Proc(name, [require_binary(BIN), "dev", "--port", "0", "--idp-port", "0", *(extra or [])])
    mcp = proc.wait_for(r"MCP server\s+(http://\S+)").group(1)
    issuer = proc.wait_for(r"OpenID provider\s+(http://\S+)").group(1)
    wait_http(f"{issuer}/.well-known/openid-configuration", proc=proc)
    return proc, mcp, issuer


def start_serve(name: str, issuer: str, *args: str, env: dict[str, str] | None = None) -> tuple[Proc, str]:
    """`mcp-oidc serve` on a free port protecting the demo server: returns the MCP URL."""
    port = free_port()
    base = f"http://localhost:{port}"
    proc = Proc(
        name,
        [require_binary(BIN), "serve", "--issuer", issuer, "--bind", f"127.0.0.1:{port}", "--base-url", base, *args],
        env=env,
    )
    wait_http(f"{base}/.well-known/oauth-protected-resource/mcp", proc=proc)
    return proc, f"{base}/mcp"


def mcp_oidc_token(server: str, *args: str) -> str:
    """An access token for the MCP server at `server` from `mcp-oidc token` (the real
    authorization-code + PKCE flow at the authorization server its metadata names)."""
    r = subprocess.run(
        [str(require_binary(BIN)), "token", "--user", USER, "--server", server, *args],
        capture_output=True,
        text=True,
        timeout=30,
    )
    check(r.returncode == 0, f"mcp-oidc token failed ({r.returncode}): {r.stderr.strip()[-300:]}")
    token = r.stdout.strip()
    check(token and " " not in token, f"mcp-oidc token printed no token: {r.stdout[:200]!r}")
    return token


class _Forms(HTMLParser):
    """The POST forms of a page: action, fields (hidden and text inputs) and submit buttons."""

    def __init__(self):
        super().__init__()
        self.forms: list[dict] = []
        self._form: dict | None = None

    def handle_starttag(self, tag, attrs):
        a = {k: (v or "") for k, v in attrs}
        if tag == "form":
            self._form = {"method": a.get("method", "get").lower(), "action": a.get("action"), "fields": {},
                          "text": [], "buttons": []}
            self.forms.append(self._form)
        elif self._form is not None and tag == "input":
            kind = a.get("type", "text").lower()
            if kind in ("hidden", "text", "email"):
                self._form["fields"][a.get("name", "")] = a.get("value", "")
                if kind != "hidden":
                    self._form["text"].append(a.get("name", ""))
            elif kind == "submit" and a.get("name"):
                self._form["buttons"].append((a["name"], a.get("value", "")))
        elif self._form is not None and tag == "button" and a.get("name"):
            self._form["buttons"].append((a["name"], a.get("value", "")))

    def handle_endtag(self, tag):
        if tag == "form":
            self._form = None


def _choose_form(page_url: str, body: str, sub: str) -> tuple[str, dict[str, str]]:
    """What a user would submit on this page: the login form (typing `sub`), or the consent
    form (pressing approve)."""
    parser = _Forms()
    parser.feed(body)
    forms = [f for f in parser.forms if f["method"] == "post"]
    check(forms, f"no form on {page_url} ({body[:200]!r})")
    login_forms = [f for f in forms if "sub" in f["text"]]
    form = login_forms[0] if login_forms else forms[0]
    data = dict(form["fields"])
    if login_forms:
        data["sub"] = sub
    else:
        approve = [b for b in form["buttons"] if b[1].lower() in ("approve", "allow", "accept", "yes")]
        if approve:
            data[approve[0][0]] = approve[0][1]
    action = urljoin(page_url, html.unescape(form["action"])) if form["action"] else page_url
    return action, data


def _same_endpoint(a: str, b: str) -> bool:
    x, y = urlsplit(a), urlsplit(b)
    return (x.scheme, x.netloc, x.path) == (y.scheme, y.netloc, y.path)


def _query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


class _Walk:
    """One authorization in a headless browser: follow redirects, sign in as `sub`, approve
    consent, and stop at the redirect to the client's `redirect_uri` (not followed)."""

    def __init__(self, authorize_url: str, sub: str):
        self.sub = sub
        self.target = _query(authorize_url).get("redirect_uri")
        self.trail: list[str] = []

    def next_request(self, response: httpx2.Response) -> tuple[str, str, dict | None] | dict[str, str]:
        url = str(response.request.url)
        self.trail.append(f"{response.request.method} {url.split('?')[0]} -> {response.status_code}")
        if response.status_code in (301, 302, 303, 307, 308):
            location = urljoin(url, response.headers.get("location", ""))
            done = _same_endpoint(location, self.target) if self.target else ("code=" in location or "error=" in location)
            if done:
                params = _query(location)
                if "code" not in params:
                    raise ScenarioFailure(
                        f"the authorization was refused: error={params.get('error')!r} "
                        f"error_description={params.get('error_description')!r} "
                        f"(redirect to {location}; steps: {'; '.join(self.trail)})"
                    )
                params["_location"] = location
                params["_steps"] = "; ".join(self.trail)
                return params
            return ("GET", location, None)
        check(response.status_code == 200,
              f"{url} answered {response.status_code}: {response.text[:300]!r} (steps: {'; '.join(self.trail)})")
        action, data = _choose_form(url, response.text, self.sub)
        return ("POST", action, data)


def login(authorize_url: str, sub: str = USER) -> dict[str, str]:
    """Completes an authorization like a user in a browser, without one: follows redirects
    (keeping cookies), signs in at the provider's form as `sub`, approves a consent page, and
    returns the query of the final redirect to the client (code, state, iss, plus `_location`)
    without following it."""
    walk = _Walk(authorize_url, sub)
    with httpx2.Client(timeout=10, follow_redirects=False) as http:
        response = http.get(authorize_url)
        for _ in range(20):
            step = walk.next_request(response)
            if isinstance(step, dict):
                return step
            method, url, data = step
            response = http.request(method, url, data=data)
    raise ScenarioFailure(f"authorization did not finish in 20 steps: {'; '.join(walk.trail)}")


async def alogin(authorize_url: str, sub: str = USER) -> dict[str, str]:
    walk = _Walk(authorize_url, sub)
    async with httpx2.AsyncClient(timeout=10, follow_redirects=False) as http:
        response = await http.get(authorize_url)
        for _ in range(20):
            step = walk.next_request(response)
            if isinstance(step, dict):
                return step
            method, url, data = step
            response = await http.request(method, url, data=data)
    raise ScenarioFailure(f"authorization did not finish in 20 steps: {'; '.join(walk.trail)}")


def authorization_server(mcp_url: str) -> str:
    """The first authorization server named by the server's protected-resource metadata."""
    u = urlsplit(mcp_url)
    prm = httpx2.get(f"{u.scheme}://{u.netloc}/.well-known/oauth-protected-resource{u.path}", timeout=5)
    check(prm.status_code == 200, f"protected-resource metadata answered {prm.status_code}")
    servers = prm.json().get("authorization_servers") or []
    check(servers, f"no authorization_servers in {prm.text[:200]}")
    return servers[0]


def structured(result) -> dict:
    """The structured content of a CallToolResult (or its JSON text)."""
    data = getattr(result, "structured_content", None) or getattr(result, "structuredContent", None)
    if data:
        return dict(data)
    for block in getattr(result, "content", []) or []:
        text = getattr(block, "text", None)
        if text:
            try:
                return json.loads(text)
            except ValueError:
                pass
    raise ScenarioFailure(f"no structured result in {result!r}"[:400])


def text_of(result) -> str:
    return "\n".join(getattr(b, "text", "") or "" for b in (getattr(result, "content", []) or []))


def assert_testuser(who: dict, where: str) -> None:
    check(who.get("sub") == USER, f"{where}: sub is {who.get('sub')!r}, expected {USER!r}")
    check(who.get("email") == EMAIL, f"{where}: email is {who.get('email')!r}, expected {EMAIL!r}")
    check(who.get("name") == NAME, f"{where}: name is {who.get('name')!r}, expected {NAME!r}")


def main(scenario) -> None:
    """Runs one scenario function; exit status 0 on success. The last line of output on
    failure is `FAILED: reason`."""
    try:
        scenario()
    except ScenarioFailure as e:
        print(f"FAILED: {e}", flush=True)
        _kill_children()
        sys.exit(1)
    except BaseException as e:  # noqa: BLE001 - every error is a failure with a reason
        import traceback

        traceback.print_exc()
        reason = f"{type(e).__name__}: {e}"
        if isinstance(e, BaseExceptionGroup):
            leaves = []

            def walk(g):
                for x in g.exceptions:
                    walk(x) if isinstance(x, BaseExceptionGroup) else leaves.append(x)

            walk(e)
            reason = "; ".join(
                str(x) if isinstance(x, ScenarioFailure) else f"{type(x).__name__}: {x}" for x in leaves
            )
        print(f"FAILED: {reason}".replace("\n", " ")[:1500], flush=True)
        _kill_children()
        sys.exit(1)
    _kill_children()
    print("PASSED", flush=True)
    sys.exit(0)
