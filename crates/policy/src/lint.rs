//! `policy check`: the rules a policy must pass before any sandbox starts for it.
//!
//! Every rule has a stable id (`sensitive-mount`, `root-user`, ...). An error blocks the
//! tool unless the rule is one a person may accept and the tool's `[tools.NAME.unsafe]`
//! names it with a reason; an accepted error stays in every report, as `acknowledged`, with
//! that reason. Warnings never block. `resolve` runs the same rules again with the
//! invocation's workspace, so `--workspace ~` is refused as surely as `host = "/home/me"`.
//!
//! This module reads only file metadata and directory names on the host (to resolve
//! symlinks and find `.git`); it must never change anything, and never turn an error into
//! a warning.

use std::fmt;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::diagnostic::Location;
use crate::egress;
use crate::policy::{ExtraArgs, HostPath, Policy, Resources, Tool, ToolNetwork};
use crate::sensitive::{self, Homes};
use crate::units;

/// A lint rule, by its stable id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Rule {
    // Errors a policy may acknowledge.
    SensitiveMount,
    WritableGit,
    RootUser,
    Capabilities,
    ExtraSyscalls,
    UnpinnedImage,
    BroadEgress,
    AboveCeiling,
    SecretWithoutTtl,
    // Errors nothing can acknowledge.
    SymlinkMount,
    HostNetwork,
    // Warnings.
    NoDescription,
    WritableWorkspace,
    WritableRepo,
    CredentialsInside,
    MissingPath,
    PlainHttp,
    InternalEgress,
    ShellAppend,
    RaisedCeiling,
    UnusedAcknowledgement,
}

impl Rule {
    /// The rules a `[tools.NAME.unsafe]` table may name.
    pub const ACKNOWLEDGEABLE: [Rule; 9] = [
        Rule::SensitiveMount,
        Rule::WritableGit,
        Rule::RootUser,
        Rule::Capabilities,
        Rule::ExtraSyscalls,
        Rule::UnpinnedImage,
        Rule::BroadEgress,
        Rule::AboveCeiling,
        Rule::SecretWithoutTtl,
    ];

    pub fn id(self) -> &'static str {
        match self {
            Rule::SensitiveMount => "sensitive-mount",
            Rule::WritableGit => "writable-git",
            Rule::RootUser => "root-user",
            Rule::Capabilities => "capabilities",
            Rule::ExtraSyscalls => "extra-syscalls",
            Rule::UnpinnedImage => "unpinned-image",
            Rule::BroadEgress => "broad-egress",
            Rule::AboveCeiling => "above-ceiling",
            Rule::SecretWithoutTtl => "secret-without-ttl",
            Rule::SymlinkMount => "symlink-mount",
            Rule::HostNetwork => "host-network",
            Rule::NoDescription => "no-description",
            Rule::WritableWorkspace => "writable-workspace",
            Rule::WritableRepo => "writable-repo",
            Rule::CredentialsInside => "credentials-inside",
            Rule::MissingPath => "missing-path",
            Rule::PlainHttp => "plain-http",
            Rule::InternalEgress => "internal-egress",
            Rule::ShellAppend => "shell-append",
            Rule::RaisedCeiling => "raised-ceiling",
            Rule::UnusedAcknowledgement => "unused-acknowledgement",
        }
    }

    fn is_error(self) -> bool {
        self <= Rule::HostNetwork
    }

    fn acknowledgeable(self) -> bool {
        Rule::ACKNOWLEDGEABLE.contains(&self)
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.id())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Blocks the tool.
    Error,
    /// Printed, never blocks.
    Warning,
    /// An error the policy accepted with a written reason; reported every time.
    Acknowledged,
}

/// One thing the lint has to say.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// The tool concerned; `None` for the policy as a whole.
    pub tool: Option<String>,
    pub rule: Rule,
    pub severity: Severity,
    pub message: String,
    pub help: Option<String>,
    /// The acknowledgement's reason, for `Acknowledged` findings.
    pub reason: Option<String>,
    pub at: Option<Location>,
}

/// Everything the lint found in one policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    pub file: PathBuf,
    pub findings: Vec<Finding>,
}

