//! `SandboxSpec`: one fully resolved sandbox, and the `Backend` trait that runs it.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::Outcome;

/// The uid the sandboxed command runs as unless the caller says otherwise.
pub const SANDBOX_UID: u32 = 10001;
/// The gid the sandboxed command runs as unless the caller says otherwise.
pub const SANDBOX_GID: u32 = 10001;
/// `PATH` inside every sandbox.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Everything a backend needs to run one command in one sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxSpec {
    /// What the sandbox's `/` is made of.
    pub root: Root,
    /// argv of the sandboxed command; `command[0]` is looked up on `PATH` inside.
    pub command: Vec<String>,
    /// The working directory inside the sandbox.
    pub workdir: PathBuf,
    /// The whole environment of the command, in order. Nothing is inherited.
    pub env: Vec<(String, String)>,
    /// Host paths bound into the sandbox.
    pub mounts: Vec<Mount>,
    /// Fresh tmpfs mounts (always noexec, nosuid, nodev).
    pub tmpfs: Vec<Tmpfs>,
    pub user: User,
    pub limits: Limits,
    pub network: Network,
    /// Where an `Egress` sandbox reaches its host proxy; filled in by the runner once the
    /// proxy listens (a backend refuses `Egress` without it).
    #[serde(default)]
    pub egress_proxy: Option<EgressProxy>,
    /// The seccomp profile and any explicit extra allowances.
    pub syscalls: Syscalls,
    /// Run even when the host cannot enforce the cgroup limits (the outcome says so).
    pub allow_unlimited: bool,
    /// Credential files and directories inside the mounts (absolute paths inside the
    /// sandbox), each covered by an empty read-only file or directory. The runner's scan
    /// fills it before the backend starts; the audit record names every one.
    #[serde(default)]
    pub hidden: Vec<PathBuf>,
    /// Mount targets whose credential files the policy shows (an acknowledged opt-out):
    /// the scan skips them.
    #[serde(default)]
    pub credentials_shown: Vec<PathBuf>,
    /// The secrets handed to this invocation (values filled in by the runner).
    #[serde(default)]
    pub secrets: Vec<crate::SandboxSecret>,
    /// PEM certificates the sandbox trusts (host roots plus the egress proxy's per-run CA),
    /// at `CA_BUNDLE_INSIDE`; set with `Placeholder` secrets.
    #[serde(default)]
    pub ca_bundle: Option<String>,
    /// Who the run is for (set by the runner from its audit record): a backend that labels
    /// what it creates (the docker backend's containers) labels it with this.
    #[serde(default)]
    pub invocation: Invocation,
}

/// The identity of one invocation: the tool's name (empty for an ad-hoc run) and the
/// invocation id of its audit record (empty without one: the backend makes up its own).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invocation {
    pub tool: String,
    pub id: String,
}

/// The sandbox's root file system.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "path")]
pub enum Root {
    /// The host's `/usr` (and the `/bin`, `/lib`, `/lib64`, `/sbin` it has) read-only,
    /// with a generated minimal `/etc`.
    Host,
    /// A directory holding an unpacked image, bound read-only.
    Rootfs(PathBuf),
    /// A container image reference (container backends only).
    Image(String),
}

/// A host path bound into the sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    /// Absolute host path. Must not be a symlink.
    pub src: PathBuf,
    /// Absolute path inside the sandbox.
    pub dst: PathBuf,
    pub writable: bool,
}

/// A fresh, size-bounded tmpfs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tmpfs {
    pub dst: PathBuf,
    pub size_bytes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub uid: u32,
    pub gid: u32,
}

impl Default for User {
    fn default() -> Self {
        User {
            uid: SANDBOX_UID,
            gid: SANDBOX_GID,
        }
    }
}

/// Resource limits. Every field is always set: there is no "unlimited".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    pub memory_bytes: u64,
    /// Thousandths of a CPU (500 = half a CPU).
    pub cpu_millis: u32,
    pub pids: u32,
    #[serde(with = "millis")]
    pub timeout: Duration,
    /// Cap on each captured stream (stdout, stderr) when output is captured.
    pub output_bytes: u64,
    /// RLIMIT_FSIZE: the largest file the command may write.
    pub file_size_bytes: u64,
    /// RLIMIT_NOFILE.
    pub open_files: u64,
    /// Write budget of the run's writable mounts together: the bytes their changes may take
    /// (`--write-limit`, policy `limits.writes`).
    #[serde(default = "default_write_bytes")]
    pub write_bytes: u64,
    /// The files (inodes) their changes may create (`--write-files`, `limits.write_files`).
    #[serde(default = "default_write_files")]
    pub write_files: u64,
}

