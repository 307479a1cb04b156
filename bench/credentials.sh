#!/usr/bin/env bash
# What the credential scan costs (issue 10 item 6): `nanoclaw run -- /bin/true` with a
# read-only mount of a generated tree of FILES files (in directories of 100, four levels
# deep, with a few credential files planted at depth) against the same run with an empty
# mount, in the same hyperfine runs; the difference is the scan (the masks add a handful
# of mounts).
#
#   bash bench/credentials.sh            # needs root (cgroups) and hyperfine
#   FILES=300000 RUNS=20 bash bench/credentials.sh
#   NANOCLAW=path/to/nanoclaw bash bench/credentials.sh   # measure that binary, build nothing
set -euo pipefail
cd "$(dirname "$0")/.."

FILES=${FILES:-100000}
RUNS=${RUNS:-20}
command -v hyperfine >/dev/null || { echo "bench: hyperfine is missing (apt-get install hyperfine)" >&2; exit 2; }

# shellcheck source=bench/lib.sh
source bench/lib.sh
[ -n "${NANOCLAW:-}" ] || build_nanoclaw

OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
TREE=$OUT/tree
mkdir -p "$OUT/empty"
python3 - "$TREE" "$FILES" <<'PY'
import os, sys
root, files = sys.argv[1], int(sys.argv[2])
for i in range(files):
    d = os.path.join(root, f"a{i // 100000}", f"b{i // 10000 % 10}", f"c{i // 1000 % 10}", f"d{i // 100 % 10}")
    if i % 100 == 0:
        os.makedirs(d, exist_ok=True)
    open(os.path.join(d, f"f{i % 100}.txt"), "w").close()
for planted in ["a0/b1/.env", "a0/b2/c3/.git-credentials", "a0/.config/gh/hosts.yml"]:
    os.makedirs(os.path.dirname(os.path.join(root, planted)), exist_ok=True)
    open(os.path.join(root, planted), "w").write("token\n")
PY
echo "nanoclaw: $NANOCLAW"
echo "tree: $(find "$TREE" | wc -l) entries"
hyperfine -N --warmup 3 --runs "$RUNS" \
  -n "empty mount" "$NANOCLAW run --no-audit -v $OUT/empty:/work -- /bin/true" \
  -n "$FILES-file mount" "$NANOCLAW run --no-audit -v $TREE:/work -- /bin/true"
