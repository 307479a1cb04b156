#!/usr/bin/env bash
# Egress benchmark (issue 6):
# 1. a large download and many small requests through the proxy against direct loopback
#    TCP, in the same run (targets: >= 1 Gbit/s through the proxy, < 2 ms added per request);
# 2. what egress adds to a sandbox's start: `nanoclaw run --allow 127.0.0.1:9 -- /bin/true`
#    against `nanoclaw run -- /bin/true` in the same hyperfine run (needs root and hyperfine).
#
#   bash bench/egress.sh                      # 1 GiB download, 1000 requests, best of 3
#   bash bench/egress.sh BYTES REQUESTS ROUNDS
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet -p nanoclaw-egress --example egress_bench
target/release/examples/egress_bench "$@"

if ! command -v hyperfine >/dev/null; then
  echo "bench: hyperfine is missing (apt-get install hyperfine); skipping the start-up cost" >&2
  exit 0
fi
cargo build --release --quiet -p nanoclaw
NANOCLAW=$PWD/target/release/nanoclaw
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
export NANOCLAW_AUDIT=$OUT/audit.jsonl
echo
hyperfine -N --warmup 10 --runs "${RUNS:-100}" --export-json "$OUT/start.json" \
  -n none "$NANOCLAW run -- /bin/true" \
  -n egress "$NANOCLAW run --allow 127.0.0.1:9 -- /bin/true"
python3 - "$OUT/start.json" <<'PY'
import json, sys
r = {x["command"]: x for x in json.load(open(sys.argv[1]))["results"]}
print(f"start-up with egress: +{(r['egress']['median'] - r['none']['median']) * 1000:.2f} ms "
      f"(median {r['egress']['median'] * 1000:.2f} ms vs {r['none']['median'] * 1000:.2f} ms)")
PY
