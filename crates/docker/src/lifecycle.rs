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
use nanoclaw_spec::container::{ContainerMessage, InitMessage};
use nanoclaw_spec::{BackendError, IoMode, LandlockStatus, Outcome, SandboxSpec, Usage};
use tokio::io::AsyncWriteExt;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::Notify;

use crate::channel::InitChannel;
use crate::enforced::{self, Applied, EngineFacts};
use crate::image::{self, ImageInfo};
use crate::staging::RunDir;
use crate::streams::{self, Sink, Target};
use crate::{config, reap, staging, DockerBackend, DockerRun, InitBinary};

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
        let invocation = &spec.invocation;
        let invocation_id = match invocation.id.as_str() {
            "" => name.clone(),
            id => id.to_string(),
        };
        let key = reap::SealKey::get()?;
        let container_name = format!("nanoclaw-{name}");
        let labels = reap::labels(
            key,
            &invocation.tool,
            &invocation_id,
            &container_name,
            spec.limits.timeout,
        );
        // Writable mounts reach the engine as noexec copies on the host, kept (with the usage
        // report) until the container is gone.
        staging::reap_stale();
        let mut run_dir = RunDir::create(&name)?;
        let engine_spec = run_dir.stage(spec)?;
        let mut channel = run_dir.init_channel()?;
        let body = config::container_body(
            &engine_spec,
            &image.id,
            labels,
            io.stdin,
            init,
            channel.paths(),
        )?;
        let entrypoint = body.entrypoint.clone().unwrap_or_default();
        let options = CreateContainerOptions {
            name: Some(container_name),
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
            let (facts, driven) = tokio::join!(
                self.facts(),
                self.drive(&id, spec, &entrypoint, io, &mut channel)
            );
            let (mut outcome, applied, landlock) = driven?;
            outcome.enforced = enforced::enforced(&applied, &facts?, landlock);
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
        outcome.warnings = created.warnings;
        Ok(DockerRun {
            outcome,
            image,
            container: id,
            invocation: invocation_id,
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
        channel: &mut InitChannel,
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
        let mut stdout = Sink::new(io.capture, limit, Target::Stdout, &spec.secrets);
        let mut stderr = Sink::new(io.capture, limit, Target::Stderr, &spec.secrets);
        let exited = Notify::new();
        let exited_before_ready = Notify::new();
        let exit = async {
            let ended = self.wait_or_kill(id, spec, deadline).await;
            exited.notify_one();
            exited_before_ready.notify_one();
            ended
        };
        // The command's streams are only the command's: the init never writes there.
        let pump = async {
            let frames = async {
                while let Some(Ok(frame)) = output.next().await {
                    match frame {
                        LogOutput::StdOut { message } => stdout.push(&message).await,
                        LogOutput::StdErr { message } => stderr.push(&message).await,
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
        let mut messages = Vec::new();
        let handshake = async {
            let ready = async {
                while let Some(message) = channel.next().await {
                    match message {
                        ContainerMessage::Init(InitMessage::Ready { landlock }) => {
                            let values: Vec<&[u8]> = config::delivered_by_init(spec)
                                .map(|s| s.value.expose())
                                .collect();
                            let frame = nanoclaw_spec::container::secrets_frame(&values);
                            return channel.go(&frame).map(|()| Some(landlock));
                        }
                        other => messages.push(other),
                    }
                }
                Ok(None)
            };
            let ready = tokio::select! {
                ready = ready => ready,
                () = exited_before_ready.notified() => Ok(None),
            };
            if ready.is_err() {
                // The init waits for a go that will not come: end it now.
                let _ = kill(&self.docker, id).await;
            }
            ready
        };
        let (ended, (), ready) = tokio::join!(exit, pump, handshake);
        let (code, killed) = ended?;
        let ready = ready?;
        messages.extend(channel.rest());
        let duration_ms = started.elapsed().as_millis() as u64;

        let state = self
            .docker
            .inspect_container(id, None)
            .await
            .map_err(engine(format!("inspect container {id}")))?
            .state
            .unwrap_or_default();
        let heard = conclude(id, code, killed, ready, messages)?;
        let oom_killed = Outcome::killed_for_memory(
            state.oom_killed == Some(true),
            heard.signal,
            heard.timed_out,
        );
        let (stdout, mut redactions) = stdout.finish().await;
        let (stderr, more) = stderr.finish().await;
        nanoclaw_spec::add_counts(&mut redactions, more);
        let outcome = Outcome {
            exit_code: heard.exit_code,
            signal: heard.signal,
            timed_out: heard.timed_out,
            oom_killed,
            duration_ms,
            stdout,
            stderr,
            usage: heard.usage,
            enforced: Default::default(),
            writes: None,
            redactions,
            secret_expired: false,
            warnings: Vec::new(),
        };
        Ok((outcome, applied, heard.landlock))
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

/// How a run ended, from the container's exit status `code`, whether the runner's kill
/// at the timeout ended it, and what the init said on its channel: `ready` (its Landlock
/// status, once it let the command start) and every other message.
#[derive(Debug)]
struct Heard {
    landlock: LandlockStatus,
    exit_code: Option<i32>,
    signal: Option<i32>,
    timed_out: bool,
    usage: Usage,
}

fn conclude(
    id: &str,
    code: i64,
    killed: bool,
    ready: Option<LandlockStatus>,
    messages: Vec<ContainerMessage>,
) -> Result<Heard, BackendError> {
    let mut ended = None;
    for message in messages {
        match message {
            ContainerMessage::Init(InitMessage::SetupFailed(error)) => {
                return Err(BackendError::Setup(error));
            }
            ContainerMessage::Init(InitMessage::ExecFailed { program, errno, .. }) => {
                return Err(BackendError::exec_failed(program, errno));
            }
            ContainerMessage::Init(InitMessage::Ready { .. } | InitMessage::Exited { .. }) => {}
            ContainerMessage::Ended(report) => ended = Some(report),
        }
    }
    // The init ends the command itself at its deadline when the runner could not.
    let timed_out = killed || ended.is_some_and(|e| e.timed_out);
    let landlock = match ready {
        Some(landlock) => landlock,
        None if timed_out => LandlockStatus {
            status: "unknown".into(),
            abi: 0,
            reason: Some("the run timed out before nanoclaw's init reported".into()),
        },
        None => {
            return Err(BackendError::io(
                format!("run nanoclaw's init in container {id}"),
                std::io::Error::other(format!(
                    "it exited with status {code} before reporting that the command started"
                )),
            ))
        }
    };
    // The init knows what the container's exit status cannot tell (a signal from an exit
    // status over 128) and the usage; killed by the runner, it reported nothing.
    let (exit_code, signal) = match ended {
        _ if timed_out => (None, Some(libc::SIGKILL)),
        Some(ended) => (ended.exit_code, ended.signal),
        None if code == KILLED => (None, Some(libc::SIGKILL)),
        None => (Some(code as i32), None),
    };
    Ok(Heard {
        landlock,
        exit_code,
        signal,
        timed_out,
        usage: ended.map(|e| e.usage).unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use nanoclaw_spec::container::ContainerReport;

    fn full() -> LandlockStatus {
        LandlockStatus {
            status: "full".into(),
            abi: 6,
            reason: None,
        }
    }

    fn ended(exit_code: Option<i32>, signal: Option<i32>) -> ContainerMessage {
        ContainerMessage::Ended(ContainerReport {
            exit_code,
            signal,
            ..Default::default()
        })
    }

    #[test]
    fn the_inits_word_decides_the_outcome_and_nothing_else_does() {
        let heard = conclude("c", 143, false, Some(full()), vec![ended(None, Some(15))]);
        assert!(matches!(heard, Ok(h) if h.signal == Some(15) && h.landlock.abi == 6));
        let not_found = ContainerMessage::Init(InitMessage::ExecFailed {
            program: "nope".into(),
            errno: libc::ENOENT,
            message: String::new(),
        });
        let heard = conclude("c", 127, false, Some(full()), vec![not_found]);
        assert!(matches!(heard, Err(BackendError::CommandNotFound(p)) if p == "nope"));
        // Without the init's `Ready` the command never started, whatever the status says.
        assert!(conclude("c", 0, false, None, vec![]).is_err());
        let killed = conclude("c", 137, true, None, vec![]);
        assert!(matches!(killed, Ok(h) if h.timed_out && h.landlock.status == "unknown"));
        let at_deadline = ContainerReport {
            timed_out: true,
            ..Default::default()
        };
        let heard = conclude(
            "c",
            137,
            false,
            Some(full()),
            vec![ContainerMessage::Ended(at_deadline)],
        );
        assert!(matches!(heard, Ok(h) if h.timed_out && h.signal == Some(libc::SIGKILL)));
    }
}
