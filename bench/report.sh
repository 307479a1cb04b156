#!/usr/bin/env bash
# One report (issue 15): every comparison of the issues, side by side, written to
# bench/RESULTS.md with the commands and the machine.
#
#   one-shot      nanoclaw run -- /bin/true (every default layer, audited) vs bubblewrap's
#                 strict run vs crun with an equivalent OCI config (all namespaces, a
#                 read-only root of /usr, the same cgroup limits and rlimits, no
#                 capabilities, nanoclaw's own seccomp profile) vs nanoclaw --no-audit
#   audit         the same run with the audit log on vs off (from the same hyperfine runs)
#   docker        nanoclaw's docker backend vs `docker run --rm` with the reference flags
#   mcp           bench/mcp.sh as it is (a tools/call over stdio vs `nanoclaw run`, and the
#                 pooled call when the pool exists), its output included
#   egress        the proxy vs direct loopback TCP (egress_bench), and the start-up of a
#                 sandbox with --allow vs without
#   secrets       intercepted HTTPS vs a plain tunnel (secrets_bench), and the start-up of a
#                 tool with one placeholder secret vs none
#
# Each pair runs in the same hyperfine invocation, twice in opposite orders, pooled (what
# drifts during a pass then favours no side): median, p90, ratio of medians to the peer,
# and runs/s with 2 parallel workers.
#
#   bash bench/report.sh               # as root; hyperfine, bwrap, crun, docker, python3
#   QUICK=1 bash bench/report.sh       # a few runs of each, to test the script (~1-2 min)
#   RESULTS=/tmp/r.md bash bench/report.sh   # write elsewhere
#   SECTIONS="oneshot docker" bash bench/report.sh   # some of: oneshot docker egress secrets mcp
#
# Builds first (not timed), then takes about 5 minutes on a quiet 2-core machine. crun
# where installed (else its row says so); on a cgroup v1 host whose v2 hierarchy holds a
# controller (hybrid mode), which crun refuses, the one-shot comparison runs — all of its
# commands alike — in a private mount namespace without /sys/fs/cgroup/unified.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ ${QUICK:-0} == 1 ]]; then
  RUNS=20 RATE_N=40 DOCKER_RUNS=4 DOCKER_RATE_N=8 START_RUNS=10
  MCP_ENV=(RUNS=30 CALLS=30) EGRESS_ARGS=(16777216 100 1) SECRETS_ARGS=(40 1)
else
  RUNS=${RUNS:-300} RATE_N=${RATE_N:-400} DOCKER_RUNS=${DOCKER_RUNS:-25} DOCKER_RATE_N=${DOCKER_RATE_N:-30}
  START_RUNS=${START_RUNS:-100}
  MCP_ENV=(RUNS=300 CALLS=300) EGRESS_ARGS=(268435456 500 3) SECRETS_ARGS=(200 3)
fi
RESULTS=${RESULTS:-bench/RESULTS.md}
SECTIONS=${SECTIONS:-oneshot docker egress secrets mcp}
want() { [[ " $SECTIONS " == *" $1 "* ]]; }
[[ $(id -u) == 0 ]] || { echo "report: run as root (the default limits need cgroups)" >&2; exit 2; }
for tool in hyperfine bwrap python3 docker; do
  command -v "$tool" >/dev/null || { echo "report: $tool is missing" >&2; exit 2; }
done
docker info >/dev/null 2>&1 || { echo "report: the Docker Engine is not reachable" >&2; exit 2; }

# ------------------------------------------------------------------ build (not timed)
# shellcheck source=bench/lib.sh
source bench/lib.sh
build_nanoclaw
TARGET=${CARGO_TARGET_DIR:-$PWD/target}
if want egress || want secrets; then
  cargo build --release --quiet -p nanoclaw-egress --example egress_bench --example secrets_bench
fi
busybox_image nanoclaw-bench:true true sh

