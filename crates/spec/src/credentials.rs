//! The well-known credential files: one table, used by the lint (a mount source that is or
//! lies inside one) and by the runner's scan (every one below a mount is hidden).
//!
//! Matching is on names, compared as bytes without ASCII case (a name that is not UTF-8 is
//! matched like any other, never skipped), plus content tests: `*.pem` is hidden only when
//! it holds a private key (a bundle of public certificates is common in a repository, a
//! private key in one is not), and files whose name could be a key's (`sniff`) are hidden
//! when their first bytes hold one. This module must never do I/O: the scan reads, this
//! table decides.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::OnceLock;

/// One kind of credential file or directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Credential {
    /// The trailing path components that name it, separated by `/`, matched without ASCII
    /// case. A component is a literal name, `NAME.*` (`NAME` itself, or `NAME` followed by
    /// `.`, `-` or `_` and anything), or `*.EXT` (any name ending in `.EXT`).
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
    // Environment files: `.env`, `.env.local`, `.env-prod`, `.env_staging`, `.ENV`. Templates
    // are exempt
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

/// Why `hidden`, a credential path inside the sandbox, cannot be hidden, if it cannot: its
/// name is not UTF-8, which no backend can name to the kernel or the engine faithfully. The
/// run is then refused rather than show the file.
pub fn unmaskable(hidden: &Path) -> Option<String> {
    hidden.to_str().is_none().then(|| {
        format!(
            "credential file {hidden:?} must be hidden but its name is not UTF-8, which cannot \
             be masked; rename it or mount a directory that does not hold it"
        )
    })
}

/// The template names of `.env` (`.env.example`, `.env-sample`, ...; any case): they match
/// `.env.*` but are committed with placeholders so that people know which variables to
/// set, and tools (test suites) read them.
pub const NOT_CREDENTIALS: &[&str] = &["example", "sample", "template", "dist", "defaults"];

/// Whether `name` is a template of `.env` (`NOT_CREDENTIALS`).
fn is_template(name: &[u8]) -> bool {
    strip_prefix_nocase(name, b".env")
        .and_then(|rest| rest.split_first())
        .is_some_and(|(sep, word)| {
            ENV_SEPARATORS.contains(sep)
                && NOT_CREDENTIALS
                    .iter()
                    .any(|t| word.eq_ignore_ascii_case(t.as_bytes()))
        })
}

/// What may follow the stem of a `NAME.*` pattern.
const ENV_SEPARATORS: &[u8] = b".-_";

/// How many bytes of a file the scan reads at most to tell whether it holds a private key.
pub const PRIVATE_KEY_HEAD_BYTES: usize = 64 * 1024;

/// How many bytes of a file with a `Sniff::Head` name the scan reads first: only when they
/// could start a key (`could_start_a_key`) does it read on, up to `PRIVATE_KEY_HEAD_BYTES`.
pub const KEY_START_BYTES: usize = 64;

/// Whether `head` (the first bytes of a file) holds a private key: a PEM block whose label
/// ends in `PRIVATE KEY` (PKCS#1, PKCS#8, EC, encrypted, OpenSSH), a PGP private key block,
/// a PuTTY key, or an OpenSSH key in its binary form.
pub fn holds_private_key(head: &[u8]) -> bool {
    let contains = |needle: &[u8]| head.windows(needle.len()).any(|w| w == needle);
    contains(b"PRIVATE KEY-----")
        || contains(b"PRIVATE KEY BLOCK-----")
        || contains(b"PuTTY-User-Key-File-")
        || contains(b"openssh-key-v1")
}

/// Whether `start` (the first `KEY_START_BYTES` of a file, or all of a shorter one) could
/// be the start of a key file: after blank space, a PEM armour line or a PuTTY header.
pub fn could_start_a_key(start: &[u8]) -> bool {
    let text = start.trim_ascii_start();
    text.starts_with(b"-----BEGIN ")
        || text.starts_with(b"PuTTY-User-Key-File-")
        || text.starts_with(b"openssh-key-v1")
}

/// How much of a regular file that no pattern names the scan reads for a private key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sniff {
    /// Nothing: its name is not one a key file is given (`main.rs`, `notes.txt`).
    Nothing,
    /// `KEY_START_BYTES`, and on only when they could start a key: a name without an
    /// extension (`deploy`, `LICENSE`), which keys often have and most files of a tree do
    /// not.
    Head,
    /// Up to `PRIVATE_KEY_HEAD_BYTES`, for a key anywhere in them: a name that says key
    /// (`deploy_key`, `signing-key.json`, `id_work`, `*.crt`, `*.asc`). Such names are few.
    Whole,
}

/// Extensions (any case) of files that hold a key next to other things, or certificates
/// with their key appended.
const KEY_EXTENSIONS: &[&str] = &["crt", "cer", "der", "asc", "priv", "private", "sec", "p8"];

