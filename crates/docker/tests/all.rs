//! Tests of the docker backend against the real Docker Engine: every test runs real
//! containers through `DockerBackend` and judges what comes out (the outcome, probe reports,
//! files on the host, processes and containers left behind).
//!
//! The test image is built once per test binary from Debian's static busybox and the static
//! (musl) nanoclaw binary, which serves as the probe (`support::test_image`). When the engine
//! is not reachable every test fails and says so; none is skipped. When the binary exits, it
//! checks that no container of its own is left (`support::check_nothing_left_at_exit`).
//!
//! Tests whose names start with `heavy_` (memory, fork bomb, timeouts) run one at a time
//! under a lock (`support::serialise_heavy`).

// A test helper should stop at the first unexpected error and show it; clippy.toml's
// allow-unwrap-in-tests does not cover code outside `#[test]` functions.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod suite;
