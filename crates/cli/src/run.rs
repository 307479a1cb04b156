//! `nanoclaw run`: the options (Docker's names where they mean the same), the spec they
//! resolve to, and how the outcome is reported.
//!
//! Options may only narrow or explicitly loosen a default the user names; nothing here
//! loosens one silently.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use nanoclaw_cli::args::{absolute, host_path, parse_mount, parse_tmpfs, parse_volume};
use nanoclaw_policy::{
    is_broad_egress, parse_egress_rule, Invocation, Narrowing, ParamType, Resolved, Tool,
};
use nanoclaw_spec::{
    check_env, parse_bytes, parse_cpus, parse_duration, BackendError, IoMode, Network, Outcome,
    Root, SandboxSpec, User,
};
use serde_json::{json, Map, Value};

use crate::{audit, RUNNER_ERROR};

#[derive(Args, Debug)]
#[command(trailing_var_arg = true)]
pub struct RunArgs {
    /// Bind mount: type=bind,src=HOST,dst=PATH[,readonly|rw] (read-only unless rw)
    #[arg(long, value_name = "SPEC")]
    mount: Vec<String>,
    /// Bind mount: HOST:PATH[:ro|rw] (read-only unless rw)
    #[arg(short = 'v', long = "volume", value_name = "HOST:PATH[:ro|rw]")]
    volume: Vec<String>,
    /// Fresh tmpfs (noexec, nosuid, nodev): PATH[:size=N]; /tmp is always there
    #[arg(long, value_name = "PATH[:size=N]")]
    tmpfs: Vec<String>,
    /// Working directory inside the sandbox
    #[arg(short = 'w', long, value_name = "PATH")]
    workdir: Option<PathBuf>,
    /// Environment variable K=V (or K, taken from nanoclaw's environment)
    #[arg(short = 'e', long, value_name = "K=V")]
    env: Vec<String>,
    /// Memory limit, no swap (e.g. 256m) [default: 512m]
    #[arg(short = 'm', long, value_name = "BYTES")]
    memory: Option<String>,
    /// CPU limit in CPUs (e.g. 0.5) [default: 0.5]
    #[arg(long, value_name = "N")]
    cpus: Option<String>,
    /// Maximum number of processes [default: 256]
    #[arg(long, value_name = "N")]
    pids_limit: Option<u32>,
    /// Wall-clock timeout (e.g. 30s, 2m) [default: 60s]
    #[arg(long, value_name = "DURATION")]
    timeout: Option<String>,
    /// Cap on each captured stream with --json (e.g. 64k) [default: 1m]
    #[arg(long, value_name = "BYTES")]
    output_limit: Option<String>,
    /// Write budget of the writable mounts together: bytes their changes may take; past it
    /// writes fail with ENOSPC (e.g. 256m) [default: 1g]
    #[arg(long, value_name = "BYTES")]
    write_limit: Option<String>,
    /// Write budget of the writable mounts in files they may create [default: 100000]
    #[arg(long, value_name = "N")]
    write_files: Option<u64>,
    /// UID[:GID] inside the sandbox [default: 10001:10001]
    #[arg(short = 'u', long, value_name = "UID[:GID]")]
    user: Option<String>,
    /// Allow --user 0 (root inside the sandbox, still without capabilities)
    #[arg(long)]
    allow_root: bool,
    /// Network: only "none" (loopback only) is available [default: none]
    #[arg(long, value_name = "MODE")]
    network: Option<String>,
    /// Let the command reach HOST:PORT (repeatable) through nanoclaw's host proxy: the
    /// only way out; `*.example.com` matches subdomains
    #[arg(long, value_name = "HOST:PORT", conflicts_with = "network")]
    allow: Vec<String>,
    /// Pass standard input through to the command
    #[arg(short = 'i', long)]
    stdin: bool,
    /// Use this directory (an unpacked image) as the root instead of the host's /usr
    #[arg(long, value_name = "DIR")]
    rootfs: Option<PathBuf>,
    /// Run even where the host cannot enforce memory, CPU and PID limits
    #[arg(long)]
    allow_unlimited: bool,
    /// Backend that runs the sandbox: native, or docker (with --image) [default: native]
    #[arg(long, value_name = "NAME")]
    backend: Option<String>,
    /// Image to run on the docker backend, pinned: NAME@sha256:DIGEST or a local sha256:ID
    #[arg(long, value_name = "REF", conflicts_with = "rootfs")]
    image: Option<String>,
    /// Let the docker backend pull a missing image (never done implicitly)
    #[arg(long, requires = "image")]
    pull: bool,
    /// Policy file naming the tools (with --tool)
    #[arg(long, value_name = "FILE", requires = "tool")]
    pub(crate) policy: Option<PathBuf>,
    /// Run this tool of --policy with exactly its scope; COMMAND is then extra arguments
    #[arg(long, value_name = "NAME", requires = "policy")]
    pub(crate) tool: Option<String>,
    /// The task directory a tool's ${workspace} mounts stand for
    #[arg(long, value_name = "DIR", requires = "tool")]
    pub(crate) workspace: Option<PathBuf>,
    /// A value for the tool's parameter NAME, typed as the policy declares it (repeatable;
    /// an array parameter takes one element per --param)
    #[arg(long = "param", value_name = "NAME=VALUE", requires = "tool")]
    param: Vec<String>,
    /// The tool's parameters as one JSON object (instead of --param); `-` reads it from
    /// standard input
    #[arg(long, value_name = "JSON", requires = "tool", conflicts_with = "param")]
    pub(crate) params_json: Option<String>,
    /// CA certificates (PEM) the egress proxy verifies intercepted upstreams against,
    /// instead of the host's roots (for tests against a local HTTPS server)
    #[arg(long, value_name = "PATH")]
    ca_file: Option<PathBuf>,
    /// Print one JSON object with the outcome instead of streaming the output
    #[arg(long)]
    pub(crate) json: bool,
    #[command(flatten)]
    audit: audit::RunAudit,
    /// Pool mode (`crates/cli/src/prebuilt.rs`): say ready on fd 3, then wait for the call
    #[arg(long, hide = true, requires = "tool")]
    prebuilt: bool,
    /// The command and its arguments (with --tool: extra arguments for the tool)
    #[arg(required_unless_present = "tool", value_name = "COMMAND")]
    command: Vec<String>,
}

