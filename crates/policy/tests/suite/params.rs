//! Declared tool parameters: what parses, the schema a client sees, and binding a call's
//! values into argv and stdin, with every refusal naming the parameter.

use nanoclaw_policy::{BoundCall, Error, Invocation, ParamType, Tool};
use serde_json::{json, Map, Value};

use super::{parse, policy};

const TOOLS: &str = r#"
[tools.shell]
description = "run a shell command"
command = ["sh", "-c", "{command}"]
workdir = "/work"
[tools.shell.params.command]
type = "string"
description = "the command line"
required = true
max_length = 20

[tools.grep]
description = "search"
command = ["grep", "{count}", "-e", "{pattern}", "--", "{files}"]
args = "append"
[tools.grep.params.pattern]
type = "string"
required = true
pattern = "^[a-z]+$"
[tools.grep.params.files]
type = "array"
description = "paths"
[tools.grep.params.count]
type = "string"
enum = ["-c", "-n"]

[tools.typed]
description = "every type"
command = ["printf", "%s|", "{i}", "{n}", "{b}", "{{}}"]
[tools.typed.params.i]
type = "integer"
[tools.typed.params.n]
type = "number"
[tools.typed.params.b]
type = "boolean"

[tools.cat]
description = "standard input"
command = ["cat", "-A"]
[tools.cat.params.stdin]
type = "string"
required = true

[tools.tee]
description = "standard input by flag"
command = ["tee", "{file}"]
[tools.tee.params.text]
type = "string"
stdin = true
max_length = 5
[tools.tee.params.file]
type = "string"
"#;

fn tool(name: &str) -> Tool {
    policy(TOOLS).tool(name).unwrap().clone()
}

fn input(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}

fn bind(name: &str, value: Value) -> Result<BoundCall, String> {
    tool(name).bind(&input(value)).map_err(|e| {
        assert!(!e.param.is_empty() || e.message.contains("tool"), "{e:?}");
        e.to_string()
    })
}

fn argv(name: &str, value: Value) -> Vec<String> {
    bind(name, value).unwrap().argv
}

#[test]
fn params_are_declared_in_order_with_their_constraints() {
    let grep = tool("grep");
    let names: Vec<&str> = grep.params.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["pattern", "files", "count"]);
    assert_eq!(grep.params[0].kind, ParamType::String);
    assert!(grep.params[0].required);
    assert_eq!(grep.params[0].pattern.as_deref(), Some("^[a-z]+$"));
    assert_eq!(grep.params[1].kind, ParamType::Array);
    assert!(!grep.params[1].required);
    assert_eq!(
        grep.params[2].choices,
        Some(vec!["-c".to_string(), "-n".to_string()])
    );
    assert!(tool("cat").params[0].stdin, "named stdin");
    assert!(tool("tee").params[0].stdin, "stdin = true");
    assert!(!tool("tee").params[1].stdin);
}

#[test]
fn a_value_is_one_argument_never_split_or_interpreted() {
    let hostile = "a b; rm -rf / 'q\" $(id) `id` \\ *";
    let mut long = tool("shell");
    long.params[0].max_length = None;
    let bound = long.bind(&input(json!({ "command": hostile }))).unwrap();
    assert_eq!(bound.argv, ["sh", "-c", hostile]);
    assert_eq!(bound.stdin, None);
    assert_eq!(
        argv(
            "grep",
            json!({ "pattern": "abc", "files": ["x y", "-z", ""] })
        ),
        ["grep", "-e", "abc", "--", "x y", "-z", ""]
    );
}

#[test]
fn optional_absent_drops_its_element_and_null_is_absent() {
    assert_eq!(
        argv("grep", json!({ "pattern": "abc" })),
        ["grep", "-e", "abc", "--"]
    );
    assert_eq!(
        argv(
            "grep",
            json!({ "pattern": "abc", "files": null, "count": null })
        ),
        ["grep", "-e", "abc", "--"]
    );
    assert_eq!(
        argv(
            "grep",
            json!({ "pattern": "abc", "files": [], "count": "-c" })
        ),
        ["grep", "-c", "-e", "abc", "--"]
    );
}

