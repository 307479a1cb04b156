//! One invocation of one tool, turned into the fully resolved `SandboxSpec` it runs in.
//!
//! The spec starts from `SandboxSpec::new` (the strict defaults) and takes exactly the
//! tool's values. The invocation can only narrow them: a workspace for `${workspace}`,
//! arguments where the tool says `args = "append"`, values for the parameters it declares
//! (each bound into exactly the argv elements, or the stdin, the policy gave it), and limits
//! at or below the tool's.
//! Before a spec is returned the tool is linted again with the invocation's workspace, and
//! any error refuses it.
//!
//! This module must never widen a tool's scope, never fill in a value the policy did not
//! give (beyond the strict defaults), and never start anything.

use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use nanoclaw_spec::{Mount, Network, Root, SandboxSecret, SandboxSpec, SecretValue, Tmpfs};

use crate::lint::{self, Finding, Severity};
use crate::params::{BoundCall, ParamError, ARGS_PROPERTY};
use crate::policy::{BackendKind, ExtraArgs, HostPath, Policy, Tool, ToolNetwork};
use crate::units;

/// What one invocation adds to a tool.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Invocation {
    /// The task directory that `${workspace}` stands for (absolute).
    pub workspace: Option<PathBuf>,
    /// Arguments after the tool's command; refused unless the tool has `args = "append"`.
    /// The same as an `args` entry in `params` (giving both is refused).
    pub extra_args: Vec<String>,
    /// The values of the tool's parameters, as a JSON object ([`Tool::bind`]).
    pub params: serde_json::Map<String, serde_json::Value>,
    pub narrowing: Narrowing,
}

/// Limits the caller asks for; each may only be at or below the tool's own.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Narrowing {
    pub memory: Option<u64>,
    /// Thousandths of a CPU.
    pub cpus: Option<u32>,
    pub pids: Option<u32>,
    pub timeout: Option<Duration>,
    pub output: Option<u64>,
    pub write_bytes: Option<u64>,
    pub write_files: Option<u64>,
}

/// Why a tool cannot be looked up or resolved for an invocation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("unknown tool `{name}` in {}; {}", file.display(), known_tools(.known))]
    UnknownTool {
        name: String,
        file: PathBuf,
        known: Vec<String>,
    },
    #[error(
        "tool `{tool}` mounts ${{workspace}}, but no workspace was given (pass --workspace DIR)"
    )]
    WorkspaceRequired { tool: String },
    #[error("invalid workspace {}: {why}", path.display())]
    InvalidWorkspace { path: PathBuf, why: &'static str },
    #[error("tool `{tool}` takes no extra arguments (got {count}); its policy would need args = \"append\"")]
    ExtraArgsRefused { tool: String, count: usize },
    #[error("{option} {value} would widen tool `{tool}` (its limit is {limit})")]
    Widens {
        option: &'static str,
        value: String,
        tool: String,
        limit: String,
    },
    #[error("tool `{tool}` is refused by the policy check: {}", first_errors(.findings))]
    Refused {
        tool: String,
        findings: Vec<Finding>,
    },
    #[error("tool `{tool}` needs {what}, which no sandbox can be given yet")]
    Unsupported { tool: String, what: String },
    /// The call's values do not fit the tool's parameters.
    #[error("{error}")]
    Param { tool: String, error: ParamError },
    /// `resolve` was asked for a call that feeds standard input: `resolve_call` carries it.
    #[error("tool `{tool}` takes standard input from its parameter `{param}`, which this caller cannot pass on")]
    StdinDropped { tool: String, param: String },
}

/// One call resolved: the spec it runs in (argv bound) and what its standard input reads.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub spec: SandboxSpec,
    /// The value of the tool's stdin parameter; `None`: the command reads nothing.
    pub stdin: Option<Vec<u8>>,
}

fn known_tools(known: &[String]) -> String {
    if known.is_empty() {
        "it names no tools".into()
    } else {
        format!("valid tools: {}", known.join(", "))
    }
}

fn first_errors(findings: &[Finding]) -> String {
    let errors: Vec<String> = findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .map(|f| format!("[{}] {}", f.rule, f.message))
        .collect();
    errors.join("; ")
}

/// Refuses `requested` when it is above `limit`.
fn narrow<T: PartialOrd + Copy>(
    tool: &str,
    option: &'static str,
    requested: Option<T>,
    limit: T,
    show: impl Fn(T) -> String,
) -> Result<T, Error> {
    match requested {
        None => Ok(limit),
        Some(value) if value <= limit => Ok(value),
        Some(value) => Err(Error::Widens {
            option,
            value: show(value),
            tool: tool.to_string(),
            limit: show(limit),
        }),
    }
}

