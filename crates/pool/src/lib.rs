//! How the long-running modes (`nanoclaw mcp`, `nanoclaw agent`) run one tool call, and the
//! pool of runners started ahead of the calls.
//!
//! A call is one `nanoclaw run --policy F --tool=T --workspace W --audit A --json
//! --params-json=-` child: the whole sandbox (it writes the audit records, applies the
//! writes, and its lifeline takes the sandbox with it). The caller writes the arguments on
//! its stdin, closes it, and reads one JSON outcome on its stdout. `Launcher` is the only
//! code that builds that command line: nothing a client or a model chose reaches it but the
//! tool's name (after `=`, so it never reads as an option).
//!
//! The pool (`Pool`) keeps up to N children per tool started with `--prebuilt`: each builds
//! its sandbox, says so with one byte `R` on fd 3, then waits for the call's arguments on
//! stdin (the contract is in `crates/cli/src/prebuilt.rs`). A call takes one (or runs one
//! one-shot if none is ready); a child serves exactly one call and is gone after it. One
//! thread refills the pool, discards the children that waited past `max_idle`, and counts
//! the waiting children's memory (VmRSS).
//!
//! Every child gets SIGTERM when the thread that forked it dies (parent-death signal: it
//! follows the forking thread): one-shot children are forked by the caller's thread, pooled
//! ones by the pool's thread, which lives until `Pool::stop` (or the process's death).
//! A pre-built child that gets SIGTERM or sees its stdin closed with nothing on it exits
//! without running anything.
//!
//! This crate never builds a sandbox nor reads params: it runs `nanoclaw run`.

use std::collections::{HashMap, VecDeque};
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nanoclaw_policy::{BackendKind, Tool};

/// How long a discarded child has to tear its sandbox down after SIGTERM.
const GRACE: Duration = Duration::from_secs(3);

/// How long a pre-building child may take to say it is ready.
const READY_WITHIN: Duration = Duration::from_secs(30);

/// How often the refill thread looks for waiting children gone by themselves.
const PRUNE_EVERY: Duration = Duration::from_secs(2);

/// The default `--pool`: pre-built children per tool.
pub const DEFAULT_SIZE: usize = 2;

/// The default `--pool-max-idle`.
pub const DEFAULT_MAX_IDLE: Duration = Duration::from_secs(60);

/// How to start `nanoclaw run` for one call.
pub struct Launcher {
    /// The `nanoclaw` executable.
    pub exe: PathBuf,
    pub policy: PathBuf,
    pub workspace: PathBuf,
    pub audit: PathBuf,
    /// Variables of this process the runner must not inherit (the agent's model keys).
    pub env_remove: Vec<String>,
}

impl Launcher {
    /// The command for one call of `tool`; stdin, stdout and stderr are pipes.
    fn command(&self, tool: &str) -> Command {
        let mut command = Command::new(&self.exe);
        command
            .arg("run")
            .arg("--policy")
            .arg(&self.policy)
            // `=`: a value never reads as another option, whatever the policy names a tool.
            .arg(format!("--tool={tool}"))
            .arg("--workspace")
            .arg(&self.workspace)
            .arg("--audit")
            .arg(&self.audit)
            .arg("--json")
            // On stdin rather than the command line: no size limit of one argument, and not
            // in `/proc/PID/cmdline` for every user of the host to read.
            .arg("--params-json=-")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for name in &self.env_remove {
            command.env_remove(name);
        }
        command
    }

    /// Starts one call of `tool` now (one-shot), killed with the calling thread.
    pub fn spawn(&self, tool: &str) -> std::io::Result<Child> {
        let mut command = self.command(tool);
        arm(&mut command, None);
        command.spawn()
    }