#[test]
fn args_are_appended_last() {
    assert_eq!(
        argv(
            "grep",
            json!({ "pattern": "abc", "files": ["f"], "args": ["-i", "g"] })
        ),
        ["grep", "-e", "abc", "--", "f", "-i", "g"]
    );
    let err = bind("grep", json!({ "pattern": "abc", "args": "-i" })).unwrap_err();
    assert_eq!(
        err,
        "parameter `args` must be an array of strings, got \"-i\""
    );
    let err = bind("shell", json!({ "command": "x", "args": ["y"] })).unwrap_err();
    assert!(err.contains("takes no extra arguments"), "{err}");
}

#[test]
fn types_are_rendered_as_arguments() {
    assert_eq!(
        argv("typed", json!({ "i": -7, "n": 1.5, "b": true })),
        ["printf", "%s|", "-7", "1.5", "true", "{}"]
    );
    assert_eq!(
        argv("typed", json!({ "i": 3.0, "n": 2, "b": false })),
        ["printf", "%s|", "3", "2", "false", "{}"]
    );
    assert_eq!(
        argv("typed", json!({ "i": u64::MAX })),
        ["printf", "%s|", u64::MAX.to_string().as_str(), "{}"]
    );
}

#[test]
fn wrong_values_are_refused_naming_the_parameter() {
    let cases = [
        (
            "typed",
            json!({ "i": "x" }),
            "parameter `i` must be an integer, got \"x\"",
        ),
        (
            "typed",
            json!({ "i": 1.5 }),
            "parameter `i` must be an integer, got 1.5",
        ),
        (
            "typed",
            json!({ "n": "1" }),
            "parameter `n` must be a number, got \"1\"",
        ),
        (
            "typed",
            json!({ "b": "true" }),
            "parameter `b` must be a boolean (true or false), got \"true\"",
        ),
        (
            "typed",
            json!({ "b": 1 }),
            "parameter `b` must be a boolean (true or false), got 1",
        ),
        (
            "grep",
            json!({ "pattern": "ABC" }),
            "parameter `pattern` must match the pattern \"^[a-z]+$\", got \"ABC\"",
        ),
        (
            "grep",
            json!({ "pattern": "a", "count": "-v" }),
            "parameter `count` must be one of \"-c\", \"-n\", got \"-v\"",
        ),
        (
            "grep",
            json!({ "pattern": "a", "files": ["ok", 3] }),
            "parameter `files` must be an array of strings, got [\"ok\",3]",
        ),
        (
            "grep",
            json!({ "pattern": "a", "files": "one" }),
            "parameter `files` must be an array of strings, got \"one\"",
        ),
        (
            "grep",
            json!({ "files": [] }),
            "parameter `pattern` is required: a string",
        ),
        (
            "shell",
            json!({}),
            "parameter `command` is required: a string (the command line)",
        ),
        (
            "shell",
            json!({ "command": "x".repeat(21) }),
            "parameter `command` is too long: 21 characters, at most 20 allowed",
        ),
        (
            "shell",
            json!({ "command": ["ls"] }),
            "parameter `command` must be a string, got [\"ls\"]",
        ),
        (
            "shell",
            json!({ "command": "ls", "cwd": "/" }),
            "unknown parameter `cwd` for tool `shell`; it takes `command`",
        ),
        (
            "cat",
            json!({ "stdin": "a", "x": 1 }),
            "unknown parameter `x` for tool `cat`; it takes `stdin`",
        ),
    ];
    for (name, value, expected) in cases {
        let err = bind(name, value.clone()).unwrap_err();
        assert_eq!(err, expected, "{name} {value}");
    }
}

#[test]
fn a_value_too_long_for_one_argument_is_refused_but_stdin_is_not() {
    let big = "x".repeat(200_000);
    let mut shell = tool("shell");
    shell.params[0].max_length = None;
    let err = shell
        .bind(&input(json!({ "command": big })))
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "parameter `command` is too long for one argument: 200000 bytes, at most 131071"
    );
    let err = bind("grep", json!({ "pattern": "a", "files": ["f", big] })).unwrap_err();
    assert!(err.starts_with("parameter `files` is too long"), "{err}");
    let err = bind("grep", json!({ "pattern": "a", "args": [big] })).unwrap_err();
    assert!(err.starts_with("parameter `args` is too long"), "{err}");
    let bound = bind("cat", json!({ "stdin": big })).unwrap();
    assert_eq!(bound.stdin.map(|s| s.len()), Some(200_000));
}

