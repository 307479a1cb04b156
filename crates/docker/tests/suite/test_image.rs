//! The image the Docker tests run, shared by the docker backend's suite and the CLI's suite
//! (which includes this file with `#[path]`): `FROM scratch` with Debian's static busybox and
//! its applets, the static (musl) nanoclaw as the probe, and an empty /tmp with the mode a
//! distribution gives it. No registry is needed.
//!
//! The image is built with the docker CLI: this is test setup, in two test crates of which
//! only one speaks the Engine API; the product itself never runs the docker CLI. It is
//! tagged by a hash of its contents, so an unchanged image is reused across runs, and the
//! tags of images built before it are removed. One test process at a time builds.

use std::fs;
use std::hash::{DefaultHasher, Hasher};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use nanoclaw_docker::InitBinary;

/// Where the probe is inside the image.
pub const PROBE: &str = "/probe/nanoclaw";

/// The repository of the image's tags; the tag is the content hash.
const REPOSITORY: &str = "nanoclaw-test";

/// The busybox applets the tests run, linked in /bin and in /usr/bin (where the host keeps
/// them, so a test may name either path).
const APPLETS: [&str; 13] = [
    "sh", "cat", "echo", "env", "head", "id", "kill", "ls", "pwd", "sleep", "tr", "true", "wc",
];

const DOCKERFILE: &str = "FROM scratch\nCOPY rootfs/ /\n";

/// Builds the image unless one with the same contents is there, and returns its ID
/// (`sha256:…`). Panics, saying why, when busybox, the probe or the docker CLI is missing.
pub fn build() -> String {
    let context = build_context();
    // DefaultHasher is stable within a toolchain, which is all a cache tag needs.
    let mut hash = DefaultHasher::new();
    hash_tree(context.path(), &mut hash);
    let tag = format!("{REPOSITORY}:{:016x}", hash.finish());
    let _building = build_lock();
    let id = docker(&["image", "inspect", "--format", "{{.Id}}", &tag]).or_else(|_| {
        let context = context.path().to_string_lossy();
        docker(&["build", "--quiet", "--force-rm", "--tag", &tag, &context])
    });
    let id = id.unwrap_or_else(|e| panic!("building the test image: {e}"));
    remove_older_tags(&tag);
    id
}

/// An exclusive lock that every test process of the target directory takes, so that one
/// builds the image while the others wait and then find it; it ends with the file.
fn build_lock() -> fs::File {
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("nanoclaw-test-image.lock");
    let file = fs::File::create(&path).unwrap();
    // SAFETY: flock takes no pointer, only a descriptor that `file` keeps open.
    let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
    let error = std::io::Error::last_os_error();
    assert_eq!(locked, 0, "lock {}: {error}", path.display());
    file
}

/// Feeds everything below `dir` that a build copies into `hash`: each entry's name and
/// mode, and a file's bytes or a link's target.
fn hash_tree(dir: &Path, hash: &mut DefaultHasher) {
    let mut entries: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        let meta = fs::symlink_metadata(&path).unwrap();
        hash.write(path.file_name().unwrap().as_encoded_bytes());
        hash.write_u32(meta.permissions().mode());
        if meta.is_symlink() {
            hash.write(fs::read_link(&path).unwrap().as_os_str().as_encoded_bytes());
        } else if meta.is_dir() {
            hash_tree(&path, hash);
        } else {
            hash.write(&fs::read(&path).unwrap());
        }
    }
}

/// Runs `docker ARGS` and returns its trimmed stdout, or what went wrong.
fn docker(args: &[&str]) -> Result<String, String> {
    let output = Command::new("docker")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("the docker CLI builds the test image: {e}; tests never skip"));
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
    } else {
        Err(format!(
            "docker {}: {}: {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// Removes the repository's tags of images built before `current` (earlier probe builds);
/// one still in use stays. A newer one stays too: another test binary may run it.
fn remove_older_tags(current: &str) {
    let before = format!("before={current}");
    let format = "{{.Repository}}:{{.Tag}}";
    let listed = docker(&[
        "image", "ls", "--filter", &before, "--format", format, REPOSITORY,
    ]);
    for tag in listed.unwrap_or_default().lines() {
        let _ = docker(&["image", "rm", tag]);
    }
}

/// A directory with the Dockerfile and the image's root file system.
fn build_context() -> tempfile::TempDir {
    let context = tempfile::Builder::new()
        .prefix("nanoclaw-test-image-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    let root = context.path().join("rootfs");
    for dir in ["bin", "usr/bin", "probe", "tmp"] {
        fs::create_dir_all(root.join(dir)).unwrap();
    }
    // The engine gives a tmpfs the mode of the directory it covers.
    fs::set_permissions(root.join("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
    write_executable(&root.join("bin/busybox"), &fs::read(busybox()).unwrap());
    let probe = fs::read(probe_binary()).unwrap();
    write_executable(&root.join(PROBE.trim_start_matches('/')), &probe);
    for applet in APPLETS {
        symlink("busybox", root.join("bin").join(applet)).unwrap();
        symlink("/bin/busybox", root.join("usr/bin").join(applet)).unwrap();
    }
    fs::write(context.path().join("Dockerfile"), DOCKERFILE).unwrap();
    context
}

fn write_executable(path: &Path, bytes: &[u8]) {
    fs::write(path, bytes).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
}

/// The workspace's root directory.
fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The static nanoclaw binary (the image's probe, and the egress bridge), rebuilt when any
/// crate's sources are newer than it. If the build fails, an existing build is used, and
/// without one the test fails saying why.
pub fn probe_binary() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target"));
    let binary = target.join("x86_64-unknown-linux-musl/release/nanoclaw");
    let built = fs::metadata(&binary).and_then(|m| m.modified()).ok();
    let sources = ["crates", "Cargo.lock"].map(|p| workspace().join(p));
    if built.is_some_and(|built| sources.iter().all(|s| newest_mtime(s) <= built)) {
        return binary;
    }
    let build = Command::new(env!("CARGO"))
        .current_dir(workspace())
        .args([
            "build",
            "--quiet",
            "--release",
            "--target",
            "x86_64-unknown-linux-musl",
            "-p",
            "nanoclaw",
        ])
        .output();
    match build {
        Ok(output) if output.status.success() => {}
        other if binary.exists() => eprintln!(
            "warning: building the static nanoclaw probe failed, using the existing {}: {other:?}",
            binary.display()
        ),
        other => panic!(
            "cannot build the static nanoclaw probe (`cargo build --release --target \
             x86_64-unknown-linux-musl -p nanoclaw`; needs `rustup target add \
             x86_64-unknown-linux-musl`): {other:?}"
        ),
    }
    binary
}

/// The latest modification time of `path` or anything below it.
fn newest_mtime(path: &Path) -> SystemTime {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return UNIX_EPOCH;
    };
    let own = meta.modified().unwrap_or(UNIX_EPOCH);
    if !meta.is_dir() {
        return own;
    }
    fs::read_dir(path)
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| newest_mtime(&entry.path()))
        .fold(own, SystemTime::max)
}

/// Debian's static busybox, the image's whole userland.
fn busybox() -> PathBuf {
    let path = PathBuf::from("/bin/busybox");
    assert!(
        InitBinary::static_at(path.clone()).is_ok(),
        "{} is missing or dynamically linked: apt-get install -y busybox-static",
        path.display()
    );
    path
}
