//! Labels on every container, and reaping the containers a killed nanoclaw left behind.
//!
//! Every container carries the nanoclaw instance (process) that made it, a deadline (the
//! unix time after which no live nanoclaw can still be running it, because its timeout has
//! passed and the grace for starting and removing it too), and a seal: an HMAC-SHA256 of
//! all its nanoclaw labels under a key that only this host's nanoclaw (of this user) can
//! read (`SealKey`). A nanoclaw killed with SIGKILL cannot remove its container; the next
//! run of a nanoclaw of the same host and user does, once that container has stopped and
//! its instance is gone, or once its deadline has passed. Containers within their deadline
//! whose instance lives are left alone: that nanoclaw is running them.
//!
//! This module must never remove a container whose seal does not verify (an image's
//! `LABEL` or another user's run can carry any other label), or whose deadline cannot be
//! read.

use std::collections::HashMap;
use std::io::Read;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bollard::models::ContainerSummaryStateEnum;
use bollard::query_parameters::{ListContainersOptions, RemoveContainerOptions};
use bollard::Docker;
use nanoclaw_spec::BackendError;
use sha2::{Digest, Sha256};

pub const LABEL_TOOL: &str = "io.nanoclaw.tool";
pub const LABEL_INVOCATION: &str = "io.nanoclaw.invocation";
pub const LABEL_INSTANCE: &str = "io.nanoclaw.instance";
pub const LABEL_DEADLINE: &str = "io.nanoclaw.deadline";
/// The HMAC of the labels above (`seal`).
pub const LABEL_SEAL: &str = "io.nanoclaw.seal";
/// The container's own name, under the seal: a seal copied onto another container (its
/// labels set from an image or by hand) names a container that is not this one.
pub const LABEL_CONTAINER: &str = "io.nanoclaw.container";

/// Where root's nanoclaw keeps its sealing key; other users keep theirs in their state
/// directory.
pub const ROOT_KEY_DIR: &str = "/var/lib/nanoclaw";
const KEY_FILE: &str = "docker-seal.key";
const KEY_LEN: usize = 32;

/// Time beyond the timeout for creating, starting, stopping and removing a container. A run
/// still going after its deadline is stale.
pub const GRACE: Duration = Duration::from_secs(30);

/// This process's instance id: its pid and start time, unique on the engine's host.
pub fn instance() -> &'static str {
    static INSTANCE: OnceLock<String> = OnceLock::new();
    INSTANCE.get_or_init(|| format!("{}-{:x}", std::process::id(), unix_nanos()))
}

/// A fresh invocation id within this instance.
pub fn next_invocation() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    format!("{}-{}", instance(), NEXT.fetch_add(1, Ordering::Relaxed))
}

fn unix_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default()
}

pub fn unix_now() -> u64 {
    (unix_nanos() / 1_000_000_000) as u64
}

/// The host-local secret that seals this user's containers: 32 random bytes in a file only
/// this user can read, made on first use.
#[derive(Clone)]
pub struct SealKey([u8; KEY_LEN]);

impl std::fmt::Debug for SealKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealKey(..)")
    }
}

