//! Content hashes for the audit log: which policy file and which resolved spec an
//! invocation ran under. This module must never hash anything but what it is handed.

use nanoclaw_spec::SandboxSpec;
use sha2::{Digest, Sha256};

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The SHA-256 of a policy file's bytes, as lowercase hex.
pub fn policy_sha256(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// The SHA-256 of a spec's JSON form (fields in declaration order), as lowercase hex.
pub fn spec_sha256(spec: &SandboxSpec) -> String {
    // Serialising plain data with string keys cannot fail; hash the error text if it ever
    // does, so that two such specs never share a digest with a real one.
    let json =
        serde_json::to_vec(spec).unwrap_or_else(|e| format!("unserialisable: {e}").into_bytes());
    hex(&Sha256::digest(&json))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vectors() {
        assert_eq!(
            policy_sha256(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let a = SandboxSpec::new(vec!["true".into()]);
        let mut b = a.clone();
        assert_eq!(spec_sha256(&a), spec_sha256(&b));
        b.limits.pids = 1;
        assert_ne!(spec_sha256(&a), spec_sha256(&b));
        assert_eq!(spec_sha256(&a).len(), 64);
    }
}
