//! What the tests share: the `nanoclaw` binary under test, a [`Sandbox`] builder that runs
//! it, the outcome of a run as `--json` reports it, the probe reports, and checks for what a
//! run may leave behind on the host.
//!
//! Every run gets `NANOCLAW_AUDIT` pointing into the test's own temporary directory, so a
//! test never writes the user's real audit log. Nothing here knows how a backend isolates:
//! a [`Backend`] only says how its sandboxes are asked for, how the probe binary gets in, and
//! what of its own a run could leave behind (a Docker container).

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use nanoclaw_audit::Record;
use nanoclaw_docker::LABEL_INVOCATION;
use serde::Deserialize;

pub use super::shared::{serialise_heavy, unique_token};
use super::test_image;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_nanoclaw");

/// The user a sandbox runs as unless told otherwise.
pub const SANDBOX_UID: u32 = 10001;

/// Exit status of `nanoclaw run` when nanoclaw itself could not run the command.
pub const RUNNER_ERROR: i32 = 125;

/// A backend that runs sandboxes. Every conformance test runs once per backend (see
/// [`backend_tests!`]); a backend decides only how it is selected, how the probe binary
/// gets into its sandboxes, and what of its own a run could leave behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Native,
    /// The Docker Engine, running the test image (`test_image`).
    Docker,
}

impl Backend {
    /// The `--backend` value.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Native => "native",
            Backend::Docker => "docker",
        }
    }

    /// The `run` options that select this backend.
    fn selection(self) -> Vec<OsString> {
        let mut options = vec!["--backend".into(), self.name().into()];
        if self == Backend::Docker {
            options.extend(["--image".into(), test_image_id().into()]);
        }
        options
    }

    /// Where a sandbox that asked for it (`Sandbox::with_probe`) finds the probe binary:
    /// where the test image has it, and where the native backend binds it.
    pub fn probe_path(self) -> &'static str {
        test_image::PROBE
    }

    /// The `run` options that put the probe binary at `probe_path`. The native backend
    /// binds the binary under test read-only; the test image has the probe already.
    fn probe_options(self) -> Vec<OsString> {
        match self {
            Backend::Native => vec![
                "-v".into(),
                format!("{BIN}:{}:ro", self.probe_path()).into(),
            ],
            Backend::Docker => Vec::new(),
        }
    }

    /// The probe binary on the host, for a test that puts a copy of it into a sandbox
    /// itself: the binary under test, or for an image the static build the image holds
    /// (the binary under test needs the host's libraries).
    pub fn probe_binary(self) -> PathBuf {
        match self {
            Backend::Native => PathBuf::from(BIN),
            Backend::Docker => test_image::probe_binary(),
        }
    }

    /// Asserts that the runs logged in `audit` (a sandbox's audit log) left nothing in the
    /// backend's own keeping: for Docker, no container with an invocation's label. What the
    /// native backend could leave (processes, cgroups) is on the host for anyone to see.
    #[track_caller]
    fn assert_left_nothing(self, audit: &Path, context: &str) {
        if self == Backend::Native {
            return;
        }
        let log = fs::read_to_string(audit).unwrap_or_default();
        let invocations: BTreeSet<String> = log
            .lines()
            .filter_map(|line| serde_json::from_str::<Record>(line).ok())
            .filter_map(|record| record.invocation_id().map(str::to_owned))
            .collect();
        for invocation in invocations {
            let label = format!("label={LABEL_INVOCATION}={invocation}");
            let listed = Command::new("docker")
                .args(["ps", "--all", "--quiet", "--filter", &label])
                .output()
                .unwrap();
            let left = String::from_utf8_lossy(&listed.stdout);
            assert!(
                listed.status.success() && left.trim().is_empty(),
                "the run left containers behind ({label}): {left}{}\n{context}",
                String::from_utf8_lossy(&listed.stderr)
            );
        }
    }
}

