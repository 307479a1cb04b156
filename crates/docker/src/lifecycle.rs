//! One run, start to finish: resolve the image, create the container, attach, verify what
//! the engine applied, start, wait (killing at the timeout), collect the output, inspect how
//! it ended, and remove the container — always, also after a timeout, an error or a stop
//! signal (Ctrl-C, SIGTERM, SIGHUP).
//!
//! Everything here is async and runs on the backend's own current-thread runtime; nothing of
//! it leaks out of the crate.

use std::pin::pin;
use std::time::{Duration, Instant};

use bollard::container::{AttachContainerResults, LogOutput};
use bollard::query_parameters::{
    AttachContainerOptions, CreateContainerOptions, KillContainerOptions, WaitContainerOptions,
};
use bollard::Docker;
use futures_util::StreamExt;
use nanoclaw_native::container::InitMessage;
use nanoclaw_spec::{BackendError, IoMode, LandlockStatus, Outcome, SandboxSpec, Usage};
use tokio::io::AsyncWriteExt;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::Notify;

use crate::enforced::{self, Applied, EngineFacts};
use crate::image::{self, ImageInfo};
use crate::staging::RunDir;
use crate::streams::{self, InitLines, Sink, Target};
use crate::{config, reap, staging, DockerBackend, DockerRun, InitBinary, Invocation};

/// How long output may still arrive once the container has exited.
const DRAIN_GRACE: Duration = Duration::from_secs(2);
/// The exit status the init reports for a command killed by SIGKILL.
const KILLED: i64 = 128 + 9;

pub(crate) fn engine(
    what: impl Into<String>,
) -> impl FnOnce(bollard::errors::Error) -> BackendError {
    let what = what.into();
    move |e| BackendError::io(what, std::io::Error::other(e))
}

/// A request the engine refused for what the spec asks (a bad mount, an unknown user...).
fn setup(step: &str) -> impl FnOnce(bollard::errors::Error) -> BackendError + '_ {
    move |e| {
        let message = match e {
            bollard::errors::Error::DockerResponseServerError { message, .. } => message,
            other => other.to_string(),
        };
        BackendError::Setup(nanoclaw_spec::SetupError {
            step: step.to_string(),
            path: None,
            errno: None,
            message,
        })
    }
}

/// The stop signals, watched from before the container exists until it is removed.
struct Stop {
    signals: Vec<Signal>,
}

impl Stop {
    fn watch() -> Result<Self, BackendError> {
        let signals = [
            SignalKind::interrupt(),
            SignalKind::terminate(),
            SignalKind::hangup(),
        ]
        .into_iter()
        .map(signal)
        .collect::<Result<_, _>>()
        .map_err(|e| BackendError::io("watch stop signals", e))?;
        Ok(Stop { signals })
    }

    async fn signalled(&mut self) {
        let waits = self.signals.iter_mut().map(|s| Box::pin(s.recv()));
        futures_util::future::select_all(waits).await;
    }
}