impl Report {
    pub fn has_errors(&self) -> bool {
        self.count(Severity::Error) > 0
    }

    pub fn count(&self, severity: Severity) -> usize {
        self.findings
            .iter()
            .filter(|f| f.severity == severity)
            .count()
    }
}

fn plural(n: usize, word: &str) -> String {
    format!("{n} {word}{}", if n == 1 { "" } else { "s" })
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let file = self.file.display();
        for finding in &self.findings {
            let severity = match finding.severity {
                Severity::Error => "error",
                Severity::Warning => "warning",
                Severity::Acknowledged => "acknowledged",
            };
            let who = finding
                .tool
                .as_ref()
                .map(|t| format!("tool `{t}`: "))
                .unwrap_or_default();
            writeln!(f, "{severity}[{}]: {who}{}", finding.rule, finding.message)?;
            match finding.at {
                Some(at) => writeln!(f, " --> {file}:{}:{}", at.line, at.column)?,
                None => writeln!(f, " --> {file}")?,
            }
            if let Some(reason) = &finding.reason {
                writeln!(f, "  = reason: {reason}")?;
            }
            if let Some(help) = &finding.help {
                writeln!(f, "  = help: {help}")?;
            }
        }
        writeln!(
            f,
            "{file}: {}, {}, {}",
            plural(self.count(Severity::Error), "error"),
            plural(self.count(Severity::Warning), "warning"),
            plural(self.count(Severity::Acknowledged), "acknowledged risk")
        )
    }
}

/// Lints the whole policy as `policy check` does: mounts under `${workspace}` are judged
/// by what can be known without a workspace.
pub fn lint(policy: &Policy) -> Report {
    let homes = Homes::of_this_host();
    let mut findings = policy_findings(policy);
    for tool in policy.tools() {
        findings.extend(tool_findings(policy, tool, None, &homes));
    }
    Report {
        file: policy.path().to_path_buf(),
        findings,
    }
}

/// The findings for one tool when run with `workspace` (the lint `resolve` runs).
pub(crate) fn lint_invocation(
    policy: &Policy,
    tool: &Tool,
    workspace: Option<&Path>,
) -> Vec<Finding> {
    tool_findings(policy, tool, workspace, &Homes::of_this_host())
}

fn policy_findings(policy: &Policy) -> Vec<Finding> {
    let builtin = Resources::builtin_ceilings();
    over(policy.ceilings(), &builtin)
        .into_iter()
        .map(|(key, set, limit)| Finding {
            tool: None,
            rule: Rule::RaisedCeiling,
            severity: Severity::Warning,
            message: format!("[ceilings] raises {key} to {set}, above the built-in ceiling {limit}"),
            help: Some("a raised ceiling lets every tool in this file ask for more; make sure that is meant".into()),
            reason: None,
            at: policy.spots.get(&format!("ceilings.{key}")).copied(),
        })
        .collect()
}

/// The fields of `value` above `ceiling`: (key, value, ceiling), formatted as written.
fn over(value: &Resources, ceiling: &Resources) -> Vec<(&'static str, String, String)> {
    let mut out = Vec::new();
    if value.memory_bytes > ceiling.memory_bytes {
        out.push((
            "memory",
            units::bytes(value.memory_bytes),
            units::bytes(ceiling.memory_bytes),
        ));
    }
    if value.cpu_millis > ceiling.cpu_millis {
        out.push((
            "cpus",
            units::cpus(value.cpu_millis),
            units::cpus(ceiling.cpu_millis),
        ));
    }
    if value.pids > ceiling.pids {
        out.push(("pids", value.pids.to_string(), ceiling.pids.to_string()));
    }
    if value.timeout > ceiling.timeout {
        out.push((
            "timeout",
            units::duration(value.timeout),
            units::duration(ceiling.timeout),
        ));
    }
    if value.output_bytes > ceiling.output_bytes {
        out.push((
            "output",
            units::bytes(value.output_bytes),
            units::bytes(ceiling.output_bytes),
        ));
    }
    if value.tmpfs_bytes > ceiling.tmpfs_bytes {
        out.push((
            "tmpfs",
            units::bytes(value.tmpfs_bytes),
            units::bytes(ceiling.tmpfs_bytes),
        ));
    }
    if value.write_bytes > ceiling.write_bytes {
        out.push((
            "writes",
            units::bytes(value.write_bytes),
            units::bytes(ceiling.write_bytes),
        ));
    }
    if value.write_files > ceiling.write_files {
        out.push((
            "write_files",
            value.write_files.to_string(),
            ceiling.write_files.to_string(),
        ));
    }
    out
}