/// The ID of the image the docker backend's sandboxes run (see `test_image`), built once per
/// test process.
pub fn test_image_id() -> &'static str {
    static IMAGE: OnceLock<String> = OnceLock::new();
    IMAGE.get_or_init(test_image::build)
}

/// Generates, for every backend, a module of `#[test]`s named after the listed functions,
/// each calling its function (a `fn(Backend)`) with that backend:
/// `suite::conformance::native::reading_etc_shadow_is_blocked` and
/// `suite::conformance::docker::reading_etc_shadow_is_blocked`.
/// A function left out of the list is dead code, which clippy refuses.
///
/// A new backend is a variant of [`Backend`] (its name, how the probe binary gets in) and
/// one `@backend` line here.
macro_rules! backend_tests {
    ($($test:ident),* $(,)?) => {
        $crate::suite::support::backend_tests!(
            @backend native, $crate::suite::support::Backend::Native, [$($test),*]
        );
        $crate::suite::support::backend_tests!(
            @backend docker, $crate::suite::support::Backend::Docker, [$($test),*]
        );
    };
    (@backend $module:ident, $backend:expr, [$($test:ident),*]) => {
        mod $module {
            $(
                #[test]
                fn $test() {
                    super::$test($backend)
                }
            )*
        }
    };
}
pub(crate) use backend_tests;

/// The effective uid of this test process (the owner of its `/proc/self`).
pub fn host_euid() -> u32 {
    fs::metadata("/proc/self").unwrap().uid()
}

/// A fresh temporary directory for one test, under cargo's per-target temp dir so that
/// tests do not add entries to the host's /tmp (the cleanup tests watch it).
pub fn scratch_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("nanoclaw-test-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap()
}

/// The binary under test with the test's audit log, and nothing else set.
pub fn nanoclaw(scratch: &Path) -> Command {
    let mut command = Command::new(BIN);
    command.env("NANOCLAW_AUDIT", scratch.join("audit.jsonl"));
    command
}

/// Runs the binary under test with `args`, as a user would type them (with only the audit
/// log redirected into a temporary directory).
pub fn nanoclaw_output(args: &[&str]) -> Exited {
    let scratch = scratch_dir();
    execute(nanoclaw(scratch.path()).args(args), None)
}

/// One sandbox invocation being put together: options, host directories to mount, what to
/// feed nanoclaw's standard input. Methods chain on `&mut`, so the sandbox (and its
/// temporary directory) lives on after a run for the test to inspect the host side.
pub struct Sandbox {
    backend: Backend,
    scratch: tempfile::TempDir,
    options: Vec<OsString>,
    host_env: Vec<(OsString, OsString)>,
    feed: Option<Vec<u8>>,
    with_probe: bool,
}

impl Sandbox {
    pub fn new(backend: Backend) -> Sandbox {
        Sandbox {
            backend,
            scratch: scratch_dir(),
            options: Vec::new(),
            host_env: Vec::new(),
            feed: None,
            with_probe: false,
        }
    }

    /// The test's own temporary directory on the host.
    pub fn scratch(&self) -> &Path {
        self.scratch.path()
    }