/// The default write budget: 1 GiB.
pub const DEFAULT_WRITE_BYTES: u64 = 1 << 30;
/// The default write budget in files.
pub const DEFAULT_WRITE_FILES: u64 = 100_000;

fn default_write_bytes() -> u64 {
    DEFAULT_WRITE_BYTES
}

fn default_write_files() -> u64 {
    DEFAULT_WRITE_FILES
}

impl Default for Limits {
    /// The reference invocation's limits (DESIGN.md).
    fn default() -> Self {
        Limits {
            memory_bytes: 512 << 20,
            cpu_millis: 500,
            pids: 256,
            timeout: Duration::from_secs(60),
            output_bytes: 1 << 20,
            file_size_bytes: 1 << 30,
            open_files: 1024,
            write_bytes: DEFAULT_WRITE_BYTES,
            write_files: DEFAULT_WRITE_FILES,
        }
    }
}

/// What network the sandbox has.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Network {
    /// A network namespace with only a loopback device.
    None,
    /// No route out, but a host proxy that lets through exactly these destinations.
    Egress(Vec<EgressRule>),
}

/// One destination a sandbox with egress may reach through the host proxy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EgressRule {
    /// An exact host name, a `*.` wildcard matching subdomains only, or an IP literal.
    pub host: String,
    pub port: u16,
}

/// The path from a sandbox with egress to its host proxy: the proxy's Unix socket on the
/// host, mounted at `EgressProxy::SOCKET_INSIDE`, and bridged to `127.0.0.1:port` inside by
/// nanoclaw's own bridge so that ordinary clients (HTTP_PROXY) can use it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EgressProxy {
    pub socket: PathBuf,
    pub port: u16,
}

impl EgressProxy {
    /// Where the proxy's socket appears inside the sandbox.
    pub const SOCKET_INSIDE: &'static str = "/run/nanoclaw/egress.sock";
    /// The loopback port the bridge listens on inside the sandbox.
    pub const DEFAULT_PORT: u16 = 3128;

    /// The proxy variables that point ordinary clients at the bridge. `ALL_PROXY` uses
    /// SOCKS5 with names resolved by the proxy (the sandbox has no resolver).
    pub fn env(&self) -> Vec<(String, String)> {
        let http = format!("http://127.0.0.1:{}", self.port);
        let socks = format!("socks5h://127.0.0.1:{}", self.port);
        let mut vars = Vec::new();
        for (name, value) in [
            ("HTTP_PROXY", &http),
            ("HTTPS_PROXY", &http),
            ("ALL_PROXY", &socks),
        ] {
            vars.push((name.to_string(), value.clone()));
            vars.push((name.to_ascii_lowercase(), value.clone()));
        }
        vars
    }
}

/// The syscall filter: a named profile (extra allowances are not part of the format until a
/// backend enforces them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Syscalls {
    /// "default" (nanoclaw's Docker-derived allowlist).
    pub profile: String,
}

impl Syscalls {
    /// Refuses what no backend can enforce yet: a profile other than "default".
    pub fn check(&self) -> Result<(), BackendError> {
        if self.profile != "default" {
            return Err(BackendError::Invalid(format!(
                "unknown syscall profile {:?} (known: \"default\")",
                self.profile
            )));
        }
        Ok(())
    }
}

impl Default for Syscalls {
    fn default() -> Self {
        Syscalls {
            profile: "default".into(),
        }
    }
}

