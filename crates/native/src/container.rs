//! nanoclaw's own init for a container of the docker backend: the container's first
//! process, in place of the engine's docker-init. It gives the command what the engine
//! cannot, as the native init does: Landlock (read everywhere, execute only outside the
//! writable mounts, write only beneath them), exactly the spec's environment (the engine
//! adds `HOSTNAME` and the image's `ENV`), and the egress bridge. Then it starts the
//! command, reaps every orphan, and exits with the command's status, which makes the
//! kernel kill whatever is left in the container's PID namespace.
//!
//! It reports to the runner on a named pipe (`ContainerInit::report`, mounted read-only),
//! never on the command's streams: `Ready` with the Landlock status or why setup failed,
//! why the command could not be executed, and how it ended (a signal, which the
//! container's exit status cannot tell from an exit code over 128, and the usage). A second
//! named pipe (`ContainerInit::lifeline`) goes the other way: the runner holds its write
//! end. The init opens both before anything else runs in the container; once it has said
//! `Ready`, the runner makes both files unopenable (mode 0, on a read-only mount, which no
//! process in the container can change) and only then sends the byte that lets the command
//! start. So nothing the command writes can pass for the init's word, and it cannot hold
//! the lifeline open: end of file on it means the runner is gone, and the init exits,
//! which kills everything in the container. The init also ends the command at its deadline
//! (`lifeline`) should the runner be unable to.
//!
//! It runs with the command's uid, capabilities, seccomp filter and no_new_privs (the
//! engine applied them), so it can only add restrictions, never lift one.

use std::ffi::{OsStr, OsString};
use std::io::Write;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use nanoclaw_spec::container::*;
use nanoclaw_spec::{Delivery, LandlockStatus, SetupError, Usage, Zeroizing};

use crate::rootfs::Layout;
use crate::sys::{self, Forked};
use crate::{bridge, init, landlock, lifeline};

/// Top-level directories of the container that hold no programs and are never granted
/// execution (`/dev/shm` and `/dev/mqueue` are writable).
const NO_PROGRAMS: [&str; 3] = ["/proc", "/sys", "/dev"];

/// Runs the container's init with its arguments (after `CONTAINER_INIT_ARG`). Never
/// returns.
pub fn main(args: &[OsString]) -> ! {
    let init = match args {
        [json] => {
            serde_json::from_slice::<ContainerInit>(json.as_bytes()).map_err(|e| e.to_string())
        }
        _ => Err("expected one JSON argument".to_string()),
    };
    let (init, channel) = match init.and_then(|init| Ok((open_channel(&init)?, init))) {
        Ok((channel, init)) => (init, channel),
        Err(error) => {
            // No channel to the runner: it sees the container end without `Ready`.
            let _ = writeln!(std::io::stderr(), "nanoclaw: container init: {error}");
            sys::exit_now(125);
        }
    };
    let timeout = Duration::from_millis(init.timeout_ms);
    let start_by = lifeline::deadline(timeout);
    match setup(&init) {
        Ok(landlock) => channel.send(&ContainerMessage::Init(InitMessage::Ready { landlock })),
        Err(error) => {
            channel.send(&ContainerMessage::Init(InitMessage::SetupFailed(error)));
            sys::exit_now(125);
        }
    }
    let Some(values) = channel.await_go(start_by, init.secrets.len()) else {
        sys::exit_now(125);
    };
    if let Err(error) = deliver_files(&init, &values) {
        channel.fail(error);
    }
    let deadline = lifeline::deadline(timeout);
    let sigchld = sys::sigchld_fd().unwrap_or_else(|e| {
        channel.fail(SetupError::io("watch the command", e));
    });
    let command = match sys::fork_process() {
        Ok(Forked::Child) => exec_command(&init, &channel, &values),
        Ok(Forked::Parent(pid)) => pid,
        Err(e) => channel.fail(SetupError::io("start the command", e)),
    };
    let ended = match lifeline::wait(command, &channel.lifeline, &sigchld, deadline) {
        lifeline::Ended::Command { status, usage } => {
            let (exit_code, signal) = sys::decode_status(status);
            ContainerReport {
                exit_code,
                signal,
                usage,
                timed_out: false,
            }
        }
        lifeline::Ended::Deadline => ContainerReport {
            exit_code: None,
            signal: Some(libc::SIGKILL),
            usage: Usage::default(),
            timed_out: true,
        },
        // The runner is gone (or waiting failed): this exit ends everything in the
        // container at once.
        lifeline::Ended::Cut | lifeline::Ended::WaitFailed => sys::exit_now(125),
    };
    channel.send(&ContainerMessage::Ended(ended));
    sys::exit_now(match (ended.exit_code, ended.signal) {
        (Some(code), _) => code,
        (None, Some(signal)) => 128 + signal,
        (None, None) => 125,
    })
}

