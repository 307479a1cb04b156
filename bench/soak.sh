#!/usr/bin/env bash
# Soak (issue 15): N mixed invocations, then a check that nothing outlived them.
#
# The mix: /bin/true, failing exit codes (one leaving an orphan behind in the sandbox), a
# missing program, output floods past the output limit, memory limits hit, timeouts hit;
# on the native backend with 2 workers, a share (SOAK_DOCKER_PCT, default 10%) on the
# Docker backend with a FROM-scratch busybox image built here, and a share (SOAK_MCP_PCT,
# default 10%, at least 20) as `tools/call`s through one running `nanoclaw mcp` server over
# stdio, driven by the official MCP Python SDK (2 callers), at the same time.
#
# Then it checks: no process left (the runners, the server, anything carrying the runs'
# token), no mount added to the host, no `nanoclaw-*` cgroup left by these runs (or by any
# runner that is gone), no named network namespace or nsfs mount added, no nanoclaw temp
# entry in /tmp, /var/tmp, /dev/shm, /run (nor anything in the runs' TMPDIR), no container
# of these runs, the server's open descriptors back to what they were after warm-up, its
# RSS grown by at most SOAK_RSS_KB (default 4096) after warm-up, every run's exit status
# the one its kind ends with, and the audit log verifying with exactly one start and one
# end per invocation, one invocation per run.
#
# The last line is the verdict, for scripts (exit status 1 on FAIL, 2 if it cannot run):
#   soak: PASS runs=500 native=400 docker=50 mcp=50 leaks=0 audit=ok unexpected=0 fd_growth=0 rss_growth_kb=120 secs=61
#
#   bash bench/soak.sh 500            # as root; needs docker, python3 (+ venv), busybox-static
#   SOAK_DOCKER=0 bash bench/soak.sh 500          # no Docker share (says so: docker=0)
#   NANOCLAW=path/to/nanoclaw bash bench/soak.sh 200   # that binary, build nothing
#   SOAK_MCP=0, SOAK_DOCKER_PCT=20, SOAK_MCP_PCT=5, SOAK_SEED=7 (the mix), SOAK_RSS_KB=8192
#
# On FAIL the lines before the verdict (on stderr) name what leaked and which runs ended
# otherwise than their kind does, with their outcome.
#
# The audit log, the policy, the workspace and the runs' TMPDIR are in a temporary
# directory removed on exit. On a host where other sandboxes run at the same time, what
# they create is told apart by the pid in its name (cgroups, staging directories) and by
# being gone a moment later; on a quiet host every check is exact.
set -euo pipefail
cd "$(dirname "$0")/.."

N=${1:-${N:-500}}
[[ $N =~ ^[0-9]+$ && $N -ge 1 ]] || { echo "usage: bench/soak.sh N" >&2; exit 2; }
[[ $(id -u) == 0 ]] || { echo "soak: run as root (the default limits need cgroups)" >&2; exit 2; }

# shellcheck source=bench/lib.sh
source bench/lib.sh
[[ -n ${NANOCLAW:-} ]] || build_nanoclaw
NANOCLAW=$(realpath "$NANOCLAW")
mcp_python

IMAGE=
if [[ ${SOAK_DOCKER:-1} != 0 ]]; then
  if ! docker info >/dev/null 2>&1; then
    echo "soak: FAIL reasons=docker-unreachable (SOAK_DOCKER=0 runs without the Docker share)"
    exit 2
  fi
  busybox_image nanoclaw-soak:busybox true sh sleep yes head tail cat
fi

