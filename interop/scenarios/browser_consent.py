"""A real browser (headless Chromium, driven through chromedriver) through the OAuth proxy of
`mcp-oidc dev`: the consent page, the provider's login form, the callback, and the redirect
back to the client. Browsers enforce what an HTTP client does not (the pages'
Content-Security-Policy, cookie rules), so this is where a page that only works for scripts
would show.

    browser_consent.py     browser-consent: a client registers (RFC 7591) with a loopback
                           redirect URI; Chromium approves the consent page, signs in at the
                           mock provider and lands on the client's callback with a code and
                           `iss`; the code is exchanged (PKCE) and the token calls `whoami`.
                           Then a second authorization is denied on the consent page, and
                           Chromium lands on the callback with `error=access_denied`.
"""

import base64
import hashlib
import http.server
import json
import os
import secrets
import shutil
import sys
import threading
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx2  # noqa: E402
from lib import USER, ScenarioFailure, authorization_server, check, free_port, log, main, start_dev  # noqa: E402


class Callback:
    """The client's loopback redirect endpoint: records each query it receives."""

    def __init__(self):
        self.port = free_port()
        self.queries: list[dict[str, str]] = []
        self.arrived = threading.Event()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - the stdlib's name
                url = urlsplit(self.path)
                if url.path != "/callback":
                    # The browser's own requests (a favicon) are not redirects to the client.
                    self.send_error(404)
                    return
                outer.queries.append({k: v[0] for k, v in parse_qs(url.query).items()})
                outer.arrived.set()
                body = b"<!doctype html><title>done</title><p>You can close this window.</p>"
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.uri = f"http://127.0.0.1:{self.port}/callback"

    def next(self, timeout: float = 20) -> dict[str, str]:
        check(self.arrived.wait(timeout), "the browser never reached the client's redirect URI")
        self.arrived.clear()
        return self.queries[-1]


