//! Resolving a tool for an invocation: substitution, narrowing, and every refusal.

use std::path::PathBuf;
use std::time::Duration;

use nanoclaw_policy::{Error, Invocation, Narrowing};
use nanoclaw_spec::Root;

use super::{parse, policy, TempDir};

const FMT: &str = r#"
[tools.fmt]
description = "format"
command = ["sed", "-i"]
timeout = "20s"
[tools.fmt.limits]
memory = "256m"
cpus = 0.5
pids = 64
output = "1m"
[[tools.fmt.mounts]]
host = "${workspace}/src"
path = "/work"
mode = "rw"
[[tools.fmt.mounts]]
host = "${policy_dir}/config"
path = "/config"
"#;

fn with_workspace(dir: &TempDir) -> Invocation {
    Invocation {
        workspace: Some(dir.path().to_path_buf()),
        ..Invocation::default()
    }
}

#[test]
fn workspace_and_policy_dir_are_substituted() {
    let dir = TempDir::new("subst");
    std::fs::create_dir(dir.join("src")).unwrap();
    let spec = policy(FMT).resolve("fmt", &with_workspace(&dir)).unwrap();
    assert_eq!(spec.mounts[0].src, dir.join("src"));
    assert_eq!(spec.mounts[0].dst, PathBuf::from("/work"));
    assert!(spec.mounts[0].writable);
    assert_eq!(spec.mounts[1].src, PathBuf::from("/srv/policies/config"));
    assert!(!spec.mounts[1].writable);
}

#[test]
fn workspace_is_required_when_mounted() {
    let err = policy(FMT)
        .resolve("fmt", &Invocation::default())
        .unwrap_err();
    assert_eq!(err, Error::WorkspaceRequired { tool: "fmt".into() });
    assert!(err.to_string().contains("--workspace"), "{err}");
}

#[test]
fn workspace_must_be_absolute_and_plain() {
    for bad in ["relative/dir", "/a/../b"] {
        let invocation = Invocation {
            workspace: Some(bad.into()),
            ..Invocation::default()
        };
        let err = policy(FMT).resolve("fmt", &invocation).unwrap_err();
        assert!(
            matches!(err, Error::InvalidWorkspace { .. }),
            "{bad}: {err}"
        );
    }
}

#[test]
fn a_sensitive_workspace_is_refused_like_a_sensitive_mount() {
    let invocation = Invocation {
        workspace: Some("/etc".into()),
        ..Invocation::default()
    };
    let err = policy(FMT).resolve("fmt", &invocation).unwrap_err();
    let Error::Refused { tool, findings } = &err else {
        panic!("{err}")
    };
    assert_eq!(tool, "fmt");
    assert!(
        findings.iter().any(|f| f.rule.id() == "sensitive-mount"),
        "{err}"
    );
    assert!(err.to_string().contains("[sensitive-mount]"), "{err}");
}

#[test]
fn a_workspace_symlink_is_refused_without_exception() {
    let dir = TempDir::new("link");
    std::fs::create_dir(dir.join("real")).unwrap();
    std::os::unix::fs::symlink(dir.join("real"), dir.join("src")).unwrap();
    let text = format!(
        "{FMT}[tools.fmt.unsafe]\nreason = \"cannot cover a symlink\"\nallow = [\"sensitive-mount\"]\n"
    );
    let err = policy(&text)
        .resolve("fmt", &with_workspace(&dir))
        .unwrap_err();
    assert!(err.to_string().contains("[symlink-mount]"), "{err}");
}

#[test]
fn a_symlinked_path_is_judged_by_where_it_leads() {
    let dir = TempDir::new("via");
    std::os::unix::fs::symlink("/etc", dir.join("etc-link")).unwrap();
    // The mount source is a real directory; a link on the way to it leads into /etc.
    let text = r#"
[tools.t]
description = "t"
command = ["cat"]
[[tools.t.mounts]]
host = "${workspace}/etc-link/ssl"
path = "/ssl"
"#;
    let err = policy(text)
        .resolve("t", &with_workspace(&dir))
        .unwrap_err();
    assert!(err.to_string().contains("inside the host's /etc"), "{err}");
}