WORK=$(mktemp -d /tmp/report.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
export NANOCLAW_AUDIT=$WORK/audit.jsonl
ROWS=$WORK/rows.jsonl
BEGAN=$(date +%s)
echo "nanoclaw: $NANOCLAW"

# hyperfine of NAME CMD pairs, two passes in opposite orders, into $WORK/ID.{1,2}.json;
# the commands go to the report.
#   compare ID RUNS WARMUP NAME CMD [NAME CMD...]
compare() {
  local id=$1 runs=$2 warmup=$3
  shift 3
  local pairs=("$@") forward=() backward=() i
  for ((i = 0; i < ${#pairs[@]}; i += 2)); do
    forward+=(-n "${pairs[i]}" "${pairs[i + 1]}")
    backward=(-n "${pairs[i]}" "${pairs[i + 1]}" "${backward[@]}")
    printf '%-18s %s\n' "${pairs[i]}" "${pairs[i + 1]}" >>"$WORK/commands.txt"
  done
  $IN_NS hyperfine -N --style basic --warmup "$warmup" --runs "$runs" --export-json "$WORK/$id.1.json" "${forward[@]}"
  $IN_NS hyperfine -N --style basic --warmup "$warmup" --runs "$runs" --export-json "$WORK/$id.2.json" "${backward[@]}"
}

# runs/s of CMD, N runs with 2 workers ("{}" in CMD becomes the run's number).
rate() {
  local cmd=$1 n=$2 start end
  start=$(date +%s.%N)
  seq "$n" | $IN_NS xargs -P 2 -I{} sh -c "$cmd >/dev/null 2>&1"
  end=$(date +%s.%N)
  python3 -c "print(f'{$n / ($end - $start):.1f}')"
}

# Appends the rows of a comparison: its names with their pooled times, the peer and runs/s.
#   rows SECTION ID PEER NAME=RATE...
rows() {
  python3 - "$ROWS" "$WORK" "$@" <<'PY'
import json, sys
rows, work, section, id, peer, *rates = sys.argv[1:]
rates = dict(r.split("=", 1) for r in rates)
times, commands = {}, {}
for n in (1, 2):
    for r in json.load(open(f"{work}/{id}.{n}.json"))["results"]:
        times.setdefault(r["command"], []).extend(r["times"])
with open(rows, "a") as out:
    for name, t in times.items():
        out.write(json.dumps({"section": section, "name": name, "peer": peer if name != peer else None,
                              "times": t, "rate": rates.get(name)}) + "\n")
PY
}

# ------------------------------------------------------------------ one-shot, audit
BWRAP="bwrap --unshare-all --die-with-parent --new-session --ro-bind /usr /usr"
for link in bin lib lib64 sbin; do
  [[ -L /$link ]] && BWRAP="$BWRAP --symlink $(readlink "/$link") /$link"
done
BWRAP="$BWRAP --proc /proc --dev /dev --tmpfs /tmp --uid 10001 --gid 10001 --cap-drop ALL /bin/true"
NC="$NANOCLAW run -- /bin/true"
NC_BARE="$NANOCLAW run --no-audit -- /bin/true"
IN_NS=
CRUN_NOTE=
if want oneshot; then

# crun: an OCI bundle equivalent to nanoclaw's default sandbox. The seccomp profile is the
# one nanoclaw's docker backend hands the engine (generated from the native profile), read
# from a running container of it.
CRUN=
if command -v crun >/dev/null; then
  mkdir -p "$WORK/crun/rootfs"/{usr,proc,dev,tmp}
  for link in bin lib lib64 sbin; do
    [[ -L /$link ]] && ln -s "$(readlink "/$link")" "$WORK/crun/rootfs/$link"
  done
  "$NANOCLAW" run --backend docker --image "$IMAGE" --timeout 20s -- sh -c 'sleep 15' >/dev/null 2>&1 &
  SLEEPER=$!
  for _ in $(seq 100); do
    C=$(docker ps -q --filter label=io.nanoclaw.invocation --filter ancestor="$IMAGE" | head -1)
    [[ -n $C ]] && break
    sleep 0.1
  done
  if [[ -n ${C:-} ]]; then
    docker inspect "$C" --format '{{json .HostConfig.SecurityOpt}}' >"$WORK/crun/secopt.json"
  fi
  kill "$SLEEPER" 2>/dev/null || true
  wait "$SLEEPER" 2>/dev/null || true
  python3 - "$WORK/crun" <<'PY'
import json, os, sys
bundle = sys.argv[1]
seccomp = None
try:
    for opt in json.load(open(f"{bundle}/secopt.json")):
        if opt.startswith("seccomp="):
            seccomp = json.loads(opt[len("seccomp="):])
except (OSError, ValueError):
    pass
config = {
    "ociVersion": "1.0.2",
    "process": {
        "terminal": False, "user": {"uid": 10001, "gid": 10001},
        "args": ["/bin/true"], "env": ["PATH=/usr/local/bin:/usr/bin:/bin", "HOME=/tmp"], "cwd": "/",
        "capabilities": {k: [] for k in ("bounding", "effective", "inheritable", "permitted", "ambient")},
        "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024},
                    {"type": "RLIMIT_CORE", "hard": 0, "soft": 0}],
        "noNewPrivileges": True,
    },
    "root": {"path": "rootfs", "readonly": True},
    "hostname": "sandbox",
    "mounts": [
        {"destination": "/usr", "type": "bind", "source": "/usr", "options": ["rbind", "ro", "nosuid", "nodev"]},
        {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "noexec", "mode=755", "size=64k"]},
        {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "noexec", "nodev", "mode=1777"]},
    ],
    "linux": {
        "uidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}],
        "gidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}],
        "namespaces": [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount", "cgroup", "user")],
        "resources": {"memory": {"limit": 512 << 20, "swap": 512 << 20},
                      "cpu": {"quota": 50000, "period": 100000}, "pids": {"limit": 256}},
        "maskedPaths": ["/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
                        "/proc/sched_debug", "/proc/scsi", "/sys/firmware"],
        "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"],
    },
}
if seccomp:
    config["linux"]["seccomp"] = seccomp
json.dump(config, open(f"{bundle}/config.json", "w"), indent=1)
print("crun bundle: seccomp " + ("nanoclaw's profile" if seccomp else "NONE (could not read nanoclaw's)"))
PY
  grep -q '"seccomp"' "$WORK/crun/config.json" || CRUN_NOTE="without seccomp (nanoclaw's profile could not be read). "
  CRUN="crun run --bundle $WORK/crun bench-crun"
  if ! err=$(crun run --bundle "$WORK/crun" bench-probe 2>&1); then
    if [[ $err == *"hybrid mode"* ]]; then
      IN_NS="unshare -m --propagation private $WORK/ns.sh"
      printf '#!/bin/sh\numount -l /sys/fs/cgroup/unified && exec "$@"\n' >"$WORK/ns.sh"
      chmod +x "$WORK/ns.sh"
      CRUN_NOTE+="crun refuses this hybrid cgroup host ($err), so the one-shot rows ran in a private mount namespace without /sys/fs/cgroup/unified (every command alike). "
      $IN_NS crun run --bundle "$WORK/crun" bench-probe || { CRUN=; CRUN_NOTE+="crun still failed there: no crun row. "; }
    else
      CRUN=
      CRUN_NOTE="crun failed: $err; no crun row. "
    fi
  fi
else
  CRUN_NOTE="crun is not installed: no crun row. "
fi

echo
echo "== one-shot: nanoclaw vs bubblewrap vs crun; audit on vs off"
PAIRS=(nanoclaw "$NC" nanoclaw-no-audit "$NC_BARE" bubblewrap "$BWRAP")
[[ -n $CRUN ]] && PAIRS+=(crun "$CRUN")
compare oneshot "$RUNS" 20 "${PAIRS[@]}"
RATES=("nanoclaw=$(rate "$NC" "$RATE_N")" "nanoclaw-no-audit=$(rate "$NC_BARE" "$RATE_N")" "bubblewrap=$(rate "$BWRAP" "$RATE_N")")
[[ -n $CRUN ]] && RATES+=("crun=$(rate "crun run --bundle $WORK/crun bench-crun-{}" "$RATE_N")")
rows "one-shot /bin/true" oneshot bubblewrap "${RATES[@]}"
IN_NS=

# audit on vs off: the same samples, the peer being --no-audit.
python3 - "$ROWS" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
with open(sys.argv[1], "a") as out:
    for r in rows:
        if r["name"] in ("nanoclaw", "nanoclaw-no-audit"):
            r = dict(r, section="audit on vs off", peer="nanoclaw-no-audit" if r["name"] == "nanoclaw" else None)
            out.write(json.dumps(r) + "\n")
PY
fi

# ------------------------------------------------------------------ docker
if want docker; then
echo
echo "== docker backend vs docker run"
OURS="$NANOCLAW run --backend docker --image $IMAGE -- /bin/true"
CLI="docker run --rm --read-only --cap-drop=ALL --security-opt=no-new-privileges --pids-limit=256 --memory=512m --cpus=0.5 --network=none --tmpfs /tmp:rw,noexec,nosuid,nodev --user 10001:10001 $IMAGE /bin/true"
compare docker "$DOCKER_RUNS" 3 nanoclaw-docker "$OURS" docker-run "$CLI"
rows "docker /bin/true" docker docker-run "nanoclaw-docker=$(rate "$OURS" "$DOCKER_RATE_N")" "docker-run=$(rate "$CLI" "$DOCKER_RATE_N")"
fi

# ------------------------------------------------------------------ egress
if want egress; then
echo
echo "== egress: proxy vs direct"
echo "egress_bench ${EGRESS_ARGS[*]}   (target/release/examples; BYTES REQUESTS ROUNDS)" >>"$WORK/commands.txt"
"$TARGET/release/examples/egress_bench" "${EGRESS_ARGS[@]}" | tee "$WORK/egress.txt"
compare egress "$START_RUNS" 10 none "$NC" egress "$NANOCLAW run --allow 127.0.0.1:9 -- /bin/true"
rows "start-up with egress (--allow)" egress none "none=$(rate "$NC" "$START_RUNS")" \
  "egress=$(rate "$NANOCLAW run --allow 127.0.0.1:9 -- /bin/true" "$START_RUNS")"
fi

# ------------------------------------------------------------------ secrets
if want secrets; then
echo
echo "== secrets: interception vs plain tunnel"
echo "secrets_bench ${SECRETS_ARGS[*]}   (target/release/examples; REQUESTS ROUNDS)" >>"$WORK/commands.txt"
"$TARGET/release/examples/secrets_bench" "${SECRETS_ARGS[@]}" | tee "$WORK/secrets.txt"
cat >"$WORK/secrets.toml" <<'TOML'
[tools.none]
command = ["/bin/true"]
network = { allow = ["127.0.0.1:9"] }

[tools.secret]
command = ["/bin/true"]
network = { allow = ["127.0.0.1:9"] }
secrets = [{ name = "TOKEN", ttl = "5m", from = "env:BENCH_TOKEN", hosts = ["127.0.0.1:9"] }]
TOML
export BENCH_TOKEN=ghp_0123456789abcdefghijklmnopqrstuvwxyzAB
compare secrets "$START_RUNS" 10 no-secret "$NANOCLAW run --policy $WORK/secrets.toml --tool none" \
  one-secret "$NANOCLAW run --policy $WORK/secrets.toml --tool secret"
rows "start-up with a placeholder secret" secrets no-secret \
  "no-secret=$(rate "$NANOCLAW run --policy $WORK/secrets.toml --tool none" "$START_RUNS")" \
  "one-secret=$(rate "$NANOCLAW run --policy $WORK/secrets.toml --tool secret" "$START_RUNS")"
fi

# ------------------------------------------------------------------ mcp
if want mcp; then
echo
echo "== mcp (bench/mcp.sh)"
echo "${MCP_ENV[*]} bash bench/mcp.sh" >>"$WORK/commands.txt"
if ! env "${MCP_ENV[@]}" bash bench/mcp.sh 2>&1 | tee "$WORK/mcp.txt"; then
  echo "(bench/mcp.sh failed)" | tee -a "$WORK/mcp.txt"
fi
fi

# ------------------------------------------------------------------ the report
"$NANOCLAW" audit verify --audit "$NANOCLAW_AUDIT" >"$WORK/verify.txt" 2>&1 || echo "AUDIT VERIFY FAILED" >>"$WORK/verify.txt"
machine >"$WORK/machine.txt"
{
  echo "nanoclaw: $NANOCLAW ($(file -b "$NANOCLAW" | cut -d, -f1-2))"
  echo "commit: $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- crates Cargo.toml Cargo.lock || echo ' (crates modified)')"
  echo "hyperfine: $(hyperfine --version | cut -d' ' -f2); bwrap: $(bwrap --version | cut -d' ' -f2); crun: $(command -v crun >/dev/null && crun --version | head -1 | cut -d' ' -f3); docker: $(docker version --format '{{.Server.Version}}')"
} >>"$WORK/machine.txt"
python3 - "$ROWS" "$WORK" "$RESULTS" "$(($(date +%s) - BEGAN))" "${QUICK:-0}" "$CRUN_NOTE" <<'PY'
import json, re, statistics, sys, time
rows_path, work, results, secs, quick, crun_note = sys.argv[1:]
rows = [json.loads(l) for l in open(rows_path)]
def p90(t):
    t = sorted(t)
    return t[min(len(t) - 1, int(len(t) * 0.9))]
def ms(x):
    return f"{x * 1000:.2f}"
by = {(r["section"], r["name"]): r for r in rows}
out = []
w = out.append
w("# Benchmark results (issue 15)\n")
w(f"Written by `bash bench/report.sh`{' with QUICK=1 (a few runs each: a test of the script, not a result)' if quick == '1' else ''} "
  f"on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, in {int(secs) // 60} min {int(secs) % 60} s of measuring.\n")
w("## Machine\n")
w("```\n" + open(f"{work}/machine.txt").read().rstrip() + "\n```\n")
w("## Summary\n")
w("Times are wall-clock per run, pooled over two hyperfine passes in opposite orders; the ratio is "
  "this row's median over its peer's; runs/s is with 2 parallel workers.\n")
w("| comparison | command | median ms | p90 ms | peer | ratio | runs/s |")
w("|---|---|---:|---:|---|---:|---:|")
for r in rows:
    peer = by.get((r["section"], r["peer"])) if r["peer"] else None
    ratio = f"{statistics.median(r['times']) / statistics.median(peer['times']):.2f}x" if peer else "(peer)"
    w(f"| {r['section']} | {r['name']} | {ms(statistics.median(r['times']))} | {ms(p90(r['times']))} | "
      f"{r['peer'] or ''} | {ratio} | {r['rate'] or ''} |")
w("")
if crun_note.strip():
    w("Note: " + crun_note.strip() + "\n")

def text(path):
    try:
        return open(path).read()
    except OSError:
        return ""

def grab(path, pattern, cast=float):
    m = re.search(pattern, text(path), re.M)
    return cast(m.group(1)) if m else None

eg = f"{work}/egress.txt"
direct = grab(eg, r"^\s+direct tcp\s+([\d.]+) /")
proxy = grab(eg, r"^\s+proxy\s+([\d.]+) /")
direct99 = grab(eg, r"^\s+direct tcp\s+[\d.]+ / ([\d.]+)")
proxy99 = grab(eg, r"^\s+proxy\s+[\d.]+ / ([\d.]+)")
gd = grab(eg, r"^\s+direct tcp\s+([\d.]+)\s*$")
gp = grab(eg, r"^\s+proxy, absolute-form http\s+([\d.]+)\s*$")
sc = f"{work}/secrets.txt"
tun = grab(sc, r"tunnel\s+new connection each:\s+([\d.]+) us")
icp = grab(sc, r"intercepted\s+new connection each:\s+([\d.]+) us")
tunk = grab(sc, r"tunnel\s+new connection each:.*keep-alive:\s+([\d.]+) us")
icpk = grab(sc, r"intercepted\s+new connection each:.*keep-alive:\s+([\d.]+) us")
mc = f"{work}/mcp.txt"
mcp_med = grab(mc, r"tools/call of /bin/true over stdio:\s+median ([\d.]+) ms")
mcp_p99 = grab(mc, r"tools/call of /bin/true over stdio:\s+median [\d.]+ ms, p99 ([\d.]+) ms")
run_med = grab(mc, r"nanoclaw run from a shell:\s+median ([\d.]+) ms")
run_p99 = grab(mc, r"nanoclaw run from a shell:\s+median [\d.]+ ms, p99 ([\d.]+) ms")
pooled = grab(mc, r"pool\w*[^\n]*?median ([\d.]+) ms")

w("From the benchmarks that report their own statistics (their output is below):\n")
w("| comparison | ours | peer | ratio | note |")
w("|---|---|---|---:|---|")
def row(what, ours, peer, note, unit="ms"):
    if ours is None and peer is None:
        return  # not measured in this report (SECTIONS)
    ratio = f"{ours / peer:.2f}x" if ours and peer else "n/a"
    f = lambda v: "n/a" if v is None else f"{v:.3f} {unit}"
    w(f"| {what} | {f(ours)} | {f(peer)} | {ratio} | {note} |")
row("request through the proxy vs direct TCP (new connection, median)", proxy, direct,
    f"p99 {proxy99} vs {direct99} ms; download {gp} vs {gd} Gbit/s")
row("HTTPS request, interception vs plain tunnel (new connection, mean of best round)", icp, tun,
    f"keep-alive: {icpk} vs {tunk} us", unit="us")
row("MCP tools/call vs nanoclaw run (median)", mcp_med, run_med, f"p99 {mcp_p99} vs {run_p99} ms")
row("pooled MCP call vs one-shot call (median)", pooled, mcp_med,
    "from bench/mcp.sh's pooled line" if pooled else "bench/mcp.sh printed no pooled line (no pool yet)")
w("")
w("## Commands\n")
w("```")
w(text(f"{work}/commands.txt").rstrip())
w("runs/s: seq N | xargs -P 2 -I{} sh -c 'COMMAND >/dev/null 2>&1'   (crun: a container id per run, bench-crun-{})")
w("```\n")
try:
    config = json.load(open(f"{work}/crun/config.json"))
    if "seccomp" in config.get("linux", {}):
        sc = config["linux"]["seccomp"]
        config["linux"]["seccomp"] = f"<nanoclaw's profile: default {sc.get('defaultAction')}, {len(sc.get('syscalls', []))} rules>"
    w("The crun bundle's config.json (rootfs: an empty directory with /usr bound read-only and the /bin, /lib, /lib64, /sbin links):\n")
    w("<details><summary>config.json</summary>\n\n```json\n" + json.dumps(config, indent=1) + "\n```\n</details>\n")
except OSError:
    pass
for title, name in (("Egress (egress_bench)", "egress"), ("Secrets (secrets_bench)", "secrets"), ("MCP (bench/mcp.sh)", "mcp")):
    if text(f"{work}/{name}.txt"):
        w(f"## {title}\n")
        w("```\n" + text(f"{work}/{name}.txt").rstrip() + "\n```\n")
w("## Audit log of the measured runs\n")
w("```\n" + open(f"{work}/verify.txt").read().rstrip() + "\n```")
open(results, "w").write("\n".join(out) + "\n")
print(f"report: wrote {results} ({int(secs)} s of measuring)")
PY
