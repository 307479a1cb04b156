//! Egress end to end, with real clients inside the sandbox (curl, the probes) and real
//! upstreams on the host's loopback: only what `--allow` names is reachable, only through
//! the host proxy, and every decision is in the audit log.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::suite::support::{nanoclaw, scratch_dir, Backend, Exited, Sandbox};

/// A Python upstream from the egress crate's tests, killed on drop.
pub(crate) struct Upstream {
    child: Child,
    pub(crate) port: u16,
}

impl Upstream {
    pub(crate) fn start(args: &[&str]) -> Upstream {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../egress/tests/upstream.py");
        let mut child = Command::new("python3")
            .arg(script)
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs the upstream");
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .strip_prefix("port ")
            .and_then(|p| p.parse().ok());
        let port = port.unwrap_or_else(|| panic!("upstream said {line:?}"));
        Upstream { child, port }
    }

    fn http() -> Upstream {
        Upstream::start(&["http", "plain", "127.0.0.1"])
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run(options: &[String], command: &[&str]) -> (Exited, tempfile::TempDir) {
    let scratch = scratch_dir();
    let output = nanoclaw(scratch.path())
        .arg("run")
        .args(options)
        .arg("--")
        .args(command)
        .output()
        .unwrap();
    let exited = Exited {
        argv: format!("{options:?} -- {command:?}"),
        pid: 0,
        status: output.status,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        wall: std::time::Duration::ZERO,
    };
    (exited, scratch)
}

fn allow(target: &str) -> Vec<String> {
    vec!["--allow".into(), target.into()]
}

fn audit_kinds(scratch: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(scratch.join("audit.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn an_allowed_destination_is_reached_over_http_through_the_proxy() {
    let upstream = Upstream::http();
    let target = format!("127.0.0.1:{}", upstream.port);
    let (exited, scratch) = run(
        &allow(&target),
        &["curl", "-sS", "--fail", &format!("http://{target}/hello")],
    );
    assert_eq!(exited.code(), 0, "{}", exited.context());
    assert!(
        exited
            .stdout
            .contains("upstream=plain method=GET path=/hello"),
        "{}",
        exited.context()
    );
    let records = audit_kinds(scratch.path());
    let kinds: Vec<&str> = records
        .iter()
        .map(|r| r["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "invocation.start",
            "egress.allowed",
            "egress.closed",
            "invocation.end"
        ]
    );
    let closed = &records[2]["data"];
    assert_eq!(closed["host"], "127.0.0.1");
    assert!(closed["bytes_down"].as_u64().unwrap() > 0, "{closed}");
    assert_eq!(closed["invocation_id"], records[0]["data"]["invocation_id"]);
}

/// A self-signed certificate for 127.0.0.1 in a fresh directory: (dir, cert, key).
fn certificate() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = scratch_dir();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let status = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
        ])
        .args(["-addext", "subjectAltName=IP:127.0.0.1", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(Stdio::null())
        .status()
        .expect("openssl makes the test certificate");
    assert!(status.success());
    crate::suite::support::give_to_sandbox_user(dir.path());
    crate::suite::support::give_to_sandbox_user(&cert);
    (dir, cert, key)
}

#[test]
fn an_allowed_destination_is_reached_over_connect_and_tls() {
    let (dir, cert, key) = certificate();
    let upstream = Upstream::start(&[
        "tls",
        "secure",
        "127.0.0.1",
        cert.to_str().unwrap(),
        key.to_str().unwrap(),
    ]);
    let target = format!("127.0.0.1:{}", upstream.port);
    let mut options = allow(&target);
    options.extend(["-v".into(), format!("{}:/certs:ro", dir.path().display())]);
    let (exited, _scratch) = run(
        &options,
        &[
            "curl",
            "-sS",
            "--fail",
            "--cacert",
            "/certs/cert.pem",
            &format!("https://{target}/tls"),
        ],
    );
    assert_eq!(exited.code(), 0, "{}", exited.context());
    assert!(
        exited
            .stdout
            .contains("upstream=secure method=GET path=/tls"),
        "{}",
        exited.context()
    );
}

#[test]
fn an_unlisted_port_is_refused_and_recorded() {
    let upstream = Upstream::http();
    let other = Upstream::http();
    let (exited, scratch) = run(
        &allow(&format!("127.0.0.1:{}", upstream.port)),
        &[
            "curl",
            "-sS",
            "--fail-with-body",
            &format!("http://127.0.0.1:{}/", other.port),
        ],
    );
    assert_ne!(exited.code(), 0, "{}", exited.context());
    assert!(
        exited.stdout.contains("not in the allow list"),
        "{}",
        exited.context()
    );
    let records = audit_kinds(scratch.path());
    let denied = records
        .iter()
        .find(|r| r["kind"] == "egress.denied")
        .expect("an egress.denied record");
    assert_eq!(denied["data"]["port"], other.port);
}

#[test]
fn a_name_that_resolves_to_loopback_is_refused_unless_the_ip_is_listed() {
    let upstream = Upstream::http();
    let (exited, _scratch) = run(
        &allow(&format!("localhost:{}", upstream.port)),
        &[
            "curl",
            "-sS",
            "--fail-with-body",
            &format!("http://localhost:{}/", upstream.port),
        ],
    );
    assert_ne!(exited.code(), 0, "{}", exited.context());
    assert!(
        exited.stdout.contains("nanoclaw egress"),
        "{}",
        exited.context()
    );
    assert!(
        !exited.stdout.contains("upstream=plain"),
        "{}",
        exited.context()
    );
}

#[test]
fn bypassing_the_proxy_reaches_nothing() {
    let upstream = Upstream::http();
    let target = format!("127.0.0.1:{}", upstream.port);
    let mut sandbox = Sandbox::new(Backend::Native);
    sandbox.options(allow(&target));
    sandbox.probe("tcp-connect", &[&target]).assert_blocked();
    sandbox.probe("udp-send", &["1.1.1.1:53"]).assert_blocked();
    sandbox
        .probe("dns-lookup", &["example.com"])
        .assert_blocked();
    let direct = sandbox.run(&[
        "curl",
        "-sS",
        "--noproxy",
        "*",
        &format!("http://{target}/"),
    ]);
    assert_ne!(direct.code(), 0, "{}", direct.context());
}

#[test]
fn a_sandbox_without_egress_has_no_proxy_to_reach() {
    let mut sandbox = Sandbox::new(Backend::Native);
    sandbox
        .probe("tcp-connect", &["127.0.0.1:3128"])
        .assert_blocked();
    sandbox
        .probe("read-file", &["/run/nanoclaw/egress.sock"])
        .assert_blocked();
}

#[test]
fn a_broad_wildcard_is_refused_on_the_command_line() {
    for entry in ["*:443", "*.com:443", "*.co.uk:443"] {
        let (exited, _scratch) = run(&allow(entry), &["true"]);
        assert_eq!(exited.code(), 125, "{}", exited.context());
        assert!(
            exited.stderr.contains("more than one registrable domain"),
            "{}",
            exited.context()
        );
    }
}

#[test]
fn verify_proves_an_egress_tool() {
    let policy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/fetcher.toml");
    let scratch = scratch_dir();
    let output = nanoclaw(scratch.path())
        .arg("verify")
        .arg(&policy)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for claim in [
        "egress to listed api.github.com:443",
        "egress to an unlisted host",
        "egress to the host machine",
        "egress to cloud metadata",
        "name lookups inside",
    ] {
        assert!(stdout.contains(claim), "no {claim:?} row\n{stdout}");
    }
}
