//! The claims for a resolved tool, checked against inspections like the one
//! `nanoclaw probe inspect` prints.

// Test helpers stop at the first unexpected error, showing it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use nanoclaw_policy::{Invocation, Policy};
use nanoclaw_spec::{Enforced, LandlockStatus, SandboxSpec};
use nanoclaw_verify::{self as verify, Claim, Inspection};
use tempfile::TempDir;

/// Parses `text` as `tools.toml` in `/srv/policies`, failing the test with the diagnostics.
fn policy(text: &str) -> Policy {
    match Policy::parse(text, Path::new("tools.toml"), Path::new("/srv/policies")) {
        Ok(policy) => policy,
        Err(diagnostics) => panic!("policy does not parse:\n{diagnostics}\n{text}"),
    }
}

/// Every tool of every example policy: claims, a check against an empty inspection and the
/// table never panic (an empty inspection fails every claim).
#[test]
fn example_policies_never_panic() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let workspace = TempDir::new().unwrap();
    for entry in std::fs::read_dir(examples).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let Ok(p) = Policy::load(&path) else { continue };
        for tool in p.tools() {
            let invocation = Invocation {
                workspace: Some(workspace.path().canonicalize().unwrap()),
                ..Invocation::default()
            };
            if let Ok(spec) = p.resolve(&tool.name, &invocation) {
                let claims = verify::claims(tool, &spec);
                let results = verify::check(&claims, &Inspection::default(), &Enforced::default());
                assert!(
                    results.iter().all(|r| !r.pass),
                    "{}: {results:?}",
                    tool.name
                );
                let _ = verify::render_table(&tool.name, &results);
            }
        }
    }
}

const TOOL: &str = r#"
[tools.fmt]
description = "f"
command = ["sed"]
env = { EDITOR = "none" }
[[tools.fmt.mounts]]
host = "${workspace}"
path = "/work"
mode = "rw"
[[tools.fmt.mounts]]
host = "/usr/share"
path = "/share"
"#;

/// What a sandbox that holds the policy looks like from inside, as the probe reports it.
const GOOD: &str = r#"{
  "uid": 10001, "gid": 10001, "euid": 10001, "egid": 10001, "groups": [10001],
  "capabilities": {"inheritable": 0, "permitted": 0, "effective": 0, "bounding": 0, "ambient": 0},
  "no_new_privs": 1, "seccomp": 2,
  "interfaces": ["lo"],
  "mounts": [
    {"path": "/", "fstype": "tmpfs", "writable": false},
    {"path": "/usr", "fstype": "ext4", "writable": false},
    {"path": "/lib", "fstype": "ext4", "writable": false},
    {"path": "/etc/ld.so.cache", "fstype": "ext4", "writable": false},
    {"path": "/proc", "fstype": "proc", "writable": true},
    {"path": "/proc/kcore", "fstype": "devtmpfs", "writable": true},
    {"path": "/dev", "fstype": "tmpfs", "writable": false},
    {"path": "/dev/null", "fstype": "devtmpfs", "writable": true},
    {"path": "/dev/pts", "fstype": "devpts", "writable": true},
    {"path": "/dev/shm", "fstype": "tmpfs", "writable": true},
    {"path": "/tmp", "fstype": "tmpfs", "writable": true},
    {"path": "/work", "fstype": "ext4", "writable": true},
    {"path": "/work/.git", "fstype": "ext4", "writable": false},
    {"path": "/share", "fstype": "ext4", "writable": false}
  ],
  "env_names": ["PATH", "HOME", "LANG", "EDITOR"],
  "writes": [
    {"target": "/", "ok": false, "detail": "Read-only file system (os error 30)"},
    {"target": "/usr", "ok": false, "detail": "Read-only file system (os error 30)"},
    {"target": "/tmp", "ok": true, "detail": "created and removed"},
    {"target": "/dev/shm", "ok": true, "detail": "created and removed"},
    {"target": "/work", "ok": true, "detail": "created and removed"},
    {"target": "/work/.git", "ok": false, "detail": "Read-only file system (os error 30)"},
    {"target": "/share", "ok": false, "detail": "Read-only file system (os error 30)"}
  ],
  "write_budgets": [
    {"target": "/work", "ok": true, "detail": "wrote 1024 of 1032 MiB in /work, then: No space left on device (os error 28)"}
  ],
  "connects": [
    {"target": "1.1.1.1:443", "ok": false, "detail": "Network is unreachable (os error 101)"},
    {"target": "127.0.0.1:9", "ok": false, "detail": "Connection refused (os error 111)"}
  ],
  "hostname": "nanoclaw",
  "init_watches": true,
  "errors": []
}"#;

