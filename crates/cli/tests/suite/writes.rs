//! Writable mounts and mount sources: a source swapped for a symlink is never mounted, the
//! changes of a writable mount reach the host only after the run, within the write budget,
//! and never as a `.git` entry, a symlink out of the mount or a set-id file.

use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::suite::support::{
    backend_tests, expected_host_owner, give_to_sandbox_user, nanoclaw, test_image_id, Backend,
    Sandbox,
};

backend_tests!(
    a_mount_source_swapped_for_a_symlink_is_never_mounted,
    planted_and_nested_git_entries_never_reach_the_host,
    writes_past_the_budget_fail_with_enospc,
    sparse_files_and_hard_links_reach_the_host_only_within_the_budget,
    a_runner_killed_mid_apply_leaves_no_partial_file,
    ordinary_writes_reach_the_host_and_escapes_do_not,
);

/// Swaps `a` and `b` (`renameat2(RENAME_EXCHANGE)`) until `stop` is set.
fn swap_until(a: &Path, b: &Path, stop: &AtomicBool) {
    let a = CString::new(a.as_os_str().as_bytes()).unwrap();
    let b = CString::new(b.as_os_str().as_bytes()).unwrap();
    while !stop.load(Ordering::Relaxed) {
        // SAFETY: both paths are NUL-terminated strings that outlive the call.
        let swapped = unsafe {
            libc::renameat2(
                libc::AT_FDCWD,
                a.as_ptr(),
                libc::AT_FDCWD,
                b.as_ptr(),
                libc::RENAME_EXCHANGE,
            )
        };
        assert_eq!(swapped, 0, "{}", std::io::Error::last_os_error());
    }
}

/// A policy file with one tool `t` running `command` with `mounts` (TOML array entries),
/// on `backend`.
fn policy(dir: &Path, backend: Backend, command: &[&str], mounts: &str) -> PathBuf {
    let root = match backend {
        Backend::Native => String::new(),
        Backend::Docker => format!("backend = \"docker\"\nimage = \"{}\"\n", test_image_id()),
    };
    let command: Vec<String> = command.iter().map(|c| format!("{c:?}")).collect();
    let text = format!(
        "[tools.t]\ndescription = \"test\"\ncommand = [{}]\n{root}{mounts}",
        command.join(", ")
    );
    let path = dir.join("tools.toml");
    fs::write(&path, text).unwrap();
    path
}

fn a_mount_source_swapped_for_a_symlink_is_never_mounted(backend: Backend) {
    let scratch = Sandbox::new(backend);
    let workspace = scratch.host_dir("workspace");
    fs::create_dir(workspace.join("cache")).unwrap();
    fs::write(workspace.join("cache/ordinary"), "").unwrap();
    let outside = scratch.host_dir("outside");
    fs::write(outside.join("MARKER-outside"), "").unwrap();
    std::os::unix::fs::symlink(&outside, workspace.join("swap")).unwrap();
    let tools = policy(
        scratch.scratch(),
        backend,
        &["ls", "/data"],
        "[[tools.t.mounts]]\nhost = \"${workspace}/cache\"\npath = \"/data\"\nmode = \"ro\"\n",
    );
    let stop = Arc::new(AtomicBool::new(false));
    let swapper = {
        let (stop, a, b) = (
            stop.clone(),
            workspace.join("cache"),
            workspace.join("swap"),
        );
        std::thread::spawn(move || swap_until(&a, &b, &stop))
    };
    let (mut runs, mut listed) = (0, 0);
    let deadline = Instant::now() + Duration::from_secs(30);
    while runs < 100 && Instant::now() < deadline {
        let exited = nanoclaw(scratch.scratch())
            .args(["run", "--policy"])
            .arg(&tools)
            .args(["--tool", "t", "--workspace"])
            .arg(&workspace)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&exited.stdout);
        runs += 1;
        assert!(
            !stdout.contains("MARKER"),
            "run {runs} mounted the symlink's target: {exited:?}"
        );
        listed += usize::from(stdout.contains("ordinary"));
    }
    stop.store(true, Ordering::Relaxed);
    swapper.join().unwrap();
    scratch.assert_left_nothing("after the swapped runs");
    assert!(listed > 0, "no run of {runs} mounted the real directory");
}

/// `git status` on the host in `dir`, as a shell prompt runs it; returns whether the
/// marker the planted config names appeared.
fn host_git_runs_planted_code(dir: &Path, marker: &Path) -> bool {
    let _ = Command::new("git")
        .args(["-c", "safe.directory=*", "status"])
        .current_dir(dir)
        .output()
        .unwrap();
    marker.exists()
}

