//! Images: a sandbox runs only an image pinned by content, resolved from the engine's local
//! store, whose digest is checked against what the engine reports.
//!
//! Two pinned forms are accepted: `NAME@sha256:<64 hex>` (a registry digest, checked against
//! the image's `RepoDigests`) and a local image ID `sha256:<64 hex>` (an image built or
//! loaded here has no registry digest; checked against its `Id`). A tag or a bare name can
//! point at other content tomorrow and is refused.
//!
//! This module must never pull implicitly: only a backend built with `pull` set may fetch a
//! missing image, and only by digest.

use bollard::models::ImageInspect;
use bollard::Docker;
use futures_util::StreamExt;
use nanoclaw_spec::BackendError;

/// A pinned image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageRef {
    /// `NAME@sha256:…`: `name` as written (a tag before the digest is kept but ignored).
    Digest { name: String, digest: String },
    /// `sha256:…`, a local image ID.
    Id(String),
}

/// What the engine holds under a pinned reference, as reported with every run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfo {
    /// The reference as the spec gave it.
    pub reference: String,
    /// The image ID (`sha256:…` of its config), which the container is created from.
    pub id: String,
    /// The digest the reference was checked against: the matching `RepoDigests` entry's
    /// digest for a `NAME@sha256:…` reference, the ID for an ID.
    pub digest: String,
    /// The user the image is configured to run as (`Config.User`; empty means root).
    pub configured_user: String,
    /// The image's configured environment (`Config.Env`, `KEY=value`). The engine adds to a
    /// container every variable of it that the container's own environment does not set.
    pub env: Vec<String>,
}

impl ImageInfo {
    /// Whether the image would run as root if the spec did not set the user.
    pub fn user_is_root(&self) -> bool {
        user_is_root(&self.configured_user)
    }
}

/// `""`, `root`, `0` and those with any group (`0:0`, `root:1000`) are root.
pub fn user_is_root(user: &str) -> bool {
    let name = user.split(':').next().unwrap_or_default();
    matches!(name, "" | "root" | "0")
}

