//! The wire between the Docker backend's runner and nanoclaw's own init inside the
//! container (`nanoclaw_native::container`): its argument, the report lines and the
//! lifeline's secrets frame. One definition for both ends.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::{Delivery, LandlockStatus, SetupError, Usage, Zeroizing};

/// The first argument that makes the nanoclaw binary act as a container's init:
/// `nanoclaw __nanoclaw_container_init JSON` (a [`ContainerInit`]).
pub const CONTAINER_INIT_ARG: &str = "__nanoclaw_container_init";

/// The byte on the lifeline that lets the command start.
pub const GO: u8 = b'g';

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
    /// The named pipe (mounted read-only) the init reports on (`ContainerMessage` lines).
    pub report: PathBuf,
    /// The named pipe (mounted read-only) whose write end the runner holds.
    pub lifeline: PathBuf,
    /// The spec's timeout, which the init enforces itself past a grace period.
    pub timeout_ms: u64,
    /// The `file` and `env` secrets, by name: their values come on the lifeline, in this
    /// order, just before `GO` (`secrets_frame`), never through the engine.
    #[serde(default)]
    pub secrets: Vec<ContainerSecret>,
}

/// A secret the container's init delivers: `File` into `SECRETS_DIR` (a tmpfs the engine
/// mounts in the container only), `Env` into the command's environment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerSecret {
    pub name: String,
    pub delivery: Delivery,
}

/// The largest secrets frame: it must fit an empty pipe whole, so that the runner's write
/// never waits on the init.
pub const MAX_SECRETS_FRAME: usize = 60 * 1024;

/// What the runner writes on the lifeline to start the command: the secrets' values (each
/// a 4-byte little-endian length and the bytes), then `GO`.
pub fn secrets_frame(values: &[&[u8]]) -> Zeroizing<Vec<u8>> {
    let size = values.iter().map(|v| 4 + v.len()).sum::<usize>() + 1;
    let mut frame = Zeroizing::new(Vec::with_capacity(size));
    for value in values {
        frame.extend_from_slice(&u32::try_from(value.len()).unwrap_or(u32::MAX).to_le_bytes());
        frame.extend_from_slice(value);
    }
    frame.push(GO);
    frame
}

/// Reads `count` values and `GO` from `frame`: `None` while incomplete, `Some(Err)` if it
/// is not a frame.
pub fn parse_frame(frame: &[u8], count: usize) -> Option<Result<Vec<Zeroizing<Vec<u8>>>, ()>> {
    let mut values = Vec::with_capacity(count);
    let mut at = 0;
    for _ in 0..count {
        let len = frame.get(at..at + 4)?;
        let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
        if len > MAX_SECRETS_FRAME {
            return Some(Err(()));
        }
        values.push(Zeroizing::new(frame.get(at + 4..at + 4 + len)?.to_vec()));
        at += 4 + len;
    }
    match frame.get(at) {
        None => None,
        Some(&GO) if frame.len() == at + 1 => Some(Ok(values)),
        Some(_) => Some(Err(())),
    }
}

/// One line on the report pipe.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContainerMessage {
    /// What the native init also says: ready, setup failed, exec failed.
    Init(InitMessage),
    /// The command ended (or the init ended it at its deadline).
    Ended(ContainerReport),
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
    /// The init ended the command at its deadline (the runner had not).
    #[serde(default)]
    pub timed_out: bool,
}

/// What a sandbox init (native or a container's) tells the one that started it.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InitMessage {
    /// Every layer is in place; the command is about to be started.
    Ready { landlock: LandlockStatus },
    /// Setup failed before the command started.
    SetupFailed(SetupError),
    /// `execve` of the command failed.
    ExecFailed {
        program: String,
        errno: i32,
        message: String,
    },
    /// The command ended with this raw wait status.
    Exited { status: i32 },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secrets_frame_parses_back_only_whole_and_exact() {
        let frame = secrets_frame(&[b"one", b"", b"three\0"]);
        let values = parse_frame(&frame, 3)
            .and_then(Result::ok)
            .unwrap_or_default();
        let values: Vec<&[u8]> = values.iter().map(|v| v.as_slice()).collect();
        assert_eq!(values, [&b"one"[..], b"", b"three\0"]);
        assert!(
            parse_frame(&frame[..frame.len() - 1], 3).is_none(),
            "incomplete"
        );
        assert!(
            matches!(parse_frame(&frame, 2), Some(Err(()))),
            "a count too low"
        );
        assert!(matches!(parse_frame(&[GO], 0), Some(Ok(v)) if v.is_empty()));
        assert!(matches!(parse_frame(b"x", 0), Some(Err(()))));
    }

    #[test]
    fn the_arguments_round_trip_as_json() {
        let init = ContainerInit {
            command: vec!["sh".into(), "-c".into(), "echo $A".into()],
            env: vec!["A".into()],
            writable: vec!["/tmp".into()],
            workdir: "/".into(),
            bridge_port: Some(3128),
            report: "/.nanoclaw/report".into(),
            lifeline: "/.nanoclaw/lifeline".into(),
            timeout_ms: 30_000,
            secrets: vec![ContainerSecret {
                name: "T".into(),
                delivery: Delivery::File,
            }],
        };
        let json = serde_json::to_string(&init).unwrap_or_default();
        assert_eq!(
            serde_json::from_str::<ContainerInit>(&json).ok(),
            Some(init)
        );
    }
}
