//! Where in the sandbox a host directory is: the agent's shell keeps a working directory
//! between calls, and the sandboxed command must start in the directory that matches it.
//!
//! A host directory maps through the tool's mounts only (the longest mount source that
//! contains it wins); a directory no mount contains has no place in the sandbox and is
//! refused, never mapped to the tool's default workdir. Paths are compared canonical, as
//! the policy resolves the workspace, so a symlinked path cannot land outside it.

use std::path::{Path, PathBuf};

use nanoclaw_policy::Tool;

/// Canonical `path`, naming what it is in the error.
pub fn canonical(what: &str, path: &Path) -> Result<PathBuf, String> {
    if !path.is_absolute() {
        return Err(format!("{what} {} is not an absolute path", path.display()));
    }
    let path =
        std::fs::canonicalize(path).map_err(|e| format!("{what} {}: {e}", path.display()))?;
    // It goes into JSON and shell text, which carry only UTF-8 without loss.
    if path.to_str().is_none() {
        return Err(format!("{what} {} is not valid UTF-8", path.display()));
    }
    Ok(path)
}

/// The directory inside tool's sandbox that host directory `host_dir` (canonical) is,
/// with `workspace` (canonical) standing for `${workspace}`.
pub fn sandbox_dir(
    tool: &Tool,
    workspace: Option<&Path>,
    host_dir: &Path,
) -> Result<PathBuf, String> {
    let mut best: Option<(usize, PathBuf)> = None;
    for mount in &tool.mounts {
        let Some(source) = mount.host.resolve(workspace) else {
            continue;
        };
        let Ok(source) = std::fs::canonicalize(&source) else {
            continue;
        };
        let Ok(rest) = host_dir.strip_prefix(&source) else {
            continue;
        };
        let depth = source.components().count();
        if best.as_ref().is_none_or(|(d, _)| depth > *d) {
            best = Some((depth, mount.path.join(rest)));
        }
    }
    match best {
        Some((_, dir)) => Ok(dir),
        None => Err(format!(
            "the shell's working directory {} is outside every directory tool `{}` mounts ({}); \
             cd back into the workspace{}",
            host_dir.display(),
            tool.name,
            mounted(tool, workspace),
            workspace
                .map(|w| format!(" {}", w.display()))
                .unwrap_or_default(),
        )),
    }
}

fn mounted(tool: &Tool, workspace: Option<&Path>) -> String {
    let sources: Vec<String> = tool
        .mounts
        .iter()
        .filter_map(|m| m.host.resolve(workspace))
        .map(|p| p.display().to_string())
        .collect();
    if sources.is_empty() {
        "it mounts none".into()
    } else {
        sources.join(", ")
    }
}

/// Refuses a file that tool's sandbox could write: the policy it runs under, or the audit
/// log that records it, inside one of its writable mounts would let a sandboxed command
/// loosen its own next call or rewrite its own record.
pub fn check_out_of_reach(
    tool: &Tool,
    workspace: Option<&Path>,
    what: &str,
    path: &Path,
) -> Result<(), String> {
    // A log not created yet is judged by its directory.
    let real = std::fs::canonicalize(path).or_else(|_| match (path.parent(), path.file_name()) {
        (Some(parent), Some(name)) => std::fs::canonicalize(parent).map(|p| p.join(name)),
        _ => Ok(path.to_path_buf()),
    });
    let real = real.unwrap_or_else(|_| path.to_path_buf());
    for mount in tool.mounts.iter().filter(|m| m.writable) {
        let Some(source) = mount.host.resolve(workspace) else {
            continue;
        };
        let source = std::fs::canonicalize(&source).unwrap_or(source);
        if real.starts_with(&source) {
            return Err(format!(
                "{what} {} is inside {}, which tool `{}` mounts writable: a sandboxed command \
                 could rewrite it; keep it outside the workspace",
                path.display(),
                source.display(),
                tool.name
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use nanoclaw_policy::Policy;

    /// A workspace with `src/gen` in it, mounted at /work, and `src` again at /src.
    fn tool_and_workspace() -> (tempfile::TempDir, Tool, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let workspace = dir.path().canonicalize().unwrap();
        std::fs::create_dir_all(workspace.join("src/gen")).unwrap();
        let text = r#"
[tools.shell]
description = "shell"
command = ["sh", "-c", "{command}"]
workdir = "/work"
[tools.shell.params.command]
type = "string"
[[tools.shell.mounts]]
host = "${workspace}"
path = "/work"
[[tools.shell.mounts]]
host = "${workspace}/src"
path = "/src"
mode = "rw"
"#;
        let policy = Policy::parse(text, Path::new("p.toml"), Path::new("/")).unwrap();
        let tool = policy.tool("shell").unwrap().clone();
        (dir, tool, workspace)
    }

    #[test]
    fn the_longest_mount_source_wins() {
        let (_dir, tool, ws) = tool_and_workspace();
        let map = |p: &Path| sandbox_dir(&tool, Some(&ws), p);
        assert_eq!(map(&ws).unwrap(), Path::new("/work"));
        assert_eq!(map(&ws.join("src")).unwrap(), Path::new("/src"));
        assert_eq!(map(&ws.join("src/gen")).unwrap(), Path::new("/src/gen"));
        let outside = map(ws.parent().unwrap()).unwrap_err();
        assert!(outside.contains("outside every directory"), "{outside}");
    }

    #[test]
    fn files_under_a_writable_mount_are_in_reach() {
        let (_dir, tool, ws) = tool_and_workspace();
        let check = |p: &Path| check_out_of_reach(&tool, Some(&ws), "the policy", p);
        assert!(check(&ws.join("p.toml")).is_ok(), "read-only /work");
        assert!(check(&ws.join("src/p.toml")).is_err());
        assert!(check(&ws.join("src/gen/not-yet.jsonl")).is_err());
        assert!(check(Path::new("/etc/p.toml")).is_ok());
    }
}
