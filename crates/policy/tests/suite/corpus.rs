//! Every file in tests/bad is refused, where and how its first line says:
//! `# parse-error: LINE:COL FRAGMENT` (or `-` for no location), or
//! `# lint-error: RULE LINE:COL FRAGMENT`.

use std::path::Path;

use nanoclaw_policy::{lint, Location, Severity};

use super::{parse, policy, repo_root};

fn location(text: &str) -> Option<Location> {
    let (line, column) = text.split_once(':')?;
    Some(Location {
        line: line.parse().ok()?,
        column: column.parse().ok()?,
    })
}

fn check_parse_error(path: &Path, text: &str, expect: &str) {
    let (at, fragment) = expect.split_once(' ').unwrap();
    let diagnostics = match parse(text) {
        Ok(_) => panic!("{}: parsed, expected {expect:?}", path.display()),
        Err(d) => d,
    };
    let found = diagnostics
        .iter()
        .any(|d| d.message.contains(fragment) && d.at == location(at));
    assert!(
        found,
        "{}: no error at {at} containing {fragment:?}; got:\n{diagnostics}",
        path.display()
    );
    // The rendering carries the file, line and column, compiler-style.
    let rendered = diagnostics.to_string();
    assert!(rendered.starts_with("error: "), "{rendered}");
    if at != "-" {
        assert!(rendered.contains(&format!("tools.toml:{at}")), "{rendered}");
    }
}

fn check_lint_error(path: &Path, text: &str, expect: &str) {
    let mut words = expect.splitn(3, ' ');
    let (rule, at, fragment) = (
        words.next().unwrap(),
        words.next().unwrap(),
        words.next().unwrap(),
    );
    let report = lint(&policy(text));
    let found = report.findings.iter().any(|f| {
        f.severity == Severity::Error
            && f.rule.id() == rule
            && f.at == location(at)
            && f.message.contains(fragment)
    });
    assert!(
        found,
        "{}: no {rule} error at {at} containing {fragment:?}; got:\n{report}",
        path.display()
    );
    assert!(report.has_errors());
    assert!(report.to_string().contains(&format!("error[{rule}]")));
}

#[test]
fn every_bad_policy_is_refused_where_and_how_it_says() {
    let mut paths: Vec<_> = std::fs::read_dir(repo_root().join("crates/policy/tests/bad"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    paths.sort();
    assert!(paths.len() >= 40, "the corpus lost files");
    for path in paths {
        let text = std::fs::read_to_string(&path).unwrap();
        let first = text.lines().next().unwrap_or_default();
        if let Some(expect) = first.strip_prefix("# parse-error: ") {
            check_parse_error(&path, &text, expect);
        } else if let Some(expect) = first.strip_prefix("# lint-error: ") {
            check_lint_error(&path, &text, expect);
        } else {
            panic!(
                "{}: first line says neither parse-error nor lint-error",
                path.display()
            );
        }
    }
}

#[test]
fn every_error_in_a_file_is_reported_at_once() {
    let diagnostics = parse(
        r#"
[tools.a]
command = []
timeout = "soon"
[tools.b]
command = ["x"]
mystery = 1
"#,
    )
    .unwrap_err();
    let messages: Vec<&str> = diagnostics.iter().map(|d| d.message.as_str()).collect();
    assert_eq!(messages.len(), 3, "{messages:?}");
    // In file order.
    let lines: Vec<usize> = diagnostics.iter().map(|d| d.at.unwrap().line).collect();
    assert_eq!(lines, [3, 4, 7]);
}

#[test]
fn a_typo_gets_a_suggestion() {
    let diagnostics =
        parse("[tools.a]\ncommand = [\"x\"]\n[tools.a.limits]\nmemroy = \"1g\"\n").unwrap_err();
    let d = diagnostics.iter().next().unwrap();
    assert_eq!(d.help.as_deref(), Some("did you mean `memory`?"));
    let text = diagnostics.to_string();
    assert!(text.contains("4 | memroy = \"1g\"\n  | ^^^^^^\n"), "{text}");
}
