"""mcp-remote: the npm stdio-to-HTTP proxy with its own OAuth client against `mcp-oidc dev`.
It discovers the provider, registers, and "opens a browser": the headless browser (via
$BROWSER, or the URL printed on stderr if no opener ran) logs in and delivers the code to
mcp-remote's loopback callback. Then JSON-RPC over its stdio: initialize, tools/list,
tools/call whoami."""

import json
import os
import queue
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lib import LOG_DIR, USER, EMAIL, _children, check, free_port, log, main, node_env, npm_tool, start_dev  # noqa: E402

HERE = Path(__file__).resolve().parent.parent
BROWSER = f"{sys.executable} {HERE / 'headless_browser.py'}"


class StdioPeer:
    def __init__(self, cmd: list[str], env: dict[str, str]):
        self.stderr_path = LOG_DIR / "mcp-remote.stderr.log"
        self._err = open(self.stderr_path, "wb")
        log("start " + " ".join(cmd))
        self.p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._err,
                                  env=env, start_new_session=True)
        _children.append(self.p)
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for raw in self.p.stdout:
            self.lines.put(raw.decode(errors="replace"))

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def send(self, msg: dict) -> None:
        self.p.stdin.write((json.dumps(msg) + "\n").encode())
        self.p.stdin.flush()

    def response(self, id_: int, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.2)
            except queue.Empty:
                check(self.p.poll() is None, f"mcp-remote exited {self.p.returncode}: {self.stderr()[-400:]!r}")
                continue
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            if msg.get("id") == id_:
                return msg
        raise AssertionError(f"no response to request {id_} within {timeout}s; stderr: {self.stderr()[-600:]!r}")


def scenario() -> None:
    _proc, mcp_url, issuer = start_dev()
    config_dir = LOG_DIR / "mcp-auth"
    config_dir.mkdir(parents=True, exist_ok=True)
    browser_log = LOG_DIR / "browser.log"
    env = node_env({
        "MCP_REMOTE_CONFIG_DIR": str(config_dir),
        "BROWSER": BROWSER,
        "INTEROP_BROWSER_LOG": str(browser_log),
    })
    port = free_port()
    peer = StdioPeer([str(npm_tool("mcp-remote")), mcp_url, str(port), "--transport", "http-only"], env)

    peer.send({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "interop", "version": "1"}}})

    # mcp-remote starts its OAuth flow on the server's 401. If no opener ran the headless
    # browser within a few seconds, take the URL from its stderr like a person would.
    deadline = time.monotonic() + 10
    opened_by = None
    while time.monotonic() < deadline and opened_by is None:
        if browser_log.exists() and "open " in browser_log.read_text():
            opened_by = "BROWSER"
            break
        m = re.search(r"(http://localhost:\d+/oauth2/authorize\?\S+)", peer.stderr())
        if m and time.monotonic() > deadline - 5:
            log("no browser opener ran; visiting the URL printed on stderr")
            subprocess.run([sys.executable, str(HERE / "headless_browser.py"), m.group(1)],
                           env={**os.environ, "INTEROP_BROWSER_LOG": str(browser_log),
                                "INTEROP_BROWSER_FOREGROUND": "1"}, timeout=40)
            opened_by = "stderr"
        time.sleep(0.2)
    check(opened_by, f"mcp-remote never asked for authorization: {peer.stderr()[-600:]!r}")
    log(f"authorization URL opened via {opened_by}")

    init = peer.response(1, 45)
    check("result" in init, f"initialize failed: {init}")
    log(f"initialized: {init['result'].get('serverInfo')}")
    peer.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
    peer.send({"jsonrpc": "2.0", "id": 2, "method": "tools/list"})
    tools = peer.response(2, 20)
    names = [t["name"] for t in tools.get("result", {}).get("tools", [])]
    check("whoami" in names, f"tools/list through mcp-remote: {tools}")
    peer.send({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "whoami", "arguments": {}}})
    call = peer.response(3, 20)
    result = call.get("result", {})
    who = result.get("structuredContent") or json.loads(result["content"][0]["text"])
    log(f"whoami through mcp-remote: {who}")
    check(who.get("sub") == USER and who.get("email") == EMAIL, f"whoami: {who}")
    text = browser_log.read_text()
    check("callback answered 200" in text, f"the callback was not delivered: {text[-300:]!r}")
    peer.p.stdin.close()


if __name__ == "__main__":
    main(scenario)