/// Programs that run whatever their arguments say.
const SHELLS: &[&str] = &[
    "sh", "bash", "dash", "zsh", "ksh", "mksh", "fish", "busybox", "env",
];

/// Findings for one tool, before acknowledgements are applied.
struct Collector<'t> {
    tool: &'t Tool,
    raw: Vec<(Rule, String, Option<String>, Location)>,
}

impl Collector<'_> {
    fn add(&mut self, rule: Rule, key: &str, message: String, help: Option<String>) {
        let at = self.tool.spot(key);
        self.raw.push((rule, message, help, at));
    }
}

fn tool_findings(
    policy: &Policy,
    tool: &Tool,
    workspace: Option<&Path>,
    homes: &Homes,
) -> Vec<Finding> {
    let mut c = Collector {
        tool,
        raw: Vec::new(),
    };
    if tool.description.is_none() {
        c.add(
            Rule::NoDescription,
            "",
            "has no description".into(),
            Some("say what the tool is for, so a reviewer can judge its scope".into()),
        );
    }
    if tool.user.uid == 0 || tool.user.gid == 0 {
        c.add(
            Rule::RootUser,
            "user",
            format!(
                "runs as {}:{} (root inside the sandbox)",
                tool.user.uid, tool.user.gid
            ),
            Some("leave `user` unset to run as 10001:10001".into()),
        );
    }
    if !tool.capabilities.is_empty() {
        c.add(
            Rule::Capabilities,
            "capabilities",
            format!("asks for capabilities {}", tool.capabilities.join(", ")),
            Some("a sandboxed tool holds no capabilities; remove `capabilities`".into()),
        );
    }
    if !tool.syscalls.extra_allow.is_empty() {
        c.add(
            Rule::ExtraSyscalls,
            "syscalls.allow",
            format!(
                "allows syscalls beyond the `{}` profile: {}",
                tool.syscalls.profile,
                tool.syscalls.extra_allow.join(", ")
            ),
            Some("each extra syscall widens the kernel surface the tool can reach".into()),
        );
    }
    if let Some(image) = &tool.image {
        if !(image.contains("@sha256:") || image.starts_with("sha256:")) {
            c.add(
                Rule::UnpinnedImage,
                "image",
                format!("image {image:?} is not pinned by digest"),
                Some("pin it: NAME@sha256:<digest> (`docker buildx imagetools inspect NAME` shows it)".into()),
            );
        }
    }
    for (key, set, limit) in over(&tool.resources, policy.ceilings()) {
        let spot = if key == "timeout" {
            "timeout".to_string()
        } else {
            format!("limits.{key}")
        };
        c.add(
            Rule::AboveCeiling,
            &spot,
            format!("{key} {set} is above the ceiling {limit}"),
            Some(format!("lower it to at most {limit}")),
        );
    }
    for (i, secret) in tool.secrets.iter().enumerate() {
        if secret.ttl.is_none() {
            c.add(
                Rule::SecretWithoutTtl,
                &format!("secrets.{i}"),
                format!("secret {} has no ttl", secret.name),
                Some(format!(
                    "bound its lifetime: {{ name = \"{}\", ttl = \"5m\" }}",
                    secret.name
                )),
            );
        }
    }
    network_findings(&mut c);
    if tool.args == ExtraArgs::Append {
        let program = tool
            .command
            .first()
            .map(|p| p.rsplit('/').next().unwrap_or(p));
        if let Some(shell) = program.filter(|p| SHELLS.contains(p)) {
            c.add(
                Rule::ShellAppend,
                "args",
                format!("appends invocation arguments to `{shell}`, which runs whatever they say"),
                Some("name the program the tool runs, or keep args = \"none\"".into()),
            );
        }
    }
    if let Some(rootfs) = &tool.rootfs {
        path_findings(&mut c, "rootfs", "rootfs", rootfs, false, homes);
    }
    for (i, mount) in tool.mounts.iter().enumerate() {
        let key = format!("mounts.{i}");
        let what = format!(
            "mount #{} ({} -> {})",
            i + 1,
            mount.host,
            mount.path.display()
        );
        if mount.writable && mount.host == HostPath::Workspace(PathBuf::new()) {
            c.add(
                Rule::WritableWorkspace,
                &key,
                format!("{what} makes the whole workspace writable"),
                Some("mount only the directories the tool writes, or mode = \"ro\"".into()),
            );
        }
        match (mount.host.resolve(workspace), &mount.host) {
            (Some(host), _) => path_findings(&mut c, &key, &what, &host, mount.writable, homes),
            (None, HostPath::Workspace(rest)) => {
                static_findings(&mut c, &key, &what, rest, mount.writable)
            }
            (None, HostPath::Absolute(_)) => {}
        }
    }
    acknowledge(tool, c.raw)
}

