#!/usr/bin/env python3
"""A stand-in for a web browser, for OAuth clients that "open" an authorization URL
(set `BROWSER="python headless_browser.py %s"` or pass the URL as the argument).

It logs in at the provider's form as the user in $INTEROP_LOGIN_SUB (default testuser), then
delivers the redirect to the client's loopback callback, retrying until the client's callback
server is listening. It detaches first, so a client that waits for its browser to exit
continues at once. Each URL it handled is appended to $INTEROP_BROWSER_LOG when set.
"""

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def deliver(url: str) -> None:
    import httpx2
    from lib import login

    log_path = os.environ.get("INTEROP_BROWSER_LOG")

    def note(line: str) -> None:
        if log_path:
            with open(log_path, "a") as f:
                f.write(line + "\n")

    note(f"open {url}")
    params = login(url, os.environ.get("INTEROP_LOGIN_SUB", "testuser"))
    callback = params["_location"]
    note(f"callback {callback}")
    deadline = time.monotonic() + 30
    while True:
        try:
            r = httpx2.get(callback, timeout=5, follow_redirects=True)
            note(f"callback answered {r.status_code}")
            return
        except httpx2.HTTPError as e:
            if time.monotonic() > deadline:
                note(f"callback failed: {e}")
                raise
            time.sleep(0.2)


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit("usage: headless_browser.py URL")
    if os.environ.get("INTEROP_BROWSER_FOREGROUND") != "1" and os.fork() != 0:
        return  # the parent returns at once, like a browser that opened a tab
    try:
        deliver(sys.argv[1])
    except Exception as e:  # noqa: BLE001
        log_path = os.environ.get("INTEROP_BROWSER_LOG")
        if log_path:
            with open(log_path, "a") as f:
                f.write(f"error {type(e).__name__}: {e}\n")
        os._exit(1)
    os._exit(0)


if __name__ == "__main__":
    main()
