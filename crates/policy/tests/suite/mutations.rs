//! Thousands of random mutations of the example and bad policies go through parse, lint,
//! resolve and every rendering without a panic. A tiny deterministic PRNG keeps failures
//! reproducible without a dependency; crates/policy/fuzz does the same open-ended.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::time::Duration;

use nanoclaw_policy::{lint, Invocation, Narrowing, Policy};
use serde_json::{json, Map, Value};

use super::{examples, repo_root, TempDir};

/// xorshift64*: small, fast, and the same sequence on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Bytes that change TOML structure or policy meaning when dropped in.
const INTERESTING: &[&[u8]] = &[
    b"[",
    b"]",
    b"[[",
    b"]]",
    b"\"",
    b"'",
    b"=",
    b"\n",
    b".",
    b",",
    b"{",
    b"}",
    b"#",
    b"\\",
    b"${workspace}",
    b"${policy_dir}",
    b"${",
    b"..",
    b"/",
    b"\0",
    b"\\u0000",
    b"0",
    b"-1",
    b"99999999999999999999999",
    b"1e309",
    b"nan",
    b"inf",
    b"\"rw\"",
    b"\"host\"",
    b"*.",
    b"{p}",
    b"{{",
    b"\"{files}\"",
    b"stdin = true",
    b"[tools.t.params.p]",
    b":",
    b"[tools.x]\ncommand = [\"a\"]\n",
    b"[[tools.x.mounts]]\n",
    b"\xc3\xa9",
    b"\xff",
    b"\r\n",
    b"\t",
    b"\"\"\"",
    b"0x10",
    b"true",
    b"1979-05-27T07:32:00Z",
];

fn mutate(rng: &mut Rng, input: &[u8], others: &[Vec<u8>]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..=rng.below(4) {
        let at = rng.below(out.len() + 1);
        match rng.below(6) {
            0 if !out.is_empty() => {
                let i = at.min(out.len() - 1);
                out[i] ^= 1 << rng.below(8);
            }
            1 => {
                let piece = INTERESTING[rng.below(INTERESTING.len())];
                out.splice(at..at, piece.iter().copied());
            }
            2 if !out.is_empty() => {
                let end = (at + rng.below(16)).min(out.len());
                out.drain(at.min(end)..end);
            }
            3 => {
                let other = &others[rng.below(others.len())];
                let start = rng.below(other.len());
                let end = (start + rng.below(64)).min(other.len());
                out.splice(at..at, other[start..end].iter().copied());
            }
            4 if !out.is_empty() => {
                let start = rng.below(out.len());
                let end = (start + rng.below(40)).min(out.len());
                let copy = out[start..end].to_vec();
                out.splice(at..at, copy);
            }
            _ => out.push(rng.next() as u8),
        }
    }
    out
}

/// A policy with parameters of every kind, mutated as the examples are.
const PARAMS_SEED: &str = r#"
[tools.grep]
description = "search"
command = ["grep", "{count}", "-e", "{pattern}", "--", "{files}", "{{}}"]
args = "append"
[tools.grep.params.pattern]
type = "string"
required = true
pattern = "^[a-z]+$"
max_length = 10
[tools.grep.params.files]
type = "array"
[tools.grep.params.count]
type = "string"
enum = ["-c", "-n"]
[tools.typed]
command = ["printf", "{i}", "{n}", "{b}"]
[tools.typed.params.i]
type = "integer"
[tools.typed.params.n]
type = "number"
[tools.typed.params.b]
type = "boolean"
[tools.typed.params.stdin]
type = "string"
"#;

/// Every parameter of `tool` given `value`.
fn all_params(tool: &nanoclaw_policy::Tool, value: &Value) -> Map<String, Value> {
    tool.params
        .iter()
        .map(|p| (p.name.clone(), value.clone()))
        .collect()
}

/// Everything a caller could do with a policy text.
fn exercise(text: &str, workspace: &Path) {
    let policy = match Policy::parse(text, Path::new("m.toml"), Path::new("/srv/p")) {
        Ok(policy) => policy,
        Err(diagnostics) => {
            let _ = diagnostics.to_string();
            let _ = serde_json::to_string(&diagnostics);
            return;
        }
    };
    let report = lint(&policy);
    let _ = report.to_string();
    let _ = serde_json::to_string(&report);
    let narrowing = Narrowing {
        memory: Some(1 << 20),
        cpus: Some(100),
        pids: Some(2),
        timeout: Some(Duration::from_secs(1)),
        output: Some(1),
        write_bytes: Some(1 << 20),
        write_files: Some(10),
    };
    for tool in policy.tools() {
        let _ = tool.input_schema().to_string();
        for value in [
            json!("abc"),
            json!(["a", "b"]),
            json!(3),
            json!(-1.5),
            json!(true),
            Value::Null,
            json!({}),
        ] {
            let input = all_params(tool, &value);
            match tool.bind(&input) {
                Ok(bound) => assert!(!bound.argv.is_empty(), "{:?}", tool.command),
                Err(e) => assert!(!e.to_string().is_empty()),
            }
            let invocation = Invocation {
                params: input,
                ..Invocation::default()
            };
            if let Err(e) = policy.resolve_call(&tool.name, &invocation) {
                let _ = e.to_string();
            }
        }
        for invocation in [
            Invocation::default(),
            Invocation {
                workspace: Some(workspace.to_path_buf()),
                extra_args: vec!["x".into()],
                narrowing,
                ..Invocation::default()
            },
        ] {
            match policy.resolve(&tool.name, &invocation) {
                Ok(spec) => {
                    let _ = nanoclaw_policy::spec_sha256(&spec);
                }
                Err(e) => {
                    let _ = e.to_string();
                }
            }
        }
    }
    let _ = policy.tool("no-such-tool").map_err(|e| e.to_string());
}

#[test]
fn random_mutations_never_panic() {
    let workspace = TempDir::new("mutations");
    let mut seeds: Vec<Vec<u8>> = examples()
        .iter()
        .map(|p| std::fs::read(p).unwrap())
        .collect();
    seeds.push(PARAMS_SEED.as_bytes().to_vec());
    let examples_count = seeds.len();
    for entry in std::fs::read_dir(repo_root().join("crates/policy/tests/bad")).unwrap() {
        seeds.push(std::fs::read(entry.unwrap().path()).unwrap());
    }
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut runs = 0;
    for (i, seed) in seeds.iter().enumerate() {
        let rounds = if i < examples_count { 1500 } else { 60 };
        for _ in 0..rounds {
            let mutant = mutate(&mut rng, seed, &seeds);
            let text = String::from_utf8_lossy(&mutant);
            let outcome = catch_unwind(AssertUnwindSafe(|| exercise(&text, workspace.path())));
            assert!(outcome.is_ok(), "panicked on input:\n{text:?}");
            runs += 1;
        }
    }
    assert!(runs > 5000, "{runs}");
}

#[test]
fn a_file_that_is_not_utf8_is_an_error_not_a_panic() {
    let dir = TempDir::new("utf8");
    let path = dir.join("bad.toml");
    std::fs::write(&path, b"[tools.a]\ncommand = [\"\xff\"]\n").unwrap();
    let err = Policy::load(&path).unwrap_err();
    assert!(err.to_string().contains("not valid UTF-8"), "{err}");
    let err = Policy::load(&dir.join("missing.toml")).unwrap_err();
    assert!(err.to_string().contains("cannot read policy file"), "{err}");
}
