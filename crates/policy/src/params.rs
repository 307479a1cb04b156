//! A tool's declared parameters: the JSON Schema a client is shown, and binding one call's
//! values into the argv (and standard input) the tool runs.
//!
//! A `{NAME}` placeholder is a whole argv element of the tool's `command`, never part of
//! one: a value becomes exactly one argument (an array, zero or more), so nothing a caller
//! sends is ever split, quoted or read by a shell unless the policy's own command is a
//! shell. `{{` and `}}` are literal braces. The parser refuses every other use of braces.
//!
//! This module must never let a value widen a tool's scope (it only fills argv and stdin),
//! never guess a type, and never pass on a value that failed its declaration.

use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::policy::{ExtraArgs, Tool};

/// The name of the JSON property that carries `args = "append"` arguments.
pub(crate) const ARGS_PROPERTY: &str = "args";

/// The longest one argument may be: Linux's MAX_ARG_STRLEN (32 pages), less its NUL.
const MAX_ARGUMENT_BYTES: usize = 32 * 4096 - 1;

/// The longest a pattern may compile to; a policy's patterns are small.
const PATTERN_SIZE_LIMIT: usize = 1 << 20;

/// A parameter's type: JSON Schema's names, `array` being an array of strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ParamType {
    String,
    Integer,
    Number,
    Boolean,
    Array,
}

impl ParamType {
    pub const ALL: [ParamType; 5] = [
        ParamType::String,
        ParamType::Integer,
        ParamType::Number,
        ParamType::Boolean,
        ParamType::Array,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ParamType::String => "string",
            ParamType::Integer => "integer",
            ParamType::Number => "number",
            ParamType::Boolean => "boolean",
            ParamType::Array => "array",
        }
    }

    /// "a string", "an integer", ... for messages.
    pub(crate) fn described(self) -> &'static str {
        match self {
            ParamType::String => "a string",
            ParamType::Integer => "an integer",
            ParamType::Number => "a number",
            ParamType::Boolean => "a boolean (true or false)",
            ParamType::Array => "an array of strings",
        }
    }
}

/// One `[tools.NAME.params.PARAM]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Param {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: ParamType,
    pub description: Option<String>,
    pub required: bool,
    /// Strings only: a regex the value must match somewhere (unanchored, as in JSON Schema).
    pub pattern: Option<String>,
    /// Strings only: the values allowed (`enum` in the policy).
    #[serde(rename = "enum")]
    pub choices: Option<Vec<String>>,
    /// Strings only: the most characters (Unicode scalar values) allowed.
    pub max_length: Option<usize>,
    /// Feeds the command's standard input instead of an argv element.
    pub stdin: bool,
}

impl Param {
    fn schema(&self) -> Value {
        let mut schema = Map::new();
        schema.insert("type".into(), self.kind.as_str().into());
        if self.kind == ParamType::Array {
            schema.insert("items".into(), json!({ "type": "string" }));
        }
        if let Some(description) = &self.description {
            schema.insert("description".into(), description.clone().into());
        }
        if let Some(pattern) = &self.pattern {
            schema.insert("pattern".into(), pattern.clone().into());
        }
        if let Some(choices) = &self.choices {
            schema.insert("enum".into(), choices.clone().into());
        }
        if let Some(max) = self.max_length {
            schema.insert("maxLength".into(), max.into());
        }
        Value::Object(schema)
    }
}

/// One call of a tool, bound: what it runs and what it reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoundCall {
    /// The full argv: the tool's command with every placeholder filled, then `args`.
    pub argv: Vec<String>,
    /// The value of the tool's stdin parameter, if it was given.
    pub stdin: Option<Vec<u8>>,
}

/// Why a call's input does not fit the tool's parameters: one sentence a model can act on,
/// naming the parameter and what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ParamError {
    /// The parameter (or unknown input key) concerned.
    pub param: String,
    pub message: String,
}

impl ParamError {
    fn new(param: &str, message: String) -> Self {
        ParamError {
            param: param.to_string(),
            message,
        }
    }
}

/// One element of a command: a placeholder, or a literal (braces unescaped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Piece<'a> {
    Param(&'a str),
    Literal(String),
}