fn network_findings(c: &mut Collector<'_>) {
    match &c.tool.network {
        ToolNetwork::None => {}
        ToolNetwork::Host => c.add(
            Rule::HostNetwork,
            "network",
            "asks for the host's network, which no sandbox gives".into(),
            Some("name the destinations: network = { allow = [\"HOST:PORT\"] }".into()),
        ),
        ToolNetwork::Allow(rules) => {
            for (i, rule) in rules.iter().enumerate() {
                let key = format!("network.allow.{i}");
                let dest = if rule.host.contains(':') {
                    format!("[{}]:{}", rule.host, rule.port)
                } else {
                    format!("{}:{}", rule.host, rule.port)
                };
                if egress::is_broad(&rule.host) {
                    c.add(
                        Rule::BroadEgress,
                        &key,
                        format!("egress to {dest} spans more than one registrable domain"),
                        Some("name the hosts, or `*.` one domain you trust (e.g. *.pypi.org); the public suffix check is an approximation".into()),
                    );
                }
                if rule.port == 80 {
                    c.add(
                        Rule::PlainHttp,
                        &key,
                        format!(
                            "egress to {dest} is plain HTTP, readable and forgeable on the way"
                        ),
                        Some("use port 443".into()),
                    );
                }
                if egress::is_internal(&rule.host) {
                    c.add(
                        Rule::InternalEgress,
                        &key,
                        format!("egress to {dest} reaches the host or a private network"),
                        Some(
                            "make sure the service there cannot act for the tool beyond its scope"
                                .into(),
                        ),
                    );
                }
            }
        }
    }
}

/// Checks of a `${workspace}` path whose workspace is not known yet.
fn static_findings(c: &mut Collector<'_>, key: &str, what: &str, rest: &Path, writable: bool) {
    if let Some(name) = sensitive::credential_in(rest) {
        c.add(
            Rule::SensitiveMount,
            key,
            format!("{what} exposes credentials ({name})"),
            Some(sensitive_help(c.tool)),
        );
    }
    if writable && rest.iter().any(|p| p == ".git") {
        c.add(
            Rule::WritableGit,
            key,
            format!("{what} makes a .git directory writable"),
            Some(git_help()),
        );
    }
}

fn sensitive_help(tool: &Tool) -> String {
    format!(
        "mount only what the tool needs, or accept the risk: [tools.{}.unsafe] allow = [\"sensitive-mount\"] with a reason",
        tool.name
    )
}

fn git_help() -> String {
    "hooks and config in .git run later on the host, outside any sandbox; mount it read-only".into()
}

