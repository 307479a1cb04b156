//! The container a spec becomes: `SandboxSpec` to the Engine API's create body, one field to
//! one setting, with the strict defaults of DESIGN.md and nothing left to the engine's
//! defaults where those are looser.
//!
//! This module must never loosen a spec: whatever the spec does not grant (capabilities,
//! host namespaces, network, devices, writable paths) the container does not get. What the
//! engine really applied is checked afterwards from container inspect (`enforced`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use bollard::models::{
    ContainerCreateBody, HostConfig, HostConfigCgroupnsModeEnum, HostConfigLogConfig, Mount,
    MountBindOptions, MountBindOptionsPropagationEnum, MountType, ResourcesUlimits,
};
use nanoclaw_spec::{check_sandbox_path, BackendError, EgressProxy, Network, Root, SandboxSpec};

use crate::seccomp;

/// The smallest memory limit the engine accepts (Docker refuses less than 6 MiB).
const MIN_MEMORY_BYTES: u64 = 6 << 20;
/// The hostname inside every sandbox, as the native backend sets it.
pub const HOSTNAME: &str = "nanoclaw";
/// `SecurityOpt` entry that sets `no_new_privs` for every process of the container.
pub const NO_NEW_PRIVILEGES: &str = "no-new-privileges";

fn invalid(message: impl Into<String>) -> BackendError {
    BackendError::Invalid(message.into())
}

/// The image reference of a spec; the docker backend runs images only.
pub fn image_reference(spec: &SandboxSpec) -> Result<&str, BackendError> {
    match &spec.root {
        Root::Image(reference) => Ok(reference),
        Root::Host => Err(invalid(
            "the docker backend needs an image (--image NAME@sha256:… or a local image ID \
             sha256:…); the host root is for the native backend",
        )),
        Root::Rootfs(dir) => Err(invalid(format!(
            "the docker backend needs an image, not the rootfs directory {} (build or import \
             it as an image, or use the native backend)",
            dir.display()
        ))),
    }
}

/// Refuses specs this backend cannot run as written, with the same rules as the native
/// backend where they overlap.
pub fn validate(spec: &SandboxSpec, bridge: Option<&Path>) -> Result<(), BackendError> {
    if spec.command.is_empty() {
        return Err(invalid("no command given"));
    }
    image_reference(spec)?;
    check_sandbox_path("workdir", &spec.workdir)?;
    match (&spec.network, &spec.egress_proxy, bridge) {
        (Network::None, None, _) => {}
        (Network::Egress(_), Some(proxy), Some(bridge)) => {
            check_sandbox_path("egress proxy socket", &proxy.socket)?;
            check_sandbox_path("egress bridge binary", bridge)?;
        }
        (Network::Egress(_), Some(_), None) => {
            return Err(BackendError::LayerUnavailable {
                layer: "egress (a network allow list)".into(),
                reason: "a container reaches the proxy through nanoclaw's own bridge, which \
                         must be a static binary to run inside any image; this nanoclaw is \
                         not static (build it with --target x86_64-unknown-linux-musl)"
                    .into(),
            })
        }
        (Network::Egress(_), None, _) => {
            return Err(invalid(
                "a sandbox with egress needs its host proxy (the runner starts it)",
            ))
        }
        (Network::None, Some(_), _) => {
            return Err(invalid(
                "an egress proxy was given for a sandbox without egress",
            ))
        }
    }
    if let Some(mount) = spec.mounts.iter().find(|m| m.writable) {
        // Under the native backend a writable mount is noexec (and Landlock refuses to
        // execute there): a tool cannot drop a binary and run it. The Engine API cannot
        // mount a bind noexec, so rather than run weaker, the docker backend refuses.
        return Err(BackendError::LayerUnavailable {
            layer: format!("a noexec writable mount at {}", mount.dst.display()),
            reason: "the Docker Engine API cannot make a bind mount noexec, so what a tool \
                     writes there could be executed; mount it read-only, or use the native \
                     backend"
                .into(),
        });
    }
    spec.syscalls.check()?;
    for (key, value) in &spec.env {
        if key.is_empty() || key.contains('=') || key.contains('\0') || value.contains('\0') {
            return Err(invalid(format!("invalid environment variable {key:?}")));
        }
    }
    spec.check_mounts()?;
    let limits = &spec.limits;
    if limits.memory_bytes < MIN_MEMORY_BYTES {
        return Err(invalid(format!(
            "memory limit {} bytes is too small for the docker backend (minimum 6m)",
            limits.memory_bytes
        )));
    }
    if limits.pids < 2 {
        return Err(invalid(
            "pids limit must be at least 2 (the sandbox init and the command)",
        ));
    }
    if limits.cpu_millis < 10 {
        return Err(invalid("cpu limit must be at least 0.01 CPU"));
    }
    Ok(())
}