impl SandboxSpec {
    /// The strict defaults of DESIGN.md around `command`.
    pub fn new(command: Vec<String>) -> Self {
        SandboxSpec {
            root: Root::Host,
            command,
            workdir: PathBuf::from("/"),
            env: vec![
                ("PATH".into(), DEFAULT_PATH.into()),
                ("HOME".into(), "/tmp".into()),
                ("LANG".into(), "C.UTF-8".into()),
            ],
            mounts: Vec::new(),
            tmpfs: vec![Tmpfs {
                dst: PathBuf::from("/tmp"),
                size_bytes: 64 << 20,
            }],
            user: User::default(),
            limits: Limits::default(),
            network: Network::None,
            egress_proxy: None,
            syscalls: Syscalls::default(),
            allow_unlimited: false,
            hidden: Vec::new(),
            credentials_shown: Vec::new(),
            secrets: Vec::new(),
            ca_bundle: None,
            invocation: Invocation::default(),
        }
    }

    /// This spec with every secret value emptied and without the invocation's identity:
    /// what may be hashed into a record.
    pub fn without_secret_values(&self) -> SandboxSpec {
        let mut spec = self.clone();
        spec.invocation = Invocation::default();
        for secret in &mut spec.secrets {
            secret.value = crate::SecretValue::default();
        }
        spec
    }

    /// The command's environment with the `Env` secrets' values and the `File` secrets'
    /// `NAME_FILE`: what the command is started with.
    pub fn command_env(&self) -> Vec<(String, Vec<u8>)> {
        let mut env: Vec<(String, Vec<u8>)> = self
            .env
            .iter()
            .map(|(k, v)| (k.clone(), v.clone().into_bytes()))
            .collect();
        for secret in &self.secrets {
            let (key, value) = match secret.delivery {
                crate::Delivery::Env => (secret.name.clone(), secret.value.expose().to_vec()),
                crate::Delivery::File => (
                    format!("{}_FILE", secret.name),
                    secret
                        .file_inside()
                        .to_string_lossy()
                        .into_owned()
                        .into_bytes(),
                ),
                crate::Delivery::Placeholder => continue,
            };
            env.retain(|(k, _)| *k != key);
            env.push((key, value));
        }
        env
    }

    /// Refuses mounts no backend can honour: a bad path, a mount over the root, two mounts
    /// on one target, or one inside `/proc`, `/dev` or `/sys`, which the sandbox provides.
    pub fn check_mounts(&self) -> Result<(), BackendError> {
        let mut targets = Vec::new();
        for mount in &self.mounts {
            check_sandbox_path("mount source", &mount.src)?;
            check_sandbox_path("mount target", &mount.dst)?;
            targets.push(&mount.dst);
        }
        for tmpfs in &self.tmpfs {
            check_sandbox_path("tmpfs", &tmpfs.dst)?;
            targets.push(&tmpfs.dst);
        }
        self.check_hidden()?;
        for (i, target) in targets.iter().enumerate() {
            let refused = if target.as_path() == std::path::Path::new("/") {
                "cannot replace the sandbox root"
            } else if targets[..i].contains(target) {
                "is the target of two mounts"
            } else if ["/proc", "/dev", "/sys"]
                .iter()
                .any(|r| target.starts_with(r))
            {
                "is provided by the sandbox and cannot be mounted over"
            } else {
                continue;
            };
            return Err(BackendError::Invalid(format!(
                "{} {refused}",
                target.display()
            )));
        }
        Ok(())
    }

    /// Refuses a hidden path that no backend could mask faithfully: one that is not a valid
    /// sandbox path, or not inside a mount (a mask never covers anything else).
    fn check_hidden(&self) -> Result<(), BackendError> {
        for path in &self.hidden {
            if let Some(refusal) = crate::credentials::unmaskable(path) {
                return Err(BackendError::Invalid(refusal));
            }
            check_sandbox_path("hidden credential path", path)?;
            if !self.mounts.iter().any(|m| path.starts_with(&m.dst)) {
                return Err(BackendError::Invalid(format!(
                    "hidden credential path {} is not inside a mount",
                    path.display()
                )));
            }
        }
        Ok(())
    }

