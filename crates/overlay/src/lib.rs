//! Host-side file system work on mount sources, shared by the backends.
//!
//! `source` opens a mount source exactly once, refusing any symlink on the way, so that
//! what was checked is what is mounted. `Writes` turns a run's writable mounts into
//! overlays whose changes land in one bounded area (`area`), the run's write budget, and
//! reach the host only after the run (`apply`), which refuses what could act on the host
//! later: `.git` entries, links out of the mount, device nodes, set-id bits.
//!
//! This crate must never follow a symlink in a path it was handed or found in a sandbox's
//! writes, and never write outside the mount source it applies to.

mod apply;
mod area;
pub mod source;
mod sys;
mod writes;

pub use source::{open as open_source, SourceError};
pub use writes::{dead_runs, reap_stale, Writes, STAGING_ROOT};

/// A run's write budget over all its writable mounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    pub bytes: u64,
    pub files: u64,
}

/// A failed step of staging or applying writes, naming what failed.
#[derive(Debug)]
pub struct Error {
    pub what: String,
    pub source: std::io::Error,
}

impl Error {
    pub(crate) fn io(what: impl Into<String>, error: impl Into<std::io::Error>) -> Error {
        Error {
            what: what.into(),
            source: error.into(),
        }
    }

    pub(crate) fn other(what: impl Into<String>, message: impl Into<String>) -> Error {
        Error {
            what: what.into(),
            source: std::io::Error::other(message.into()),
        }
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.what, self.source)
    }
}

impl std::error::Error for Error {}
