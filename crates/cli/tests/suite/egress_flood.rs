//! The egress proxy under attack from its own sandbox: a connection flood straight to the
//! mounted socket must leave the runner small, the audit log short and the run's end
//! prompt (also on SIGTERM, and with nothing left behind); the host's own addresses are
//! refused unless named exactly; a socket directory a killed runner left behind is removed
//! by the next run.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::suite::egress::Upstream;
use crate::suite::support::{backend_tests, serialise_heavy, Backend, Sandbox};

/// How long the probe floods.
const FLOOD_SECONDS: u64 = 5;

/// The runner's own start and the sandbox's: the run may take this much beyond the flood
/// (a container's creation and removal take longer than a native sandbox's, more so on a
/// loaded host).
fn start_slack(backend: Backend) -> Duration {
    match backend {
        Backend::Native => Duration::from_secs(3),
        Backend::Docker => Duration::from_secs(6),
    }
}

/// What a backend's own teardown may add after a stop signal (a container is removed
/// through the engine).
fn teardown_slack(backend: Backend) -> Duration {
    match backend {
        Backend::Native => Duration::from_millis(500),
        Backend::Docker => Duration::from_secs(2),
    }
}

/// How soon after the sandbox (or a stop signal) the runner must have ended.
const END_WITHIN: Duration = Duration::from_secs(2);

/// A private runtime directory for the runner (`XDG_RUNTIME_DIR`), so that the test sees
/// exactly the socket directories its own runs made.
fn runtime_dir(sandbox: &mut Sandbox) -> std::path::PathBuf {
    let dir = sandbox.host_dir("runtime");
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
    sandbox.host_env("XDG_RUNTIME_DIR", dir.to_str().unwrap());
    dir
}

