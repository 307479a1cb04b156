//! The audit log's integration tests: real files in temporary directories, real
//! processes writing to them concurrently and being killed.

// Helpers outside `#[test]` fns are not covered by clippy.toml's allow-unwrap-in-tests:
// a test (and its helpers) should stop at the first unexpected error, showing it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod suite;

/// Not a test on its own: the writer process that the concurrency and crash tests start
/// by re-running this binary with `AUDIT_WRITER` set (see `suite::spawn_writer`).
#[test]
fn writer_child() {
    suite::run_writer_if_asked();
}