    /// Where the probe binary is inside the sandbox (after `with_probe`).
    pub fn probe_path(&self) -> &'static str {
        self.backend.probe_path()
    }

    /// The probe binary on the host, for a copy the test puts into the sandbox itself.
    pub fn probe_binary(&self) -> PathBuf {
        self.backend.probe_binary()
    }

    /// Asserts that the sandbox's runs so far left nothing of the backend's own behind (see
    /// `Backend::assert_left_nothing`). Every run of `output`, `run` and
    /// `output_on_a_terminal` checks this itself.
    #[track_caller]
    pub fn assert_left_nothing(&self, context: &str) {
        self.backend
            .assert_left_nothing(&self.scratch().join("audit.jsonl"), context);
    }

    /// A new, empty directory on the host, owned by host root.
    pub fn host_dir(&self, name: &str) -> PathBuf {
        let dir = self.scratch().join(name);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// A new directory on the host that the sandbox user may write to, as a user would
    /// prepare a workspace for it: owned by uid 10001 when the tests run as root.
    pub fn writable_host_dir(&self, name: &str) -> PathBuf {
        let dir = self.host_dir(name);
        give_to_sandbox_user(&dir);
        dir
    }

    pub fn option(&mut self, option: impl Into<OsString>) -> &mut Sandbox {
        self.options.push(option.into());
        self
    }

    pub fn options<I: IntoIterator<Item = S>, S: Into<OsString>>(
        &mut self,
        options: I,
    ) -> &mut Sandbox {
        self.options.extend(options.into_iter().map(Into::into));
        self
    }

    /// `-v HOST:DST:ro`
    pub fn mount(&mut self, host: &Path, dst: &str) -> &mut Sandbox {
        self.option("-v")
            .option(format!("{}:{dst}:ro", host.display()))
    }

    /// `-v HOST:DST:rw`
    pub fn mount_rw(&mut self, host: &Path, dst: &str) -> &mut Sandbox {
        self.option("-v")
            .option(format!("{}:{dst}:rw", host.display()))
    }

    /// Makes the probe binary available at `probe_path()` inside the sandbox.
    pub fn with_probe(&mut self) -> &mut Sandbox {
        if !self.with_probe {
            self.with_probe = true;
            let options = self.backend.probe_options();
            self.options(options);
        }
        self
    }

    /// Sets a variable in nanoclaw's own environment (on the host).
    pub fn host_env(&mut self, key: &str, value: &str) -> &mut Sandbox {
        self.host_env.push((key.into(), value.into()));
        self
    }

    /// Writes `bytes` to nanoclaw's standard input (which reaches the command only with
    /// `--stdin`).
    pub fn feed(&mut self, bytes: &[u8]) -> &mut Sandbox {
        self.feed = Some(bytes.to_vec());
        self
    }

    /// The `nanoclaw run` command line for `command`, not started.
    pub fn command(&self, json: bool, command: &[&str]) -> Command {
        let mut cmd = nanoclaw(self.scratch());
        cmd.arg("run").args(self.backend.selection());
        cmd.args(&self.options);
        if json {
            cmd.arg("--json");
        }
        cmd.arg("--").args(command);
        for (key, value) in &self.host_env {
            cmd.env(key, value);
        }
        cmd
    }

    /// Runs `command` without `--json`: its output streams through nanoclaw.
    pub fn output(&self, command: &[&str]) -> Exited {
        let mut cmd = self.command(false, command);
        let exited = execute(&mut cmd, self.feed.as_deref());
        self.assert_left_nothing(&exited.context());
        exited
    }

    /// Runs `command` without `--json` from a terminal, as a person at a shell would: nanoclaw's
    /// stdin, stdout and stderr are one pseudo-terminal, made by script(1) from util-linux.
    /// The output is what appeared on the terminal (with `\r\n` line ends); `pid` is
    /// script's.
    pub fn output_on_a_terminal(&self, command: &[&str]) -> Exited {
        let inner = self.command(false, command);
        let line = std::iter::once(inner.get_program())
            .chain(inner.get_args())
            .map(|word| format!("'{}'", word.to_string_lossy().replace('\'', r"'\''")))
            .collect::<Vec<_>>()
            .join(" ");
        let mut script = Command::new("script");
        // -e: exit with nanoclaw's status; /dev/null: keep no typescript file.
        script.args(["-q", "-e", "-c", &line, "/dev/null"]);
        for (key, value) in inner.get_envs() {
            if let Some(value) = value {
                script.env(key, value);
            }
        }
        let exited = execute(&mut script, None);
        self.assert_left_nothing(&exited.context());
        exited
    }

    /// Runs `command` with `--json` and parses the outcome. Panics, showing everything
    /// nanoclaw printed, if stdout is not one outcome object.
    #[track_caller]
    pub fn run(&self, command: &[&str]) -> Run {
        let mut cmd = self.command(true, command);
        let exited = execute(&mut cmd, self.feed.as_deref());
        self.assert_left_nothing(&exited.context());
        let json: serde_json::Value = serde_json::from_str(&exited.stdout)
            .unwrap_or_else(|e| panic!("--json printed no JSON ({e})\n{}", exited.context()));
        let outcome = serde_json::from_value(json.clone()).unwrap_or_else(|e| {
            panic!(
                "--json printed no outcome ({e}): the run did not happen\n{}",
                exited.context()
            )
        });
        Run {
            exited,
            json,
            outcome,
        }
    }

    /// Runs `nanoclaw probe NAME ARGS` inside the sandbox, with `--json`.
    #[track_caller]
    pub fn probe(&mut self, name: &str, args: &[&str]) -> ProbeRun {
        let probe = self.probe_path();
        let command: Vec<&str> = [probe, "probe", name]
            .into_iter()
            .chain(args.iter().copied())
            .collect();
        let run = self.with_probe().run(&command);
        let report = run
            .outcome
            .stdout
            .lines()
            .rev()
            .find(|line| line.starts_with('{'))
            .and_then(|line| serde_json::from_str(line).ok());
        ProbeRun {
            name: name.to_string(),
            command: command.join(" "),
            report,
            run,
        }
    }
}