/// Whether `name` may name a parameter: `[A-Za-z_][A-Za-z0-9_]*`, and not `args`.
pub(crate) fn is_param_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name != ARGS_PROPERTY
        && name.len() <= 64
}

/// Reads one element of `command`: `{NAME}` is a placeholder, `{{` and `}}` are literal
/// braces, and any other brace is refused with the reason.
pub(crate) fn piece(element: &str) -> Result<Piece<'_>, String> {
    if let Some(name) = element
        .strip_prefix('{')
        .and_then(|rest| rest.strip_suffix('}'))
        .filter(|name| !name.starts_with('{') && !name.ends_with('}'))
    {
        if is_param_name(name) {
            return Ok(Piece::Param(name));
        }
        if name == ARGS_PROPERTY {
            return Err(
                "`{args}` is not a placeholder: `args = \"append\"` arguments always come last"
                    .into(),
            );
        }
        return Err(format!(
            "`{element}` is not a valid placeholder: a parameter name is letters, digits and `_`, not starting with a digit"
        ));
    }
    let mut literal = String::with_capacity(element.len());
    let mut chars = element.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            '{' | '}' if chars.peek().map(|(_, n)| *n) == Some(c) => {
                chars.next();
                literal.push(c);
            }
            '{' => {
                let rest = &element[i + 1..];
                let spliced = rest
                    .split_once('}')
                    .is_some_and(|(name, _)| is_param_name(name));
                return Err(if spliced {
                    format!("a placeholder must be a whole argument, not part of {element:?}")
                } else {
                    format!("unmatched `{{` in {element:?}")
                });
            }
            '}' => return Err(format!("unmatched `}}` in {element:?}")),
            _ => literal.push(c),
        }
    }
    Ok(Piece::Literal(literal))
}

/// A pattern compiled as `bind` uses it.
pub(crate) fn compile_pattern(pattern: &str) -> Result<regex::Regex, String> {
    regex::RegexBuilder::new(pattern)
        .size_limit(PATTERN_SIZE_LIMIT)
        .build()
        .map_err(|e| e.to_string())
}

/// A value for a message: JSON, cut short.
fn shown(value: &Value) -> String {
    const MAX: usize = 60;
    let text = value.to_string();
    if text.chars().count() <= MAX {
        return text;
    }
    let cut: String = text.chars().take(MAX).collect();
    format!("{cut}…")
}

impl Tool {
    /// The JSON Schema of the tool's input: an object with one property per parameter
    /// (and `args` when the tool takes appended arguments), nothing else allowed.
    pub fn input_schema(&self) -> Value {
        let mut properties = Map::new();
        for param in &self.params {
            properties.insert(param.name.clone(), param.schema());
        }
        if self.args == ExtraArgs::Append {
            properties.insert(
                ARGS_PROPERTY.into(),
                json!({
                    "type": "array",
                    "items": { "type": "string" },
                    "description": "extra arguments appended to the command",
                }),
            );
        }
        let required: Vec<Value> = self
            .params
            .iter()
            .filter(|p| p.required)
            .map(|p| p.name.clone().into())
            .collect();
        let mut schema = Map::new();
        schema.insert("type".into(), "object".into());
        schema.insert("properties".into(), Value::Object(properties));
        if !required.is_empty() {
            schema.insert("required".into(), Value::Array(required));
        }
        schema.insert("additionalProperties".into(), false.into());
        Value::Object(schema)
    }