    /// Starts a `--prebuilt` child of `tool` and returns it with the read end of its
    /// readiness pipe (its fd 3).
    fn spawn_prebuilt(&self, tool: &str) -> std::io::Result<(Child, OwnedFd)> {
        let mut command = self.command(tool);
        command.arg("--prebuilt");
        let (read, write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
        arm(&mut command, Some(write.as_raw_fd()));
        let child = command.spawn();
        drop(write);
        Ok((child?, read))
    }
}

/// Parent-death signal (SIGTERM) and, for a pre-built child, `ready` as its fd 3.
fn arm(command: &mut Command, ready: Option<i32>) {
    let parent = rustix::process::getpid();
    // SAFETY: the closure runs in the forked child before exec and only makes
    // async-signal-safe system calls (prctl, getppid, dup2, fcntl), allocating nothing.
    unsafe {
        command.pre_exec(move || {
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::TERM))?;
            // The parent may have died before the signal was armed.
            if rustix::process::getppid() != Some(parent) {
                return Err(std::io::Error::other("the parent is gone"));
            }
            if let Some(fd) = ready {
                if fd == 3 {
                    // Already fd 3: only clear close-on-exec.
                    if libc::fcntl(3, libc::F_SETFD, 0) == -1 {
                        return Err(std::io::Error::last_os_error());
                    }
                } else if libc::dup2(fd, 3) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

/// Whether calls of `tool` can take a pre-built sandbox; the reason when they cannot.
///
/// The arguments of a call feed only the command's argv and stdin (`Tool::bind`); its
/// sandbox (`Policy::resolve_scope`: mounts, workdir, environment, limits, network) depends
/// on the tool, the workspace and the policy, which are fixed for the server's lifetime.
/// So every native tool can be pre-built; the Docker backend has no pre-built container yet.
pub fn poolable(tool: &Tool) -> Result<(), String> {
    match tool.backend {
        BackendKind::Native => Ok(()),
        BackendKind::Docker => Err("the Docker backend has no pre-built sandbox yet".into()),
    }
}

/// The pool's size and idle limit.
#[derive(Clone, Copy, Debug)]
pub struct Config {
    /// Pre-built children per tool; 0: no pool, every call one-shot.
    pub size: usize,
    /// A pre-built child that waited longer is discarded and replaced.
    pub max_idle: Duration,
}

/// What the pool holds now.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Pre-built children waiting for a call.
    pub waiting: usize,
    /// The sum of their resident memory (VmRSS), in KiB.
    pub rss_kib: u64,
    /// Children started, taken by a call, and discarded (idle) since the pool started.
    pub started: u64,
    pub taken: u64,
    pub discarded: u64,
}

/// Pre-built `nanoclaw run` children per tool, refilled by one thread.
pub struct Pool {
    inner: Arc<Inner>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

struct Inner {
    launcher: Arc<Launcher>,
    config: Config,
    /// The tools pre-built, in the policy's order.
    tools: Vec<String>,
    state: Mutex<State>,
    wake: Condvar,
    log: Box<dyn Fn(&str) + Send + Sync>,
    debug: bool,
}

#[derive(Default)]
struct State {
    waiting: HashMap<String, VecDeque<Waiting>>,
    /// Tools whose pre-build failed: their calls run one-shot from then on.
    failed: Vec<String>,
    /// Children to tear down (expired when a call looked).
    discard: Vec<Child>,
    started: u64,
    taken: u64,
    discarded: u64,
    stopping: bool,
}

struct Waiting {
    child: Child,
    since: Instant,
}

impl Pool {
    /// Starts the pool for `tools` (with `config.size` 0: none). Says once, through `log`,
    /// which tools run one-shot and why. With `NANOCLAW_POOL_DEBUG=1` in the environment,
    /// `log` also gets a `pool: waiting=N rss_kib=K ...` line each time the pool changes.
    pub fn start(
        launcher: Arc<Launcher>,
        config: Config,
        tools: &[Tool],
        log: Box<dyn Fn(&str) + Send + Sync>,
    ) -> std::io::Result<Pool> {
        let mut pooled = Vec::new();
        if config.size == 0 {
            log("pool: off (--pool 0): every call starts its sandbox when it comes");
        } else {
            for tool in tools {
                match poolable(tool) {
                    Ok(()) => pooled.push(tool.name.clone()),
                    Err(reason) => log(&format!(
                        "pool: tool `{}` runs one-shot (its sandbox is started per call): {reason}",
                        tool.name
                    )),
                }
            }
        }
        let inner = Arc::new(Inner {
            launcher,
            config,
            tools: pooled,
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
            log,
            debug: std::env::var_os("NANOCLAW_POOL_DEBUG").is_some_and(|v| v == "1"),
        });
        let thread = if inner.tools.is_empty() {
            None
        } else {
            let refill = inner.clone();
            Some(
                std::thread::Builder::new()
                    .name("nanoclaw-pool".into())
                    .spawn(move || refill.run())?,
            )
        };
        Ok(Pool {
            inner,
            thread: Mutex::new(thread),
        })
    }

    /// A pre-built child of `tool` ready for one call, if one waits: write the arguments
    /// on its stdin and close it, as for `Launcher::spawn`. `None`: run it one-shot.
    pub fn take(&self, tool: &str) -> Option<Child> {
        let mut guard = self.inner.lock();
        let state = &mut *guard;
        let max_idle = self.inner.config.max_idle;
        let mut taken = None;
        if let Some(queue) = state.waiting.get_mut(tool) {
            let mut expired = Vec::new();
            while let Some(mut waiting) = queue.pop_front() {
                if waiting.since.elapsed() > max_idle {
                    expired.push(waiting.child);
                    continue;
                }
                // Gone already (e.g. Ctrl-C to the process group): reaped here, not used.
                if !matches!(waiting.child.try_wait(), Ok(None)) {
                    state.discarded += 1;
                    continue;
                }
                taken = Some(waiting.child);
                break;
            }
            // Counted and torn down by the refill thread.
            state.discard.extend(expired);
        }
        if taken.is_some() {
            state.taken += 1;
        }
        drop(guard);
        self.inner.wake.notify_all();
        taken
    }

    /// The waiting children and their memory now.
    pub fn stats(&self) -> Stats {
        self.inner.stats(&self.inner.lock())
    }

    /// Stops refilling and tears the waiting children down; returns once they are gone.
    /// Children already taken by a call get SIGTERM too (the forking thread ends): call it
    /// once no call runs.
    pub fn stop(&self) {
        self.inner.lock().stopping = true;
        self.inner.wake.notify_all();
        let thread = self
            .thread
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn stats(&self, state: &State) -> Stats {
        let children = state.waiting.values().flatten();
        Stats {
            waiting: state.waiting.values().map(VecDeque::len).sum(),
            rss_kib: children.map(|w| rss_kib(w.child.id())).sum(),
            started: state.started,
            taken: state.taken,
            discarded: state.discarded,
        }
    }

    fn debug_stats(&self) {
        if self.debug {
            let stats = self.stats(&self.lock());
            (self.log)(&format!(
                "pool: waiting={} rss_kib={} started={} taken={} discarded={}",
                stats.waiting, stats.rss_kib, stats.started, stats.taken, stats.discarded
            ));
        }
    }

    /// The refill thread: discard the expired, start the missing, sleep until a call takes
    /// one or the next child expires.
    fn run(&self) {
        loop {
            let mut state = self.lock();
            if state.stopping {
                break;
            }
            let now = Instant::now();
            let max_idle = self.config.max_idle;
            let mut discard = std::mem::take(&mut state.discard);
            let mut next_expiry: Option<Instant> = None;
            let mut dead = 0;
            for queue in state.waiting.values_mut() {
                let before = queue.len();
                // The ones gone by themselves (a signal to the process group): reaped.
                queue.retain_mut(|w| matches!(w.child.try_wait(), Ok(None)));
                dead += before - queue.len();
                let (keep, expired): (VecDeque<Waiting>, VecDeque<Waiting>) = queue
                    .drain(..)
                    .partition(|w| now.duration_since(w.since) <= max_idle);
                discard.extend(expired.into_iter().map(|w| w.child));
                for w in &keep {
                    let at = w.since + max_idle;
                    next_expiry = Some(next_expiry.map_or(at, |n| n.min(at)));
                }
                *queue = keep;
            }
            state.discarded += (discard.len() + dead) as u64;
            let missing = self
                .tools
                .iter()
                .find(|tool| {
                    !state.failed.contains(*tool)
                        && state.waiting.get(*tool).map_or(0, VecDeque::len) < self.config.size
                })
                .cloned();
            if discard.is_empty() && missing.is_none() {
                // At the next expiry, and every few seconds to reap the ones gone by
                // themselves.
                let sleep = next_expiry.map_or(PRUNE_EVERY, |at| {
                    (at.saturating_duration_since(now) + Duration::from_millis(1)).min(PRUNE_EVERY)
                });
                drop(
                    self.wake
                        .wait_timeout(state, sleep)
                        .unwrap_or_else(std::sync::PoisonError::into_inner),
                );
                continue;
            }
            drop(state);
            let changed = !discard.is_empty();
            for child in discard {
                terminate(child);
            }
            if changed {
                self.debug_stats();
            }
            if let Some(tool) = missing {
                self.refill(&tool);
            }
        }
        let waiting: Vec<Child> = {
            let mut state = self.lock();
            let mut all: Vec<Child> = state.discard.drain(..).collect();
            for queue in state.waiting.values_mut() {
                all.extend(queue.drain(..).map(|w| w.child));
            }
            all
        };
        for child in waiting {
            terminate(child);
        }
    }

    /// Starts one pre-built child of `tool` and waits until it is ready.
    fn refill(&self, tool: &str) {
        let started = self.launcher.spawn_prebuilt(tool);
        let ready = started.and_then(|(mut child, pipe)| match wait_ready(&pipe) {
            Ok(()) => Ok(child),
            Err(error) => {
                let _ = child.kill();
                let mut stderr = String::new();
                if let Some(mut pipe) = child.stderr.take() {
                    let _ = pipe.read_to_string(&mut stderr);
                }
                let _ = child.wait();
                let stderr = stderr.trim();
                Err(std::io::Error::other(if stderr.is_empty() {
                    error.to_string()
                } else {
                    format!("{error}: {stderr}")
                }))
            }
        });
        let mut state = self.lock();
        match ready {
            Ok(child) => {
                state.started += 1;
                let waiting = Waiting {
                    child,
                    since: Instant::now(),
                };
                if state.stopping {
                    drop(state);
                    terminate(waiting.child);
                    return;
                }
                state
                    .waiting
                    .entry(tool.to_owned())
                    .or_default()
                    .push_back(waiting);
            }
            Err(error) => {
                state.failed.push(tool.to_owned());
                drop(state);
                (self.log)(&format!(
                    "pool: tool `{tool}` could not be pre-built ({error}); its calls run one-shot"
                ));
                return;
            }
        }
        drop(state);
        self.debug_stats();
    }
}

/// Waits for the byte `R` on the readiness pipe.
fn wait_ready(pipe: &OwnedFd) -> std::io::Result<()> {
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    let deadline = Instant::now() + READY_WITHIN;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::Error::other(format!(
                "not ready within {}s",
                READY_WITHIN.as_secs()
            )));
        }
        let mut fds = [PollFd::new(pipe, PollFlags::IN)];
        let timeout = Timespec::try_from(left).unwrap_or(Timespec {
            tv_sec: 1,
            tv_nsec: 0,
        });
        match poll(&mut fds, Some(&timeout)) {
            Ok(0) => continue,
            Ok(_) => break,
            Err(rustix::io::Errno::INTR) => continue,
            Err(error) => return Err(error.into()),
        }
    }
    let mut byte = [0u8; 1];
    match rustix::io::read(pipe, &mut byte) {
        Ok(1) if byte[0] == b'R' => Ok(()),
        Ok(_) => Err(std::io::Error::other(
            "the runner refused to pre-build (it closed its readiness pipe)",
        )),
        Err(error) => Err(error.into()),
    }
}

/// SIGTERM (the runner tears its sandbox down, runs nothing), SIGKILL after the grace
/// period; returns once the child is reaped.
fn terminate(mut child: Child) {
    if let Some(pid) = rustix::process::Pid::from_raw(child.id() as i32) {
        // Not reaped yet (only this function reaps it): the pid is still its own.
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    }
    let deadline = Instant::now() + GRACE;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// VmRSS of `pid` in KiB (0 if it is gone).
fn rss_kib(pid: u32) -> u64 {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return 0;
    };
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Parses `--pool-max-idle`: a number with `ms`, `s`, `m` or `h` (a bare number: seconds).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?}: expected a duration like 500ms, 60s, 5m"))?;
    let duration = match unit {
        "ms" => Duration::from_millis(number),
        "" | "s" => Duration::from_secs(number),
        "m" => Duration::from_secs(number * 60),
        "h" => Duration::from_secs(number * 3600),
        _ => return Err(format!("{text:?}: the unit must be ms, s, m or h")),
    };
    if duration.is_zero() {
        return Err("the idle limit must be more than zero".into());
    }
    Ok(duration)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("60s"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("1d").is_err());
        assert!(parse_duration("s").is_err());
    }

    #[test]
    fn own_rss_is_counted() {
        assert!(rss_kib(std::process::id()) > 0);
        assert_eq!(rss_kib(u32::MAX), 0);
    }
}
