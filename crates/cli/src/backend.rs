//! Which backend runs a spec: an image root runs on the Docker Engine, anything else on
//! the native backend. A tool switches backends by naming an image instead of a root
//! directory; the result shape, the probes and the audit records stay the same.

use nanoclaw_docker::{DockerBackend, InitBinary};
use nanoclaw_native::NativeBackend;
use nanoclaw_spec::{Backend, BackendError, IoMode, Outcome, Root, SandboxSpec};

pub enum Runner {
    Native(NativeBackend),
    Docker(Box<DockerBackend>),
}

impl Runner {
    /// The backend for `spec`; `pull` lets the docker backend pull a missing image.
    pub fn for_spec(spec: &SandboxSpec, pull: bool) -> Result<Runner, BackendError> {
        match spec.root {
            Root::Image(_) => {
                // nanoclaw itself is each container's init (Landlock, the exact environment,
                // the egress bridge), with its loader and libraries when it is not static.
                let backend = DockerBackend::connect()?
                    .with_pull(pull)
                    .with_init(InitBinary::current()?);
                Ok(Runner::Docker(Box::new(backend)))
            }
            Root::Host | Root::Rootfs(_) => {
                let exe = std::env::current_exe()
                    .map_err(|e| BackendError::io("locate the nanoclaw binary", e))?;
                Ok(Runner::Native(NativeBackend::new(exe)))
            }
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Runner::Native(backend) => backend.name(),
            Runner::Docker(backend) => backend.name(),
        }
    }

    /// Runs `spec`, calling `commit` before the command starts (see
    /// `Backend::run_committed`); a docker container carries the tool and invocation id as
    /// labels, and what the engine could not do as asked is said on stderr.
    pub fn run(
        &self,
        spec: &SandboxSpec,
        io: IoMode,
        tool: &str,
        invocation_id: &str,
        commit: &mut dyn FnMut() -> Result<(), BackendError>,
    ) -> Result<Outcome, BackendError> {
        match self {
            Runner::Native(backend) => backend.run_committed(spec, io, commit),
            Runner::Docker(backend) => {
                commit()?;
                let invocation = nanoclaw_docker::Invocation {
                    tool: tool.to_string(),
                    id: (!invocation_id.is_empty()).then(|| invocation_id.to_string()),
                };
                let run = backend.run_invocation(spec, io, &invocation)?;
                for warning in &run.warnings {
                    eprintln!("nanoclaw: docker: {warning}");
                }
                Ok(run.outcome)
            }
        }
    }
}
