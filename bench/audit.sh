#!/usr/bin/env bash
# What the audit log costs (issue 4): the time it adds to one `nanoclaw run -- /bin/true`
# (with and without --no-audit, in the same hyperfine runs, ratio of medians), and the
# append rate of 2 processes writing to one log at once.
#
#   bash bench/audit.sh          # needs root (cgroups), hyperfine and python3
#   RUNS=500 RECORDS=5000 bash bench/audit.sh
#
# Targets: at most 15% added to a run, at least 2,000 appended records/s with 2 writers.
# The logs go in a temporary directory beside the default audit log (AUDIT_DIR to
# override), since the cost of fsync is the cost of the filesystem the log lives on.
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-200}
RECORDS=${RECORDS:-2000}
for tool in hyperfine python3; do
  command -v "$tool" >/dev/null || { echo "bench: $tool is missing (apt-get install hyperfine python3)" >&2; exit 2; }
done

# shellcheck source=bench/lib.sh
source bench/lib.sh
build_nanoclaw

STATE=${AUDIT_DIR:-${XDG_STATE_HOME:-$HOME/.local/state}}
mkdir -p "$STATE"
OUT=$(mktemp -d -p "$STATE" nanoclaw-bench.XXXXXX)
trap 'rm -rf "$OUT"' EXIT
LOG=$OUT/audit.jsonl
echo "nanoclaw: $NANOCLAW"
echo "audit log: $LOG ($(df -T "$OUT" | awk 'NR==2 {print $2 " on " $1}'))"

# hyperfine runs one command's samples, then the other's; whatever drifts during a pass
# (the kernel's deferred cgroup teardown, other load) would favour one side. Two passes in
# opposite orders, pooled, cancel that.
AUDITED="$NANOCLAW run --audit $LOG -- /bin/true"
BARE="$NANOCLAW run --no-audit -- /bin/true"
hyperfine -N --warmup 10 --runs "$RUNS" --export-json "$OUT/run1.json" \
  -n audited "$AUDITED" -n no-audit "$BARE"
hyperfine -N --warmup 10 --runs "$RUNS" --export-json "$OUT/run2.json" \
  -n no-audit "$BARE" -n audited "$AUDITED"

# Every audited run (warmups included) left its start and end: the chain must be intact.
"$NANOCLAW" audit verify --audit "$LOG"

echo
cargo run --release --quiet -p nanoclaw-audit-tools --example append_rate -- 2 "$RECORDS" "$OUT" |
  tee "$OUT/append.txt"

python3 - "$OUT/append.txt" "$OUT/run1.json" "$OUT/run2.json" <<'PY'
import json, re, statistics, sys
times = {"audited": [], "no-audit": []}
print()
for n, path in enumerate(sys.argv[2:], 1):
    runs = {r["command"]: r for r in json.load(open(path))["results"]}
    for name in times:
        times[name] += runs[name]["times"]
    print(f"pass {n}: median audited {runs['audited']['median']*1000:.2f} ms, "
          f"--no-audit {runs['no-audit']['median']*1000:.2f} ms, "
          f"ratio {runs['audited']['median'] / runs['no-audit']['median']:.3f}")
audited, bare = (statistics.median(times[name]) for name in ("audited", "no-audit"))
rate = float(re.search(r"([\d.]+) records/s", open(sys.argv[1]).read()).group(1))
print(f"median run -- /bin/true, both passes: audited {audited*1000:.2f} ms   --no-audit {bare*1000:.2f} ms")
print(f"ratio (audited / --no-audit, median): {audited/bare:.3f}   "
      f"({(audited/bare - 1)*100:+.1f}%, target <= +15%)")
print(f"append rate, 2 writers: {rate:.0f} records/s   (target >= 2000)")
PY