fn enforced(spec: &SandboxSpec) -> Enforced {
    Enforced {
        backend: "native".into(),
        seccomp: Some("nanoclaw-default".into()),
        landlock: LandlockStatus {
            status: "full".into(),
            abi: 4,
            reason: None,
        },
        cgroup: Some("v2".into()),
        memory_bytes: Some(spec.limits.memory_bytes),
        cpu_millis: Some(spec.limits.cpu_millis),
        pids: Some(spec.limits.pids),
        no_new_privs: true,
        uid: 10001,
        gid: 10001,
        read_only_root: true,
        ..Enforced::default()
    }
}

fn setup() -> (TempDir, Policy, SandboxSpec) {
    let dir = TempDir::new().unwrap();
    let p = policy(TOOL);
    let invocation = Invocation {
        workspace: Some(dir.path().canonicalize().unwrap()),
        ..Invocation::default()
    };
    let spec = p.resolve("fmt", &invocation).unwrap();
    (dir, p, spec)
}

#[test]
fn a_sandbox_that_holds_the_policy_passes_every_claim() {
    let (_dir, p, spec) = setup();
    let claims = verify::claims(p.tool("fmt").unwrap(), &spec);
    let inspection = Inspection::from_json(GOOD).unwrap();
    let results = verify::check(&claims, &inspection, &enforced(&spec));
    let table = verify::render_table("fmt", &results);
    assert!(results.iter().all(|r| r.pass), "{table}");
    assert!(table.contains("mount /work"), "{table}");
    assert!(
        table.contains(&format!("{} claims, 0 failed", results.len())),
        "{table}"
    );
    assert!(claims.contains(&Claim::User {
        uid: 10001,
        gid: 10001
    }));
}

/// An edit of the good inspection.
type Change = Box<dyn Fn(&mut serde_json::Value)>;

/// Each change to the good inspection breaks the claim named.
#[test]
fn each_departure_fails_its_claim() {
    let (_dir, p, spec) = setup();
    let claims = verify::claims(p.tool("fmt").unwrap(), &spec);
    let good: serde_json::Value = serde_json::from_str(GOOD).unwrap();
    let cases: Vec<(&str, Change)> = vec![
        (
            "mount /share",
            Box::new(|v| v["mounts"][13]["writable"] = true.into()),
        ),
        (
            "only expected mounts visible",
            Box::new(|v| {
                v["mounts"]
                    .as_array_mut()
                    .unwrap()
                    .push(serde_json::json!({"path": "/home", "fstype": "ext4", "writable": false}))
            }),
        ),
        (
            "writes outside rw mounts",
            Box::new(|v| v["writes"][5]["ok"] = true.into()),
        ),
        (
            "user",
            Box::new(|v| v["groups"] = serde_json::json!([10001, 0])),
        ),
        (
            "capabilities",
            Box::new(|v| v["capabilities"]["bounding"] = 1.into()),
        ),
        ("no_new_privs", Box::new(|v| v["no_new_privs"] = 0.into())),
        (
            "write budget in /work",
            Box::new(|v| v["write_budgets"][0]["ok"] = false.into()),
        ),
        ("seccomp", Box::new(|v| v["seccomp"] = 0.into())),
        (
            "network interfaces",
            Box::new(|v| v["interfaces"] = serde_json::json!(["eth0", "lo"])),
        ),
        (
            "connections out",
            Box::new(|v| v["connects"][0]["ok"] = true.into()),
        ),
        (
            "environment names",
            Box::new(|v| v["env_names"] = serde_json::json!(["PATH", "SSH_AUTH_SOCK"])),
        ),
        (
            "root file system",
            Box::new(|v| v["mounts"][0]["writable"] = true.into()),
        ),
        (
            "dies with its runner",
            Box::new(|v| v["init_watches"] = false.into()),
        ),
    ];
    for (claim, change) in cases {
        let mut value = good.clone();
        change(&mut value);
        let inspection: Inspection = serde_json::from_value(value).unwrap();
        let results = verify::check(&claims, &inspection, &enforced(&spec));
        let failed: Vec<&str> = results
            .iter()
            .filter(|r| !r.pass)
            .map(|r| r.claim.as_str())
            .collect();
        assert!(failed.contains(&claim), "{claim}: failed {failed:?}");
    }
}