/// A mount source as the backend opens it: its parent made canonical, once, and its own
/// name kept as given, so that a source swapped for a symlink after this check is refused
/// by the backend (which follows no symlink in the path) rather than resolved here. A
/// source that is a symlink is refused now (name the target).
fn canonical_source(path: &std::path::Path) -> Result<PathBuf> {
    let what = || format!("open mount source {}", path.display());
    let meta = std::fs::symlink_metadata(path).with_context(what)?;
    if meta.file_type().is_symlink() {
        bail!(
            "mount source {} is a symlink; name its target instead",
            path.display()
        );
    }
    match (path.parent(), path.file_name()) {
        (Some(parent), Some(name)) => {
            Ok(std::fs::canonicalize(parent).with_context(what)?.join(name))
        }
        // "/", or a path ending in ".." (already made absolute): nothing to keep literal.
        _ => std::fs::canonicalize(path).with_context(what),
    }
}

/// One `-e` value: `K=V`, or `K` for K's value in nanoclaw's own environment. The name must
/// be portable (`nanoclaw_spec::check_env`): a newline or `=` in it would be read as another
/// variable by whatever prints or parses the environment later. Loader variables
/// (`LD_PRELOAD`, ...) are passed: the caller of `run` names the whole command already, so
/// they give it nothing it does not have; a policy's fixed `env` is where the lint refuses
/// them.
fn parse_env(value: &str) -> Result<(String, String)> {
    let invalid = |e: String| anyhow!("invalid --env {value:?}: {e}");
    let (key, val) = match value.split_once('=') {
        Some((key, val)) => (key, val.to_string()),
        None => {
            check_env(value, "").map_err(invalid)?;
            let val = std::env::var(value).map_err(|_| {
                invalid("expected K=V, or a name set in nanoclaw's environment".into())
            })?;
            (value, val)
        }
    };
    check_env(key, &val).map_err(invalid)?;
    Ok((key.to_string(), val))
}

