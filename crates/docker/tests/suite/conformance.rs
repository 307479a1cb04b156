//! The conformance probes under the docker backend: the escape attempts of the native
//! backend's suite (`nanoclaw probe`), run inside a container with the strict defaults, each
//! of which must fail; the limits that must stop a runaway command; and what a sandbox must
//! still allow.

use std::fs;
use std::io::ErrorKind;
use std::net::{TcpListener, UdpSocket};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::time::Duration;

use super::support::{
    assert_no_process_with, give_to_sandbox_user, probe_binary, serialise_heavy, unique_token,
    Sandbox, PROBE,
};

fn blocked(probe: &str, args: &[&str]) {
    Sandbox::new().probe(probe, args).assert_blocked();
}

// Files and mounts

#[test]
fn reading_etc_shadow_is_blocked() {
    blocked("read-file", &["/etc/shadow"]);
}

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

#[test]
fn listing_root_home_is_blocked() {
    blocked("list-dir", &["/root"]);
    blocked("list-dir", &["/home"]);
}

#[test]
fn writing_to_the_root_is_blocked() {
    blocked("write-file", &["/nanoclaw-escape"]);
    blocked("write-file", &["/bin/nanoclaw-escape"]);
    blocked("write-file", &["/probe/nanoclaw"]);
}

#[test]
fn writing_to_a_read_only_mount_is_blocked() {
    let mut sandbox = Sandbox::new();
    // Writable by the sandbox user on the host: only the mount can refuse.
    let dir = sandbox.writable_host_dir("data");
    fs::write(dir.join("existing"), "keep").unwrap();
    give_to_sandbox_user(&dir.join("existing"));
    sandbox.mount(&dir, "/data");
    sandbox.probe("write-file", &["/data/new"]).assert_blocked();
    sandbox
        .probe("write-file", &["/data/existing"])
        .assert_blocked();
    assert!(!dir.join("new").exists());
    assert_eq!(fs::read_to_string(dir.join("existing")).unwrap(), "keep");
}

#[test]
fn exec_from_tmp_is_blocked() {
    blocked("exec-from", &["/tmp"]);
}

#[test]
fn exec_from_dev_shm_is_blocked() {
    blocked("exec-from", &["/dev/shm"]);
}

#[test]
fn masked_proc_files_read_empty() {
    for file in [
        "/proc/kcore",
        "/proc/keys",
        "/proc/timer_list",
        "/proc/sched_debug",
    ] {
        blocked("read-file", &[file]);
    }
}

#[test]
fn setuid_root_binaries_do_not_escalate() {
    let mut sandbox = Sandbox::new();
    let dir = sandbox.host_dir("suid");
    let binary = dir.join("nanoclaw");
    fs::copy(probe_binary(), &binary).unwrap();
    if fs::metadata(&binary).unwrap().uid() != 0 {
        eprintln!("skipped: only root can make a setuid-root binary");
        return;
    }
    fs::set_permissions(&binary, fs::Permissions::from_mode(0o4755)).unwrap();
    sandbox
        .mount(&dir, "/mnt")
        .probe("setuid-exec", &["/mnt/nanoclaw"])
        .assert_blocked();
}

// Network

#[test]
fn tcp_to_a_host_loopback_listener_is_blocked() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let probe = Sandbox::new().probe("tcp-connect", &[&address]);
    probe.assert_blocked();
    listener.set_nonblocking(true).unwrap();
    match listener.accept() {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        other => panic!(
            "the host listener on {address} accepted a connection: {other:?}\n{}",
            probe.run.context()
        ),
    }
}

#[test]
fn udp_to_a_host_loopback_socket_never_arrives() {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let address = socket.local_addr().unwrap().to_string();
    let probe = Sandbox::new().probe("udp-send", &[&address]);
    assert!(probe.report.is_some(), "{}", probe.run.context());
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut buf = [0u8; 1500];
    if let Ok((n, from)) = socket.recv_from(&mut buf) {
        panic!(
            "a datagram from the sandbox reached the host's {address}: {n} bytes from {from}\n{}",
            probe.run.context()
        );
    }
}

#[test]
fn dns_lookup_is_blocked() {
    blocked("dns-lookup", &["example.com"]);
}