WORK=$(mktemp -d /tmp/soak.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/tmp" "$WORK/ws"
hostcheck_py "$WORK"
export NANOCLAW_AUDIT=$WORK/audit.jsonl

"$MCP_PYTHON" - "$NANOCLAW" "$WORK" "$N" "$IMAGE" <<'PY'
import asyncio, concurrent.futures, json, os, random, subprocess, sys, threading, time
from pathlib import Path

NANOCLAW, WORK, N, IMAGE = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
TOKEN = f"soak-{os.urandom(6).hex()}"
SLEEP = "3017"  # a sleep no one else runs: a survivor is ours
RSS_KB = int(os.environ.get("SOAK_RSS_KB", "4096"))
WORKERS = 2
started = time.monotonic()

def log(*args, sep=" "):
    print("soak:", *args, sep=sep, file=sys.stderr, flush=True)

# ---------------------------------------------------------------- the mix
# kind: (run options, command, expected exit status, expected flag in the --json outcome)
KINDS = {
    "true":    ([], ["/bin/true"], 0, None),
    "json":    (["--json"], ["/bin/true"], 0, None),
    "fail":    ([], ["sh", "-c", f"exit 3; : {TOKEN}"], 3, None),
    "orphan":  ([], ["sh", "-c", f"(sleep {SLEEP} &); exit 5; : {TOKEN}"], 5, None),
    "missing": ([], ["/no/such/program", TOKEN], 127, None),
    # (a timeout of its own: a writer that outlives its reader would otherwise hold the
    # run for the default minute)
    "flood":   (["--json", "--output-limit", "64k", "--timeout", "15s"],
                ["sh", "-c", f"yes {TOKEN} | head -c 4000000"], 0, "stdout_truncated"),
    # (exec: the memory hog is the command itself, so its OOM kill is the run's exit status)
    "memory":  (["--json", "--memory", "32m"], ["sh", "-c", f"exec tail /dev/zero {TOKEN}"], 137, "oom_killed"),
    "timeout": (["--json", "--timeout", "300ms"], ["sh", "-c", f"sleep {SLEEP}; : {TOKEN}"], 124, "timed_out"),
}
WEIGHTS = {"true": 30, "json": 10, "fail": 12, "orphan": 8, "missing": 5, "flood": 15, "memory": 10, "timeout": 10}

def share(name, pct):
    if os.environ.get(f"SOAK_{name}", "1") == "0":
        return 0
    return int(N * int(os.environ.get(f"SOAK_{name}_PCT", pct)) / 100)

n_docker = share("DOCKER", 10) if IMAGE else 0
n_mcp = min(N, max(20, share("MCP", 10))) if os.environ.get("SOAK_MCP", "1") != "0" else 0
n_docker = min(n_docker, N - n_mcp)
n_native = N - n_docker - n_mcp
rng = random.Random(os.environ.get("SOAK_SEED", "15"))
def kinds(count):
    names = list(WEIGHTS)
    return rng.choices(names, weights=[WEIGHTS[k] for k in names], k=count)
jobs = [("native", k) for k in kinds(n_native)] + [("docker", k) for k in kinds(n_docker)]
rng.shuffle(jobs)
mcp_jobs = kinds(n_mcp)

# ---------------------------------------------------------------- host state
sys.path.insert(0, str(WORK))
import hostcheck

def ours(cmdline, exe):
    return TOKEN in cmdline or cmdline == f"sleep {SLEEP}" or exe == NANOCLAW

# (what ran before: a survivor of an earlier soak is not this one's)
earlier = {p.split()[0] for p in hostcheck.processes(ours)}
def docker_containers():
    if not IMAGE:
        return []
    r = subprocess.run(["docker", "ps", "-a", "--filter", "label=io.nanoclaw.invocation",
                        "--format", '{{.ID}} {{.Label "io.nanoclaw.invocation"}} {{.Status}}'],
                       capture_output=True, text=True)
    return [line for line in r.stdout.splitlines() if line.strip()]

before = hostcheck.snapshot()

# ---------------------------------------------------------------- the runs
env = dict(os.environ, TMPDIR=str(WORK / "tmp"))
unexpected = []
seen_ids = []  # the invocation ids the outcomes name (--json runs and MCP calls)

def judge(where, kind, status, outcome):
    if isinstance(outcome, dict):
        inv = outcome.get("invocation") or (outcome.get("audit") or {}).get("invocation")
        if inv:
            seen_ids.append(inv)
    want, flag = KINDS[kind][2], KINDS[kind][3]
    if status != want or (flag and not (outcome or {}).get(flag)):
        unexpected.append(f"{where}:{kind} exit {status} (want {want}{', ' + flag if flag else ''})"
                          f" {json.dumps(outcome)[:300] if outcome else ''}")

def one(job):
    backend, kind = job
    options, command, _, _ = KINDS[kind]
    argv = [NANOCLAW, "run", *options]
    if backend == "docker":
        argv += ["--backend", "docker", "--image", IMAGE]
    argv += ["--", *command]
    p = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, env=env)
    outcome = None
    if "--json" in options:
        try:
            outcome = json.loads(p.stdout)
        except ValueError:
            outcome = {"stdout": p.stdout[-200:].decode(errors="replace"),
                       "stderr": p.stderr[-300:].decode(errors="replace")}
    elif p.returncode != KINDS[kind][2]:
        outcome = {"stderr": p.stderr[-300:].decode(errors="replace")}
    judge(backend, kind, p.returncode, outcome)

