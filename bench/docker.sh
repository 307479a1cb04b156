#!/usr/bin/env bash
# The docker backend against the docker CLI (issue 5): times one sandboxed /bin/true through
# nanoclaw's docker backend and through `docker run --rm` with the reference flags of
# DESIGN.md, same image, in the same hyperfine runs (two passes in opposite orders, pooled),
# and prints the ratio of medians; then the runs per second each does with 2 parallel
# workers.
#
#   bash bench/docker.sh            # needs a running Docker Engine, hyperfine, python3
#   RUNS=60 BATCH=40 bash bench/docker.sh
#   IMAGE=sha256:… bash bench/docker.sh   # an image with /bin/true (default: built here)
#
# nanoclaw side: `nanoclaw run --backend docker --image REF -- /bin/true` once `nanoclaw run
# --help` offers --image, else the nanoclaw-docker example `run_true`, which runs the same
# spec through the same backend. Target: at most 0.8x the docker CLI's median.
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-40}
BATCH=${BATCH:-30}
for tool in hyperfine python3 docker; do
  command -v "$tool" >/dev/null || { echo "bench: $tool is missing" >&2; exit 2; }
done
docker info >/dev/null 2>&1 || { echo "bench: the Docker Engine is not reachable" >&2; exit 2; }

OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT

# The image: Debian's static busybox as /bin/true, FROM scratch (no registry needed).
if [[ -z ${IMAGE:-} ]]; then
  [[ -x /bin/busybox ]] || { echo "bench: apt-get install -y busybox-static" >&2; exit 2; }
  mkdir -p "$OUT/ctx/bin"
  cp /bin/busybox "$OUT/ctx/bin/busybox"
  ln -s busybox "$OUT/ctx/bin/true"
  ln -s busybox "$OUT/ctx/bin/sh"
  printf 'FROM scratch\nCOPY bin /bin\n' >"$OUT/ctx/Dockerfile"
  IMAGE=$(DOCKER_BUILDKIT=0 docker build -q -t nanoclaw-bench:true "$OUT/ctx")
fi
echo "image: $IMAGE"

# shellcheck source=bench/lib.sh
source bench/lib.sh
build_nanoclaw
if "$NANOCLAW" run --help 2>/dev/null | grep -q -- '--image'; then
  OURS="$NANOCLAW run --backend docker --image $IMAGE -- /bin/true"
else
  cargo build --release --quiet -p nanoclaw-docker --example run_true
  OURS="$PWD/target/release/examples/run_true $IMAGE /bin/true"
fi
CLI="docker run --rm --read-only --cap-drop=ALL --security-opt=no-new-privileges \
--pids-limit=256 --memory=512m --cpus=0.5 --network=none \
--tmpfs /tmp:rw,noexec,nosuid,nodev --user 10001:10001 $IMAGE /bin/true"
echo "nanoclaw: $OURS"
echo "docker:   $CLI"
$OURS
$CLI

hyperfine -N --warmup 5 --runs "$RUNS" --export-json "$OUT/run1.json" \
  -n nanoclaw "$OURS" -n docker-cli "$CLI"
hyperfine -N --warmup 5 --runs "$RUNS" --export-json "$OUT/run2.json" \
  -n docker-cli "$CLI" -n nanoclaw "$OURS"

# Throughput: BATCH runs, 2 at a time.
throughput() {
  local start end
  start=$(date +%s.%N)
  seq "$BATCH" | xargs -P 2 -I{} sh -c "$1 >/dev/null"
  end=$(date +%s.%N)
  python3 -c "print(f'{$BATCH / ($end - $start):.2f}')"
}
echo
echo "throughput, 2 workers, $BATCH runs each:"
T_OURS=$(throughput "$OURS")
T_CLI=$(throughput "$CLI")

python3 - "$OUT/run1.json" "$OUT/run2.json" "$T_OURS" "$T_CLI" <<'PY'
import json, statistics, sys
times = {"nanoclaw": [], "docker-cli": []}
for n, path in enumerate(sys.argv[1:3], 1):
    runs = {r["command"]: r for r in json.load(open(path))["results"]}
    for name in times:
        times[name] += runs[name]["times"]
    print(f"pass {n}: median nanoclaw {runs['nanoclaw']['median']*1000:.1f} ms, "
          f"docker CLI {runs['docker-cli']['median']*1000:.1f} ms")
ours, cli = (statistics.median(times[name]) for name in ("nanoclaw", "docker-cli"))
print(f"median /bin/true, both passes: nanoclaw {ours*1000:.1f} ms   docker CLI {cli*1000:.1f} ms")
print(f"ratio (nanoclaw / docker CLI, median): {ours/cli:.3f}   (target <= 0.8)")
print(f"throughput, 2 workers: nanoclaw {sys.argv[3]} runs/s   docker CLI {sys.argv[4]} runs/s")
PY
