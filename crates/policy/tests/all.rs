//! The policy crate's integration tests: the example policies, a corpus of bad policies,
//! resolution of invocations, the lint, and random mutations that must
//! never panic.

// Helpers outside `#[test]` fns are not covered by clippy.toml's allow-unwrap-in-tests:
// a test (and its helpers) should stop at the first unexpected error, showing it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod suite;