fn check_workspace(path: &Path) -> Result<(), Error> {
    let invalid = |why| Error::InvalidWorkspace {
        path: path.to_path_buf(),
        why,
    };
    if !path.is_absolute() {
        return Err(invalid("not an absolute path"));
    }
    if path.components().any(|c| c == Component::ParentDir) {
        return Err(invalid("contains `..`"));
    }
    if path.as_os_str().as_encoded_bytes().contains(&0) {
        return Err(invalid("contains a NUL byte"));
    }
    Ok(())
}

/// The call's values bound into the tool's argv: `extra_args` count as `args`.
fn bind(tool: &Tool, invocation: &Invocation) -> Result<BoundCall, Error> {
    let refused = |error: ParamError| Error::Param {
        tool: tool.name.clone(),
        error,
    };
    if invocation.extra_args.is_empty() {
        return tool.bind(&invocation.params).map_err(refused);
    }
    if invocation.params.contains_key(ARGS_PROPERTY) {
        return Err(refused(ParamError {
            param: ARGS_PROPERTY.into(),
            message: "the extra arguments were given twice: as trailing arguments and as `args`"
                .into(),
        }));
    }
    let mut params = invocation.params.clone();
    params.insert(
        ARGS_PROPERTY.into(),
        invocation
            .extra_args
            .iter()
            .cloned()
            .map(serde_json::Value::String)
            .collect::<Vec<_>>()
            .into(),
    );
    tool.bind(&params).map_err(refused)
}

impl Policy {
    /// The spec tool `name` runs in for `invocation`: [`Policy::resolve_call`] for a caller
    /// that passes no standard input, refusing a call whose stdin parameter has a value.
    pub fn resolve(&self, name: &str, invocation: &Invocation) -> Result<SandboxSpec, Error> {
        let resolved = self.resolve_call(name, invocation)?;
        if resolved.stdin.is_some() {
            let tool = self.tool(name)?;
            let param = tool.params.iter().find(|p| p.stdin).map(|p| p.name.clone());
            return Err(Error::StdinDropped {
                tool: tool.name.clone(),
                param: param.unwrap_or_default(),
            });
        }
        Ok(resolved.spec)
    }

    /// The spec tool `name` runs in for `invocation`, its argv bound from the invocation's
    /// parameters, and the standard input they give. Refuses anything the policy does not
    /// allow, values that do not fit the parameters, and any tool the lint refuses.
    pub fn resolve_call(&self, name: &str, invocation: &Invocation) -> Result<Resolved, Error> {
        let tool = self.tool(name)?;
        if !invocation.extra_args.is_empty() && tool.args != ExtraArgs::Append {
            return Err(Error::ExtraArgsRefused {
                tool: tool.name.clone(),
                count: invocation.extra_args.len(),
            });
        }
        let bound = bind(tool, invocation)?;
        let mut spec = self.resolve_scope(name, invocation)?;
        spec.command = bound.argv;
        Ok(Resolved {
            spec,
            stdin: bound.stdin,
        })
    }

    /// The sandbox tool `name` gets for `invocation`, without binding its parameters: the
    /// spec's command is the tool's unbound `command` (placeholders and all), which nothing
    /// may run. For `verify`, which runs its probe in the tool's sandbox instead.
    pub fn resolve_scope(&self, name: &str, invocation: &Invocation) -> Result<SandboxSpec, Error> {
        let tool = &canonical_sources(self.tool(name)?);
        if let Some(path) = invocation.workspace.as_deref() {
            check_workspace(path)?;
        }
        // Made canonical once, here: a `${workspace}/x` mount is this joined with the literal
        // rest, which the lint judges and the backend opens without following a symlink, so
        // a concurrent sandbox that swaps `x` for a link gets a refusal, never its target.
        let canonical = invocation
            .workspace
            .as_deref()
            .map(|path| std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf()));
        let workspace = canonical.as_deref();
        if tool.uses_workspace() && workspace.is_none() {
            return Err(Error::WorkspaceRequired {
                tool: tool.name.clone(),
            });
        }
        let limits = narrowed(tool, &invocation.narrowing)?;
        let findings = lint::lint_invocation(self, tool, workspace);
        if findings.iter().any(|f| f.severity == Severity::Error) {
            return Err(Error::Refused {
                tool: tool.name.clone(),
                findings,
            });
        }
        let unsupported = |what: String| Error::Unsupported {
            tool: tool.name.clone(),
            what,
        };