/// `--write-files`: at least one file, as `limits.write_files` in a policy.
fn write_files(value: u64) -> Result<u64> {
    if value == 0 {
        bail!("--write-files: must be a whole number from 1 (0 would refuse every write)");
    }
    Ok(value)
}

fn parse_user(value: &str, allow_root: bool) -> Result<User> {
    let (uid, gid) = value.split_once(':').unwrap_or((value, value));
    let parse = |v: &str| {
        v.parse::<u32>()
            .map_err(|_| anyhow!("invalid --user {value:?}: expected numeric UID[:GID]"))
    };
    let user = User {
        uid: parse(uid)?,
        gid: parse(gid)?,
    };
    if user.uid == u32::MAX || user.gid == u32::MAX {
        bail!("invalid --user {value:?}: 4294967295 is not an id (to the kernel it means \"leave unchanged\")");
    }
    if (user.uid == 0 || user.gid == 0) && !allow_root {
        bail!("--user {value} runs as root inside the sandbox; add --allow-root if that is really meant");
    }
    Ok(user)
}

/// Resolves the options into a spec, starting from the strict defaults.
fn spec_from(args: &RunArgs) -> Result<SandboxSpec> {
    if let Some(network) = args.network.as_deref().filter(|n| *n != "none") {
        bail!(
            "--network {network:?} is not available: the only network mode is \"none\" (loopback only)"
        );
    }
    match (args.backend.as_deref(), &args.image) {
        (None | Some("native"), None) | (None | Some("docker"), Some(_)) => {}
        (Some("docker"), None) => bail!("--backend docker needs --image NAME@sha256:DIGEST"),
        (Some("native"), Some(_)) => {
            bail!("--image needs the docker backend; the native backend takes --rootfs DIR")
        }
        (Some(other), _) => {
            bail!("--backend {other:?} is not available: choose \"native\" or \"docker\"")
        }
    }
    let mut spec = SandboxSpec::new(args.command.clone());
    if let Some(image) = &args.image {
        spec.root = Root::Image(image.clone());
    }
    if !args.allow.is_empty() {
        let mut rules = Vec::new();
        for entry in &args.allow {
            let rule =
                parse_egress_rule(entry).map_err(|e| anyhow!("invalid --allow {entry:?}: {e}"))?;
            if is_broad_egress(&rule.host) {
                bail!(
                    "--allow {entry} matches more than one registrable domain (an exfiltration \
                     channel); name the hosts, or use a policy with an acknowledged broad-egress"
                );
            }
            rules.push(rule);
        }
        spec.network = Network::Egress(rules);
    }
    if let Some(dir) = &args.rootfs {
        spec.root = Root::Rootfs(canonical_source(&host_path(&dir.to_string_lossy())?)?);
    }
    for value in &args.volume {
        spec.mounts.push(parse_volume(value)?);
    }
    for value in &args.mount {
        spec.mounts.push(parse_mount(value)?);
    }
    for mount in &mut spec.mounts {
        mount.src = canonical_source(&mount.src)?;
    }
    for value in &args.tmpfs {
        let tmpfs = parse_tmpfs(value)?;
        spec.tmpfs.retain(|t| t.dst != tmpfs.dst);
        spec.tmpfs.push(tmpfs);
    }
    if let Some(dir) = &args.workdir {
        spec.workdir = absolute("--workdir", &dir.to_string_lossy())?;
    }
    for value in &args.env {
        let (key, val) = parse_env(value)?;
        spec.set_env(&key, &val);
    }
    let limits = &mut spec.limits;
    if let Some(v) = &args.memory {
        limits.memory_bytes = parse_bytes(v).context("--memory")?;
    }
    if let Some(v) = &args.cpus {
        limits.cpu_millis = parse_cpus(v).context("--cpus")?;
    }
    if let Some(v) = args.pids_limit {
        limits.pids = v;
    }
    if let Some(v) = &args.timeout {
        limits.timeout = parse_duration(v).context("--timeout")?;
    }
    if let Some(v) = &args.write_limit {
        limits.write_bytes = parse_bytes(v).context("--write-limit")?;
    }
    if let Some(v) = args.write_files {
        limits.write_files = write_files(v)?;
    }
    if let Some(v) = &args.output_limit {
        limits.output_bytes = parse_bytes(v).context("--output-limit")?;
    }
    if let Some(v) = &args.user {
        spec.user = parse_user(v, args.allow_root)?;
    }
    spec.allow_unlimited = args.allow_unlimited;
    Ok(spec)
}