    /// Checks `input` against the parameters and fills the command with it. A `null` value
    /// counts as absent. Refuses unknown keys, missing required parameters, wrong types,
    /// values outside a string's pattern, enum or max_length, non-finite numbers and NUL
    /// bytes (which no argument can hold).
    pub fn bind(&self, input: &Map<String, Value>) -> Result<BoundCall, ParamError> {
        for key in input.keys() {
            let known = self.params.iter().any(|p| p.name == *key)
                || (key == ARGS_PROPERTY && self.args == ExtraArgs::Append);
            if !known {
                return Err(ParamError::new(key, self.unknown(key)));
            }
        }
        let mut values: Vec<(&str, Option<Vec<String>>)> = Vec::new();
        let mut stdin = None;
        for param in &self.params {
            let value = input.get(&param.name).filter(|v| !v.is_null());
            let bound = match value {
                None if param.required => {
                    return Err(ParamError::new(
                        &param.name,
                        format!(
                            "parameter `{}` is required: {}{}",
                            param.name,
                            param.kind.described(),
                            param
                                .description
                                .as_deref()
                                .map(|d| format!(" ({d})"))
                                .unwrap_or_default()
                        ),
                    ));
                }
                None => None,
                Some(value) => Some(bind_value(param, value)?),
            };
            if param.stdin {
                stdin = bound.and_then(|mut v| v.pop()).map(String::into_bytes);
            } else {
                fits_an_argument(&param.name, bound.iter().flatten())?;
                values.push((param.name.as_str(), bound));
            }
        }
        let mut argv = Vec::new();
        for element in &self.command {
            match piece(element) {
                Ok(Piece::Literal(text)) => argv.push(text),
                Ok(Piece::Param(name)) => {
                    if let Some((_, Some(bound))) = values.iter().find(|(n, _)| *n == name) {
                        argv.extend(bound.iter().cloned());
                    }
                }
                // Unreachable: the parser refused the policy. Fail closed all the same.
                Err(why) => {
                    return Err(ParamError::new(
                        "",
                        format!("tool `{}` has an invalid command: {why}", self.name),
                    ))
                }
            }
        }
        if let Some(args) = input.get(ARGS_PROPERTY).filter(|v| !v.is_null()) {
            let args = strings(ARGS_PROPERTY, args)?;
            fits_an_argument(ARGS_PROPERTY, &args)?;
            argv.extend(args);
        }
        Ok(BoundCall { argv, stdin })
    }

    fn unknown(&self, key: &str) -> String {
        let mut names: Vec<&str> = self.params.iter().map(|p| p.name.as_str()).collect();
        if self.args == ExtraArgs::Append {
            names.push(ARGS_PROPERTY);
        }
        if key == ARGS_PROPERTY {
            return format!(
                "tool `{}` takes no extra arguments (`args`); {}",
                self.name,
                takes(&names)
            );
        }
        format!(
            "unknown parameter `{key}` for tool `{}`; {}",
            self.name,
            takes(&names)
        )
    }
}

fn takes(names: &[&str]) -> String {
    if names.is_empty() {
        "it takes no parameters".into()
    } else {
        let quoted: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
        format!("it takes {}", quoted.join(", "))
    }
}

/// An array of strings, each a valid argument.
fn strings(name: &str, value: &Value) -> Result<Vec<String>, ParamError> {
    let wrong = || {
        ParamError::new(
            name,
            format!(
                "parameter `{name}` must be an array of strings, got {}",
                shown(value)
            ),
        )
    };
    let items = value.as_array().ok_or_else(wrong)?;
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let text = item.as_str().ok_or_else(wrong)?;
        no_nul(name, text)?;
        out.push(text.to_string());
    }
    Ok(out)
}

/// Refuses a value no `execve` could pass as one argument, naming the parameter, rather
/// than letting the command fail to start.
fn fits_an_argument<'a>(
    name: &str,
    values: impl IntoIterator<Item = &'a String>,
) -> Result<(), ParamError> {
    match values.into_iter().find(|v| v.len() > MAX_ARGUMENT_BYTES) {
        None => Ok(()),
        Some(long) => Err(ParamError::new(
            name,
            format!(
                "parameter `{name}` is too long for one argument: {} bytes, at most {MAX_ARGUMENT_BYTES}",
                long.len()
            ),
        )),
    }
}

fn no_nul(name: &str, text: &str) -> Result<(), ParamError> {
    if text.contains('\0') {
        return Err(ParamError::new(
            name,
            format!("parameter `{name}` contains a NUL byte, which no argument can hold"),
        ));
    }
    Ok(())
}