    /// Refuses secrets no backend may deliver: one without its value (the runner did not
    /// fetch it), a name used twice or not a variable name, a placeholder without its
    /// stand-in, and mounts on or around the directories the secret files and the CA
    /// bundle are delivered in (a bind there would put them on the host).
    pub fn check_secrets(&self) -> Result<(), BackendError> {
        let invalid = |m: String| Err(BackendError::Invalid(m));
        for (i, secret) in self.secrets.iter().enumerate() {
            let name = &secret.name;
            if !crate::is_env_name(name) {
                return invalid(format!("secret name {name:?} is not a variable name"));
            }
            if self.secrets[..i].iter().any(|s| s.name == *name) {
                return invalid(format!("secret {name} is given twice"));
            }
            if secret.value.is_empty() {
                return invalid(format!(
                    "secret {name} has no value (the runner fetches it)"
                ));
            }
            if secret.delivery == crate::Delivery::Placeholder {
                let held = self.env.iter().find(|(k, _)| k == name).map(|(_, v)| v);
                if secret.placeholder.is_none() || held != secret.placeholder.as_ref() {
                    return invalid(format!(
                        "secret {name} is a placeholder, but the sandbox's {name} is not it"
                    ));
                }
            }
        }
        let mut reserved = Vec::new();
        if self
            .secrets
            .iter()
            .any(|s| s.delivery == crate::Delivery::File)
        {
            reserved.push(std::path::Path::new(crate::SECRETS_DIR));
        }
        if self.ca_bundle.is_some() {
            reserved.extend(std::path::Path::new(crate::CA_BUNDLE_INSIDE).parent());
        }
        let targets = self
            .mounts
            .iter()
            .map(|m| &m.dst)
            .chain(self.tmpfs.iter().map(|t| &t.dst));
        for target in targets {
            if let Some(dir) = reserved
                .iter()
                .find(|d| d.starts_with(target) || target.starts_with(d))
            {
                return invalid(format!(
                    "{} cannot be mounted: {} is where the sandbox's secrets are delivered",
                    target.display(),
                    dir.display()
                ));
            }
        }
        Ok(())
    }

    /// Sets `key` in the environment, replacing an earlier value.
    pub fn set_env(&mut self, key: &str, value: &str) {
        match self.env.iter_mut().find(|(k, _)| k == key) {
            Some(entry) => entry.1 = value.to_string(),
            None => self.env.push((key.to_string(), value.to_string())),
        }
    }
}

/// How the command's standard streams are connected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IoMode {
    /// Pass the caller's stdin through; otherwise stdin is `/dev/null`.
    pub stdin: bool,
    /// Capture stdout and stderr (bounded) into the `Outcome` instead of streaming them.
    pub capture: bool,
}

/// A step of sandbox setup that failed, as reported across the helper's pipe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{step}{}: {message}", path.as_ref().map(|p| format!(" {p}")).unwrap_or_default())]
pub struct SetupError {
    /// What was being done, e.g. "bind mount" or "install seccomp filter".
    pub step: String,
    /// The path involved, if any.
    pub path: Option<String>,
    /// The OS error, if any.
    pub errno: Option<i32>,
    pub message: String,
}

/// Why a backend could not run a spec to completion. Each maps to exit status 125 except
/// the two `exec` failures, which map to 126 and 127 as a shell does.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("command not found in the sandbox: {0}")]
    CommandNotFound(String),
    #[error("command cannot be executed in the sandbox: {program}: {reason}")]
    NotExecutable { program: String, reason: String },
    #[error("sandbox setup failed: {0}")]
    Setup(#[from] SetupError),
    #[error("{layer} cannot be enforced on this host: {reason}")]
    LayerUnavailable { layer: String, reason: String },
    #[error("invalid sandbox: {0}")]
    Invalid(String),
    #[error("interrupted: the sandbox was stopped and removed")]
    Interrupted,
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

impl BackendError {
    /// The exit status `nanoclaw run` reports for this error.
    pub fn exit_status(&self) -> i32 {
        match self {
            BackendError::CommandNotFound(_) => 127,
            BackendError::NotExecutable { .. } => 126,
            BackendError::Interrupted => 130,
            _ => 125,
        }
    }

    /// `execve` of `program` failed with `errno`: not found (ENOENT, ENOTDIR) or not
    /// executable (anything else), as a shell tells them apart.
    pub fn exec_failed(program: String, errno: i32) -> Self {
        const ENOENT: i32 = 2;
        const ENOTDIR: i32 = 20;
        if errno == ENOENT || errno == ENOTDIR {
            BackendError::CommandNotFound(program)
        } else {
            BackendError::NotExecutable {
                program,
                reason: std::io::Error::from_raw_os_error(errno).to_string(),
            }
        }
    }

    pub fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        BackendError::Io {
            what: what.into(),
            source,
        }
    }
}