impl SealKey {
    /// This user's key, read (or made) once per process.
    pub fn get() -> Result<&'static SealKey, BackendError> {
        static KEY: OnceLock<Result<SealKey, String>> = OnceLock::new();
        KEY.get_or_init(|| SealKey::load(&key_dir()).map_err(|e| e.to_string()))
            .as_ref()
            .map_err(|e| BackendError::Invalid(e.clone()))
    }

    /// The key in `dir`, made there (0700 directory, 0600 file) when there is none. A key
    /// file that is not this user's alone is refused, never used or replaced.
    pub fn load(dir: &Path) -> Result<SealKey, BackendError> {
        let path = dir.join(KEY_FILE);
        let failed = |e: std::io::Error| {
            BackendError::io(
                format!("read the container sealing key {}", path.display()),
                e,
            )
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(failed)?;
        let mut random = [0u8; KEY_LEN];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut random))
            .map_err(failed)?;
        // Written whole under a name of this process, then linked into place, which fails
        // if another process was first: a reader never sees a half-written key.
        let draft = dir.join(format!("{KEY_FILE}.{}", std::process::id()));
        let _ = std::fs::remove_file(&draft);
        let written = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&draft)
            .and_then(|mut file| {
                std::io::Write::write_all(&mut file, &random)?;
                file.sync_all()
            })
            .and_then(|()| std::fs::hard_link(&draft, &path));
        let _ = std::fs::remove_file(&draft);
        match written {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(failed(e)),
        }
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .map_err(failed)?;
        let meta = file.metadata().map_err(failed)?;
        let me = rustix::process::geteuid().as_raw();
        if !meta.is_file() || meta.uid() != me || meta.mode() & 0o077 != 0 {
            return Err(BackendError::Invalid(format!(
                "{} is not a private file of uid {me}; remove it (a new key is made)",
                path.display()
            )));
        }
        let mut key = [0u8; KEY_LEN];
        let mut extra = [0u8; 1];
        file.read_exact(&mut key).map_err(failed)?;
        if file.read(&mut extra).map_err(failed)? != 0 {
            return Err(BackendError::Invalid(format!(
                "{} is not a sealing key; remove it (a new key is made)",
                path.display()
            )));
        }
        Ok(SealKey(key))
    }

    /// HMAC-SHA256 (RFC 2104) of `message`.
    fn mac(&self, message: &[u8]) -> [u8; 32] {
        const BLOCK: usize = 64;
        let mut padded = [0u8; BLOCK];
        padded[..KEY_LEN].copy_from_slice(&self.0);
        let pad = |byte: u8| padded.map(|k| k ^ byte);
        let inner = Sha256::new()
            .chain_update(pad(0x36))
            .chain_update(message)
            .finalize();
        Sha256::new()
            .chain_update(pad(0x5c))
            .chain_update(inner)
            .finalize()
            .into()
    }

    /// The seal of a container's labels: every nanoclaw label but the seal, in one
    /// unambiguous encoding (each value's length precedes it).
    fn seal(&self, labels: &HashMap<String, String>) -> String {
        let mut message = b"nanoclaw docker container v1".to_vec();
        for key in [
            LABEL_TOOL,
            LABEL_INVOCATION,
            LABEL_INSTANCE,
            LABEL_DEADLINE,
            LABEL_CONTAINER,
        ] {
            let value = labels.get(key).map(String::as_bytes).unwrap_or_default();
            message.extend_from_slice(&(value.len() as u64).to_be_bytes());
            message.extend_from_slice(value);
        }
        self.mac(&message)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// Whether `labels` carry a seal made with this key.
    pub fn verifies(&self, labels: &HashMap<String, String>) -> bool {
        let Some(seal) = labels.get(LABEL_SEAL) else {
            return false;
        };
        let expected = self.seal(labels);
        // Constant time: the comparison must not tell a forger how much of a guess was right.
        seal.len() == expected.len()
            && seal
                .bytes()
                .zip(expected.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }
}

/// Root's key directory, or this user's state directory (`$XDG_STATE_HOME/nanoclaw`,
/// `~/.local/state/nanoclaw`).
fn key_dir() -> PathBuf {
    if rustix::process::geteuid().is_root() {
        return PathBuf::from(ROOT_KEY_DIR);
    }
    let state = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| {
            std::env::var_os("HOME")
                .map(PathBuf::from)
                .filter(|p| p.is_absolute())
                .map(|home| home.join(".local/state"))
        })
        .unwrap_or_else(|| {
            std::env::temp_dir().join(format!(
                "nanoclaw-state-{}",
                rustix::process::geteuid().as_raw()
            ))
        });
    state.join("nanoclaw")
}