/// A host path resolved once for the engine: never a symlink itself, and passed on in
/// canonical form so the engine resolves no link on the way.
fn mount_source(path: &Path) -> Result<PathBuf, BackendError> {
    let what = |e| BackendError::io(format!("mount source {}", path.display()), e);
    let meta = std::fs::symlink_metadata(path).map_err(what)?;
    if meta.file_type().is_symlink() {
        return Err(invalid(format!(
            "mount source {} is a symlink; name its target instead",
            path.display()
        )));
    }
    std::fs::canonicalize(path).map_err(what)
}

fn bind(src: &Path, dst: &Path, read_only: bool) -> Result<Mount, BackendError> {
    let str_of = |p: &Path| {
        p.to_str()
            .map(String::from)
            .ok_or_else(|| invalid(format!("mount path {} is not UTF-8", p.display())))
    };
    Ok(Mount {
        target: Some(str_of(dst)?),
        source: Some(str_of(src)?),
        typ: Some(MountType::BIND),
        read_only: Some(read_only),
        bind_options: Some(MountBindOptions {
            propagation: Some(MountBindOptionsPropagationEnum::RPRIVATE),
            // Only the source mount itself, as the native backend binds: mounts below it on
            // the host stay out, so none of them can stay writable under a read-only bind.
            non_recursive: Some(true),
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// The bind mounts of a spec: each read-only unless writable, and a writable one's `.git`
/// bound read-only over itself, so hooks and config that git runs later on the host cannot
/// be planted from inside.
pub fn binds(spec: &SandboxSpec) -> Result<Vec<Mount>, BackendError> {
    let mut mounts = Vec::new();
    for mount in &spec.mounts {
        let src = mount_source(&mount.src)?;
        mounts.push(bind(&src, &mount.dst, !mount.writable)?);
        let git = src.join(".git");
        if mount.writable && std::fs::symlink_metadata(&git).is_ok() {
            mounts.push(bind(&mount_source(&git)?, &mount.dst.join(".git"), true)?);
        }
    }
    Ok(mounts)
}

/// `HostConfig.Tmpfs`: every tmpfs noexec, nosuid, nodev, sized, world-writable with the
/// sticky bit (as the native backend mounts them).
pub fn tmpfs(spec: &SandboxSpec) -> HashMap<String, String> {
    spec.tmpfs
        .iter()
        .map(|t| {
            (
                t.dst.to_string_lossy().into_owned(),
                format!("rw,noexec,nosuid,nodev,size={},mode=1777", t.size_bytes),
            )
        })
        .collect()
}

fn ulimit(name: &str, value: u64) -> ResourcesUlimits {
    let value = i64::try_from(value).unwrap_or(i64::MAX);
    ResourcesUlimits {
        name: Some(name.into()),
        soft: Some(value),
        hard: Some(value),
    }
}

fn to_i64(what: &str, value: u64) -> Result<i64, BackendError> {
    i64::try_from(value).map_err(|_| invalid(format!("{what} {value} is out of range")))
}

/// The `HostConfig` of a spec.
pub fn host_config(spec: &SandboxSpec) -> Result<HostConfig, BackendError> {
    let limits = &spec.limits;
    let memory = to_i64("memory limit", limits.memory_bytes)?;
    Ok(HostConfig {
        readonly_rootfs: Some(true),
        cap_drop: Some(vec!["ALL".into()]),
        cap_add: None,
        security_opt: Some(vec![
            NO_NEW_PRIVILEGES.into(),
            format!("seccomp={}", seccomp::profile_json()),
        ]),
        privileged: Some(false),
        init: Some(true),
        pids_limit: Some(i64::from(limits.pids)),
        memory: Some(memory),
        // Equal to the memory limit: no swap on top of it.
        memory_swap: Some(memory),
        nano_cpus: Some(i64::from(limits.cpu_millis) * 1_000_000),
        network_mode: Some("none".into()),
        ipc_mode: Some("private".into()),
        cgroupns_mode: Some(HostConfigCgroupnsModeEnum::PRIVATE),
        tmpfs: Some(tmpfs(spec)),
        mounts: Some(binds(spec)?),
        ulimits: Some(vec![
            ulimit("core", 0),
            ulimit("nofile", limits.open_files),
            ulimit("fsize", limits.file_size_bytes),
        ]),
        // The engine would otherwise keep every byte the command writes in a log file on the
        // host, with no bound: output is read through the attach stream only.
        log_config: Some(HostConfigLogConfig {
            typ: Some("none".into()),
            config: None,
        }),
        auto_remove: Some(false),
        ..Default::default()
    })
}

/// Where a container with egress finds the bridge binary.
const BRIDGE_INSIDE: &str = "/.nanoclaw/nanoclaw";

/// The create body: the image by ID, the command as the whole argv, exactly the spec's
/// environment, the sandbox user, and the labels the reaper finds it by.
pub fn container_body(
    spec: &SandboxSpec,
    image_id: &str,
    labels: HashMap<String, String>,
    stdin: bool,
    bridge: Option<&Path>,
) -> Result<ContainerCreateBody, BackendError> {
    let mut host_config = host_config(spec)?;
    let mut entrypoint = spec.command.clone();
    if let (Some(proxy), Some(bridge)) = (&spec.egress_proxy, bridge) {
        // The container still has no network but loopback: its one way out is the proxy's
        // socket, which nanoclaw's own bridge (read-only, in front of the command) serves on
        // 127.0.0.1:PORT, as in a native sandbox.
        let mounts = host_config.mounts.get_or_insert_with(Vec::new);
        mounts.push(bind(
            &mount_source(&proxy.socket)?,
            Path::new(EgressProxy::SOCKET_INSIDE),
            true,
        )?);
        mounts.push(bind(
            &mount_source(bridge)?,
            Path::new(BRIDGE_INSIDE),
            true,
        )?);
        entrypoint = [
            BRIDGE_INSIDE.to_string(),
            nanoclaw_native::BRIDGE_ARG.to_string(),
            proxy.port.to_string(),
            EgressProxy::SOCKET_INSIDE.to_string(),
        ]
        .into_iter()
        .chain(spec.command.iter().cloned())
        .collect();
    }
    Ok(ContainerCreateBody {
        image: Some(image_id.into()),
        // The entrypoint replaces the image's, and an empty Cmd drops the image's default
        // arguments: argv is exactly the spec's command (behind the bridge with egress).
        entrypoint: Some(entrypoint),
        cmd: Some(Vec::new()),
        user: Some(format!("{}:{}", spec.user.uid, spec.user.gid)),
        env: Some(spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
        working_dir: Some(spec.workdir.to_string_lossy().into_owned()),
        hostname: Some(HOSTNAME.into()),
        labels: Some(labels),
        tty: Some(false),
        attach_stdin: Some(stdin),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        open_stdin: Some(stdin),
        stdin_once: Some(stdin),
        host_config: Some(host_config),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use nanoclaw_spec::{EgressRule, Mount as SpecMount, Tmpfs};

    fn spec() -> SandboxSpec {
        let mut spec = SandboxSpec::new(vec!["id".into()]);
        spec.root = Root::Image(format!("sha256:{}", "a".repeat(64)));
        spec
    }

    #[test]
    fn strict_defaults_map_one_to_one() -> Result<(), BackendError> {
        let host = host_config(&spec())?;
        assert_eq!(host.readonly_rootfs, Some(true));
        assert_eq!(host.cap_drop, Some(vec!["ALL".to_string()]));
        assert_eq!(host.cap_add, None);
        assert_eq!(host.privileged, Some(false));
        assert_eq!(host.init, Some(true));
        assert_eq!(host.pids_limit, Some(256));
        assert_eq!(host.memory, Some(512 << 20));
        assert_eq!(host.memory_swap, Some(512 << 20));
        assert_eq!(host.nano_cpus, Some(500_000_000));
        assert_eq!(host.network_mode.as_deref(), Some("none"));
        assert_eq!(host.pid_mode, None);
        assert_eq!(host.uts_mode, None);
        assert_eq!(host.userns_mode, None);
        let security = host.security_opt.unwrap_or_default();
        assert_eq!(security[0], "no-new-privileges");
        assert!(security[1].starts_with("seccomp={"));
        assert_eq!(
            host.tmpfs.unwrap_or_default()["/tmp"],
            format!("rw,noexec,nosuid,nodev,size={},mode=1777", 64 << 20)
        );
        let ulimits = host.ulimits.unwrap_or_default();
        let core = ulimits.iter().find(|u| u.name.as_deref() == Some("core"));
        assert_eq!(core.and_then(|u| u.hard), Some(0));
        assert_eq!(host.masked_paths, None, "Docker's masked paths stay");
        Ok(())
    }

    #[test]
    fn the_command_is_the_whole_argv_and_the_env_is_exact() -> Result<(), BackendError> {
        let mut spec = spec();
        spec.command = vec!["sh".into(), "-c".into(), "echo $A".into()];
        spec.set_env("A", "x=y");
        let body = container_body(&spec, "sha256:x", HashMap::new(), false, None)?;
        assert_eq!(body.entrypoint, Some(spec.command.clone()));
        assert_eq!(body.cmd, Some(vec![]));
        assert_eq!(body.user.as_deref(), Some("10001:10001"));
        let env = body.env.unwrap_or_default();
        assert_eq!(env.len(), 4);
        assert_eq!(env[3], "A=x=y");
        assert_eq!(body.open_stdin, Some(false));
        Ok(())
    }

    #[test]
    fn a_writable_mount_keeps_its_git_read_only() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        std::fs::create_dir(dir.path().join(".git"))?;
        let mut spec = spec();
        spec.mounts.push(SpecMount {
            src: dir.path().into(),
            dst: "/work".into(),
            writable: true,
        });
        let mounts = binds(&spec)?;
        assert_eq!(mounts.len(), 2);
        assert_eq!(mounts[0].target.as_deref(), Some("/work"));
        assert_eq!(mounts[0].read_only, Some(false));
        assert_eq!(mounts[1].target.as_deref(), Some("/work/.git"));
        assert_eq!(mounts[1].read_only, Some(true));
        Ok(())
    }

    #[test]
    fn a_symlinked_mount_source_is_refused() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let link = dir.path().join("link");
        std::os::unix::fs::symlink("/etc", &link)?;
        let mut spec = spec();
        spec.mounts.push(SpecMount {
            src: link,
            dst: "/data".into(),
            writable: false,
        });
        let error = binds(&spec)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(error.contains("is a symlink"), "{error}");
        Ok(())
    }

    #[test]
    fn specs_the_backend_cannot_honour_are_refused() {
        let refused = |change: &dyn Fn(&mut SandboxSpec)| {
            let mut spec = spec();
            change(&mut spec);
            validate(&spec, None).is_err()
        };
        assert!(!refused(&|_| {}));
        assert!(refused(&|s| s.root = Root::Host));
        assert!(refused(&|s| s.root = Root::Rootfs("/srv/root".into())));
        assert!(refused(&|s| s.network =
            Network::Egress(vec![EgressRule {
                host: "example.com".into(),
                port: 443
            }])));
        assert!(refused(&|s| s.command.clear()));
        assert!(refused(&|s| s.workdir = "work".into()));
        assert!(refused(&|s| s.limits.memory_bytes = 1 << 20));
        assert!(refused(&|s| s.syscalls.extra_allow.push("ptrace".into())));
        assert!(refused(&|s| s.tmpfs.push(Tmpfs {
            dst: "/proc/x".into(),
            size_bytes: 1
        })));
        assert!(refused(&|s| s.tmpfs.push(Tmpfs {
            dst: "/tmp".into(),
            size_bytes: 1
        })));
        assert!(refused(&|s| s.env.push(("A=B".into(), "c".into()))));
    }

    #[test]
    fn the_refusal_of_a_host_root_names_the_image_option() {
        let mut spec = spec();
        spec.root = Root::Host;
        let error = validate(&spec, None)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(error.contains("needs an image"), "{error}");
    }
}
