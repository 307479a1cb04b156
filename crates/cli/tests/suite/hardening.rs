//! Kernel attack surface and drift between the backends: what a tool must not reach (host
//! sysfs, netlink beyond NETLINK_ROUTE, IP protocols whose modules load on demand, line
//! disciplines), what it still must (its own interfaces over NETLINK_ROUTE), and the names
//! an environment variable may have.

use std::fs;

use super::support::{backend_tests, nanoclaw_output, scratch_dir, Backend, Sandbox, RUNNER_ERROR};

backend_tests!(
    no_host_sysfs_is_visible,
    netlink_beyond_route_is_refused,
    netlink_route_lists_the_sandboxs_interfaces,
    ip_protocols_that_load_modules_are_refused,
    attaching_a_line_discipline_is_refused,
    an_env_name_that_forges_a_variable_is_refused,
);

#[track_caller]
fn blocked(backend: Backend, probe: &str, args: &[&str]) {
    Sandbox::new(backend).probe(probe, args).assert_blocked();
}

/// The host's sysfs shows its devices, network interfaces, cgroup tree and kernel state; a
/// native sandbox has no `/sys`, a Docker one an empty read-only tmpfs there.
fn no_host_sysfs_is_visible(backend: Backend) {
    for dir in ["/sys", "/sys/class/net", "/sys/kernel", "/sys/fs/cgroup"] {
        blocked(backend, "list-dir", &[dir]);
    }
    blocked(backend, "read-file", &["/sys/kernel/uevent_seqnum"]);
}

/// Audit, netfilter, xfrm, sock_diag, generic netlink and uevents are host-wide or root-only
/// kernel interfaces.
fn netlink_beyond_route_is_refused(backend: Backend) {
    blocked(backend, "netlink", &[]);
}

/// `getifaddrs` (glibc and musl) reads the interfaces over NETLINK_ROUTE, which stays allowed:
/// a sandbox without network sees its loopback device and nothing of the host's.
fn netlink_route_lists_the_sandboxs_interfaces(backend: Backend) {
    let mut sandbox = Sandbox::new(backend);
    let probe = sandbox.probe("interfaces", &[]);
    assert_eq!(probe.detail(), "interfaces: lo", "{}", probe.run.context());
}

/// SCTP, DCCP and UDP-Lite sockets make the kernel load their modules for the caller.
fn ip_protocols_that_load_modules_are_refused(backend: Backend) {
    blocked(backend, "ip-protocols", &[]);
}

fn attaching_a_line_discipline_is_refused(backend: Backend) {
    blocked(backend, "tiocsetd", &[]);
}

/// A newline in a name would read as a second variable wherever the environment is printed
/// or parsed; `=` splits differently in each consumer. Refused before any sandbox starts.
fn an_env_name_that_forges_a_variable_is_refused(backend: Backend) {
    for env in [
        "A\nLD_PRELOAD=/tmp/x.so",
        "A B=1",
        "=x",
        "1A=x",
        "A-B=x",
        "A\r=x",
    ] {
        let mut sandbox = Sandbox::new(backend);
        let exited = sandbox.options(["-e", env]).output(&["true"]);
        assert_eq!(exited.code(), RUNNER_ERROR, "{env:?}\n{}", exited.context());
        assert!(
            exited.stderr.contains("invalid --env"),
            "{}",
            exited.context()
        );
    }
    let mut sandbox = Sandbox::new(backend);
    let exited = sandbox.options(["-e", "A_1=x=y\nz"]).output(&["env"]);
    assert_eq!(exited.code(), 0, "{}", exited.context());
    assert!(exited.stdout.contains("A_1=x=y\nz"), "{}", exited.context());
}

/// The lint refuses a tool whose fixed environment hands it to a file (`loader-env`) and a
/// tool that runs as a host account (`host-user`); `run` starts no sandbox for either.
#[test]
fn loader_variables_and_host_accounts_fail_the_policy() {
    let dir = scratch_dir();
    let nobody = "user = \"65534:65534\"";
    for (rule, line) in [
        ("loader-env", "env = { LD_PRELOAD = \"/work/x.so\" }"),
        ("loader-env", "env = { BASH_ENV = \"/work/.bashrc\" }"),
        ("loader-env", "env = { GIT_CONFIG_COUNT = \"1\" }"),
        ("host-user", nobody),
    ] {
        let path = dir.path().join("tools.toml");
        let policy = format!("[tools.t]\ndescription = \"d\"\ncommand = [\"true\"]\n{line}\n");
        fs::write(&path, policy).unwrap();
        let path = path.display().to_string();
        let check = nanoclaw_output(&["policy", "check", &path]);
        assert_eq!(check.code(), 1, "{line}\n{}", check.context());
        assert!(
            check.stdout.contains(&format!("error[{rule}]")),
            "{line}\n{}",
            check.context()
        );
        let run = nanoclaw_output(&["run", "--policy", &path, "--tool", "t"]);
        assert_eq!(run.code(), RUNNER_ERROR, "{line}\n{}", run.context());
    }
}
