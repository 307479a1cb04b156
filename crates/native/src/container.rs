//! nanoclaw's own init for a container of the docker backend: the container's first
//! process, in place of the engine's docker-init. It gives the command what the engine
//! cannot, as the native init does: Landlock (read everywhere, execute only outside the
//! writable mounts, write only beneath them), exactly the spec's environment (the engine
//! adds `HOSTNAME` and the image's `ENV`), and the egress bridge. Then it starts the
//! command, reaps every orphan, and exits with the command's status, which makes the
//! kernel kill whatever is left in the container's PID namespace.
//!
//! It reports to the runner on its standard error, before the command can write anything
//! there: one line, `MARKER` and an `InitMessage` as JSON (`Ready` with the Landlock
//! status, or why setup failed), and a second one if the command could not be executed.
//! How the command ended (a signal, which the container's exit status cannot tell from an
//! exit code over 128, and the usage) goes on a named pipe the runner mounts read-only and
//! the init opens before Landlock forbids the command to.
//! It runs with the command's uid, capabilities, seccomp filter and no_new_privs (the
//! engine applied them), so it can only add restrictions, never lift one.

use std::ffi::{OsStr, OsString};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nanoclaw_spec::{LandlockStatus, SetupError, Usage};
use serde::{Deserialize, Serialize};

use crate::rootfs::Layout;
use crate::sys::{self, Forked};
use crate::{bridge, init, landlock};

/// The first argument that makes the nanoclaw binary act as a container's init:
/// `nanoclaw __nanoclaw_container_init JSON` (a [`ContainerInit`]).
pub const CONTAINER_INIT_ARG: &str = "__nanoclaw_container_init";

/// How a line of the init's own on standard error starts.
pub const MARKER: &str = "nanoclaw-init: ";

/// Top-level directories of the container that hold no programs and are never granted
/// execution (`/dev/shm` and `/dev/mqueue` are writable).
const NO_PROGRAMS: [&str; 3] = ["/proc", "/sys", "/dev"];

/// What the runner tells the container's init.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerInit {
    /// The command, as the spec has it.
    pub command: Vec<String>,
    /// The names of the spec's environment variables; their values are in the container's
    /// environment, and nothing else of it reaches the command.
    pub env: Vec<String>,
    /// The writable mounts and tmpfs (read and write, never execute).
    pub writable: Vec<PathBuf>,
    /// The working directory, entered by the init so that a missing one is an error (the
    /// engine would create it).
    pub workdir: PathBuf,
    /// The loopback port of the egress bridge, with egress.
    pub bridge_port: Option<u16>,
    /// A named pipe (mounted read-only) on which the init reports how the command ended
    /// (`ContainerReport`).
    #[serde(default)]
    pub report: Option<PathBuf>,
}

/// How the command ended, as the init saw it: the container's own exit status cannot tell
/// a command killed by SIGTERM from one that exited 143.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerReport {
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    /// The command's usage and that of every orphan the init reaped, as the native backend
    /// counts it.
    pub usage: Usage,
}

/// What the runner reads back from the init's standard error, after `MARKER`.
pub use crate::protocol::InitMessage;

/// Runs the container's init with its arguments (after `CONTAINER_INIT_ARG`). Never
/// returns.
pub fn main(args: &[OsString]) -> ! {
    let init = match args {
        [json] => serde_json::from_slice::<ContainerInit>(json.as_bytes())
            .map_err(|e| SetupError::io("read the init's arguments", std::io::Error::other(e))),
        _ => Err(SetupError::io(
            "read the init's arguments",
            std::io::Error::other("expected one JSON argument"),
        )),
    };
    // Opened before Landlock, which keeps the command from opening it.
    let ended_report = init
        .as_ref()
        .ok()
        .and_then(|init| open_report(init.report.as_deref()));
    let init = match init.and_then(|init| Ok((setup(&init)?, init))) {
        Ok((landlock, init)) => {
            report(&InitMessage::Ready { landlock });
            init
        }
        Err(error) => {
            report(&InitMessage::SetupFailed(error));
            sys::exit_now(125);
        }
    };
    let command = match sys::fork_process() {
        Ok(Forked::Child) => exec_command(&init),
        Ok(Forked::Parent(pid)) => pid,
        Err(e) => {
            report(&InitMessage::SetupFailed(SetupError::io(
                "start the command",
                e,
            )));
            sys::exit_now(125);
        }
    };
    let mut usage = Usage::default();
    loop {
        let reaped = match sys::wait4(-1, 0) {
            Ok(Some(reaped)) => reaped,
            Ok(None) => continue,
            Err(_) => sys::exit_now(125),
        };
        usage.cpu_ms += reaped.cpu_ms;
        usage.max_rss_kib = usage.max_rss_kib.max(reaped.max_rss_kib);
        if reaped.pid == command {
            let (exit_code, signal) = sys::decode_status(reaped.status);
            let ended = ContainerReport {
                exit_code,
                signal,
                usage,
            };
            if let (Some(pipe), Ok(json)) = (&ended_report, serde_json::to_vec(&ended)) {
                let _ = rustix::io::write(pipe, &json);
            }
            sys::exit_now(match (exit_code, signal) {
                (Some(code), _) => code,
                (None, Some(signal)) => 128 + signal,
                (None, None) => 125,
            })
        }
    }
}

