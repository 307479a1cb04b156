//! The well-known credential files: one table, used by the lint (a mount source that is or
//! lies inside one) and by the runner's scan (every one below a mount is hidden).
//!
//! Matching is on names only, plus one content test for `*.pem` (a bundle of public
//! certificates is common in a repository, a private key in one is not). This module must
//! never do I/O: the scan reads, this table decides.

use std::ffi::OsStr;
use std::path::Path;
use std::sync::OnceLock;

/// One kind of credential file or directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Credential {
    /// The trailing path components that name it, separated by `/`. A component is a
    /// literal name, `NAME.*` (`NAME` itself or `NAME.` followed by anything), or `*.EXT`
    /// (any name ending in `.EXT`).
    pub pattern: &'static str,
    /// Hidden only when its first bytes hold a private key (see `holds_private_key`).
    pub private_key_only: bool,
    /// Why it is on the list.
    pub why: &'static str,
}

const fn name(pattern: &'static str, why: &'static str) -> Credential {
    Credential {
        pattern,
        private_key_only: false,
        why,
    }
}

/// The list. Directories are hidden whole: a tool never needs a credential store, and a new
/// file kind inside one (a cached token) is then covered before anyone names it.
pub const CREDENTIALS: &[Credential] = &[
    // Environment files: `.env`, `.env.local`, `.env.production`. Templates are exempt
    // (`NOT_CREDENTIALS`). `.envrc` (direnv) is a shell script run on `cd`, and exporting
    // tokens from it is its most common use.
    name(
        ".env.*",
        "dotenv files hold API keys and database passwords",
    ),
    name(".envrc", "direnv scripts usually export tokens"),
    // Login and registry tokens.
    name(".netrc", "logins for curl, git, ftp"),
    name("_netrc", "the Windows spelling of .netrc"),
    name(".npmrc", "npm registry tokens"),
    name(".pypirc", "PyPI upload tokens"),
    name(".git-credentials", "git's plain-text credential store"),
    name(
        ".config/git/credentials",
        "git's credential store, XDG location",
    ),
    name(".pgpass", "PostgreSQL passwords"),
    name(".my.cnf", "MySQL passwords"),
    name(".vault-token", "HashiCorp Vault token"),
    name(".terraformrc", "Terraform Cloud tokens"),
    name("terraform.rc", "Terraform Cloud tokens (Windows name)"),
    name(".boto", "Google Cloud Storage and AWS keys for boto/gsutil"),
    name(".s3cfg", "s3cmd's AWS keys"),
    name(".dockercfg", "old Docker registry logins"),
    name(".docker/config.json", "Docker registry logins"),
    name(".cargo/credentials", "crates.io token"),
    name(".cargo/credentials.toml", "crates.io token"),
    name(".gem/credentials", "RubyGems API key"),
    name(".config/hub", "GitHub token of the hub CLI"),
    name(".htpasswd", "password hashes"),
    name(
        "credentials",
        "the common name of a credential file (~/.aws/credentials, ...)",
    ),
    name(
        "credentials.json",
        "Google service-account and OAuth client keys",
    ),
    name(
        "*.tfstate",
        "Terraform state: every secret it manages, in plain text",
    ),
    name(
        "*.tfstate.backup",
        "Terraform state: every secret it manages, in plain text",
    ),
    name(".bash_history", "commands typed with tokens in them"),
    name(".zsh_history", "commands typed with tokens in them"),
    // Whole credential stores.
    name(".ssh", "SSH private keys and agent config"),
    name(".gnupg", "GnuPG private keys"),
    name(".aws", "AWS keys and SSO tokens"),
    name(".azure", "Azure CLI tokens"),
    name(".kube", "Kubernetes cluster credentials (.kube/config)"),
    name(".config/gh", "GitHub CLI tokens (hosts.yml)"),
    name(".config/gcloud", "Google Cloud credentials"),
    name(".password-store", "pass(1) password store"),
    name(".local/share/keyrings", "GNOME keyring"),
    // Private keys wherever they lie.
    name("id_rsa", "SSH private key"),
    name("id_dsa", "SSH private key"),
    name("id_ecdsa", "SSH private key"),
    name("id_ed25519", "SSH private key"),
    name("id_ecdsa_sk", "SSH private key (security key)"),
    name("id_ed25519_sk", "SSH private key (security key)"),
    name("*.key", "private keys (TLS, signing)"),
    name("*.ppk", "PuTTY private keys"),
    name("*.p12", "PKCS#12 key stores"),
    name("*.pfx", "PKCS#12 key stores"),
    name("*.jks", "Java key stores"),
    name("*.keystore", "Java and Android key stores"),
    name("*.kdbx", "KeePass password databases"),
    Credential {
        pattern: "*.pem",
        private_key_only: true,
        why: "PEM files holding a private key (certificates alone stay visible)",
    },
];

