//! The lint: acknowledgements, warnings, and the JSON form CI reads.

use nanoclaw_policy::{lint, Report, Severity};

use super::{policy, TempDir};

fn findings(report: &Report, rule: &str) -> Vec<Severity> {
    report
        .findings
        .iter()
        .filter(|f| f.rule.id() == rule)
        .map(|f| f.severity)
        .collect()
}

#[test]
fn an_acknowledged_error_is_still_reported_with_its_reason() {
    let report = lint(&policy(
        r#"
[tools.chown]
description = "fix ownership"
command = ["chown"]
user = "0:0"
[tools.chown.unsafe]
reason = "chown needs uid 0 inside the sandbox; it still has no capabilities"
allow = ["root-user"]
"#,
    ));
    assert!(!report.has_errors(), "{report}");
    let finding = report
        .findings
        .iter()
        .find(|f| f.rule.id() == "root-user")
        .unwrap();
    assert_eq!(finding.severity, Severity::Acknowledged);
    assert_eq!(
        finding.reason.as_deref(),
        Some("chown needs uid 0 inside the sandbox; it still has no capabilities")
    );
    let text = report.to_string();
    assert!(
        text.contains("acknowledged[root-user]: tool `chown`: runs as 0:0"),
        "{text}"
    );
    assert!(text.contains("= reason: chown needs uid 0"), "{text}");
    assert!(
        text.contains("0 errors, 0 warnings, 1 acknowledged risk"),
        "{text}"
    );
}

#[test]
fn an_acknowledgement_nothing_needs_is_a_warning() {
    let report = lint(&policy(
        "[tools.a]\ndescription = \"a\"\ncommand = [\"true\"]\n[tools.a.unsafe]\nreason = \"old\"\nallow = [\"root-user\"]\n",
    ));
    assert_eq!(
        findings(&report, "unused-acknowledgement"),
        [Severity::Warning]
    );
    let finding = &report.findings[0];
    assert_eq!(finding.at.map(|l| (l.line, l.column)), Some((6, 10)));
}

#[test]
fn softer_smells_are_warnings() {
    let report = lint(&policy(
        r#"
[tools.sh]
command = ["/bin/sh", "-c"]
args = "append"
network = { allow = ["example.com:80", "127.0.0.1:8080"] }
"#,
    ));
    assert!(!report.has_errors(), "{report}");
    for rule in [
        "no-description",
        "shell-append",
        "plain-http",
        "internal-egress",
    ] {
        assert_eq!(
            findings(&report, rule),
            [Severity::Warning],
            "{rule}: {report}"
        );
    }
}

/// The lint judges an allow entry's address with the proxy's own classifier: every form
/// the proxy refuses unless named (CGNAT, IPv4-mapped, NAT64, 6to4, metadata) is flagged.
#[test]
fn every_address_the_proxy_screens_is_internal_egress() {
    for entry in [
        "100.64.0.1:443",
        "[::ffff:10.0.0.1]:443",
        "[::ffff:127.0.0.1]:443",
        "[64:ff9b::a9fe:a9fe]:443",
        "[2002:7f00:1::1]:443",
        "[fd00:ec2::254]:443",
        "0.0.0.0:443",
        "metadata.google.internal:443",
    ] {
        let report = lint(&policy(&format!(
            "[tools.n]\ndescription = \"n\"\ncommand = [\"true\"]\nnetwork = {{ allow = [\"{entry}\"] }}\n"
        )));
        assert_eq!(
            findings(&report, "internal-egress"),
            [Severity::Warning],
            "{entry}: {report}"
        );
    }
    let report = lint(&policy(
        "[tools.n]\ndescription = \"n\"\ncommand = [\"true\"]\nnetwork = { allow = [\"[::ffff:8.8.8.8]:443\"] }\n",
    ));
    assert!(findings(&report, "internal-egress").is_empty(), "{report}");
}

#[test]
fn a_writable_repository_and_credentials_in_it_are_warnings() {
    let dir = TempDir::new("repo");
    std::fs::create_dir(dir.join(".git")).unwrap();
    std::fs::write(dir.join(".env"), "TOKEN=x").unwrap();
    let text = format!(
        "[tools.w]\ndescription = \"w\"\ncommand = [\"true\"]\n[[tools.w.mounts]]\nhost = \"{}\"\npath = \"/work\"\nmode = \"rw\"\n",
        dir.path().display()
    );
    let report = lint(&policy(&text));
    assert!(!report.has_errors(), "{report}");
    assert_eq!(findings(&report, "writable-repo"), [Severity::Warning]);
    assert_eq!(findings(&report, "credentials-inside"), [Severity::Warning]);
}

#[test]
fn a_missing_mount_source_is_a_warning() {
    let report = lint(&policy(
        "[tools.m]\ndescription = \"m\"\ncommand = [\"true\"]\n[[tools.m.mounts]]\nhost = \"/srv/nanoclaw-test-missing\"\npath = \"/data\"\n",
    ));
    assert_eq!(findings(&report, "missing-path"), [Severity::Warning]);
}

#[test]
fn a_mount_that_is_a_symlink_is_refused_even_when_acknowledged() {
    let dir = TempDir::new("symlink");
    std::fs::create_dir(dir.join("real")).unwrap();
    std::os::unix::fs::symlink(dir.join("real"), dir.join("link")).unwrap();
    let text = format!(
        "[tools.l]\ndescription = \"l\"\ncommand = [\"true\"]\n[[tools.l.mounts]]\nhost = \"{}\"\npath = \"/data\"\n[tools.l.unsafe]\nreason = \"x\"\nallow = [\"sensitive-mount\"]\n",
        dir.join("link").display()
    );
    let report = lint(&policy(&text));
    assert_eq!(findings(&report, "symlink-mount"), [Severity::Error]);
}

#[test]
fn a_raised_ceiling_is_a_warning() {
    let report = lint(&policy(
        "[ceilings]\nmemory = \"64g\"\n[tools.a]\ndescription = \"a\"\ncommand = [\"true\"]\n",
    ));
    assert_eq!(findings(&report, "raised-ceiling"), [Severity::Warning]);
    assert_eq!(report.findings[0].tool, None);
}

#[test]
fn narrow_wildcards_pass() {
    let report = lint(&policy(
        "[tools.p]\ndescription = \"p\"\ncommand = [\"pip\"]\nnetwork = { allow = [\"*.pypi.org:443\", \"files.pythonhosted.org:443\"] }\n",
    ));
    assert!(report.findings.is_empty(), "{report}");
}

#[test]
fn the_json_form_names_rules_and_severities() {
    let report = lint(&policy("[tools.r]\ncommand = [\"id\"]\nuser = \"0:0\"\n"));
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["file"], "tools.toml");
    let first = &json["findings"][0];
    assert_eq!(first["rule"], "root-user");
    assert_eq!(first["severity"], "error");
    assert_eq!(first["tool"], "r");
    assert_eq!(first["at"]["line"], 3);
    assert!(first["help"].is_string());
}