fn planted_and_nested_git_entries_never_reach_the_host(backend: Backend) {
    let mut sandbox = Sandbox::new(backend);
    // The mount is a subdirectory of a repository and holds a nested repository.
    let repo = sandbox.host_dir("repo");
    let git = |dir: &Path, args: &[&str]| {
        let done = Command::new("git")
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(done.status.success(), "git {args:?}: {done:?}");
    };
    git(&repo, &["init", "-q"]);
    let work = repo.join("work");
    fs::create_dir_all(work.join("nested")).unwrap();
    git(&work.join("nested"), &["init", "-q"]);
    git(&work, &["init", "-q", "--bare", "existing.git"]);
    let nested_config = fs::read(work.join("nested/.git/config")).unwrap();
    let bare_config = fs::read(work.join("existing.git/config")).unwrap();
    give_to_sandbox_user(&work);
    let marker = sandbox.scratch().join("fsmonitor-ran");
    let marker_text = marker.display().to_string();
    let config = format!("[core]\n\tfsmonitor = touch {}\n", marker.display());
    let script = format!(
        "set -e; cd /work; \
         mkdir -p planted/.git/objects planted/.git/refs; \
         echo 'ref: refs/heads/main' > planted/.git/HEAD; \
         printf '{config}' > planted/.git/config; \
         mkdir -p bare/objects bare/refs; echo 'ref: refs/heads/main' > bare/HEAD; \
         printf '{config}' > bare/config; \
         mkdir -p linked; echo 'gitdir: ../bare' > linked/.git; \
         printf '{config}' >> nested/.git/config; \
         printf '{config}' >> existing.git/config; \
         echo 'touch {marker_text}' > existing.git/hooks/pre-receive; \
         echo done"
    );
    let run = sandbox.mount_rw(&work, "/work").run(&["sh", "-c", &script]);
    assert_eq!(run.code(), 0, "{}", run.context());
    assert!(!work.join("planted/.git").exists(), "{}", run.context());
    assert!(!work.join("linked/.git").exists(), "{}", run.context());
    assert!(!work.join("bare/HEAD").exists(), "{}", run.context());
    assert_eq!(
        fs::read(work.join("nested/.git/config")).unwrap(),
        nested_config,
        "{}",
        run.context()
    );
    assert_eq!(
        fs::read(work.join("existing.git/config")).unwrap(),
        bare_config,
        "{}",
        run.context()
    );
    assert!(!work.join("existing.git/hooks/pre-receive").exists());
    for dir in ["planted", "linked", "bare", "nested", "existing.git", "."] {
        assert!(
            !host_git_runs_planted_code(&work.join(dir), &marker),
            "git status in {dir} ran what the sandbox wrote\n{}",
            run.context()
        );
    }
    let refused = run.json["writes"]["refused"].to_string();
    for path in [
        "planted/.git",
        "linked/.git",
        "work/bare\"",
        "nested/.git",
        "existing.git",
    ] {
        assert!(refused.contains(path), "{path} not reported: {refused}");
    }
}

fn writes_past_the_budget_fail_with_enospc(backend: Backend) {
    let mut sandbox = Sandbox::new(backend);
    let work = sandbox.writable_host_dir("work");
    let run = sandbox
        .mount_rw(&work, "/work")
        .options(["--write-limit", "16m"])
        .run(&[
            "sh",
            "-c",
            "dd if=/dev/zero of=/work/big bs=1M count=64 2>&1; echo status=$?",
        ]);
    let said = &run.outcome.stdout;
    assert!(said.contains("No space left"), "{}", run.context());
    assert!(!said.contains("status=0"), "{}", run.context());
    let writes = &run.json["writes"];
    assert_eq!(writes["budget_reached"], true, "{}", run.context());
    assert_eq!(writes["budget_bytes"], 16 << 20, "{}", run.context());
    let size = fs::metadata(work.join("big")).map(|m| m.len()).unwrap_or(0);
    assert!(
        size <= 17 << 20,
        "{size} bytes reached the host\n{}",
        run.context()
    );
}

/// Sparse files and hard links take almost nothing in the area, but the apply writes every
/// file at its full size and every link as its own file: the host gets the budget, no more.
fn sparse_files_and_hard_links_reach_the_host_only_within_the_budget(backend: Backend) {
    let mut sandbox = Sandbox::new(backend);
    let work = sandbox.writable_host_dir("work");
    let run = sandbox
        .mount_rw(&work, "/work")
        .options(["--write-limit", "16m"])
        .run(&[
            "sh",
            "-c",
            "set -e; cd /work; for i in $(seq 12); do truncate -s 100M sparse$i; done; \
             dd if=/dev/zero of=real bs=1M count=8 2>/dev/null; \
             for i in $(seq 120); do ln real link$i; done; echo done",
        ]);
    assert_eq!(run.code(), 0, "{}", run.context());
    let (mut bytes, mut blocks) = (0, 0);
    for entry in fs::read_dir(&work).unwrap() {
        let meta = entry.unwrap().metadata().unwrap();
        bytes += meta.len();
        blocks += meta.blocks() * 512;
    }
    let limit = (16 << 20) + (64 << 10);
    assert!(
        bytes <= limit,
        "{bytes} bytes reached the host\n{}",
        run.context()
    );
    assert!(
        blocks <= limit,
        "{blocks} bytes of blocks on the host\n{}",
        run.context()
    );
    let writes = &run.json["writes"];
    assert_eq!(writes["budget_reached"], true, "{}", run.context());
    assert!(
        writes["refused_count"].as_u64().unwrap_or(0) >= 12 + 120 - 1,
        "{}",
        run.context()
    );
    let refused = writes["refused"].as_array().unwrap();
    assert!(refused.iter().all(|r| r["reason"]
        .as_str()
        .unwrap_or("")
        .starts_with("over the write budget when applied")));
    for name in ["sparse1", "link120"] {
        let path = work.join(name);
        let listed = refused
            .iter()
            .any(|r| r["path"] == path.display().to_string());
        assert!(listed || path.exists(), "{name}: {}", run.context());
    }
}

