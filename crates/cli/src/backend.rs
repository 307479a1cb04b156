//! Which backend runs a spec: an image root runs on the Docker Engine, anything else on
//! the native backend. A tool switches backends by naming an image instead of a root
//! directory; the result shape, the probes and the audit records stay the same
//! (`nanoclaw_runner::run` drives either).

use nanoclaw_docker::{DockerBackend, InitBinary};
use nanoclaw_native::NativeBackend;
use nanoclaw_spec::{Backend, BackendError, Root, SandboxSpec};

/// The backend for `spec`; `pull` lets the docker backend pull a missing image.
pub fn for_spec(spec: &SandboxSpec, pull: bool) -> Result<Box<dyn Backend>, BackendError> {
    match spec.root {
        Root::Image(_) => {
            // nanoclaw itself is each container's init (Landlock, the exact environment, the
            // egress bridge), with its loader and libraries when it is not static.
            let backend = DockerBackend::connect()?
                .with_pull(pull)
                .with_init(InitBinary::current()?);
            Ok(Box::new(backend))
        }
        Root::Host | Root::Rootfs(_) => {
            let exe = std::env::current_exe()
                .map_err(|e| BackendError::io("locate the nanoclaw binary", e))?;
            Ok(Box::new(NativeBackend::new(exe)))
        }
    }
}
