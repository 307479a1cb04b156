//! Reads policy TOML into a [`Policy`], refusing anything it does not understand.
//!
//! The walk is by hand over toml's spanned document tree rather than through serde derive,
//! so that every refusal can say where it is, what is wrong and what would be valid, and so
//! that one run reports every problem in the file rather than the first. Unknown keys, wrong
//! types, bad units, relative or `..` paths and duplicates are errors; nothing is ignored.
//!
//! This module must never judge safety (that is the lint's job) and never panic, whatever
//! the input: the parser is fuzzed.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Component, Path, PathBuf};

use nanoclaw_spec::{
    is_env_name, parse_bytes, parse_cpus, parse_duration, Syscalls, User, SANDBOX_UID,
};
use toml::de::{DeTable, DeValue};
use toml::Spanned;

use crate::diagnostic::{Diagnostic, Diagnostics, Source};
use crate::egress;
use crate::lint::Rule;
use crate::params::{self, Param, ParamType, Piece};
use crate::policy::{
    Acknowledgement, BackendKind, Defaults, ExtraArgs, HostPath, MountDecl, Policy, Resources,
    Secret, Spots, Tool, ToolNetwork,
};

type Value<'i> = Spanned<DeValue<'i>>;
type Span = Range<usize>;
/// A tool's parameters that parsed, each with its table's span, and the names of those refused.
type Declared = (Vec<(Param, Span)>, Vec<String>);

/// More than this many errors are not worth reading; the rest would be noise.
const MAX_ERRORS: usize = 50;

const ROOT_KEYS: &[&str] = &["defaults", "ceilings", "tools"];
const DEFAULTS_KEYS: &[&str] = &["backend", "timeout", "limits"];
const LIMIT_KEYS: &[&str] = &[
    "memory",
    "cpus",
    "pids",
    "output",
    "tmpfs",
    "writes",
    "write_files",
];
const CEILING_KEYS: &[&str] = &[
    "memory",
    "cpus",
    "pids",
    "timeout",
    "output",
    "tmpfs",
    "writes",
    "write_files",
];
const TOOL_KEYS: &[&str] = &[
    "description",
    "command",
    "args",
    "workdir",
    "env",
    "timeout",
    "backend",
    "rootfs",
    "image",
    "user",
    "network",
    "secrets",
    "syscalls",
    "capabilities",
    "limits",
    "mounts",
    "unsafe",
    "params",
];
const MOUNT_KEYS: &[&str] = &["host", "path", "mode", "credentials"];
const NETWORK_KEYS: &[&str] = &["allow"];
const SECRET_KEYS: &[&str] = &["name", "ttl"];
const SYSCALL_KEYS: &[&str] = &["profile", "allow"];
const UNSAFE_KEYS: &[&str] = &["reason", "allow"];
const PARAM_KEYS: &[&str] = &[
    "type",
    "description",
    "required",
    "pattern",
    "enum",
    "max_length",
    "stdin",
];
/// Syscall profiles a backend knows.
const PROFILES: &[&str] = &["default"];
/// Paths inside the sandbox that the sandbox itself provides; a mount may not cover them.
const RESERVED_TARGETS: &[&str] = &["/proc", "/dev", "/sys", "/tmp"];

pub(crate) fn parse(text: &str, file: &Path, policy_dir: &Path) -> Result<Policy, Diagnostics> {
    let source = Source::new(text, file);
    let root = match DeTable::parse(text) {
        Ok(root) => root,
        Err(e) => {
            let span = e.span().unwrap_or(0..0);
            let message = format!("invalid TOML: {}", e.message().trim_end_matches('.'));
            return Err(Diagnostics(vec![source.error(span, message, None)]));
        }
    };
    let mut parser = Parser {
        source,
        policy_dir,
        errors: Vec::new(),
    };
    let policy = parser.policy(root.get_ref());
    let mut errors = parser.errors;
    if errors.is_empty() {
        if let Some(policy) = policy {
            return Ok(policy);
        }
        // Unreachable: every refusal records an error. Fail closed all the same.
        errors.push(Diagnostic::whole_file(file, "policy refused", None));
    }
    errors.sort_by_key(|d| (d.at.is_none(), d.at));
    errors.truncate(MAX_ERRORS);
    Err(Diagnostics(errors))
}

struct Parser<'s> {
    source: Source<'s>,
    policy_dir: &'s Path,
    errors: Vec<Diagnostic>,
}

/// The entry `key` of `table`, if written.
fn get<'v, 'i>(table: &'v DeTable<'i>, key: &str) -> Option<&'v Value<'i>> {
    table
        .iter()
        .find(|(k, _)| k.get_ref().as_ref() == key)
        .map(|(_, v)| v)
}

fn article(kind: &str) -> &'static str {
    match kind {
        "integer" | "array" => "an",
        _ => "a",
    }
}

/// Classic edit distance, for "did you mean" hints on short key names.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut previous = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitute = previous + usize::from(ca != *cb);
            previous = row[j + 1];
            row[j + 1] = substitute.min(row[j] + 1).min(previous + 1);
        }
    }
    row[b.len()]
}

fn suggest(word: &str, valid: &[&str]) -> Option<String> {
    valid
        .iter()
        .map(|v| (distance(word, v), v))
        .filter(|(d, v)| *d <= 2 && *d < v.len())
        .min()
        .map(|(_, v)| format!("did you mean `{v}`?"))
}

fn is_tool_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// A `sha256:<64 lowercase hex>` digest at the end of `image`, if it has one at all.
fn digest_is_malformed(image: &str) -> Option<&str> {
    let digest = match image.split_once("@") {
        Some((_, digest)) => digest,
        None if image.starts_with("sha256:") => image,
        None => return None,
    };
    let well_formed = digest.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    });
    (!well_formed).then_some(digest)
}

