//! Which backend runs a spec: an image root runs on the Docker Engine, anything else on
//! the native backend. A tool switches backends by naming an image instead of a root
//! directory; the result shape, the probes and the audit records stay the same.

use nanoclaw_docker::DockerBackend;
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
                let mut backend = DockerBackend::connect()?.with_pull(pull);
                // Egress in a container needs nanoclaw itself as the bridge, which runs in
                // any image only when it is static; otherwise egress is refused there.
                if let Some(exe) = std::env::current_exe().ok().filter(|exe| is_static(exe)) {
                    backend = backend.with_bridge(exe);
                }
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

/// Whether an ELF executable needs no dynamic loader (it has no PT_INTERP header), so
/// that it runs in any image.
fn is_static(path: &std::path::Path) -> bool {
    const PT_INTERP: u32 = 3;
    let Ok(elf) = std::fs::read(path) else {
        return false;
    };
    let u16_at = |at: usize| {
        elf.get(at..at + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let u32_at = |at: usize| {
        elf.get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let u64_at = |at: usize| {
        elf.get(at..at + 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
    };
    // A 64-bit little-endian ELF file: the program headers are at e_phoff (0x20), each
    // e_phentsize (0x36) bytes, e_phnum (0x38) of them; p_type is their first word.
    if elf.get(..6) != Some(&[0x7f, b'E', b'L', b'F', 2, 1][..]) {
        return false;
    }
    let (Some(offset), Some(size), Some(count)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38)) else {
        return false;
    };
    (0..usize::from(count)).all(|i| {
        let at = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .saturating_add(i * usize::from(size));
        u32_at(at).is_some_and(|kind| kind != PT_INTERP)
    })
}

#[cfg(test)]
mod tests {
    use super::is_static;

    #[test]
    fn a_dynamic_binary_is_not_static() {
        assert!(!is_static(std::path::Path::new("/bin/sh")));
        assert!(!is_static(std::path::Path::new("/nonexistent")));
    }

    #[test]
    fn busybox_static_is_static() {
        let busybox = std::path::Path::new("/bin/busybox");
        if busybox.exists() {
            assert!(is_static(busybox));
        }
    }
}
