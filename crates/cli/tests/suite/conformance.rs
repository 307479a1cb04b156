//! The conformance suite: escape attempts (`nanoclaw probe`) run inside a sandbox with the
//! strict defaults, each of which must fail, the limits that must stop a runaway command,
//! and what a sandbox must still allow. Every backend runs every test here and must give
//! the same results; a failing test names the probe, what it found, and the sandbox's
//! stderr.

use std::fs;
use std::io::ErrorKind;
use std::net::{TcpListener, UdpSocket};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::time::Duration;

use super::support::{
    assert_no_process_with, backend_tests, expected_host_owner, give_to_sandbox_user,
    serialise_heavy, unique_token, Backend, Report, Sandbox,
};

backend_tests!(
    // Files and mounts
    reading_etc_shadow_is_blocked,
    listing_root_home_is_blocked,
    listing_home_is_blocked,
    writing_to_the_root_is_blocked,
    writing_to_usr_is_blocked,
    writing_to_etc_is_blocked,
    writing_to_a_read_only_mount_is_blocked,
    exec_from_tmp_is_blocked,
    exec_from_dev_shm_is_blocked,
    exec_from_a_writable_mount_is_blocked,
    exec_from_memfd_is_blocked,
    masked_proc_files_read_empty,
    the_inits_environment_and_memory_are_unreadable,
    setuid_root_binaries_do_not_escalate,
    // Network
    tcp_to_a_host_loopback_listener_is_blocked,
    udp_to_a_host_loopback_socket_never_arrives,
    udp_to_a_remote_address_is_blocked,
    dns_lookup_is_blocked,
    raw_sockets_are_blocked,
    packet_sockets_are_blocked,
    // Processes and identity
    the_command_runs_unprivileged,
    ptrace_of_init_is_blocked,
    process_vm_read_of_init_is_blocked,
    no_host_process_is_visible,
    an_orphaned_grandchild_dies_with_the_run,
    // Kernel attack surface
    mount_is_blocked,
    user_namespaces_are_blocked,
    clone3_is_blocked,
    io_uring_is_blocked,
    bpf_is_blocked,
    keyctl_is_blocked,
    perf_event_open_is_blocked,
    userfaultfd_is_blocked,
    kexec_is_blocked,
    kernel_modules_are_blocked,
    chroot_is_blocked,
    pivot_root_is_blocked,
    x32_syscalls_are_blocked,
    i386_syscalls_are_blocked,
    tiocsti_is_blocked,
    tiocsti_on_the_callers_terminal_is_blocked,
    tioclinux_is_blocked,
    // Limits
    heavy_memory_beyond_the_limit_is_oom_killed,
    heavy_a_child_killed_for_memory_does_not_pass_for_the_command,
    heavy_a_fork_bomb_hits_the_pids_limit,
    heavy_a_command_past_its_timeout_is_killed,
    heavy_cpu_use_is_held_to_the_quota,
    heavy_an_orphan_dies_with_a_timed_out_run,
    filling_tmp_beyond_its_size_is_blocked,
    // What a sandbox must allow
    a_read_only_mount_is_readable,
    a_writable_mount_is_writable_and_files_belong_to_the_sandbox_user,
    git_metadata_in_a_writable_mount_stays_read_only,
    the_workdir_option_sets_the_working_directory,
    the_environment_is_only_what_is_passed,
    no_descriptor_leaks_into_the_sandbox,
);

#[track_caller]
fn blocked(backend: Backend, probe: &str, args: &[&str]) {
    Sandbox::new(backend).probe(probe, args).assert_blocked();
}

// Files and mounts

fn reading_etc_shadow_is_blocked(backend: Backend) {
    blocked(backend, "read-file", &["/etc/shadow"]);
}

fn listing_root_home_is_blocked(backend: Backend) {
    blocked(backend, "list-dir", &["/root"]);
}

fn listing_home_is_blocked(backend: Backend) {
    blocked(backend, "list-dir", &["/home"]);
}

fn writing_to_the_root_is_blocked(backend: Backend) {
    blocked(backend, "write-file", &["/nanoclaw-escape"]);
}