def chromium():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser = os.environ.get("INTEROP_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    driver = os.environ.get("INTEROP_CHROMEDRIVER") or shutil.which("chromedriver")
    check(browser and driver, "chromium and chromedriver are not installed (interop/run installs them)")
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--no-first-run", "--disable-extensions"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(executable_path=driver), options=options)


def console(browser) -> str:
    """The browser console's messages: a CSP violation is reported there."""
    try:
        return " | ".join(e.get("message", "") for e in browser.get_log("browser"))[:800]
    except Exception:  # noqa: BLE001 - only used to explain a failure
        return "(no console log)"


def authorize_url(asrv: str, client_id: str, redirect: str, resource: str) -> tuple[str, str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    state = secrets.token_urlsafe(16)
    meta = httpx2.get(f"{asrv}/.well-known/oauth-authorization-server", timeout=5).json()
    query = urlencode({
        "response_type": "code", "client_id": client_id, "redirect_uri": redirect,
        "code_challenge": challenge, "code_challenge_method": "S256", "state": state,
        "scope": "openid profile email", "resource": resource,
    })
    return f"{meta['authorization_endpoint']}?{query}", verifier, state


def whoami(mcp: str, token: str) -> dict:
    """`whoami`'s structured result over plain HTTP: initialize, then the call in that session."""
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json, text/event-stream",
               "Content-Type": "application/json"}
    init = httpx2.post(mcp, timeout=10, headers=headers, json={
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                   "clientInfo": {"name": "browser-consent", "version": "1"}}})
    check(init.status_code == 200, f"initialize answered {init.status_code}: {init.text[:200]}")
    headers["Mcp-Session-Id"] = init.headers["mcp-session-id"]
    headers["MCP-Protocol-Version"] = "2025-06-18"
    httpx2.post(mcp, timeout=10, headers=headers, json={"jsonrpc": "2.0", "method": "notifications/initialized"})
    call = httpx2.post(mcp, timeout=10, headers=headers, json={
        "jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "whoami", "arguments": {}}})
    check(call.status_code == 200, f"whoami answered {call.status_code}: {call.text[:200]}")
    data = [line[5:] for line in call.text.splitlines() if line.startswith("data:")] or [call.text]
    return json.loads(data[-1])["result"]["structuredContent"]


def click(browser, css: str, what: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        WebDriverWait(browser, 15).until(ec.element_to_be_clickable((By.CSS_SELECTOR, css))).click()
    except Exception as e:  # noqa: BLE001 - turned into a failure with the page shown
        raise ScenarioFailure(
            f"{what}: no {css} on {browser.current_url} ({type(e).__name__}); page: "
            f"{browser.page_source[:300]!r}; console: {console(browser)}") from e


def page_shows(browser, text: str) -> bool:
    """Whether `text` appears in the page within 15 s."""
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        WebDriverWait(browser, 15).until(lambda b: text in b.page_source)
        return True
    except Exception:  # noqa: BLE001 - a timeout: the caller reports it with the page
        return False


def scenario() -> None:
    _dev, mcp, issuer = start_dev("mcp-oidc-dev")
    asrv = authorization_server(mcp)
    check(asrv != issuer, f"the MCP server's authorization server should be its proxy, not {asrv}")
    callback = Callback()
    meta = httpx2.get(f"{asrv}/.well-known/oauth-authorization-server", timeout=5).json()
    reg = httpx2.post(meta["registration_endpoint"], json={
        "client_name": "Browser test client", "redirect_uris": [callback.uri],
        "grant_types": ["authorization_code", "refresh_token"], "token_endpoint_auth_method": "none",
    }, timeout=10)
    check(reg.status_code == 201, f"registration answered {reg.status_code}: {reg.text[:200]}")
    client_id = reg.json()["client_id"]

    browser = chromium()
    try:
        # Approve: consent page -> provider login -> /auth/callback -> the client.
        url, verifier, state = authorize_url(asrv, client_id, callback.uri, mcp)
        browser.get(url)
        # Read once the page is there: a read during the load can see the previous page.
        check(page_shows(browser, "Browser test client"),
              f"the consent page does not name the client: {browser.page_source[:300]!r}")
        click(browser, "button[value=approve]", "consent page")
        log(f"approved; now at {browser.current_url.split('?')[0]}")
        # The mock provider's login form: the user's `sub`, then its submit button.
        from selenium.webdriver.common.by import By

        click(browser, "input[name=sub]", "provider login page")
        field = browser.find_element(By.CSS_SELECTOR, "input[name=sub]")
        field.clear()
        field.send_keys(USER)
        field.submit()
        got = callback.next()
        log(f"callback after approval: {sorted(got)}; console: {console(browser)}")
        check("code" in got, f"no code at the client's callback: {got}")
        check(got.get("state") == state, f"state came back as {got.get('state')!r}, sent {state!r}")
        check(got.get("iss") == meta["issuer"], f"iss {got.get('iss')!r} is not the issuer {meta['issuer']!r}")
        tok = httpx2.post(meta["token_endpoint"], data={
            "grant_type": "authorization_code", "code": got["code"], "redirect_uri": callback.uri,
            "client_id": client_id, "code_verifier": verifier, "resource": mcp,
        }, timeout=10)
        check(tok.status_code == 200, f"the code exchange answered {tok.status_code}: {tok.text[:200]}")
        token = tok.json()["access_token"]
        who = whoami(mcp, token)
        check(who.get("sub") == USER, f"whoami with the browser-obtained token: {who}")

        # Deny: consent page -> the client, with the error and `iss` (RFC 9207).
        url, _, state = authorize_url(asrv, client_id, callback.uri, mcp)
        browser.get(url)
        click(browser, "button[value=deny]", "consent page")
        got = callback.next()
        log(f"callback after denial: {got}")
        check(got.get("error") == "access_denied", f"a denial reached the client as {got}")
        check(got.get("state") == state and got.get("iss") == meta["issuer"], f"denial without state/iss: {got}")
    finally:
        browser.quit()


if __name__ == "__main__":
    main(scenario)