/// One value checked against its declaration, as the argv elements it becomes.
fn bind_value(param: &Param, value: &Value) -> Result<Vec<String>, ParamError> {
    let name = param.name.as_str();
    let wrong = || {
        ParamError::new(
            name,
            format!(
                "parameter `{name}` must be {}, got {}",
                param.kind.described(),
                shown(value)
            ),
        )
    };
    match param.kind {
        ParamType::String => {
            let text = value.as_str().ok_or_else(wrong)?;
            no_nul(name, text)?;
            check_string(param, text)?;
            Ok(vec![text.to_string()])
        }
        ParamType::Array => strings(name, value),
        ParamType::Boolean => Ok(vec![value.as_bool().ok_or_else(wrong)?.to_string()]),
        ParamType::Integer => {
            let number = value.as_number().ok_or_else(wrong)?;
            if number.is_i64() || number.is_u64() {
                return Ok(vec![number.to_string()]);
            }
            // JSON Schema's integer is any number without a fraction: 3.0 is 3.
            match number.as_f64() {
                Some(f) if f.is_finite() && f.fract() == 0.0 && f.abs() < 9.0e15 => {
                    Ok(vec![format!("{f:.0}")])
                }
                _ => Err(wrong()),
            }
        }
        ParamType::Number => {
            let number = value.as_number().ok_or_else(wrong)?;
            if number.as_f64().is_some_and(f64::is_finite) {
                Ok(vec![number.to_string()])
            } else {
                Err(ParamError::new(
                    name,
                    format!("parameter `{name}` must be a finite number, got {number}"),
                ))
            }
        }
    }
}

fn check_string(param: &Param, text: &str) -> Result<(), ParamError> {
    let name = param.name.as_str();
    if let Some(max) = param.max_length {
        let length = text.chars().count();
        if length > max {
            return Err(ParamError::new(
                name,
                format!(
                    "parameter `{name}` is too long: {length} characters, at most {max} allowed"
                ),
            ));
        }
    }
    if let Some(choices) = &param.choices {
        if !choices.iter().any(|c| c == text) {
            let quoted: Vec<String> = choices.iter().map(|c| format!("{c:?}")).collect();
            return Err(ParamError::new(
                name,
                format!(
                    "parameter `{name}` must be one of {}, got {}",
                    quoted.join(", "),
                    shown(&Value::from(text))
                ),
            ));
        }
    }
    if let Some(pattern) = &param.pattern {
        let matches = compile_pattern(pattern).is_ok_and(|re| re.is_match(text));
        if !matches {
            return Err(ParamError::new(
                name,
                format!(
                    "parameter `{name}` must match the pattern {pattern:?}, got {}",
                    shown(&Value::from(text))
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces() {
        assert_eq!(piece("{command}"), Ok(Piece::Param("command")));
        assert_eq!(piece("-c"), Ok(Piece::Literal("-c".into())));
        assert_eq!(piece("{{}}"), Ok(Piece::Literal("{}".into())));
        assert_eq!(piece("{{x}}"), Ok(Piece::Literal("{x}".into())));
        assert_eq!(
            piece("awk {{print $1}}"),
            Ok(Piece::Literal("awk {print $1}".into()))
        );
        assert!(piece("--x={p}").unwrap_err().contains("whole argument"));
        assert!(piece("{p}.txt").unwrap_err().contains("whole argument"));
        assert!(piece("{").unwrap_err().contains("unmatched `{`"));
        assert!(piece("}").unwrap_err().contains("unmatched `}`"));
        assert!(piece("{}").unwrap_err().contains("not a valid placeholder"));
        assert!(piece("{1x}")
            .unwrap_err()
            .contains("not a valid placeholder"));
        assert!(piece("{a b}")
            .unwrap_err()
            .contains("not a valid placeholder"));
        assert!(piece("{args}").unwrap_err().contains("always come last"));
    }

    #[test]
    fn names() {
        for good in ["a", "_", "command", "File_2", "_x"] {
            assert!(is_param_name(good), "{good}");
        }
        for bad in ["", "2a", "a-b", "a b", "args", "é", &"x".repeat(65)] {
            assert!(!is_param_name(bad), "{bad}");
        }
    }

    #[test]
    fn long_values_are_cut_in_messages() {
        let long = Value::from("y".repeat(500));
        assert!(shown(&long).chars().count() <= 61);
    }
}