#[test]
fn what_the_backend_did_not_enforce_fails() {
    let (_dir, p, spec) = setup();
    let claims = verify::claims(p.tool("fmt").unwrap(), &spec);
    let inspection = Inspection::from_json(GOOD).unwrap();
    let mut weak = enforced(&spec);
    weak.memory_bytes = None;
    weak.pids = Some(spec.limits.pids + 1);
    weak.landlock.status = "partial".into();
    let results = verify::check(&claims, &inspection, &weak);
    let failed: Vec<&str> = results
        .iter()
        .filter(|r| !r.pass)
        .map(|r| r.claim.as_str())
        .collect();
    assert_eq!(failed, ["landlock", "memory limit", "pids limit"]);
}

#[test]
fn an_empty_inspection_proves_nothing() {
    let (_dir, p, spec) = setup();
    let claims = verify::claims(p.tool("fmt").unwrap(), &spec);
    let results = verify::check(&claims, &Inspection::default(), &enforced(&spec));
    let passed: Vec<&str> = results
        .iter()
        .filter(|r| r.pass)
        .map(|r| r.claim.as_str())
        .collect();
    // Only what the backend itself reports can pass without an observation.
    assert_eq!(
        passed,
        ["landlock", "memory limit", "cpu limit", "pids limit"]
    );
}

#[test]
fn a_caller_mount_is_expected_and_labelled() {
    let (_dir, p, mut spec) = setup();
    spec.mounts.push(nanoclaw_spec::Mount {
        src: "/usr/local/bin/nanoclaw".into(),
        dst: "/.nanoclaw/nanoclaw".into(),
        writable: false,
    });
    let claims = verify::claims(p.tool("fmt").unwrap(), &spec);
    let mut value: serde_json::Value = serde_json::from_str(GOOD).unwrap();
    value["mounts"].as_array_mut().unwrap().push(
        serde_json::json!({"path": "/.nanoclaw/nanoclaw", "fstype": "ext4", "writable": false}),
    );
    let inspection: Inspection = serde_json::from_value(value).unwrap();
    let results = verify::check(&claims, &inspection, &enforced(&spec));
    assert!(
        results.iter().all(|r| r.pass),
        "{}",
        verify::render_table("fmt", &results)
    );
    assert!(results
        .iter()
        .any(|r| r.claim == "caller's mount /.nanoclaw/nanoclaw"));
}

#[test]
fn a_secret_file_claim_fails_on_a_wrong_mode_owner_or_a_value_in_the_environment() {
    use nanoclaw_spec::{SecretValue, Zeroizing};
    let text = "[tools.s]\ndescription = \"s\"\ncommand = [\"true\"]\nsecrets = [{ name = \"F\", ttl = \"1m\", from = \"env:X\" }]\n";
    let mut spec = policy(text).resolve("s", &Invocation::default()).unwrap();
    spec.secrets[0].value = SecretValue::new(Zeroizing::new(b"v".to_vec()));
    let tool = policy(text).tool("s").unwrap().clone();
    let claims: Vec<Claim> = verify::claims(&tool, &spec)
        .into_iter()
        .filter(|c| matches!(c, Claim::Secret { .. }))
        .collect();
    assert_eq!(claims.len(), 1);
    let seen = |mode: u32, uid: u32, env: &[&str]| Inspection {
        env_names: env.iter().map(|s| s.to_string()).collect(),
        secret_files: vec![verify::SeenSecretFile {
            path: "/run/secrets/F".into(),
            mode,
            uid,
            gid: uid,
            regular: true,
        }],
        ..Inspection::default()
    };
    let pass = |i: &Inspection| verify::check(&claims, i, &Enforced::default())[0].pass;
    assert!(pass(&seen(0o400, 10001, &["F_FILE"])));
    assert!(!pass(&seen(0o440, 10001, &["F_FILE"])));
    assert!(!pass(&seen(0o400, 0, &["F_FILE"])));
    assert!(!pass(&seen(0o400, 10001, &["F_FILE", "F"])));
    assert!(!pass(&Inspection::default()));
}
