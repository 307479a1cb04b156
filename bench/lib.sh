# Sourced by the bench scripts: builds the nanoclaw binary they measure and sets NANOCLAW.
# The static musl build starts faster (no dynamic loader, no CPU feature probing by it) and
# is the binary the docker backend's images use; it is chosen where the target is installed.
build_nanoclaw() {
  if rustup target list --installed 2>/dev/null | grep -qx x86_64-unknown-linux-musl; then
    cargo build --release --quiet --target x86_64-unknown-linux-musl -p nanoclaw
    NANOCLAW=${CARGO_TARGET_DIR:-$PWD/target}/x86_64-unknown-linux-musl/release/nanoclaw
  else
    cargo build --release --quiet -p nanoclaw
    NANOCLAW=${CARGO_TARGET_DIR:-$PWD/target}/release/nanoclaw
  fi
}

# Builds (once; Docker caches it) a FROM-scratch image holding Debian's static busybox with
# the applets named, as bench/docker.sh does, and sets IMAGE to its local sha256:ID (the
# pinned form the docker backend takes). No registry is involved.
#   busybox_image TAG true sh sleep
busybox_image() {
  local tag=$1 ctx applet
  shift
  [[ -x /bin/busybox ]] || { echo "bench: apt-get install -y busybox-static" >&2; return 2; }
  ctx=$(mktemp -d)
  mkdir -p "$ctx/bin"
  cp /bin/busybox "$ctx/bin/busybox"
  for applet in "$@"; do ln -s busybox "$ctx/bin/$applet"; done
  printf 'FROM scratch\nCOPY bin /bin\n' >"$ctx/Dockerfile"
  # (The legacy builder warns that it is deprecated, on every build: kept for failures.)
  if ! IMAGE=$(DOCKER_BUILDKIT=0 docker build -q -t "$tag" "$ctx" 2>"$ctx/err"); then
    cat "$ctx/err" >&2
    rm -rf "$ctx"
    return 1
  fi
  rm -rf "$ctx"
}

# Sets MCP_PYTHON to the python of the MCP Python SDK's venv (mcp==2.3.0, the one the test
# suite drives): $NANOCLAW_MCP_VENV, else target/mcp-venv, made there when absent.
mcp_python() {
  local venv=${NANOCLAW_MCP_VENV:-$PWD/target/mcp-venv}
  if ! "$venv/bin/python" -c 'import importlib.metadata as m; assert m.version("mcp") == "2.3.0"' 2>/dev/null; then
    echo "bench: installing the MCP Python SDK in $venv" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet mcp==2.3.0
  fi
  MCP_PYTHON=$venv/bin/python
}

# The machine, for a report: one line per fact.
machine() {
  echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(nproc) cores"
  echo "memory: $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
  echo "kernel: $(uname -sr)"
  echo "os: $(. /etc/os-release 2>/dev/null && echo "${PRETTY_NAME:-unknown}")"
  echo "cgroups: $(if [[ -f /sys/fs/cgroup/cgroup.controllers ]]; then echo v2; else echo v1; fi)"
}