/// The limits an invocation asks for, which with `--tool` may only narrow the tool's.
pub(crate) fn narrowing(args: &RunArgs) -> Result<Narrowing> {
    Ok(Narrowing {
        memory: args
            .memory
            .as_deref()
            .map(parse_bytes)
            .transpose()
            .context("--memory")?,
        cpus: args
            .cpus
            .as_deref()
            .map(parse_cpus)
            .transpose()
            .context("--cpus")?,
        pids: args.pids_limit,
        timeout: args
            .timeout
            .as_deref()
            .map(parse_duration)
            .transpose()
            .context("--timeout")?,
        output: args
            .output_limit
            .as_deref()
            .map(parse_bytes)
            .transpose()
            .context("--output-limit")?,
        write_bytes: args
            .write_limit
            .as_deref()
            .map(parse_bytes)
            .transpose()
            .context("--write-limit")?,
        write_files: args.write_files.map(write_files).transpose()?,
    })
}

/// Resolves `--policy FILE --tool NAME`: the tool's scope exactly, with limits only
/// narrowed and its parameters bound. Options that would widen the scope are refused,
/// naming the option and tool.
fn spec_from_policy(args: &RunArgs, policy: &std::path::Path, tool: &str) -> Result<Resolved> {
    let widening = [
        ("-v/--volume", !args.volume.is_empty()),
        ("--mount", !args.mount.is_empty()),
        ("--tmpfs", !args.tmpfs.is_empty()),
        ("--workdir", args.workdir.is_some()),
        ("--env", !args.env.is_empty()),
        ("--user", args.user.is_some()),
        ("--allow-root", args.allow_root),
        ("--network", args.network.is_some()),
        ("--allow", !args.allow.is_empty()),
        ("--rootfs", args.rootfs.is_some()),
        ("--allow-unlimited", args.allow_unlimited),
        ("--backend", args.backend.is_some()),
        ("--image", args.image.is_some()),
    ];
    if let Some((option, _)) = widening.iter().find(|(_, given)| *given) {
        bail!(
            "{option} cannot be combined with --tool {tool}: a tool runs with exactly the scope \
             its policy gives it (only --memory, --cpus, --pids-limit, --timeout, \
             --output-limit, --write-limit and --write-files may narrow it)"
        );
    }
    let policy = crate::policy::load(policy)?;
    let declared = policy.tool(tool)?;
    if args.stdin && args.params_json.as_deref() == Some("-") {
        bail!("-i/--stdin cannot be combined with --params-json -, which reads standard input");
    }
    if let Some(param) = declared
        .params
        .iter()
        .find(|p| p.stdin)
        .filter(|_| args.stdin)
    {
        bail!(
            "-i/--stdin cannot be combined with --tool {tool}: its standard input is its \
             parameter `{}` (--param {}=VALUE)",
            param.name,
            param.name
        );
    }
    let invocation = Invocation {
        workspace: args.workspace.as_deref().map(host_path_of).transpose()?,
        extra_args: args.command.clone(),
        params: params(args, declared)?,
        narrowing: narrowing(args)?,
    };
    Ok(policy.resolve_call(tool, &invocation)?)
}

