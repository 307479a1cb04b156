//! `policy check`: the rules a policy must pass before any sandbox starts for it.
//!
//! Every rule has a stable id (`sensitive-mount`, `root-user`, ...). An error blocks the
//! tool unless the rule is one a person may accept and the tool's `[tools.NAME.unsafe]`
//! names it with a reason; an accepted error stays in every report, as `acknowledged`, with
//! that reason. Warnings never block. `resolve` runs the same rules again with the
//! invocation's workspace, so `--workspace ~` is refused as surely as `host = "/home/me"`.
//!
//! This module reads only file metadata and directory names on the host (to resolve
//! symlinks, find `.git` and the owners of mount sources) and the host's account files
//! (`accounts`); it must never change anything, and never turn an error into a warning.

use std::fmt;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::accounts::HostAccounts;
use crate::diagnostic::Location;
use crate::egress;
use crate::policy::{ExtraArgs, HostPath, MountDecl, Policy, Resources, Tool, ToolNetwork};
use crate::sensitive::{self, Homes};
use crate::units;
use nanoclaw_spec::{loader_variable, Delivery, SANDBOX_UID};

/// A lint rule, by its stable id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Rule {
    // Errors a policy may acknowledge.
    SensitiveMount,
    WritableGit,
    RootUser,
    UnpinnedImage,
    BroadEgress,
    AboveCeiling,
    SecretWithoutTtl,
    HostUser,
    LoaderEnv,
    VisibleCredentials,
    // Errors nothing can acknowledge.
    SymlinkMount,
    SecretHosts,
    // Warnings.
    EnvSecret,
    ReadableSecretFile,
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
    pub const ACKNOWLEDGEABLE: [Rule; 10] = [
        Rule::SensitiveMount,
        Rule::WritableGit,
        Rule::RootUser,
        Rule::UnpinnedImage,
        Rule::BroadEgress,
        Rule::AboveCeiling,
        Rule::SecretWithoutTtl,
        Rule::HostUser,
        Rule::LoaderEnv,
        Rule::VisibleCredentials,
    ];

    pub fn id(self) -> &'static str {
        match self {
            Rule::SensitiveMount => "sensitive-mount",
            Rule::WritableGit => "writable-git",
            Rule::RootUser => "root-user",
            Rule::UnpinnedImage => "unpinned-image",
            Rule::BroadEgress => "broad-egress",
            Rule::AboveCeiling => "above-ceiling",
            Rule::SecretWithoutTtl => "secret-without-ttl",
            Rule::HostUser => "host-user",
            Rule::LoaderEnv => "loader-env",
            Rule::VisibleCredentials => "visible-credentials",
            Rule::SymlinkMount => "symlink-mount",
            Rule::SecretHosts => "secret-hosts",
            Rule::EnvSecret => "env-secret",
            Rule::ReadableSecretFile => "readable-secret-file",
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
        self <= Rule::SecretHosts
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
            at: policy.ceiling_spots.get(key),
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

/// `secret-without-ttl`, `above-ceiling` for a ttl, `secret-hosts`, `env-secret` and
/// `readable-secret-file`.
fn secret_findings(c: &mut Collector<'_>, ttl_max: std::time::Duration) {
    let tool = c.tool;
    let allow: &[nanoclaw_spec::EgressRule] = match &tool.network {
        ToolNetwork::Allow(rules) => rules,
        _ => &[],
    };
    for (i, secret) in tool.secrets.iter().enumerate() {
        let spots = tool.spots.secrets.get(i).copied().unwrap_or_default();
        let name = &secret.name;
        match secret.ttl {
            None => c.add(
                Rule::SecretWithoutTtl,
                spots.at,
                format!("secret {name} has no ttl"),
                Some(format!(
                    "bound its lifetime: {{ name = \"{name}\", ttl = \"5m\", ... }}"
                )),
            ),
            Some(ttl) if ttl > ttl_max => c.add(
                Rule::AboveCeiling,
                spots.at,
                format!(
                    "secret {name}'s ttl {} is above the ceiling {} ([defaults] secret_ttl_max)",
                    units::duration(ttl),
                    units::duration(ttl_max)
                ),
                Some(format!("lower it to at most {}", units::duration(ttl_max))),
            ),
            Some(_) => {}
        }
        match secret.deliver {
            Delivery::Placeholder => {
                if allow.is_empty() {
                    c.add(
                        Rule::SecretHosts,
                        spots.deliver,
                        format!("secret {name} is delivered as a placeholder, but the tool has no network allow list for the proxy to use it on"),
                        Some("give the tool network = { allow = [...] }, or deliver = \"file\"".into()),
                    );
                }
                for host in &secret.hosts {
                    if !allow.iter().any(|rule| covers(rule, host)) {
                        c.add(
                            Rule::SecretHosts,
                            spots.hosts,
                            format!(
                                "secret {name} may be sent to {}:{}, which the tool's network allow list does not name",
                                host.host, host.port
                            ),
                            Some("list only hosts of `network.allow` in the secret's `hosts`".into()),
                        );
                    }
                }
            }
            Delivery::Env => c.add(
                Rule::EnvSecret,
                spots.deliver,
                format!("secret {name} is delivered in the command's environment, where every process of the tool can read it and print it"),
                Some("prefer deliver = \"file\" (or \"placeholder\" for a tool that sends it to an API)".into()),
            ),
            Delivery::File => {}
        }
        if let nanoclaw_spec::SecretSource::File(path) = &secret.from {
            use std::os::unix::fs::MetadataExt;
            if let Ok(meta) = std::fs::symlink_metadata(path) {
                if meta.mode() & 0o077 != 0 {
                    c.add(
                        Rule::ReadableSecretFile,
                        spots.from,
                        format!(
                            "secret {name}'s source {} can be read by others than its owner (mode {:04o})",
                            path.display(),
                            meta.mode() & 0o7777
                        ),
                        Some(format!("chmod 600 {}", path.display())),
                    );
                }
            }
        }
    }
}

/// Whether the allow rule `rule` lets through `host` (same port; the same name, or a
/// subdomain of a `*.` rule).
pub fn covers(rule: &nanoclaw_spec::EgressRule, host: &nanoclaw_spec::EgressRule) -> bool {
    if rule.port != host.port {
        return false;
    }
    if rule.host.eq_ignore_ascii_case(&host.host) {
        return true;
    }
    match rule.host.strip_prefix("*.") {
        Some(domain) => {
            let h = host.host.to_ascii_lowercase();
            !host.host.starts_with("*.")
                && h.len() > domain.len() + 1
                && h.ends_with(&format!(".{}", domain.to_ascii_lowercase()))
        }
        None => false,
    }
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
    fn add(&mut self, rule: Rule, at: Option<Location>, message: String, help: Option<String>) {
        let at = at.unwrap_or(self.tool.at);
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
            None,
            "has no description".into(),
            Some("say what the tool is for, so a reviewer can judge its scope".into()),
        );
    }
    if tool.user.uid == 0 || tool.user.gid == 0 {
        c.add(
            Rule::RootUser,
            c.tool.spots.user,
            format!(
                "runs as {}:{} (root inside the sandbox)",
                tool.user.uid, tool.user.gid
            ),
            Some("leave `user` unset to run as 10001:10001".into()),
        );
    }
    if let Some(image) = &tool.image {
        if !(image.contains("@sha256:") || image.starts_with("sha256:")) {
            c.add(
                Rule::UnpinnedImage,
                c.tool.spots.image,
                format!("image {image:?} is not pinned by digest"),
                Some("pin it: NAME@sha256:<digest> (`docker buildx imagetools inspect NAME` shows it)".into()),
            );
        }
    }
    for (key, set, limit) in over(&tool.resources, policy.ceilings()) {
        c.add(
            Rule::AboveCeiling,
            tool.spots.resources.get(key),
            format!("{key} {set} is above the ceiling {limit}"),
            Some(format!("lower it to at most {limit}")),
        );
    }
    secret_findings(&mut c, policy.defaults().secret_ttl_max);
    network_findings(&mut c);
    if tool.args == ExtraArgs::Append {
        let program = tool
            .command
            .first()
            .map(|p| p.rsplit('/').next().unwrap_or(p));
        if let Some(shell) = program.filter(|p| SHELLS.contains(p)) {
            c.add(
                Rule::ShellAppend,
                c.tool.spots.args,
                format!("appends invocation arguments to `{shell}`, which runs whatever they say"),
                Some("name the program the tool runs, or keep args = \"none\"".into()),
            );
        }
    }
    if let Some(rootfs) = &tool.rootfs {
        path_findings(&mut c, tool.spots.rootfs, "rootfs", rootfs, None, homes);
    }
    for (i, mount) in tool.mounts.iter().enumerate() {
        let key = tool.spots.mounts.get(i).copied();
        let what = format!(
            "mount #{} ({} -> {})",
            i + 1,
            mount.host,
            mount.path.display()
        );
        if mount.writable && mount.host == HostPath::Workspace(PathBuf::new()) {
            c.add(
                Rule::WritableWorkspace,
                key,
                format!("{what} makes the whole workspace writable"),
                Some("mount only the directories the tool writes, or mode = \"ro\"".into()),
            );
        }
        if mount.credentials_visible {
            c.add(
                Rule::VisibleCredentials,
                key,
                format!("{what} shows the tool its credential files (credentials = \"visible\")"),
                Some(format!(
                    "leave `credentials` unset to hide .env, .git-credentials, .ssh, ... at any depth, or accept the risk: [tools.{}.unsafe] allow = [\"visible-credentials\"] with a reason",
                    tool.name
                )),
            );
        }
        match (mount.host.resolve(workspace), &mount.host) {
            (Some(host), _) => path_findings(&mut c, key, &what, &host, Some(mount), homes),
            (None, HostPath::Workspace(rest)) => {
                static_findings(&mut c, key, &what, rest, mount.writable)
            }
            (None, HostPath::Absolute(_)) => {}
        }
    }
    host_user_findings(&mut c, workspace, &HostAccounts::of_this_host());
    loader_env_findings(&mut c);
    acknowledge(tool, c.raw)
}

