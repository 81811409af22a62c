"""Runs the interop scenarios, each in its own process group with a hard timeout, and prints
`PASS name` / `FAIL name: reason` per scenario and `N passed, N failed` at the end. A failed
scenario is run once more (`RETRY name: ...`, with the end of its logs); it passes only if
that attempt passes, and the summary names it.

    harness.py [SCENARIO...]     (called by interop/run after the installs and the build)
    harness.py --list            the scenario names
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
LOGS = ROOT / "target" / "interop" / "logs"

# In priority order: name -> (script and its arguments, timeout in seconds).
SCENARIOS: dict[str, tuple[str, int]] = {
    "python-sdk-oauth": ("python_sdk_oauth.py oauth", 120),
    "python-sdk-oauth-direct": ("python_sdk_oauth.py oauth --direct", 120),
    "python-sdk-step-up": ("python_sdk_oauth.py step-up-dcr", 120),
    "python-sdk-step-up-direct": ("python_sdk_oauth.py step-up --direct", 120),
    "python-sdk-step-up-direct-dcr": ("python_sdk_oauth.py step-up-dcr --direct", 120),
    "browser-consent": ("browser_consent.py", 120),
    "python-sdk-bearer": ("python_sdk_bearer.py", 60),
    "python-sdk-hibernation": ("python_sdk_bearer.py hibernation", 60),
    "reference-provider": ("reference_provider.py", 90),
    "inspector-cli": ("inspector_cli.py", 120),
    "conformance": ("conformance.py", 300),
    "fastmcp-client": ("fastmcp_client.py", 90),
    "mcp-remote": ("mcp_remote.py", 120),
    "oauth2-mock-server": ("oauth2_mock_server.py", 90),
}

KNOWN_FAILURES = HERE / "known-failures.txt"

_current: subprocess.Popen | None = None


def known_failures() -> dict[str, str]:
    """`scenario: text` lines: the scenario is expected to fail with a reason containing
    `text` (a tracked bug). It then prints KNOWN-FAIL; failing otherwise, or passing, is a FAIL
    (the line must then be removed)."""
    known = {}
    if KNOWN_FAILURES.exists():
        for line in KNOWN_FAILURES.read_text().splitlines():
            line = line.strip()
            if line and not line.startswith("#") and ":" in line:
                name, text = line.split(":", 1)
                known[name.strip()] = text.strip()
    return known


def _stop(signum, _frame):
    if _current is not None and _current.poll() is None:
        try:
            os.killpg(_current.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    sys.exit(128 + signum)


def run_one(name: str, script: str, timeout: int) -> tuple[bool, str, float]:
    global _current
    log_dir = LOGS / name
    log_dir.mkdir(parents=True, exist_ok=True)
    out_path = log_dir / "scenario.log"
    env = dict(os.environ, INTEROP_LOG_DIR=str(log_dir), PYTHONUNBUFFERED="1")
    started = time.monotonic()
    script, *args = script.split()
    path = HERE / "scenarios" / script
    if not path.exists():
        return False, f"scenario script {path.relative_to(ROOT)} missing", 0.0
    with open(out_path, "wb") as out:
        _current = subprocess.Popen(
            [sys.executable, str(path), *args],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=ROOT,
            start_new_session=True,
        )
        try:
            rc = _current.wait(timeout=timeout)
            timed_out = False
        except subprocess.TimeoutExpired:
            rc, timed_out = -1, True
        # Whatever the scenario left behind (servers, tools) is in its process group.
        try:
            os.killpg(_current.pid, signal.SIGTERM)
            time.sleep(0.2)
            os.killpg(_current.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        _current.wait()
        _current = None
    elapsed = time.monotonic() - started
    text = out_path.read_text(errors="replace")
    if timed_out:
        last = [line for line in text.splitlines() if line.strip()][-1:] or [""]
        return False, f"timed out after {timeout}s (last: {last[0][:200]}; log {out_path.relative_to(ROOT)})", elapsed
    if rc == 0 and text.rstrip().endswith("PASSED"):
        return True, "", elapsed
    reasons = [line[len("FAILED: ") :] for line in text.splitlines() if line.startswith("FAILED: ")]
    reason = reasons[-1] if reasons else f"exit status {rc}"
    return False, f"{reason} (log {out_path.relative_to(ROOT)})", elapsed


def print_log_tails(log_dir: Path, lines: int = 25) -> None:
    """The end of every log a failed scenario left: CI keeps the output, not the files."""
    for path in sorted(log_dir.glob("*.log")):
        tail = path.read_text(errors="replace").splitlines()[-lines:]
        print(f"  --- last {len(tail)} lines of {path.relative_to(ROOT)}", flush=True)
        for line in tail:
            print(f"  | {line[:300]}", flush=True)


def main(argv: list[str]) -> int:
    if argv == ["--list"]:
        print("\n".join(SCENARIOS))
        return 0
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    names = argv or list(SCENARIOS)
    unknown = [n for n in names if n not in SCENARIOS]
    passed = failed = 0
    for n in unknown:
        print(f"FAIL {n}: no such scenario (known: {', '.join(SCENARIOS)})", flush=True)
        failed += 1
    known = known_failures()
    known_failed = 0
    flaky: list[str] = []
    started = time.monotonic()
    times = []
    for name in [n for n in names if n in SCENARIOS]:
        script, timeout = SCENARIOS[name]
        ok, reason, elapsed = run_one(name, script, timeout)
        if not ok and name not in known:
            # Third-party clients on a loaded two-CPU machine fail now and then for reasons
            # of their own timing. One more attempt decides, and the first failure is shown
            # in full: a fault of ours fails twice, and a flaky one stays visible.
            print(f"RETRY {name}: first attempt failed: {reason}", flush=True)
            print_log_tails(LOGS / name)
            first = LOGS / f"{name}.first-attempt"
            if first.exists():
                shutil.rmtree(first)
            (LOGS / name).rename(first)
            ok, reason, elapsed_again = run_one(name, script, timeout)
            elapsed += elapsed_again
            if ok:
                flaky.append(name)
        times.append(f"{name} {elapsed:.1f}s")
        # Scenarios print `REPORT: ...` lines worth showing (e.g. conformance totals).
        log_text = (LOGS / name / "scenario.log").read_text(errors="replace") if (LOGS / name / "scenario.log").exists() else ""
        for line in log_text.splitlines():
            if line.startswith("REPORT: "):
                print(f"  {name}: {line[len('REPORT: '):]}", flush=True)
        expected = known.get(name)
        if ok and expected is None:
            passed += 1
            print(f"PASS {name}", flush=True)
        elif ok:
            failed += 1
            print(f"FAIL {name}: passes, but interop/known-failures.txt expects it to fail: remove its line",
                  flush=True)
        elif expected is not None and expected in reason:
            known_failed += 1
            print(f"KNOWN-FAIL {name}: {reason} (tracked in interop/known-failures.txt)", flush=True)
        else:
            failed += 1
            print(f"FAIL {name}: {reason}", flush=True)
            print_log_tails(LOGS / name)
    if known_failed:
        print(f"{known_failed} known failure(s) tracked in interop/known-failures.txt (not counted below)",
              flush=True)
    print(f"timing: scenarios {time.monotonic() - started:.1f}s ({', '.join(times)})", flush=True)
    if os.environ.get("INTEROP_STARTED_AT"):
        total = time.time() - float(os.environ["INTEROP_STARTED_AT"])
        print(f"timing: total {total:.0f}s (installs, build and scenarios)", flush=True)
    if flaky:
        print(f"passed only on a second attempt (see RETRY above): {', '.join(flaky)}", flush=True)
    print(f"{passed} passed, {failed} failed", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