#[test]
fn narrowing_lowers_limits() {
    let dir = TempDir::new("narrow");
    let invocation = Invocation {
        narrowing: Narrowing {
            memory: Some(128 << 20),
            cpus: Some(250),
            pids: Some(64),
            timeout: Some(Duration::from_secs(5)),
            output: Some(1024),
            write_bytes: Some(64 << 20),
            write_files: Some(1000),
        },
        ..with_workspace(&dir)
    };
    let spec = policy(FMT).resolve("fmt", &invocation).unwrap();
    assert_eq!(spec.limits.write_bytes, 64 << 20);
    assert_eq!(spec.limits.write_files, 1000);
    assert_eq!(spec.limits.memory_bytes, 128 << 20);
    assert_eq!(spec.limits.cpu_millis, 250);
    assert_eq!(spec.limits.pids, 64);
    assert_eq!(spec.limits.timeout, Duration::from_secs(5));
    assert_eq!(spec.limits.output_bytes, 1024);
}

#[test]
fn widening_is_an_error_naming_the_option_and_the_tool() {
    let dir = TempDir::new("widen");
    let cases: [(Narrowing, &str); 5] = [
        (
            Narrowing {
                memory: Some(1 << 30),
                ..Narrowing::default()
            },
            "--memory 1g would widen tool `fmt` (its limit is 256m)",
        ),
        (
            Narrowing {
                cpus: Some(1000),
                ..Narrowing::default()
            },
            "--cpus 1 would widen tool `fmt` (its limit is 0.5)",
        ),
        (
            Narrowing {
                pids: Some(65),
                ..Narrowing::default()
            },
            "--pids-limit 65 would widen tool `fmt` (its limit is 64)",
        ),
        (
            Narrowing {
                timeout: Some(Duration::from_secs(21)),
                ..Narrowing::default()
            },
            "--timeout 21s would widen tool `fmt` (its limit is 20s)",
        ),
        (
            Narrowing {
                output: Some(2 << 20),
                ..Narrowing::default()
            },
            "--output-limit 2m would widen tool `fmt` (its limit is 1m)",
        ),
    ];
    for (narrowing, message) in cases {
        let invocation = Invocation {
            narrowing,
            ..with_workspace(&dir)
        };
        let err = policy(FMT).resolve("fmt", &invocation).unwrap_err();
        assert_eq!(err.to_string(), message);
    }
}

#[test]
fn extra_arguments_need_args_append() {
    let dir = TempDir::new("args");
    let invocation = Invocation {
        extra_args: vec!["file.txt".into()],
        ..with_workspace(&dir)
    };
    let err = policy(FMT).resolve("fmt", &invocation).unwrap_err();
    assert!(
        err.to_string()
            .contains("tool `fmt` takes no extra arguments"),
        "{err}"
    );
    let append = FMT.replace(
        "command = [\"sed\", \"-i\"]",
        "command = [\"sed\", \"-i\"]\nargs = \"append\"",
    );
    let spec = policy(&append).resolve("fmt", &invocation).unwrap();
    assert_eq!(spec.command, ["sed", "-i", "file.txt"]);
}

#[test]
fn unknown_tools_list_the_known_ones() {
    let err = policy(FMT)
        .resolve("fmtt", &Invocation::default())
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "unknown tool `fmtt` in tools.toml; valid tools: fmt"
    );
}

#[test]
fn a_tool_the_lint_refuses_does_not_resolve_unless_acknowledged() {
    let root = "[tools.r]\ndescription = \"r\"\ncommand = [\"id\"]\nuser = \"0:0\"\n";
    let err = policy(root)
        .resolve("r", &Invocation::default())
        .unwrap_err();
    assert!(err.to_string().contains("[root-user]"), "{err}");
    let acknowledged =
        format!("{root}[tools.r.unsafe]\nreason = \"needs to chown\"\nallow = [\"root-user\"]\n");
    let spec = policy(&acknowledged)
        .resolve("r", &Invocation::default())
        .unwrap();
    assert_eq!((spec.user.uid, spec.user.gid), (0, 0));
}