def cli_runs():
    with concurrent.futures.ThreadPoolExecutor(WORKERS) as pool:
        for f in concurrent.futures.as_completed([pool.submit(one, j) for j in jobs]):
            f.result()

# ---------------------------------------------------------------- the MCP server
POLICY = f"""
[tools.true]
description = "/bin/true"
command = ["/bin/true"]
[tools.fail]
description = "exits 3"
command = ["sh", "-c", "exit 3; : {TOKEN}"]
[tools.orphan]
description = "leaves an orphan, exits 5"
command = ["sh", "-c", "(sleep {SLEEP} &); exit 5; : {TOKEN}"]
[tools.missing]
description = "a missing program"
command = ["/no/such/program", "{TOKEN}"]
[tools.flood]
description = "floods stdout past the output limit"
command = ["sh", "-c", "yes {TOKEN} | head -c 4000000"]
timeout = "15s"
limits = {{ output = "64k" }}
[tools.memory]
description = "hits the memory limit"
command = ["sh", "-c", "exec tail /dev/zero {TOKEN}"]
limits = {{ memory = "32m" }}
[tools.timeout]
description = "hits the timeout"
command = ["sh", "-c", "sleep {SLEEP}; : {TOKEN}"]
timeout = "300ms"
"""
(WORK / "tools.toml").write_text(POLICY)
server = {"warm": None, "end": None, "pid": None}

def status_kb(pid, field):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0

def fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))

def server_pid():
    """The `nanoclaw mcp` child of this process (its other nanoclaw children are runs)."""
    me = str(os.getpid())
    for pid in os.listdir("/proc"):
        try:
            if pid.isdigit() and open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1] == me \
                    and open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")[1:2] == [b"mcp"]:
                return int(pid)
        except (OSError, IndexError):
            pass
    return None

def settle(pid, baseline=None):
    """The server's (fds, rss kB) once its calls' children are gone: the lowest fd count
    seen over up to 3 s (the pool, if any, refills meanwhile)."""
    best = None
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        sample = (fds(pid), status_kb(pid, "VmRSS"))
        best = sample if best is None or sample[0] < best[0] else best
        if baseline is not None and best[0] <= baseline:
            break
        time.sleep(0.1)
    return best