/// The values of `--params-json`, or of each `--param NAME=VALUE` typed as `tool` declares
/// NAME. A value that does not parse as its type is passed on as a string, for `bind` to
/// refuse with the parameter's name and type.
fn params(args: &RunArgs, tool: &Tool) -> Result<Map<String, Value>> {
    if let Some(given) = &args.params_json {
        let text = if given == "-" {
            params_from_stdin()?
        } else {
            given.clone()
        };
        return match serde_json::from_str::<Value>(&text) {
            Ok(Value::Object(map)) => Ok(map),
            Ok(other) => bail!(
                "--params-json must be one JSON object, not {}",
                match other {
                    Value::Array(_) => "an array",
                    Value::String(_) => "a string",
                    Value::Number(_) => "a number",
                    Value::Bool(_) => "a boolean",
                    _ => "null",
                }
            ),
            Err(e) => bail!("--params-json is not valid JSON: {e}"),
        };
    }
    let mut map = Map::new();
    for entry in &args.param {
        let Some((name, raw)) = entry.split_once('=') else {
            bail!("invalid --param {entry:?}: expected NAME=VALUE");
        };
        let text = || Value::String(raw.to_string());
        let kind = tool.params.iter().find(|p| p.name == name).map(|p| p.kind);
        let value = match kind {
            Some(ParamType::Array) => {
                if let Some(Value::Array(items)) = map.get_mut(name) {
                    items.push(text());
                    continue;
                }
                Value::Array(vec![text()])
            }
            Some(ParamType::Integer) => raw.parse::<i64>().map_or_else(|_| text(), Value::from),
            Some(ParamType::Number) => raw
                .parse::<f64>()
                .ok()
                .and_then(serde_json::Number::from_f64)
                .map_or_else(text, Value::Number),
            Some(ParamType::Boolean) => match raw {
                "true" => Value::Bool(true),
                "false" => Value::Bool(false),
                _ => text(),
            },
            Some(ParamType::String) | None => text(),
        };
        if map.insert(name.to_string(), value).is_some() {
            bail!("--param {name} is given twice; only an array parameter takes several values");
        }
    }
    Ok(map)
}

/// `--params-json -`: the JSON object on nanoclaw's standard input (no argument can hold
/// more than 128 KiB), up to `MAX_PARAMS_JSON`.
fn params_from_stdin() -> Result<String> {
    use std::io::Read;
    let mut text = String::new();
    std::io::stdin()
        .lock()
        .take(MAX_PARAMS_JSON + 1)
        .read_to_string(&mut text)
        .context("--params-json -: read the parameters from standard input")?;
    if text.len() as u64 > MAX_PARAMS_JSON {
        bail!("--params-json -: more than {MAX_PARAMS_JSON} bytes on standard input");
    }
    Ok(text)
}

/// The most `--params-json -` reads.
const MAX_PARAMS_JSON: u64 = 64 << 20;

/// Makes `input` the standard input this process passes on: a pipe, fed by a thread, in
/// place of descriptor 0. The write end is close-on-exec, so the command sees end of file
/// once the value is written; a command that exits without reading it ends the write.
fn feed_stdin(input: Vec<u8>) -> Result<()> {
    use std::io::Write;
    let (reader, writer) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .context("create the standard input pipe")?;
    rustix::stdio::dup2_stdin(&reader).context("make the pipe standard input")?;
    drop(reader);
    std::thread::spawn(move || {
        let mut writer = std::fs::File::from(writer);
        // A command that does not read all of it closes the pipe: EPIPE, nothing to do.
        let _ = writer.write_all(&input);
    });
    Ok(())
}

/// Finds the credential files below every mount (but those a policy shows) and puts them in
/// `spec.hidden`, which every backend masks. A tree that cannot be fully scanned is refused.
pub(crate) fn hide_credentials(spec: &mut SandboxSpec) -> Result<()> {
    nanoclaw_policy::hide_credentials(spec, nanoclaw_policy::ScanLimits::default())?;
    Ok(())
}

pub(crate) fn host_path_of(path: &std::path::Path) -> Result<PathBuf> {
    host_path(&path.to_string_lossy())
}

/// One line on stdout; a reader that went away (`| head`) is not an error of the run.
fn print_line(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout().lock(), "{line}");
}

fn error_exit(json: bool, status: i32, message: &str) -> ExitCode {
    if json {
        print_line(&json!({ "error": message, "exit_status": status }).to_string());
    } else {
        eprintln!("nanoclaw: {message}");
    }
    ExitCode::from(status as u8)
}

