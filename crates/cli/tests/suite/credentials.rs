//! Credential files at any depth of a mounted directory (`.git-credentials`,
//! `.config/gh/hosts.yml`, `src/.env`, `.ssh/id_ed25519`, `a/b/c/.npmrc`) are hidden from
//! the sandbox, read-only and writable mounts alike, and named in the audit record; a policy
//! mount shows them only with `credentials = "visible"` and an acknowledged reason. Each
//! test runs on both backends.

use std::fs;
use std::path::Path;

use crate::suite::support::{
    backend_tests, give_to_sandbox_user, nanoclaw, scratch_dir, test_image_id, unique_token,
    Backend, Sandbox, RUNNER_ERROR,
};

/// The credential files planted in a workspace, relative to it.
const PLANTED: &[&str] = &[
    ".git-credentials",
    ".config/gh/hosts.yml",
    "src/.env",
    ".ssh/id_ed25519",
    "a/b/c/.npmrc",
];

/// What the scan reports for `PLANTED` under /work: a credential store is hidden whole.
const HIDDEN: &[&str] = &[
    "/work/.config/gh",
    "/work/.git-credentials",
    "/work/.ssh",
    "/work/a/b/c/.npmrc",
    "/work/src/.env",
];

/// Fills `dir` with the planted credentials, each holding `token`, and an ordinary file.
fn plant(dir: &Path, token: &str) {
    for file in PLANTED {
        let path = dir.join(file);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, format!("{token}\n")).unwrap();
    }
    fs::write(dir.join("src/main.rs"), "fn main() {}\n").unwrap();
    give_to_sandbox_user(dir);
}

/// Reads the whole mount as a tool after a token would, and an ordinary file.
const READ_ALL: &[&str] = &[
    "sh",
    "-c",
    "/bin/busybox grep -r . /work; /bin/busybox cat /work/src/main.rs",
];

fn the_audit_start(scratch: &Path) -> serde_json::Value {
    let log = fs::read_to_string(scratch.join("audit.jsonl")).unwrap();
    log.lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
        .find(|record| record["kind"] == "invocation.start")
        .expect("an invocation.start record")
}

