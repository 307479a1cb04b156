//! What the CLI's conformance suite (crates/cli/tests, `suite::conformance::docker`) does
//! not already hold the docker backend to, through the backend's own API: host paths never
//! mounted stay invisible, the TIOCSTI rule ignores the request's high bits, the file size
//! limit, writable mounts (staged noexec on the host) and the workdir.

use std::fs;

use super::support::Sandbox;

#[track_caller]
fn blocked(probe: &str, args: &[&str]) {
    Sandbox::new().probe(probe, args).assert_blocked();
}

// Files and mounts

#[test]
fn only_mounted_host_paths_are_visible() {
    let mut sandbox = Sandbox::new();
    let dir = sandbox.host_dir("data");
    fs::write(dir.join("visible.txt"), "mounted\n").unwrap();
    let secret = sandbox.host_dir("unmounted").join("secret.txt");
    fs::write(&secret, "host secret\n").unwrap();
    let run = sandbox
        .mount(&dir.join("visible.txt"), "/mnt/visible.txt")
        .run(&["cat", "/mnt/visible.txt"]);
    assert_eq!(run.stdout(), "mounted\n", "{}", run.context());
    Sandbox::new()
        .probe("read-file", &[&secret.to_string_lossy()])
        .assert_blocked();
    Sandbox::new()
        .probe("list-dir", &[&dir.to_string_lossy()])
        .assert_blocked();
    for host_path in ["/root", "/home", "/var/run/docker.sock", "/run/docker.sock"] {
        blocked("read-file", &[host_path]);
    }
}

// Network

// Processes and identity

#[test]
fn id_shows_the_sandbox_user() {
    let run = Sandbox::new().run(&["id"]);
    assert_eq!(
        run.stdout(),
        "uid=10001 gid=10001 groups=10001\n",
        "{}",
        run.context()
    );
}

// Kernel attack surface

/// The sandbox's standard streams are pipes, where the kernel itself would answer TIOCSTI
/// with ENOTTY: only EPERM on every attempt, the `| 1<<32` variant included
/// (CVE-2019-10063), shows that the seccomp rule refused it before the kernel saw it.
#[test]
fn tiocsti_is_refused_by_the_filter_also_with_high_bits() {
    for (probe, request) in [("tiocsti", "TIOCSTI"), ("tioclinux", "TIOCLINUX")] {
        let probe = Sandbox::new().probe(probe, &[]);
        probe.assert_blocked();
        let detail = probe.detail();
        for fd in 0..3 {
            for variant in ["", " | 1<<32"] {
                let attempt = format!("{request}{variant} on fd {fd}: Operation not permitted");
                assert!(detail.contains(&attempt), "no {attempt:?} in {detail}");
            }
        }
    }
}

// Limits

#[test]
fn a_file_beyond_the_file_size_limit_is_blocked() {
    let mut sandbox = Sandbox::new();
    sandbox.limits(|l| l.file_size_bytes = 1 << 20);
    sandbox
        .probe("disk-fill", &["/tmp/f", "4"])
        .assert_blocked();
}

// What a sandbox must allow

/// A writable mount is noexec, as natively: its source is staged on the host as a noexec
/// bind that the container binds in turn. The staging mount is gone after the run.
#[test]
fn a_writable_mount_is_writable_noexec_and_its_staging_is_removed() {
    let mut sandbox = Sandbox::new();
    let dir = sandbox.writable_host_dir("work");
    let run = sandbox.mount_rw(&dir, "/work").run(&[
        "sh",
        "-c",
        "echo written > /work/out.txt && grep ' /work ' /proc/self/mountinfo",
    ]);
    assert_eq!(run.outcome().exit_code, Some(0), "{}", run.context());
    assert!(run.stdout().contains("noexec"), "{}", run.context());
    assert_eq!(
        fs::read_to_string(dir.join("out.txt")).unwrap(),
        "written\n"
    );
    // Other runs may be staging theirs meanwhile: this run's is the one of `dir`.
    let dir = dir.canonicalize().unwrap().display().to_string();
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let left: Vec<&str> = mounts
        .lines()
        .filter(|line| line.contains(nanoclaw_docker::STAGING_ROOT) && line.contains(&dir))
        .collect();
    assert!(left.is_empty(), "a staging mount is left: {left:#?}");
}

#[test]
fn the_workdir_sets_the_working_directory() {
    let mut sandbox = Sandbox::new();
    let dir = sandbox.host_dir("project");
    sandbox.mount(&dir, "/project");
    sandbox.spec.workdir = "/project".into();
    let run = sandbox.run(&["pwd"]);
    assert_eq!(run.stdout(), "/project\n", "{}", run.context());
}
