#!/usr/bin/env bash
# Scale (issue 15): N sandboxes (default 500) sleeping at once, each `nanoclaw run -- sleep
# 30` with every default layer and the audit log on, all started together.
#
# Measures the time until all N sandboxed commands run; the memory per sandbox, on the host
# side (RSS and PSS of the nanoclaw processes: the runners and their supervisors) and in
# the kernel (MemAvailable, Slab, page tables and kernel stacks from /proc/meminfo, before
# the start against all running, divided by N); then lets them finish and checks that all
# exited 0, the audit log verifies with one start and one end each, and nothing leaked
# (processes, cgroups, mounts, network namespaces, temp entries). Then runs per second of
# `nanoclaw run -- /bin/true` as workers grow 1, 2, 4. It reports the limits that bound N
# (ulimits, kernel.pid_max, threads-max, user namespaces, the pids cgroup) and raises none:
# a limit below what N needs stops it (exit 2).
#
#   bash bench/scale.sh                 # as root
#   N=100 SLEEP=10 RATE_N=50 bash bench/scale.sh
#   NANOCLAW=path/to/nanoclaw bash bench/scale.sh   # that binary, build nothing
#
# The last line is for scripts: `scale: PASS n=500 started=500 start_s=… …` (exit 1 on FAIL).
set -euo pipefail
cd "$(dirname "$0")/.."

N=${N:-${1:-500}}
SLEEP=${SLEEP:-30}
RATE_N=${RATE_N:-300}
[[ $(id -u) == 0 ]] || { echo "scale: run as root (the default limits need cgroups)" >&2; exit 2; }

# shellcheck source=bench/lib.sh
source bench/lib.sh
[[ -n ${NANOCLAW:-} ]] || build_nanoclaw
NANOCLAW=$(realpath "$NANOCLAW")