        let mut spec = SandboxSpec::new(tool.command.clone());
        spec.root = match (tool.backend, &tool.rootfs, &tool.image) {
            (BackendKind::Docker, _, Some(image)) => Root::Image(image.clone()),
            // Made canonical once; the backend opens it without following a symlink.
            (_, Some(rootfs), _) => {
                Root::Rootfs(std::fs::canonicalize(rootfs).unwrap_or_else(|_| rootfs.clone()))
            }
            (BackendKind::Native, None, None) => Root::Host,
            // The parser refuses a native tool with only an image and a docker tool without one.
            (BackendKind::Native, None, Some(_)) | (BackendKind::Docker, _, None) => {
                return Err(unsupported(format!(
                    "a root its {} backend can run",
                    tool.backend.as_str()
                )));
            }
        };
        spec.workdir = tool.workdir.clone();
        for (key, value) in &tool.env {
            spec.set_env(key, value);
        }
        for mount in &tool.mounts {
            let Some(src) = mount.host.resolve(workspace) else {
                return Err(Error::WorkspaceRequired {
                    tool: tool.name.clone(),
                });
            };
            // Not resolved again: the lint judged this string, and the backend opens it
            // without following a symlink.
            spec.mounts.push(Mount {
                src,
                dst: mount.path.clone(),
                writable: mount.writable,
            });
            if mount.credentials_visible {
                spec.credentials_shown.push(mount.path.clone());
            }
        }
        spec.tmpfs = vec![Tmpfs {
            dst: PathBuf::from("/tmp"),
            size_bytes: tool.resources.tmpfs_bytes,
        }];
        spec.user = tool.user;
        spec.limits.memory_bytes = limits.memory;
        spec.limits.cpu_millis = limits.cpus;
        spec.limits.pids = limits.pids;
        spec.limits.timeout = limits.timeout;
        spec.limits.output_bytes = limits.output;
        spec.limits.write_bytes = limits.write_bytes;
        spec.limits.write_files = limits.write_files;
        spec.network = match &tool.network {
            ToolNetwork::None => Network::None,
            ToolNetwork::Allow(rules) => Network::Egress(rules.clone()),
        };
        spec.syscalls = tool.syscalls.clone();
        spec.allow_unlimited = false;
        // Sources only: the runner fetches the values once the whole invocation is valid.
        spec.secrets = tool
            .secrets
            .iter()
            .map(|secret| SandboxSecret {
                name: secret.name.clone(),
                delivery: secret.deliver,
                // No ttl gets past the lint unacknowledged; an acknowledged one gets the
                // ceiling.
                ttl: secret.ttl.unwrap_or(self.defaults().secret_ttl_max),
                hosts: secret.hosts.clone(),
                body: secret.body,
                source: Some(secret.from.clone()),
                value: SecretValue::default(),
                placeholder: None,
            })
            .collect();
        Ok(spec)
    }
}

/// `tool` with each absolute mount source made canonical, once, before the lint judges it
/// and the spec names it.
fn canonical_sources(tool: &Tool) -> Tool {
    let mut tool = tool.clone();
    for mount in &mut tool.mounts {
        if let HostPath::Absolute(path) = &mount.host {
            if let Ok(real) = std::fs::canonicalize(path) {
                mount.host = HostPath::Absolute(real);
            }
        }
    }
    tool
}

/// The limits after narrowing, all set.
struct Narrowed {
    memory: u64,
    cpus: u32,
    pids: u32,
    timeout: Duration,
    output: u64,
    write_bytes: u64,
    write_files: u64,
}

fn narrowed(tool: &Tool, n: &Narrowing) -> Result<Narrowed, Error> {
    let r = &tool.resources;
    let name = tool.name.as_str();
    Ok(Narrowed {
        memory: narrow(name, "--memory", n.memory, r.memory_bytes, units::bytes)?,
        cpus: narrow(name, "--cpus", n.cpus, r.cpu_millis, units::cpus)?,
        pids: narrow(name, "--pids-limit", n.pids, r.pids, |p| p.to_string())?,
        timeout: narrow(name, "--timeout", n.timeout, r.timeout, units::duration)?,
        output: narrow(
            name,
            "--output-limit",
            n.output,
            r.output_bytes,
            units::bytes,
        )?,
        write_bytes: narrow(
            name,
            "--write-limit",
            n.write_bytes,
            r.write_bytes,
            units::bytes,
        )?,
        write_files: narrow(name, "--write-files", n.write_files, r.write_files, |f| {
            f.to_string()
        })?,
    })
}