/// Names that match a pattern above but are templates, committed with placeholders so
/// that people know which variables to set; tools (test suites) read them.
pub const NOT_CREDENTIALS: &[&str] = &[
    ".env.example",
    ".env.sample",
    ".env.template",
    ".env.dist",
    ".env.defaults",
];

/// How many bytes of a `private_key_only` file the scan reads to decide.
pub const PRIVATE_KEY_HEAD_BYTES: usize = 64 * 1024;

/// Whether `head` (the first bytes of a file) holds a private key: a PEM block whose label
/// ends in `PRIVATE KEY` (PKCS#1, PKCS#8, EC, encrypted, OpenSSH), or an OpenSSH key.
pub fn holds_private_key(head: &[u8]) -> bool {
    let contains = |needle: &[u8]| head.windows(needle.len()).any(|w| w == needle);
    contains(b"PRIVATE KEY-----") || contains(b"openssh-key-v1")
}

fn component_matches(component: &str, pattern: &str) -> bool {
    if let Some(ext) = pattern.strip_prefix("*.") {
        return component
            .strip_suffix(ext)
            .is_some_and(|stem| stem.len() > 1 && stem.ends_with('.'));
    }
    if let Some(stem) = pattern.strip_suffix(".*") {
        return component
            .strip_prefix(stem)
            .is_some_and(|rest| rest.is_empty() || (rest.starts_with('.') && rest.len() > 1));
    }
    component == pattern
}

/// A pattern split once: its last component, and the ones before it, last first.
struct Split {
    last: &'static str,
    parents: Vec<&'static str>,
    credential: &'static Credential,
}

fn split_patterns() -> &'static [Split] {
    static SPLIT: OnceLock<Vec<Split>> = OnceLock::new();
    SPLIT.get_or_init(|| {
        CREDENTIALS
            .iter()
            .map(|credential| {
                let mut parts = credential.pattern.rsplit('/');
                Split {
                    last: parts.next().unwrap_or_default(),
                    parents: parts.collect(),
                    credential,
                }
            })
            .collect()
    })
}

/// The credential that `components` end with, if any. Templates (`NOT_CREDENTIALS`) are
/// not credentials. Allocates nothing: the scan calls it for every entry of a tree.
pub fn credential_at_end<S: AsRef<OsStr>>(components: &[S]) -> Option<&'static Credential> {
    // Every pattern is ASCII: a name that is not UTF-8 matches none.
    let last = components.last()?.as_ref().to_str()?;
    if NOT_CREDENTIALS.contains(&last) {
        return None;
    }
    split_patterns()
        .iter()
        .find(|split| {
            component_matches(last, split.last) && {
                let mut have = components.iter().rev().skip(1);
                split.parents.iter().all(|want| {
                    have.next()
                        .and_then(|component| component.as_ref().to_str())
                        .is_some_and(|component| component_matches(component, want))
                })
            }
        })
        .map(|split| split.credential)
}

/// The credential that `path` is or lies inside, judged by name alone (a
/// `private_key_only` pattern counts: the path is not read).
pub fn credential_in(path: &Path) -> Option<&'static Credential> {
    let components: Vec<&OsStr> = path.iter().collect();
    (1..=components.len()).find_map(|end| credential_at_end(&components[..end]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hidden(path: &str) -> bool {
        credential_in(Path::new(path)).is_some()
    }

    #[test]
    fn names_at_any_depth() {
        for path in [
            ".git-credentials",
            "src/.env",
            "a/b/c/.npmrc",
            ".env.production",
            ".config/gh/hosts.yml",
            "home/.config/gh",
            ".ssh/id_ed25519",
            "keys/id_ed25519",
            ".docker/config.json",
            ".kube/config",
            "srv/.aws/credentials",
            "tls/server.key",
            "tls/server.pem",
            "x/.cargo/credentials.toml",
            "_netrc",
            "infra/terraform.tfstate",
            "infra/terraform.tfstate.backup",
        ] {
            assert!(hidden(path), "{path}");
        }
    }

    #[test]
    fn near_misses_stay_visible() {
        for path in [
            ".env.example",
            "src/.env.sample",
            ".environment",
            "environment",
            "config/gcloud",
            "gh/hosts.yml",
            ".docker/daemon.json",
            "keys/id_ed25519.pub",
            "app/credentials_test.go",
            "app/credentials.py",
            "README.key.md",
            ".key",
            "src/.envy",
        ] {
            assert!(!hidden(path), "{path}");
        }
    }

    #[test]
    fn only_pem_files_with_a_private_key_need_one() {
        let pem = credential_in(Path::new("a.pem")).unwrap();
        assert!(pem.private_key_only);
        assert!(holds_private_key(b"-----BEGIN RSA PRIVATE KEY-----\n"));
        assert!(holds_private_key(
            b"-----BEGIN CERTIFICATE-----\n...\n-----BEGIN PRIVATE KEY-----"
        ));
        assert!(!holds_private_key(b"-----BEGIN CERTIFICATE-----\nMIIB"));
        assert!(!credential_in(Path::new("a.key")).unwrap().private_key_only);
    }
}
