//! Any input through parse, lint, resolve and parameter binding, and every rendering: none
//! may panic.
//! Seed it with the examples: `cargo fuzz run policy ../../examples`.

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use nanoclaw_policy::{lint, Invocation, Policy};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let policy = match Policy::parse(text, Path::new("fuzz.toml"), Path::new("/srv/policies")) {
        Ok(policy) => policy,
        Err(diagnostics) => {
            let _ = diagnostics.to_string();
            return;
        }
    };
    let _ = lint(&policy).to_string();
    let invocation = Invocation {
        workspace: Some("/srv/nanoclaw-fuzz-workspace".into()),
        extra_args: vec!["x".into()],
        ..Invocation::default()
    };
    for tool in policy.tools() {
        if let Err(e) = policy.resolve(&tool.name, &invocation) {
            let _ = e.to_string();
        }
        // Every parameter given the same value of each JSON type: bind never panics.
        let _ = tool.input_schema().to_string();
        for value in [
            serde_json::json!("x y"),
            serde_json::json!(["a", "-b"]),
            serde_json::json!(-3),
            serde_json::json!(2.5),
            serde_json::json!(true),
            serde_json::Value::Null,
        ] {
            let input = tool
                .params
                .iter()
                .map(|p| (p.name.clone(), value.clone()))
                .collect();
            if let Err(e) = tool.bind(&input) {
                let _ = e.to_string();
            }
        }
    }
});
