//! The egress proxy's integration tests: real upstreams (Python's http.server, a TLS
//! server with a certificate made at test time) on loopback and in a network namespace
//! the tests create, real clients (curl, Python) through the proxy's Unix socket bridged
//! to a loopback port. Needs root (for `ip netns`), python3, curl and openssl.

// Helpers outside `#[test]` fns are not covered by clippy.toml's allow-unwrap-in-tests:
// a test (and its helpers) should stop at the first unexpected error, showing it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod suite;