/// Whether process `pid` holds a file below `dir` open (as the apply does the file it
/// writes, and only then).
fn holds_file_below(pid: u32, dir: &Path) -> bool {
    let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten().any(|fd| {
        fs::read_link(fd.path()).is_ok_and(|target| target.starts_with(dir) && target != dir)
    })
}

/// SIGKILL of the runner while it writes a file to the host leaves no partial file there:
/// the file has no name until it is complete.
fn a_runner_killed_mid_apply_leaves_no_partial_file(backend: Backend) {
    let mut sandbox = Sandbox::new(backend);
    let work = sandbox.writable_host_dir("work");
    let mut runner = sandbox
        .mount_rw(&work, "/work")
        .options(["--write-limit", "512m"])
        .command(
            true,
            &[
                "sh",
                "-c",
                "dd if=/dev/zero of=/work/big bs=1M count=384 2>/dev/null",
            ],
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let caught = loop {
        if holds_file_below(runner.id(), &work) {
            break true;
        }
        if runner.try_wait().unwrap().is_some() || Instant::now() > deadline {
            break false;
        }
        std::thread::sleep(Duration::from_micros(200));
    };
    let _ = runner.kill();
    let _ = runner.wait();
    let left: Vec<(String, u64)> = fs::read_dir(&work)
        .unwrap()
        .flatten()
        .map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            (name, e.metadata().map(|m| m.len()).unwrap_or(0))
        })
        .collect();
    // The next run with a writable mount removes what the killed one staged.
    let later = sandbox.writable_host_dir("later");
    let mut next = Sandbox::new(backend);
    next.mount_rw(&later, "/later").run(&["true"]);
    assert!(caught, "the runner never wrote below {}", work.display());
    for (name, len) in &left {
        assert!(
            name == "big" && *len == 384 << 20,
            "the killed apply left {name} ({len} bytes) in the host source"
        );
    }
}

fn ordinary_writes_reach_the_host_and_escapes_do_not(backend: Backend) {
    let mut sandbox = Sandbox::new(backend);
    let work = sandbox.writable_host_dir("work");
    fs::write(work.join("old"), "old\n").unwrap();
    fs::write(work.join("gone"), "").unwrap();
    give_to_sandbox_user(&work);
    let run = sandbox.mount_rw(&work, "/work").run(&[
        "sh",
        "-c",
        "set -e; cd /work; echo new > new; echo more >> old; rm gone; mkdir -p d/e; \
         echo deep > d/e/f; ln -s ../old d/up; ln -s /etc etc; ln -s ../../x d/out; \
         echo s > suid; chmod 4755 suid; echo done",
    ]);
    assert_eq!(run.code(), 0, "{}", run.context());
    assert_eq!(fs::read_to_string(work.join("new")).unwrap(), "new\n");
    assert_eq!(fs::read_to_string(work.join("old")).unwrap(), "old\nmore\n");
    assert_eq!(fs::read_to_string(work.join("d/e/f")).unwrap(), "deep\n");
    assert!(!work.join("gone").exists());
    assert_eq!(
        fs::read_link(work.join("d/up")).unwrap(),
        Path::new("../old")
    );
    for created in ["new", "d", "d/e", "d/e/f"] {
        let meta = fs::symlink_metadata(work.join(created)).unwrap();
        assert_eq!(meta.uid(), expected_host_owner(), "{created}");
        assert_eq!(meta.permissions().mode() & 0o7000, 0, "{created}");
    }
    for refused in ["etc", "d/out", "suid"] {
        assert!(
            fs::symlink_metadata(work.join(refused)).is_err(),
            "{refused} reached the host\n{}",
            run.context()
        );
        let listed = run.json["writes"]["refused"].to_string();
        assert!(listed.contains(refused), "{refused}: {listed}");
    }
    assert!(
        run.json["writes"]["applied_count"].as_u64().unwrap_or(0) >= 6,
        "{}",
        run.context()
    );
}