fn is_sha256(digest: &str) -> bool {
    digest
        .strip_prefix("sha256:")
        .is_some_and(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn unpinned(reference: &str) -> BackendError {
    BackendError::Invalid(format!(
        "image {reference:?} is not pinned: name it by digest (NAME@sha256:…, see `docker \
         images --digests`) or by local image ID (sha256:…, see `docker image inspect --format \
         '{{{{.Id}}}}' {reference}`)"
    ))
}

impl ImageRef {
    pub fn parse(reference: &str) -> Result<Self, BackendError> {
        if reference.starts_with("sha256:") {
            return if is_sha256(reference) {
                Ok(ImageRef::Id(reference.to_ascii_lowercase()))
            } else {
                Err(unpinned(reference))
            };
        }
        match reference.rsplit_once('@') {
            Some((name, digest)) if !name.is_empty() && is_sha256(digest) => Ok(ImageRef::Digest {
                name: name.to_string(),
                digest: digest.to_ascii_lowercase(),
            }),
            _ => Err(unpinned(reference)),
        }
    }
}

/// A repository name in the short form Docker shows: no `docker.io/` registry, no `library/`
/// for official images, no tag.
fn familiar(name: &str) -> &str {
    let last_slash = name.rfind('/').map_or(0, |i| i + 1);
    let untagged = match name[last_slash..].find(':') {
        Some(colon) => &name[..last_slash + colon],
        None => name,
    };
    let short = ["docker.io/", "index.docker.io/", "registry-1.docker.io/"]
        .iter()
        .find_map(|registry| untagged.strip_prefix(registry))
        .unwrap_or(untagged);
    match short.strip_prefix("library/") {
        Some(official) if !official.contains('/') => official,
        _ => short,
    }
}

/// Checks that `inspect` is the image `reference` names, and describes it.
pub fn check(
    reference: &str,
    pinned: &ImageRef,
    inspect: &ImageInspect,
) -> Result<ImageInfo, BackendError> {
    let id = inspect.id.clone().unwrap_or_default();
    let digest = match pinned {
        ImageRef::Id(want) => {
            if &id != want {
                return Err(BackendError::Invalid(format!(
                    "image {reference}: the engine resolved it to {id}, not to that ID"
                )));
            }
            id.clone()
        }
        ImageRef::Digest { name, digest } => {
            let matches = inspect.repo_digests.iter().flatten().any(|entry| {
                entry.rsplit_once('@').is_some_and(|(repo, d)| {
                    d.eq_ignore_ascii_case(digest) && familiar(repo) == familiar(name)
                })
            });
            if !matches {
                return Err(BackendError::Invalid(format!(
                    "image {reference}: the engine's image {id} does not carry that digest \
                     (its repo digests: {})",
                    inspect.repo_digests.clone().unwrap_or_default().join(", ")
                )));
            }
            digest.clone()
        }
    };
    Ok(ImageInfo {
        reference: reference.to_string(),
        id,
        digest,
        configured_user: inspect
            .config
            .as_ref()
            .and_then(|c| c.user.clone())
            .unwrap_or_default(),
        env: inspect
            .config
            .as_ref()
            .and_then(|c| c.env.clone())
            .unwrap_or_default(),
    })
}

fn missing(reference: &str, pinned: &ImageRef) -> BackendError {
    let how = match pinned {
        ImageRef::Digest { .. } => format!(
            "pull it (`docker pull {reference}`, or run with --pull), or build or load it \
             (`docker build`, `docker load`)"
        ),
        ImageRef::Id(_) => "build or load it (`docker build`, `docker load`); an image ID \
                            cannot be pulled"
            .to_string(),
    };
    BackendError::Invalid(format!(
        "image {reference} is not in the engine's local store; {how}"
    ))
}

fn not_found(error: &bollard::errors::Error) -> bool {
    matches!(
        error,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

/// Resolves `reference` in the engine's local store; with `pull`, fetches a missing
/// `NAME@sha256:…` first. Never pulls otherwise.
pub async fn resolve(
    docker: &Docker,
    reference: &str,
    pull: bool,
) -> Result<ImageInfo, BackendError> {
    let pinned = ImageRef::parse(reference)?;
    let engine_error = |e: bollard::errors::Error| {
        BackendError::io(
            format!("inspect image {reference}"),
            std::io::Error::other(e),
        )
    };
    let inspect = match docker.inspect_image(reference).await {
        Ok(inspect) => inspect,
        Err(e) if not_found(&e) => match &pinned {
            ImageRef::Digest { .. } if pull => {
                pull_image(docker, reference).await?;
                docker
                    .inspect_image(reference)
                    .await
                    .map_err(engine_error)?
            }
            _ => return Err(missing(reference, &pinned)),
        },
        Err(e) => return Err(engine_error(e)),
    };
    check(reference, &pinned, &inspect)
}

async fn pull_image(docker: &Docker, reference: &str) -> Result<(), BackendError> {
    let options = bollard::query_parameters::CreateImageOptions {
        from_image: Some(reference.to_string()),
        ..Default::default()
    };
    let mut progress = docker.create_image(Some(options), None, None);
    while let Some(step) = progress.next().await {
        step.map_err(|e| {
            BackendError::io(format!("pull image {reference}"), std::io::Error::other(e))
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::ImageConfig;

    const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn only_pinned_references_parse() {
        let digest = format!("sha256:{HEX}");
        assert_eq!(
            ImageRef::parse(&digest).ok(),
            Some(ImageRef::Id(digest.clone()))
        );
        assert_eq!(
            ImageRef::parse(&format!("python:3.12@{digest}")).ok(),
            Some(ImageRef::Digest {
                name: "python:3.12".into(),
                digest: digest.clone()
            })
        );
        for unpinned in [
            "python",
            "python:3.12",
            "sha256:abc",
            "registry:5000/x",
            &format!("@{digest}"),
            &format!("x@sha256:{}", &HEX[1..]),
        ] {
            let error = ImageRef::parse(unpinned).err().map(|e| e.to_string());
            assert!(
                error
                    .as_deref()
                    .unwrap_or_default()
                    .contains("is not pinned"),
                "{unpinned}: {error:?}"
            );
        }
    }

    #[test]
    fn names_compare_in_their_familiar_form() {
        assert_eq!(familiar("docker.io/library/busybox"), "busybox");
        assert_eq!(familiar("busybox:1.36"), "busybox");
        assert_eq!(familiar("docker.io/grafana/grafana"), "grafana/grafana");
        assert_eq!(
            familiar("registry:5000/team/tool:v1"),
            "registry:5000/team/tool"
        );
        assert_eq!(familiar("ghcr.io/library/x"), "ghcr.io/library/x");
    }

    fn inspect(id: &str, repo_digests: &[&str], user: &str) -> ImageInspect {
        ImageInspect {
            id: Some(id.into()),
            repo_digests: Some(repo_digests.iter().map(|s| s.to_string()).collect()),
            config: Some(ImageConfig {
                user: Some(user.into()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn the_digest_must_be_among_the_repo_digests_of_the_same_name() {
        let digest = format!("sha256:{HEX}");
        let reference = format!("docker.io/library/busybox@{digest}");
        let pinned = ImageRef::parse(&reference).unwrap();
        let good = inspect("sha256:id", &[&format!("busybox@{digest}")], "");
        let info = check(&reference, &pinned, &good).unwrap();
        assert_eq!(info.digest, digest);
        assert_eq!(info.id, "sha256:id");
        assert!(info.user_is_root());

        let other_name = inspect("sha256:id", &[&format!("alpine@{digest}")], "");
        assert!(check(&reference, &pinned, &other_name).is_err());
        let other_digest = inspect(
            "sha256:id",
            &[&format!("busybox@sha256:{}", "f".repeat(64))],
            "",
        );
        assert!(check(&reference, &pinned, &other_digest).is_err());
    }

    #[test]
    fn an_id_must_be_the_image_id() {
        let id = format!("sha256:{HEX}");
        let pinned = ImageRef::parse(&id).unwrap();
        assert!(check(&id, &pinned, &inspect(&id, &[], "10001")).is_ok());
        let other = format!("sha256:{}", "f".repeat(64));
        assert!(check(&id, &pinned, &inspect(&other, &[], "")).is_err());
    }

    #[test]
    fn root_users_are_recognised() {
        for root in ["", "root", "0", "0:0", "root:wheel"] {
            assert!(user_is_root(root), "{root}");
        }
        for user in ["10001", "10001:10001", "nobody", "app:0"] {
            assert!(!user_is_root(user), "{user}");
        }
    }

    #[test]
    fn a_missing_image_says_how_to_get_it() {
        let id = format!("sha256:{HEX}");
        let message = missing(&id, &ImageRef::parse(&id).unwrap()).to_string();
        assert!(
            message.contains("docker build") && message.contains(&id),
            "{message}"
        );
        let by_digest = format!("busybox@{id}");
        let message = missing(&by_digest, &ImageRef::parse(&by_digest).unwrap()).to_string();
        assert!(message.contains("--pull"), "{message}");
    }
}
