//! The policy parser on any text: parse errors are diagnostics, never a panic; a policy
//! that parses resolves each tool (or refuses it) and describes its input schema.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use nanoclaw_policy::{Invocation, Policy};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Policy::parse(text, Path::new("tools.toml"), Path::new("/srv/policies")) {
        Ok(policy) => {
            for tool in policy.tools() {
                let _ = tool.input_schema();
                let _ = policy.resolve(&tool.name, &Invocation::default());
            }
        }
        Err(diagnostics) => {
            let _ = diagnostics.to_string();
        }
    }
});