#[test]
fn max_length_counts_characters() {
    assert!(bind("shell", json!({ "command": "é".repeat(20) })).is_ok());
    assert!(bind("shell", json!({ "command": "é".repeat(21) })).is_err());
}

#[test]
fn nul_bytes_are_refused_everywhere() {
    let err = bind("shell", json!({ "command": "a\u{0}b" })).unwrap_err();
    assert_eq!(
        err,
        "parameter `command` contains a NUL byte, which no argument can hold"
    );
    let err = bind("grep", json!({ "pattern": "a", "files": ["\u{0}"] })).unwrap_err();
    assert!(err.contains("`files` contains a NUL byte"), "{err}");
    let err = bind("grep", json!({ "pattern": "a", "args": ["\u{0}"] })).unwrap_err();
    assert!(err.contains("`args` contains a NUL byte"), "{err}");
    let err = bind("cat", json!({ "stdin": "\u{0}" })).unwrap_err();
    assert!(err.contains("`stdin` contains a NUL byte"), "{err}");
}

#[test]
fn a_long_value_is_cut_short_in_the_message() {
    let err = bind("typed", json!({ "i": "9".repeat(10_000) })).unwrap_err();
    assert!(err.len() < 200, "{err}");
    assert!(err.ends_with("…"), "{err}");
}

#[test]
fn stdin_parameters_feed_standard_input() {
    let bound = bind("cat", json!({ "stdin": "line 1\nline 2" })).unwrap();
    assert_eq!(bound.argv, ["cat", "-A"]);
    assert_eq!(bound.stdin.as_deref(), Some(&b"line 1\nline 2"[..]));
    let bound = bind("tee", json!({ "text": "hi", "file": "/tmp/x" })).unwrap();
    assert_eq!(bound.argv, ["tee", "/tmp/x"]);
    assert_eq!(bound.stdin.as_deref(), Some(&b"hi"[..]));
    let bound = bind("tee", json!({})).unwrap();
    assert_eq!(bound.stdin, None, "absent: nothing to read");
    assert!(bind("tee", json!({ "text": "toolong" }))
        .unwrap_err()
        .contains("at most 5"));
}

#[test]
fn the_schema_shows_every_parameter_and_nothing_else() {
    assert_eq!(
        tool("grep").input_schema(),
        json!({
            "type": "object",
            "properties": {
                "pattern": { "type": "string", "pattern": "^[a-z]+$" },
                "files": { "type": "array", "items": { "type": "string" }, "description": "paths" },
                "count": { "type": "string", "enum": ["-c", "-n"] },
                "args": {
                    "type": "array",
                    "items": { "type": "string" },
                    "description": "extra arguments appended to the command",
                },
            },
            "required": ["pattern"],
            "additionalProperties": false,
        })
    );
    assert_eq!(
        tool("shell").input_schema(),
        json!({
            "type": "object",
            "properties": {
                "command": { "type": "string", "description": "the command line", "maxLength": 20 },
            },
            "required": ["command"],
            "additionalProperties": false,
        })
    );
    let typed = tool("typed").input_schema();
    assert_eq!(typed["properties"]["i"], json!({ "type": "integer" }));
    assert_eq!(typed["properties"]["n"], json!({ "type": "number" }));
    assert_eq!(typed["properties"]["b"], json!({ "type": "boolean" }));
    assert!(typed.get("required").is_none(), "{typed}");
}

#[test]
fn a_tool_without_params_takes_an_empty_object() {
    let plain = policy("[tools.t]\ndescription = \"t\"\ncommand = [\"true\"]\n");
    let t = plain.tool("t").unwrap();
    assert_eq!(
        t.input_schema(),
        json!({ "type": "object", "properties": {}, "additionalProperties": false })
    );
    assert_eq!(t.bind(&Map::new()).unwrap().argv, ["true"]);
    assert!(t.bind(&input(json!({ "a": 1 }))).is_err());
}