/// Refuses a path inside a sandbox (or a mount source) that is relative, goes up with
/// `..`, or is not UTF-8 (which no backend can pass on faithfully).
pub fn check_sandbox_path(what: &str, path: &std::path::Path) -> Result<(), BackendError> {
    let problem = if !path.is_absolute() {
        "must be an absolute path"
    } else if path
        .components()
        .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        "must not contain '..'"
    } else if path.to_str().is_none() {
        "is not UTF-8"
    } else {
        return Ok(());
    };
    Err(BackendError::Invalid(format!(
        "{what} {} {problem}",
        path.display()
    )))
}

impl SetupError {
    /// A failed setup step with the OS error behind it.
    pub fn io(step: &str, error: impl Into<std::io::Error>) -> Self {
        let error: std::io::Error = error.into();
        SetupError {
            step: step.to_string(),
            path: None,
            errno: error.raw_os_error(),
            message: error.to_string(),
        }
    }
}

/// Runs a `SandboxSpec` to completion. Every backend passes the same conformance suite.
pub trait Backend {
    /// A short name for results and audit records ("native", "docker").
    fn name(&self) -> &'static str;

    /// Runs `spec` and reports how it ended, calling `commit` once before the command
    /// starts: the command never starts unless `commit` succeeds (the runner puts its audit
    /// record on disk there), and `commit`'s error is returned. A backend may prepare the
    /// sandbox while `commit` runs. What the backend could not do exactly as asked is in
    /// `Outcome::warnings`. Never leaves anything behind.
    fn run(
        &self,
        spec: &SandboxSpec,
        io: IoMode,
        commit: &mut dyn FnMut() -> Result<(), BackendError>,
    ) -> Result<Outcome, BackendError>;
}

pub(crate) mod millis {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_credential_with_a_name_that_is_not_utf8_refuses_the_run_clearly() {
        use std::os::unix::ffi::OsStrExt;
        let mut spec = SandboxSpec::new(vec!["true".into()]);
        spec.mounts.push(Mount {
            src: "/srv/ws".into(),
            dst: "/w".into(),
            writable: false,
        });
        spec.hidden.push(PathBuf::from(std::ffi::OsStr::from_bytes(
            b"/w/sub/k\xff.pem",
        )));
        let error = spec.check_mounts().unwrap_err().to_string();
        assert!(
            error.contains(r#""/w/sub/k\xFF.pem" must be hidden but its name is not UTF-8"#),
            "{error}"
        );
    }

    #[test]
    fn defaults_match_the_reference_invocation() {
        let spec = SandboxSpec::new(vec!["true".into()]);
        assert_eq!(
            spec.user,
            User {
                uid: 10001,
                gid: 10001
            }
        );
        assert_eq!(spec.limits.memory_bytes, 512 << 20);
        assert_eq!(spec.limits.cpu_millis, 500);
        assert_eq!(spec.limits.pids, 256);
        assert_eq!(spec.limits.timeout, Duration::from_secs(60));
        assert_eq!(spec.network, Network::None);
        assert!(!spec.allow_unlimited);
        let names: Vec<_> = spec.env.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, ["PATH", "HOME", "LANG"]);
    }

    #[test]
    fn spec_round_trips_through_json() {
        let mut spec = SandboxSpec::new(vec!["echo".into(), "hi".into()]);
        spec.mounts.push(Mount {
            src: "/srv/data".into(),
            dst: "/data".into(),
            writable: false,
        });
        spec.set_env("PATH", "/bin");
        let json = serde_json::to_string(&spec).unwrap();
        assert_eq!(serde_json::from_str::<SandboxSpec>(&json).unwrap(), spec);
    }

    #[test]
    fn exec_failures_map_like_a_shell() {
        assert_eq!(BackendError::CommandNotFound("x".into()).exit_status(), 127);
        let e = BackendError::NotExecutable {
            program: "x".into(),
            reason: "denied".into(),
        };
        assert_eq!(e.exit_status(), 126);
        assert_eq!(BackendError::Invalid("x".into()).exit_status(), 125);
    }
}
