//! The parsed policy: each tool's scope with the file's defaults applied, as plain data.
//!
//! A `Policy` exists only by parsing (its tools cannot be built by hand), so holding one
//! means the file was well formed. Whether it is *safe* is the lint's question, and what a
//! sandbox gets is `resolve`'s answer; this module must never loosen or guess a value.

use std::path::{Path, PathBuf};
use std::time::Duration;

use nanoclaw_spec::{Delivery, EgressRule, Limits, SecretSource, Syscalls, User};
use serde::{Deserialize, Serialize};

use crate::diagnostic::{Diagnostic, Diagnostics, Location};
use crate::lint::Rule;
use crate::params::Param;
use crate::resolve::Error;

/// A policy file, parsed and checked for well-formedness (not yet linted).
#[derive(Debug, Clone)]
pub struct Policy {
    pub(crate) path: PathBuf,
    pub(crate) policy_dir: PathBuf,
    pub(crate) defaults: Defaults,
    pub(crate) ceilings: Resources,
    pub(crate) tools: Vec<Tool>,
    /// Where `[ceilings]` values were written.
    pub(crate) ceiling_spots: ResourceSpots,
}

impl Policy {
    /// Reads and parses the policy at `path`; `${policy_dir}` is the directory holding it.
    pub fn load(path: &Path) -> Result<Policy, Diagnostics> {
        let unreadable = |e: std::io::Error| {
            Diagnostics(vec![Diagnostic::whole_file(
                path,
                format!("cannot read policy file: {e}"),
                None,
            )])
        };
        let bytes = std::fs::read(path).map_err(unreadable)?;
        let text = String::from_utf8(bytes).map_err(|e| {
            Diagnostics(vec![Diagnostic::whole_file(
                path,
                format!(
                    "policy file is not valid UTF-8 (at byte {})",
                    e.utf8_error().valid_up_to()
                ),
                None,
            )])
        })?;
        let absolute = std::fs::canonicalize(path).map_err(unreadable)?;
        let dir = absolute.parent().unwrap_or(Path::new("/"));
        Policy::parse(&text, path, dir)
    }

    /// Parses policy text. `path` is only used in messages; `policy_dir` replaces
    /// `${policy_dir}` and must be absolute for mounts that use it to be valid.
    pub fn parse(text: &str, path: &Path, policy_dir: &Path) -> Result<Policy, Diagnostics> {
        crate::parse::parse(text, path, policy_dir)
    }

    /// The file the policy came from, as given.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn policy_dir(&self) -> &Path {
        &self.policy_dir
    }

    pub fn defaults(&self) -> &Defaults {
        &self.defaults
    }

    /// The most any tool may ask for.
    pub fn ceilings(&self) -> &Resources {
        &self.ceilings
    }

    /// The tools, in file order.
    pub fn tools(&self) -> &[Tool] {
        &self.tools
    }

    /// The tool `name`, or an error listing the tools there are.
    pub fn tool(&self, name: &str) -> Result<&Tool, Error> {
        self.tools
            .iter()
            .find(|t| t.name == name)
            .ok_or_else(|| Error::UnknownTool {
                name: name.to_string(),
                file: self.path.clone(),
                known: self.tools.iter().map(|t| t.name.clone()).collect(),
            })
    }
}

/// Where a tool's values were written, for findings to point at; a finding about a value
/// not written points at the tool's header. The lists run parallel to the tool's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Spots {
    pub(crate) args: Option<Location>,
    pub(crate) rootfs: Option<Location>,
    pub(crate) image: Option<Location>,
    pub(crate) user: Option<Location>,
    pub(crate) env: Vec<Location>,
    pub(crate) network_allow: Vec<Location>,
    pub(crate) secrets: Vec<SecretSpots>,
    pub(crate) mounts: Vec<Location>,
    /// `timeout` and the limits, in the tool or in `[defaults]`.
    pub(crate) resources: ResourceSpots,
    pub(crate) unsafe_allow: Vec<Location>,
}

/// Where a secret and its `from`, `deliver` and `hosts` were written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct SecretSpots {
    pub(crate) at: Option<Location>,
    pub(crate) from: Option<Location>,
    pub(crate) deliver: Option<Location>,
    pub(crate) hosts: Option<Location>,
}

/// Where each bound of a [`Resources`] was written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ResourceSpots {
    pub(crate) memory: Option<Location>,
    pub(crate) cpus: Option<Location>,
    pub(crate) pids: Option<Location>,
    pub(crate) timeout: Option<Location>,
    pub(crate) output: Option<Location>,
    pub(crate) tmpfs: Option<Location>,
    pub(crate) writes: Option<Location>,
    pub(crate) write_files: Option<Location>,
}

impl ResourceSpots {
    /// Where the bound the lint calls `key` was written.
    pub(crate) fn get(&self, key: &str) -> Option<Location> {
        match key {
            "memory" => self.memory,
            "cpus" => self.cpus,
            "pids" => self.pids,
            "timeout" => self.timeout,
            "output" => self.output,
            "tmpfs" => self.tmpfs,
            "writes" => self.writes,
            "write_files" => self.write_files,
            _ => None,
        }
    }
}

/// Which backend runs a tool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    Native,
    Docker,
}

impl BackendKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Native => "native",
            BackendKind::Docker => "docker",
        }
    }
}