/// The report pipe's write end, close-on-exec; none when there is no pipe or no reader.
fn open_report(path: Option<&Path>) -> Option<std::os::fd::OwnedFd> {
    use rustix::fs::{Mode, OFlags};
    let flags = OFlags::WRONLY | OFlags::NONBLOCK | OFlags::CLOEXEC;
    rustix::fs::open(path?, flags, Mode::empty()).ok()
}

/// One line on standard error, before the command has started or instead of it.
fn report(message: &InitMessage) {
    if let Ok(json) = serde_json::to_string(message) {
        let _ = writeln!(std::io::stderr(), "{MARKER}{json}");
    }
}

/// Landlock, then the bridge (which runs under it).
fn setup(init: &ContainerInit) -> Result<LandlockStatus, SetupError> {
    // The command runs as the same user: without this it could read the init's
    // /proc/1/environ (which still holds what the engine added) or its memory.
    sys::set_not_dumpable().map_err(|e| SetupError::io("mark init not dumpable", e))?;
    // As the engine mounted them: a target below an image symlink is where it points.
    let writable = init
        .writable
        .iter()
        .map(|path| {
            std::fs::canonicalize(path).map_err(|e| {
                let mut error = SetupError::io("find a writable mount", e);
                error.path = Some(path.display().to_string());
                error
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let layout = Layout {
        read_exec: exec_trees(Path::new("/"), &writable)
            .map_err(|e| SetupError::io("list the container's programs", e))?,
        read_write: writable,
    };
    let landlock = landlock::restrict(&layout)?;
    if let Some(port) = init.bridge_port {
        bridge::start(port, Path::new(nanoclaw_spec::EgressProxy::SOCKET_INSIDE))?;
    }
    Ok(landlock)
}

/// The trees below `dir` the command may execute from: everything but the writable mounts,
/// as whole trees where no writable mount lies beneath, so the rules stay few. A symlink
/// is never followed (the image could point one into a writable mount); its target gets its
/// own rule where it lies.
fn exec_trees(dir: &Path, writable: &[PathBuf]) -> std::io::Result<Vec<PathBuf>> {
    let mut trees = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let kind = entry.file_type()?;
        if kind.is_symlink() || NO_PROGRAMS.iter().any(|p| path == Path::new(p)) {
            continue;
        }
        if writable.contains(&path) {
            continue;
        }
        if kind.is_dir() && writable.iter().any(|w| w.starts_with(&path)) {
            trees.extend(exec_trees(&path, writable)?);
        } else {
            trees.push(path);
        }
    }
    Ok(trees)
}

/// The command's side of the fork: exactly the spec's environment, then exec.
fn exec_command(init: &ContainerInit) -> ! {
    let fail = |message: InitMessage, code: i32| -> ! {
        report(&message);
        sys::exit_now(code)
    };
    if let Err(error) = init::close_and_enter(&init.workdir) {
        fail(InitMessage::SetupFailed(error), 125);
    }
    let env: Vec<(String, OsString)> = init
        .env
        .iter()
        .filter_map(|key| std::env::var_os(key).map(|value| (key.clone(), value)))
        .collect();
    let pair =
        |(key, value): &(String, OsString)| [key.as_bytes(), b"=", value.as_bytes()].concat();
    let program = init.command.first().cloned().unwrap_or_default();
    let (Some(argv), Some(envp)) = (
        init::c_strings(init.command.iter().map(String::as_str)),
        init::c_strings(env.iter().map(pair)),
    ) else {
        fail(
            InitMessage::SetupFailed(SetupError::io(
                "prepare the command",
                std::io::Error::other("an argument or environment value contains a NUL byte"),
            )),
            125,
        )
    };
    let path = env
        .iter()
        .find(|(key, _)| key == "PATH")
        .map_or(OsStr::new(nanoclaw_spec::DEFAULT_PATH), |(_, v)| {
            v.as_os_str()
        });
    let error = init::exec_on_path(&program, &path.to_string_lossy(), &argv, &envp);
    let errno = error.raw_os_error().unwrap_or(0);
    let code = match errno {
        libc::ENOENT | libc::ENOTDIR => 127,
        _ => 126,
    };
    fail(
        InitMessage::ExecFailed {
            program,
            errno,
            message: error.to_string(),
        },
        code,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn execution_is_granted_around_the_writable_mounts() -> std::io::Result<()> {
        let root = tempfile::tempdir()?;
        let at = |p: &str| root.path().join(p);
        for dir in ["usr/bin", "work/sub", "opt/a", "opt/b"] {
            std::fs::create_dir_all(at(dir))?;
        }
        std::fs::write(at("nanoclaw"), "")?;
        std::os::unix::fs::symlink("work", at("link"))?;
        let writable = vec![at("work"), at("opt/b")];
        let mut trees = exec_trees(root.path(), &writable)?;
        trees.sort();
        assert_eq!(trees, [at("nanoclaw"), at("opt/a"), at("usr")]);
        Ok(())
    }

    #[test]
    fn the_arguments_round_trip_as_json() {
        let init = ContainerInit {
            command: vec!["sh".into(), "-c".into(), "echo $A".into()],
            env: vec!["A".into()],
            writable: vec!["/tmp".into()],
            workdir: "/".into(),
            bridge_port: Some(3128),
            report: Some("/.nanoclaw/usage".into()),
        };
        let json = serde_json::to_string(&init).unwrap_or_default();
        assert_eq!(
            serde_json::from_str::<ContainerInit>(&json).ok(),
            Some(init)
        );
    }
}