/// An absolute path without `..`, normalised (no `.` components or doubled slashes).
fn clean_absolute(text: &str) -> Result<PathBuf, String> {
    if text.contains('\0') {
        return Err("contains a NUL byte".into());
    }
    let path = Path::new(text);
    if !path.is_absolute() {
        return Err("is not an absolute path".into());
    }
    let mut clean = PathBuf::from("/");
    for component in path.components() {
        match component {
            Component::Normal(part) => clean.push(part),
            Component::ParentDir => return Err("contains `..`".into()),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    Ok(clean)
}

/// The relative rest of a `${workspace}` path, without `..`.
fn clean_relative(text: &str) -> Result<PathBuf, String> {
    if text.contains('\0') {
        return Err("contains a NUL byte".into());
    }
    let mut clean = PathBuf::new();
    for component in Path::new(text).components() {
        match component {
            Component::Normal(part) => clean.push(part),
            Component::ParentDir => return Err("contains `..`".into()),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    Ok(clean)
}

impl<'s> Parser<'s> {
    fn error(&mut self, span: Span, message: impl Into<String>, help: Option<String>) {
        let diagnostic = self.source.error(span, message, help);
        self.errors.push(diagnostic);
    }

    fn spot(&self, spots: &mut Spots, key: impl Into<String>, span: &Span) {
        spots.insert(key.into(), self.source.locate(span.start));
    }

    /// Refuses keys of `table` outside `valid`.
    fn known_keys(&mut self, table: &DeTable<'_>, name: &str, valid: &[&str]) {
        for key in table.keys() {
            let word = key.get_ref().as_ref();
            if !valid.contains(&word) {
                self.error(
                    key.span(),
                    format!(
                        "unknown key `{word}` in {name}; valid keys: {}",
                        valid.join(", ")
                    ),
                    suggest(word, valid),
                );
            }
        }
    }

    fn wrong_type(&mut self, value: &Value<'_>, what: &str, expected: &str, example: &str) {
        let found = value.get_ref().type_str();
        self.error(
            value.span(),
            format!("{what} must be {expected}, not {} {found}", article(found)),
            Some(format!("for example: {example}")),
        );
    }

    fn table<'v, 'i>(
        &mut self,
        value: &'v Value<'i>,
        what: &str,
        example: &str,
    ) -> Option<&'v DeTable<'i>> {
        match value.get_ref() {
            DeValue::Table(table) => Some(table),
            _ => {
                self.wrong_type(value, what, "a table", example);
                None
            }
        }
    }

    fn string(&mut self, value: &Value<'_>, what: &str, example: &str) -> Option<String> {
        match value.get_ref() {
            DeValue::String(s) => Some(s.to_string()),
            _ => {
                self.wrong_type(value, what, "a string", example);
                None
            }
        }
    }

    /// A string that ends up in argv, the environment or a path: no NUL bytes.
    fn plain_string(&mut self, value: &Value<'_>, what: &str, example: &str) -> Option<String> {
        let s = self.string(value, what, example)?;
        if s.contains('\0') {
            self.error(value.span(), format!("{what} contains a NUL byte"), None);
            return None;
        }
        Some(s)
    }

    fn array<'v, 'i>(
        &mut self,
        value: &'v Value<'i>,
        what: &str,
        example: &str,
    ) -> Option<&'v [Value<'i>]> {
        match value.get_ref() {
            DeValue::Array(items) => Some(items),
            _ => {
                self.wrong_type(value, what, "an array", example);
                None
            }
        }
    }

    /// An array of strings, each with its span.
    fn strings(
        &mut self,
        value: &Value<'_>,
        what: &str,
        example: &str,
    ) -> Option<Vec<(String, Span)>> {
        let items = self.array(value, what, example)?;
        let mut out = Vec::new();
        let mut ok = true;
        for item in items {
            match self.plain_string(item, &format!("each entry of {what}"), example) {
                Some(s) => out.push((s, item.span())),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    fn unit<T>(
        &mut self,
        value: &Value<'_>,
        what: &str,
        example: &str,
        parse: impl Fn(&str) -> Result<T, nanoclaw_spec::UnitError>,
    ) -> Option<T> {
        let text = self.string(value, what, example)?;
        match parse(&text) {
            Ok(v) => Some(v),
            Err(e) => {
                self.error(
                    value.span(),
                    format!("invalid {} {:?} for {what}", e.what, e.value),
                    Some(format!("expected {}, for example: {example}", e.expected)),
                );
                None
            }
        }
    }

    fn cpus(&mut self, value: &Value<'_>, what: &str) -> Option<u32> {
        const EXAMPLE: &str = "cpus = 0.5";
        let text = match value.get_ref() {
            DeValue::Float(f) => f.as_str().to_string(),
            DeValue::Integer(i) if i.radix() == 10 => i.as_str().to_string(),
            DeValue::String(s) => s.to_string(),
            _ => {
                self.wrong_type(value, what, "a number", EXAMPLE);
                return None;
            }
        };
        match parse_cpus(&text) {
            Ok(millis) => Some(millis),
            Err(e) => {
                self.error(
                    value.span(),
                    format!("invalid {} {:?} for {what}", e.what, e.value),
                    Some(format!("expected {}", e.expected)),
                );
                None
            }
        }
    }

    fn count(&mut self, value: &Value<'_>, what: &str, example: &str) -> Option<u32> {
        let parsed = match value.get_ref() {
            DeValue::Integer(i) => u32::from_str_radix(i.as_str(), i.radix()).ok(),
            _ => {
                self.wrong_type(value, what, "a whole number", example);
                return None;
            }
        };
        match parsed {
            Some(n) if n > 0 => Some(n),
            _ => {
                self.error(
                    value.span(),
                    format!("{what} must be a whole number from 1 to {}", u32::MAX),
                    None,
                );
                None
            }
        }
    }

    fn backend(&mut self, value: &Value<'_>, what: &str) -> Option<BackendKind> {
        match self.string(value, what, "backend = \"native\"")?.as_str() {
            "native" => Some(BackendKind::Native),
            "docker" => Some(BackendKind::Docker),
            other => {
                self.error(
                    value.span(),
                    format!("unknown backend {other:?} for {what}; valid backends: native, docker"),
                    None,
                );
                None
            }
        }
    }

    fn duration(&mut self, value: &Value<'_>, what: &str) -> Option<std::time::Duration> {
        self.unit(value, what, "\"30s\"", parse_duration)
    }

    /// Applies the entries of a limits or ceilings table to `into`, noting where each was
    /// written under `prefix`.
    fn resources(
        &mut self,
        table: &DeTable<'_>,
        name: &str,
        valid: &[&str],
        into: &mut Resources,
        spots: &mut Spots,
        prefix: &str,
    ) {
        self.known_keys(table, name, valid);
        for (key, value) in table.iter() {
            let key = key.get_ref().as_ref();
            if !valid.contains(&key) {
                continue;
            }
            let what = format!("`{key}` in {name}");
            let bytes = |p: &mut Self, example: &str| p.unit(value, &what, example, parse_bytes);
            let applied = match key {
                "memory" => bytes(self, "memory = \"512m\"").map(|v| into.memory_bytes = v),
                "output" => bytes(self, "output = \"1m\"").map(|v| into.output_bytes = v),
                "tmpfs" => bytes(self, "tmpfs = \"64m\"").map(|v| into.tmpfs_bytes = v),
                "writes" => bytes(self, "writes = \"1g\"").map(|v| into.write_bytes = v),
                "write_files" => self
                    .count(value, &what, "write_files = 100000")
                    .map(|v| into.write_files = u64::from(v)),
                "cpus" => self.cpus(value, &what).map(|v| into.cpu_millis = v),
                "pids" => self
                    .count(value, &what, "pids = 256")
                    .map(|v| into.pids = v),
                "timeout" => self.duration(value, &what).map(|v| into.timeout = v),
                _ => None,
            };
            if applied.is_some() {
                self.spot(spots, format!("{prefix}{key}"), &value.span());
            }
        }
    }

    fn policy(&mut self, root: &DeTable<'_>) -> Option<Policy> {
        self.known_keys(root, "the policy file", ROOT_KEYS);
        let mut spots = Spots::new();
        let mut defaults = Defaults {
            backend: BackendKind::Native,
            resources: Resources::builtin_defaults(),
        };
        let mut default_spots = Spots::new();
        if let Some(value) = get(root, "defaults") {
            if let Some(table) = self.table(value, "[defaults]", "[defaults]\ntimeout = \"60s\"") {
                self.defaults(table, &mut defaults, &mut default_spots);
            }
        }
        let mut ceilings = Resources::builtin_ceilings();
        if let Some(value) = get(root, "ceilings") {
            if let Some(table) = self.table(value, "[ceilings]", "[ceilings]\nmemory = \"4g\"") {
                self.resources(
                    table,
                    "[ceilings]",
                    CEILING_KEYS,
                    &mut ceilings,
                    &mut spots,
                    "ceilings.",
                );
            }
        }
        let mut tools = Vec::new();
        match get(root, "tools") {
            None => self.errors.push(Diagnostic::whole_file(
                self.source.file(),
                "the policy names no tools",
                Some("add a [tools.NAME] table with at least `command = [...]`".into()),
            )),
            Some(value) => {
                if let Some(table) = self.table(value, "[tools]", "[tools.NAME]") {
                    if table.is_empty() {
                        self.error(
                            value.span(),
                            "the policy names no tools",
                            Some("add a [tools.NAME] table with at least `command = [...]`".into()),
                        );
                    }
                    for (name, value) in table.iter() {
                        let tool = self.tool(name, value, &defaults, &default_spots);
                        tools.extend(tool);
                    }
                }
            }
        }
        tools.sort_by_key(|t| t.at);
        Some(Policy {
            path: self.source.file().to_path_buf(),
            policy_dir: self.policy_dir.to_path_buf(),
            defaults,
            ceilings,
            tools,
            spots,
        })
    }

    fn defaults(&mut self, table: &DeTable<'_>, defaults: &mut Defaults, spots: &mut Spots) {
        self.known_keys(table, "[defaults]", DEFAULTS_KEYS);
        if let Some(value) = get(table, "backend") {
            if let Some(backend) = self.backend(value, "`backend` in [defaults]") {
                defaults.backend = backend;
            }
        }
        if let Some(value) = get(table, "timeout") {
            if let Some(timeout) = self.duration(value, "`timeout` in [defaults]") {
                defaults.resources.timeout = timeout;
                self.spot(spots, "timeout", &value.span());
            }
        }
        if let Some(value) = get(table, "limits") {
            if let Some(limits) = self.table(value, "[defaults.limits]", "memory = \"512m\"") {
                self.resources(
                    limits,
                    "[defaults.limits]",
                    LIMIT_KEYS,
                    &mut defaults.resources,
                    spots,
                    "limits.",
                );
            }
        }
    }

    fn tool(
        &mut self,
        name: &Spanned<std::borrow::Cow<'_, str>>,
        value: &Value<'_>,
        defaults: &Defaults,
        default_spots: &Spots,
    ) -> Option<Tool> {
        let errors_before = self.errors.len();
        let tool_name = name.get_ref().to_string();
        if !is_tool_name(&tool_name) {
            self.error(
                name.span(),
                format!("invalid tool name {tool_name:?}"),
                Some("use letters, digits, `-` and `_` (at most 64)".into()),
            );
        }
        let header = format!("[tools.{tool_name}]");
        let table = self.table(value, &header, "command = [\"grep\", \"-rn\"]")?;
        self.known_keys(table, &header, TOOL_KEYS);
        let mut spots = default_spots.clone();
        let field = |key: &str| get(table, key);
        let what = |key: &str| format!("`{key}` in {header}");

        let description = field("description").and_then(|v| {
            self.string(
                v,
                &what("description"),
                "description = \"search the workspace\"",
            )
        });
        let command = self.command(table, &header);
        let args = match field("args") {
            None => Some(ExtraArgs::None),
            Some(v) => {
                self.spot(&mut spots, "args", &v.span());
                match self
                    .string(v, &what("args"), "args = \"append\"")
                    .as_deref()
                {
                    None => None,
                    Some("none") => Some(ExtraArgs::None),
                    Some("append") => Some(ExtraArgs::Append),
                    Some(other) => {
                        self.error(
                            v.span(),
                            format!(
                                "invalid {} {other:?}; valid values: \"none\", \"append\"",
                                what("args")
                            ),
                            None,
                        );
                        None
                    }
                }
            }
        };
        let workdir = match field("workdir") {
            None => Some(PathBuf::from("/")),
            Some(v) => self.absolute(v, &what("workdir"), "workdir = \"/work\""),
        };
        let env = match field("env") {
            None => Some(Vec::new()),
            Some(v) => self.env(v, &header, &mut spots),
        };
        let backend = match field("backend") {
            None => Some(defaults.backend),
            Some(v) => self.backend(v, &what("backend")),
        };
        let rootfs = field("rootfs").and_then(|v| {
            self.spot(&mut spots, "rootfs", &v.span());
            self.rootfs(v, &what("rootfs"))
        });
        let image = field("image").and_then(|v| {
            self.spot(&mut spots, "image", &v.span());
            self.image(v, &what("image"))
        });
        let user = match field("user") {
            None => Some(User::default()),
            Some(v) => {
                self.spot(&mut spots, "user", &v.span());
                self.user(v, &what("user"))
            }
        };
        let network = match field("network") {
            None => Some(ToolNetwork::None),
            Some(v) => self.network(v, &tool_name, &mut spots),
        };
        let secrets = match field("secrets") {
            None => Some(Vec::new()),
            Some(v) => self.secrets(v, &tool_name, &env, &mut spots),
        };
        let syscalls = match field("syscalls") {
            None => Some(Syscalls::default()),
            Some(v) => self.syscalls(v, &tool_name, &mut spots),
        };
        let capabilities = match field("capabilities") {
            None => Some(Vec::new()),
            Some(v) => {
                self.spot(&mut spots, "capabilities", &v.span());
                self.capabilities(v, &what("capabilities"))
            }
        };
        let mut resources = defaults.resources;
        if let Some(v) = field("timeout") {
            if let Some(timeout) = self.duration(v, &what("timeout")) {
                resources.timeout = timeout;
                self.spot(&mut spots, "timeout", &v.span());
            }
        }
        if let Some(v) = field("limits") {
            let name = format!("[tools.{tool_name}.limits]");
            if let Some(limits) = self.table(v, &name, "memory = \"256m\"") {
                self.resources(
                    limits,
                    &name,
                    LIMIT_KEYS,
                    &mut resources,
                    &mut spots,
                    "limits.",
                );
            }
        }
        let mounts = match field("mounts") {
            None => Some(Vec::new()),
            Some(v) => self.mounts(v, &tool_name, &mut spots),
        };
        // Placeholders are checked against every parameter declared, even one refused, so
        // that one run reports every problem.
        let params = match field("params") {
            None => Some((Vec::new(), Vec::new())),
            Some(v) => self.params(v, &tool_name),
        };
        let params = match (params, &command) {
            (Some((params, refused)), Some(_)) => {
                self.placeholders(table, params, &refused, &header)
            }
            _ => None,
        };
        let acknowledged = match field("unsafe") {
            None => Some(None),
            Some(v) => self.acknowledgement(v, &tool_name, &mut spots).map(Some),
        };

        let at = self.source.locate(value.span().start);
        let tool = Tool {
            name: tool_name,
            description,
            command: command?,
            args: args?,
            workdir: workdir?,
            env: env?,
            backend: backend?,
            rootfs,
            image,
            user: user?,
            network: network?,
            secrets: secrets?,
            syscalls: syscalls?,
            capabilities: capabilities?,
            resources,
            mounts: mounts?,
            acknowledged: acknowledged?,
            params: params?,
            at,
            spots,
        };
        self.root_matches_backend(&tool, table);
        (self.errors.len() == errors_before).then_some(tool)
    }

    fn command(&mut self, table: &DeTable<'_>, header: &str) -> Option<Vec<String>> {
        const EXAMPLE: &str = "command = [\"grep\", \"-rn\"]";
        let Some(value) = get(table, "command") else {
            let span = table.keys().next().map_or(0..0, |k| k.span());
            self.error(
                span,
                format!("{header} has no `command`"),
                Some(format!("every tool names what it runs, e.g. {EXAMPLE}")),
            );
            return None;
        };
        let what = format!("`command` in {header}");
        let argv = self.strings(value, &what, EXAMPLE)?;
        match argv.first() {
            None => {
                self.error(
                    value.span(),
                    format!("{what} is empty"),
                    Some(format!("for example: {EXAMPLE}")),
                );
                None
            }
            Some((program, span)) if program.is_empty() => {
                self.error(
                    span.clone(),
                    format!("the program in {what} is empty"),
                    None,
                );
                None
            }
            Some(_) => Some(argv.into_iter().map(|(s, _)| s).collect()),
        }
    }

    /// `[tools.NAME.params.*]`, in the order written, each with the span of its table; and
    /// the names of those refused.
    fn params(&mut self, value: &Value<'_>, tool: &str) -> Option<Declared> {
        const EXAMPLE: &str = "[tools.NAME.params.command]\ntype = \"string\"\nrequired = true";
        let name = format!("[tools.{tool}.params]");
        let table = self.table(value, &name, EXAMPLE)?;
        let mut entries: Vec<_> = table.iter().collect();
        entries.sort_by_key(|(key, _)| key.span().start);
        let mut params: Vec<(Param, Span)> = Vec::new();
        let mut refused = Vec::new();
        for (key, value) in entries {
            match self.param(key, value, tool) {
                Some(param) => params.push((param, value.span())),
                None => refused.push(key.get_ref().to_string()),
            }
        }
        let stdin: Vec<&(Param, Span)> = params.iter().filter(|(p, _)| p.stdin).collect();
        if let [_, second, ..] = stdin.as_slice() {
            let names: Vec<&str> = stdin.iter().map(|(p, _)| p.name.as_str()).collect();
            self.error(
                second.1.clone(),
                format!(
                    "tool `{tool}` has more than one stdin parameter ({}); a command has one standard input",
                    names.join(", ")
                ),
                None,
            );
        }
        Some((params, refused))
    }

    fn param(
        &mut self,
        key: &Spanned<std::borrow::Cow<'_, str>>,
        value: &Value<'_>,
        tool: &str,
    ) -> Option<Param> {
        let param_name = key.get_ref().to_string();
        let header = format!("[tools.{tool}.params.{param_name}]");
        let example = "type = \"string\"";
        let mut ok = true;
        if !params::is_param_name(&param_name) {
            let help = if param_name == params::ARGS_PROPERTY {
                "`args` is the name of the appended arguments (args = \"append\")"
            } else {
                "a parameter name is letters, digits and `_`, not starting with a digit (at most 64)"
            };
            self.error(
                key.span(),
                format!("invalid parameter name {param_name:?} in [tools.{tool}.params]"),
                Some(help.into()),
            );
            ok = false;
        }
        let table = self.table(value, &header, example)?;
        self.known_keys(table, &header, PARAM_KEYS);
        let what = |k: &str| format!("`{k}` in {header}");
        let valid_types: Vec<&str> = ParamType::ALL.iter().map(|t| t.as_str()).collect();
        let kind = match get(table, "type") {
            None => {
                self.error(
                    value.span(),
                    format!("{header} has no `type`"),
                    Some(format!("valid types: {}", valid_types.join(", "))),
                );
                None
            }
            Some(v) => match self.string(v, &what("type"), example) {
                None => None,
                Some(t) => match ParamType::ALL.iter().find(|k| k.as_str() == t) {
                    Some(kind) => Some(*kind),
                    None => {
                        self.error(
                            v.span(),
                            format!(
                                "invalid {} {t:?}; valid types: {} (an array is of strings)",
                                what("type"),
                                valid_types.join(", ")
                            ),
                            suggest(&t, &valid_types),
                        );
                        None
                    }
                },
            },
        };
        let description = get(table, "description")
            .and_then(|v| self.string(v, &what("description"), "description = \"the pattern\""));
        let flag = |p: &mut Self, key: &str| match get(table, key) {
            None => Some(false),
            Some(v) => match v.get_ref() {
                DeValue::Boolean(b) => Some(*b),
                _ => {
                    p.wrong_type(v, &what(key), "a boolean", &format!("{key} = true"));
                    None
                }
            },
        };
        let required = flag(self, "required");
        let stdin_flag = flag(self, "stdin");
        // Only strings have these; what they constrain, a string's.
        let string_only = |p: &mut Self, key: &str| {
            let v = get(table, key)?;
            if kind.is_some_and(|k| k != ParamType::String) {
                p.error(
                    v.span(),
                    format!(
                        "{} applies to strings only, and `{param_name}` is {} {}",
                        what(key),
                        article(kind.map_or("", |k| k.as_str())),
                        kind.map_or("", |k| k.as_str())
                    ),
                    None,
                );
                return Some(Err(()));
            }
            Some(Ok(v))
        };
        let pattern = match string_only(self, "pattern") {
            None => Some(None),
            Some(Err(())) => None,
            Some(Ok(v)) => match self.plain_string(v, &what("pattern"), "pattern = \"^[a-z]+$\"") {
                None => None,
                Some(p) => match params::compile_pattern(&p) {
                    Ok(_) => Some(Some(p)),
                    Err(why) => {
                        let last = why.lines().last().unwrap_or_default().trim();
                        let first = last.strip_prefix("error: ").unwrap_or(last).to_string();
                        self.error(
                            v.span(),
                            format!("{} does not compile: {first}", what("pattern")),
                            Some("a pattern is a regular expression, matched anywhere unless anchored with ^ and $".into()),
                        );
                        None
                    }
                },
            },
        };
        let choices = match string_only(self, "enum") {
            None => Some(None),
            Some(Err(())) => None,
            Some(Ok(v)) => match self.strings(v, &what("enum"), "enum = [\"fast\", \"slow\"]") {
                None => None,
                Some(values) if values.is_empty() => {
                    self.error(v.span(), format!("{} is empty", what("enum")), None);
                    None
                }
                Some(values) => {
                    let mut out: Vec<String> = Vec::new();
                    let mut fine = true;
                    for (choice, span) in values {
                        if out.contains(&choice) {
                            self.error(
                                span,
                                format!("duplicate value {choice:?} in {}", what("enum")),
                                None,
                            );
                            fine = false;
                        } else {
                            out.push(choice);
                        }
                    }
                    fine.then_some(Some(out))
                }
            },
        };
        let max_length = match string_only(self, "max_length") {
            None => Some(None),
            Some(Err(())) => None,
            Some(Ok(v)) => {
                let parsed = match v.get_ref() {
                    DeValue::Integer(i) => u32::from_str_radix(i.as_str(), i.radix()).ok(),
                    _ => {
                        self.wrong_type(
                            v,
                            &what("max_length"),
                            "a whole number",
                            "max_length = 4096",
                        );
                        return None;
                    }
                };
                match parsed {
                    Some(n) => Some(Some(n as usize)),
                    None => {
                        self.error(
                            v.span(),
                            format!(
                                "{} must be a whole number from 0 to {}",
                                what("max_length"),
                                u32::MAX
                            ),
                            None,
                        );
                        None
                    }
                }
            }
        };
        let stdin = match stdin_flag {
            Some(false) if param_name == "stdin" && get(table, "stdin").is_some() => {
                self.error(
                    get(table, "stdin").map_or(0..0, |v| v.span()),
                    format!("a parameter named `stdin` always feeds standard input ({header})"),
                    Some("give the parameter another name to pass it as an argument".into()),
                );
                None
            }
            Some(flag) => Some(flag || param_name == "stdin"),
            None => None,
        };
        if stdin == Some(true) && kind.is_some_and(|k| k != ParamType::String) {
            self.error(
                get(table, "type").map_or(value.span(), |v| v.span()),
                format!("{header} feeds standard input, so its type must be \"string\""),
                None,
            );
            ok = false;
        }
        let param = Param {
            name: param_name,
            kind: kind?,
            description,
            required: required?,
            pattern: pattern?,
            choices: choices?,
            max_length: max_length?,
            stdin: stdin?,
        };
        ok.then_some(param)
    }

    /// Checks every brace in `command` against `params`: each placeholder names a declared
    /// parameter that does not feed stdin, the program is fixed, and every argument
    /// parameter is used. Returns the parameters.
    fn placeholders(
        &mut self,
        table: &DeTable<'_>,
        params: Vec<(Param, Span)>,
        refused: &[String],
        header: &str,
    ) -> Option<Vec<Param>> {
        let items = match get(table, "command").map(|v| v.get_ref()) {
            Some(DeValue::Array(items)) => items,
            _ => return None,
        };
        let mut ok = true;
        let mut used: Vec<&str> = Vec::new();
        let names: Vec<&str> = params.iter().map(|(p, _)| p.name.as_str()).collect();
        for (i, item) in items.iter().enumerate() {
            let DeValue::String(element) = item.get_ref() else {
                return None;
            };
            let name = match params::piece(element) {
                Ok(Piece::Literal(_)) => continue,
                Ok(Piece::Param(name)) => name,
                Err(why) => {
                    // One error for `--x={p}`, not a second one for `p` unused.
                    used.extend(
                        params
                            .iter()
                            .map(|(p, _)| p.name.as_str())
                            .filter(|name| element.contains(&format!("{{{name}}}"))),
                    );
                    self.error(
                        item.span(),
                        format!("`command` in {header}: {why}"),
                        Some("a placeholder is a whole argument, e.g. [\"grep\", \"--\", \"{pattern}\"]; write {{ and }} for literal braces".into()),
                    );
                    ok = false;
                    continue;
                }
            };
            let declared = params.iter().find(|(p, _)| p.name == name);
            let problem = match declared {
                None if refused.iter().any(|r| r == name) => None,
                _ if i == 0 => Some((
                    format!("the program in `command` of {header} is a placeholder, `{{{name}}}`"),
                    "the policy names the program a tool runs; parameters fill its arguments".to_string(),
                )),
                None => Some((
                    format!("unknown placeholder `{{{name}}}` in `command` of {header}"),
                    suggest(name, &names).unwrap_or_else(|| {
                        let table = header.trim_start_matches('[').trim_end_matches(']');
                        format!("declare it: [{table}.params.{name}] with type = \"string\"")
                    }),
                )),
                Some((p, _)) if p.stdin => Some((
                    format!("parameter `{name}` feeds standard input, so `{{{name}}}` cannot be an argument in {header}"),
                    "a stdin parameter is not a placeholder".to_string(),
                )),
                Some(_) if used.contains(&name) => Some((
                    format!("placeholder `{{{name}}}` is used twice in `command` of {header}"),
                    "use each parameter once".to_string(),
                )),
                Some(_) => None,
            };
            if let Some((message, help)) = problem {
                self.error(item.span(), message, Some(help));
                ok = false;
            } else {
                used.push(name);
            }
        }
        for (param, span) in &params {
            if !param.stdin && !used.contains(&param.name.as_str()) {
                self.error(
                    span.clone(),
                    format!(
                        "parameter `{}` of {header} is declared but not used in `command`",
                        param.name
                    ),
                    Some(format!(
                        "add \"{{{}}}\" as an argument of `command`, or remove the parameter",
                        param.name
                    )),
                );
                ok = false;
            }
        }
        ok.then(|| params.into_iter().map(|(p, _)| p).collect())
    }

    fn absolute(&mut self, value: &Value<'_>, what: &str, example: &str) -> Option<PathBuf> {
        let text = self.string(value, what, example)?;
        match clean_absolute(&text) {
            Ok(path) => Some(path),
            Err(why) => {
                self.error(
                    value.span(),
                    format!("{what} {why}"),
                    Some(format!("for example: {example}")),
                );
                None
            }
        }
    }

    /// A host path: absolute, or starting with `${policy_dir}` (substituted here) or, where
    /// `workspace` is allowed, `${workspace}` (substituted per invocation).
    fn host_path(&mut self, value: &Value<'_>, what: &str, workspace: bool) -> Option<HostPath> {
        let example = if workspace {
            "host = \"${workspace}\""
        } else {
            "rootfs = \"${policy_dir}/rootfs\""
        };
        let text = self.string(value, what, example)?;
        let valid = if workspace {
            "${workspace} and ${policy_dir}"
        } else {
            "${policy_dir}"
        };
        let result = if let Some(rest) = text.strip_prefix("${workspace}").filter(|_| workspace) {
            if !(rest.is_empty() || rest.starts_with('/')) {
                Err("must continue with `/` after ${workspace}".to_string())
            } else if rest.contains("${") {
                Err(format!(
                    "uses a variable after the start (only {valid}, at the start)"
                ))
            } else {
                clean_relative(rest).map(HostPath::Workspace)
            }
        } else if let Some(rest) = text.strip_prefix("${policy_dir}") {
            if !(rest.is_empty() || rest.starts_with('/')) {
                Err("must continue with `/` after ${policy_dir}".to_string())
            } else if rest.contains("${") {
                Err(format!(
                    "uses a variable after the start (only {valid}, at the start)"
                ))
            } else {
                let joined = format!("{}{rest}", self.policy_dir.display());
                clean_absolute(&joined)
                    .map(HostPath::Absolute)
                    .map_err(|why| format!("{why} after ${{policy_dir}} became {joined:?}"))
            }
        } else if let Some(start) = text.find("${") {
            let var: String = text[start..].chars().take_while(|c| *c != '}').collect();
            Err(format!(
                "uses unknown variable `{var}}}`; valid variables: {valid}"
            ))
        } else {
            clean_absolute(&text).map(HostPath::Absolute)
        };
        match result {
            Ok(path) => Some(path),
            Err(why) => {
                self.error(
                    value.span(),
                    format!("{what} {why}"),
                    Some(format!("for example: {example}")),
                );
                None
            }
        }
    }

    fn rootfs(&mut self, value: &Value<'_>, what: &str) -> Option<PathBuf> {
        match self.host_path(value, what, false)? {
            HostPath::Absolute(path) => Some(path),
            // Unreachable: `${workspace}` is not accepted here.
            HostPath::Workspace(_) => None,
        }
    }

    fn image(&mut self, value: &Value<'_>, what: &str) -> Option<String> {
        let image = self.plain_string(value, what, "image = \"debian@sha256:<64 hex digits>\"")?;
        if image.is_empty() || image.chars().any(char::is_whitespace) {
            self.error(
                value.span(),
                format!("{what} is not an image reference: {image:?}"),
                None,
            );
            return None;
        }
        if let Some(digest) = digest_is_malformed(&image) {
            self.error(
                value.span(),
                format!("{what} has a malformed digest {digest:?}"),
                Some("a digest is `sha256:` followed by 64 lowercase hex digits".into()),
            );
            return None;
        }
        Some(image)
    }

    fn user(&mut self, value: &Value<'_>, what: &str) -> Option<User> {
        let example = format!("user = \"{SANDBOX_UID}:{SANDBOX_UID}\"");
        let text = self.string(value, what, &example)?;
        let (uid, gid) = text.split_once(':').unwrap_or((&text, &text));
        match (uid.parse::<u32>(), gid.parse::<u32>()) {
            (Ok(uid), Ok(gid)) => Some(User { uid, gid }),
            _ => {
                self.error(
                    value.span(),
                    format!("{what} must be numeric \"UID:GID\", not {text:?}"),
                    Some(format!("for example: {example}")),
                );
                None
            }
        }
    }

    fn env(
        &mut self,
        value: &Value<'_>,
        header: &str,
        spots: &mut Spots,
    ) -> Option<Vec<(String, String)>> {
        let what = format!("`env` in {header}");
        let table = self.table(value, &what, "env = { LANG = \"C.UTF-8\" }")?;
        let mut env = Vec::new();
        let mut ok = true;
        for (key, value) in table.iter() {
            let name = key.get_ref().to_string();
            if !is_env_name(&name) {
                self.error(
                    key.span(),
                    format!("invalid environment variable name {name:?} in {what}"),
                    Some("names are letters, digits and `_`, not starting with a digit".into()),
                );
                ok = false;
                continue;
            }
            self.spot(spots, format!("env.{name}"), &key.span());
            match self.plain_string(
                value,
                &format!("`env.{name}` in {header}"),
                "LANG = \"C.UTF-8\"",
            ) {
                Some(v) => env.push((name, v)),
                None => ok = false,
            }
        }
        ok.then_some(env)
    }

    fn network(&mut self, value: &Value<'_>, tool: &str, spots: &mut Spots) -> Option<ToolNetwork> {
        const EXAMPLE: &str = "network = { allow = [\"api.github.com:443\"] }";
        let what = format!("`network` in [tools.{tool}]");
        self.spot(spots, "network", &value.span());
        let table = match value.get_ref() {
            DeValue::String(s) => {
                return match s.as_ref() {
                    "none" => Some(ToolNetwork::None),
                    "host" => Some(ToolNetwork::Host),
                    other => {
                        self.error(
                            value.span(),
                            format!("invalid {what} {other:?}; valid values: \"none\" or a table {{ allow = [\"HOST:PORT\", ...] }}"),
                            Some(format!("for example: {EXAMPLE}")),
                        );
                        None
                    }
                };
            }
            DeValue::Table(table) => table,
            _ => {
                self.wrong_type(value, &what, "\"none\" or a table", EXAMPLE);
                return None;
            }
        };
        let name = format!("[tools.{tool}.network]");
        self.known_keys(table, &name, NETWORK_KEYS);
        let Some(allow) = get(table, "allow") else {
            self.error(
                value.span(),
                format!("{name} has no `allow` list"),
                Some(format!("for example: {EXAMPLE}")),
            );
            return None;
        };
        let entries = self.strings(allow, &format!("`allow` in {name}"), EXAMPLE)?;
        if entries.is_empty() {
            self.error(
                allow.span(),
                format!("`allow` in {name} is empty"),
                Some("write network = \"none\" for no network".into()),
            );
            return None;
        }
        let mut rules: Vec<nanoclaw_spec::EgressRule> = Vec::new();
        let mut ok = true;
        for (i, (entry, span)) in entries.into_iter().enumerate() {
            match egress::parse_rule(&entry) {
                Ok(rule) if rules.contains(&rule) => {
                    self.error(
                        span,
                        format!("duplicate egress destination {entry:?} in {name}"),
                        None,
                    );
                    ok = false;
                }
                Ok(rule) => {
                    self.spot(spots, format!("network.allow.{i}"), &span);
                    rules.push(rule);
                }
                Err(why) => {
                    self.error(
                        span,
                        format!("invalid egress destination {entry:?} in {name}: {why}"),
                        Some("write HOST:PORT: a host name, `*.` and a domain (subdomains only), an IPv4 address or [IPv6], then a port".into()),
                    );
                    ok = false;
                }
            }
        }
        ok.then_some(ToolNetwork::Allow(rules))
    }

    fn secrets(
        &mut self,
        value: &Value<'_>,
        tool: &str,
        env: &Option<Vec<(String, String)>>,
        spots: &mut Spots,
    ) -> Option<Vec<Secret>> {
        const EXAMPLE: &str = "secrets = [{ name = \"GITHUB_TOKEN\", ttl = \"5m\" }]";
        let what = format!("`secrets` in [tools.{tool}]");
        let items = self.array(value, &what, EXAMPLE)?;
        let mut secrets: Vec<Secret> = Vec::new();
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            let name_of_table = format!("[tools.{tool}].secrets[{i}]");
            let Some(table) = self.table(item, &format!("each entry of {what}"), EXAMPLE) else {
                ok = false;
                continue;
            };
            self.known_keys(table, &name_of_table, SECRET_KEYS);
            let name = match get(table, "name") {
                None => {
                    self.error(
                        item.span(),
                        format!("{name_of_table} has no `name`"),
                        Some(format!("for example: {EXAMPLE}")),
                    );
                    None
                }
                Some(v) => {
                    let name = self.string(v, &format!("`name` in {name_of_table}"), EXAMPLE);
                    match name {
                        Some(n) if !is_env_name(&n) => {
                            self.error(
                                v.span(),
                                format!("invalid secret name {n:?} in {name_of_table}"),
                                Some(
                                    "names are letters, digits and `_`, not starting with a digit"
                                        .into(),
                                ),
                            );
                            None
                        }
                        Some(n) if secrets.iter().any(|s| s.name == n) => {
                            self.error(v.span(), format!("duplicate secret {n:?} in {what}"), None);
                            None
                        }
                        Some(n) if env.iter().flatten().any(|(k, _)| *k == n) => {
                            self.error(
                                v.span(),
                                format!(
                                    "secret {n:?} of tool `{tool}` is also a fixed `env` value"
                                ),
                                Some("a name is either a secret or a fixed value".into()),
                            );
                            None
                        }
                        other => other,
                    }
                }
            };
            let ttl = match get(table, "ttl") {
                None => Some(None),
                Some(v) => self
                    .duration(v, &format!("`ttl` in {name_of_table}"))
                    .map(Some),
            };
            match (name, ttl) {
                (Some(name), Some(ttl)) => {
                    self.spot(spots, format!("secrets.{i}"), &item.span());
                    secrets.push(Secret { name, ttl });
                }
                _ => ok = false,
            }
        }
        ok.then_some(secrets)
    }

    fn syscalls(&mut self, value: &Value<'_>, tool: &str, spots: &mut Spots) -> Option<Syscalls> {
        const EXAMPLE: &str = "syscalls = { profile = \"default\", allow = [\"ptrace\"] }";
        let name = format!("[tools.{tool}.syscalls]");
        let table = self.table(value, &format!("`syscalls` in [tools.{tool}]"), EXAMPLE)?;
        self.known_keys(table, &name, SYSCALL_KEYS);
        let mut syscalls = Syscalls::default();
        let mut ok = true;
        if let Some(v) = get(table, "profile") {
            match self.string(v, &format!("`profile` in {name}"), EXAMPLE) {
                Some(p) if PROFILES.contains(&p.as_str()) => syscalls.profile = p,
                Some(p) => {
                    self.error(
                        v.span(),
                        format!(
                            "unknown syscall profile {p:?} in {name}; valid profiles: {}",
                            PROFILES.join(", ")
                        ),
                        None,
                    );
                    ok = false;
                }
                None => ok = false,
            }
        }
        if let Some(v) = get(table, "allow") {
            self.spot(spots, "syscalls.allow", &v.span());
            match self.strings(v, &format!("`allow` in {name}"), EXAMPLE) {
                Some(names) => {
                    for (syscall, span) in names {
                        let valid = !syscall.is_empty()
                            && syscall
                                .bytes()
                                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
                        if !valid {
                            self.error(
                                span,
                                format!("invalid syscall name {syscall:?} in {name}"),
                                Some("syscall names are lowercase, e.g. \"ptrace\"".into()),
                            );
                            ok = false;
                        } else if syscalls.extra_allow.contains(&syscall) {
                            self.error(
                                span,
                                format!("duplicate syscall {syscall:?} in {name}"),
                                None,
                            );
                            ok = false;
                        } else {
                            syscalls.extra_allow.push(syscall);
                        }
                    }
                }
                None => ok = false,
            }
        }
        ok.then_some(syscalls)
    }

    fn capabilities(&mut self, value: &Value<'_>, what: &str) -> Option<Vec<String>> {
        let names = self.strings(value, what, "capabilities = []")?;
        let mut out = Vec::new();
        let mut ok = true;
        for (name, span) in names {
            let upper = name.to_ascii_uppercase();
            let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
            if bare.is_empty() || !bare.bytes().all(|b| b.is_ascii_uppercase() || b == b'_') {
                self.error(
                    span,
                    format!("invalid capability name {name:?} in {what}"),
                    Some("for example: \"CAP_NET_RAW\"".into()),
                );
                ok = false;
            } else {
                out.push(format!("CAP_{bare}"));
            }
        }
        ok.then_some(out)
    }

    fn mounts(
        &mut self,
        value: &Value<'_>,
        tool: &str,
        spots: &mut Spots,
    ) -> Option<Vec<MountDecl>> {
        const EXAMPLE: &str = "[[tools.NAME.mounts]]\nhost = \"${workspace}\"\npath = \"/work\"";
        let what = format!("`mounts` in [tools.{tool}]");
        let items = self.array(value, &what, EXAMPLE)?;
        let mut mounts: Vec<MountDecl> = Vec::new();
        let mut targets: BTreeMap<PathBuf, crate::diagnostic::Location> = BTreeMap::new();
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            let name = format!("[[tools.{tool}.mounts]] #{}", i + 1);
            let Some(table) = self.table(item, &format!("each entry of {what}"), EXAMPLE) else {
                ok = false;
                continue;
            };
            self.known_keys(table, &name, MOUNT_KEYS);
            let host = match get(table, "host") {
                Some(v) => self.host_path(v, &format!("`host` in {name}"), true),
                None => {
                    self.error(
                        item.span(),
                        format!("{name} has no `host`"),
                        Some(format!("for example: {EXAMPLE}")),
                    );
                    None
                }
            };
            let path = match get(table, "path") {
                Some(v) => self.target(v, &format!("`path` in {name}"), &mut targets),
                None => {
                    self.error(
                        item.span(),
                        format!("{name} has no `path`"),
                        Some(format!("for example: {EXAMPLE}")),
                    );
                    None
                }
            };
            let writable = match get(table, "mode") {
                None => Some(false),
                Some(v) => {
                    match self
                        .string(v, &format!("`mode` in {name}"), "mode = \"ro\"")
                        .as_deref()
                    {
                        Some("ro") => Some(false),
                        Some("rw") => Some(true),
                        Some(other) => {
                            self.error(v.span(), format!("invalid `mode` {other:?} in {name}; valid modes: \"ro\", \"rw\""), None);
                            None
                        }
                        None => None,
                    }
                }
            };
            let credentials_visible = self.credentials(get(table, "credentials"), &name);
            match (host, path, writable, credentials_visible) {
                (Some(host), Some(path), Some(writable), Some(credentials_visible)) => {
                    self.spot(spots, format!("mounts.{i}"), &item.span());
                    mounts.push(MountDecl {
                        host,
                        path,
                        writable,
                        credentials_visible,
                    });
                }
                _ => ok = false,
            }
        }
        ok.then_some(mounts)
    }

    /// A mount's `credentials`: "hidden" (the default) or "visible"; whether visible.
    fn credentials(&mut self, value: Option<&Value<'_>>, name: &str) -> Option<bool> {
        let Some(value) = value else {
            return Some(false);
        };
        let what = format!("`credentials` in {name}");
        match self
            .string(value, &what, "credentials = \"hidden\"")
            .as_deref()
        {
            Some("hidden") => Some(false),
            Some("visible") => Some(true),
            Some(other) => {
                self.error(
                    value.span(),
                    format!(
                        "invalid {what}: {other:?}; valid: \"hidden\" (the default), \"visible\""
                    ),
                    None,
                );
                None
            }
            None => None,
        }
    }

    /// A mount target: absolute, not reserved, not already used by this tool.
    fn target(
        &mut self,
        value: &Value<'_>,
        what: &str,
        seen: &mut BTreeMap<PathBuf, crate::diagnostic::Location>,
    ) -> Option<PathBuf> {
        let path = self.absolute(value, what, "path = \"/work\"")?;
        if path == Path::new("/") {
            self.error(
                value.span(),
                format!("{what} is `/`, the sandbox's own root"),
                Some("mount somewhere below it, e.g. \"/work\"".into()),
            );
            return None;
        }
        if let Some(reserved) = RESERVED_TARGETS.iter().find(|r| path.starts_with(r)) {
            self.error(
                value.span(),
                format!(
                    "{what} {} is inside {reserved}, which the sandbox provides itself",
                    path.display()
                ),
                Some(format!("reserved: {}", RESERVED_TARGETS.join(", "))),
            );
            return None;
        }
        let here = self.source.locate(value.span().start);
        if let Some(first) = seen.get(&path) {
            self.error(
                value.span(),
                format!("duplicate mount target {} in {what}", path.display()),
                Some(format!(
                    "{} is already mounted at line {}:{}",
                    path.display(),
                    first.line,
                    first.column
                )),
            );
            return None;
        }
        seen.insert(path.clone(), here);
        Some(path)
    }

    fn acknowledgement(
        &mut self,
        value: &Value<'_>,
        tool: &str,
        spots: &mut Spots,
    ) -> Option<Acknowledgement> {
        const EXAMPLE: &str =
            "[tools.NAME.unsafe]\nreason = \"why this is acceptable\"\nallow = [\"root-user\"]";
        let name = format!("[tools.{tool}.unsafe]");
        let table = self.table(value, &name, EXAMPLE)?;
        self.known_keys(table, &name, UNSAFE_KEYS);
        let reason = match get(table, "reason") {
            None => {
                self.error(
                    value.span(),
                    format!("{name} has no `reason`"),
                    Some("say in writing why the risk is acceptable".into()),
                );
                None
            }
            Some(v) => match self.string(v, &format!("`reason` in {name}"), EXAMPLE) {
                Some(r) if r.trim().is_empty() => {
                    self.error(
                        v.span(),
                        format!("`reason` in {name} is empty"),
                        Some("say in writing why the risk is acceptable".into()),
                    );
                    None
                }
                other => other,
            },
        };
        let valid: Vec<&str> = Rule::ACKNOWLEDGEABLE.iter().map(|r| r.id()).collect();
        let allow = match get(table, "allow") {
            None => {
                self.error(
                    value.span(),
                    format!("{name} has no `allow` list"),
                    Some(format!(
                        "name the rules it acknowledges: {}",
                        valid.join(", ")
                    )),
                );
                None
            }
            Some(v) => {
                let ids = self.strings(v, &format!("`allow` in {name}"), EXAMPLE);
                let mut rules = Vec::new();
                let mut ok = ids.is_some();
                for (i, (id, span)) in ids.into_iter().flatten().enumerate() {
                    match Rule::ACKNOWLEDGEABLE.iter().find(|r| r.id() == id) {
                        Some(rule) if rules.contains(rule) => {
                            self.error(
                                span,
                                format!("duplicate rule `{id}` in `allow` of {name}"),
                                None,
                            );
                            ok = false;
                        }
                        Some(rule) => {
                            rules.push(*rule);
                            self.spot(spots, format!("unsafe.allow.{i}"), &span);
                        }
                        None => {
                            self.error(
                                span,
                                format!("`{id}` in `allow` of {name} is not a rule that can be acknowledged; valid: {}", valid.join(", ")),
                                suggest(&id, &valid),
                            );
                            ok = false;
                        }
                    }
                }
                if ok && rules.is_empty() {
                    self.error(
                        v.span(),
                        format!("`allow` in {name} is empty"),
                        Some(format!(
                            "name the rules it acknowledges: {}",
                            valid.join(", ")
                        )),
                    );
                    ok = false;
                }
                ok.then_some(rules)
            }
        };
        Some(Acknowledgement {
            reason: reason?,
            allow: allow?,
        })
    }

    /// A tool must be runnable on its backend: native takes a rootfs (or the host's
    /// /usr), Docker takes an image.
    fn root_matches_backend(&mut self, tool: &Tool, table: &DeTable<'_>) {
        let span = |key: &str| get(table, key).map_or(0..0, |v| v.span());
        match tool.backend {
            BackendKind::Native if tool.image.is_some() && tool.rootfs.is_none() => self.error(
                span("image"),
                format!("tool `{}` names an image but runs on the native backend, which cannot run images", tool.name),
                Some("add rootfs = \"/path/to/unpacked/image\", or set backend = \"docker\"".into()),
            ),
            BackendKind::Docker if tool.image.is_none() => {
                let at = get(table, "backend").or_else(|| get(table, "command"));
                self.error(
                    at.map_or(0..0, |v| v.span()),
                    format!("tool `{}` runs on the docker backend but names no image", tool.name),
                    Some("add image = \"NAME@sha256:<digest>\"".into()),
                );
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions_are_close_words_only() {
        assert_eq!(
            suggest("memroy", LIMIT_KEYS).as_deref(),
            Some("did you mean `memory`?")
        );
        assert_eq!(suggest("zzzzzz", LIMIT_KEYS), None);
    }

    #[test]
    fn paths_are_normalised_or_refused() {
        assert_eq!(clean_absolute("/a//b/./c/"), Ok(PathBuf::from("/a/b/c")));
        assert!(clean_absolute("a/b").is_err());
        assert!(clean_absolute("/a/../b").is_err());
        assert!(clean_absolute("/a\0").is_err());
        assert_eq!(clean_relative("/src/"), Ok(PathBuf::from("src")));
        assert!(clean_relative("/../x").is_err());
    }

    #[test]
    fn digests() {
        let hex = "a".repeat(64);
        assert_eq!(digest_is_malformed(&format!("debian@sha256:{hex}")), None);
        assert_eq!(digest_is_malformed(&format!("sha256:{hex}")), None);
        assert_eq!(digest_is_malformed("debian:12"), None);
        assert!(digest_is_malformed("debian@sha256:abc").is_some());
        assert!(digest_is_malformed(&format!("debian@sha256:{}", "A".repeat(64))).is_some());
    }
}
