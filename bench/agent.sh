#!/usr/bin/env bash
# Agent overhead per tool call: a fake OpenAI-compatible provider (Python stdlib, answers
# instantly) asks for N tool calls, one per turn; for each, `nanoclaw agent --json`
# reports overhead_ms = time from the model's tool call arriving to the tool result being
# ready to send back, minus the `nanoclaw run` child's own wall time. Target: < 2 ms.
#
#   bench/agent.sh [N]        (builds nanoclaw in release mode; needs python3, root or userns)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-50}
# NANOCLAW_BIN=path: measure that binary instead of building a release one.
if [ -z "${NANOCLAW_BIN:-}" ]; then
  cargo build --release -q -p nanoclaw
fi
BIN=${NANOCLAW_BIN:-${CARGO_TARGET_DIR:-target}/release/nanoclaw}
WORK=$(mktemp -d)
trap 'kill "$SERVER" 2>/dev/null || true; rm -rf "$WORK"' EXIT
mkdir -p "$WORK/ws"
cat >"$WORK/tools.toml" <<'TOML'
[tools.noop]
description = "do nothing"
command = ["true"]
TOML
cat >"$WORK/fake.py" <<'PY'
import http.server, json, sys
n = int(sys.argv[1]); state = {"i": 0}
class H(http.server.BaseHTTPRequestHandler):
    def log_message(self, *a): pass
    def do_POST(self):
        self.rfile.read(int(self.headers["content-length"]))
        i = state["i"]; state["i"] += 1
        if i < n:
            msg = {"role": "assistant", "content": None, "tool_calls": [
                {"id": f"c{i}", "type": "function", "function": {"name": "noop", "arguments": "{}"}}]}
            finish = "tool_calls"
        else:
            msg = {"role": "assistant", "content": "done"}; finish = "stop"
        body = json.dumps({"choices": [{"index": 0, "message": msg, "finish_reason": finish}],
                           "usage": {"prompt_tokens": 1, "completion_tokens": 1}}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers(); self.wfile.write(body)
s = http.server.HTTPServer(("127.0.0.1", 0), H)
print(s.server_address[1], flush=True)
s.serve_forever()
PY
python3 "$WORK/fake.py" "$N" >"$WORK/port" &
SERVER=$!
for _ in $(seq 50); do [ -s "$WORK/port" ] && break; sleep 0.1; done
PORT=$(cat "$WORK/port")
XDG_STATE_HOME="$WORK/state" "$BIN" agent --json --no-stream --provider openai --model fake \
  --base-url "http://127.0.0.1:$PORT/v1" --policy "$WORK/tools.toml" --workspace "$WORK/ws" \
  --audit "$WORK/audit.jsonl" --max-turns $((N + 1)) "bench" >"$WORK/events.jsonl"
python3 - "$WORK/events.jsonl" <<'PY'
import json, statistics, sys
rs = [e for e in map(json.loads, open(sys.argv[1])) if e["type"] == "tool_result"]
over = sorted(e["overhead_ms"] for e in rs)
run = sorted(e["runner_ms"] - (e["sandbox_ms"] or 0) for e in rs)
q = lambda xs, p: xs[min(len(xs) - 1, int(p * len(xs)))]
print(f"tool calls: {len(rs)}")
print(f"agent overhead per call (ms): median {statistics.median(over):.3f}  p90 {q(over, .9):.3f}  max {over[-1]:.3f}  (target < 2)")
print(f"for scale, nanoclaw run's own overhead outside the sandbox (ms): median {statistics.median(run):.1f}")
PY
