//! Labels on every container, and reaping the containers a killed nanoclaw left behind.
//!
//! Every container carries the nanoclaw instance (process) that made it and a deadline: the
//! unix time after which no live nanoclaw can still be running it, because its timeout has
//! passed and the grace for starting and removing it too. A nanoclaw killed with SIGKILL
//! cannot remove its container; the next run of any nanoclaw on the engine does, once that
//! deadline has passed. Containers within their deadline are left alone: another nanoclaw
//! may be running them.
//!
//! This module must never remove a container without the `io.nanoclaw.instance` label.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bollard::query_parameters::{ListContainersOptions, RemoveContainerOptions};
use bollard::Docker;

pub const LABEL_TOOL: &str = "io.nanoclaw.tool";
pub const LABEL_INVOCATION: &str = "io.nanoclaw.invocation";
pub const LABEL_INSTANCE: &str = "io.nanoclaw.instance";
pub const LABEL_DEADLINE: &str = "io.nanoclaw.deadline";

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

/// The labels of a container for `tool`'s `invocation` that must be gone by `timeout` from
/// now, plus the grace.
pub fn labels(tool: &str, invocation: &str, timeout: Duration) -> HashMap<String, String> {
    let deadline = unix_now() + timeout.as_secs() + 1 + GRACE.as_secs();
    HashMap::from([
        (LABEL_TOOL.to_string(), tool.to_string()),
        (LABEL_INVOCATION.to_string(), invocation.to_string()),
        (LABEL_INSTANCE.to_string(), instance().to_string()),
        (LABEL_DEADLINE.to_string(), deadline.to_string()),
    ])
}

/// Whether a container with these labels has outlived its deadline. A nanoclaw container
/// without a readable deadline is stale: nothing that made it is keeping track of it.
pub fn is_stale(labels: &HashMap<String, String>, now: u64) -> bool {
    labels.contains_key(LABEL_INSTANCE)
        && labels
            .get(LABEL_DEADLINE)
            .and_then(|d| d.parse::<u64>().ok())
            .is_none_or(|deadline| deadline < now)
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

/// Removes every nanoclaw container past its deadline; returns their ids.
pub async fn stale(docker: &Docker) -> Result<Vec<String>, bollard::errors::Error> {
    let now = unix_now();
    let stale: Vec<String> = list(docker, LABEL_INSTANCE)
        .await?
        .into_iter()
        .filter(|(_, labels)| is_stale(labels, now))
        .map(|(id, _)| id)
        .collect();
    let removals = stale.iter().map(|id| remove(docker, id));
    for result in futures_util::future::join_all(removals).await {
        result?;
    }
    Ok(stale)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_container_is_stale_only_after_its_deadline() {
        let now = unix_now();
        let fresh = labels("t", "i", Duration::from_secs(60));
        assert!(!is_stale(&fresh, now));
        assert!(!is_stale(&fresh, now + 60 + GRACE.as_secs()));
        assert!(is_stale(&fresh, now + 62 + GRACE.as_secs()));
        let mut unreadable = fresh.clone();
        unreadable.insert(LABEL_DEADLINE.into(), "soon".into());
        assert!(is_stale(&unreadable, now));
        let mut foreign = fresh;
        foreign.remove(LABEL_INSTANCE);
        assert!(!is_stale(&foreign, u64::MAX));
    }

    #[test]
    fn invocations_are_unique_within_the_instance() {
        let a = next_invocation();
        let b = next_invocation();
        assert_ne!(a, b);
        assert!(a.starts_with(instance()));
    }
}