/// Aborts a spawned task when dropped, so an interrupted run leaves no task behind.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl DockerBackend {
    pub(crate) async fn run_async(
        &self,
        spec: &SandboxSpec,
        io: IoMode,
        invocation: &Invocation,
        init: &InitBinary,
    ) -> Result<DockerRun, BackendError> {
        let mut stop = Stop::watch()?;
        let reference = config::image_reference(spec)?;
        let prepare = async {
            let (image, _reaped) = tokio::join!(
                image::resolve(&self.docker, reference, self.pull),
                // A failure to reap is no reason to refuse this run; the next run tries again.
                reap::stale(&self.docker),
            );
            image
        };
        let image = tokio::select! {
            biased;
            _ = stop.signalled() => return Err(BackendError::Interrupted),
            image = prepare => image?,
        };
        self.remember(&image);
        // The spec always names the user, so an image configured to run as root never runs
        // as root by default; its configured user is reported with the run.
        let name = reap::next_invocation();
        let invocation_id = invocation.id.clone().unwrap_or_else(|| name.clone());
        let labels = reap::labels(&invocation.tool, &invocation_id, spec.limits.timeout);
        // Writable mounts reach the engine as noexec copies on the host, kept (with the usage
        // report) until the container is gone.
        staging::reap_stale();
        let mut run_dir = RunDir::create(&name)?;
        let engine_spec = run_dir.stage(spec)?;
        let report = run_dir.report_pipe(spec.user.uid)?;
        let body =
            config::container_body(&engine_spec, &image.id, labels, io.stdin, init, &report)?;
        let entrypoint = body.entrypoint.clone().unwrap_or_default();
        let options = CreateContainerOptions {
            name: Some(format!("nanoclaw-{name}")),
            ..Default::default()
        };
        // Not interruptible: once the engine may have made the container we need its id to
        // remove it. A signal that arrives meanwhile is seen right after.
        let created = self
            .docker
            .create_container(Some(options), body)
            .await
            .map_err(setup("create the container"))?;
        let id = created.id;
        // The engine's facts are needed only for the report: asked alongside the run, not
        // before it.
        let reported = async {
            let (facts, driven) =
                tokio::join!(self.facts(), self.drive(&id, spec, &entrypoint, io));
            let (mut outcome, applied, landlock) = driven?;
            outcome.enforced = enforced::enforced(&applied, &facts?, landlock);
            // The init knows what the container's exit status cannot tell (a signal from an
            // exit status over 128) and the usage; killed at the timeout, it reported nothing.
            if let Some(ended) = run_dir.report() {
                outcome.usage = ended.usage;
                if !outcome.timed_out {
                    (outcome.exit_code, outcome.signal) = (ended.exit_code, ended.signal);
                }
            }
            Ok(outcome)
        };
        let driven = tokio::select! {
            biased;
            _ = stop.signalled() => Err(BackendError::Interrupted),
            outcome = reported => outcome,
        };
        let removed = reap::remove(&self.docker, &id).await;
        // Nothing writes the overlays once the container is gone, however the run ended; a
        // container that could not be removed may still, so its changes are discarded.
        let writes = match &removed {
            Ok(_) => run_dir.finish_writes(),
            Err(_) => Ok(None),
        };
        let mut outcome = driven?;
        removed.map_err(engine(format!(
            "remove container {id} (the next run reaps it after its deadline)"
        )))?;
        outcome.writes = writes?;
        Ok(DockerRun {
            outcome,
            image,
            container: id,
            invocation: invocation_id,
            warnings: created.warnings,
        })
    }

    /// Engine facts, asked once per backend.
    async fn facts(&self) -> Result<EngineFacts, BackendError> {
        self.facts
            .get_or_try_init(|| async {
                let info = self
                    .docker
                    .info()
                    .await
                    .map_err(engine("ask the engine for its configuration"))?;
                Ok(EngineFacts::from_info(&info))
            })
            .await
            .cloned()
    }

    fn remember(&self, image: &ImageInfo) {
        if let Ok(mut last) = self.last_image.lock() {
            *last = Some(image.clone());
        }
    }

    /// Attaches, verifies, starts and waits for the created container `id`. The outcome's
    /// `enforced` is left for the caller to fill in from what was applied and the Landlock
    /// status the init reported.
    async fn drive(
        &self,
        id: &str,
        spec: &SandboxSpec,
        entrypoint: &[String],
        io: IoMode,
    ) -> Result<(Outcome, Applied, LandlockStatus), BackendError> {
        let attach = AttachContainerOptions {
            stream: true,
            logs: false,
            stdin: io.stdin,
            stdout: true,
            stderr: true,
            detach_keys: None,
        };
        let (attached, inspected) = tokio::join!(
            self.docker.attach_container(id, Some(attach)),
            self.docker.inspect_container(id, None),
        );
        let AttachContainerResults { mut output, input } =
            attached.map_err(engine(format!("attach to container {id}")))?;
        let inspected = inspected.map_err(engine(format!("inspect container {id}")))?;
        let applied = enforced::verify(spec, entrypoint, &inspected).map_err(|weaker| {
            BackendError::LayerUnavailable {
                layer: weaker.layer.to_string(),
                reason: format!(
                    "the engine reports {} for container {id}; refusing to start it",
                    weaker.reported
                ),
            }
        })?;

        let _stdin = io.stdin.then(|| {
            let mut input = input;
            let mut chunks = streams::stdin_reader();
            AbortOnDrop(tokio::spawn(async move {
                while let Some(chunk) = chunks.recv().await {
                    if input.write_all(&chunk).await.is_err() {
                        return;
                    }
                }
                // End of our stdin: the command sees end of file.
                let _ = input.shutdown().await;
            }))
        });

        self.docker
            .start_container(id, None)
            .await
            .map_err(setup("start the container"))?;
        let started = Instant::now();
        let deadline = tokio::time::Instant::from_std(started + spec.limits.timeout);

        let limit = spec.limits.output_bytes;
        let mut stdout = Sink::new(io.capture, limit, Target::Stdout);
        let mut stderr = Sink::new(io.capture, limit, Target::Stderr);
        let mut init_lines = InitLines::default();
        let exited = Notify::new();
        let exit = async {
            let ended = self.wait_or_kill(id, spec, deadline).await;
            exited.notify_one();
            ended
        };
        let pump = async {
            let frames = async {
                while let Some(Ok(frame)) = output.next().await {
                    match frame {
                        LogOutput::StdOut { message } => stdout.push(&message).await,
                        LogOutput::StdErr { message } => {
                            let command = init_lines.take(&message);
                            stderr.push(&command).await;
                        }
                        _ => {}
                    }
                }
            };
            tokio::select! {
                () = frames => {}
                () = async {
                    exited.notified().await;
                    tokio::time::sleep(DRAIN_GRACE).await;
                } => {}
            }
        };
        let (ended, ()) = tokio::join!(exit, pump);
        let (code, timed_out) = ended?;
        let held_back = init_lines.finish();
        stderr.push(&held_back).await;
        let duration_ms = started.elapsed().as_millis() as u64;

        let state = self
            .docker
            .inspect_container(id, None)
            .await
            .map_err(engine(format!("inspect container {id}")))?
            .state
            .unwrap_or_default();
        let oom_killed = state.oom_killed == Some(true) && !timed_out;
        let landlock = match init_report(id, code, init_lines.messages) {
            Err(_) if timed_out => LandlockStatus {
                status: "unknown".into(),
                abi: 0,
                reason: Some("the run timed out before nanoclaw's init reported".into()),
            },
            reported => reported?,
        };
        let stdout = stdout.finish();
        let stderr = stderr.finish();
        let (exit_code, signal) = if code == KILLED {
            (None, Some(9))
        } else {
            (Some(code as i32), None)
        };
        let outcome = Outcome {
            exit_code,
            signal,
            timed_out,
            oom_killed,
            duration_ms,
            stdout,
            stderr,
            usage: Usage::default(),
            enforced: Default::default(),
            writes: None,
        };
        Ok((outcome, applied, landlock))
    }

    /// Waits for the container to exit; at `deadline` kills it. Returns the exit status and
    /// whether the kill ended it.
    async fn wait_or_kill(
        &self,
        id: &str,
        spec: &SandboxSpec,
        deadline: tokio::time::Instant,
    ) -> Result<(i64, bool), BackendError> {
        // A wait outlives the client's request timeout when the command runs long.
        let docker = self
            .docker
            .clone()
            .with_timeout(spec.limits.timeout + reap::GRACE);
        let options = WaitContainerOptions {
            condition: "not-running".into(),
        };
        let mut waiter = pin!(docker.wait_container(id, Some(options)));
        let status = |next: Option<Result<_, bollard::errors::Error>>| match next {
            Some(Ok(bollard::models::ContainerWaitResponse { status_code, .. })) => Ok(status_code),
            Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => Ok(code),
            Some(Err(e)) => Err(engine(format!("wait for container {id}"))(e)),
            None => Err(BackendError::io(
                format!("wait for container {id}"),
                std::io::Error::other("the engine ended the wait without a status"),
            )),
        };
        tokio::select! {
            next = waiter.next() => Ok((status(next)?, false)),
            () = tokio::time::sleep_until(deadline) => {
                let killed = kill(&self.docker, id).await?;
                Ok((status(waiter.next().await)?, killed))
            }
        }
    }
}

