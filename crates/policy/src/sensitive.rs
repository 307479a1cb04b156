//! Host paths a mount must not expose: the host's system directories, homes, container
//! engine sockets and credential files.
//!
//! Checks are on path names (the lint resolves symlinks first, where the path exists).
//! This module must never read file contents or follow anything itself.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

/// Host directories that hold the host's configuration, kernel interfaces or service sockets.
const SYSTEM_DIRS: &[&str] = &["/etc", "/proc", "/sys", "/dev", "/var/run", "/run", "/boot"];

/// Container engine sockets: whoever can write to one is root on the host.
const ENGINE_SOCKETS: &[&str] = &["docker.sock", "podman.sock", "containerd.sock", "crio.sock"];

/// The home directories of this host: `$HOME`, `/root`, `/home` and each `/home/NAME`.
#[derive(Debug, Clone)]
pub(crate) struct Homes(Vec<PathBuf>);

impl Homes {
    pub(crate) fn of_this_host() -> Self {
        let mut homes = vec![PathBuf::from("/root"), PathBuf::from("/home")];
        if let Some(home) = std::env::var_os("HOME").filter(|h| !h.is_empty()) {
            let home = PathBuf::from(home);
            if let Ok(real) = std::fs::canonicalize(&home) {
                homes.push(real);
            }
            homes.push(home);
        }
        Homes(homes)
    }

    #[cfg(test)]
    pub(crate) fn fixed(homes: &[&str]) -> Self {
        Homes(homes.iter().map(PathBuf::from).collect())
    }

    /// The home that `path` is, or contains.
    fn is_home_or_parent(&self, path: &Path) -> Option<PathBuf> {
        if path.parent() == Some(Path::new("/home")) {
            return Some(path.to_path_buf());
        }
        self.0.iter().find(|home| home.starts_with(path)).cloned()
    }
}

/// The credential file or store `path` is or lies inside (the list is
/// `nanoclaw_spec::credentials`, shared with the runner's scan), by its pattern.
pub(crate) fn credential_in(path: &Path) -> Option<&'static str> {
    nanoclaw_spec::credentials::credential_in(path).map(|c| c.pattern)
}

/// Why mounting `path` (an absolute, symlink-free host path) would expose the host, if it
/// would.
pub(crate) fn exposure(path: &Path, homes: &Homes) -> Option<String> {
    if path == Path::new("/") {
        return Some("/ is the host's whole file system".into());
    }
    for dir in SYSTEM_DIRS {
        let dir = Path::new(dir);
        if path == dir {
            return Some(format!("{} is the host's own", path.display()));
        }
        if path.starts_with(dir) {
            return Some(format!(
                "{} is inside the host's {}",
                path.display(),
                dir.display()
            ));
        }
        if dir.starts_with(path) {
            return Some(format!(
                "{} contains the host's {}",
                path.display(),
                dir.display()
            ));
        }
    }
    if let Some(home) = homes.is_home_or_parent(path) {
        return Some(if home == path {
            format!("{} is a home directory", path.display())
        } else {
            format!(
                "{} contains the home directory {}",
                path.display(),
                home.display()
            )
        });
    }
    if let Some(socket) = path
        .file_name()
        .and_then(|n| ENGINE_SOCKETS.iter().find(|s| OsStr::new(s) == n))
    {
        return Some(format!(
            "{} is a container engine socket ({socket}): root on the host",
            path.display()
        ));
    }
    credential_in(path).map(|name| format!("{} holds credentials ({name})", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exposed(path: &str) -> bool {
        exposure(
            Path::new(path),
            &Homes::fixed(&["/home/alice", "/root", "/home"]),
        )
        .is_some()
    }

    #[test]
    fn system_dirs_their_contents_and_parents() {
        for path in [
            "/",
            "/etc",
            "/etc/shadow",
            "/proc/1",
            "/sys",
            "/dev/sda",
            "/run/user/1000",
            "/var",
            "/var/run/docker.sock",
            "/boot",
        ] {
            assert!(exposed(path), "{path}");
        }
    }

    #[test]
    fn homes_and_their_parents_but_not_their_children() {
        for path in ["/home", "/home/alice", "/home/bob", "/root"] {
            assert!(exposed(path), "{path}");
        }
        assert!(!exposed("/home/alice/src/repo"));
        assert!(!exposed("/srv/data"));
    }

    #[test]
    fn sockets_and_credentials() {
        for path in [
            "/srv/podman.sock",
            "/home/alice/src/.ssh",
            "/srv/x/.config/gcloud",
            "/srv/x/.config/gcloud/adc.json",
            "/srv/app/.env",
            "/srv/app/.env.production",
            "/srv/keys/id_ed25519",
            "/srv/.aws/credentials",
            "/srv/app/.envrc",
            "/srv/x/.config/gh",
            "/srv/x/.git-credentials",
        ] {
            assert!(exposed(path), "{path}");
        }
        for path in [
            "/srv/app/.env.example",
            "/srv/config/gcloud",
            "/srv/environment",
            "/srv/app/credentials_test.go",
        ] {
            assert!(!exposed(path), "{path}");
        }
    }
}