fn writing_to_usr_is_blocked(backend: Backend) {
    blocked(backend, "write-file", &["/usr/nanoclaw-escape"]);
    blocked(backend, "write-file", &["/usr/bin/nanoclaw-escape"]);
}

fn writing_to_etc_is_blocked(backend: Backend) {
    blocked(backend, "write-file", &["/etc/nanoclaw-escape"]);
    blocked(backend, "write-file", &["/etc/passwd"]);
}

fn writing_to_a_read_only_mount_is_blocked(backend: Backend) {
    let mut sandbox = Sandbox::new(backend);
    // Writable by the sandbox user on the host: only the mount can refuse.
    let dir = sandbox.writable_host_dir("data");
    fs::write(dir.join("existing"), "keep").unwrap();
    give_to_sandbox_user(&dir);
    sandbox.mount(&dir, "/data");
    sandbox.probe("write-file", &["/data/new"]).assert_blocked();
    sandbox
        .probe("write-file", &["/data/existing"])
        .assert_blocked();
    assert!(!dir.join("new").exists());
    assert_eq!(fs::read_to_string(dir.join("existing")).unwrap(), "keep");
}

fn exec_from_tmp_is_blocked(backend: Backend) {
    blocked(backend, "exec-from", &["/tmp"]);
}

fn exec_from_dev_shm_is_blocked(backend: Backend) {
    blocked(backend, "exec-from", &["/dev/shm"]);
}

fn exec_from_a_writable_mount_is_blocked(backend: Backend) {
    let mut sandbox = Sandbox::new(backend);
    let dir = sandbox.writable_host_dir("work");
    sandbox
        .mount_rw(&dir, "/work")
        .probe("exec-from", &["/work"])
        .assert_blocked();
}

/// A program written into an anonymous memory file and executed from there never touches
/// a noexec mount.
fn exec_from_memfd_is_blocked(backend: Backend) {
    blocked(backend, "memfd-exec", &[]);
}

/// Every entry of the one list both backends mask (`nanoclaw_spec::proc_masks`).
fn masked_proc_files_read_empty(backend: Backend) {
    use nanoclaw_spec::proc_masks;
    // Checked whether or not the host has them: a sandbox must not show one either way.
    for file in proc_masks::absolute(proc_masks::MASKED_FILES) {
        blocked(backend, "read-file", &[&file]);
    }
    for dir in proc_masks::absolute(proc_masks::MASKED_DIRS) {
        blocked(backend, "list-dir", &[&dir]);
    }
}

/// The sandbox's init runs as the same user as the command: its /proc entries still hold
/// what it was started with (an engine's environment, bubblewrap #725), unless it made
/// itself undumpable. (Its cmdline stays readable, as every process's does: no init puts a
/// secret there.)
fn the_inits_environment_and_memory_are_unreadable(backend: Backend) {
    for file in ["/proc/1/environ", "/proc/1/mem"] {
        blocked(backend, "read-file", &[file]);
    }
}