# Writes hostcheck.py into directory $1: what runs may leave on the host (mounts, cgroups,
# named network namespaces, temp entries, processes, containers), as a snapshot before and
# the leaks after, for bench/soak.sh and bench/scale.sh. The rules follow the test suite's
# (crates/cli/tests/suite/support.rs: HostState, orphaned_cgroups).
hostcheck_py() {
  cat >"$1/hostcheck.py" <<'PY'
import os, subprocess, time

FOREIGN_MOUNTS = ("/var/lib/docker/", "/run/docker/", "/run/netns", "/var/run/netns")
# Made once per boot on purpose (what is mounted or made below them per run still counts).
PERSISTENT = ("/run/nanoclaw/writes", "/run/nanoclaw", "/run/nanoclaw/docker")
SHARED_TEMP = ("/tmp", "/var/tmp", "/dev/shm", "/run", "/run/nanoclaw/docker", "/run/nanoclaw/writes")
# Per-run staging directories, named PID-... after the runner that made them.
RUN_STAGING = ("/run/nanoclaw/docker/", "/run/nanoclaw/writes/")

def alive(pid):
    return str(pid).isdigit() and os.path.exists(f"/proc/{pid}")

def of_a_live_runner(path):
    for root in RUN_STAGING:
        if path.startswith(root):
            return alive(path[len(root):].split("/")[0].split("-")[0])
    return False

def mounts():
    out = set()
    for line in open("/proc/self/mountinfo"):
        fields = line.split(" ")
        if fields[4].startswith(FOREIGN_MOUNTS) or fields[4] in PERSISTENT:
            continue
        # What is mounted where, without the ids (which change on remount).
        out.add(" ".join(fields[3:]).strip())
    return out

def temp_entries():
    out = set()
    for d in SHARED_TEMP:
        try:
            out.update(os.path.join(d, e) for e in os.listdir(d))
        except OSError:
            pass
    return out

def cgroups():
    """Directories named nanoclaw-* under /sys/fs/cgroup, at most five levels down."""
    found = []
    def walk(d, depth):
        try:
            entries = list(os.scandir(d))
        except OSError:
            return
        for e in entries:
            if e.is_dir(follow_symlinks=False):
                if e.name.startswith("nanoclaw-"):
                    found.append(e.path)
                if depth < 5:
                    walk(e.path, depth + 1)
    walk("/sys/fs/cgroup", 1)
    return found

def netns():
    try:
        out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    except OSError:
        return set()
    return {line.split()[0] for line in out.splitlines() if line.strip()}

def processes(match):
    """`pid cmdline` of every process for which match(cmdline, exe) holds, but this one."""
    me, found = str(os.getpid()), []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or pid == me:
            continue
        try:
            cmd = open(f"/proc/{pid}/cmdline", "rb").read()
            exe = os.readlink(f"/proc/{pid}/exe") if cmd else ""
        except OSError:
            continue
        text = cmd.replace(b"\0", b" ").decode(errors="replace").strip()
        if match(text, exe):
            found.append(f"{pid} {text[:120]}")
    return found

def snapshot():
    return {"mounts": mounts(), "temp": temp_entries(), "cgroups": set(cgroups()), "netns": netns()}

def poll(check, wait=3.0):
    """What check() still finds after up to `wait` seconds: the kernel reaps and unmounts
    asynchronously for a moment; a leak stays."""
    deadline = time.monotonic() + wait
    while True:
        found = check()
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.2)

def leaks(before, runner_pids, tmpdir, match):
    """What the runs left: processes (match), cgroups of these runners (runner_pids) or new
    ones whose runner is gone, mounts, named network namespaces and nsfs mounts, nanoclaw
    entries in the shared temp directories and anything in the runs' tmpdir."""
    found = {"processes": poll(lambda: processes(match))}
    def cgroup_leaks():
        return [p for p in cgroups()
                if (p.split("/")[-1].split("-")[1] in runner_pids or p not in before["cgroups"])
                and not alive(p.split("/")[-1].split("-")[1]) and os.path.exists(p)]
    found["cgroups"] = poll(cgroup_leaks)
    found["mounts"] = poll(lambda: sorted(m for m in mounts() - before["mounts"]
                                          if not of_a_live_runner(m.split(" ")[1])))
    found["netns"] = poll(lambda: sorted(netns() - before["netns"])) + \
        [m for m in found["mounts"] if " nsfs " in m]
    def temp_leaks():
        shared = [p for p in temp_entries() - before["temp"]
                  if p not in PERSISTENT and ("nanoclaw" in p or p.startswith(RUN_STAGING))
                  and not of_a_live_runner(p)]
        return sorted(shared + [os.path.join(tmpdir, e) for e in os.listdir(tmpdir)])
    found["temp"] = poll(temp_leaks)
    return found

def audit_runs(path):
    """(starts, ends, runner pids) of the audit log: per invocation id, how many
    invocation.start records, and how many invocation.end or policy.refused after one."""
    import json
    starts, ends, pids = {}, {}, set()
    for line in open(path):
        r = json.loads(line)
        d = r.get("data") or {}
        inv = d.get("invocation_id")
        if r["kind"] == "invocation.start":
            starts[inv] = starts.get(inv, 0) + 1
            if (d.get("runner") or {}).get("pid"):
                pids.add(str(d["runner"]["pid"]))
        elif r["kind"] in ("invocation.end", "policy.refused") and inv in starts:
            ends[inv] = ends.get(inv, 0) + 1
    return starts, ends, pids
PY
}