/// Makes `path` (and everything below it) belong to the sandbox user, when the tests run
/// as root; an ordinary user's sandbox maps to that user, who owns it already.
pub fn give_to_sandbox_user(path: &Path) {
    if host_euid() != 0 {
        return;
    }
    std::os::unix::fs::chown(path, Some(SANDBOX_UID), Some(SANDBOX_UID)).unwrap();
    if path.is_dir() && !path.is_symlink() {
        for entry in fs::read_dir(path).unwrap() {
            give_to_sandbox_user(&entry.unwrap().path());
        }
    }
}

/// The host uid that files written by the sandbox user must belong to.
pub fn expected_host_owner() -> u32 {
    match host_euid() {
        0 => SANDBOX_UID,
        me => me,
    }
}

fn execute(cmd: &mut Command, feed: Option<&[u8]>) -> Exited {
    let argv = format!("{cmd:?}");
    cmd.stdin(if feed.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {argv}: {e}"));
    let pid = child.id();
    if let (Some(bytes), Some(mut stdin)) = (feed, child.stdin.take()) {
        let bytes = bytes.to_vec();
        // A thread, so that a command that does not read cannot block the test.
        std::thread::spawn(move || {
            let _ = stdin.write_all(&bytes);
        });
    }
    let output = child.wait_with_output().unwrap();
    Exited {
        argv,
        pid,
        status: output.status,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        wall: start.elapsed(),
    }
}

/// A finished `nanoclaw` process.
#[derive(Debug)]
pub struct Exited {
    pub argv: String,
    /// The runner's pid (cgroups it made carry it in their names).
    pub pid: u32,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub wall: Duration,
}

impl Exited {
    /// The exit status; panics if nanoclaw itself was killed by a signal.
    #[track_caller]
    pub fn code(&self) -> i32 {
        self.status
            .code()
            .unwrap_or_else(|| panic!("nanoclaw was killed ({})\n{}", self.status, self.context()))
    }

    /// Everything about the run, for a failure message.
    pub fn context(&self) -> String {
        format!(
            "command: {}\nnanoclaw {} after {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.argv, self.status, self.wall, self.stdout, self.stderr
        )
    }
}

/// A `--json` run.
#[derive(Debug)]
pub struct Run {
    pub exited: Exited,
    pub json: serde_json::Value,
    pub outcome: Outcome,
}

impl Run {
    /// nanoclaw's exit status.
    pub fn code(&self) -> i32 {
        self.exited.code()
    }

    pub fn context(&self) -> String {
        format!(
            "{}\n--- sandbox stderr ---\n{}",
            self.exited.context(),
            self.outcome.stderr
        )
    }
}

/// The `--json` outcome, with the documented fields (each required).
#[derive(Debug, Deserialize)]
pub struct Outcome {
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub timed_out: bool,
    pub oom_killed: bool,
    pub duration_ms: u64,
    pub stdout: String,
    pub stderr: String,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
    pub usage: Usage,
}

#[derive(Debug, Deserialize)]
pub struct Usage {
    pub cpu_ms: u64,
    pub max_rss_kib: u64,
}

/// What `nanoclaw probe` prints: one line of JSON.
#[derive(Debug, Deserialize)]
pub struct Report {
    pub probe: String,
    pub blocked: bool,
    pub detail: String,
}

/// A probe run inside a sandbox.
#[derive(Debug)]
pub struct ProbeRun {
    pub name: String,
    pub command: String,
    /// `None` when the probe printed no report (it crashed or was killed).
    pub report: Option<Report>,
    pub run: Run,
}

impl ProbeRun {
    /// The report; panics with the run's context if the probe printed none.
    #[track_caller]
    pub fn report(&self) -> &Report {
        let report = self.report.as_ref().unwrap_or_else(|| {
            panic!(
                "`{}` printed no report\n{}",
                self.command,
                self.run.context()
            )
        });
        assert_eq!(report.probe, self.name, "a report of another probe");
        report
    }

    /// Asserts the attack failed, and that the probe's exit code agrees (0: blocked).
    #[track_caller]
    pub fn assert_blocked(&self) -> &ProbeRun {
        let report = self.report();
        assert!(
            report.blocked,
            "NOT BLOCKED: `{}` got through: {}\n{}",
            self.command,
            report.detail,
            self.run.context()
        );
        assert_eq!(
            self.run.outcome.exit_code,
            Some(0),
            "`{}` reported blocked but did not exit 0\n{}",
            self.command,
            self.run.context()
        );
        self
    }

    pub fn detail(&self) -> &str {
        &self.report().detail
    }
}

/// Processes on the host whose command line contains `token`, as `(pid, command line)`.
pub fn processes_with(token: &str) -> Vec<(u32, String)> {
    let me = std::process::id();
    let mut found = Vec::new();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        // A process may exit between the listing and the read.
        let Ok(cmdline) = fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(token) {
            found.push((pid, cmdline));
        }
    }
    found
}