async def mcp_session():
    from mcp import Client, StdioServerParameters
    from mcp.shared.exceptions import MCPError
    params = StdioServerParameters(command=NANOCLAW, args=[
        "mcp", "--policy", str(WORK / "tools.toml"), "--workspace", str(WORK / "ws"),
        "--audit", os.environ["NANOCLAW_AUDIT"], "--max-concurrent", "2"], env=env)
    warmup = max(10, len(mcp_jobs) // 10)
    async with Client(params, mode="legacy") as c:
        server["pid"] = server_pid()
        queue = list(enumerate(mcp_jobs))
        async def caller():
            while queue:
                i, kind = queue.pop(0)
                try:
                    r = await c.call_tool("true" if kind == "json" else kind, {})
                    s = r.structured_content or {}
                    judge("mcp", kind, s.get("exit_status"), s)
                except MCPError as e:
                    unexpected.append(f"mcp:{kind} protocol error {e}")
                if i + 1 == warmup and server["pid"]:
                    await asyncio.sleep(0.5)
                    server["warm"] = settle(server["pid"])
        await asyncio.gather(caller(), caller())
        if server["pid"] and server["warm"]:
            server["end"] = settle(server["pid"], server["warm"][0])

mcp_error = []
def mcp_thread():
    try:
        asyncio.run(mcp_session())
    except BaseException as e:  # reported as a failure, never swallowed
        mcp_error.append(repr(e)[:300])

threads = [threading.Thread(target=cli_runs)]
if n_mcp:
    threads.append(threading.Thread(target=mcp_thread))
for t in threads:
    t.start()
for t in threads:
    t.join()
runs_secs = time.monotonic() - started

# ---------------------------------------------------------------- the checks
starts, ends, runner_pids = hostcheck.audit_runs(os.environ["NANOCLAW_AUDIT"])
leaks = hostcheck.leaks(before, runner_pids, str(WORK / "tmp"), ours)
leaks["processes"] = [p for p in leaks["processes"] if p.split()[0] not in earlier]
ids = set(starts)
leaks["containers"] = hostcheck.poll(lambda: [c for c in docker_containers() if c.split()[1:2] and c.split()[1] in ids])

fd_growth = rss_growth = None
if server["warm"] and server["end"]:
    fd_growth = server["end"][0] - server["warm"][0]
    rss_growth = server["end"][1] - server["warm"][1]
    if fd_growth > 0:
        leaks["server-fds"] = [f"{server['warm'][0]} after warm-up, {server['end'][0]} at the end"]

verify = subprocess.run([NANOCLAW, "audit", "verify", "--audit", os.environ["NANOCLAW_AUDIT"]],
                        capture_output=True, text=True)
audit_problems = []
if verify.returncode != 0:
    audit_problems.append("verify: " + (verify.stdout + verify.stderr).strip()[-300:])
if len(starts) != N:
    audit_problems.append(f"{len(starts)} invocations recorded for {N} runs")
missing = [i for i in seen_ids if i not in starts]
if missing:
    audit_problems.append(f"{len(missing)} invocations named in outcomes have no start record, e.g. {missing[:3]}")
bad = [i for i in starts if starts[i] != 1 or ends.get(i, 0) != 1]
if bad:
    audit_problems.append(f"{len(bad)} invocations without exactly one start and one end, e.g. "
                          + ", ".join(f"{i}: {starts[i]} start(s), {ends.get(i, 0)} end(s)" for i in bad[:3]))

# ---------------------------------------------------------------- the verdict
reasons = []
n_leaks = sum(len(v) for v in leaks.values())
for what, found in leaks.items():
    if found:
        reasons.append(f"leaked-{what}")
        log(f"leaked {what}:", *found[:10])
if audit_problems:
    reasons.append("audit")
    log("audit:", *audit_problems)
if unexpected:
    reasons.append("unexpected-outcomes")
    log(f"{len(unexpected)} runs did not end as their kind does:", *unexpected[:10], sep="\n  ")
if mcp_error:
    reasons.append("mcp-session")
    log("the MCP session failed:", *mcp_error)
if n_mcp and not (server["warm"] and server["end"]):
    reasons.append("server-unmeasured")
    log("could not measure the server's descriptors and RSS", server)
if rss_growth is not None and rss_growth > RSS_KB:
    reasons.append("server-rss")
    log(f"the server's RSS grew by {rss_growth} kB after warm-up (tolerance {RSS_KB} kB)")
if server["warm"]:
    log(f"server: {server['warm'][0]} fds, {server['warm'][1]} kB RSS after warm-up; "
        f"{server['end'][0] if server['end'] else '?'} fds, {server['end'][1] if server['end'] else '?'} kB at the end")
log(f"runs took {runs_secs:.1f} s ({N / runs_secs:.1f} runs/s), checks {time.monotonic() - started - runs_secs:.1f} s")

verdict = "FAIL" if reasons else "PASS"
print(f"soak: {verdict} runs={N} native={n_native} docker={n_docker} mcp={n_mcp} leaks={n_leaks} "
      f"audit={'ok' if not audit_problems else 'bad'} unexpected={len(unexpected)} "
      f"fd_growth={fd_growth if fd_growth is not None else 'na'} "
      f"rss_growth_kb={rss_growth if rss_growth is not None else 'na'} secs={time.monotonic() - started:.0f}"
      + (f" reasons={','.join(reasons)}" if reasons else ""), flush=True)
sys.exit(1 if reasons else 0)
PY
