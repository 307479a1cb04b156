//! Secrets, end to end on the native backend: each source (env, file, command) fetched per
//! invocation, each delivery (file, env) as documented, the output redacted in every
//! encoding, the ttl stopping the run, bad sources refused before anything runs, and no
//! value left in the audit log, the state directory or any process's argv or environment.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::suite::support::{nanoclaw, scratch_dir, RUNNER_ERROR};

/// A test's policy, its audit log and state, and what it ran.
struct Case {
    dir: tempfile::TempDir,
    policy: PathBuf,
}

struct Ran {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Ran {
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(self.stdout.trim())
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}\n{}", self.stdout, self.stderr))
    }
}

impl Case {
    /// A policy with one tool `t` whose secrets are `secrets` (TOML array entries).
    fn new(secrets: &str, extra: &str) -> Case {
        let dir = scratch_dir();
        let policy = dir.path().join("tools.toml");
        fs::write(
            &policy,
            format!(
                "[tools.t]\ndescription = \"t\"\ncommand = [\"sh\", \"-c\"]\nargs = \"append\"\n{extra}secrets = [{secrets}]\n"
            ),
        )
        .unwrap();
        Case { dir, policy }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes a secret file (mode 0600) and returns its path.
    fn secret_file(&self, name: &str, value: &str) -> String {
        let path = self.path(name);
        fs::write(&path, value).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        path.display().to_string()
    }

    fn run(&self, env: &[(&str, &str)], json: bool, script: &str) -> Ran {
        let mut command = nanoclaw(self.dir.path());
        command.arg("run");
        if json {
            command.arg("--json");
        }
        command
            .args([
                "--policy",
                &self.policy.display().to_string(),
                "--tool",
                "t",
                "--",
                script,
            ])
            .envs(env.iter().copied())
            .stdin(Stdio::null());
        let out = command.output().unwrap();
        Ran {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    fn audit(&self) -> String {
        fs::read_to_string(self.path("audit.jsonl")).unwrap_or_default()
    }

    /// No file under the test's directory (audit log, fingerprint key) holds any of
    /// `values`, but the sources and policy the test wrote itself.
    #[track_caller]
    fn assert_nowhere(&self, values: &[&str]) {
        for entry in walk(self.dir.path()) {
            let name = entry.file_name().unwrap_or_default().to_string_lossy();
            // The sources the test wrote itself, and its policy (a command source's argv).
            if name.starts_with("source-") || name == "tools.toml" {
                continue;
            }
            let bytes = fs::read(&entry).unwrap_or_default();
            let text = String::from_utf8_lossy(&bytes);
            for value in values {
                assert!(
                    !text.contains(value),
                    "{} holds a secret value",
                    entry.display()
                );
            }
        }
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[test]
fn file_env_and_command_sources_are_delivered_and_redacted_from_the_output() {
    let case = Case::new("", "");
    let file = case.secret_file("source-ftok", "file-Secret-4f1b2c\n");
    fs::write(
        &case.policy,
        format!(
            "[tools.t]\ndescription = \"t\"\ncommand = [\"sh\", \"-c\"]\nargs = \"append\"\nsecrets = [\n  {{ name = \"FTOK\", ttl = \"5m\", from = \"file:{file}\" }},\n  {{ name = \"ETOK\", ttl = \"5m\", from = \"env:TEST_TOKEN_SOURCE\", deliver = \"env\" }},\n  {{ name = \"CTOK\", ttl = \"5m\", from = [\"printf\", \"cmd-Secret-9a8b7c\"] }},\n]\n"
        ),
    )
    .unwrap();
    let script =
        "stat -c '%a %u %g %F' /run/secrets/FTOK /run/secrets/CTOK; echo \"F=$FTOK_FILE\"; \
                  cat \"$FTOK_FILE\"; echo; echo \"E=$ETOK\"; cat /run/secrets/CTOK; echo; \
                  env | grep -c FTOK=; echo \"${ETOK:-unset}\" | grep -c Secret; \
                  cat /proc/1/environ >/dev/null 2>&1 || echo environ-denied; \
                  touch /run/secrets/x 2>/dev/null || echo read-only";
    let ran = case.run(&[("TEST_TOKEN_SOURCE", "env-Secret-77d3e1")], true, script);
    assert_eq!(ran.code, 0, "{}{}", ran.stdout, ran.stderr);
    let json = ran.json();
    let out = json["stdout"].as_str().unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "400 10001 10001 regular file", "{out}");
    assert_eq!(lines[1], "400 10001 10001 regular file", "{out}");
    assert_eq!(lines[2], "F=/run/secrets/FTOK", "{out}");
    assert_eq!(lines[3], "[REDACTED:FTOK]", "{out}");
    assert_eq!(lines[4], "E=[REDACTED:ETOK]", "{out}");
    assert_eq!(lines[5], "[REDACTED:CTOK]", "{out}");
    assert_eq!(
        lines[6], "0",
        "a file secret is not in the environment: {out}"
    );
    assert_eq!(lines[7], "1", "an env secret is: {out}");
    assert!(out.contains("environ-denied"), "{out}");
    assert!(out.contains("read-only"), "{out}");
    assert_eq!(json["redactions"]["FTOK"], 1, "{json}");
    assert_eq!(json["redactions"]["ETOK"], 1, "{json}");
    assert_eq!(json["redactions"]["CTOK"], 1, "{json}");
    let audit = case.audit();
    for (name, source, delivery) in [
        ("FTOK", "file", "file"),
        ("ETOK", "env", "env"),
        ("CTOK", "command", "file"),
    ] {
        let needle = format!("\"delivery\":\"{delivery}\"");
        let record = audit
            .lines()
            .find(|l| l.contains("invocation.start"))
            .unwrap_or_default();
        assert!(record.contains(&format!("\"name\":\"{name}\"")), "{record}");
        assert!(
            record.contains(&format!("\"source\":\"{source}\"")),
            "{record}"
        );
        assert!(record.contains(&needle), "{record}");
    }
    assert!(audit.contains("\"fingerprint\":\""), "{audit}");
    assert!(audit.contains("\"redactions\":{"), "{audit}");
    let key = case.path("secret-fingerprint.key");
    assert_eq!(
        fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    case.assert_nowhere(&[
        "file-Secret-4f1b2c",
        "env-Secret-77d3e1",
        "cmd-Secret-9a8b7c",
    ]);
}

#[test]
fn a_streamed_output_is_redacted_in_every_encoding_and_across_writes() {
    let value = "tok/+Secret=42&x";
    let case = Case::new("", "");
    let file = case.secret_file("source-t", value);
    fs::write(
        &case.policy,
        format!("[tools.t]\ndescription = \"t\"\ncommand = [\"sh\", \"-c\"]\nargs = \"append\"\nsecrets = [{{ name = \"TOK\", ttl = \"5m\", from = \"file:{file}\" }}]\n"),
    )
    .unwrap();
    // Raw in two writes with a pause between; base64 at three offsets; base64url; hex in
    // both cases; URL-encoded.
    let script = "f=$TOK_FILE; head -c 6 $f; sleep 0.2; tail -c +7 $f; echo; \
                  base64 -w0 $f; echo; (printf a; cat $f) | base64 -w0; echo; \
                  (printf ab; cat $f; printf c) | base64 -w0; echo; \
                  base64 -w0 $f | tr '+/' '-_' | tr -d =; echo; \
                  od -An -tx1 $f | tr -d ' \\n'; echo; od -An -tx1 $f | tr -d ' \\n' | tr a-f A-F; echo; \
                  echo tok%2F%2BSecret%3D42%26x";
    for json in [false, true] {
        let ran = case.run(&[], json, script);
        assert_eq!(ran.code, 0, "{}{}", ran.stdout, ran.stderr);
        let out = if json {
            ran.json()["stdout"].as_str().unwrap().to_string()
        } else {
            ran.stdout.clone()
        };
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 8, "{out}");
        for line in &lines {
            assert!(line.contains("[REDACTED:TOK]"), "{line:?} in\n{out}");
        }
        if json {
            assert_eq!(ran.json()["redactions"]["TOK"], 8, "{out}");
        }
    }
    case.assert_nowhere(&[value]);
}

#[test]
fn a_command_source_runs_once_per_invocation_and_its_value_is_in_no_process() {
    let case = Case::new("", "");
    let counter = case.path("count");
    let source = case.path("source-mint.sh");
    fs::write(
        &source,
        format!(
            "#!/bin/sh\necho x >> {}\necho minted-Secret-$(wc -l < {})\n",
            counter.display(),
            counter.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&source, fs::Permissions::from_mode(0o700)).unwrap();
    fs::write(
        &case.policy,
        format!("[tools.t]\ndescription = \"t\"\ncommand = [\"sh\", \"-c\"]\nargs = \"append\"\nsecrets = [{{ name = \"M\", ttl = \"5m\", from = [\"{}\"] }}]\n", source.display()),
    )
    .unwrap();
    for n in 1..=2 {
        // While the command runs, no process on the host holds the value in its argv or
        // environment (the runner, helper and init hold it in memory only).
        let mut child = nanoclaw(case.dir.path())
            .args([
                "run",
                "--policy",
                &case.policy.display().to_string(),
                "--tool",
                "t",
                "--",
                "cat $M_FILE >/dev/null; sleep 1",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(600));
        let value = format!("minted-Secret-{n}");
        for entry in fs::read_dir("/proc").unwrap().flatten() {
            for file in ["environ", "cmdline"] {
                let bytes = fs::read(entry.path().join(file)).unwrap_or_default();
                assert!(
                    !String::from_utf8_lossy(&bytes).contains(&value),
                    "{} of {} holds the value",
                    file,
                    entry.path().display()
                );
            }
        }
        assert!(child.wait().unwrap().success());
        assert_eq!(fs::read_to_string(&counter).unwrap().lines().count(), n);
    }
    case.assert_nowhere(&["minted-Secret-1", "minted-Secret-2"]);
}

#[test]
fn a_bad_source_refuses_the_run_before_anything_runs_and_echoes_nothing() {
    let case = Case::new("", "");
    let marker = case.path("ran");
    let failing = "[\"sh\", \"-c\", \"echo leaked-Secret-0001; exit 3\"]";
    let empty = "[\"true\"]";
    let cases = [
        (
            "from = \"env:NANOCLAW_TEST_UNSET_VAR\"",
            "the variable NANOCLAW_TEST_UNSET_VAR is not set",
        ),
        (
            &*format!("from = {failing}"),
            "its source command \"sh\" failed (exit status: 3)",
        ),
        (
            &*format!("from = {empty}"),
            "its source gave an empty value",
        ),
        (
            "from = \"file:/nonexistent/token\"",
            "cannot open /nonexistent/token",
        ),
        ("from = \"file:/etc\"", "is not a regular file"),
    ];
    for (from, says) in cases {
        fs::write(
            &case.policy,
            format!("[tools.t]\ndescription = \"t\"\ncommand = [\"sh\", \"-c\"]\nargs = \"append\"\nsecrets = [{{ name = \"S\", ttl = \"5m\", {from} }}]\n"),
        )
        .unwrap();
        let ran = case.run(&[], false, &format!("touch {}", marker.display()));
        assert_eq!(ran.code, RUNNER_ERROR, "{from}: {}", ran.stderr);
        assert!(ran.stderr.contains(says), "{from}: {}", ran.stderr);
        assert!(!ran.stderr.contains("leaked-Secret"), "{}", ran.stderr);
        assert!(!marker.exists(), "{from}: the command ran");
    }
    // A symlink is never followed.
    let target = case.secret_file("source-real", "linked-Secret-1");
    let link = case.path("source-link");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    fs::write(
        &case.policy,
        format!("[tools.t]\ndescription = \"t\"\ncommand = [\"sh\", \"-c\"]\nargs = \"append\"\nsecrets = [{{ name = \"S\", ttl = \"5m\", from = \"file:{}\" }}]\n", link.display()),
    )
    .unwrap();
    let ran = case.run(&[], false, "true");
    assert_eq!(ran.code, RUNNER_ERROR, "{}", ran.stderr);
    assert!(ran.stderr.contains("it is a symlink"), "{}", ran.stderr);
    // A malformed source is a policy error, reported where it is written.
    fs::write(
        &case.policy,
        "[tools.t]\ndescription = \"t\"\ncommand = [\"true\"]\nsecrets = [{ name = \"S\", ttl = \"5m\", from = \"evn:X\" }]\n",
    )
    .unwrap();
    let ran = case.run(&[], false, "true");
    assert_eq!(ran.code, RUNNER_ERROR, "{}", ran.stderr);
    assert!(ran.stderr.contains("tools.toml:4:"), "{}", ran.stderr);
    let audit = case.audit();
    assert!(!audit.contains("invocation.start"), "{audit}");
    assert!(audit.contains("policy.refused"), "{audit}");
    case.assert_nowhere(&["leaked-Secret-0001"]);
}

#[test]
fn a_file_or_env_secrets_ttl_stops_the_run() {
    let case = Case::new(
        "{ name = \"S\", ttl = \"1s\", from = [\"printf\", \"ttl-Secret-1\"] }",
        "",
    );
    let ran = case.run(&[], true, "sleep 10");
    let json = ran.json();
    assert_eq!(ran.code, 124, "{json}");
    assert_eq!(json["secret_expired"], true, "{json}");
    assert_eq!(json["timed_out"], true, "{json}");
    let ran = case.run(&[], false, "sleep 10");
    assert!(
        ran.stderr.contains("a secret's ttl ran out"),
        "{}",
        ran.stderr
    );
    // A run that ends first is not marked.
    let ran = case.run(&[], true, "true");
    assert_eq!(ran.json()["secret_expired"], false);
}

#[test]
fn the_lint_warns_about_env_delivery_and_a_readable_source() {
    let case = Case::new("", "");
    let path = case.path("source-open");
    fs::write(&path, "x").unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    fs::write(
        &case.policy,
        format!("[tools.t]\ndescription = \"t\"\ncommand = [\"true\"]\nsecrets = [{{ name = \"S\", ttl = \"5m\", from = \"file:{}\", deliver = \"env\" }}]\n", path.display()),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_nanoclaw"))
        .args(["policy", "check", &case.policy.display().to_string()])
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("warning[env-secret]"), "{text}");
    assert!(text.contains("warning[readable-secret-file]"), "{text}");
}

/// A TLS upstream from the egress crate's tests, whose report lines are collected.
struct Upstream {
    child: std::process::Child,
    port: u16,
    lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Upstream {
    fn tls(name: &str, cert: &Path, key: &Path) -> Upstream {
        let (cert, key) = (cert.display().to_string(), key.display().to_string());
        Upstream::start(&["tls", name, "127.0.0.1", &cert, &key])
    }

    fn http(name: &str) -> Upstream {
        Upstream::start(&["http", name, "127.0.0.1"])
    }

    fn start(args: &[&str]) -> Upstream {
        use std::io::BufRead;
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../egress/tests/upstream.py");
        let mut child = Command::new("python3")
            .arg(script)
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut reader = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        reader.read_line(&mut first).unwrap();
        let port = first.trim().strip_prefix("port ").unwrap().parse().unwrap();
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = std::sync::Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in reader.lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Upstream { child, port, lines }
    }

    fn requests(&self) -> Vec<String> {
        std::thread::sleep(std::time::Duration::from_millis(200));
        self.lines.lock().unwrap().clone()
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A test CA (ca.pem) and a leaf for 127.0.0.1 it signs (leaf.pem, leaf.key) in `dir`.
fn test_ca(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let p = |name: &str| dir.join(name).display().to_string();
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl").args(args).output().unwrap();
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
    openssl(
        &[
            &[
                "req",
                "-x509",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=nanoclaw secrets test CA",
            ][..],
            &ec,
            &["-keyout", &p("ca.key"), "-out", &p("ca.pem")],
            &[
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        ]
        .concat(),
    );
    openssl(
        &[
            &["req", "-new", "-nodes", "-subj", "/CN=127.0.0.1"][..],
            &ec,
            &["-keyout", &p("leaf.key"), "-out", &p("leaf.csr")],
        ]
        .concat(),
    );
    fs::write(dir.join("leaf.ext"), "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\nkeyUsage=digitalSignature\n").unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        &p("leaf.csr"),
        "-CA",
        &p("ca.pem"),
        "-CAkey",
        &p("ca.key"),
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        &p("leaf.ext"),
        "-out",
        &p("leaf.pem"),
    ]);
    (
        dir.join("ca.pem"),
        dir.join("leaf.pem"),
        dir.join("leaf.key"),
    )
}

#[test]
fn a_placeholder_reaches_its_host_as_the_real_value_through_curl_and_urllib_and_nowhere_else() {
    let value = "ghp_RealValue0123456789abcdefABCDEF0123";
    let certs = scratch_dir();
    let (ca, leaf, key) = test_ca(certs.path());
    let api = Upstream::tls("api", &leaf, &key);
    // Plain HTTP, so that the proxy sees the placeholder going there (inside a CONNECT
    // tunnel to a host listed for no secret it cannot: that one is only a placeholder).
    let other = Upstream::http("other");
    let (a, o) = (
        format!("127.0.0.1:{}", api.port),
        format!("127.0.0.1:{}", other.port),
    );
    let case = Case::new(
        &format!(
            "{{ name = \"TOKEN\", ttl = \"5m\", from = \"env:TEST_GH_TOKEN\", hosts = [\"{a}\"] }}"
        ),
        &format!("network = {{ allow = [\"{a}\", \"{o}\"] }}\n"),
    );
    let python = format!(
        "import os, urllib.request as u; r = u.Request('https://{a}/py', headers={{'Authorization': 'Bearer ' + os.environ['TOKEN']}}); print(u.urlopen(r).read().decode().strip())"
    );
    let script = format!(
        "curl -sS --fail -H \"Authorization: Bearer $TOKEN\" https://{a}/curl; \
         python3 -c \"$PY\"; \
         curl -sS --fail -H \"Authorization: Bearer $TOKEN\" http://{o}/other; \
         printf %s \"$TOKEN\" | sha256sum; echo \"len=${{#TOKEN}} prefix=$(printf %s \"$TOKEN\" | cut -c1-4)\"; \
         grep -c PRIVATE \"$SSL_CERT_FILE\"; echo \"$CURL_CA_BUNDLE $REQUESTS_CA_BUNDLE $NODE_EXTRA_CA_CERTS $GIT_SSL_CAINFO\""
    );
    let script = script.replace("\"$PY\"", &shell_quote(&python));
    let out = nanoclaw(case.dir.path())
        .args(["run", "--json", "--ca-file"])
        .arg(&ca)
        .args([
            "--policy",
            &case.policy.display().to_string(),
            "--tool",
            "t",
            "--",
            &script,
        ])
        .env("TEST_GH_TOKEN", value)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let ran = Ran {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    let json = ran.json();
    let stdout = json["stdout"].as_str().unwrap();
    assert_eq!(ran.code, 0, "{json}");
    // The upstream of the secret's host got the value from both clients...
    let seen = api.requests();
    let auth = format!("auth=Bearer {value}");
    assert!(
        seen.iter()
            .any(|l| l.contains("path=/curl") && l.contains(&auth)),
        "{seen:?}"
    );
    assert!(
        seen.iter()
            .any(|l| l.contains("path=/py") && l.contains(&auth)),
        "{seen:?}"
    );
    // ...which echoed it back: the proxy turned it into the placeholder again on the way
    // into the sandbox (checked below), so nothing was left for the output redaction.
    assert!(!stdout.contains(value), "{stdout}");
    assert!(json["redactions"].get("TOKEN").is_none(), "{json}");
    // The other allowed host got the placeholder, unreplaced.
    let seen = other.requests();
    let line = seen
        .iter()
        .find(|l| l.contains("path=/other"))
        .unwrap_or_else(|| panic!("{seen:?}"));
    assert!(!line.contains(value), "{line}");
    let placeholder = line
        .split("auth=Bearer ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap();
    assert_eq!(placeholder.len(), value.len());
    assert!(placeholder.starts_with("ghp_"), "{placeholder}");
    assert_eq!(
        stdout
            .matches(&format!("auth=Bearer {placeholder}"))
            .count(),
        3,
        "{stdout}"
    );
    // The sandbox held the placeholder, not the value; its bundle holds no key.
    let digest = |s: &str| {
        let out = Command::new("sha256sum")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        let mut out = out;
        out.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
        String::from_utf8(out.wait_with_output().unwrap().stdout)
            .unwrap()
            .split(' ')
            .next()
            .unwrap()
            .to_string()
    };
    assert!(stdout.contains(&digest(placeholder)), "{stdout}");
    assert!(!stdout.contains(&digest(value)), "{stdout}");
    assert!(
        stdout.contains(&format!("len={} prefix=ghp_", value.len())),
        "{stdout}"
    );
    let bundle = nanoclaw_spec::CA_BUNDLE_INSIDE;
    assert!(
        stdout.contains(&format!("0\n{bundle} {bundle} {bundle} {bundle}")),
        "{stdout}"
    );
    // The audit log names the secret, where it was substituted, and where it was not.
    let audit = case.audit();
    assert!(audit.contains("secret.substituted"), "{audit}");
    assert!(audit.contains("secret.misdirected"), "{audit}");
    assert!(audit.contains("secret.reflected"), "{audit}");
    let verified = nanoclaw(case.dir.path())
        .args(["audit", "verify"])
        .output()
        .unwrap();
    assert!(
        verified.status.success(),
        "{}",
        String::from_utf8_lossy(&verified.stdout)
    );
    case.assert_nowhere(&[value, placeholder]);
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

#[test]
fn after_its_ttl_a_placeholder_is_no_longer_substituted() {
    let value = "sk-ExpiringValue0123456789";
    let certs = scratch_dir();
    let (ca, leaf, key) = test_ca(certs.path());
    let api = Upstream::tls("api", &leaf, &key);
    let a = format!("127.0.0.1:{}", api.port);
    let case = Case::new(
        &format!("{{ name = \"T\", ttl = \"1s\", from = \"env:TEST_T\", hosts = [\"{a}\"] }}"),
        &format!("network = {{ allow = [\"{a}\"] }}\n"),
    );
    let script = format!(
        "curl -sS --fail -H \"Authorization: Bearer $T\" https://{a}/early >/dev/null; sleep 1.5; \
         curl -sS --fail -H \"Authorization: Bearer $T\" https://{a}/late >/dev/null"
    );
    let out = nanoclaw(case.dir.path())
        .args(["run", "--ca-file"])
        .arg(&ca)
        .args([
            "--policy",
            &case.policy.display().to_string(),
            "--tool",
            "t",
            "--",
            &script,
        ])
        .env("TEST_T", value)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen = api.requests();
    let early = seen.iter().find(|l| l.contains("path=/early")).unwrap();
    let late = seen.iter().find(|l| l.contains("path=/late")).unwrap();
    assert!(early.contains(value), "{early}");
    assert!(!late.contains(value), "{late}");
    assert!(case.audit().contains("secret.expired"), "{}", case.audit());
}

#[test]
fn docker_gets_placeholders_and_the_ca_bundle_and_file_and_env_secrets_past_the_engine() {
    let image = crate::suite::support::test_image_id();
    let value = "ghp_DockerValue0123456789abcdefABCDEF";
    let case = Case::new(
        "{ name = \"TOKEN\", ttl = \"5m\", from = \"env:TEST_D_TOKEN\", hosts = [\"api.github.com:443\"] }",
        &format!("backend = \"docker\"\nimage = \"{image}\"\nnetwork = {{ allow = [\"api.github.com:443\"] }}\n"),
    );
    let script = "echo \"len=${#TOKEN}\"; echo \"$TOKEN\" | head -c 4; echo; \
                  cat \"$SSL_CERT_FILE\" | grep -c 'BEGIN CERTIFICATE' >/dev/null && echo has-certs; \
                  cat \"$SSL_CERT_FILE\" | grep -c PRIVATE; echo \"$TOKEN\"";
    let ran = case.run(&[("TEST_D_TOKEN", value)], true, script);
    let json = ran.json();
    assert_eq!(ran.code, 0, "{json}");
    let out = json["stdout"].as_str().unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], format!("len={}", value.len()), "{out}");
    assert_eq!(lines[1], "ghp_", "{out}");
    assert_eq!(lines[2], "has-certs", "{out}");
    assert_eq!(lines[3], "0", "{out}");
    assert_ne!(lines[4], value, "{out}");
    assert!(
        !out.contains("[REDACTED"),
        "a placeholder is not the value: {out}"
    );
    // File and env secrets reach the container's init on its lifeline, never the engine:
    // while the command runs, `docker inspect` shows no value.
    let case = Case::new(
        "{ name = \"F\", ttl = \"5m\", from = [\"printf\", \"docker-file-Secret-1\"], deliver = \"file\" }, \
         { name = \"E\", ttl = \"5m\", from = [\"printf\", \"docker-env-Secret-2\"], deliver = \"env\" }",
        &format!("backend = \"docker\"\nimage = \"{image}\"\n"),
    );
    let run = std::thread::spawn({
        let policy = case.policy.display().to_string();
        let mut command = nanoclaw(case.dir.path());
        command.args([
            "run",
            "--json",
            "--policy",
            &policy,
            "--tool",
            "t",
            "--",
            "ls -ln /run/secrets; echo \"F=$F_FILE\"; cat \"$F_FILE\"; echo; echo \"E=$E\"; \
             cat /proc/1/environ 2>/dev/null | tr '\\0' '\\n' | grep -c Secret; sleep 2",
        ]);
        move || command.stdin(Stdio::null()).output().unwrap()
    });
    let mut inspected = String::new();
    for _ in 0..40 {
        std::thread::sleep(std::time::Duration::from_millis(100));
        let ids = Command::new("docker")
            .args(["ps", "-q", "--filter", "name=nanoclaw-"])
            .output()
            .unwrap();
        for id in String::from_utf8_lossy(&ids.stdout).split_whitespace() {
            let out = Command::new("docker")
                .args(["inspect", id])
                .output()
                .unwrap();
            inspected.push_str(&String::from_utf8_lossy(&out.stdout));
        }
        if inspected.contains("F_FILE=/run/secrets/F") {
            break;
        }
    }
    assert!(
        inspected.contains("F_FILE=/run/secrets/F"),
        "never saw the container"
    );
    assert!(
        !inspected.contains("docker-file-Secret-1"),
        "the engine holds a value"
    );
    assert!(
        !inspected.contains("docker-env-Secret-2"),
        "the engine holds a value"
    );
    let out = run.join().unwrap();
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["exit_code"], 0, "{json}");
    let text = json["stdout"].as_str().unwrap();
    assert!(text.contains("-r--------    1 10001    10001"), "{text}");
    assert!(
        text.contains("F=/run/secrets/F\n[REDACTED:F]\nE=[REDACTED:E]\n0\n"),
        "{text}"
    );
    case.assert_nowhere(&["docker-file-Secret-1", "docker-env-Secret-2"]);
}

#[test]
fn verify_proves_each_secrets_delivery_on_a_live_sandbox() {
    let case = Case::new(
        "{ name = \"F\", ttl = \"5m\", from = [\"printf\", \"verify-file-Secret\"], deliver = \"file\" }, \
         { name = \"E\", ttl = \"5m\", from = [\"printf\", \"verify-env-Secret\"], deliver = \"env\" }, \
         { name = \"P\", ttl = \"5m\", from = [\"printf\", \"ghp_verifyPlaceholder0123\"], hosts = [\"api.github.com:443\"] }",
        "network = { allow = [\"api.github.com:443\"] }\n",
    );
    let out = nanoclaw(case.dir.path())
        .args(["verify", &case.policy.display().to_string()])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    for name in ["F", "E", "P"] {
        assert!(
            text.lines()
                .any(|l| l.trim_start().starts_with("pass")
                    && l.contains(&format!("secret {name} "))),
            "{text}"
        );
    }
    assert!(
        text.contains("/run/secrets/F mode 0400 uid 10001"),
        "{text}"
    );
    case.assert_nowhere(&[
        "verify-file-Secret",
        "verify-env-Secret",
        "ghp_verifyPlaceholder0123",
    ]);
}

#[test]
fn wrapped_base64_and_hex_and_every_url_quoting_of_a_secret_are_redacted() {
    // Long enough to wrap over several lines; '/', '+' and spaces that the quotings treat
    // differently.
    let value = "pass phrase/with slashes+plus & more=Xk29fj3k/".repeat(3);
    let case = Case::new("", "");
    let file = case.secret_file("source-t", &value);
    fs::write(
        &case.policy,
        format!("[tools.t]\ndescription = \"t\"\ncommand = [\"sh\", \"-c\"]\nargs = \"append\"\nsecrets = [{{ name = \"TOK\", ttl = \"5m\", from = \"file:{file}\" }}]\n"),
    )
    .unwrap();
    let quote = |f: &str| {
        shell_quote(&format!(
            "import sys, urllib.parse as u; print(u.{f}(open(sys.argv[1]).read()))"
        ))
    };
    // coreutils base64 (76), openssl (64), xxd -p (60), base64 of the value at offsets 1
    // and 2 (wrapped), Python's quote (keeps '/') and quote_plus ('+' for a space), and
    // base64 -w 64 with CRLF line ends.
    let script = format!(
        "f=$TOK_FILE; echo '#--#'; base64 $f; echo '#--#'; openssl base64 -in $f; echo '#--#'; xxd -p $f; \
         echo '#--#'; (printf a; cat $f) | base64; echo '#--#'; (printf ab; cat $f) | base64 -w 64; \
         echo '#--#'; python3 -c {} $f; echo '#--#'; python3 -c {} $f; \
         echo '#--#'; base64 -w 64 $f | sed 's/$/\\r/'; echo '#--#'",
        quote("quote"),
        quote("quote_plus"),
    );
    let ran = case.run(&[], true, &script);
    assert_eq!(ran.code, 0, "{}{}", ran.stdout, ran.stderr);
    let json = ran.json();
    let out = json["stdout"].as_str().unwrap();
    let blocks: Vec<&str> = out.split("#--#\n").skip(1).collect();
    assert_eq!(blocks.len(), 9, "{out}");
    for block in &blocks[..8] {
        assert_eq!(
            block.matches("[REDACTED:TOK]").count(),
            1,
            "{block:?} in\n{out}"
        );
        // Left: only the characters that hold the offset's bits, and the padding.
        let left: String = block
            .replace("[REDACTED:TOK]", "")
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        assert!(left.len() <= 6, "{left:?} left of {block:?} in\n{out}");
    }
    assert_eq!(json["redactions"]["TOK"], 8, "{out}");
    case.assert_nowhere(&[&value]);
}

#[test]
fn a_placeholder_keeps_a_known_token_prefix_and_nothing_else_of_the_value() {
    let phrase = "correcthorsebatterystaple-Xk29fj3k";
    let url = "postgres://app:hunter2@db.internal:5432/prod?sslmode=require";
    let token = "ghp_RealValue0123456789abcdefABCDEF0123";
    let host = "api.example.com:443";
    let case = Case::new(
        &format!(
            "{{ name = \"PHRASE\", ttl = \"5m\", from = \"env:TEST_PHRASE\", hosts = [\"{host}\"] }}, \
             {{ name = \"DB\", ttl = \"5m\", from = \"env:TEST_DB\", hosts = [\"{host}\"] }}, \
             {{ name = \"GH\", ttl = \"5m\", from = \"env:TEST_GH\", hosts = [\"{host}\"] }}"
        ),
        &format!("network = {{ allow = [\"{host}\"] }}\n"),
    );
    let ran = case.run(
        &[
            ("TEST_PHRASE", phrase),
            ("TEST_DB", url),
            ("TEST_GH", token),
        ],
        true,
        "printf '%s\\n' \"$PHRASE\" \"$DB\" \"$GH\"",
    );
    assert_eq!(ran.code, 0, "{}{}", ran.stdout, ran.stderr);
    let json = ran.json();
    let out = json["stdout"].as_str().unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    for (line, value, prefix) in [
        (lines[0], phrase, ""),
        (lines[1], url, ""),
        (lines[2], token, "ghp_"),
    ] {
        assert_eq!(line.len(), value.len(), "{line} for {value}");
        assert!(line.starts_with(prefix), "{line}");
        let rest = &line[prefix.len()..];
        assert!(
            rest.bytes().all(|b| b.is_ascii_alphanumeric()),
            "{line} keeps the value's punctuation"
        );
        for word in [
            "correct", "horse", "battery", "postgres", "hunter2", "internal",
        ] {
            assert!(!line.contains(word), "{line} keeps {word}");
        }
    }
    case.assert_nowhere(&[phrase, url, token]);
}
