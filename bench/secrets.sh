#!/usr/bin/env bash
# Secrets benchmark (issue 12):
# 1. the per-request cost of TLS interception (secret substitution) against a plain
#    CONNECT tunnel through the same proxy, in one run: a request on a new connection
#    (CONNECT + TLS handshake + GET) and one on an open keep-alive connection, each way;
# 2. the added start-up cost of a tool with one placeholder secret against none (needs the
#    runner's secret delivery).
#
#   bash bench/secrets.sh                    # 200 requests each way, best of 3
#   bash bench/secrets.sh REQUESTS ROUNDS
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET=${CARGO_TARGET_DIR:-target}
cargo build --release --quiet -p nanoclaw-egress --example secrets_bench
"$TARGET/release/examples/secrets_bench" "$@"

# 2. Start-up: a tool with one placeholder secret (a per-run CA, the proxy's interception
#    set-up, the bundle in the sandbox) against the same tool without it, in one hyperfine run.
if ! command -v hyperfine >/dev/null; then
  echo "bench: hyperfine is missing (apt-get install hyperfine); skipping the start-up cost" >&2
  exit 0
fi
source bench/lib.sh
build_nanoclaw
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
export NANOCLAW_AUDIT=$OUT/audit.jsonl BENCH_TOKEN=ghp_0123456789abcdefghijklmnopqrstuvwxyzAB
cat >"$OUT/bench.toml" <<'TOML'
[tools.none]
command = ["/bin/true"]
network = { allow = ["127.0.0.1:9"] }

[tools.secret]
command = ["/bin/true"]
network = { allow = ["127.0.0.1:9"] }
secrets = [{ name = "TOKEN", ttl = "5m", from = "env:BENCH_TOKEN", hosts = ["127.0.0.1:9"] }]
TOML
echo
hyperfine -N --warmup 10 --runs "${RUNS:-100}" --export-json "$OUT/start.json" \
  -n none "$NANOCLAW run --policy $OUT/bench.toml --tool none" \
  -n secret "$NANOCLAW run --policy $OUT/bench.toml --tool secret"
python3 - "$OUT/start.json" <<'PY'
import json, sys
r = {x["command"]: x for x in json.load(open(sys.argv[1]))["results"]}
print(f"start-up with one placeholder secret: +{(r['secret']['median'] - r['none']['median']) * 1000:.2f} ms "
      f"(median {r['secret']['median'] * 1000:.2f} ms vs {r['none']['median'] * 1000:.2f} ms, "
      f"ratio {r['secret']['median'] / r['none']['median']:.2f}x)")
PY
