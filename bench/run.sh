#!/usr/bin/env bash
# Start-up benchmark of the native backend against bubblewrap (issue 2).
#
# Times `nanoclaw run -- /bin/true` with the full default policy (user, mount, pid, net,
# ipc, uts and cgroup namespaces, seccomp, Landlock, cgroup limits) against bubblewrap with
# the equivalent strict profile, in the same run, and prints the ratio of medians and the
# sandboxes per second each does with 2 parallel workers.
#
#   bash bench/run.sh            # needs root (cgroups), hyperfine and bwrap (apt-get install hyperfine bubblewrap)
#   RUNS=500 THROUGHPUT_N=1000 bash bench/run.sh
#   BEFORE=/path/to/older/nanoclaw bash bench/run.sh   # also time an older build, side by side
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-300}
THROUGHPUT_N=${THROUGHPUT_N:-400}
for tool in hyperfine bwrap python3; do
  command -v "$tool" >/dev/null || { echo "bench: $tool is missing (apt-get install hyperfine bubblewrap python3)" >&2; exit 2; }
done

# shellcheck source=bench/lib.sh
source bench/lib.sh
build_nanoclaw
echo "nanoclaw: $NANOCLAW ($(file -b "$NANOCLAW" | cut -d, -f1-2 | head -c 60))"
"$NANOCLAW" doctor | sed 's/^/  /'

# bubblewrap's equivalent of nanoclaw's default root: read-only /usr and the merged-/usr
# links, fresh /proc and /dev, a tmpfs /tmp, uid 10001, no capabilities, every namespace.
BWRAP="bwrap --unshare-all --die-with-parent --new-session --ro-bind /usr /usr"
for link in bin lib lib64 sbin; do
  [ -L "/$link" ] && BWRAP="$BWRAP --symlink $(readlink "/$link") /$link"
done
BWRAP="$BWRAP --proc /proc --dev /dev --tmpfs /tmp --uid 10001 --gid 10001 --cap-drop ALL /bin/true"
NC="$NANOCLAW run -- /bin/true"

OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
# Every run is audited (as by default); the records go to a scratch log, not the user's.
export NANOCLAW_AUDIT=$OUT/audit.jsonl
BEFORE_ARGS=()
if [ -n "${BEFORE:-}" ]; then
  BEFORE_ARGS=(-n nanoclaw-before "$BEFORE run -- /bin/true")
fi
hyperfine -N --warmup 20 --runs "$RUNS" --export-json "$OUT/latency.json" \
  -n nanoclaw "$NC" -n bubblewrap "$BWRAP" "${BEFORE_ARGS[@]}"

# Throughput: THROUGHPUT_N sandboxes, 2 at a time.
throughput() {
  local start end
  start=$(date +%s.%N)
  seq "$THROUGHPUT_N" | xargs -P 2 -I{} sh -c "$1 >/dev/null"
  end=$(date +%s.%N)
  python3 -c "print(f'{$THROUGHPUT_N / ($end - $start):.0f}')"
}
NC_RATE=$(throughput "$NC")
BW_RATE=$(throughput "$BWRAP")

python3 - "$OUT/latency.json" "$NC_RATE" "$BW_RATE" <<'PY'
import json, sys
results = {r["command"]: r for r in json.load(open(sys.argv[1]))["results"]}
nc, bw = results["nanoclaw"], results["bubblewrap"]
nc_rate, bw_rate = float(sys.argv[2]), float(sys.argv[3])
print()
print(f"median start-to-exit  nanoclaw {nc['median']*1000:.2f} ms   bubblewrap {bw['median']*1000:.2f} ms")
print(f"ratio (nanoclaw / bubblewrap, median): {nc['median']/bw['median']:.2f}x   (target <= 0.60x)")
if "nanoclaw-before" in results:
    before = results["nanoclaw-before"]
    print(f"median of the BEFORE build {before['median']*1000:.2f} ms   "
          f"now / before: {nc['median']/before['median']:.2f}x")
print(f"throughput, 2 workers  nanoclaw {nc_rate:.0f}/s   bubblewrap {bw_rate:.0f}/s   ratio {nc_rate/bw_rate:.2f}x   (target >= 1.5x)")
PY