/// The init's ends of its two pipes to the runner, both close-on-exec.
struct Channel {
    report: OwnedFd,
    lifeline: OwnedFd,
}

/// Opens both pipes, before the command exists and before Landlock.
fn open_channel(init: &ContainerInit) -> Result<Channel, String> {
    use rustix::fs::{Mode, OFlags};
    let open = |path: &Path, flags: OFlags| {
        rustix::fs::open(
            path,
            flags | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| format!("open {}: {e}", path.display()))
    };
    Ok(Channel {
        report: open(&init.report, OFlags::WRONLY)?,
        lifeline: open(&init.lifeline, OFlags::RDONLY)?,
    })
}

impl Channel {
    /// One JSON line; a line of a pipe write is never interleaved with another writer's
    /// (there is none) and never split (it is shorter than `PIPE_BUF`, or dropped).
    fn send(&self, message: &ContainerMessage) {
        if let Ok(mut line) = serde_json::to_vec(message) {
            line.push(b'\n');
            let _ = rustix::io::write(&self.report, &line);
        }
    }

    fn fail(&self, error: SetupError) -> ! {
        self.send(&ContainerMessage::Init(InitMessage::SetupFailed(error)));
        sys::exit_now(125)
    }

    /// Waits for the runner's secrets frame (with `count` values) and `GO` until `by`;
    /// `None` on anything else (it is gone).
    fn await_go(&self, by: std::time::Instant, count: usize) -> Option<Vec<Zeroizing<Vec<u8>>>> {
        use rustix::event::{PollFd, PollFlags};
        let mut frame = Zeroizing::new(Vec::new());
        let mut chunk = Zeroizing::new([0u8; 4096]);
        loop {
            let left = by.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return None;
            }
            let timeout = rustix::time::Timespec {
                tv_sec: left.as_secs() as i64,
                tv_nsec: i64::from(left.subsec_nanos()),
            };
            let mut fds = [PollFd::new(&self.lifeline, PollFlags::IN)];
            match rustix::event::poll(&mut fds, Some(&timeout)) {
                Ok(_) | Err(rustix::io::Errno::INTR) => {}
                Err(_) => return None,
            }
            // Without secrets the frame is the one byte `GO`: read no further than it.
            let want = if count == 0 { 1 } else { chunk.len() };
            match rustix::io::read(&self.lifeline, &mut chunk[..want]) {
                Ok(0) => return None,
                Ok(n) => {
                    if frame.len() + n > MAX_SECRETS_FRAME {
                        return None;
                    }
                    frame.extend_from_slice(&chunk[..n]);
                    match parse_frame(&frame, count) {
                        None => {}
                        Some(Ok(values)) => return Some(values),
                        Some(Err(())) => return None,
                    }
                }
                Err(rustix::io::Errno::AGAIN) | Err(rustix::io::Errno::INTR) => {}
                Err(_) => return None,
            }
        }
    }
}

/// Writes each `file` secret into `SECRETS_DIR` (mode 0400, never through a symlink, never
/// over an existing file).
fn deliver_files(init: &ContainerInit, values: &[Zeroizing<Vec<u8>>]) -> Result<(), SetupError> {
    use std::os::unix::fs::OpenOptionsExt;
    for (secret, value) in init.secrets.iter().zip(values) {
        if secret.delivery != Delivery::File {
            continue;
        }
        let path = Path::new(nanoclaw_spec::SECRETS_DIR).join(&secret.name);
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o400)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path)
            .and_then(|mut file| file.write_all(value))
            .map_err(|e| {
                let mut error = SetupError::io("deliver a secret file", e);
                error.path = Some(path.display().to_string());
                error
            })?;
    }
    Ok(())
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
fn exec_command(init: &ContainerInit, channel: &Channel, values: &[Zeroizing<Vec<u8>>]) -> ! {
    let fail = |message: InitMessage, code: i32| -> ! {
        channel.send(&ContainerMessage::Init(message));
        sys::exit_now(code)
    };
    if let Err(e) = sys::unblock_signals() {
        fail(
            InitMessage::SetupFailed(SetupError::io("unblock signals", e)),
            125,
        );
    }
    if let Err(error) = init::close_and_enter(&init.workdir) {
        fail(InitMessage::SetupFailed(error), 125);
    }
    let mut env: Vec<(String, OsString)> = init
        .env
        .iter()
        .filter_map(|key| std::env::var_os(key).map(|value| (key.clone(), value)))
        .collect();
    for (secret, value) in init.secrets.iter().zip(values) {
        if secret.delivery == Delivery::Env {
            env.retain(|(key, _)| *key != secret.name);
            env.push((secret.name.clone(), OsStr::from_bytes(value).to_os_string()));
        }
    }
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
}