/// Asserts no process with `token` runs, now and again a little later (a process that
/// outlives its sandbox by a moment still escaped it).
#[track_caller]
pub fn assert_no_process_with(token: &str, after: &str) {
    for wait in [Duration::ZERO, Duration::from_millis(200)] {
        std::thread::sleep(wait);
        let left = processes_with(token);
        assert!(
            left.is_empty(),
            "{after}: processes outlived the run ({wait:?} later): {left:#?}"
        );
    }
}

/// Waits until a process other than `runner` has `token` in its command line: the
/// sandboxed command has started.
pub fn wait_for_process_with(token: &str, runner: u32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if processes_with(token).iter().any(|(pid, _)| *pid != runner) {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("the sandboxed command with {token} did not start within 10 s");
}

/// Directories named `nanoclaw-*` under /sys/fs/cgroup, at most five levels down (a
/// controller, then the runner's own cgroup, then the sandbox's).
pub fn nanoclaw_cgroups() -> Vec<PathBuf> {
    fn walk(dir: &Path, depth: u32, found: &mut Vec<PathBuf>) {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            if entry.file_name().to_string_lossy().starts_with("nanoclaw-") {
                found.push(path.clone());
            }
            if depth < 5 {
                walk(&path, depth + 1, found);
            }
        }
    }
    let mut found = Vec::new();
    walk(Path::new("/sys/fs/cgroup"), 1, &mut found);
    found
}

/// The cgroups the runner with `pid` made that still exist (`nanoclaw-<pid>-…`).
pub fn cgroups_of(pid: u32) -> Vec<PathBuf> {
    let prefix = format!("nanoclaw-{pid}-");
    nanoclaw_cgroups()
        .into_iter()
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(&prefix))
        })
        .collect()
}