#[test]
fn resolve_binds_the_invocation_and_extra_args_are_args() {
    let p = policy(TOOLS);
    let spec = p
        .resolve(
            "grep",
            &Invocation {
                params: input(json!({ "pattern": "abc" })),
                extra_args: vec!["-i".into()],
                ..Invocation::default()
            },
        )
        .unwrap();
    assert_eq!(spec.command, ["grep", "-e", "abc", "--", "-i"]);
    let twice = p
        .resolve(
            "grep",
            &Invocation {
                params: input(json!({ "pattern": "abc", "args": [] })),
                extra_args: vec!["-i".into()],
                ..Invocation::default()
            },
        )
        .unwrap_err();
    assert!(twice.to_string().contains("given twice"), "{twice}");
    let missing = p.resolve("shell", &Invocation::default()).unwrap_err();
    assert!(
        matches!(&missing, Error::Param { tool, error } if tool == "shell" && error.param == "command"),
        "{missing:?}"
    );
    assert_eq!(
        missing.to_string(),
        "parameter `command` is required: a string (the command line)"
    );
}

#[test]
fn stdin_goes_through_resolve_call_only() {
    let p = policy(TOOLS);
    let invocation = Invocation {
        params: input(json!({ "stdin": "data" })),
        ..Invocation::default()
    };
    let resolved = p.resolve_call("cat", &invocation).unwrap();
    assert_eq!(resolved.spec.command, ["cat", "-A"]);
    assert_eq!(resolved.stdin.as_deref(), Some(&b"data"[..]));
    // A caller that would drop it is refused, never silently run without it.
    let err = p.resolve("cat", &invocation).unwrap_err();
    assert!(
        matches!(&err, Error::StdinDropped { param, .. } if param == "stdin"),
        "{err:?}"
    );
    // Absent: `resolve` is fine.
    assert!(p.resolve("tee", &Invocation::default()).is_ok());
}

#[test]
fn the_scope_alone_needs_no_values() {
    let spec = policy(TOOLS)
        .resolve_scope("shell", &Invocation::default())
        .unwrap();
    assert_eq!(spec.workdir, std::path::PathBuf::from("/work"));
}

/// The parse error for a policy with one tool `t` whose command and params are as given.
fn refused(command: &str, params: &str) -> String {
    let text = format!("[tools.t]\ndescription = \"t\"\ncommand = {command}\n{params}");
    match parse(&text) {
        Ok(_) => panic!("parsed:\n{text}"),
        Err(d) => d.to_string(),
    }
}

const P: &str = "[tools.t.params.p]\ntype = \"string\"\n";