WORK=$(mktemp -d /tmp/scale.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/tmp"
hostcheck_py "$WORK"
export NANOCLAW_AUDIT=$WORK/audit.jsonl

echo "nanoclaw: $NANOCLAW"
machine | sed 's/^/  /'

python3 - "$NANOCLAW" "$WORK" "$N" "$SLEEP" "$RATE_N" <<'PY'
import concurrent.futures, os, resource, statistics, subprocess, sys, time
from pathlib import Path

NANOCLAW, WORK, N, SLEEP, RATE_N = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
sys.path.insert(0, str(WORK))
import hostcheck

# A duration no one else sleeps: the sandboxed commands are told apart by it.
ARG = f"{SLEEP}.{os.getpid() % 100000:05d}1"
MARK = f"sleep {ARG}"
env = dict(os.environ, TMPDIR=str(WORK / "tmp"))

# ------------------------------------------------------------------ limits (raised: none)
def read(path):
    try:
        return open(path).read().split()[0]
    except (OSError, IndexError):
        return "absent"
cgroup_of = {}
for line in open("/proc/self/cgroup"):
    _, controllers, path = line.rstrip("\n").split(":", 2)
    for c in controllers.split(",") if controllers else ["unified"]:
        cgroup_of[c] = path
pids_max = read(f"/sys/fs/cgroup/pids{cgroup_of['pids']}/pids.max") if "pids" in cgroup_of \
    else read(f"/sys/fs/cgroup{cgroup_of.get('unified', '/')}/pids.max")
mem_cg = cgroup_of.get("memory")
limits = [
    # (what, value, needed): a sandbox holds a runner, a supervisor, its init and sleep,
    # one user namespace, and a few descriptors in its runner.
    ("ulimit -u (processes of this user; root is exempt)", resource.getrlimit(resource.RLIMIT_NPROC)[0], None),
    ("ulimit -n (descriptors per process)", resource.getrlimit(resource.RLIMIT_NOFILE)[0], None),
    ("kernel.pid_max", read("/proc/sys/kernel/pid_max"), 4 * N),
    ("kernel.threads-max", read("/proc/sys/kernel/threads-max"), 4 * N),
    ("user.max_user_namespaces", read("/proc/sys/user/max_user_namespaces"), N),
    ("user.max_net_namespaces", read("/proc/sys/user/max_net_namespaces"), N),
    ("user.max_mnt_namespaces", read("/proc/sys/user/max_mnt_namespaces"), N),
    ("user.max_pid_namespaces", read("/proc/sys/user/max_pid_namespaces"), N),
    ("pids.max of this cgroup", pids_max, 4 * N),
    ("memory.limit_in_bytes of this cgroup (v1)", read(f"/sys/fs/cgroup/memory{mem_cg}/memory.limit_in_bytes") if mem_cg else "n/a", None),
]
print("\nlimits (none raised):")
short = []
for what, value, needed in limits:
    value = str(value)
    print(f"  {what:<52} {value:>20}" + (f"   (needs >= {needed})" if needed else ""))
    if needed and value.isdigit() and int(value) < needed:
        short.append(what)
if short:
    print(f"scale: FAIL n={N} reasons=limits ({', '.join(short)} below what {N} sandboxes need; raise nothing silently: lower N)")
    sys.exit(2)

# ------------------------------------------------------------------ N at once
def meminfo():
    out = {}
    for line in open("/proc/meminfo"):
        key, value = line.split(":")
        out[key] = int(value.split()[0])
    return out

def sleepers():
    found = set()
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                if open(f"/proc/{pid}/cmdline", "rb").read() == f"sleep\0{ARG}\0".encode():
                    found.add(pid)
            except OSError:
                pass
    return found

def host_memory():
    """(count, RSS kB, PSS kB) of the nanoclaw processes (runners, supervisors, inits) and
    the same of the sleepers."""
    nano, sleep = [0, 0, 0], [0, 0, 0]
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            exe = os.readlink(f"/proc/{pid}/exe")
            cmd = open(f"/proc/{pid}/cmdline", "rb").read()
            rollup = {l.split(":")[0]: int(l.split()[1]) for l in open(f"/proc/{pid}/smaps_rollup")
                      if l.split(":")[0] in ("Rss", "Pss")}
        except (OSError, ValueError, IndexError):
            continue
        acc = nano if exe == NANOCLAW else sleep if cmd == f"sleep\0{ARG}\0".encode() else None
        if acc is not None:
            acc[0] += 1
            acc[1] += rollup.get("Rss", 0)
            acc[2] += rollup.get("Pss", 0)
    return nano, sleep

before = hostcheck.snapshot()
mem0 = meminfo()
stderr = open(WORK / "stderr.log", "ab")
# Spawned from a thread while this one watches /proc: "running" is the moment a sandbox's
# command line became `sleep ARG` (its command was exec'd, every layer set up).
procs, spawned = [], None
def spawn():
    global spawned
    for _ in range(N):
        procs.append(subprocess.Popen([NANOCLAW, "run", "--", "sleep", ARG], stdin=subprocess.DEVNULL,
                                      stdout=subprocess.DEVNULL, stderr=stderr, env=env, close_fds=False))
    spawned = time.monotonic() - t0
import threading
t0 = time.monotonic()
spawner = threading.Thread(target=spawn)
spawner.start()
seen, first, all_at, times = set(), None, None, []
while time.monotonic() - t0 < float(SLEEP) + 60:
    now = sleepers()
    t = time.monotonic() - t0
    times += [t] * len(now - seen)
    seen |= now
    if seen and first is None:
        first = t
    if len(seen) >= N:
        all_at = t
        break
    if spawned is not None and all(p.poll() is not None for p in procs):
        break
    time.sleep(0.1)
spawner.join()
running = len(sleepers())
time.sleep(1)  # let the last ones settle before measuring
mem1 = meminfo()
(nano_n, nano_rss, nano_pss), (sl_n, sl_rss, sl_pss) = host_memory()
codes = [p.wait() for p in procs]
done_at = time.monotonic() - t0
stderr.close()

leaks = hostcheck.leaks(before, hostcheck.audit_runs(str(WORK / "audit.jsonl"))[2],
                        str(WORK / "tmp"),
                        lambda cmd, exe: cmd == MARK or exe == NANOCLAW)
starts, ends, _ = hostcheck.audit_runs(str(WORK / "audit.jsonl"))
verify = subprocess.run([NANOCLAW, "audit", "verify", "--audit", str(WORK / "audit.jsonl")],
                        capture_output=True, text=True)
audit_ok = verify.returncode == 0 and len(starts) == N and \
    all(starts[i] == 1 and ends.get(i) == 1 for i in starts)

def kb(x):
    return f"{x / 1024:7.2f} MiB" if abs(x) >= 1024 else f"{x:7.0f} kB"
d = {k: mem1[k] - mem0[k] for k in ("MemAvailable", "Slab", "SUnreclaim", "PageTables", "KernelStack", "Shmem")}
print(f"\n{N} sandboxes of `nanoclaw run -- sleep {SLEEP}` started at once (audit on):")
print(f"  all {N} runners spawned             {spawned:8.2f} s")
print(f"  first sandbox running               {first if first is not None else float('nan'):8.2f} s")
if times:
    print(f"  median sandbox running              {statistics.median(times):8.2f} s")
print(f"  all {N} running                     {all_at if all_at is not None else float('nan'):8.2f} s"
      f"   ({len(seen)} seen, {running} running at once)")
print(f"  all exited                          {done_at:8.2f} s   (exit 0: {codes.count(0)}/{N})")
print(f"\nmemory per sandbox (all running):")
print(f"  host, nanoclaw processes ({nano_n}, {nano_n / max(running, 1):.1f} per sandbox): RSS {kb(nano_rss / max(running, 1))}   PSS {kb(nano_pss / max(running, 1))}")
print(f"  the sandboxed sleep itself ({sl_n}):                  RSS {kb(sl_rss / max(sl_n, 1))}   PSS {kb(sl_pss / max(sl_n, 1))}")
print(f"  kernel, /proc/meminfo delta / {running}:   MemAvailable {kb(-d['MemAvailable'] / max(running, 1))} used")
print(f"      Slab {kb(d['Slab'] / max(running, 1))} (unreclaimable {kb(d['SUnreclaim'] / max(running, 1))})   "
      f"PageTables {kb(d['PageTables'] / max(running, 1))}   KernelStack {kb(d['KernelStack'] / max(running, 1))}   Shmem {kb(d['Shmem'] / max(running, 1))}")
print(f"  (MemAvailable counts everything on the host meanwhile: noisy where other work runs)")
n_leaks = sum(len(v) for v in leaks.values())
for what, found in leaks.items():
    if found:
        print(f"  LEAKED {what}: " + "; ".join(found[:10]))
print(f"\nteardown: leaks {n_leaks}, audit {'ok' if audit_ok else 'BAD: ' + (verify.stdout + verify.stderr).strip()[-200:] + f' ({len(starts)} starts)'}")
if codes.count(0) != N:
    print("  stderr of the failed runs (first lines):")
    print("  " + "\n  ".join(open(WORK / "stderr.log", errors="replace").read().splitlines()[:10]))

# ------------------------------------------------------------------ runs per second
print(f"\nruns per second of `nanoclaw run -- /bin/true` ({RATE_N} runs each):")
print("  workers   runs/s   vs 1 worker")
rates = {}
for workers in (1, 2, 4):
    def one(_):
        return subprocess.run([NANOCLAW, "run", "--", "/bin/true"], stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env).returncode
    start = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        rc = list(pool.map(one, range(RATE_N)))
    rates[workers] = RATE_N / (time.monotonic() - start)
    bad = len(rc) - rc.count(0)
    print(f"  {workers:>7}   {rates[workers]:6.0f}   {rates[workers] / rates[1]:5.2f}x" + (f"   ({bad} failed)" if bad else ""))

start_s = f"{all_at:.2f}" if all_at is not None else "na"
ok = all_at is not None and codes.count(0) == N and n_leaks == 0 and audit_ok
print(f"scale: {'PASS' if ok else 'FAIL'} n={N} started={len(seen)} start_s={start_s} "
      f"host_rss_kb={nano_rss // max(running, 1)} host_pss_kb={nano_pss // max(running, 1)} "
      f"kernel_kb={-d['MemAvailable'] // max(running, 1)} slab_kb={d['Slab'] // max(running, 1)} "
      f"leaks={n_leaks} audit={'ok' if audit_ok else 'bad'} "
      + " ".join(f"rps{w}={rates[w]:.0f}" for w in rates))
sys.exit(0 if ok else 1)
PY