/// How much of the regular file `name` the scan reads for a private key.
pub fn sniff(name: &OsStr) -> Sniff {
    let name = name.as_bytes();
    let contains_nocase = |needle: &[u8]| {
        name.windows(needle.len())
            .any(|w| w.eq_ignore_ascii_case(needle))
    };
    // The extension: what follows the last dot that is not the first byte.
    let extension = name
        .iter()
        .skip(1)
        .rposition(|&b| b == b'.')
        .map(|i| &name[i + 2..]);
    if contains_nocase(b"key")
        || strip_prefix_nocase(name, b"id_").is_some()
        || extension.is_some_and(|ext| {
            KEY_EXTENSIONS
                .iter()
                .any(|k| ext.eq_ignore_ascii_case(k.as_bytes()))
        })
    {
        Sniff::Whole
    } else if extension.is_none() {
        Sniff::Head
    } else {
        Sniff::Nothing
    }
}

fn strip_prefix_nocase<'a>(name: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    (name.len() >= prefix.len() && name[..prefix.len()].eq_ignore_ascii_case(prefix))
        .then(|| &name[prefix.len()..])
}

fn component_matches(component: &[u8], pattern: &str) -> bool {
    let pattern = pattern.as_bytes();
    if let Some(ext) = pattern.strip_prefix(b"*.") {
        // At least one byte, then a dot, then the extension.
        return component.len() > ext.len() + 1
            && component[component.len() - ext.len()..].eq_ignore_ascii_case(ext)
            && component[component.len() - ext.len() - 1] == b'.';
    }
    if let Some(stem) = pattern.strip_suffix(b".*") {
        return strip_prefix_nocase(component, stem).is_some_and(|rest| {
            rest.is_empty() || (rest.len() > 1 && ENV_SEPARATORS.contains(&rest[0]))
        });
    }
    component.eq_ignore_ascii_case(pattern)
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
    let last = components.last()?.as_ref().as_bytes();
    if is_template(last) {
        return None;
    }
    split_patterns()
        .iter()
        .find(|split| {
            component_matches(last, split.last) && {
                let mut have = components.iter().rev().skip(1);
                split.parents.iter().all(|want| {
                    have.next().is_some_and(|component| {
                        component_matches(component.as_ref().as_bytes(), want)
                    })
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
        assert!(holds_private_key(b"-----BEGIN PGP PRIVATE KEY BLOCK-----"));
        assert!(holds_private_key(b"PuTTY-User-Key-File-3: ssh-ed25519"));
    }

    #[test]
    fn names_match_without_case_and_as_bytes() {
        for path in [
            "sub/.ENV",
            ".Env.Local",
            "sub/.env-prod",
            "sub/.env_staging",
            "sub/Credentials",
            "server.KEY",
            "x/.SSH/config",
            "ID_RSA",
            "a/.Config/GH/hosts.yml",
        ] {
            assert!(hidden(path), "{path}");
        }
        let raw = |bytes: &[u8]| credential_in(Path::new(OsStr::from_bytes(bytes)));
        assert!(raw(b"k\xff.pem").is_some_and(|c| c.private_key_only));
        assert!(raw(b"\xfe\xff.KEY").is_some());
        assert!(raw(b"\xff/.env").is_some());
        assert!(raw(b".env\xff").is_none());
        for path in [
            ".ENV.EXAMPLE",
            ".env-sample",
            ".env_Template",
            ".env-",
            ".env_",
            ".envy",
            ".KEY",
        ] {
            assert!(!hidden(path), "{path}");
        }
    }

    #[test]
    fn key_like_names_are_sniffed_and_others_are_not() {
        let of = |name: &str| sniff(OsStr::new(name));
        for name in [
            "deploy_key",
            "server.KEY.bak",
            "id_work",
            "ID_RSA.old",
            "sa-key.json",
            "tls.crt",
            "secret.ASC",
            "\u{e9}key",
        ] {
            assert_eq!(of(name), Sniff::Whole, "{name}");
        }
        for name in ["deploy", "LICENSE", ".hidden", "k\u{e9}y"] {
            assert_eq!(of(name), Sniff::Head, "{name}");
        }
        for name in ["main.rs", "notes.txt", "f1.txt", "Cargo.lock", "a.tar.gz"] {
            assert_eq!(of(name), Sniff::Nothing, "{name}");
        }
        assert_eq!(sniff(OsStr::from_bytes(b"k\xff")), Sniff::Head);
        assert!(could_start_a_key(
            b"\n  -----BEGIN OPENSSH PRIVATE KEY-----\nb3Bl"
        ));
        assert!(could_start_a_key(b"-----BEGIN CERTIFICATE-----"));
        assert!(could_start_a_key(b"PuTTY-User-Key-File-2: ssh-rsa"));
        assert!(!could_start_a_key(b"#!/bin/sh\n-----BEGIN "));
        assert!(!could_start_a_key(b"-----BEG"));
    }
}
