//! The example policies in examples/ parse, pass the lint and resolve.

use std::path::PathBuf;
use std::time::Duration;

use nanoclaw_policy::{lint, Invocation, Policy, Severity};
use nanoclaw_spec::{EgressRule, Mount, Network, Root};

use super::{examples, TempDir};

fn load(name: &str) -> Policy {
    let path = super::repo_root().join("examples").join(name);
    Policy::load(&path).unwrap_or_else(|d| panic!("{name}:\n{d}"))
}

#[test]
fn every_example_parses_lints_clean_and_resolves() {
    let paths = examples();
    assert!(paths.len() >= 4, "{paths:?}");
    let workspace = TempDir::new("examples");
    for path in paths {
        let policy = Policy::load(&path).unwrap_or_else(|d| panic!("{}:\n{d}", path.display()));
        let report = lint(&policy);
        assert!(!report.has_errors(), "{}:\n{report}", path.display());
        assert_eq!(report.count(Severity::Acknowledged), 0, "{report}");
        for tool in policy.tools() {
            assert!(
                tool.description.is_some(),
                "{}: {}",
                path.display(),
                tool.name
            );
            let invocation = Invocation {
                workspace: Some(workspace.path().to_path_buf()),
                ..Invocation::default()
            };
            // The scope: a tool with required parameters resolves a call only with them.
            let spec = policy
                .resolve_scope(&tool.name, &invocation)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert_eq!(spec.command, tool.command);
            assert_eq!(spec.root, Root::Host);
            assert!(!spec.allow_unlimited);
        }
    }
}

#[test]
fn code_search_reads_the_workspace_only() {
    let workspace = TempDir::new("search");
    let policy = load("code-search.toml");
    let invocation = Invocation {
        workspace: Some(workspace.path().to_path_buf()),
        extra_args: vec!["-e".into(), "TODO".into(), ".".into()],
        ..Invocation::default()
    };
    let spec = policy.resolve("search", &invocation).unwrap();
    assert_eq!(
        spec.mounts,
        [Mount {
            src: workspace.path().to_path_buf(),
            dst: "/work".into(),
            writable: false
        }]
    );
    assert_eq!(spec.workdir, PathBuf::from("/work"));
    assert_eq!(spec.command.last().map(String::as_str), Some("."));
    assert_eq!(spec.limits.timeout, Duration::from_secs(30));
    assert_eq!(spec.limits.memory_bytes, 256 << 20);
    assert_eq!(spec.limits.pids, 16);
    assert_eq!(spec.network, Network::None);
    assert!(spec
        .env
        .iter()
        .any(|(k, v)| k == "LC_ALL" && v == "C.UTF-8"));
}

#[test]
fn formatter_writes_the_workspace_with_a_warning() {
    let workspace = TempDir::new("fmt");
    let policy = load("formatter.toml");
    let report = lint(&policy);
    assert!(report
        .findings
        .iter()
        .any(|f| f.rule.id() == "writable-workspace" && f.severity == Severity::Warning));
    let invocation = Invocation {
        workspace: Some(workspace.path().to_path_buf()),
        extra_args: vec!["a.txt".into()],
        ..Invocation::default()
    };
    let spec = policy.resolve("strip-whitespace", &invocation).unwrap();
    assert!(spec.mounts[0].writable);
}

#[test]
fn python_snippet_has_nothing_mounted() {
    let policy = load("python-snippet.toml");
    let invocation = Invocation {
        extra_args: vec!["print(1)".into()],
        ..Invocation::default()
    };
    let spec = policy.resolve("python", &invocation).unwrap();
    assert!(spec.mounts.is_empty());
    assert_eq!(spec.command, ["python3", "-I", "-c", "print(1)"]);
    assert_eq!(spec.tmpfs[0].size_bytes, 16 << 20);
    assert_eq!(spec.limits.output_bytes, 256 << 10);
}

#[test]
fn fetcher_resolves_to_an_egress_rule() {
    let policy = load("fetcher.toml");
    let spec = policy
        .resolve("github-api", &Invocation::default())
        .unwrap();
    assert_eq!(
        spec.network,
        Network::Egress(vec![EgressRule {
            host: "api.github.com".into(),
            port: 443
        }])
    );
}