#[test]
fn raw_sockets_are_blocked() {
    blocked("raw-socket", &[]);
}

#[test]
fn packet_sockets_are_blocked() {
    blocked("packet-socket", &[]);
}

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

#[test]
fn the_command_runs_unprivileged() {
    let probe = Sandbox::new().probe("whoami", &[]);
    probe.assert_blocked();
    for expected in [
        "uid=10001 ",
        "euid=10001 ",
        "CapEff=0000000000000000",
        "CapPrm=0000000000000000",
        "CapBnd=0000000000000000",
        "CapAmb=0000000000000000",
        "NoNewPrivs=1",
        "Seccomp=2",
    ] {
        assert!(
            probe.detail().contains(expected),
            "whoami lacks {expected:?}: {}",
            probe.detail()
        );
    }
}

#[test]
fn ptrace_of_init_is_blocked() {
    blocked("ptrace", &["1"]);
}

#[test]
fn process_vm_read_of_init_is_blocked() {
    blocked("process-vm-read", &["1"]);
}

#[test]
fn no_host_process_is_visible() {
    blocked("proc-pids", &[]);
}

#[test]
fn an_orphaned_grandchild_dies_with_the_run() {
    let token = unique_token("orphan");
    let probe = Sandbox::new().probe("orphan", &[&token]);
    assert!(probe.report.is_some(), "{}", probe.run.context());
    assert_no_process_with(&token, &probe.run.context());
}

// Kernel attack surface

#[test]
fn mount_is_blocked() {
    blocked("mount", &[]);
}

#[test]
fn user_namespaces_are_blocked() {
    blocked("userns", &[]);
}

#[test]
fn clone3_is_blocked() {
    let probe = Sandbox::new().probe("clone3", &[]);
    probe.assert_blocked();
    assert!(
        probe.detail().contains("os error 38"),
        "clone3 must fail with ENOSYS so libc falls back to clone: {}",
        probe.detail()
    );
}

#[test]
fn io_uring_is_blocked() {
    blocked("io-uring", &[]);
}

#[test]
fn bpf_is_blocked() {
    blocked("bpf", &[]);
}

#[test]
fn keyctl_is_blocked() {
    blocked("keyctl", &[]);
}

#[test]
fn perf_event_open_is_blocked() {
    blocked("perf-event", &[]);
}

#[test]
fn userfaultfd_is_blocked() {
    blocked("userfaultfd", &[]);
}

#[test]
fn kexec_is_blocked() {
    blocked("kexec", &[]);
}

#[test]
fn kernel_modules_are_blocked() {
    blocked("module", &[]);
}

#[test]
fn chroot_is_blocked() {
    blocked("chroot", &[]);
}

#[test]
fn pivot_root_is_blocked() {
    blocked("pivot-root", &[]);
}

#[test]
fn x32_syscalls_are_blocked() {
    blocked("syscall-x32", &[]);
}

#[test]
fn i386_syscalls_are_blocked() {
    blocked("syscall-i386", &[]);
}

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
fn heavy_memory_beyond_the_limit_is_oom_killed() {
    let _heavy = serialise_heavy();
    let mut sandbox = Sandbox::new();
    sandbox.limits(|l| l.memory_bytes = 64 << 20);
    let probe = sandbox.probe("memory-hog", &["512"]);
    let run = &probe.run;
    assert!(
        run.outcome().oom_killed,
        "not OOM-killed\n{}",
        run.context()
    );
    assert_eq!(run.code(), 137, "{}", run.context());
    assert!(!run.outcome().timed_out, "{}", run.context());
    assert!(
        run.wall < Duration::from_secs(30),
        "the OOM kill took {:?}",
        run.wall
    );
}

#[test]
fn heavy_a_fork_bomb_hits_the_pids_limit() {
    let _heavy = serialise_heavy();
    let mut sandbox = Sandbox::new();
    sandbox.limits(|l| l.pids = 32);
    let probe = sandbox.probe("fork-bomb", &["200"]);
    probe.assert_blocked();
    let outcome = probe.run.outcome();
    assert!(
        !outcome.timed_out && !outcome.oom_killed,
        "the run did not end normally\n{}",
        probe.run.context()
    );
}