/// `nanoclaw-<pid>-…` cgroups whose runner is gone: leaked, whichever run left them.
/// Checked twice, so a runner that removed its cgroup and exited between the listing and
/// the liveness check does not count.
pub fn orphaned_cgroups() -> Vec<PathBuf> {
    nanoclaw_cgroups()
        .into_iter()
        .filter(|path| {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let pid = name.split('-').nth(1).unwrap_or_default();
            !Path::new("/proc").join(pid).exists() && path.exists()
        })
        .collect()
}

/// Asserts the runner with `pid` left no cgroup behind.
#[track_caller]
pub fn assert_no_cgroups_of(exited: &Exited) {
    let left = cgroups_of(exited.pid);
    assert!(
        left.is_empty(),
        "the run left cgroups behind: {left:#?}\n{}",
        exited.context()
    );
}

/// What a run might leave on the host besides processes and cgroups: mounts, and entries
/// in the shared temporary directories.
#[derive(Debug)]
pub struct HostState {
    mounts: BTreeSet<String>,
    temp_entries: BTreeSet<PathBuf>,
}

/// Mount points other tests running at the same time create on the host: the Docker
/// Engine's container file systems and the egress tests' named network namespaces. A
/// sandbox's own mounts live in its private mount namespace; none of these is one.
const FOREIGN_MOUNTS: &[&str] = &[
    "/var/lib/docker/",
    "/run/docker/",
    "/run/netns",
    "/var/run/netns",
];

/// Shared directories where a runner could leave files, besides its `TMPDIR`.
/// Mounts nanoclaw makes once per boot on purpose: the writable mounts' staging root, bound
/// over itself to be a private mount (what is mounted below it per run is still checked).
const PERSISTENT_MOUNTS: &[&str] = &["/run/nanoclaw/writes"];

const SHARED_TEMP_DIRS: &[&str] = &["/tmp", "/var/tmp", "/dev/shm", "/run"];

/// Per-run staging directories, named `PID-...` after the runner that made them.
const RUN_STAGING: &[&str] = &["/run/nanoclaw/docker/", "/run/nanoclaw/writes/"];

/// Whether `path` lies in the staging directory of a runner that still lives: another
/// test's run in flight (the runs a test checks have all returned by then, so what they
/// left there still counts).
fn of_a_live_runner(path: &str) -> bool {
    RUN_STAGING.iter().any(|root| {
        path.strip_prefix(root)
            .and_then(|rest| rest.split(['-', '/']).next())
            .and_then(|pid| pid.parse::<u32>().ok())
            .is_some_and(|pid| Path::new("/proc").join(pid.to_string()).exists())
    })
}

impl HostState {
    pub fn snapshot() -> HostState {
        let mounts = fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .filter(|line| {
                let mount_point = line.split(' ').nth(4).unwrap_or("");
                !FOREIGN_MOUNTS.iter().any(|f| mount_point.starts_with(f))
                    && !PERSISTENT_MOUNTS.contains(&mount_point)
            })
            .map(str::to_owned)
            .collect();
        let temp_entries = SHARED_TEMP_DIRS
            .iter()
            .filter_map(|dir| fs::read_dir(dir).ok())
            .flat_map(|entries| entries.flatten().map(|e| e.path()))
            .collect();
        HostState {
            mounts,
            temp_entries,
        }
    }

    /// Mounts added since `self`, and new temp entries that name nanoclaw (other programs on
    /// the host create temp files of their own meanwhile).
    pub fn added_since(&self, before: &HostState) -> Vec<String> {
        let mounts = self
            .mounts
            .difference(&before.mounts)
            .filter(|m| !of_a_live_runner(m.split(' ').nth(4).unwrap_or("")))
            .map(|m| format!("mount: {m}"));
        let files = self
            .temp_entries
            .difference(&before.temp_entries)
            .filter(|p| p.to_string_lossy().contains("nanoclaw"))
            .map(|p| format!("temp entry: {}", p.display()));
        mounts.chain(files).collect()
    }
}