/// `host-user`: the tool's uid or gid is a real account of this host, or owns a mount
/// source. The native backend maps the sandbox's ids to the same ids on the host, so such a
/// sandbox would own that account's files in its mounts (reading its 0600 files, changing
/// modes) and leave files the account owns. Root is `root-user`'s. The sandbox's own uid
/// owning a mount source is the intended set-up (a workspace given to the sandbox), but
/// that uid being a named account is not.
fn host_user_findings(c: &mut Collector<'_>, workspace: Option<&Path>, accounts: &HostAccounts) {
    use std::os::unix::fs::MetadataExt;
    let user = c.tool.user;
    let help = || {
        Some(format!(
            "set `user` to ids no host account has (the default is {SANDBOX_UID}:{SANDBOX_UID}),              or remove the account"
        ))
    };
    if let Some(why) = &accounts.unreadable {
        c.add(
            Rule::HostUser,
            c.tool.spots.user,
            format!(
                "cannot check that uid {} is no host account: {why}",
                user.uid
            ),
            help(),
        );
    }
    if let Some(name) = accounts.users.get(&user.uid).filter(|_| user.uid != 0) {
        c.add(
            Rule::HostUser,
            c.tool.spots.user,
            format!("runs as uid {}, the host account `{name}`", user.uid),
            help(),
        );
    }
    if let Some(name) = accounts.groups.get(&user.gid).filter(|_| user.gid != 0) {
        c.add(
            Rule::HostUser,
            c.tool.spots.user,
            format!("runs as gid {}, the host group `{name}`", user.gid),
            help(),
        );
    }
    if user.uid == 0 || user.uid == SANDBOX_UID {
        return;
    }
    let owned: Vec<String> = c
        .tool
        .mounts
        .iter()
        .filter_map(|mount| mount.host.resolve(workspace))
        .filter(|host| std::fs::symlink_metadata(host).is_ok_and(|meta| meta.uid() == user.uid))
        .map(|host| host.display().to_string())
        .collect();
    if !owned.is_empty() {
        c.add(
            Rule::HostUser,
            c.tool.spots.user,
            format!(
                "runs as uid {}, the owner of mount source {}",
                user.uid,
                owned.join(", ")
            ),
            help(),
        );
    }
}

