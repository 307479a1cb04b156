//! The docker backend through the CLI: `--image` (or a policy's `image`) switches the
//! backend and nothing else changes for the user: the same result shape, exit codes and
//! audit records. The conformance suite runs every probe on this backend too
//! (`suite::conformance::docker`); these tests cover the CLI's choices. They need the
//! Docker Engine, and fail if it is missing.

use std::fs;

use crate::suite::support::{nanoclaw_output, scratch_dir, test_image_id, RUNNER_ERROR};

#[test]
fn an_image_runs_on_the_docker_backend_with_the_same_result_shape() {
    let exited = nanoclaw_output(&[
        "run",
        "--image",
        test_image_id(),
        "--json",
        "--",
        "sh",
        "-c",
        "id; exit 3",
    ]);
    assert_eq!(exited.code(), 3, "{}", exited.context());
    let outcome: serde_json::Value = serde_json::from_str(&exited.stdout).unwrap();
    assert_eq!(outcome["exit_code"], 3);
    assert!(
        outcome["stdout"]
            .as_str()
            .unwrap()
            .starts_with("uid=10001 gid=10001"),
        "{outcome}"
    );
    let enforced = &outcome["enforced"];
    assert_eq!(enforced["backend"], "docker");
    assert_eq!(enforced["seccomp"], "nanoclaw-default");
    assert_eq!(enforced["read_only_root"], true);
    assert_eq!(enforced["memory_bytes"], 512 << 20);
    assert_eq!(
        enforced["landlock"]["status"], "full",
        "nanoclaw's init applies Landlock inside the container and reports it"
    );
}

#[test]
fn a_policy_switches_a_tool_to_docker_by_naming_an_image() {
    let dir = scratch_dir();
    let policy = dir.path().join("tools.toml");
    let text = format!(
        "[tools.who]\ndescription = \"id\"\nbackend = \"docker\"\nimage = \"{}\"\ncommand = [\"id\", \"-u\"]\n",
        test_image_id()
    );
    fs::write(&policy, text).unwrap();
    let policy = policy.display().to_string();
    let exited = nanoclaw_output(&["run", "--policy", &policy, "--tool", "who"]);
    assert_eq!(exited.code(), 0, "{}", exited.context());
    assert_eq!(exited.stdout, "10001\n");
}

#[test]
fn an_unpinned_or_missing_image_is_refused_by_name() {
    let unpinned = nanoclaw_output(&["run", "--image", "nanoclaw-cli-test:busybox", "--", "true"]);
    assert_eq!(unpinned.code(), RUNNER_ERROR, "{}", unpinned.context());
    assert!(
        unpinned.stderr.contains("not pinned"),
        "{}",
        unpinned.context()
    );
    let missing = format!("sha256:{}", "0".repeat(64));
    let absent = nanoclaw_output(&["run", "--image", &missing, "--", "true"]);
    assert_eq!(absent.code(), RUNNER_ERROR, "{}", absent.context());
    assert!(
        absent.stderr.contains(&missing),
        "names the image\n{}",
        absent.context()
    );
}

/// `verify` proves a docker tool's policy as it does a native one's: the same claims,
/// writable workspace (staged noexec) and Landlock included, and every one holds.
#[test]
fn verify_proves_a_docker_tools_policy() {
    let dir = scratch_dir();
    let policy = dir.path().join("tools.toml");
    let text = format!(
        "[tools.edit]\ndescription = \"writes the workspace\"\nbackend = \"docker\"\n\
         image = \"{}\"\ncommand = [\"sh\", \"-c\", \"echo x > /work/f\"]\n\
         mounts = [{{ host = \"${{workspace}}\", path = \"/work\", mode = \"rw\" }}]\n",
        test_image_id()
    );
    fs::write(&policy, text).unwrap();
    let exited = nanoclaw_output(&["verify", &policy.display().to_string()]);
    assert_eq!(exited.code(), 0, "{}", exited.context());
    for claim in ["mount /work", "landlock", "only expected mounts visible"] {
        let line = exited.stdout.lines().find(|l| l.contains(claim));
        assert!(
            line.is_some_and(|l| l.trim_start().starts_with("pass")),
            "{claim}\n{}",
            exited.context()
        );
    }
    assert!(
        exited.stdout.contains("every claim holds"),
        "{}",
        exited.context()
    );
}

#[test]
fn docker_options_are_checked_before_anything_starts() {
    let no_image = nanoclaw_output(&["run", "--backend", "docker", "--", "true"]);
    assert_eq!(no_image.code(), RUNNER_ERROR, "{}", no_image.context());
    assert!(
        no_image.stderr.contains("--image"),
        "{}",
        no_image.context()
    );
    let both = nanoclaw_output(&[
        "run",
        "--backend",
        "native",
        "--image",
        test_image_id(),
        "--",
        "true",
    ]);
    assert_eq!(both.code(), RUNNER_ERROR, "{}", both.context());
}