fn setuid_root_binaries_do_not_escalate(backend: Backend) {
    let mut sandbox = Sandbox::new(backend);
    let dir = sandbox.host_dir("suid");
    let binary = dir.join("nanoclaw");
    fs::copy(sandbox.probe_binary(), &binary).unwrap();
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

fn tcp_to_a_host_loopback_listener_is_blocked(backend: Backend) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let probe = Sandbox::new(backend).probe("tcp-connect", &[&address]);
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

/// A datagram to 127.0.0.1 is sent without error (the sandbox has its own loopback), so the
/// proof is on the host side: nothing arrives.
fn udp_to_a_host_loopback_socket_never_arrives(backend: Backend) {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let address = socket.local_addr().unwrap().to_string();
    let probe = Sandbox::new(backend).probe("udp-send", &[&address]);
    probe.report();
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

fn udp_to_a_remote_address_is_blocked(backend: Backend) {
    blocked(backend, "udp-send", &["10.255.255.1:9"]);
    blocked(backend, "udp-send", &["1.1.1.1:53"]);
}

fn dns_lookup_is_blocked(backend: Backend) {
    blocked(backend, "dns-lookup", &["example.com"]);
}

fn raw_sockets_are_blocked(backend: Backend) {
    blocked(backend, "raw-socket", &[]);
}

fn packet_sockets_are_blocked(backend: Backend) {
    blocked(backend, "packet-socket", &[]);
}

// Processes and identity

fn the_command_runs_unprivileged(backend: Backend) {
    let probe = Sandbox::new(backend).probe("whoami", &[]);
    probe.assert_blocked();
    for expected in [
        "uid=10001 ",
        "euid=10001 ",
        "CapEff=0000000000000000",
        "CapPrm=0000000000000000",
        "CapBnd=0000000000000000",
        "CapAmb=0000000000000000",
        "NoNewPrivs=1",
    ] {
        assert!(
            probe.detail().contains(expected),
            "whoami lacks {expected:?}: {}",
            probe.detail()
        );
    }
}

fn ptrace_of_init_is_blocked(backend: Backend) {
    blocked(backend, "ptrace", &["1"]);
}

fn process_vm_read_of_init_is_blocked(backend: Backend) {
    blocked(backend, "process-vm-read", &["1"]);
}

fn no_host_process_is_visible(backend: Backend) {
    blocked(backend, "proc-pids", &[]);
}

fn an_orphaned_grandchild_dies_with_the_run(backend: Backend) {
    let token = unique_token("orphan");
    let probe = Sandbox::new(backend).probe("orphan", &[&token]);
    probe.report();
    assert_no_process_with(&token, &probe.run.context());
}

// Kernel attack surface

fn mount_is_blocked(backend: Backend) {
    blocked(backend, "mount", &[]);
}

fn user_namespaces_are_blocked(backend: Backend) {
    blocked(backend, "userns", &[]);
}

fn clone3_is_blocked(backend: Backend) {
    blocked(backend, "clone3", &[]);
}

fn io_uring_is_blocked(backend: Backend) {
    blocked(backend, "io-uring", &[]);
}

fn bpf_is_blocked(backend: Backend) {
    blocked(backend, "bpf", &[]);
}

fn keyctl_is_blocked(backend: Backend) {
    blocked(backend, "keyctl", &[]);
}

fn perf_event_open_is_blocked(backend: Backend) {
    blocked(backend, "perf-event", &[]);
}

fn userfaultfd_is_blocked(backend: Backend) {
    blocked(backend, "userfaultfd", &[]);
}

fn kexec_is_blocked(backend: Backend) {
    blocked(backend, "kexec", &[]);
}

fn kernel_modules_are_blocked(backend: Backend) {
    blocked(backend, "module", &[]);
}

fn chroot_is_blocked(backend: Backend) {
    blocked(backend, "chroot", &[]);
}

fn pivot_root_is_blocked(backend: Backend) {
    blocked(backend, "pivot-root", &[]);
}

fn x32_syscalls_are_blocked(backend: Backend) {
    blocked(backend, "syscall-x32", &[]);
}

fn i386_syscalls_are_blocked(backend: Backend) {
    blocked(backend, "syscall-i386", &[]);
}

fn tiocsti_is_blocked(backend: Backend) {
    blocked(backend, "tiocsti", &[]);
}

/// The real attack: nanoclaw started from an interactive terminal, output streaming
/// through, so the sandboxed command holds the caller's terminal as stdin, stdout and
/// stderr.
fn tiocsti_on_the_callers_terminal_is_blocked(backend: Backend) {
    let mut sandbox = Sandbox::new(backend);
    sandbox.option("--stdin").with_probe();
    let exited = sandbox.output_on_a_terminal(&[sandbox.probe_path(), "probe", "tiocsti"]);
    let report: Report = exited
        .stdout
        .lines()
        .find_map(|line| serde_json::from_str(line.trim()).ok())
        .unwrap_or_else(|| panic!("no tiocsti report on the terminal\n{}", exited.context()));
    assert!(
        report.blocked && exited.code() == 0,
        "NOT BLOCKED: TIOCSTI on the caller's terminal: {}\n{}",
        report.detail,
        exited.context()
    );
}

fn tioclinux_is_blocked(backend: Backend) {
    blocked(backend, "tioclinux", &[]);
}

// Limits

fn heavy_memory_beyond_the_limit_is_oom_killed(backend: Backend) {
    let _heavy = serialise_heavy();
    let mut sandbox = Sandbox::new(backend);
    sandbox.options(["--memory", "64m"]);
    let probe = sandbox.probe("memory-hog", &["512"]);
    let run = &probe.run;
    assert!(run.outcome.oom_killed, "not OOM-killed\n{}", run.context());
    assert_eq!(run.code(), 137, "{}", run.context());
    assert!(!run.outcome.timed_out, "{}", run.context());
    assert!(
        run.exited.wall < Duration::from_secs(30),
        "the OOM kill took {:?}",
        run.exited.wall
    );
}

/// The command sacrifices a child to the OOM killer and exits 0: the outcome is the
/// command's own (0), never "killed: out of memory", which the command could otherwise
/// make its result say at will.
fn heavy_a_child_killed_for_memory_does_not_pass_for_the_command(backend: Backend) {
    let _heavy = serialise_heavy();
    let mut sandbox = Sandbox::new(backend);
    sandbox.options(["--memory", "64m"]).with_probe();
    let hog = format!(
        "{} probe memory-hog 512 >/dev/null; echo survived",
        sandbox.probe_path()
    );
    let run = sandbox.run(&["sh", "-c", &hog]);
    assert!(run.outcome.stdout.contains("survived"), "{}", run.context());
    assert!(
        !run.outcome.oom_killed,
        "a child's OOM kill passed for the command's\n{}",
        run.context()
    );
    assert_eq!(run.code(), 0, "{}", run.context());
}

fn heavy_a_fork_bomb_hits_the_pids_limit(backend: Backend) {
    let _heavy = serialise_heavy();
    let mut sandbox = Sandbox::new(backend);
    sandbox.options(["--pids-limit", "32"]);
    let probe = sandbox.probe("fork-bomb", &["200"]);
    probe.assert_blocked();
    let outcome = &probe.run.outcome;
    assert!(
        !outcome.timed_out && !outcome.oom_killed && probe.run.code() == 0,
        "the run did not end normally\n{}",
        probe.run.context()
    );
}

fn heavy_a_command_past_its_timeout_is_killed(backend: Backend) {
    let _heavy = serialise_heavy();
    let run = Sandbox::new(backend)
        .options(["--timeout", "1s"])
        .run(&["sleep", "30"]);
    assert!(run.outcome.timed_out, "not timed out\n{}", run.context());
    assert_eq!(run.code(), 124, "{}", run.context());
    assert!(
        run.exited.wall < Duration::from_secs(10),
        "a 1 s timeout took {:?}",
        run.exited.wall
    );
}

fn heavy_cpu_use_is_held_to_the_quota(backend: Backend) {
    let _heavy = serialise_heavy();
    let mut sandbox = Sandbox::new(backend);
    sandbox.options(["--cpus", "0.5"]);
    let probe = sandbox.probe("spin", &["2"]);
    probe.report();
    let cpu_ms = probe.run.outcome.usage.cpu_ms;
    // 0.5 CPU for 2 s is 1000 ms; a CFS period of burst and start-up make up the slack.
    assert!(
        (100..=1300).contains(&cpu_ms),
        "spinning 2 s at --cpus 0.5 used {cpu_ms} ms of CPU (expected at most 1300)\n{}",
        probe.run.context()
    );
}

fn heavy_an_orphan_dies_with_a_timed_out_run(backend: Backend) {
    let _heavy = serialise_heavy();
    let token = unique_token("timeout-orphan");
    let mut sandbox = Sandbox::new(backend);
    sandbox.with_probe().options(["--timeout", "1s"]);
    let script = format!(
        "{0} probe orphan {token}; {0} probe sleep 30",
        sandbox.probe_path()
    );
    let run = sandbox.run(&["sh", "-c", &script]);
    assert!(run.outcome.timed_out, "not timed out\n{}", run.context());
    assert_no_process_with(&token, &run.context());
}

fn filling_tmp_beyond_its_size_is_blocked(backend: Backend) {
    Sandbox::new(backend)
        .options(["--tmpfs", "/tmp:size=8m"])
        .probe("disk-fill", &["/tmp/f", "64"])
        .assert_blocked();
}

// What a sandbox must allow

fn a_read_only_mount_is_readable(backend: Backend) {
    let mut sandbox = Sandbox::new(backend);
    let dir = sandbox.host_dir("data");
    fs::write(dir.join("hello.txt"), "hello from the host\n").unwrap();
    let run = sandbox
        .mount(&dir, "/data")
        .run(&["cat", "/data/hello.txt"]);
    assert_eq!(run.outcome.exit_code, Some(0), "{}", run.context());
    assert_eq!(run.outcome.stdout, "hello from the host\n");
}

fn a_writable_mount_is_writable_and_files_belong_to_the_sandbox_user(backend: Backend) {
    let mut sandbox = Sandbox::new(backend);
    let dir = sandbox.writable_host_dir("work");
    let run = sandbox
        .mount_rw(&dir, "/work")
        .run(&["sh", "-c", "echo written > /work/out.txt"]);
    assert_eq!(run.outcome.exit_code, Some(0), "{}", run.context());
    let file = dir.join("out.txt");
    assert_eq!(fs::read_to_string(&file).unwrap(), "written\n");
    let owner = fs::metadata(&file).unwrap().uid();
    assert_ne!(owner, 0, "a file the sandbox wrote belongs to host root");
    assert_eq!(owner, expected_host_owner());
}

/// A writable repository must not let a tool plant hooks or config that git runs later on
/// the host. The host side would allow the writes, so only the sandbox can refuse them.
fn git_metadata_in_a_writable_mount_stays_read_only(backend: Backend) {
    let mut sandbox = Sandbox::new(backend);
    let repo = sandbox.host_dir("repo");
    fs::create_dir_all(repo.join(".git/hooks")).unwrap();
    fs::write(repo.join(".git/config"), "[core]\n").unwrap();
    give_to_sandbox_user(&repo);
    let script = "echo planted > /work/.git/hooks/post-checkout
echo '[core] fsmonitor = evil' >> /work/.git/config
echo edited > /work/README";
    let run = sandbox.mount_rw(&repo, "/work").run(&["sh", "-c", script]);
    assert!(
        !repo.join(".git/hooks/post-checkout").exists(),
        "a hook was planted in .git\n{}",
        run.context()
    );
    assert_eq!(
        fs::read_to_string(repo.join(".git/config")).unwrap(),
        "[core]\n",
        ".git/config was changed\n{}",
        run.context()
    );
    assert_eq!(
        fs::read_to_string(repo.join("README")).unwrap_or_default(),
        "edited\n",
        "the rest of the writable mount must stay writable\n{}",
        run.context()
    );
}

fn the_workdir_option_sets_the_working_directory(backend: Backend) {
    let mut sandbox = Sandbox::new(backend);
    let dir = sandbox.host_dir("project");
    let run = sandbox
        .mount(&dir, "/project")
        .options(["--workdir", "/project"])
        .run(&["pwd"]);
    assert_eq!(run.outcome.stdout, "/project\n", "{}", run.context());
}

fn the_environment_is_only_what_is_passed(backend: Backend) {
    let secret = unique_token("host-secret");
    let run = Sandbox::new(backend)
        .host_env("NANOCLAW_TEST_HOST_SECRET", &secret)
        .options(["--env", "GREETING=hello world"])
        .run(&["env"]);
    let env = &run.outcome.stdout;
    let vars: Vec<&str> = env.lines().collect();
    assert!(vars.contains(&"GREETING=hello world"), "{env}");
    assert!(vars.contains(&"HOME=/tmp"), "{env}");
    assert!(
        vars.iter()
            .any(|v| v.starts_with("PATH=") && v.contains("/usr/bin")),
        "{env}"
    );
    assert!(
        !env.contains("NANOCLAW_TEST_HOST_SECRET") && !env.contains(&secret),
        "the host environment leaked into the sandbox:\n{env}"
    );
    assert!(
        !env.contains("NANOCLAW_AUDIT"),
        "nanoclaw's own environment leaked into the sandbox:\n{env}"
    );
}

/// The command holds only stdin, stdout and stderr: no descriptor of the runner (pipes,
/// cgroup files, the audit log) reaches it.
fn no_descriptor_leaks_into_the_sandbox(backend: Backend) {
    let probe = Sandbox::new(backend).probe("open-fds", &[]);
    probe.assert_blocked();
    assert!(
        probe.detail().starts_with("0 -> "),
        "the command has no stdin: {}",
        probe.detail()
    );
}
