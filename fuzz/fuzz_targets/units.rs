//! The size, duration and CPU parsers on any text: a value or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let _ = nanoclaw_spec::parse_bytes(text);
    let _ = nanoclaw_spec::parse_duration(text);
    let _ = nanoclaw_spec::parse_cpus(text);
});