/// Sends SIGKILL to the container's init, whose death ends every process in it. False when
/// the container had already stopped by itself.
async fn kill(docker: &Docker, id: &str) -> Result<bool, BackendError> {
    let options = KillContainerOptions {
        signal: "KILL".into(),
    };
    match docker.kill_container(id, Some(options)).await {
        Ok(()) => Ok(true),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 409, ..
        }) => Ok(false),
        Err(e) => Err(engine(format!("kill container {id} at its timeout"))(e)),
    }
}

/// What nanoclaw's init in container `id` said before the command ran: its Landlock status,
/// or why it could not set up or execute the command (exit status `code`).
fn init_report(
    id: &str,
    code: i64,
    messages: Vec<InitMessage>,
) -> Result<LandlockStatus, BackendError> {
    let mut landlock = None;
    for message in messages {
        match message {
            InitMessage::Ready { landlock: status } => landlock = Some(status),
            // The init's own failures exit 125, which tells them from a command that wrote
            // a line like the init's first.
            InitMessage::SetupFailed(error) if code == 125 => {
                return Err(BackendError::Setup(error));
            }
            InitMessage::ExecFailed { program, errno, .. } if code == 126 || code == 127 => {
                return Err(BackendError::exec_failed(program, errno));
            }
            InitMessage::SetupFailed(_)
            | InitMessage::ExecFailed { .. }
            | InitMessage::Exited { .. } => {}
        }
    }
    landlock.ok_or_else(|| {
        BackendError::io(
            format!("run nanoclaw's init in container {id}"),
            std::io::Error::other(format!(
                "it exited with status {code} before reporting that the command started"
            )),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready() -> InitMessage {
        InitMessage::Ready {
            landlock: LandlockStatus {
                status: "full".into(),
                abi: 6,
                reason: None,
            },
        }
    }

    fn exec_failed(errno: i32) -> InitMessage {
        InitMessage::ExecFailed {
            program: "nope".into(),
            errno,
            message: String::new(),
        }
    }

    #[test]
    fn the_inits_report_maps_like_the_native_backend() {
        let landlock = init_report("c", 0, vec![ready()]);
        assert!(matches!(landlock, Ok(status) if status.abi == 6));
        let not_found = init_report("c", 127, vec![ready(), exec_failed(libc::ENOENT)]);
        assert!(matches!(not_found, Err(BackendError::CommandNotFound(p)) if p == "nope"));
        let denied = init_report("c", 126, vec![ready(), exec_failed(libc::EACCES)]);
        assert!(matches!(denied, Err(BackendError::NotExecutable { .. })));
        // A command that exits 0 after printing what looks like the init's line ran.
        assert!(init_report("c", 0, vec![ready(), exec_failed(libc::ENOENT)]).is_ok());
        assert!(init_report("c", 137, vec![]).is_err());
        let setup = || {
            InitMessage::SetupFailed(nanoclaw_spec::SetupError::io(
                "enter working directory",
                std::io::Error::from_raw_os_error(libc::ENOENT),
            ))
        };
        assert!(matches!(
            init_report("c", 125, vec![ready(), setup()]),
            Err(BackendError::Setup(_))
        ));
        // A command that wrote a line like it and exited 1 ran.
        assert!(init_report("c", 1, vec![ready(), setup()]).is_ok());
    }
}
