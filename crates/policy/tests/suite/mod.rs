mod corpus;
mod examples;
mod lint;
mod mutations;
mod params;
mod resolve;

use std::path::{Path, PathBuf};

use nanoclaw_policy::{Diagnostics, Policy};

/// Parses `text` as `tools.toml` in `/srv/policies`.
pub fn parse(text: &str) -> Result<Policy, Diagnostics> {
    Policy::parse(text, Path::new("tools.toml"), Path::new("/srv/policies"))
}

/// Parses `text`, failing the test with the rendered diagnostics if it does not parse.
pub fn policy(text: &str) -> Policy {
    match parse(text) {
        Ok(policy) => policy,
        Err(diagnostics) => panic!("policy does not parse:\n{diagnostics}\n{text}"),
    }
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn examples() -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(repo_root().join("examples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    paths.sort();
    paths
}

/// A directory under the temp dir, removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> Self {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!(
            "nanoclaw-policy-test-{}-{n}-{name}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(std::fs::canonicalize(dir).unwrap())
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn join(&self, rest: &str) -> PathBuf {
        self.0.join(rest)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