/// What the user should hear about an outcome besides the command's own output.
fn notices(outcome: &Outcome, spec: &SandboxSpec) -> Vec<String> {
    let mut notes = Vec::new();
    if let Some(writes) = &outcome.writes {
        if writes.budget_reached {
            notes.push(format!(
                "the write budget ({} bytes, {} files) was reached: writes past it failed with ENOSPC or were not applied",
                writes.budget_bytes, writes.budget_files
            ));
        }
        if writes.refused_count > 0 {
            let shown: Vec<String> = writes
                .refused
                .iter()
                .take(5)
                .map(|r| format!("{} ({})", r.path, r.reason))
                .collect();
            notes.push(format!(
                "{} change(s) were not applied to the host: {}{}",
                writes.refused_count,
                shown.join("; "),
                if writes.refused_count > 5 {
                    "; …"
                } else {
                    ""
                }
            ));
        }
    }
    if outcome.secret_expired {
        notes.push(format!(
            "a secret's ttl ran out after {:?}: the command was stopped",
            spec.limits.timeout
        ));
    } else if outcome.timed_out {
        notes.push(format!(
            "command timed out after {:?} and was killed",
            spec.limits.timeout
        ));
    }
    if outcome.oom_killed {
        notes.push(format!(
            "command was killed: out of memory (limit {} MiB)",
            spec.limits.memory_bytes >> 20
        ));
    }
    if !spec.hidden.is_empty() {
        let mut shown: Vec<String> = spec
            .hidden
            .iter()
            .take(5)
            // Quoted and escaped: a name planted in the tree must not reach the terminal as
            // an escape sequence.
            .map(|p| format!("{p:?}"))
            .collect();
        if spec.hidden.len() > shown.len() {
            shown.push(format!("and {} more", spec.hidden.len() - shown.len()));
        }
        notes.push(format!(
            "hid {} credential file(s) from the command: {}",
            spec.hidden.len(),
            shown.join(", ")
        ));
    }
    if outcome.enforced.cgroup.is_none() {
        notes.push(
            "WARNING: memory, CPU and PID limits were NOT enforced (--allow-unlimited)".into(),
        );
    }
    if outcome.enforced.landlock.status != "full" {
        let reason = outcome.enforced.landlock.reason.clone().unwrap_or_default();
        notes.push(format!(
            "landlock is {}: {reason}",
            outcome.enforced.landlock.status
        ));
    }
    notes
}

fn outcome_json(outcome: &Outcome, spec: &SandboxSpec, audit: Value) -> Value {
    json!({
        "audit": audit,
        "hidden": spec.hidden,
        "exit_code": outcome.exit_code,
        "signal": outcome.signal,
        "timed_out": outcome.timed_out,
        "oom_killed": outcome.oom_killed,
        "duration_ms": outcome.duration_ms,
        "stdout": outcome.stdout.text,
        "stderr": outcome.stderr.text,
        "stdout_truncated": outcome.stdout.truncated,
        "stderr_truncated": outcome.stderr.truncated,
        "stdout_bytes": outcome.stdout.total_bytes,
        "stderr_bytes": outcome.stderr.total_bytes,
        "exit_status": outcome.exit_status(),
        "usage": outcome.usage,
        "enforced": outcome.enforced,
        "writes": outcome.writes,
        "redactions": outcome.redactions,
        "secret_expired": outcome.secret_expired,
    })
}