#[test]
fn heavy_a_command_past_its_timeout_is_killed() {
    let _heavy = serialise_heavy();
    let run = Sandbox::new()
        .limits(|l| l.timeout = Duration::from_secs(1))
        .run(&["sleep", "30"]);
    assert!(run.outcome().timed_out, "not timed out\n{}", run.context());
    assert_eq!(run.code(), 124, "{}", run.context());
    assert!(
        run.wall < Duration::from_secs(10),
        "a 1 s timeout took {:?}",
        run.wall
    );
}

#[test]
fn heavy_an_orphan_dies_with_a_timed_out_run() {
    let _heavy = serialise_heavy();
    let token = unique_token("timeout-orphan");
    let script = format!("{PROBE} probe orphan {token}; {PROBE} probe sleep 30");
    let run = Sandbox::new()
        .limits(|l| l.timeout = Duration::from_secs(1))
        .run(&["sh", "-c", &script]);
    assert!(run.outcome().timed_out, "not timed out\n{}", run.context());
    assert_no_process_with(&token, &run.context());
}

#[test]
fn filling_tmp_beyond_its_size_is_blocked() {
    let mut sandbox = Sandbox::new();
    sandbox.spec.tmpfs[0].size_bytes = 8 << 20;
    sandbox
        .probe("disk-fill", &["/tmp/f", "64"])
        .assert_blocked();
}

#[test]
fn a_file_beyond_the_file_size_limit_is_blocked() {
    let mut sandbox = Sandbox::new();
    sandbox.limits(|l| l.file_size_bytes = 1 << 20);
    sandbox
        .probe("disk-fill", &["/tmp/f", "4"])
        .assert_blocked();
}

// What a sandbox must allow

#[test]
fn a_read_only_mount_is_readable() {
    let mut sandbox = Sandbox::new();
    let dir = sandbox.host_dir("data");
    fs::write(dir.join("hello.txt"), "hello from the host\n").unwrap();
    let run = sandbox
        .mount(&dir, "/data")
        .run(&["cat", "/data/hello.txt"]);
    assert_eq!(run.outcome().exit_code, Some(0), "{}", run.context());
    assert_eq!(run.stdout(), "hello from the host\n");
}

/// The native backend makes a writable mount noexec; the engine cannot, so the docker
/// backend refuses a writable mount rather than run weaker, and nothing starts.
#[test]
fn a_writable_mount_is_refused_because_it_cannot_be_noexec() {
    let mut sandbox = Sandbox::new();
    let dir = sandbox.writable_host_dir("work");
    let run = sandbox
        .mount_rw(&dir, "/work")
        .run(&["sh", "-c", "echo written > /work/out.txt"]);
    let error = run
        .result
        .as_ref()
        .expect_err("a writable mount must be refused");
    assert_eq!(error.exit_status(), 125, "{error}");
    assert!(error.to_string().contains("noexec"), "{error}");
    assert!(!dir.join("out.txt").exists());
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

/// The command sees the spec's environment and, from the engine, only HOSTNAME (the test
/// image sets no ENV of its own).
#[test]
fn the_environment_is_only_what_is_passed() {
    let secret = unique_token("host-secret");
    // Set in the test process (the caller's side): it must not reach the sandbox.
    std::env::set_var("NANOCLAW_TEST_HOST_SECRET", &secret);
    let mut sandbox = Sandbox::new();
    sandbox.spec.set_env("GREETING", "hello world");
    let run = sandbox.run(&["env"]);
    let mut vars: Vec<&str> = run.stdout().lines().collect();
    vars.sort_unstable();
    let path = format!("PATH={}", nanoclaw_spec::DEFAULT_PATH);
    let mut expected = vec![
        "GREETING=hello world",
        "HOME=/tmp",
        "HOSTNAME=nanoclaw",
        "LANG=C.UTF-8",
        path.as_str(),
    ];
    expected.sort_unstable();
    assert_eq!(vars, expected, "{}", run.context());
}

/// The command holds only stdin, stdout and stderr.
#[test]
fn no_descriptor_leaks_into_the_sandbox() {
    let run = Sandbox::new().run(&["ls", "/proc/self/fd"]);
    // ls's own descriptor for the directory it lists is the 3.
    assert_eq!(run.stdout(), "0\n1\n2\n3\n", "{}", run.context());
}
