//! One run of a sandbox, the same code path for every backend (`dyn Backend`): the audit
//! start record, the backend's run, the audit end record.
//!
//! The start record's fsync overlaps the sandbox's build: the backend calls the commit
//! callback while it prepares, and never starts the command unless the record is on disk.
//! Who the run is for (tool, invocation id) travels in the spec; what the backend could not
//! do as asked comes back in `Outcome::warnings`.
//!
//! This crate must never run a command without its start record (unless the caller chose
//! `Recorder::disabled`, `--no-audit`), nor hand an outcome to the caller whose end record
//! could not be written. No async, no network: choosing the backend and everything around
//! the run (secrets, egress proxy, output) is the caller's.

mod record;

use nanoclaw_audit::SecretUse;
use nanoclaw_spec::{Backend, BackendError, IoMode, Outcome, SandboxSpec};

pub use record::{Origin, Recorder, COMMAND_LINE_TOOL};

/// The exit status of a run the runner itself could not carry out.
pub const RUNNER_ERROR: i32 = 125;

/// Why a run has no outcome for the caller: the exit status and the message for the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub status: i32,
    pub message: String,
}

impl Failure {
    fn runner(message: impl Into<String>) -> Self {
        Failure {
            status: RUNNER_ERROR,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

/// What the audit record says about a run beyond its spec.
#[derive(Debug, Clone, Copy, Default)]
pub struct Request<'a> {
    pub io: IoMode,
    /// The secrets handed to the run (names, sources, fingerprints; never values).
    pub secrets: &'a [SecretUse],
    /// The run's timeout is its shortest secret's ttl: a timeout means that secret expired.
    pub ttl_bounds_run: bool,
}

/// A run whose start and end records are on disk (or that `--no-audit` left unrecorded).
#[derive(Debug)]
pub struct Ended<T> {
    /// The start record's seq; `None` without an audit log.
    pub seq: Option<u64>,
    /// How the run ended: an outcome, or the backend's error after the start record.
    pub result: Result<Outcome, BackendError>,
    /// What `settle` returned.
    pub settled: T,
}

/// Runs `spec` on `backend`, recorded by `recorder`. `settle` runs once the backend is done
/// and before the end record (the caller's egress proxy flushes its records there).
/// A backend that refuses the spec before starting anything gets a `policy.refused` record
/// and a `Failure` with its exit status.
pub fn run<T>(
    backend: &dyn Backend,
    recorder: &Recorder,
    spec: &mut SandboxSpec,
    request: Request<'_>,
    settle: impl FnOnce() -> T,
) -> Result<Ended<T>, Failure> {
    spec.invocation = recorder.invocation();
    let spec = &*spec;
    let mut started = None;
    let mut audit_error = None;
    let result = backend.run(spec, request.io, &mut || match recorder.start(
        spec,
        backend.name(),
        request.io,
        request.secrets,
    ) {
        Ok(start) => {
            started = Some(start);
            Ok(())
        }
        Err(message) => {
            audit_error = Some(message.clone());
            Err(BackendError::io(
                "record the invocation",
                std::io::Error::other(message),
            ))
        }
    });
    let result = result.map(|mut outcome| {
        outcome.secret_expired = request.ttl_bounds_run && outcome.timed_out;
        outcome
    });
    let settled = settle();
    let Some(started) = started else {
        // Nothing started: the start record could not be written, or the backend refused
        // the spec before asking for it.
        return Err(match (audit_error, result) {
            (Some(message), _) => Failure::runner(message),
            (None, Err(error)) => Failure {
                status: error.exit_status(),
                message: recorder.refused(&error.to_string()),
            },
            (None, Ok(_)) => Failure::runner("the backend ran without committing the invocation"),
        });
    };
    let seq = started.seq;
    recorder.end(started, &result).map_err(Failure::runner)?;
    Ok(Ended {
        seq,
        result,
        settled,
    })
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::path::Path;

    use nanoclaw_spec::{Captured, Enforced, Usage};

    use super::*;

    /// A backend that refuses, or commits and ends with `exit`; it remembers the
    /// invocation it was given.
    struct Fake {
        refuse: bool,
        seen: RefCell<Option<nanoclaw_spec::Invocation>>,
    }

    impl Backend for Fake {
        fn name(&self) -> &'static str {
            "fake"
        }

        fn run(
            &self,
            spec: &SandboxSpec,
            _io: IoMode,
            commit: &mut dyn FnMut() -> Result<(), BackendError>,
        ) -> Result<Outcome, BackendError> {
            if self.refuse {
                return Err(BackendError::Invalid("no".into()));
            }
            commit()?;
            *self.seen.borrow_mut() = Some(spec.invocation.clone());
            Ok(Outcome {
                exit_code: Some(0),
                signal: None,
                timed_out: true,
                oom_killed: false,
                duration_ms: 1,
                stdout: Captured::default(),
                stderr: Captured::default(),
                usage: Usage::default(),
                enforced: Enforced::default(),
                writes: None,
                redactions: Default::default(),
                secret_expired: false,
                warnings: vec!["asked".into()],
            })
        }
    }

    fn kinds(path: &Path) -> Vec<String> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .map(|r| r["kind"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    #[test]
    fn a_run_is_recorded_start_then_end_with_its_identity_in_the_spec() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("audit.jsonl");
        let recorder = Recorder::open(Some(&log), &["true".into()]).unwrap();
        let backend = Fake {
            refuse: false,
            seen: RefCell::new(None),
        };
        let mut spec = SandboxSpec::new(vec!["true".into()]);
        let request = Request {
            ttl_bounds_run: true,
            ..Request::default()
        };
        let ended = run(&backend, &recorder, &mut spec, request, || 7).unwrap();
        assert_eq!(ended.settled, 7);
        assert!(ended.seq.is_some());
        let outcome = ended.result.unwrap();
        assert!(outcome.secret_expired, "a timeout bounded by a ttl");
        assert_eq!(outcome.warnings, ["asked"]);
        let seen = backend.seen.borrow().clone().unwrap();
        assert_eq!(seen.tool, COMMAND_LINE_TOOL);
        assert!(!seen.id.is_empty());
        assert_eq!(kinds(&log), ["invocation.start", "invocation.end"]);
    }

    #[test]
    fn a_refusal_before_the_start_is_recorded_alone() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("audit.jsonl");
        let recorder = Recorder::open(Some(&log), &["true".into()]).unwrap();
        let backend = Fake {
            refuse: true,
            seen: RefCell::new(None),
        };
        let mut spec = SandboxSpec::new(vec!["true".into()]);
        let failure = run(&backend, &recorder, &mut spec, Request::default(), || ()).unwrap_err();
        assert_eq!(failure.status, RUNNER_ERROR);
        assert!(failure.message.contains("no"), "{failure}");
        assert_eq!(kinds(&log), ["policy.refused"]);
    }

    #[test]
    fn without_a_log_the_run_still_goes_through_the_same_path() {
        let recorder = Recorder::disabled(&["true".into()]);
        let backend = Fake {
            refuse: false,
            seen: RefCell::new(None),
        };
        let mut spec = SandboxSpec::new(vec!["true".into()]);
        let ended = run(&backend, &recorder, &mut spec, Request::default(), || ()).unwrap();
        assert_eq!(ended.seq, None);
        assert_eq!(ended.result.map(|o| o.exit_code).ok(), Some(Some(0)));
    }
}
