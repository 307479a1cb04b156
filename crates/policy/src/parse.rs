//! Reads policy TOML into a [`Policy`], refusing anything it does not understand.
//!
//! Two steps. serde derives the file's shape (the `Raw*` types: every value `Spanned`,
//! unknown keys denied); `[defaults]`, `[ceilings]` and each tool are deserialized on their
//! own, so a file reports a shape error per table rather than stopping at the first. Then
//! one semantic pass over the spanned values collects every other error (paths, units,
//! digests, duplicates, variables, parameters) with its location. Nothing is ignored.
//!
//! This module must never judge safety (that is the lint's job) and never panic, whatever
//! the input: the parser is fuzzed.

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;
use std::ops::Range;
use std::path::{Component, Path, PathBuf};

use nanoclaw_spec::{
    is_env_name, parse_bytes, parse_cpus, parse_duration, Delivery, EgressRule, SecretSource,
    Syscalls, UnitError, User,
};
use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use toml::de::{DeTable, DeValue, ValueDeserializer};
use toml::Spanned;

use crate::diagnostic::{Diagnostic, Diagnostics, Location, Source};
use crate::egress;
use crate::lint::Rule;
use crate::params::{self, Param, ParamType, Piece};
use crate::policy::{
    Acknowledgement, BackendKind, Defaults, ExtraArgs, HostPath, MountDecl, Policy, ResourceSpots,
    Resources, Secret, SecretSpots, Spots, Tool, ToolNetwork,
};

type S<T> = Spanned<T>;
type Span = Range<usize>;
type Strings = S<Vec<S<String>>>;

/// More than this many errors are not worth reading; the rest would be noise.
const MAX_ERRORS: usize = 50;
/// Syscall profiles a backend knows.
const PROFILES: &[&str] = &["default"];
/// Paths inside the sandbox that the sandbox itself provides; a mount may not cover them.
const RESERVED_TARGETS: &[&str] = &["/proc", "/dev", "/sys", "/tmp"];
const NO_BACKEND: &str = "no backend enforces it, so the policy may not ask for it";
/// Keys of a tool that left the format because no backend enforces them (until one does),
/// with what to do instead.
const UNSUPPORTED: &[(&str, &str)] = &[
    (
        "capabilities",
        "remove it: a sandboxed tool holds no capabilities",
    ),
    (
        "syscalls.allow",
        "remove it: the `default` profile is the syscall filter every tool gets",
    ),
];
/// How a value is written, for shape errors about it.
const EXAMPLES: &[(&str, &str)] = &[
    ("command", "command = [\"grep\", \"-rn\"]"),
    ("limits", "[tools.NAME.limits] with memory = \"256m\""),
    (
        "mounts",
        "[[tools.NAME.mounts]] with host = \"${workspace}\" and path = \"/work\"",
    ),
    ("env", "env = { LANG = \"C.UTF-8\" }"),
    ("network", "network = { allow = [\"api.github.com:443\"] }"),
    (
        "secrets",
        "secrets = [{ name = \"TOKEN\", ttl = \"5m\", from = \"env:TOKEN\" }]",
    ),
    ("timeout", "timeout = \"30s\""),
    ("pids", "pids = 256"),
    ("required", "required = true"),
];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDefaults {
    backend: Option<S<BackendKind>>,
    timeout: Option<S<String>>,
    secret_ttl_max: Option<S<String>>,
    limits: Option<RawLimits>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    memory: Option<S<String>>,
    cpus: Option<S<Cpus>>,
    pids: Option<S<i64>>,
    output: Option<S<String>>,
    tmpfs: Option<S<String>>,
    writes: Option<S<String>>,
    write_files: Option<S<i64>>,
}