fn entries(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

/// The runner's peak resident memory, in KiB, read while it runs (0 once it is gone).
fn peak_rss_kib(pid: u32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Waits for `child`, sampling its peak memory; returns (exit code, peak KiB, wall time).
fn wait_sampling(child: &mut Child, limit: Duration) -> (Option<i32>, u64, Duration) {
    let start = Instant::now();
    let mut peak = 0;
    loop {
        peak = peak.max(peak_rss_kib(child.id()));
        if let Some(status) = child.try_wait().unwrap() {
            return (status.code(), peak, start.elapsed());
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the runner was still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn egress_records(sandbox: &Sandbox) -> Vec<serde_json::Value> {
    fs::read_to_string(sandbox.scratch().join("audit.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|r| r["kind"].as_str().unwrap().starts_with("egress."))
        .collect()
}

fn flood(backend: Backend, seconds: u64) -> (Sandbox, std::path::PathBuf, Child) {
    let mut sandbox = Sandbox::new(backend);
    let runtime = runtime_dir(&mut sandbox);
    sandbox
        .with_probe()
        .options(["--allow", "api.example.com:443"]);
    let probe = sandbox.probe_path();
    let child = sandbox
        .command(
            false,
            &[probe, "probe", "egress-flood", &seconds.to_string()],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    (sandbox, runtime, child)
}

fn heavy_a_connection_flood_leaves_the_runner_bounded(backend: Backend) {
    let _heavy = serialise_heavy();
    let (sandbox, runtime, mut child) = flood(backend, FLOOD_SECONDS);
    let limit = Duration::from_secs(FLOOD_SECONDS) + start_slack(backend) + END_WITHIN;
    let (code, peak_kib, wall) = wait_sampling(&mut child, limit * 3);
    let output = child.wait_with_output().unwrap();
    let context = format!(
        "exit {code:?}, peak {peak_kib} KiB, {wall:?}\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(code, Some(0), "{context}");
    assert!(wall < limit, "the runner ended late: {context}");
    assert!(peak_kib < 96 * 1024, "the runner's memory grew: {context}");
    let records = egress_records(&sandbox);
    assert!(
        !records.is_empty() && records.len() < 1000,
        "{} egress records: {context}",
        records.len()
    );
    let counted: u64 = records
        .iter()
        .map(|r| r["data"]["count"].as_u64().unwrap())
        .sum();
    assert!(
        counted as usize > records.len(),
        "no refusal was aggregated ({counted} in {} records): {context}",
        records.len()
    );
    assert!(
        records
            .iter()
            .all(|r| r["kind"] != "egress.allowed" && r["kind"] != "egress.closed"),
        "{context}"
    );
    assert_eq!(entries(&runtime), Vec::<String>::new(), "{context}");
    sandbox.assert_left_nothing(&context);
}

fn heavy_sigterm_mid_flood_ends_the_run_promptly(backend: Backend) {
    let _heavy = serialise_heavy();
    let (sandbox, runtime, mut child) = flood(backend, 60);
    std::thread::sleep(start_slack(backend));
    let signalled = Instant::now();
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(child.id() as i32).unwrap(),
        rustix::process::Signal::TERM,
    )
    .unwrap();
    let (code, _, _) = wait_sampling(&mut child, Duration::from_secs(30));
    let took = signalled.elapsed();
    let output = child.wait_with_output().unwrap();
    let context = format!(
        "exit {code:?} {took:?} after SIGTERM\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(took < END_WITHIN + teardown_slack(backend), "{context}");
    assert_ne!(code, Some(0), "{context}");
    assert_eq!(entries(&runtime), Vec::<String>::new(), "{context}");
    sandbox.assert_left_nothing(&context);
}

/// An address of this host that the range classifier passes (documentation space, on a
/// veth pair of its own), and a name for it in a private `/etc/hosts`.
struct OwnAddress {
    link: String,
    ip: String,
    hosts: tempfile::TempDir,
}

const OWN_NAME: &str = "own.nanoclaw.test";

impl OwnAddress {
    fn add() -> OwnAddress {
        let id = std::process::id();
        let link = format!("ncown{}", id % 1_000_000);
        let ip = format!("198.51.100.{}", 20 + id % 200);
        let run = |args: &[&str]| {
            let out = Command::new("ip").args(args).output().unwrap();
            assert!(out.status.success(), "ip {args:?}: {out:?}");
        };
        let _ = Command::new("ip").args(["link", "del", &link]).output();
        let peer = format!("{link}p");
        run(&["link", "add", &link, "type", "veth", "peer", "name", &peer]);
        run(&["addr", "add", &format!("{ip}/32"), "dev", &link]);
        run(&["link", "set", &link, "up"]);
        let hosts = crate::suite::support::scratch_dir();
        let mut text = fs::read_to_string("/etc/hosts").unwrap_or_default();
        text.push_str(&format!("\n{ip} {OWN_NAME}\n"));
        fs::write(hosts.path().join("hosts"), text).unwrap();
        OwnAddress { link, ip, hosts }
    }

    /// `command` run with this `/etc/hosts`, in a mount namespace of its own.
    fn with_hosts(&self, command: &Command) -> Command {
        let mut wrapped = Command::new("unshare");
        wrapped
            .args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg(r#"mount --bind "$0" /etc/hosts && exec "$@""#)
            .arg(self.hosts.path().join("hosts"))
            .arg(command.get_program())
            .args(command.get_args());
        for (key, value) in command.get_envs() {
            if let Some(value) = value {
                wrapped.env(key, value);
            }
        }
        wrapped
    }
}

impl Drop for OwnAddress {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.link])
            .output();
    }
}

/// The probe's `proxy-connect` answer for `target` and the run's denial reasons.
fn proxy_connect(own: &OwnAddress, backend: Backend, allow: &str, target: &str) -> (u64, String) {
    let mut sandbox = Sandbox::new(backend);
    sandbox.with_probe().options(["--allow", allow]);
    let probe = sandbox.probe_path();
    let command = sandbox.command(true, &[probe, "probe", "proxy-connect", target]);
    let output = own.with_hosts(&command).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let context = format!("{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    let outcome: serde_json::Value = serde_json::from_str(&stdout).expect(&context);
    let report = outcome["stdout"]
        .as_str()
        .unwrap()
        .lines()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("no probe report: {context}"));
    let report: serde_json::Value = serde_json::from_str(report).unwrap();
    let detail: serde_json::Value =
        serde_json::from_str(report["detail"].as_str().unwrap()).unwrap();
    let status = detail["results"][0]["status"].as_u64().unwrap_or(0);
    let reasons = egress_records(&sandbox)
        .iter()
        .map(|r| r["data"]["reason"].as_str().unwrap_or("").to_string())
        .collect::<Vec<_>>()
        .join("; ");
    sandbox.assert_left_nothing(&context);
    (status, format!("{reasons}\n{context}"))
}

fn the_hosts_own_address_is_refused_unless_named(backend: Backend) {
    let own = OwnAddress::add();
    let upstream = Upstream::start(&["http", "plain", &own.ip]);
    let by_name = format!("{OWN_NAME}:{}", upstream.port);
    let (status, context) = proxy_connect(&own, backend, &by_name, &by_name);
    assert_eq!(status, 403, "{context}");
    assert!(context.contains("this host's own address"), "{context}");
    let by_ip = format!("{}:{}", own.ip, upstream.port);
    let (status, context) = proxy_connect(&own, backend, &by_ip, &by_ip);
    assert_eq!(status, 200, "{context}");
}

backend_tests!(
    heavy_a_connection_flood_leaves_the_runner_bounded,
    heavy_sigterm_mid_flood_ends_the_run_promptly,
    the_hosts_own_address_is_refused_unless_named,
);

/// SIGKILL leaves the runner no chance to clean up; the next run removes what it left.
#[test]
fn a_socket_directory_a_killed_runner_left_is_removed_by_the_next_run() {
    let mut sandbox = Sandbox::new(Backend::Native);
    let runtime = runtime_dir(&mut sandbox);
    sandbox.options(["--allow", "api.example.com:443"]);
    let mut child = sandbox
        .command(false, &["sleep", "5"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while entries(&runtime).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(1200));
    child.kill().unwrap();
    child.wait().unwrap();
    let left = entries(&runtime);
    assert_eq!(left.len(), 1, "{left:?}");
    // The killed runner's sandbox dies with it; wait until it is gone.
    std::thread::sleep(Duration::from_millis(500));
    let again = sandbox.output(&["true"]);
    assert_eq!(again.code(), 0, "{}", again.context());
    assert_eq!(entries(&runtime), Vec::<String>::new());
}