/// Resource bounds: a tool's limits, the file's defaults, or the ceilings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Resources {
    pub memory_bytes: u64,
    /// Thousandths of a CPU.
    pub cpu_millis: u32,
    pub pids: u32,
    #[serde(rename = "timeout_ms", serialize_with = "millis")]
    pub timeout: Duration,
    /// Cap on each captured output stream.
    pub output_bytes: u64,
    /// Size of the sandbox's `/tmp`.
    pub tmpfs_bytes: u64,
    /// Write budget of the writable mounts: bytes, and files.
    pub write_bytes: u64,
    pub write_files: u64,
}

fn millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Resources {
    /// The strict defaults of DESIGN.md (those of `SandboxSpec::new`).
    pub fn builtin_defaults() -> Self {
        let limits = Limits::default();
        Resources {
            memory_bytes: limits.memory_bytes,
            cpu_millis: limits.cpu_millis,
            pids: limits.pids,
            timeout: limits.timeout,
            output_bytes: limits.output_bytes,
            tmpfs_bytes: 64 << 20,
            write_bytes: limits.write_bytes,
            write_files: limits.write_files,
        }
    }

    /// The ceilings that apply when a policy sets none.
    pub fn builtin_ceilings() -> Self {
        Resources {
            memory_bytes: 4 << 30,
            cpu_millis: 2000,
            pids: 1024,
            timeout: Duration::from_secs(600),
            output_bytes: 16 << 20,
            tmpfs_bytes: 1 << 30,
            write_bytes: 16 << 30,
            write_files: 1_000_000,
        }
    }
}

/// What `[defaults]` set, over the built-in strict defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Defaults {
    pub backend: BackendKind,
    pub resources: Resources,
    /// The ceiling of a secret's `ttl` (`[defaults] secret_ttl_max`, 1h unless set).
    #[serde(rename = "secret_ttl_max_ms", serialize_with = "millis")]
    pub secret_ttl_max: Duration,
}

/// Whether an invocation may add arguments after the tool's command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExtraArgs {
    None,
    Append,
}

/// A mount's host side, before the invocation's workspace is known.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "path")]
pub enum HostPath {
    /// An absolute path (`${policy_dir}` already substituted).
    Absolute(PathBuf),
    /// `${workspace}` followed by this relative path (empty: the workspace itself).
    Workspace(PathBuf),
}

impl HostPath {
    /// The host path for an invocation whose workspace is `workspace`, if it can be known.
    pub fn resolve(&self, workspace: Option<&Path>) -> Option<PathBuf> {
        match self {
            HostPath::Absolute(path) => Some(path.clone()),
            HostPath::Workspace(rest) if rest.as_os_str().is_empty() => {
                workspace.map(Path::to_path_buf)
            }
            HostPath::Workspace(rest) => workspace.map(|w| w.join(rest)),
        }
    }
}

impl std::fmt::Display for HostPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HostPath::Absolute(path) => write!(f, "{}", path.display()),
            HostPath::Workspace(rest) if rest.as_os_str().is_empty() => f.write_str("${workspace}"),
            HostPath::Workspace(rest) => write!(f, "${{workspace}}/{}", rest.display()),
        }
    }
}

/// One `[[tools.NAME.mounts]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MountDecl {
    pub host: HostPath,
    /// Absolute path inside the sandbox.
    pub path: PathBuf,
    pub writable: bool,
    /// `credentials = "visible"`: the credential files below it are not hidden (the
    /// `visible-credentials` rule, which needs an acknowledgement).
    pub credentials_visible: bool,
}

/// A tool's `network`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ToolNetwork {
    None,
    Allow(Vec<EgressRule>),
}

/// A secret a tool needs: its name, where the runner fetches it, how it reaches the
/// command. The policy never holds a value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Secret {
    pub name: String,
    #[serde(rename = "ttl_ms", serialize_with = "optional_millis")]
    pub ttl: Option<Duration>,
    pub from: SecretSource,
    /// As written, or the default: `placeholder` for a tool with egress, else `file`.
    pub deliver: Delivery,
    /// `placeholder`: where the proxy may put the value (a subset of the allow list).
    pub hosts: Vec<EgressRule>,
    /// `placeholder`: substitute in request bodies too.
    pub body: bool,
}

/// The longest `ttl` a secret may have unless `[defaults] secret_ttl_max` says otherwise.
pub const SECRET_TTL_MAX: Duration = Duration::from_secs(3600);

fn optional_millis<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => millis(d, s),
        None => s.serialize_none(),
    }
}

/// `[tools.NAME.unsafe]`: risks the policy's owner accepted, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Acknowledgement {
    pub reason: String,
    pub allow: Vec<Rule>,
}

/// One tool's whole scope, defaults applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Tool {
    pub name: String,
    pub description: Option<String>,
    /// The argv prefix every invocation runs.
    pub command: Vec<String>,
    pub args: ExtraArgs,
    pub workdir: PathBuf,
    /// Fixed environment, sorted by name.
    pub env: Vec<(String, String)>,
    pub backend: BackendKind,
    pub rootfs: Option<PathBuf>,
    pub image: Option<String>,
    pub user: User,
    pub network: ToolNetwork,
    pub secrets: Vec<Secret>,
    pub syscalls: Syscalls,
    pub resources: Resources,
    pub mounts: Vec<MountDecl>,
    #[serde(rename = "unsafe")]
    pub acknowledged: Option<Acknowledgement>,
    /// `[tools.NAME.params.*]`, in the order written.
    pub params: Vec<Param>,
    /// The `[tools.NAME]` header.
    pub at: Location,
    #[serde(skip)]
    pub(crate) spots: Spots,
}

impl Tool {
    /// Whether any mount needs the invocation's `--workspace`.
    pub fn uses_workspace(&self) -> bool {
        self.mounts
            .iter()
            .any(|m| matches!(m.host, HostPath::Workspace(_)))
    }
}