/// `loader-env`: a fixed environment variable (or a secret, which arrives as one) that makes
/// a program load code or configuration from where its value says; see
/// `nanoclaw_spec::LOADER_VARIABLES`.
fn loader_env_findings(c: &mut Collector<'_>) {
    let tool = c.tool;
    let env = tool
        .env
        .iter()
        .zip(&tool.spots.env)
        .map(|((name, _), at)| (name, Some(*at)));
    let secrets = tool
        .secrets
        .iter()
        .enumerate()
        .map(|(i, secret)| (&secret.name, tool.spots.secrets.get(i).and_then(|s| s.at)));
    for (name, key) in env.chain(secrets) {
        if let Some((entry, why)) = loader_variable(name) {
            let matched = if entry == name {
                String::new()
            } else {
                format!(" ({entry})")
            };
            c.add(
                Rule::LoaderEnv,
                key,
                format!("sets {name}{matched}: {why}"),
                Some(format!(
                    "put what it loads in the tool's command or image instead, or accept the \
                     risk: [tools.{}.unsafe] allow = [\"loader-env\"] with a reason",
                    tool.name
                )),
            );
        }
    }
}

fn network_findings(c: &mut Collector<'_>) {
    match &c.tool.network {
        ToolNetwork::None => {}
        ToolNetwork::Allow(rules) => {
            for (i, rule) in rules.iter().enumerate() {
                let key = c.tool.spots.network_allow.get(i).copied();
                let dest = if rule.host.contains(':') {
                    format!("[{}]:{}", rule.host, rule.port)
                } else {
                    format!("{}:{}", rule.host, rule.port)
                };
                if egress::is_broad(&rule.host) {
                    c.add(
                        Rule::BroadEgress,
                        key,
                        format!("egress to {dest} spans more than one registrable domain"),
                        Some("name the hosts, or `*.` one domain you trust (e.g. *.pypi.org); the public suffix check is an approximation".into()),
                    );
                }
                if rule.port == 80 {
                    c.add(
                        Rule::PlainHttp,
                        key,
                        format!(
                            "egress to {dest} is plain HTTP, readable and forgeable on the way"
                        ),
                        Some("use port 443".into()),
                    );
                }
                if egress::is_internal(&rule.host) {
                    c.add(
                        Rule::InternalEgress,
                        key,
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
fn static_findings(
    c: &mut Collector<'_>,
    key: Option<Location>,
    what: &str,
    rest: &Path,
    writable: bool,
) {
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

/// Checks of a concrete host path (a mount source, or a rootfs when `mount` is `None`).
fn path_findings(
    c: &mut Collector<'_>,
    key: Option<Location>,
    what: &str,
    path: &Path,
    mount: Option<&MountDecl>,
    homes: &Homes,
) {
    let writable = mount.is_some_and(|m| m.writable);
    let hidden = mount.is_some_and(|m| !m.credentials_visible);
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
                if hidden {
                    format!(
                        "{what} holds {}: the tool sees them (and any below) empty",
                        found.join(", ")
                    )
                } else {
                    format!(
                        "{what} holds {}, which the tool can read{}",
                        found.join(", "),
                        if writable { " and change" } else { "" }
                    )
                },
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
                    at: tool.spots.unsafe_allow.get(i).copied().or(Some(tool.at)),
                });
            }
        }
    }
    findings.sort_by_key(|f| (f.severity != Severity::Error, f.at));
    findings
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tool(extra: &str) -> Tool {
        let text = format!("[tools.t]\ndescription = \"x\"\ncommand = [\"true\"]\n{extra}\n");
        let policy = Policy::parse(&text, Path::new("/p/tools.toml"), Path::new("/p")).unwrap();
        policy.tools()[0].clone()
    }

    fn host_user(tool: &Tool, workspace: Option<&Path>, accounts: &HostAccounts) -> Vec<String> {
        let mut c = Collector {
            tool,
            raw: Vec::new(),
        };
        host_user_findings(&mut c, workspace, accounts);
        c.raw.into_iter().map(|(_, message, ..)| message).collect()
    }

    fn accounts() -> HostAccounts {
        HostAccounts::parse(
            "root:x:0:0::/root:/bin/sh\nme:x:1000:1000::/home/me:/bin/sh\n",
            "root:x:0:\nme:x:1000:\nstaff:x:50:\n",
        )
    }

    #[test]
    fn a_uid_or_gid_of_a_host_account_is_refused() {
        let found = host_user(&tool("user = \"1000:20000\""), None, &accounts());
        assert_eq!(found, ["runs as uid 1000, the host account `me`"]);
        let found = host_user(&tool("user = \"20000:50\""), None, &accounts());
        assert_eq!(found, ["runs as gid 50, the host group `staff`"]);
        assert!(host_user(&tool("user = \"20000:20000\""), None, &accounts()).is_empty());
        assert!(host_user(&tool(""), None, &accounts()).is_empty());
        // Root is root-user's finding, not this one's.
        assert!(host_user(&tool("user = \"0:0\""), None, &accounts()).is_empty());
    }

    #[test]
    fn the_default_uid_is_refused_where_it_is_a_host_account() {
        let named = HostAccounts::parse("svc:x:10001:10001::/:/bin/sh\n", "");
        let found = host_user(&tool(""), None, &named);
        assert_eq!(found, ["runs as uid 10001, the host account `svc`"]);
    }

    #[test]
    fn the_owner_of_a_mount_source_is_refused_unless_it_is_the_sandbox_user() {
        use std::os::unix::fs::MetadataExt;
        let dir = std::env::temp_dir().join(format!("nanoclaw-lint-{}", std::process::id()));
        std::fs::create_dir(&dir).unwrap();
        // As root, give it to an id that is no account; otherwise it is ours.
        let _ = std::os::unix::fs::chown(&dir, Some(20001), None);
        let owner = std::fs::metadata(&dir).unwrap().uid();
        let mount = "[[tools.t.mounts]]\nhost = \"${workspace}\"\npath = \"/work\"\n";
        let none = HostAccounts::default();
        let found = |user: &str, workspace: Option<&Path>| {
            host_user(
                &tool(&format!("user = \"{user}\"\n{mount}")),
                workspace,
                &none,
            )
        };
        let as_owner = found(&format!("{owner}:20000"), Some(&dir));
        let sandbox_user = found(&format!("{SANDBOX_UID}:{SANDBOX_UID}"), Some(&dir));
        let unknown_source = found(&format!("{owner}:20000"), None);
        std::fs::remove_dir(&dir).unwrap();
        assert_eq!(as_owner.len(), 1, "{as_owner:?}");
        assert!(
            as_owner[0].contains("the owner of mount source"),
            "{as_owner:?}"
        );
        // The sandbox's own uid owning its workspace is the intended set-up.
        assert!(sandbox_user.is_empty(), "{sandbox_user:?}");
        // Without the workspace the source is unknown: `resolve` checks it again.
        assert!(unknown_source.is_empty());
    }

    #[test]
    fn a_loader_variable_passes_only_when_acknowledged() {
        let text = "[tools.t]\ndescription = \"x\"\ncommand = [\"git\", \"status\"]\n\
                    env = { GIT_CONFIG_COUNT = \"1\", GIT_CONFIG_KEY_0 = \"core.fsmonitor\" }\n";
        let policy = Policy::parse(text, Path::new("/p/t.toml"), Path::new("/p")).unwrap();
        let report = lint(&policy);
        let refused: Vec<&str> = report
            .findings
            .iter()
            .filter(|f| f.rule == Rule::LoaderEnv && f.severity == Severity::Error)
            .map(|f| f.message.as_str())
            .collect();
        assert_eq!(refused.len(), 2, "{report}");
        let acknowledged =
            format!("{text}[tools.t.unsafe]\nreason = \"tested\"\nallow = [\"loader-env\"]\n");
        let policy = Policy::parse(&acknowledged, Path::new("/p/t.toml"), Path::new("/p")).unwrap();
        let report = lint(&policy);
        assert!(
            report
                .findings
                .iter()
                .all(|f| f.rule != Rule::LoaderEnv || f.severity == Severity::Acknowledged),
            "{report}"
        );
    }
}
