"""inspector-cli: the MCP Inspector's command-line client (npm @modelcontextprotocol/inspector-cli)
with `--header "Authorization: Bearer ..."`: tools/list and tools/call whoami against
`mcp-oidc dev`; without the header it must fail."""

import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lib import EMAIL, NODE_PREFIX, USER, check, log, main, mcp_oidc_token, node_env, npm_tool, start_dev  # noqa: E402


def inspector(mcp_url: str, *args: str, token: str | None = None) -> subprocess.CompletedProcess:
    cmd = [str(npm_tool("mcp-inspector-cli")), "--cli", mcp_url, "--transport", "http"]
    if token is not None:
        cmd += ["--header", f"Authorization: Bearer {token}"]
    cmd += list(args)
    log("run " + " ".join(c if "Bearer" not in c else "'Authorization: Bearer ***'" for c in cmd))
    # inspector-cli 1.0.3 looks for its package.json with fs.existsSync("../package.json"),
    # which is relative to the working directory, then import()s the same path relative to
    # its module: outside its own build/ folder it fails with "Cannot find module
    # .../@modelcontextprotocol/package.json". Running it from there satisfies both.
    cwd = NODE_PREFIX / "node_modules" / "@modelcontextprotocol" / "inspector-cli" / "build"
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=node_env(), cwd=cwd)
    log(f"exit {r.returncode}; stdout: {r.stdout.strip()[:800]}; stderr: {r.stderr.strip()[-400:]}")
    return r


def json_out(r: subprocess.CompletedProcess) -> dict:
    out = r.stdout
    start = out.find("{")
    check(start >= 0, f"no JSON in the inspector's output: {out[:300]!r}")
    return json.loads(out[start:])


def scenario() -> None:
    _proc, mcp_url, issuer = start_dev()
    token = mcp_oidc_token(mcp_url)

    r = inspector(mcp_url, "--method", "tools/list", token=token)
    check(r.returncode == 0, f"tools/list exited {r.returncode}: {r.stderr.strip()[-300:]}")
    names = [t["name"] for t in json_out(r).get("tools", [])]
    check("whoami" in names and "process_data" in names, f"tools/list: {names}")
    # write_note needs mcp:write, which this token lacks: mcp-oidc hides it.
    check("write_note" not in names, f"write_note listed for a token without mcp:write: {names}")

    r = inspector(mcp_url, "--method", "tools/call", "--tool-name", "whoami", token=token)
    check(r.returncode == 0, f"tools/call whoami exited {r.returncode}: {r.stderr.strip()[-300:]}")
    result = json_out(r)
    who = result.get("structuredContent") or json.loads(result["content"][0]["text"])
    check(who.get("sub") == USER and who.get("email") == EMAIL, f"whoami via the inspector: {who}")

    r = inspector(mcp_url, "--method", "tools/call", "--tool-name", "process_data", "--tool-arg", "data=hi",
                  token=token)
    check(r.returncode == 0 and f"Processing for user: {USER}" in r.stdout, f"process_data: {r.stdout[:300]!r}")

    r = inspector(mcp_url, "--method", "tools/list")
    check(r.returncode != 0 or "whoami" not in r.stdout, "the inspector listed tools without a token")
    check("401" in r.stdout + r.stderr or "nauthorized" in r.stdout + r.stderr,
          f"no 401 reported without a token: {(r.stdout + r.stderr)[-300:]!r}")


if __name__ == "__main__":
    main(scenario)
