//! Black-box tests of the `nanoclaw` binary: every test runs the built binary as a user
//! would, against the real kernel, and judges only what comes out (exit status, output,
//! `--json`, files on the host, processes, cgroups and mounts left behind).
//!
//! The escape probes in `suite::conformance` run once per backend, so every backend is held
//! to the same expected results. The docker variants (`…::docker::…`) need the Docker
//! Engine and the docker CLI: their sandboxes run the test image (`suite::test_image`,
//! Debian's static busybox and the static nanoclaw as the probe), and after every run no
//! container of it may be left. Tests whose names start with `heavy_` (memory, fork bomb,
//! CPU, timeouts) run one at a time: `.config/nextest.toml` puts them in a test group, and
//! under plain `cargo test` they take a lock (`support::serialise_heavy`).

// A test helper should stop at the first unexpected error and show it; clippy.toml's
// allow-unwrap-in-tests does not cover code outside `#[test]` functions.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod suite;
