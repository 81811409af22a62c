"""conformance: the MCP conformance suite (npm @modelcontextprotocol/conformance, every server
scenario: the active suite and the pending ones) against the rmcp fixture server `examples/conformance.rs` served through
mcp-oidc: (a) with authorization off, (b) with it on, the suite reaching the server through a
loopback forwarder that adds a bearer token from `mcp-oidc token`. Scenarios that cannot pass
are listed with a reason in interop/conformance-expected-failures.txt (goal: none)."""

import re
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lib import (  # noqa: E402
    BIN,
    CONFORMANCE_BIN,
    LOG_DIR,
    Proc,
    check,
    free_port,
    log,
    main,
    mcp_oidc_token,
    node_env,
    npm_tool,
    require_binary,
    wait_http,
)

HERE = Path(__file__).resolve().parent.parent
EXPECTED = HERE / "conformance-expected-failures.txt"


def expected_failures() -> dict[str, str]:
    out = {}
    for line in EXPECTED.read_text().splitlines() if EXPECTED.exists() else []:
        line = line.strip()
        if line and not line.startswith("#"):
            name, _, reason = line.partition(":")
            out[name.strip()] = reason.strip()
    return out


def run_suite(label: str, url: str) -> tuple[int, int]:
    """Runs every server scenario; returns the (passed, failed) check totals."""
    baseline = LOG_DIR / "expected-failures.yml"
    names = list(expected_failures())
    baseline.write_text("server:\n" + "".join(f"  - {n}\n" for n in names) if names else "server: []\n")
    out_dir = LOG_DIR / f"results-{label}"
    cmd = [str(npm_tool("conformance")), "server", "--url", url, "--suite", "all",
           "--expected-failures", str(baseline), "-o", str(out_dir)]
    log(f"run ({label}) " + " ".join(cmd))
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=200, env=node_env())
    (LOG_DIR / f"conformance-{label}.log").write_text(r.stdout + "\n--- stderr ---\n" + r.stderr)
    text = re.sub(r"\x1b\[[0-9;]*m", "", r.stdout)
    m = re.search(r"Total: (\d+) passed, (\d+) failed", text)
    check(m, f"({label}) no totals in the suite's output (exit {r.returncode}): {text[-400:]!r} {r.stderr[-300:]!r}")
    passed, failed = int(m.group(1)), int(m.group(2))
    ok = re.findall(r"^✓ (\S+):", text, re.M)
    bad = re.findall(r"^✗ (\S+):", text, re.M)
    check(ok or bad, f"({label}) no scenario results in the suite's output: {text[-400:]!r}")
    summary = (f"conformance totals ({label}): {len(ok)}/{len(ok) + len(bad)} scenarios passed; "
               f"checks {passed} passed, {failed} failed")
    log(f"{summary}; exit {r.returncode}")
    print(f"REPORT: {summary}", flush=True)
    if r.returncode != 0:
        bad = sorted({n.rstrip(":") for n in re.findall(r"^\s*✗ (\S+)", text, re.M)})
        # Listed as expected to fail, yet passing: only those, not every passing scenario.
        expected = expected_failures()
        stale = sorted({n.rstrip(":") for n in ok} & set(expected))
        reason = []
        if bad:
            reason.append(f"unexpected failures: {', '.join(bad)}")
        if stale:
            reason.append(f"now passing, remove from {EXPECTED.name}: {', '.join(stale)}")
        check(False, f"({label}) {'; '.join(reason) or 'suite exited ' + str(r.returncode)} "
                     f"(details: {(LOG_DIR / f'conformance-{label}.log').name})")
    return passed, failed


def scenario() -> None:
    npm_tool("conformance")
    server_bin = require_binary(CONFORMANCE_BIN)

    # (a) authorization off.
    port = free_port()
    plain = Proc("conformance-server-noauth", [server_bin, "--port", str(port)])
    plain.wait_for(r"listening on", timeout=20)
    a_passed, a_failed = run_suite("auth-off", f"http://localhost:{port}/mcp")
    plain.stop()

    # (b) authorization on: mock provider, protected fixture server, token-injecting forwarder.
    idp_port = free_port()
    issuer = f"http://localhost:{idp_port}"
    idp = Proc("mock-idp", [require_binary(BIN), "mock-idp", "--port", str(idp_port)])
    wait_http(f"{issuer}/.well-known/openid-configuration", proc=idp)
    port = free_port()
    resource = f"http://localhost:{port}/mcp"
    protected = Proc("conformance-server-auth", [server_bin, "--port", str(port), "--auth-issuer", issuer])
    protected.wait_for(r"listening on", timeout=20)
    import httpx2

    r = httpx2.post(resource, json={}, headers={"Accept": "application/json, text/event-stream"}, timeout=5)
    check(r.status_code == 401, f"the protected fixture server answered {r.status_code} without a token")
    token = mcp_oidc_token(resource)
    fwd_port = free_port()
    fwd = Proc("token-forwarder", [sys.executable, HERE / "token_forwarder.py", str(fwd_port), str(port)],
               env={"FORWARD_TOKEN": token, "PATH": "/usr/bin:/bin"})
    fwd.wait_for(r"forwarding", timeout=10)
    b_passed, b_failed = run_suite("auth-on", f"http://localhost:{fwd_port}/mcp")
    check((a_passed, a_failed) == (b_passed, b_failed),
          f"auth changed the results: off {a_passed}/{a_failed}, on {b_passed}/{b_failed}")


if __name__ == "__main__":
    main(scenario)