fn hidden_in(value: &serde_json::Value) -> Vec<String> {
    value
        .as_array()
        .map(|paths| {
            paths
                .iter()
                .map(|p| p.as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default()
}

fn credentials_at_any_depth_read_empty(backend: Backend) {
    for writable in [false, true] {
        let token = unique_token("credential");
        let mut sandbox = Sandbox::new(backend);
        let workspace = sandbox.host_dir("workspace");
        plant(&workspace, &token);
        if writable {
            sandbox.mount_rw(&workspace, "/work");
        } else {
            sandbox.mount(&workspace, "/work");
        }
        let run = sandbox.run(READ_ALL);
        let context = format!("writable: {writable}\n{}", run.context());
        assert!(
            !run.outcome.stdout.contains(&token) && !run.outcome.stderr.contains(&token),
            "the sandbox read a credential\n{context}"
        );
        assert!(
            run.outcome.stdout.contains("fn main() {}"),
            "ordinary files stay readable\n{context}"
        );
        assert_eq!(hidden_in(&run.json["hidden"]), HIDDEN, "{context}");
        let start = the_audit_start(sandbox.scratch());
        assert_eq!(hidden_in(&start["data"]["hidden"]), HIDDEN, "{start}");
        for file in PLANTED {
            assert_eq!(
                fs::read_to_string(workspace.join(file)).unwrap(),
                format!("{token}\n"),
                "the host file is untouched: {file}\n{context}"
            );
        }
    }
}

fn each_hidden_path_reads_empty_to_the_probe(backend: Backend) {
    let token = unique_token("credential");
    let mut sandbox = Sandbox::new(backend);
    let workspace = sandbox.host_dir("workspace");
    plant(&workspace, &token);
    sandbox.mount(&workspace, "/work");
    let mut paths: Vec<&str> = HIDDEN.to_vec();
    paths.extend(["/work/.config/gh/hosts.yml", "/work/.ssh/id_ed25519"]);
    sandbox.probe("hidden", &paths).assert_blocked();
    let readable = sandbox.probe("hidden", &["/work/src/main.rs"]);
    assert!(
        !readable.report().blocked,
        "the probe tells a readable file from a hidden one: {}",
        readable.detail()
    );
}

/// A policy for one tool that reads its workspace, on `backend`, with `mount_extra` in its
/// mount and `tail` after it.
fn reader_policy(backend: Backend, mount_extra: &str, tail: &str) -> String {
    let root = match backend {
        Backend::Native => String::new(),
        Backend::Docker => format!("backend = \"docker\"\nimage = \"{}\"\n", test_image_id()),
    };
    format!(
        "[tools.read]\ndescription = \"reads the workspace\"\n{root}command = [\"/bin/busybox\", \"grep\", \"-r\", \".\", \"/work\"]\n\
         [[tools.read.mounts]]\nhost = \"${{workspace}}\"\npath = \"/work\"\n{mount_extra}{tail}"
    )
}

fn a_policy_shows_credentials_only_with_an_acknowledged_reason(backend: Backend) {
    let token = unique_token("credential");
    let dir = scratch_dir();
    let workspace = dir.path().join("workspace");
    fs::create_dir(&workspace).unwrap();
    plant(&workspace, &token);
    let policy = dir.path().join("tools.toml");
    let run = |text: &str, args: &[&str]| {
        fs::write(&policy, text).unwrap();
        let output = nanoclaw(dir.path())
            .args(args)
            .arg(&policy)
            .args(["--tool", "read", "--workspace"])
            .arg(&workspace)
            .output()
            .unwrap();
        (
            output.status.code().unwrap(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let check = |text: &str| {
        fs::write(&policy, text).unwrap();
        let output = nanoclaw(dir.path())
            .args(["policy", "check"])
            .arg(&policy)
            .output()
            .unwrap();
        (
            output.status.code().unwrap(),
            String::from_utf8_lossy(&output.stdout).into_owned()
                + &String::from_utf8_lossy(&output.stderr),
        )
    };

    // By default: hidden.
    let hidden = reader_policy(backend, "", "");
    let (code, stdout, stderr) = run(&hidden, &["run", "--policy"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(!stdout.contains(&token), "{stdout}");
    assert!(stdout.contains("fn main() {}"), "{stdout}");

    // Shown without a reason: the lint refuses, and nothing runs.
    let shown = reader_policy(backend, "credentials = \"visible\"\n", "");
    let (code, report) = check(&shown);
    assert_eq!(code, 1, "{report}");
    assert!(report.contains("error[visible-credentials]"), "{report}");
    let (code, stdout, stderr) = run(&shown, &["run", "--policy"]);
    assert_eq!(code, RUNNER_ERROR, "{stdout}{stderr}");
    assert!(!stdout.contains(&token), "{stdout}");

    // Shown with a reason naming the rule: reported every time, and the tool reads them.
    let acknowledged = reader_policy(
        backend,
        "credentials = \"visible\"\n",
        "[tools.read.unsafe]\nreason = \"the tool rotates these tokens\"\nallow = [\"visible-credentials\"]\n",
    );
    let (code, report) = check(&acknowledged);
    assert_eq!(code, 0, "{report}");
    assert!(
        report.contains("acknowledged[visible-credentials]")
            && report.contains("the tool rotates these tokens"),
        "{report}"
    );
    let (code, stdout, stderr) = run(&acknowledged, &["run", "--policy"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains(&token), "{stdout}");
    let start = the_audit_start(dir.path());
    let starts: Vec<serde_json::Value> = fs::read_to_string(dir.path().join("audit.jsonl"))
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .filter(|r: &serde_json::Value| r["kind"] == "invocation.start")
        .collect();
    assert_eq!(hidden_in(&start["data"]["hidden"]), HIDDEN, "{start}");
    let last = starts.last().unwrap();
    assert_eq!(
        hidden_in(&last["data"]["credentials_shown"]),
        ["/work"],
        "{last}"
    );
    assert!(hidden_in(&last["data"]["hidden"]).is_empty(), "{last}");
}

/// `verify` claims that the credential files in a tool's mounts read empty, on the given
/// workspace, and on its own scratch workspace (where it plants a decoy).
fn verify_claims_the_credentials_read_empty(backend: Backend) {
    let token = unique_token("credential");
    let dir = scratch_dir();
    let workspace = dir.path().join("workspace");
    fs::create_dir(&workspace).unwrap();
    plant(&workspace, &token);
    let policy = dir.path().join("tools.toml");
    fs::write(&policy, reader_policy(backend, "", "")).unwrap();
    for given in [true, false] {
        let mut command = nanoclaw(dir.path());
        command.arg("verify").arg(&policy).arg("--json");
        if given {
            command.arg("--workspace").arg(&workspace);
        }
        let output = command.output().unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        let context = format!("{stdout}{}", String::from_utf8_lossy(&output.stderr));
        assert_eq!(output.status.code(), Some(0), "{context}");
        assert!(!stdout.contains(&token), "{context}");
        let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        let claim = report["tools"][0]["claims"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["claim"] == "credential files")
            .cloned()
            .unwrap_or_else(|| panic!("no credential claim\n{context}"));
        let hidden = if given { HIDDEN.len() } else { 1 };
        assert_eq!(claim["pass"], true, "{claim}");
        assert_eq!(
            claim["observed"],
            format!("{hidden} hidden, all read empty"),
            "{claim}"
        );
    }
}

backend_tests!(
    verify_claims_the_credentials_read_empty,
    credentials_at_any_depth_read_empty,
    each_hidden_path_reads_empty_to_the_probe,
    a_policy_shows_credentials_only_with_an_acknowledged_reason,
    variants_keys_and_hard_links_read_empty,
    a_key_with_a_name_that_is_not_utf8_refuses_the_run,
);

#[test]
fn a_tree_too_deep_to_scan_is_refused_before_anything_runs() {
    let sandbox = Sandbox::new(Backend::Native);
    let workspace = sandbox.host_dir("workspace");
    let deep: std::path::PathBuf = (0..140).map(|_| "d").collect();
    fs::create_dir_all(workspace.join(deep)).unwrap();
    let mut sandbox = sandbox;
    sandbox.mount(&workspace, "/work");
    let exited = sandbox.output(&["true"]);
    assert_eq!(exited.code(), RUNNER_ERROR, "{}", exited.context());
    assert!(
        exited
            .stderr
            .contains("too deep to scan for credential files"),
        "{}",
        exited.context()
    );
}

/// A PEM private key whose body is `token`.
fn pem_key(label: &str, token: &str) -> String {
    format!("-----BEGIN {label}PRIVATE KEY-----\n{token}\n-----END {label}PRIVATE KEY-----\n")
}

/// The variants an outside report found visible: names in another case or with another
/// separator, private keys by content under names no pattern lists, and a hard link to
/// `.env` under an innocent name. Every one reads empty; ordinary files stay readable.
fn variants_keys_and_hard_links_read_empty(backend: Backend) {
    let token = unique_token("credential");
    let mut sandbox = Sandbox::new(backend);
    let workspace = sandbox.host_dir("workspace");
    let sub = workspace.join("sub");
    fs::create_dir(&sub).unwrap();
    fs::write(workspace.join(".env"), format!("{token}\n")).unwrap();
    for name in [".ENV", ".env-prod", ".env_ci", "Credentials"] {
        fs::write(sub.join(name), format!("{token}\n")).unwrap();
    }
    fs::write(sub.join("server.KEY"), pem_key("RSA ", &token)).unwrap();
    fs::write(sub.join("deploy_key"), pem_key("OPENSSH ", &token)).unwrap();
    fs::write(sub.join("signing"), pem_key("", &token)).unwrap();
    fs::hard_link(workspace.join(".env"), sub.join("hardlink.txt")).unwrap();
    fs::write(sub.join(".env.Example"), "API_KEY=\n").unwrap();
    fs::write(sub.join("LICENSE"), "MIT\n").unwrap();
    fs::write(workspace.join("src.rs"), "fn main() {}\n").unwrap();
    give_to_sandbox_user(&workspace);
    sandbox.mount(&workspace, "/work");
    let run = sandbox.run(&[
        "sh",
        "-c",
        "/bin/busybox head -c 200 /work/sub/* /work/sub/.[!.]* /work/.env; /bin/busybox cat /work/src.rs",
    ]);
    let context = run.context();
    assert!(
        !run.outcome.stdout.contains(&token) && !run.outcome.stderr.contains(&token),
        "the sandbox read a credential\n{context}"
    );
    for visible in ["fn main() {}", "API_KEY=", "MIT"] {
        assert!(
            run.outcome.stdout.contains(visible),
            "ordinary files stay readable: {visible}\n{context}"
        );
    }
    assert_eq!(
        hidden_in(&run.json["hidden"]),
        [
            "/work/.env",
            "/work/sub/.ENV",
            "/work/sub/.env-prod",
            "/work/sub/.env_ci",
            "/work/sub/Credentials",
            "/work/sub/deploy_key",
            "/work/sub/hardlink.txt",
            "/work/sub/server.KEY",
            "/work/sub/signing",
        ],
        "{context}"
    );
}

/// A private key whose name is not UTF-8 is found (the scan matches bytes), and since no
/// backend can mask such a path the run is refused, saying why, before anything runs.
fn a_key_with_a_name_that_is_not_utf8_refuses_the_run(backend: Backend) {
    use std::os::unix::ffi::OsStrExt;
    let token = unique_token("credential");
    let mut sandbox = Sandbox::new(backend);
    let workspace = sandbox.host_dir("workspace");
    fs::create_dir(workspace.join("sub")).unwrap();
    let name = std::ffi::OsStr::from_bytes(b"k\xff.pem");
    fs::write(workspace.join("sub").join(name), pem_key("", &token)).unwrap();
    give_to_sandbox_user(&workspace);
    sandbox.mount(&workspace, "/work");
    let exited = sandbox.output(&["sh", "-c", "/bin/busybox cat /work/sub/*"]);
    assert_eq!(exited.code(), RUNNER_ERROR, "{}", exited.context());
    assert!(!exited.stdout.contains(&token), "{}", exited.context());
    assert!(
        exited.stderr.contains(
            r#"credential file "/work/sub/k\xFF.pem" must be hidden but its name is not UTF-8"#
        ),
        "{}",
        exited.context()
    );
}