/// The labels of the container named `container` for `tool`'s `invocation` that must be
/// gone by `timeout` from now, plus the grace, sealed with `key`.
pub fn labels(
    key: &SealKey,
    tool: &str,
    invocation: &str,
    container: &str,
    timeout: Duration,
) -> HashMap<String, String> {
    let deadline = unix_now() + timeout.as_secs() + 1 + GRACE.as_secs();
    let mut labels = HashMap::from([
        (LABEL_TOOL.to_string(), tool.to_string()),
        (LABEL_INVOCATION.to_string(), invocation.to_string()),
        (LABEL_INSTANCE.to_string(), instance().to_string()),
        (LABEL_DEADLINE.to_string(), deadline.to_string()),
        (LABEL_CONTAINER.to_string(), container.to_string()),
    ]);
    let seal = key.seal(&labels);
    labels.insert(LABEL_SEAL.to_string(), seal);
    labels
}

/// Whether the container's sealed name label is its own name (the engine lists names with
/// a leading `/`): a seal copied onto another container never makes that one stale.
fn names_itself(labels: &HashMap<String, String>, names: Option<&[String]>) -> bool {
    let Some(sealed) = labels.get(LABEL_CONTAINER) else {
        return false;
    };
    names
        .unwrap_or_default()
        .iter()
        .any(|name| name.strip_prefix('/') == Some(sealed.as_str()))
}

/// Whether a container with these labels, `running` or not, is one this host's nanoclaw
/// made and nothing tracks any more: its seal verifies, its deadline reads, and either the
/// deadline has passed or the container has stopped and the process that made it is gone.
pub fn is_stale(key: &SealKey, labels: &HashMap<String, String>, running: bool, now: u64) -> bool {
    if !key.verifies(labels) {
        return false;
    }
    let Some(deadline) = labels
        .get(LABEL_DEADLINE)
        .and_then(|d| d.parse::<u64>().ok())
    else {
        return false;
    };
    deadline < now || (!running && !instance_lives(labels))
}

/// Whether the nanoclaw process named by the instance label may still be running (a pid
/// that cannot be read counts as alive).
fn instance_lives(labels: &HashMap<String, String>) -> bool {
    let Some(pid) = labels
        .get(LABEL_INSTANCE)
        .and_then(|i| i.split('-').next())
        .and_then(|p| p.parse::<u32>().ok())
    else {
        return true;
    };
    Path::new("/proc").join(pid.to_string()).exists()
}

/// The ids of the containers, running or not, that carry `label` (`key` or `key=value`).
pub async fn list(
    docker: &Docker,
    label: &str,
) -> Result<Vec<(String, HashMap<String, String>)>, bollard::errors::Error> {
    let options = ListContainersOptions {
        all: true,
        filters: Some(HashMap::from([(
            "label".to_string(),
            vec![label.to_string()],
        )])),
        ..Default::default()
    };
    let containers = docker.list_containers(Some(options)).await?;
    Ok(containers
        .into_iter()
        .filter_map(|c| Some((c.id?, c.labels.unwrap_or_default())))
        .collect())
}

/// Kills and removes a container with its anonymous volumes. A container already gone (or
/// being removed by someone else) counts as removed.
pub async fn remove(docker: &Docker, id: &str) -> Result<(), bollard::errors::Error> {
    let options = RemoveContainerOptions {
        force: true,
        v: true,
        ..Default::default()
    };
    match docker.remove_container(id, Some(options)).await {
        Ok(()) => Ok(()),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404 | 409,
            ..
        }) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Removes every container of this host's nanoclaw that nothing tracks any more