pub fn main(args: RunArgs) -> ExitCode {
    // Pool mode: the sandbox is built before the call's arguments arrive on stdin.
    let prebuilt = match args
        .prebuilt
        .then(|| crate::prebuilt::start(&args))
        .transpose()
    {
        Ok(prebuilt) => prebuilt.flatten(),
        Err(status) => return status,
    };
    let pooled = prebuilt.is_some();
    let mut recorder = match audit::recorder(&args.audit, &args.command) {
        Ok(recorder) => recorder,
        Err(error) => return error_exit(args.json, RUNNER_ERROR.into(), &format!("{error:#}")),
    };
    let resolved = match (&args.policy, &args.tool) {
        (Some(policy), Some(tool)) => {
            recorder.set_origin(crate::policy::origin(
                policy,
                tool,
                args.workspace.as_deref(),
            ));
            spec_from_policy(&args, policy, tool).inspect(|resolved| {
                recorder.set_argv(&resolved.spec.command);
            })
        }
        _ => spec_from(&args).map(|spec| Resolved { spec, stdin: None }),
    };
    let (spec, mut stdin) = match resolved {
        Ok(Resolved { spec, stdin }) => (Ok(spec), stdin),
        Err(error) => (Err(error), None),
    };
    let refuse =
        |message: String| error_exit(args.json, RUNNER_ERROR.into(), &recorder.refused(&message));
    let mut spec = match spec.and_then(|mut spec| {
        hide_credentials(&mut spec)?;
        Ok(spec)
    }) {
        Ok(spec) => spec,
        Err(error) => return refuse(format!("{error:#}")),
    };
    // The backend is reached before any secret is fetched: a host without it fails first.
    let backend: Box<dyn nanoclaw_spec::Backend> = match prebuilt {
        Some(prebuilt) => {
            prebuilt.set_stdin(stdin.take());
            Box::new(prebuilt)
        }
        None => match crate::backend::for_spec(&spec, args.pull) {
            Ok(backend) => backend,
            Err(error) => return refuse(error.to_string()),
        },
    };
    // Only now, with everything else about the invocation valid, are secrets fetched.
    let secrets = match crate::secrets::fetch(&mut spec, recorder.key_dir().as_deref()) {
        Ok(secrets) => secrets,
        Err(error) => return refuse(format!("{error:#}")),
    };
    let egress = match audit::egress_sink(&recorder)
        .and_then(|sink| crate::egress::start_with(&mut spec, sink, args.ca_file.as_deref()))
    {
        Ok(egress) => egress,
        Err(error) => return refuse(format!("{error:#}")),
    };
    if spec.user.uid == 0 || spec.user.gid == 0 {
        eprintln!("nanoclaw: WARNING: the command runs as root inside the sandbox (--allow-root); it still holds no capabilities");
    }
    let io = IoMode {
        stdin: args.stdin || stdin.is_some() || pooled,
        capture: args.json,
    };
    if let Some(input) = stdin {
        if let Err(error) = feed_stdin(input) {
            return refuse(format!("{error:#}"));
        }
    }
    let request = nanoclaw_runner::Request {
        io,
        secrets: &secrets.uses,
        ttl_bounds_run: secrets.ttl_bounds_run,
    };
    let finish_egress = || egress.map(crate::egress::Egress::finish).transpose();
    let ended = match nanoclaw_runner::run(&*backend, &recorder, &mut spec, request, finish_egress)
    {
        Ok(ended) => ended,
        Err(failure) => return error_exit(args.json, failure.status, &failure.message),
    };
    let audit = match ended.seq {
        Some(seq) => json!({ "seq": seq, "invocation": spec.invocation.id }),
        None => Value::Null,
    };
    let (result, egress_recorded) = (ended.result, ended.settled);
    if let Err(error) = egress_recorded {
        return error_exit(
            args.json,
            RUNNER_ERROR.into(),
            &format!("{error:#}; the invocation's outcome is withheld"),
        );
    }
    match result {
        Ok(outcome) => {
            if args.json {
                print_line(&outcome_json(&outcome, &spec, audit).to_string());
            }
            for warning in &outcome.warnings {
                eprintln!("nanoclaw: {}: {warning}", backend.name());
            }
            for note in notices(&outcome, &spec) {
                eprintln!("nanoclaw: {note}");
            }
            ExitCode::from(outcome.exit_status() as u8)
        }
        Err(error) => error_exit(args.json, error.exit_status(), &describe(&error)),
    }
}

fn describe(error: &BackendError) -> String {
    error.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_needs_allow_root() {
        assert!(parse_user("0", false).is_err());
        assert!(parse_user("0:0", true).is_ok());
        assert_eq!(
            parse_user("1000", false).unwrap(),
            User {
                uid: 1000,
                gid: 1000
            }
        );
        assert!(parse_user("bob", false).is_err());
    }
}
