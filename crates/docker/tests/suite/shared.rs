//! Helpers both Docker-running test binaries use: the docker backend's suite and the CLI's
//! suite (which includes this file with `#[path]`, as it does `test_image`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

/// Serialises the heavy tests under plain `cargo test`, where all tests are threads of one
/// process. Under nextest each test is its own process and the `heavy` test group does this.
pub fn serialise_heavy() -> MutexGuard<'static, ()> {
    static HEAVY: Mutex<()> = Mutex::new(());
    // A heavy test that failed still released the machine; its panic is reported on its own.
    HEAVY
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A string no other test or run uses, to find the processes or containers a run started.
pub fn unique_token(what: &str) -> String {
    static COUNT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "nctest-{what}-{}-{}-{nanos}",
        std::process::id(),
        COUNT.fetch_add(1, Ordering::Relaxed)
    )
}