/// (`is_stale`); returns their ids.
pub async fn stale(docker: &Docker) -> Result<Vec<String>, BackendError> {
    let key = SealKey::get()?;
    let now = unix_now();
    let options = ListContainersOptions {
        all: true,
        filters: Some(HashMap::from([(
            "label".to_string(),
            vec![LABEL_SEAL.to_string()],
        )])),
        ..Default::default()
    };
    let listed = docker
        .list_containers(Some(options))
        .await
        .map_err(crate::lifecycle::engine("list nanoclaw containers"))?;
    let stale: Vec<String> = listed
        .into_iter()
        .filter(|c| {
            let running = !matches!(
                c.state,
                Some(ContainerSummaryStateEnum::EXITED)
                    | Some(ContainerSummaryStateEnum::CREATED)
                    | Some(ContainerSummaryStateEnum::DEAD)
            );
            let labels = c.labels.clone().unwrap_or_default();
            is_stale(key, &labels, running, now) && names_itself(&labels, c.names.as_deref())
        })
        .filter_map(|c| c.id)
        .collect();
    let removals = stale.iter().map(|id| remove(docker, id));
    for result in futures_util::future::join_all(removals).await {
        result.map_err(crate::lifecycle::engine(
            "remove a stale nanoclaw container",
        ))?;
    }
    Ok(stale)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SealKey {
        SealKey([7; KEY_LEN])
    }

    #[test]
    fn a_container_is_stale_only_after_its_deadline_or_its_runner() {
        let now = unix_now();
        let fresh = labels(&key(), "t", "i", "nanoclaw-i", Duration::from_secs(60));
        // This process made it and lives: only the deadline makes it stale.
        assert!(!is_stale(&key(), &fresh, false, now));
        assert!(!is_stale(&key(), &fresh, true, now + 60 + GRACE.as_secs()));
        assert!(is_stale(&key(), &fresh, true, now + 62 + GRACE.as_secs()));
    }

    #[test]
    fn only_a_seal_of_this_key_over_these_labels_verifies() {
        let now = unix_now();
        let sealed = labels(&key(), "t", "i", "nanoclaw-i", Duration::from_secs(0));
        let later = now + 100 + GRACE.as_secs();
        assert!(is_stale(&key(), &sealed, true, later));
        assert!(
            !is_stale(&SealKey([8; KEY_LEN]), &sealed, true, later),
            "another key"
        );
        let mut moved = sealed.clone();
        moved.insert(LABEL_DEADLINE.into(), "0".into());
        assert!(!is_stale(&key(), &moved, true, later), "a changed deadline");
        let mut unsealed = sealed.clone();
        unsealed.remove(LABEL_SEAL);
        assert!(!is_stale(&key(), &unsealed, true, u64::MAX), "no seal");
        let mut unreadable = sealed;
        unreadable.insert(LABEL_DEADLINE.into(), "soon".into());
        let resealed = key().seal(&unreadable);
        unreadable.insert(LABEL_SEAL.into(), resealed);
        assert!(
            !is_stale(&key(), &unreadable, false, u64::MAX),
            "no deadline"
        );
    }

    #[test]
    fn a_seal_copied_onto_another_container_does_not_name_it() {
        let sealed = labels(&key(), "t", "i", "nanoclaw-i", Duration::from_secs(0));
        let own = ["/nanoclaw-i".to_string()];
        let other = ["/someone-elses".to_string()];
        assert!(names_itself(&sealed, Some(&own)));
        assert!(!names_itself(&sealed, Some(&other)));
        assert!(!names_itself(&sealed, None));
        let mut renamed = sealed.clone();
        renamed.insert(LABEL_CONTAINER.into(), "someone-elses".into());
        assert!(
            !is_stale(&key(), &renamed, true, u64::MAX),
            "the name is sealed"
        );
    }

    #[test]
    fn the_hmac_is_rfc_4231s() {
        // RFC 4231 test case 2 has a 4-byte key: pad it as HMAC does.
        let mut raw = [0u8; KEY_LEN];
        raw[..4].copy_from_slice(b"Jefe");
        let mac = SealKey(raw).mac(b"what do ya want for nothing?");
        let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn a_key_is_made_once_and_must_be_private() {
        let dir = tempfile::tempdir().unwrap();
        let first = SealKey::load(dir.path()).unwrap();
        let again = SealKey::load(dir.path()).unwrap();
        assert_eq!(first.0, again.0);
        let path = dir.path().join(KEY_FILE);
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .unwrap();
        assert!(SealKey::load(dir.path()).is_err());
    }

    #[test]
    fn invocations_are_unique_within_the_instance() {
        let a = next_invocation();
        let b = next_invocation();
        assert_ne!(a, b);
        assert!(a.starts_with(instance()));
    }
}