#[test]
fn secrets_resolve_to_their_sources_and_deliveries_without_values() {
    let text = "[tools.s]\ndescription = \"s\"\ncommand = [\"env\"]\nnetwork = { allow = [\"api.github.com:443\"] }\nsecrets = [{ name = \"TOKEN\", ttl = \"1m\", from = \"env:GH\", hosts = [\"api.github.com:443\"] }, { name = \"KEY\", ttl = \"2m\", from = [\"vault\", \"read\"], deliver = \"file\" }, { name = \"E\", ttl = \"1m\", from = \"file:/k\", deliver = \"env\" }]\n";
    let spec = policy(text).resolve("s", &Invocation::default()).unwrap();
    let got: Vec<_> = spec
        .secrets
        .iter()
        .map(|s| {
            (
                s.name.as_str(),
                s.delivery,
                s.ttl.as_secs(),
                s.source.clone(),
                s.value.is_empty(),
            )
        })
        .collect();
    use nanoclaw_spec::{Delivery, SecretSource};
    assert_eq!(
        got,
        [
            (
                "TOKEN",
                Delivery::Placeholder,
                60,
                Some(SecretSource::Env("GH".into())),
                true
            ),
            (
                "KEY",
                Delivery::File,
                120,
                Some(SecretSource::Command(vec!["vault".into(), "read".into()])),
                true
            ),
            (
                "E",
                Delivery::Env,
                60,
                Some(SecretSource::File("/k".into())),
                true
            ),
        ]
    );
    assert_eq!(spec.secrets[0].hosts[0].host, "api.github.com");
    // Without egress the default delivery is a file.
    let text = "[tools.s]\ndescription = \"s\"\ncommand = [\"env\"]\nsecrets = [{ name = \"T\", ttl = \"1m\", from = \"env:GH\" }]\n";
    let spec = policy(text).resolve("s", &Invocation::default()).unwrap();
    assert_eq!(spec.secrets[0].delivery, nanoclaw_spec::Delivery::File);
}

#[test]
fn an_env_secret_and_a_readable_source_file_are_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, "x").unwrap();
    std::os::unix::fs::PermissionsExt::set_mode(
        &mut std::fs::metadata(&file).unwrap().permissions(),
        0o644,
    );
    std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let text = format!("[tools.s]\ndescription = \"s\"\ncommand = [\"env\"]\nsecrets = [{{ name = \"T\", ttl = \"1m\", from = \"file:{}\", deliver = \"env\" }}]\n", file.display());
    let report = nanoclaw_policy::lint(&policy(&text));
    let rules: Vec<_> = report
        .findings
        .iter()
        .map(|f| (f.rule.id(), f.severity))
        .collect();
    assert!(
        rules.contains(&("env-secret", nanoclaw_policy::Severity::Warning)),
        "{report}"
    );
    assert!(
        rules.contains(&("readable-secret-file", nanoclaw_policy::Severity::Warning)),
        "{report}"
    );
    assert!(!report.has_errors(), "{report}");
}

#[test]
fn what_no_backend_enforces_is_not_in_the_format() {
    let tool = "[tools.c]\ndescription = \"c\"\ncommand = [\"ping\"]\n";
    for (line, says) in [
        (
            "capabilities = [\"NET_RAW\"]",
            "`capabilities` in [tools.c] is not supported",
        ),
        (
            "network = \"host\"",
            "`network = \"host\"` in [tools.c] is not supported",
        ),
        (
            "syscalls = { allow = [\"ptrace\"] }",
            "`allow` in [tools.c.syscalls] is not supported",
        ),
    ] {
        let err = parse(&format!("{tool}{line}\n")).unwrap_err().to_string();
        assert!(err.contains(says), "{err}");
        assert!(err.contains("no backend enforces it"), "{err}");
        assert!(err.contains("tools.toml:4:"), "{err}");
    }
}

#[test]
fn defaults_apply_under_tool_values() {
    let text = r#"
[defaults]
timeout = "45s"
[defaults.limits]
memory = "1g"
pids = 100
tmpfs = "8m"
[tools.a]
description = "a"
command = ["true"]
[tools.a.limits]
pids = 10
"#;
    let spec = policy(text).resolve("a", &Invocation::default()).unwrap();
    assert_eq!(spec.limits.timeout, Duration::from_secs(45));
    assert_eq!(spec.limits.memory_bytes, 1 << 30);
    assert_eq!(spec.limits.pids, 10);
    assert_eq!(spec.limits.cpu_millis, 500);
    assert_eq!(spec.tmpfs[0].size_bytes, 8 << 20);
    assert_eq!(spec.root, Root::Host);
    assert_eq!((spec.user.uid, spec.user.gid), (10001, 10001));
}

#[test]
fn roots_follow_the_backend() {
    let digest = "0".repeat(64);
    let text = format!(
        r#"
[tools.native]
description = "n"
command = ["true"]
rootfs = "${{policy_dir}}/rootfs"
image = "debian@sha256:{digest}"
[tools.docker]
description = "d"
command = ["true"]
backend = "docker"
image = "debian@sha256:{digest}"
"#
    );
    let p = policy(&text);
    let native = p.resolve("native", &Invocation::default()).unwrap();
    assert_eq!(native.root, Root::Rootfs("/srv/policies/rootfs".into()));
    let docker = p.resolve("docker", &Invocation::default()).unwrap();
    assert_eq!(docker.root, Root::Image(format!("debian@sha256:{digest}")));
}