/// The limits, and `timeout`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCeilings {
    memory: Option<S<String>>,
    cpus: Option<S<Cpus>>,
    pids: Option<S<i64>>,
    timeout: Option<S<String>>,
    output: Option<S<String>>,
    tmpfs: Option<S<String>>,
    writes: Option<S<String>>,
    write_files: Option<S<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTool {
    description: Option<S<String>>,
    command: Option<Strings>,
    args: Option<S<ExtraArgs>>,
    workdir: Option<S<String>>,
    env: Option<BTreeMap<S<String>, S<String>>>,
    timeout: Option<S<String>>,
    backend: Option<S<BackendKind>>,
    rootfs: Option<S<String>>,
    image: Option<S<String>>,
    user: Option<S<String>>,
    network: Option<S<StrOr<RawNetwork, true>>>,
    secrets: Option<Vec<S<RawSecret>>>,
    syscalls: Option<S<RawSyscalls>>,
    limits: Option<RawLimits>,
    mounts: Option<Vec<S<RawMount>>>,
    #[serde(rename = "unsafe")]
    acknowledged: Option<S<RawUnsafe>>,
    params: Option<BTreeMap<S<String>, S<RawParam>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNetwork {
    allow: Option<Strings>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSecret {
    name: Option<S<String>>,
    ttl: Option<S<String>>,
    from: Option<S<StrOr<Vec<S<String>>, false>>>,
    deliver: Option<S<Delivery>>,
    hosts: Option<Strings>,
    body: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSyscalls {
    profile: Option<S<String>>,
}

#[derive(Deserialize, PartialEq)]
#[serde(rename_all = "lowercase")]
enum Mode {
    Ro,
    Rw,
}

#[derive(Deserialize, PartialEq)]
#[serde(rename_all = "lowercase")]
enum Credentials {
    Hidden,
    Visible,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMount {
    host: Option<S<String>>,
    path: Option<S<String>>,
    mode: Option<Mode>,
    credentials: Option<Credentials>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUnsafe {
    reason: Option<S<String>>,
    allow: Option<Strings>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawParam {
    #[serde(rename = "type")]
    kind: Option<S<ParamType>>,
    description: Option<String>,
    required: Option<bool>,
    pattern: Option<S<String>>,
    #[serde(rename = "enum")]
    choices: Option<Strings>,
    max_length: Option<S<i64>>,
    stdin: Option<S<bool>>,
}

/// `cpus`: a number, or a string holding one (`0.5`, `"2"`), kept as text for the spec's parser.
struct Cpus(String);

impl<'de> Deserialize<'de> for Cpus {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Text;
        impl Visitor<'_> for Text {
            type Value = Cpus;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a number")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Cpus, E> {
                Ok(Cpus(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Cpus, E> {
                Ok(Cpus(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Cpus, E> {
                Ok(Cpus(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Cpus, E> {
                Ok(Cpus(v.to_string()))
            }
        }
        d.deserialize_any(Text)
    }
}

/// A value written as a string or as `T`: a table when `TABLE`, else an array.
enum StrOr<T, const TABLE: bool> {
    Str(String),
    Other(T),
}

impl<'de, T: Deserialize<'de>, const TABLE: bool> Deserialize<'de> for StrOr<T, TABLE> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Either<T, const TABLE: bool>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>, const TABLE: bool> Visitor<'de> for Either<T, TABLE> {
            type Value = StrOr<T, TABLE>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(if TABLE {
                    "a string or a table"
                } else {
                    "a string or an array"
                })
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(StrOr::Str(v.to_string()))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, a: A) -> Result<Self::Value, A::Error> {
                if TABLE {
                    return Err(de::Error::invalid_type(de::Unexpected::Seq, &self));
                }
                T::deserialize(de::value::SeqAccessDeserializer::new(a)).map(StrOr::Other)
            }
            fn visit_map<A: de::MapAccess<'de>>(self, a: A) -> Result<Self::Value, A::Error> {
                if !TABLE {
                    return Err(de::Error::invalid_type(de::Unexpected::Map, &self));
                }
                T::deserialize(de::value::MapAccessDeserializer::new(a)).map(StrOr::Other)
            }
        }
        d.deserialize_any(Either(PhantomData))
    }
}

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
    let tree = DeValue::Table(root.get_ref().clone());
    let mut parser = Parser {
        source,
        policy_dir,
        tree: &tree,
        errors: Vec::new(),
    };
    let policy = parser.policy(root.into_inner());
    let mut errors = parser.errors;
    if errors.is_empty() {
        return Ok(policy);
    }
    errors.sort_by_key(|d| (d.at.is_none(), d.at));
    errors.truncate(MAX_ERRORS);
    Err(Diagnostics(errors))
}

struct Parser<'s> {
    source: Source<'s>,
    policy_dir: &'s Path,
    /// The whole document, to name the table a shape error is in.
    tree: &'s DeValue<'s>,
    errors: Vec<Diagnostic>,
}

/// One step of the way from the document's root to a value.
enum Step {
    Key(String),
    Index(usize),
}

impl Step {
    fn key(&self) -> Option<&str> {
        match self {
            Step::Key(k) => Some(k),
            Step::Index(_) => None,
        }
    }
}

/// The way to the key or value that starts at byte `at`, parents before children, and
/// the kind of that value.
fn path_to(value: &DeValue<'_>, at: usize, path: &mut Vec<Step>) -> Option<&'static str> {
    let entries: Vec<(Step, Option<Span>, &S<DeValue<'_>>)> = match value {
        DeValue::Table(t) => t
            .iter()
            .map(|(k, v)| (Step::Key(k.get_ref().to_string()), Some(k.span()), v))
            .collect(),
        DeValue::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, v)| (Step::Index(i), None, v))
            .collect(),
        _ => return None,
    };
    for (step, key, v) in entries {
        path.push(step);
        if key.is_some_and(|k| k.start == at) || v.span().start == at {
            return Some(v.get_ref().type_str());
        }
        if let Some(found) = path_to(v.get_ref(), at, path) {
            return Some(found);
        }
        path.pop();
    }
    None
}

/// Removes the key at the end of `path` from `value`; whether there was one.
fn drop_at(value: &mut DeValue<'_>, path: &[Step]) -> bool {
    match (value, path) {
        (DeValue::Table(t), [Step::Key(key)]) => t.remove(key.as_str()).is_some(),
        (DeValue::Table(t), [Step::Key(key), rest @ ..]) => t
            .get_mut(key.as_str())
            .is_some_and(|v| drop_at(v.get_mut(), rest)),
        (DeValue::Array(items), [Step::Index(i), rest @ ..]) => items
            .get_mut(*i)
            .is_some_and(|v| drop_at(v.get_mut(), rest)),
        _ => false,
    }
}

/// `[tools.a.limits]`, `[[tools.a.mounts]] #1`, or the file itself.
fn table_name(path: &[Step]) -> String {
    let dotted: Vec<&str> = path.iter().filter_map(Step::key).collect();
    match path.last() {
        None => "the policy file".into(),
        Some(Step::Index(i)) => format!("[[{}]] #{}", dotted.join("."), i + 1),
        Some(Step::Key(_)) => format!("[{}]", dotted.join(".")),
    }
}

/// "`memory` in [tools.a.limits]", "each entry of `command` in [tools.a]".
fn value_name(path: &[Step]) -> String {
    match path.split_last() {
        None => "the policy file".into(),
        Some((Step::Key(k), parent)) => format!("`{k}` in {}", table_name(parent)),
        Some((Step::Index(_), parent)) => format!("each entry of {}", value_name(parent)),
    }
}

/// serde's name for a kind of value, in the policy's words.
fn kind(serde: &str) -> &str {
    match serde.split([' ', '`']).next().unwrap_or_default() {
        "integer" => "an integer",
        "i64" | "u64" | "u32" => "a whole number",
        "string" => "a string",
        "floating" | "float" => "a float",
        "table" => "a table",
        "array" => "an array",
        "datetime" => "a date",
        "boolean" => "a boolean",
        "sequence" => "an array",
        "map" | "struct" => "a table",
        _ => match serde {
            "a sequence" => "an array",
            "a map" => "a table",
            other => other,
        },
    }
}

fn suggest(word: &str, valid: &[&str]) -> Option<String> {
    valid
        .iter()
        .map(|v| (strsim::levenshtein(word, v), v))
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

/// A path without `..`, normalised (no `.` components or doubled slashes); absolute when
/// `root` is.
fn clean(text: &str, root: &str) -> Result<PathBuf, String> {
    if text.contains('\0') {
        return Err("contains a NUL byte".into());
    }
    let mut clean = PathBuf::from(root);
    for component in Path::new(text).components() {
        match component {
            Component::Normal(part) => clean.push(part),
            Component::ParentDir => return Err("contains `..`".into()),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    Ok(clean)
}

fn clean_absolute(text: &str) -> Result<PathBuf, String> {
    if !text.starts_with('/') {
        return Err("is not an absolute path".into());
    }
    clean(text, "/")
}

impl<'s> Parser<'s> {
    fn error(&mut self, span: Span, message: impl Into<String>, help: Option<String>) {
        let diagnostic = self.source.error(span, message, help);
        self.errors.push(diagnostic);
    }

    /// Records an error at `span` and returns `None`, for `?`-style refusals.
    fn refuse<T>(&mut self, span: Span, message: String, help: Option<&str>) -> Option<T> {
        self.error(span, message, help.map(str::to_string));
        None
    }

    /// Where the value at `span` was written, for findings to point at.
    fn at(&self, span: Span) -> Option<Location> {
        Some(self.source.locate(span.start))
    }

    /// Deserializes one table of the file. A shape error is reported in the file's terms,
    /// the key it is about dropped and the rest tried again, so that one run reports every
    /// error; `dropped` collects those keys.
    fn shape<'de, T: Deserialize<'de>>(
        &mut self,
        mut value: S<DeValue<'de>>,
        dropped: &mut Vec<String>,
    ) -> Option<T> {
        for _ in 0..MAX_ERRORS {
            let e = match T::deserialize(ValueDeserializer::from(value.clone())) {
                Ok(t) => return Some(t),
                Err(e) => e,
            };
            let at = e.span().map_or(0, |s| s.start);
            self.shape_error(&e, at);
            let mut path = Vec::new();
            path_to(value.get_ref(), at, &mut path);
            while matches!(path.last(), Some(Step::Index(_))) {
                path.pop();
            }
            match path.last() {
                Some(Step::Key(key)) => dropped.push(key.clone()),
                _ => return None,
            }
            if !drop_at(value.get_mut(), &path) {
                return None;
            }
        }
        None
    }

    fn shape_error(&mut self, e: &toml::de::Error, at: usize) {
        let mut path = Vec::new();
        let found = path_to(self.tree, at, &mut path).unwrap_or_default();
        let message = e.message();
        let quoted: Vec<&str> = message.split('`').skip(1).step_by(2).collect();
        let (word, valid) = quoted.split_first().unwrap_or((&"", &[]));
        let parent = &path[..path.len().saturating_sub(1)];
        let keys: Vec<&str> = path.iter().skip(2).filter_map(Step::key).collect();
        let unsupported = UNSUPPORTED.iter().find(|(k, _)| {
            path.first().and_then(Step::key) == Some("tools") && *k == keys.join(".")
        });
        let example = path.iter().rev().find_map(Step::key);
        let example = example.and_then(|k| EXAMPLES.iter().find(|(e, _)| *e == k));
        let example = example.map(|(_, e)| format!("for example: {e}"));
        let (text, help) =
            if let Some((_, help)) = unsupported.filter(|_| message.starts_with("unknown field")) {
                let text = format!(
                    "`{word}` in {} is not supported: {NO_BACKEND}",
                    table_name(parent)
                );
                (text, Some(help.to_string()))
            } else if message.starts_with("unknown field") {
                let what = format!("unknown key `{word}` in {}", table_name(parent));
                let text = format!("{what}; valid keys: {}", valid.join(", "));
                (text, suggest(word, valid))
            } else if message.starts_with("unknown variant") {
                let list: Vec<String> = valid.iter().map(|v| format!("{v:?}")).collect();
                let what = format!("invalid {} {word:?}", value_name(&path));
                (
                    format!("{what}; valid values: {}", list.join(", ")),
                    suggest(word, valid),
                )
            } else if let Some((found, expected)) = message
                .strip_prefix("invalid type: ")
                .or_else(|| message.strip_prefix("invalid value: "))
                .and_then(|m| m.split_once(", expected "))
            {
                let (found, expected) = (kind(found), kind(expected));
                let text = format!("{} must be {expected}, not {found}", value_name(&path));
                (text, example)
            } else if message.starts_with("wanted string") {
                // An enumeration (`mode`, `backend`, `type`, ...) written as something else.
                let text = format!(
                    "{} must be a string, not {}",
                    value_name(&path),
                    kind(found)
                );
                (text, example)
            } else {
                (format!("{}: {message}", value_name(&path)), None)
            };
        self.error(e.span().unwrap_or(0..0), text, help);
    }

    fn policy(&mut self, root: DeTable<'_>) -> Policy {
        let mut defaults = Defaults {
            backend: BackendKind::Native,
            resources: Resources::builtin_defaults(),
            secret_ttl_max: crate::policy::SECRET_TTL_MAX,
        };
        let mut default_spots = Spots::default();
        let mut ceilings = Resources::builtin_ceilings();
        let mut spots = ResourceSpots::default();
        let mut raw_tools = None;
        for (key, value) in root {
            match key.get_ref().as_ref() {
                "defaults" => {
                    if let Some(raw) = self.shape::<RawDefaults>(value, &mut Vec::new()) {
                        self.defaults(raw, &mut defaults, &mut default_spots);
                    }
                }
                "ceilings" => {
                    if let Some(raw) = self.shape::<RawCeilings>(value, &mut Vec::new()) {
                        if let Some(v) = &raw.timeout {
                            if let Some(timeout) = self.duration(v, "`timeout` in [ceilings]") {
                                ceilings.timeout = timeout;
                                spots.timeout = self.at(v.span());
                            }
                        }
                        let RawCeilings {
                            memory,
                            cpus,
                            pids,
                            output,
                            tmpfs,
                            writes,
                            write_files,
                            ..
                        } = raw;
                        let limits = RawLimits {
                            memory,
                            cpus,
                            pids,
                            output,
                            tmpfs,
                            writes,
                            write_files,
                        };
                        self.resources(limits, "[ceilings]", &mut ceilings, &mut spots);
                    }
                }
                "tools" => raw_tools = Some(value),
                other => {
                    const VALID: &[&str] = &["defaults", "ceilings", "tools"];
                    let message = format!(
                        "unknown key `{other}` in the policy file; valid keys: {}",
                        VALID.join(", ")
                    );
                    self.error(key.span(), message, suggest(other, VALID));
                }
            }
        }
        let mut tools = Vec::new();
        let help = "add a [tools.NAME] table with at least `command = [...]`";
        match raw_tools.map(|v| (v.span(), v.into_inner())) {
            None => self.errors.push(Diagnostic::whole_file(
                self.source.file(),
                "the policy names no tools",
                Some(help.into()),
            )),
            Some((span, DeValue::Table(table))) if table.is_empty() => {
                self.refuse::<()>(span, "the policy names no tools".into(), Some(help));
            }
            Some((_, DeValue::Table(table))) => {
                for (name, value) in table {
                    let at = self.source.locate(value.span().start);
                    let (before, mut dropped) = (self.errors.len(), Vec::new());
                    let Some(raw) = self.shape::<S<RawTool>>(value, &mut dropped) else {
                        continue;
                    };
                    let tool = self.tool(&name, raw, at, &defaults, &default_spots);
                    // A key dropped for its shape is not reported missing as well.
                    let found = self.errors.split_off(before);
                    self.errors.extend(found.into_iter().filter(|d| {
                        !dropped
                            .iter()
                            .any(|k| d.message.contains(&format!(" has no `{k}`")))
                    }));
                    tools.extend(tool.filter(|_| self.errors.len() == before));
                }
            }
            Some((span, value)) => {
                let message = format!("[tools] must be a table, not {}", kind(value.type_str()));
                self.refuse::<()>(span, message, Some("for example: [tools.NAME]"));
            }
        }
        tools.sort_by_key(|t| t.at);
        Policy {
            path: self.source.file().to_path_buf(),
            policy_dir: self.policy_dir.to_path_buf(),
            defaults,
            ceilings,
            tools,
            ceiling_spots: spots,
        }
    }

    fn defaults(&mut self, raw: RawDefaults, defaults: &mut Defaults, spots: &mut Spots) {
        if let Some(backend) = raw.backend {
            defaults.backend = backend.into_inner();
        }
        if let Some(v) = raw.timeout {
            if let Some(timeout) = self.duration(&v, "`timeout` in [defaults]") {
                defaults.resources.timeout = timeout;
                spots.resources.timeout = self.at(v.span());
            }
        }
        if let Some(v) = raw.secret_ttl_max {
            if let Some(max) = self.duration(&v, "`secret_ttl_max` in [defaults]") {
                defaults.secret_ttl_max = max;
            }
        }
        if let Some(limits) = raw.limits {
            let name = "[defaults.limits]";
            self.resources(limits, name, &mut defaults.resources, &mut spots.resources);
        }
    }

    /// A size, duration or CPU count written as text, parsed by the spec's parser; and
    /// where it was written.
    fn quantity<T>(
        &mut self,
        value: Option<&S<String>>,
        what: &str,
        example: &str,
        parse: impl Fn(&str) -> Result<T, UnitError>,
    ) -> Option<(T, Span)> {
        let value = value?;
        match parse(value.get_ref()) {
            Ok(n) => Some((n, value.span())),
            Err(e) => {
                let message = format!("invalid {} {:?} for {what}", e.what, e.value);
                let help = match example {
                    "" => format!("expected {}", e.expected),
                    _ => format!("expected {}, for example: {example}", e.expected),
                };
                self.refuse(value.span(), message, Some(&help))
            }
        }
    }

    fn duration(&mut self, value: &S<String>, what: &str) -> Option<std::time::Duration> {
        let example = "\"30s\"";
        self.quantity(Some(value), what, example, parse_duration)
            .map(|(d, _)| d)
    }

    /// A count from 1 to `u32::MAX`, and where it was written.
    fn count(&mut self, value: Option<&S<i64>>, what: &str) -> Option<(u32, Span)> {
        let value = value?;
        match u32::try_from(*value.get_ref()) {
            Ok(n) if n > 0 => Some((n, value.span())),
            _ => self.refuse(
                value.span(),
                format!("{what} must be a whole number from 1 to {}", u32::MAX),
                None,
            ),
        }
    }

    /// Applies a limits or ceilings table to `into`, noting where each value was written.
    fn resources(
        &mut self,
        raw: RawLimits,
        name: &str,
        into: &mut Resources,
        spots: &mut ResourceSpots,
    ) {
        let what = |key: &str| format!("`{key}` in {name}");
        let sizes = [
            (
                "memory",
                &raw.memory,
                &mut into.memory_bytes,
                &mut spots.memory,
                "512m",
            ),
            (
                "output",
                &raw.output,
                &mut into.output_bytes,
                &mut spots.output,
                "1m",
            ),
            (
                "tmpfs",
                &raw.tmpfs,
                &mut into.tmpfs_bytes,
                &mut spots.tmpfs,
                "64m",
            ),
            (
                "writes",
                &raw.writes,
                &mut into.write_bytes,
                &mut spots.writes,
                "1g",
            ),
        ];
        for (key, value, field, spot, example) in sizes {
            let example = format!("{key} = \"{example}\"");
            if let Some((n, at)) = self.quantity(value.as_ref(), &what(key), &example, parse_bytes)
            {
                (*field, *spot) = (n, self.at(at));
            }
        }
        let cpus = raw.cpus.map(|c| S::new(c.span(), c.into_inner().0));
        if let Some((n, at)) = self.quantity(cpus.as_ref(), &what("cpus"), "", parse_cpus) {
            (into.cpu_millis, spots.cpus) = (n, self.at(at));
        }
        if let Some((n, at)) = self.count(raw.pids.as_ref(), &what("pids")) {
            (into.pids, spots.pids) = (n, self.at(at));
        }
        if let Some((n, at)) = self.count(raw.write_files.as_ref(), &what("write_files")) {
            (into.write_files, spots.write_files) = (u64::from(n), self.at(at));
        }
    }

    fn tool(
        &mut self,
        name: &S<std::borrow::Cow<'_, str>>,
        raw: S<RawTool>,
        at: Location,
        defaults: &Defaults,
        default_spots: &Spots,
    ) -> Option<Tool> {
        let tool_name = name.get_ref().to_string();
        if !is_tool_name(&tool_name) {
            let help = Some("use letters, digits, `-` and `_` (at most 64)");
            self.refuse::<()>(
                name.span(),
                format!("invalid tool name {tool_name:?}"),
                help,
            );
        }
        let header = format!("[tools.{tool_name}]");
        let what = |key: &str| format!("`{key}` in {header}");
        let table_span = raw.span();
        let raw = raw.into_inner();
        let mut spots = default_spots.clone();
        let span_of = |v: &Option<S<String>>| v.as_ref().map(S::span);
        spots.args = raw.args.as_ref().and_then(|v| self.at(v.span()));
        spots.rootfs = span_of(&raw.rootfs).and_then(|v| self.at(v));
        spots.image = span_of(&raw.image).and_then(|v| self.at(v));
        spots.user = span_of(&raw.user).and_then(|v| self.at(v));

        let command = self.command(raw.command.as_ref(), table_span.clone(), &header);
        let workdir = match &raw.workdir {
            None => Some(PathBuf::from("/")),
            Some(v) => self.absolute(v, &what("workdir"), "workdir = \"/work\""),
        };
        let rootfs = raw.rootfs.as_ref().and_then(|v| {
            match self.host_path(v, &what("rootfs"), false)? {
                HostPath::Absolute(path) => Some(path),
                HostPath::Workspace(_) => None, // not accepted here
            }
        });
        let image = raw
            .image
            .as_ref()
            .and_then(|v| self.image(v, &what("image")));
        let user = match &raw.user {
            None => Some(User::default()),
            Some(v) => self.user(v, &what("user")),
        };
        let env = self.env(raw.env.unwrap_or_default(), &header, &mut spots);
        let network = raw.network.map_or(ToolNetwork::None, |v| {
            self.network(v, &tool_name, &mut spots)
        });
        let secrets = raw.secrets.unwrap_or_default();
        let secrets = self.secrets(secrets, &tool_name, &env, &network, &mut spots);
        let syscalls = raw
            .syscalls
            .map_or_else(Syscalls::default, |v| self.syscalls(v, &tool_name));
        let mut resources = defaults.resources;
        if let Some(v) = &raw.timeout {
            if let Some(timeout) = self.duration(v, &what("timeout")) {
                resources.timeout = timeout;
                spots.resources.timeout = self.at(v.span());
            }
        }
        if let Some(v) = raw.limits {
            let name = format!("[tools.{tool_name}.limits]");
            self.resources(v, &name, &mut resources, &mut spots.resources);
        }
        let mounts = self.mounts(raw.mounts.unwrap_or_default(), &tool_name, &mut spots);
        let (declared, refused) = self.params(raw.params.unwrap_or_default(), &tool_name);
        let params = match &raw.command {
            Some(command) => self.placeholders(command, declared, &refused, &header),
            None => Vec::new(),
        };
        let acknowledged = raw
            .acknowledged
            .map(|v| self.acknowledgement(v, &tool_name, &mut spots));
        let tool = Tool {
            name: tool_name,
            description: raw.description.map(S::into_inner),
            command,
            args: raw.args.map_or(ExtraArgs::None, S::into_inner),
            workdir: workdir.unwrap_or_default(),
            env,
            backend: raw
                .backend
                .as_ref()
                .map_or(defaults.backend, |b| *b.get_ref()),
            rootfs,
            image,
            user: user.unwrap_or_default(),
            network,
            secrets,
            syscalls,
            resources,
            mounts,
            acknowledged,
            params,
            at,
            spots,
        };
        let backend = raw.backend.as_ref().map(S::span);
        let image = span_of(&raw.image);
        let command = raw.command.as_ref().map(S::span);
        self.root_matches_backend(&tool, image, backend.or(command));
        Some(tool)
    }

    /// Each entry of `list` that holds a NUL byte is an error: it ends up in argv or a path.
    fn no_nul(&mut self, list: &Strings, what: &str) {
        for item in list.get_ref().iter().filter(|s| s.get_ref().contains('\0')) {
            self.error(
                item.span(),
                format!("each entry of {what} contains a NUL byte"),
                None,
            );
        }
    }

    fn command(&mut self, value: Option<&Strings>, table: Span, header: &str) -> Vec<String> {
        const EXAMPLE: &str = "command = [\"grep\", \"-rn\"]";
        let Some(value) = value else {
            let help = format!("every tool names what it runs, e.g. {EXAMPLE}");
            self.error(table, format!("{header} has no `command`"), Some(help));
            return Vec::new();
        };
        let what = format!("`command` in {header}");
        self.no_nul(value, &what);
        match value.get_ref().first() {
            None => {
                let help = format!("for example: {EXAMPLE}");
                self.error(value.span(), format!("{what} is empty"), Some(help));
            }
            Some(program) if program.get_ref().is_empty() => {
                self.error(
                    program.span(),
                    format!("the program in {what} is empty"),
                    None,
                );
            }
            Some(_) => {}
        }
        strings(value)
    }

    fn absolute(&mut self, value: &S<String>, what: &str, example: &str) -> Option<PathBuf> {
        clean_absolute(value.get_ref())
            .map_err(|why| {
                let help = format!("for example: {example}");
                self.error(value.span(), format!("{what} {why}"), Some(help));
            })
            .ok()
    }

    /// A host path: absolute, or starting with `${policy_dir}` (substituted here) or, where
    /// `workspace` is allowed, `${workspace}` (substituted per invocation).
    fn host_path(&mut self, value: &S<String>, what: &str, workspace: bool) -> Option<HostPath> {
        let (example, valid) = if workspace {
            ("host = \"${workspace}\"", "${workspace} and ${policy_dir}")
        } else {
            ("rootfs = \"${policy_dir}/rootfs\"", "${policy_dir}")
        };
        let text = value.get_ref();
        let variable = |var: &str| {
            let rest = text.strip_prefix(var)?;
            Some(if !(rest.is_empty() || rest.starts_with('/')) {
                Err(format!("must continue with `/` after {var}"))
            } else if rest.contains("${") {
                Err(format!(
                    "uses a variable after the start (only {valid}, at the start)"
                ))
            } else {
                Ok(rest)
            })
        };
        let result = if let Some(rest) = variable("${workspace}").filter(|_| workspace) {
            rest.and_then(|rest| clean(rest, "").map(HostPath::Workspace))
        } else if let Some(rest) = variable("${policy_dir}") {
            rest.and_then(|rest| {
                let joined = format!("{}{rest}", self.policy_dir.display());
                clean_absolute(&joined)
                    .map(HostPath::Absolute)
                    .map_err(|why| format!("{why} after ${{policy_dir}} became {joined:?}"))
            })
        } else if let Some(start) = text.find("${") {
            let var: String = text[start..].chars().take_while(|c| *c != '}').collect();
            Err(format!(
                "uses unknown variable `{var}}}`; valid variables: {valid}"
            ))
        } else {
            clean_absolute(text).map(HostPath::Absolute)
        };
        result
            .map_err(|why| {
                let help = format!("for example: {example}");
                self.error(value.span(), format!("{what} {why}"), Some(help));
            })
            .ok()
    }

    fn image(&mut self, value: &S<String>, what: &str) -> Option<String> {
        let image = value.get_ref();
        if image.is_empty() || image.chars().any(|c| c.is_whitespace() || c == '\0') {
            let message = format!("{what} is not an image reference: {image:?}");
            return self.refuse(value.span(), message, None);
        }
        if let Some(digest) = digest_is_malformed(image) {
            let help = Some("a digest is `sha256:` followed by 64 lowercase hex digits");
            let message = format!("{what} has a malformed digest {digest:?}");
            return self.refuse(value.span(), message, help);
        }
        Some(image.clone())
    }

    fn user(&mut self, value: &S<String>, what: &str) -> Option<User> {
        let text = value.get_ref();
        let (uid, gid) = text.split_once(':').unwrap_or((text, text));
        match (uid.parse::<u32>(), gid.parse::<u32>()) {
            (Ok(u32::MAX), _) | (_, Ok(u32::MAX)) => {
                let message = format!(
                    "{what} {text:?}: 4294967295 is not an id (to the kernel it means \"leave unchanged\")"
                );
                self.refuse(value.span(), message, None)
            }
            (Ok(uid), Ok(gid)) => Some(User { uid, gid }),
            _ => {
                let example = format!(
                    "for example: user = \"{0}:{0}\"",
                    nanoclaw_spec::SANDBOX_UID
                );
                let message = format!("{what} must be numeric \"UID:GID\", not {text:?}");
                self.refuse(value.span(), message, Some(&example))
            }
        }
    }

    fn env(
        &mut self,
        env: BTreeMap<S<String>, S<String>>,
        header: &str,
        spots: &mut Spots,
    ) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (name, value) in env {
            if !is_env_name(name.get_ref()) {
                let message = format!(
                    "invalid environment variable name {:?} in `env` in {header}",
                    name.get_ref()
                );
                let help = Some("names are letters, digits and `_`, not starting with a digit");
                self.refuse::<()>(name.span(), message, help);
                continue;
            }
            if value.get_ref().contains('\0') {
                let message = format!("`env.{}` in {header} contains a NUL byte", name.get_ref());
                self.error(value.span(), message, None);
            }
            spots.env.extend(self.at(name.span()));
            out.push((name.into_inner(), value.into_inner()));
        }
        out
    }

    fn network(
        &mut self,
        value: S<StrOr<RawNetwork, true>>,
        tool: &str,
        spots: &mut Spots,
    ) -> ToolNetwork {
        const EXAMPLE: &str = "for example: network = { allow = [\"api.github.com:443\"] }";
        let span = value.span();
        let name = format!("[tools.{tool}.network]");
        let allow = match value.into_inner() {
            StrOr::Str(word) if word == "none" => return ToolNetwork::None,
            StrOr::Str(word) if word == "host" => {
                let message = format!(
                    "`network = \"host\"` in [tools.{tool}] is not supported: {NO_BACKEND}"
                );
                let help = "name the hosts it needs: network = { allow = [\"HOST:PORT\"] }";
                return self
                    .refuse(span, message, Some(help))
                    .unwrap_or(ToolNetwork::None);
            }
            StrOr::Str(other) => {
                let message = format!("invalid `network` in [tools.{tool}] {other:?}; valid values: \"none\" or a table {{ allow = [\"HOST:PORT\", ...] }}");
                return self
                    .refuse(span, message, Some(EXAMPLE))
                    .unwrap_or(ToolNetwork::None);
            }
            StrOr::Other(RawNetwork { allow: None }) => {
                let message = format!("{name} has no `allow` list");
                return self
                    .refuse(span, message, Some(EXAMPLE))
                    .unwrap_or(ToolNetwork::None);
            }
            StrOr::Other(RawNetwork { allow: Some(allow) }) => allow,
        };
        if allow.get_ref().is_empty() {
            let help = Some("write network = \"none\" for no network");
            self.refuse::<()>(allow.span(), format!("`allow` in {name} is empty"), help);
        }
        let help = "write HOST:PORT: a host name, `*.` and a domain (subdomains only), an IPv4 address or [IPv6], then a port";
        let rules = self.egress(&allow, "egress destination", &name, help);
        for (_, span) in &rules {
            spots.network_allow.extend(self.at(span.clone()));
        }
        ToolNetwork::Allow(rules.into_iter().map(|(rule, _)| rule).collect())
    }

    /// Egress rules (`HOST:PORT`), each once.
    fn egress(
        &mut self,
        list: &Strings,
        noun: &str,
        place: &str,
        help: &str,
    ) -> Vec<(EgressRule, Span)> {
        let mut rules: Vec<(EgressRule, Span)> = Vec::new();
        for entry in list.get_ref() {
            let (text, span) = (entry.get_ref(), entry.span());
            match egress::parse_rule(text) {
                Ok(rule) if rules.iter().any(|(r, _)| *r == rule) => {
                    let message = format!("duplicate {noun} {text:?} in {place}");
                    self.error(span, message, None);
                }
                Ok(rule) => rules.push((rule, span)),
                Err(why) => {
                    let message = format!("invalid {noun} {text:?} in {place}: {why}");
                    self.error(span, message, Some(help.to_string()));
                }
            }
        }
        rules
    }

    fn secrets(
        &mut self,
        items: Vec<S<RawSecret>>,
        tool: &str,
        env: &[(String, String)],
        network: &ToolNetwork,
        spots: &mut Spots,
    ) -> Vec<Secret> {
        const EXAMPLE: &str = "for example: secrets = [{ name = \"GITHUB_TOKEN\", ttl = \"5m\", from = \"env:GITHUB_TOKEN\" }]";
        let mut secrets: Vec<Secret> = Vec::new();
        for (i, item) in items.into_iter().enumerate() {
            let table = format!("[[tools.{tool}.secrets]] #{}", i + 1);
            let span = item.span();
            let raw = item.into_inner();
            let name = match &raw.name {
                None => self.refuse(
                    span.clone(),
                    format!("{table} has no `name`"),
                    Some(EXAMPLE),
                ),
                Some(n) if !is_env_name(n.get_ref()) => self.refuse(
                    n.span(),
                    format!("invalid secret name {:?} in {table}", n.get_ref()),
                    Some("names are letters, digits and `_`, not starting with a digit"),
                ),
                Some(n) if secrets.iter().any(|s| s.name == *n.get_ref()) => self.refuse(
                    n.span(),
                    format!(
                        "duplicate secret {:?} in `secrets` in [tools.{tool}]",
                        n.get_ref()
                    ),
                    None,
                ),
                Some(n) if env.iter().any(|(k, _)| k == n.get_ref()) => self.refuse(
                    n.span(),
                    format!(
                        "secret {:?} of tool `{tool}` is also a fixed `env` value",
                        n.get_ref()
                    ),
                    Some("a name is either a secret or a fixed value"),
                ),
                Some(n) => Some(n.get_ref().clone()),
            };
            let ttl = raw
                .ttl
                .as_ref()
                .and_then(|v| self.duration(v, &format!("`ttl` in {table}")));
            let from = self.secret_source(raw.from.as_ref(), span.clone(), &table);
            let deliver = raw.deliver.as_ref().map_or(
                match network {
                    ToolNetwork::Allow(_) => Delivery::Placeholder,
                    ToolNetwork::None => Delivery::File,
                },
                |d| *d.get_ref(),
            );
            let help = "write HOST:PORT, as in the tool's network allow list";
            let hosts = raw.hosts.as_ref().map_or_else(Vec::new, |h| {
                self.egress(h, "host", &format!("`hosts` in {table}"), help)
            });
            if deliver == Delivery::Placeholder
                && raw.hosts.as_ref().is_none_or(|h| h.get_ref().is_empty())
            {
                let message = format!("{table} is delivered as a placeholder but names no `hosts`");
                self.refuse::<()>(span.clone(), message, Some("list where the proxy may send the value: hosts = [\"api.github.com:443\"] (a subset of the tool's network allow list)"));
            }
            spots.secrets.push(SecretSpots {
                at: self.at(span.clone()),
                from: raw.from.as_ref().and_then(|v| self.at(v.span())),
                deliver: raw.deliver.as_ref().and_then(|v| self.at(v.span())),
                hosts: raw.hosts.as_ref().and_then(|v| self.at(v.span())),
            });
            secrets.push(Secret {
                name: name.unwrap_or_default(),
                ttl,
                from,
                deliver,
                hosts: hosts.into_iter().map(|(rule, _)| rule).collect(),
                body: raw.body.unwrap_or(false),
            });
        }
        secrets
    }

    /// `from = "env:VAR" | "file:PATH" | ["cmd", "arg", ...]`.
    fn secret_source(
        &mut self,
        value: Option<&S<StrOr<Vec<S<String>>, false>>>,
        item: Span,
        table: &str,
    ) -> SecretSource {
        const HELP: &str = "write from = \"env:VAR\" (nanoclaw's environment), from = \"file:/abs/path\", or from = [\"command\", \"arg\", ...] (run on the host, no shell; its stdout is the value)";
        let what = format!("`from` in {table}");
        let refused = SecretSource::Env(String::new());
        let Some(value) = value else {
            return self
                .refuse(item, format!("{table} has no `from`"), Some(HELP))
                .unwrap_or(refused);
        };
        let span = value.span();
        let (message, help) = match value.get_ref() {
            StrOr::Other(argv) if argv.first().is_some_and(|p| !p.get_ref().is_empty()) => {
                self.no_nul(&S::new(span, argv.clone()), &what);
                return SecretSource::Command(argv.iter().map(|s| s.get_ref().clone()).collect());
            }
            StrOr::Other(_) => (format!("{what} names no command"), None),
            StrOr::Str(s) => match s.split_once(':') {
                Some(("env", var)) if is_env_name(var) => return SecretSource::Env(var.into()),
                Some(("env", var)) => (format!("invalid variable name {var:?} in {what}"), None),
                Some(("file", path)) if path.starts_with('/') && !path.contains('\0') => {
                    return SecretSource::File(PathBuf::from(path));
                }
                Some(("file", path)) => (
                    format!("{what} must name an absolute path, not {path:?}"),
                    None,
                ),
                other => {
                    let found = other.map_or(s.as_str(), |(scheme, _)| scheme);
                    let message = format!(
                        "invalid {what} {s:?}: a string source is \"env:VAR\" or \"file:PATH\""
                    );
                    (message, suggest(found, &["env", "file"]))
                }
            },
        };
        self.error(span, message, help.or(Some(HELP.into())));
        refused
    }

    fn syscalls(&mut self, raw: S<RawSyscalls>, tool: &str) -> Syscalls {
        let name = format!("[tools.{tool}.syscalls]");
        let raw = raw.into_inner();
        let mut syscalls = Syscalls::default();
        if let Some(p) = raw.profile {
            if PROFILES.contains(&p.get_ref().as_str()) {
                syscalls.profile = p.into_inner();
            } else {
                let message = format!(
                    "unknown syscall profile {:?} in {name}; valid profiles: {}",
                    p.get_ref(),
                    PROFILES.join(", ")
                );
                self.error(p.span(), message, None);
            }
        }
        syscalls
    }

    fn mounts(&mut self, items: Vec<S<RawMount>>, tool: &str, spots: &mut Spots) -> Vec<MountDecl> {
        const EXAMPLE: &str =
            "for example: [[tools.NAME.mounts]]\nhost = \"${workspace}\"\npath = \"/work\"";
        let mut mounts = Vec::new();
        let mut seen: BTreeMap<PathBuf, Location> = BTreeMap::new();
        for (i, item) in items.into_iter().enumerate() {
            let name = format!("[[tools.{tool}.mounts]] #{}", i + 1);
            let span = item.span();
            let raw = item.into_inner();
            let host = match &raw.host {
                Some(v) => self.host_path(v, &format!("`host` in {name}"), true),
                None => self.refuse(span.clone(), format!("{name} has no `host`"), Some(EXAMPLE)),
            };
            let path = match &raw.path {
                Some(v) => self.target(v, &format!("`path` in {name}"), &mut seen),
                None => self.refuse(span.clone(), format!("{name} has no `path`"), Some(EXAMPLE)),
            };
            spots.mounts.extend(self.at(span.clone()));
            if let (Some(host), Some(path)) = (host, path) {
                mounts.push(MountDecl {
                    host,
                    path,
                    writable: raw.mode == Some(Mode::Rw),
                    credentials_visible: raw.credentials == Some(Credentials::Visible),
                });
            }
        }
        mounts
    }

    /// A mount target: absolute, not reserved, not already used by this tool.
    fn target(
        &mut self,
        value: &S<String>,
        what: &str,
        seen: &mut BTreeMap<PathBuf, Location>,
    ) -> Option<PathBuf> {
        let path = self.absolute(value, what, "path = \"/work\"")?;
        let shown = path.display();
        if path == Path::new("/") {
            let help = Some("mount somewhere below it, e.g. \"/work\"");
            return self.refuse(
                value.span(),
                format!("{what} is `/`, the sandbox's own root"),
                help,
            );
        }
        if let Some(reserved) = RESERVED_TARGETS.iter().find(|r| path.starts_with(r)) {
            let message =
                format!("{what} {shown} is inside {reserved}, which the sandbox provides itself");
            let help = format!("reserved: {}", RESERVED_TARGETS.join(", "));
            return self.refuse(value.span(), message, Some(&help));
        }
        if let Some(first) = seen.get(&path) {
            let message = format!("duplicate mount target {shown} in {what}");
            let help = format!(
                "{shown} is already mounted at line {}:{}",
                first.line, first.column
            );
            return self.refuse(value.span(), message, Some(&help));
        }
        seen.insert(path.clone(), self.source.locate(value.span().start));
        Some(path)
    }

    fn acknowledgement(
        &mut self,
        raw: S<RawUnsafe>,
        tool: &str,
        spots: &mut Spots,
    ) -> Acknowledgement {
        let name = format!("[tools.{tool}.unsafe]");
        let span = raw.span();
        let raw = raw.into_inner();
        let why = Some("say in writing why the risk is acceptable");
        let reason = match raw.reason {
            None => self.refuse(span.clone(), format!("{name} has no `reason`"), why),
            Some(r) if r.get_ref().trim().is_empty() => {
                self.refuse(r.span(), format!("`reason` in {name} is empty"), why)
            }
            Some(r) => Some(r.into_inner()),
        };
        let valid: Vec<&str> = Rule::ACKNOWLEDGEABLE.iter().map(|r| r.id()).collect();
        let name_them = format!("name the rules it acknowledges: {}", valid.join(", "));
        let mut rules = Vec::new();
        match raw.allow {
            None => {
                self.refuse::<()>(
                    span,
                    format!("{name} has no `allow` list"),
                    Some(&name_them),
                );
            }
            Some(list) if list.get_ref().is_empty() => {
                self.refuse::<()>(
                    list.span(),
                    format!("`allow` in {name} is empty"),
                    Some(&name_them),
                );
            }
            Some(list) => {
                for id in list.get_ref() {
                    let text = id.get_ref().as_str();
                    match Rule::ACKNOWLEDGEABLE.iter().find(|r| r.id() == text) {
                        Some(rule) if rules.contains(rule) => {
                            let message = format!("duplicate rule `{text}` in `allow` of {name}");
                            self.error(id.span(), message, None);
                        }
                        Some(rule) => {
                            rules.push(*rule);
                            spots.unsafe_allow.extend(self.at(id.span()));
                        }
                        None => {
                            let message = format!("`{text}` in `allow` of {name} is not a rule that can be acknowledged; valid: {}", valid.join(", "));
                            self.error(id.span(), message, suggest(text, &valid));
                        }
                    }
                }
            }
        }
        Acknowledgement {
            reason: reason.unwrap_or_default(),
            allow: rules,
        }
    }

    /// `[tools.NAME.params.*]`, in the order written, each with the span of its table; and
    /// the names of those refused.
    fn params(
        &mut self,
        table: BTreeMap<S<String>, S<RawParam>>,
        tool: &str,
    ) -> (Vec<(Param, Span)>, Vec<String>) {
        let mut entries: Vec<_> = table.into_iter().collect();
        entries.sort_by_key(|(key, _)| key.span().start);
        let mut params: Vec<(Param, Span)> = Vec::new();
        let mut refused = Vec::new();
        for (key, value) in entries {
            let span = value.span();
            match self.param(&key, value, tool) {
                Some(param) => params.push((param, span)),
                None => refused.push(key.into_inner()),
            }
        }
        let stdin: Vec<&(Param, Span)> = params.iter().filter(|(p, _)| p.stdin).collect();
        if let [_, second, ..] = stdin.as_slice() {
            let names: Vec<&str> = stdin.iter().map(|(p, _)| p.name.as_str()).collect();
            let message = format!(
                "tool `{tool}` has more than one stdin parameter ({}); a command has one standard input",
                names.join(", ")
            );
            self.error(second.1.clone(), message, None);
        }
        (params, refused)
    }

    fn param(&mut self, key: &S<String>, value: S<RawParam>, tool: &str) -> Option<Param> {
        let errors_before = self.errors.len();
        let name = key.get_ref().clone();
        let header = format!("[tools.{tool}.params.{name}]");
        let what = |k: &str| format!("`{k}` in {header}");
        if !params::is_param_name(&name) {
            let help = if name == params::ARGS_PROPERTY {
                "`args` is the name of the appended arguments (args = \"append\")"
            } else {
                "a parameter name is letters, digits and `_`, not starting with a digit (at most 64)"
            };
            let message = format!("invalid parameter name {name:?} in [tools.{tool}.params]");
            self.refuse::<()>(key.span(), message, Some(help));
        }
        let span = value.span();
        let raw = value.into_inner();
        let kind = match &raw.kind {
            Some(kind) => *kind.get_ref(),
            None => {
                let valid: Vec<&str> = ParamType::ALL.iter().map(|t| t.as_str()).collect();
                let help = format!("valid types: {}", valid.join(", "));
                self.refuse::<()>(span.clone(), format!("{header} has no `type`"), Some(&help));
                ParamType::String
            }
        };
        let string_only = [
            ("pattern", raw.pattern.as_ref().map(S::span)),
            ("enum", raw.choices.as_ref().map(S::span)),
            ("max_length", raw.max_length.as_ref().map(S::span)),
        ];
        for (key, at) in string_only {
            if let Some(at) = at.filter(|_| kind != ParamType::String) {
                let message = format!(
                    "{} applies to strings only, and `{name}` is {}",
                    what(key),
                    kind.described()
                );
                self.error(at, message, None);
            }
        }
        if let Some(p) = &raw.pattern {
            let compiled = match p.get_ref().contains('\0') {
                true => Err("error: it contains a NUL byte".to_string()),
                false => params::compile_pattern(p.get_ref()).map(|_| ()),
            };
            if let Err(why) = compiled {
                let last = why.lines().last().unwrap_or_default().trim();
                let first = last.strip_prefix("error: ").unwrap_or(last);
                let help = Some("a pattern is a regular expression, matched anywhere unless anchored with ^ and $");
                self.refuse::<()>(
                    p.span(),
                    format!("{} does not compile: {first}", what("pattern")),
                    help,
                );
            }
        }
        let mut choices: Option<Vec<String>> = None;
        if let Some(list) = &raw.choices {
            if list.get_ref().is_empty() {
                self.error(list.span(), format!("{} is empty", what("enum")), None);
            }
            self.no_nul(list, &what("enum"));
            let mut out: Vec<String> = Vec::new();
            for choice in list.get_ref() {
                if out.contains(choice.get_ref()) {
                    let message =
                        format!("duplicate value {:?} in {}", choice.get_ref(), what("enum"));
                    self.error(choice.span(), message, None);
                }
                out.push(choice.get_ref().clone());
            }
            choices = Some(out);
        }
        let max_length = raw.max_length.as_ref().and_then(|v| {
            let message = format!(
                "{} must be a whole number from 0 to {}",
                what("max_length"),
                u32::MAX
            );
            let n = u32::try_from(*v.get_ref()).ok();
            n.or_else(|| self.refuse(v.span(), message, None))
        });
        if let Some(v) = raw
            .stdin
            .as_ref()
            .filter(|v| !v.get_ref() && name == "stdin")
        {
            let message =
                format!("a parameter named `stdin` always feeds standard input ({header})");
            let help = Some("give the parameter another name to pass it as an argument");
            self.refuse::<()>(v.span(), message, help);
        }
        let stdin = raw.stdin.as_ref().is_some_and(|v| *v.get_ref()) || name == "stdin";
        if stdin && kind != ParamType::String {
            let at = raw.kind.as_ref().map_or(span, S::span);
            let message = format!("{header} feeds standard input, so its type must be \"string\"");
            self.error(at, message, None);
        }
        let param = Param {
            name,
            kind,
            description: raw.description,
            required: raw.required.unwrap_or(false),
            pattern: raw.pattern.map(S::into_inner),
            choices,
            max_length: max_length.map(|n| n as usize),
            stdin,
        };
        (self.errors.len() == errors_before).then_some(param)
    }

    /// Checks every brace in `command` against `params`: each placeholder names a declared
    /// parameter that does not feed stdin, the program is fixed, and every argument
    /// parameter is used. Returns the parameters.
    fn placeholders(
        &mut self,
        command: &Strings,
        params: Vec<(Param, Span)>,
        refused: &[String],
        header: &str,
    ) -> Vec<Param> {
        let mut used: Vec<&str> = Vec::new();
        let names: Vec<&str> = params.iter().map(|(p, _)| p.name.as_str()).collect();
        for (i, item) in command.get_ref().iter().enumerate() {
            let element = item.get_ref();
            let name = match params::piece(element) {
                Ok(Piece::Literal(_)) => continue,
                Ok(Piece::Param(name)) => name,
                Err(why) => {
                    // One error for `--x={p}`, not a second one for `p` unused.
                    used.extend(
                        names
                            .iter()
                            .filter(|n| element.contains(&format!("{{{n}}}"))),
                    );
                    self.error(
                        item.span(),
                        format!("`command` in {header}: {why}"),
                        Some("a placeholder is a whole argument, e.g. [\"grep\", \"--\", \"{pattern}\"]; write {{ and }} for literal braces".into()),
                    );
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
            match problem {
                Some((message, help)) => self.error(item.span(), message, Some(help)),
                None => used.push(name),
            }
        }
        for (param, span) in &params {
            if !param.stdin && !used.contains(&param.name.as_str()) {
                let message = format!(
                    "parameter `{}` of {header} is declared but not used in `command`",
                    param.name
                );
                let help = format!(
                    "add \"{{{}}}\" as an argument of `command`, or remove the parameter",
                    param.name
                );
                self.error(span.clone(), message, Some(help));
            }
        }
        params.into_iter().map(|(p, _)| p).collect()
    }

    /// A tool must be runnable on its backend: native takes a rootfs (or the host's
    /// /usr), Docker takes an image.
    fn root_matches_backend(&mut self, tool: &Tool, image: Option<Span>, backend: Option<Span>) {
        match tool.backend {
            BackendKind::Native if tool.image.is_some() && tool.rootfs.is_none() => self.error(
                image.unwrap_or(0..0),
                format!("tool `{}` names an image but runs on the native backend, which cannot run images", tool.name),
                Some("add rootfs = \"/path/to/unpacked/image\", or set backend = \"docker\"".into()),
            ),
            BackendKind::Docker if tool.image.is_none() => self.error(
                backend.unwrap_or(0..0),
                format!("tool `{}` runs on the docker backend but names no image", tool.name),
                Some("add image = \"NAME@sha256:<digest>\"".into()),
            ),
            _ => {}
        }
    }
}

fn strings(list: &Strings) -> Vec<String> {
    list.get_ref().iter().map(|s| s.get_ref().clone()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions_are_close_words_only() {
        let valid = ["memory", "cpus", "pids"];
        assert_eq!(
            suggest("memroy", &valid).as_deref(),
            Some("did you mean `memory`?")
        );
        assert_eq!(suggest("zzzzzz", &valid), None);
    }

    #[test]
    fn paths_are_normalised_or_refused() {
        assert_eq!(clean_absolute("/a//b/./c/"), Ok(PathBuf::from("/a/b/c")));
        assert!(clean_absolute("a/b").is_err());
        assert!(clean_absolute("/a/../b").is_err());
        assert!(clean_absolute("/a\0").is_err());
        assert_eq!(clean("/src/", ""), Ok(PathBuf::from("src")));
        assert!(clean("/../x", "").is_err());
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