#[test]
fn placeholders_must_be_whole_declared_and_used() {
    let cases = [
        (
            r#"["echo", "--x={p}"]"#,
            P,
            "a placeholder must be a whole argument, not part of \"--x={p}\"",
        ),
        (
            r#"["echo", "{p}.txt", "{p}"]"#,
            P,
            "not part of \"{p}.txt\"",
        ),
        (r#"["echo", "{q}", "{p}"]"#, P, "unknown placeholder `{q}`"),
        (
            r#"["echo"]"#,
            P,
            "parameter `p` of [tools.t] is declared but not used",
        ),
        (
            r#"["{p}"]"#,
            P,
            "the program in `command` of [tools.t] is a placeholder",
        ),
        (r#"["echo", "{p}", "{p}"]"#, P, "`{p}` is used twice"),
        (r#"["echo", "{", "{p}"]"#, P, "unmatched `{`"),
        (r#"["echo", "}", "{p}"]"#, P, "unmatched `}`"),
        (
            r#"["echo", "{}", "{p}"]"#,
            P,
            "`{}` is not a valid placeholder",
        ),
        (
            r#"["echo", "{ p }", "{p}"]"#,
            P,
            "`{ p }` is not a valid placeholder",
        ),
        (
            r#"["echo", "{args}", "{p}"]"#,
            P,
            "arguments always come last",
        ),
        (
            r#"["echo", "{stdin}"]"#,
            "[tools.t.params.stdin]\ntype = \"string\"\n",
            "feeds standard input, so `{stdin}` cannot be an argument",
        ),
        (r#"["find", "{}"]"#, "", "`{}` is not a valid placeholder"),
    ];
    for (command, params, fragment) in cases {
        let err = refused(command, params);
        assert!(err.contains(fragment), "{command}: {err}");
        // Where, compiler-style.
        assert!(err.contains("tools.toml:"), "{err}");
    }
}

#[test]
fn literal_braces_are_doubled() {
    let p = policy(
        "[tools.t]\ndescription = \"t\"\ncommand = [\"find\", \".\", \"-exec\", \"echo\", \"{{}}\", \";\", \"{{p}}\"]\n",
    );
    assert_eq!(
        p.tool("t").unwrap().bind(&Map::new()).unwrap().argv,
        ["find", ".", "-exec", "echo", "{}", ";", "{p}"]
    );
}

#[test]
fn declarations_are_checked() {
    let t = |params: &str| refused(r#"["echo", "{p}"]"#, params);
    let cases = [
        ("[tools.t.params.p]\n", "[tools.t.params.p] has no `type`"),
        ("[tools.t.params.p]\ntype = \"str\"\n", "invalid `type` in [tools.t.params.p] \"str\"; valid values: \"string\", \"integer\", \"number\", \"boolean\", \"array\""),
        ("[tools.t.params.p]\ntype = 1\n", "`type` in [tools.t.params.p] must be a string"),
        ("[tools.t.params.p]\ntype = \"integer\"\npattern = \"x\"\n", "`pattern` in [tools.t.params.p] applies to strings only, and `p` is an integer"),
        ("[tools.t.params.p]\ntype = \"array\"\nenum = [\"x\"]\n", "`enum` in [tools.t.params.p] applies to strings only"),
        ("[tools.t.params.p]\ntype = \"boolean\"\nmax_length = 3\n", "`max_length` in [tools.t.params.p] applies to strings only"),
        ("[tools.t.params.p]\ntype = \"string\"\npattern = \"(\"\n", "`pattern` in [tools.t.params.p] does not compile: unclosed group"),
        ("[tools.t.params.p]\ntype = \"string\"\nenum = []\n", "`enum` in [tools.t.params.p] is empty"),
        ("[tools.t.params.p]\ntype = \"string\"\nenum = [\"a\", \"a\"]\n", "duplicate value \"a\""),
        ("[tools.t.params.p]\ntype = \"string\"\nmax_length = -1\n", "`max_length` in [tools.t.params.p] must be a whole number"),
        ("[tools.t.params.p]\ntype = \"string\"\nrequired = \"yes\"\n", "`required` in [tools.t.params.p] must be a boolean"),
        ("[tools.t.params.p]\ntype = \"string\"\nmandatory = true\n", "unknown key `mandatory` in [tools.t.params.p]"),
        ("[tools.t.params.p]\ntype = \"string\"\n[tools.t.params.1x]\ntype = \"string\"\n", "invalid parameter name \"1x\""),
        ("[tools.t.params.p]\ntype = \"string\"\n[tools.t.params.args]\ntype = \"array\"\n", "invalid parameter name \"args\""),
        ("[tools.t.params.p]\ntype = \"string\"\n[tools.t.params.in]\ntype = \"integer\"\nstdin = true\n", "feeds standard input, so its type must be \"string\""),
        ("[tools.t.params.p]\ntype = \"string\"\n[tools.t.params.a]\ntype = \"string\"\nstdin = true\n[tools.t.params.stdin]\ntype = \"string\"\n", "more than one stdin parameter (a, stdin)"),
        ("[tools.t.params.p]\ntype = \"string\"\n[tools.t.params.stdin]\ntype = \"string\"\nstdin = false\n", "a parameter named `stdin` always feeds standard input"),
    ];
    for (params, fragment) in cases {
        let err = t(params);
        assert!(err.contains(fragment), "{params}: {err}");
    }
    let err = refused("[\"echo\"]\nparams = 3", "");
    assert!(
        err.contains("`params` in [tools.t] must be a table, not an integer"),
        "{err}"
    );
}

#[test]
fn every_problem_is_reported_at_once() {
    let err = refused(
        r#"["echo", "{q}", "--x={p}"]"#,
        "[tools.t.params.p]\ntype = \"integer\"\npattern = \"x\"\n[tools.t.params.r]\ntype = \"string\"\n",
    );
    for fragment in [
        "unknown placeholder `{q}`",
        "not part of \"--x={p}\"",
        "applies to strings only",
        "parameter `r` of [tools.t] is declared but not used",
    ] {
        assert!(err.contains(fragment), "{fragment}: {err}");
    }
}
