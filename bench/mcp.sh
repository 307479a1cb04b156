#!/usr/bin/env bash
# What the MCP server adds to a sandbox (issue 13): median and p99 latency of a `tools/call`
# of /bin/true over stdio, and calls per second with 8 concurrent callers, against the same
# `nanoclaw run --policy P --tool true --json` the server starts for each call, run from a
# shell in the same run. Prints the ratios and the milliseconds the MCP path adds.
#
#   bash bench/mcp.sh            # needs root (cgroups), hyperfine and python3
#   RUNS=500 CALLS=400 bash bench/mcp.sh
#
# hyperfine is not in every distribution's default install: `apt-get install hyperfine`
# (Debian 12+, Ubuntu 22.04+), or `cargo install hyperfine`.
#
# It also measures the pool (issue 15): the same calls on a server with `--pool 2` (runners
# pre-built ahead of each call) against `--pool 0` (one started per call). Target: a pooled
# `tools/call` of /bin/true in at most 1.5 ms median.
#
# Target: the MCP path adds under 1 ms per call to the sandbox itself. The client is a
# minimal JSON-RPC client (one line per message, no SDK) so that what is measured is the
# server; the tests use the official SDK.
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-200}
CALLS=${CALLS:-200}
for tool in hyperfine python3; do
  command -v "$tool" >/dev/null || { echo "bench: $tool is missing (apt-get install hyperfine python3, or cargo install hyperfine)" >&2; exit 2; }
done

# shellcheck source=bench/lib.sh
source bench/lib.sh
build_nanoclaw

STATE=${AUDIT_DIR:-${XDG_STATE_HOME:-$HOME/.local/state}}
mkdir -p "$STATE"
OUT=$(mktemp -d -p "$STATE" nanoclaw-bench.XXXXXX)
trap 'rm -rf "$OUT"' EXIT
cat >"$OUT/tools.toml" <<'TOML'
[tools.true]
description = "/bin/true"
command = ["/bin/true"]
TOML
LOG=$OUT/audit.jsonl
RUN="$NANOCLAW run --policy $OUT/tools.toml --tool true --workspace $OUT --audit $LOG --json --params-json {}"
echo "nanoclaw: $NANOCLAW"

# The sandbox alone, one after another.
hyperfine -N --warmup 10 --runs "$RUNS" --export-json "$OUT/run.json" -n run "$RUN" >/dev/null
# ... and 8 at a time, from a shell.
start=$(date +%s.%N)
# (xargs replaces the -I string in the command: one that does not appear in it.)
seq "$CALLS" | xargs -P 8 -I@N@ sh -c "$RUN >/dev/null"
end=$(date +%s.%N)
echo "$CALLS $start $end" >"$OUT/run-parallel.txt"

python3 - "$NANOCLAW" "$OUT" "$RUNS" "$CALLS" <<'PY'
import asyncio, itertools, json, statistics, sys, time

nanoclaw, out, runs, calls = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])

def p99(values):
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * 0.99))]

async def serve(pool):
    """Sequential latencies and calls/s with 8 callers on a server with `--pool pool`."""
    server = await asyncio.create_subprocess_exec(
        nanoclaw, "mcp", "--policy", f"{out}/tools.toml", "--workspace", out,
        "--audit", f"{out}/audit.jsonl", "--max-concurrent", "8", "--pool", str(pool),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL, limit=1 << 24)
    ids, pending = itertools.count(1), {}

    async def read():
        while line := await server.stdout.readline():
            message = json.loads(line)
            if "id" in message and message["id"] in pending:
                pending.pop(message["id"]).set_result(message)

    reader = asyncio.create_task(read())

    async def request(method, params):
        id = next(ids)
        reply = pending[id] = asyncio.get_running_loop().create_future()
        server.stdin.write(json.dumps({"jsonrpc": "2.0", "id": id, "method": method, "params": params}).encode() + b"\n")
        await server.stdin.drain()
        return await reply

    async def call():
        started = time.perf_counter()
        reply = await request("tools/call", {"name": "true", "arguments": {}})
        assert reply["result"]["isError"] is False, reply
        return time.perf_counter() - started

    await request("initialize", {"protocolVersion": "2025-11-25", "capabilities": {},
                                 "clientInfo": {"name": "bench", "version": "0"}})
    server.stdin.write(b'{"jsonrpc":"2.0","method":"notifications/initialized"}\n')
    for _ in range(10):
        await call()
    sequential = []
    for _ in range(runs):
        sequential.append(await call())
        # A client's calls come apart (a model thinks between them): the pool refills.
        if pool:
            await asyncio.sleep(0.02)

    remaining = iter(range(calls))
    async def caller():
        for _ in remaining:
            await call()
    started = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(8)))
    parallel = calls / (time.perf_counter() - started)

    server.stdin.close()
    await server.wait()
    reader.cancel()
    return sequential, parallel

async def main():
    sequential, parallel = await serve(0)
    pooled, pooled_parallel = await serve(2)

    run = json.load(open(f"{out}/run.json"))["results"][0]["times"]
    n, start, end = open(f"{out}/run-parallel.txt").read().split()
    run_parallel = int(n) / (float(end) - float(start))
    mcp_median, run_median = statistics.median(sequential), statistics.median(run)
    print(f"tools/call of /bin/true over stdio: median {mcp_median*1000:.2f} ms, p99 {p99(sequential)*1000:.2f} ms ({runs} calls)")
    print(f"nanoclaw run from a shell:          median {run_median*1000:.2f} ms, p99 {p99(run)*1000:.2f} ms ({runs} runs)")
    print(f"ratio of medians (mcp / run): {mcp_median/run_median:.3f}   the MCP path adds {(mcp_median-run_median)*1000:+.2f} ms per call (target < 1 ms)")
    print(f"8 concurrent callers: mcp {parallel:.1f} calls/s, run from a shell (xargs -P 8) {run_parallel:.1f} runs/s, ratio {parallel/run_parallel:.3f}")
    pooled_median = statistics.median(pooled)
    print(f"pooled tools/call (--pool 2):       median {pooled_median*1000:.2f} ms, p99 {p99(pooled)*1000:.2f} ms ({runs} calls; target <= 1.5 ms)")
    print(f"pool vs no pool: median {pooled_median*1000:.2f} ms vs {mcp_median*1000:.2f} ms, ratio {pooled_median/mcp_median:.3f}; 8 callers pooled {pooled_parallel:.1f} calls/s")

asyncio.run(main())
PY
