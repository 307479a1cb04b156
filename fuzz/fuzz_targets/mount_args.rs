//! `nanoclaw run`'s `-v`, `--mount` and `--tmpfs` parsers on any text: a mount whose
//! target is absolute, or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
// The file itself rather than the `nanoclaw` package's lib target: that package depends on
// every crate of the workspace (tokio, bollard, rustls, ...), all of which would be built
// with the fuzzer's instrumentation for three small parsers.
#[path = "../../crates/cli/src/args.rs"]
mod args;

use args::{parse_mount, parse_tmpfs, parse_volume};

fuzz_target!(|text: &str| {
    for mount in [parse_volume(text), parse_mount(text)]
        .into_iter()
        .flatten()
    {
        assert!(mount.dst.is_absolute(), "{text:?}: {mount:?}");
        assert!(mount.src.is_absolute(), "{text:?}: {mount:?}");
    }
    if let Ok(tmpfs) = parse_tmpfs(text) {
        assert!(tmpfs.dst.is_absolute(), "{text:?}: {tmpfs:?}");
    }
});
