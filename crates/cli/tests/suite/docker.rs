//! The docker backend through the CLI: `--image` (or a policy's `image`) switches the
//! backend and nothing else changes for the user: the same result shape, exit codes and
//! audit records. The backend's own engine suite (crates/docker) runs every probe; these
//! tests cover the CLI's choices. They need the Docker Engine, and fail if it is missing.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

use crate::suite::support::{nanoclaw_output, scratch_dir, RUNNER_ERROR};

/// A busybox-only image built for these tests (no registry here), by its local ID.
fn image() -> &'static str {
    static IMAGE: OnceLock<String> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let context = scratch_dir();
        let bin = context.path().join("bin");
        fs::create_dir(&bin).unwrap();
        fs::copy("/bin/busybox", bin.join("busybox")).expect("busybox-static is installed");
        for applet in ["sh", "id", "echo", "cat", "true"] {
            std::os::unix::fs::symlink("busybox", bin.join(applet)).unwrap();
        }
        fs::write(
            context.path().join("Dockerfile"),
            "FROM scratch\nCOPY bin /bin\n",
        )
        .unwrap();
        let built = Command::new("docker")
            .args(["build", "-q", "-t", "nanoclaw-cli-test:busybox"])
            .arg(context.path())
            .output()
            .expect("the docker CLI prepares the test image");
        assert!(
            built.status.success(),
            "the Docker Engine must be reachable for these tests: {}",
            String::from_utf8_lossy(&built.stderr)
        );
        String::from_utf8(built.stdout).unwrap().trim().to_string()
    })
}

#[test]
fn an_image_runs_on_the_docker_backend_with_the_same_result_shape() {
    let exited = nanoclaw_output(&[
        "run",
        "--image",
        image(),
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
        enforced["landlock"]["status"], "none",
        "the engine applies no Landlock: said, not hidden"
    );
}

#[test]
fn a_policy_switches_a_tool_to_docker_by_naming_an_image() {
    let dir = scratch_dir();
    let policy = dir.path().join("tools.toml");
    let text = format!(
        "[tools.who]\ndescription = \"id\"\nbackend = \"docker\"\nimage = \"{}\"\ncommand = [\"id\", \"-u\"]\n",
        image()
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

#[test]
fn a_writable_mount_is_refused_because_the_engine_cannot_make_it_noexec() {
    let dir = scratch_dir();
    let mount = format!("{}:/work:rw", dir.path().display());
    let exited = nanoclaw_output(&[
        "run",
        "--image",
        image(),
        "-v",
        &mount,
        "--",
        "sh",
        "-c",
        "echo x > /work/f",
    ]);
    assert_eq!(exited.code(), RUNNER_ERROR, "{}", exited.context());
    assert!(exited.stderr.contains("noexec"), "{}", exited.context());
    assert!(!Path::new(&dir.path().join("f")).exists());
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
        image(),
        "--",
        "true",
    ]);
    assert_eq!(both.code(), RUNNER_ERROR, "{}", both.context());
}