/// Checks of a concrete host path (a mount source or a rootfs).
fn path_findings(
    c: &mut Collector<'_>,
    key: &str,
    what: &str,
    path: &Path,
    writable: bool,
    homes: &Homes,
) {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => Some(meta),
        Err(e) => {
            let why = if e.kind() == std::io::ErrorKind::NotFound {
                "does not exist here".to_string()
            } else {
                format!("cannot be inspected: {e}")
            };
            c.add(
                Rule::MissingPath,
                key,
                format!("{what}: {} {why}", path.display()),
                Some("the sandbox will not start until it exists".into()),
            );
            None
        }
    };
    if meta.as_ref().is_some_and(|m| m.file_type().is_symlink()) {
        c.add(
            Rule::SymlinkMount,
            key,
            format!("{what}: {} is a symlink", path.display()),
            Some("name the real path; a link can be re-pointed between check and mount".into()),
        );
    }
    let real = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let exposure = sensitive::exposure(&real, homes).or_else(|| sensitive::exposure(path, homes));
    let socket = meta.as_ref().is_some_and(|m| m.file_type().is_socket());
    match exposure {
        Some(why) => c.add(
            Rule::SensitiveMount,
            key,
            format!("{what} exposes the host: {why}"),
            Some(sensitive_help(c.tool)),
        ),
        None if socket => c.add(
            Rule::SensitiveMount,
            key,
            format!(
                "{what}: {} is a Unix socket, a door out of the sandbox",
                real.display()
            ),
            Some(sensitive_help(c.tool)),
        ),
        None => {}
    }
    if meta.as_ref().is_some_and(|m| m.is_dir()) {
        let mut found: Vec<String> = std::fs::read_dir(&real)
            .into_iter()
            .flatten()
            .take(10_000)
            .flatten()
            .map(|e| e.file_name())
            .filter(|n| sensitive::credential_in(Path::new(n)).is_some())
            .map(|n| n.to_string_lossy().into_owned())
            .collect();
        if !found.is_empty() {
            found.sort();
            found.truncate(5);
            c.add(
                Rule::CredentialsInside,
                key,
                format!(
                    "{what} holds {}, which the tool can read{}",
                    found.join(", "),
                    if writable { " and change" } else { "" }
                ),
                Some("move them out, or mount a narrower directory".into()),
            );
        }
    }
    if !writable {
        return;
    }
    if real.iter().any(|p| p == ".git") {
        c.add(
            Rule::WritableGit,
            key,
            format!("{what} makes a .git directory writable"),
            Some(git_help()),
        );
    } else if real.join(".git").symlink_metadata().is_ok() {
        c.add(
            Rule::WritableRepo,
            key,
            format!("{what} is a writable repository"),
            Some("the runner keeps its .git read-only, but files the host runs later (Makefile, scripts, editor config) stay writable".into()),
        );
    }
}

/// Turns acknowledged errors into `Acknowledged` findings and reports acknowledgements that
/// matched nothing.
fn acknowledge(tool: &Tool, raw: Vec<(Rule, String, Option<String>, Location)>) -> Vec<Finding> {
    let ack = tool.acknowledged.as_ref();
    let accepted =
        |rule: Rule| rule.acknowledgeable() && ack.is_some_and(|a| a.allow.contains(&rule));
    let mut findings: Vec<Finding> = raw
        .iter()
        .map(|(rule, message, help, at)| {
            let severity = match (rule.is_error(), accepted(*rule)) {
                (false, _) => Severity::Warning,
                (true, true) => Severity::Acknowledged,
                (true, false) => Severity::Error,
            };
            Finding {
                tool: Some(tool.name.clone()),
                rule: *rule,
                severity,
                message: message.clone(),
                help: (severity != Severity::Acknowledged)
                    .then(|| help.clone())
                    .flatten(),
                reason: (severity == Severity::Acknowledged)
                    .then(|| ack.map(|a| a.reason.clone()))
                    .flatten(),
                at: Some(*at),
            }
        })
        .collect();
    if let Some(ack) = ack {
        for (i, rule) in ack.allow.iter().enumerate() {
            if !raw.iter().any(|(r, ..)| r == rule) {
                findings.push(Finding {
                    tool: Some(tool.name.clone()),
                    rule: Rule::UnusedAcknowledgement,
                    severity: Severity::Warning,
                    message: format!("acknowledges `{rule}`, which nothing in this check needs"),
                    help: Some(
                        "remove it, so the acknowledgement cannot cover a later change unseen"
                            .into(),
                    ),
                    reason: None,
                    at: Some(tool.spot(&format!("unsafe.allow.{i}"))),
                });
            }
        }
    }
    findings.sort_by_key(|f| (f.severity != Severity::Error, f.at));
    findings
}
