//! One sandbox's resource limits: a fresh cgroup with memory, CPU and PID limits.
//!
//! Like Firecracker's jailer this is a few hundred lines of our own instead of a cgroup
//! crate, so it can be read in one go. [`Layout::detect`] finds where the hierarchies are
//! mounted (from `/proc/self/mountinfo`) and which cgroup the runner is in (from
//! `/proc/self/cgroup`), and picks cgroup v2 if memory, cpu and pids are delegated to the
//! runner there, else cgroup v1 if all three v1 controllers are mounted and writable.
//! [`Cgroup::create`] then makes `nanoclaw-<runner pid>-<suffix>` as a child of the
//! runner's own cgroup in each hierarchy (so it works inside a delegated subtree), writes
//! the limits and reads every one back.
//!
//! What this module must never do:
//! - report a limit it did not read back: a limit that does not stick is an error, never a
//!   silently weaker sandbox (memory is rounded *down* to a page first, because the kernel
//!   stores pages);
//! - leave a cgroup behind: [`Cgroup::remove`] removes every directory, killing what is
//!   still inside, [`Drop`] does the same if `remove` was not called, and [`reap_stale`]
//!   removes what a SIGKILLed runner left;
//! - kill or remove anything it did not create: it only ever signals processes listed in
//!   the directories it made, and `reap_stale` only removes empty `nanoclaw-<pid>-*`
//!   directories of dead runners.
//!
//! Every path is resolved under a root prefix, so unit tests run against a fake tree in a
//! temporary directory ([`Layout::from_parts`]); the real-host test needs root.

use std::ffi::OsString;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::sleep;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rustix::io::Errno;
use rustix::process::{kill_process, test_kill_process, Pid, Signal};

/// The CFS period; `cpu_millis` of CPU time per second is `cpu_millis * 100` µs per period.
const CPU_PERIOD_US: u64 = 100_000;
/// The controllers a sandbox needs; v2 is only chosen if all of them are delegated.
const CONTROLLERS: [&str; 3] = ["memory", "cpu", "pids"];
/// How long `remove` waits in total for killed processes to leave before `rmdir` succeeds.
const REMOVE_BUDGET: Duration = Duration::from_secs(2);
const FIRST_PAUSE: Duration = Duration::from_millis(1);
const MAX_PAUSE: Duration = Duration::from_millis(50);

/// Which cgroup interface the limits are enforced through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

impl Version {
    pub fn as_str(&self) -> &'static str {
        match self {
            Version::V1 => "v1",
            Version::V2 => "v2",
        }
    }
}

/// The limits of one sandbox.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CgroupLimits {
    /// Memory without swap; rounded down to a whole page.
    pub(crate) memory_bytes: u64,
    /// CPU time per wall-clock second, in thousandths of a CPU (1000 = one full CPU).
    pub(crate) cpu_millis: u32,
    /// Processes and threads alive at once.
    pub(crate) pids: u32,
}

/// What a sandbox consumed, where the host reports it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct CgroupUsage {
    pub(crate) cpu_ms: Option<u64>,
    pub(crate) memory_peak_bytes: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("cgroups unavailable: {reason}")]
    Unavailable { reason: String },
    #[error("cannot {op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("limit not applied: {path}: wrote {wrote:?}, read back {read:?}")]
    Mismatch {
        path: PathBuf,
        wrote: String,
        read: String,
    },
}

/// Where each controller lives: the runner's own cgroups in a [`Layout`], a sandbox's in a
/// [`Cgroup`]. On v2 all fields are the same directory; on v1 they are one per hierarchy
/// (and equal when controllers are co-mounted, e.g. `cpu,cpuacct`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Placement {
    memory: PathBuf,
    cpu: PathBuf,
    pids: PathBuf,
    /// v1 only, optional: the CPU time counter.
    cpuacct: Option<PathBuf>,
}

impl Placement {
    fn join(&self, name: &str) -> Placement {
        Placement {
            memory: self.memory.join(name),
            cpu: self.cpu.join(name),
            pids: self.pids.join(name),
            cpuacct: self.cpuacct.as_ref().map(|dir| dir.join(name)),
        }
    }

    /// The distinct directories, each once.
    fn dirs(&self) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = Vec::with_capacity(4);
        for dir in [&self.memory, &self.cpu, &self.pids]
            .into_iter()
            .chain(self.cpuacct.as_ref())
        {
            if !dirs.contains(dir) {
                dirs.push(dir.clone());
            }
        }
        dirs
    }
}

/// Where the hierarchies are mounted and the runner's own cgroup in each.
#[derive(Debug, Clone)]
pub struct Layout {
    version: Version,
    own: Placement,
}

impl Layout {
    /// Reads `/proc/self/mountinfo` and `/proc/self/cgroup` once and picks a version.
    ///
    /// On v2 this enables memory, cpu and pids in the runner's `cgroup.subtree_control` if
    /// they are not already, since sandboxes are created as children of that cgroup.
    pub fn detect() -> Result<Layout, CgroupError> {
        let read = |path: &str| fs::read_to_string(path).map_err(io_error("read", Path::new(path)));
        Layout::from_parts(
            &read("/proc/self/mountinfo")?,
            &read("/proc/self/cgroup")?,
            Path::new("/"),
        )
    }

    /// [`Layout::detect`] on given file contents, with every mount point under `root`.
    pub(crate) fn from_parts(
        mountinfo: &str,
        proc_self_cgroup: &str,
        root: &Path,
    ) -> Result<Layout, CgroupError> {
        let mounts = parse_mountinfo(mountinfo);
        let memberships = parse_proc_cgroup(proc_self_cgroup);
        let layout = |version| move |own| Layout { version, own };
        detect_v2(&mounts, &memberships, root)
            .map(layout(Version::V2))
            .or_else(|v2| {
                detect_v1(&mounts, &memberships, root)
                    .map(layout(Version::V1))
                    .map_err(|v1| CgroupError::Unavailable {
                        reason: format!("cgroup v2: {v2}; cgroup v1: {v1}"),
                    })
            })
    }

    pub fn version(&self) -> Version {
        self.version
    }
}

/// One sandbox's cgroup: one directory on v2, one per hierarchy on v1.
#[derive(Debug)]
pub(crate) struct Cgroup {
    version: Version,
    at: Placement,
    /// Every directory this cgroup made and has not removed yet.
    dirs: Vec<PathBuf>,
}

impl Cgroup {
    /// Makes a fresh cgroup under the runner's own and applies `limits`, each read back.
    /// On error nothing is left behind.
    pub(crate) fn create(layout: &Layout, limits: &CgroupLimits) -> Result<Cgroup, CgroupError> {
        let at = layout.own.join(&unique_name());
        let mut cgroup = Cgroup {
            version: layout.version,
            dirs: Vec::with_capacity(4),
            at,
        };
        for dir in cgroup.at.dirs() {
            fs::create_dir(&dir).map_err(io_error("create", &dir))?;
            cgroup.dirs.push(dir);
        }
        apply_limits(cgroup.version, &cgroup.at, limits)?;
        Ok(cgroup)
    }

    pub(crate) fn version(&self) -> Version {
        self.version
    }

    /// The directories of this cgroup, for logs and audits.
    pub(crate) fn paths(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// Moves `pid` (and its threads) into this cgroup in every hierarchy. Only tests need
    /// it: a sandbox's init joins by itself, through the files `lib.rs` names.
    #[cfg(test)]
    fn add_process(&self, pid: i32) -> Result<(), CgroupError> {
        let pid = pid.to_string();
        for dir in &self.dirs {
            let path = dir.join("cgroup.procs");
            write_value(&path, &pid).map_err(io_error("write", &path))?;
        }
        Ok(())
    }

    /// Whether the kernel OOM-killed a process in this cgroup. Kernels before 4.13 have no
    /// `oom_kill` counter in v1 `memory.oom_control`; there this is always false (hitting
    /// the limit, `memory.failcnt`, is not the same as a kill).
    pub(crate) fn oom_killed(&self) -> bool {
        let file = match self.version {
            Version::V1 => "memory.oom_control",
            Version::V2 => "memory.events",
        };
        fs::read_to_string(self.at.memory.join(file))
            .ok()
            .and_then(|text| keyed_value(&text, "oom_kill"))
            .is_some_and(|kills| kills > 0)
    }

    /// CPU time and peak memory so far; `None` where the host does not count it (no
    /// cpuacct hierarchy on v1, no `memory.peak` before Linux 5.19 on v2).
    pub(crate) fn usage(&self) -> CgroupUsage {
        match self.version {
            Version::V1 => CgroupUsage {
                cpu_ms: self
                    .at
                    .cpuacct
                    .as_ref()
                    .and_then(|dir| read_u64(&dir.join("cpuacct.usage")))
                    .map(|ns| ns / 1_000_000),
                memory_peak_bytes: read_u64(&self.at.memory.join("memory.max_usage_in_bytes")),
            },
            Version::V2 => CgroupUsage {
                cpu_ms: fs::read_to_string(self.at.cpu.join("cpu.stat"))
                    .ok()
                    .and_then(|text| keyed_value(&text, "usage_usec"))
                    .map(|us| us / 1000),
                memory_peak_bytes: read_u64(&self.at.memory.join("memory.peak")),
            },
        }
    }

    /// Removes every directory, killing what is still inside first. After a run the
    /// sandbox's init has been reaped and its PID namespace is gone, so the directories are
    /// normally empty and `rmdir` succeeds at once; only a busy one is emptied and retried.
    /// A directory that is already gone counts as removed.
    pub(crate) fn remove(mut self) -> Result<(), CgroupError> {
        self.remove_dirs()
    }

    /// Removes each directory even if another fails, the last made first (so that the one
    /// [`reap_stale`] lists goes last), and reports the first failure.
    fn remove_dirs(&mut self) -> Result<(), CgroupError> {
        let deadline = Instant::now() + REMOVE_BUDGET;
        let mut first_error = None;
        while let Some(dir) = self.dirs.pop() {
            if let Err(error) = self.rmdir_emptying(&dir, deadline) {
                first_error.get_or_insert(error);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    fn rmdir_emptying(&self, dir: &Path, deadline: Instant) -> Result<(), CgroupError> {
        let mut pause = FIRST_PAUSE;
        loop {
            match fs::remove_dir(dir) {
                Ok(()) => return Ok(()),
                Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(()),
                // Killed processes leave the cgroup only once they have finished exiting.
                Err(error)
                    if error.kind() == io::ErrorKind::ResourceBusy && Instant::now() < deadline =>
                {
                    self.kill_in(dir);
                    sleep(pause);
                    pause = (pause * 2).min(MAX_PAUSE);
                }
                Err(source) => return Err(io_error("remove", dir)(source)),
            }
        }
    }

    /// SIGKILLs what is in `dir`: atomically through `cgroup.kill` on v2 (Linux 5.14),
    /// else each process `cgroup.procs` lists; the caller's retries re-read it, which
    /// catches processes forked meanwhile (pids.max bounds how many).
    fn kill_in(&self, dir: &Path) {
        if self.version == Version::V2 && write_value(&dir.join("cgroup.kill"), "1").is_ok() {
            return;
        }
        kill_procs(dir);
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        // Nothing to report to from drop; `reap_stale` gets whatever is left.
        let _ = self.remove_dirs();
    }
}

/// Removes the empty `nanoclaw-<pid>-*` cgroups under the runner's own whose runner is no
/// longer alive (it was SIGKILLed before it could clean up). Errors are ignored: a cgroup
/// that still holds processes stays, because we cannot prove those processes are ours.
///
/// Cheap enough for every run: one `stat` says whether the runner's cgroup has a child at
/// all (a directory's link count is two plus its subdirectories), and only the hierarchy
/// made first and removed last is listed, so a half-made or half-removed cgroup shows there.
pub(crate) fn reap_stale(layout: &Layout) {
    let own = layout.own.dirs();
    let Some(listed) = own.first() else {
        return;
    };
    if fs::metadata(listed).is_ok_and(|meta| meta.nlink() == 2) {
        return;
    }
    let Ok(entries) = fs::read_dir(listed) else {
        return;
    };
    let me = std::process::id();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(runner_pid) else {
            continue;
        };
        if pid != me && !alive(pid) {
            for dir in own.iter().rev() {
                let _ = fs::remove_dir(dir.join(&name));
            }
        }
    }
}

fn unique_name() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |now| now.subsec_nanos());
    format!("nanoclaw-{}-{count}-{nanos}", std::process::id())
}

/// The runner pid in a name made by [`unique_name`].
fn runner_pid(name: &str) -> Option<u32> {
    name.strip_prefix("nanoclaw-")?
        .split_once('-')?
        .0
        .parse()
        .ok()
}

fn alive(pid: u32) -> bool {
    let Some(pid) = i32::try_from(pid).ok().and_then(Pid::from_raw) else {
        return false;
    };
    // EPERM means it exists but is not ours to signal: alive.
    test_kill_process(pid) != Err(Errno::SRCH)
}

fn apply_limits(
    version: Version,
    at: &Placement,
    limits: &CgroupLimits,
) -> Result<(), CgroupError> {
    // The kernel keeps whole pages and rounds down; do it first so the read-back matches.
    let page = page_size();
    let memory = (limits.memory_bytes / page * page).to_string();
    let quota = u64::from(limits.cpu_millis) * (CPU_PERIOD_US / 1000);
    match version {
        Version::V1 => {
            set(&at.memory.join("memory.limit_in_bytes"), &memory)?;
            // memory+swap equal to memory means no swap; the file is absent without swap
            // accounting, and then memory.limit_in_bytes still bounds RAM.
            set_if_present(&at.memory.join("memory.memsw.limit_in_bytes"), &memory)?;
            // Only a reclaim preference, not a limit: best effort, not read back.
            let _ = write_value(&at.memory.join("memory.swappiness"), "0");
            set(
                &at.cpu.join("cpu.cfs_period_us"),
                &CPU_PERIOD_US.to_string(),
            )?;
            set(&at.cpu.join("cpu.cfs_quota_us"), &quota.to_string())?;
        }
        Version::V2 => {
            set(&at.memory.join("memory.max"), &memory)?;
            // Absent when the kernel has no swap support: then there is no swap to limit.
            set_if_present(&at.memory.join("memory.swap.max"), "0")?;
            set(&at.cpu.join("cpu.max"), &format!("{quota} {CPU_PERIOD_US}"))?;
        }
    }
    set(&at.pids.join("pids.max"), &limits.pids.to_string())
}

fn page_size() -> u64 {
    rustix::param::page_size() as u64
}

/// Writes a limit and fails unless reading it back gives exactly the same value.
fn set(path: &Path, value: &str) -> Result<(), CgroupError> {
    write_value(path, value).map_err(io_error("write", path))?;
    check(path, value)
}

/// [`set`], or nothing if the kernel does not have that file.
fn set_if_present(path: &Path, value: &str) -> Result<(), CgroupError> {
    match write_value(path, value) {
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(io_error("write", path)(source)),
        Ok(()) => check(path, value),
    }
}

fn check(path: &Path, value: &str) -> Result<(), CgroupError> {
    let read = fs::read_to_string(path).map_err(io_error("read", path))?;
    let read = read.trim();
    if read == value {
        Ok(())
    } else {
        Err(CgroupError::Mismatch {
            path: path.to_path_buf(),
            wrote: value.to_owned(),
            read: read.to_owned(),
        })
    }
}

/// One `write(2)` to an existing control file; never creates it (a missing file means the
/// kernel lacks that knob, which callers must see).
fn write_value(path: &Path, value: &str) -> io::Result<()> {
    OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)?
        .write_all(value.as_bytes())
}

fn read_u64(path: &Path) -> Option<u64> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The number after `key ` in a flat-keyed file such as `memory.events` or `cpu.stat`.
fn keyed_value(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (name, value) = line.split_once(' ')?;
        if name == key {
            value.trim().parse().ok()
        } else {
            None
        }
    })
}

fn io_error<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> CgroupError + 'a {
    move |source| CgroupError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// SIGKILLs every process listed in `dir/cgroup.procs`; true if any was listed.
fn kill_procs(dir: &Path) -> bool {
    let Ok(procs) = fs::read_to_string(dir.join("cgroup.procs")) else {
        return false;
    };
    let me = std::process::id();
    let mut any = false;
    // Never the runner itself, even if someone moved it in by mistake.
    for pid in procs
        .lines()
        .filter_map(|line| line.trim().parse::<u32>().ok())
        .filter(|&pid| pid != me)
    {
        any = true;
        if let Some(pid) = i32::try_from(pid).ok().and_then(Pid::from_raw) {
            // ESRCH: it exited between the read and the kill, which is what we want.
            let _ = kill_process(pid, Signal::KILL);
        }
    }
    any
}

/// A cgroup mount from `/proc/self/mountinfo`.
struct Mount<'a> {
    /// The cgroup of the hierarchy that appears at the mount point.
    root: PathBuf,
    mount_point: PathBuf,
    fstype: &'a str,
    super_options: &'a str,
}

fn parse_mountinfo(text: &str) -> Vec<Mount<'_>> {
    text.lines()
        .filter_map(|line| {
            // `id parent dev root mount-point options [optional...] - fstype source super`
            let (fields, tail) = line.split_once(" - ")?;
            let mut tail = tail.split(' ');
            let fstype = tail.next()?;
            if fstype != "cgroup" && fstype != "cgroup2" {
                return None;
            }
            let super_options = tail.nth(1)?;
            let mut fields = fields.split(' ').skip(3);
            Some(Mount {
                root: unescape(fields.next()?),
                mount_point: unescape(fields.next()?),
                fstype,
                super_options,
            })
        })
        .collect()
}

/// Undoes mountinfo's octal escapes (`\040` for a space and so on).
fn unescape(field: &str) -> PathBuf {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).filter(|_| bytes[i] == b'\\');
        match octal.and_then(|digits| u8::from_str_radix(std::str::from_utf8(digits).ok()?, 8).ok())
        {
            Some(byte) => {
                out.push(byte);
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    PathBuf::from(OsString::from_vec(out))
}

/// A line of `/proc/self/cgroup`: `hierarchy-id:controllers:path`.
struct Membership<'a> {
    hierarchy: &'a str,
    controllers: &'a str,
    path: &'a str,
}

fn parse_proc_cgroup(text: &str) -> Vec<Membership<'_>> {
    text.lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ':');
            Some(Membership {
                hierarchy: parts.next()?,
                controllers: parts.next()?,
                path: parts.next()?,
            })
        })
        .collect()
}

fn has_word(list: &str, word: &str, separator: char) -> bool {
    list.split(separator).any(|item| item.trim() == word)
}

fn detect_v2(
    mounts: &[Mount],
    memberships: &[Membership],
    root: &Path,
) -> Result<Placement, String> {
    let candidates: Vec<&Mount> = mounts.iter().filter(|m| m.fstype == "cgroup2").collect();
    if candidates.is_empty() {
        return Err("no cgroup2 filesystem is mounted".into());
    }
    let own = memberships
        .iter()
        .find(|m| m.hierarchy == "0" && m.controllers.is_empty())
        .ok_or("/proc/self/cgroup has no cgroup2 (0::) line")?;
    let dir = locate(&candidates, own.path, root)?;

    let controllers_path = dir.join("cgroup.controllers");
    let available = fs::read_to_string(&controllers_path)
        .map_err(|e| format!("cannot read {}: {e}", controllers_path.display()))?;
    let missing: Vec<&str> = CONTROLLERS
        .into_iter()
        .filter(|c| !has_word(&available, c, ' '))
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "{} lacks {} (not delegated to the runner's cgroup)",
            controllers_path.display(),
            missing.join(", ")
        ));
    }
    writable(&dir)?;

    // Sandboxes are children of our cgroup, so our cgroup must hand the controllers down.
    let subtree = dir.join("cgroup.subtree_control");
    let enabled = fs::read_to_string(&subtree)
        .map_err(|e| format!("cannot read {}: {e}", subtree.display()))?;
    let enable: Vec<String> = CONTROLLERS
        .into_iter()
        .filter(|c| !has_word(&enabled, c, ' '))
        .map(|c| format!("+{c}"))
        .collect();
    if !enable.is_empty() {
        write_value(&subtree, &enable.join(" ")).map_err(|e| {
            let hint = if e.kind() == io::ErrorKind::ResourceBusy {
                " (the runner's cgroup holds processes; run the runner in a leaf of a delegated subtree)"
            } else {
                ""
            };
            format!("cannot write {:?} to {}: {e}{hint}", enable.join(" "), subtree.display())
        })?;
    }
    Ok(Placement {
        memory: dir.clone(),
        cpu: dir.clone(),
        pids: dir,
        cpuacct: None,
    })
}

fn detect_v1(
    mounts: &[Mount],
    memberships: &[Membership],
    root: &Path,
) -> Result<Placement, String> {
    Ok(Placement {
        memory: v1_dir(mounts, memberships, "memory", root)?,
        cpu: v1_dir(mounts, memberships, "cpu", root)?,
        pids: v1_dir(mounts, memberships, "pids", root)?,
        // Only counts CPU time: a sandbox without it still has every limit.
        cpuacct: v1_dir(mounts, memberships, "cpuacct", root).ok(),
    })
}

/// The runner's own cgroup directory in the v1 hierarchy of `controller`.
fn v1_dir(
    mounts: &[Mount],
    memberships: &[Membership],
    controller: &str,
    root: &Path,
) -> Result<PathBuf, String> {
    let candidates: Vec<&Mount> = mounts
        .iter()
        .filter(|m| m.fstype == "cgroup" && has_word(m.super_options, controller, ','))
        .collect();
    if candidates.is_empty() {
        return Err(format!("no {controller} hierarchy is mounted"));
    }
    let own = memberships
        .iter()
        .find(|m| m.hierarchy != "0" && has_word(m.controllers, controller, ','))
        .ok_or_else(|| format!("/proc/self/cgroup has no {controller} line"))?;
    let dir = locate(&candidates, own.path, root)?;
    writable(&dir)?;
    Ok(dir)
}

/// Where the runner's cgroup `own` appears under one of the mounts of its hierarchy.
fn locate(candidates: &[&Mount], own: &str, root: &Path) -> Result<PathBuf, String> {
    let own_path = Path::new(own);
    for mount in candidates {
        let Ok(relative) = own_path.strip_prefix(&mount.root) else {
            continue;
        };
        // `..` appears when our cgroup lies outside the cgroup namespace root.
        if !relative
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
        {
            continue;
        }
        let mount_point = mount
            .mount_point
            .strip_prefix("/")
            .unwrap_or(&mount.mount_point);
        let mut dir = root.join(mount_point);
        if !relative.as_os_str().is_empty() {
            dir.push(relative);
        }
        return Ok(dir);
    }
    let points: Vec<String> = candidates
        .iter()
        .map(|m| m.mount_point.display().to_string())
        .collect();
    Err(format!(
        "the runner's cgroup {own} is not visible under {}",
        points.join(", ")
    ))
}

fn writable(dir: &Path) -> Result<(), String> {
    rustix::fs::access(dir, rustix::fs::Access::WRITE_OK)
        .map_err(|e| format!("cannot write to {}: {e}", dir.display()))
}

#[cfg(test)]
mod tests {
    // A test should stop at the first unexpected error, with the error in the panic message.
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use std::os::unix::fs::symlink;
    use std::process::{Command, Stdio};
    use tempfile::TempDir;

    /// A fake host: cgroup mounts and memberships, with the directories they name under a
    /// temporary root.
    struct FakeHost {
        root: TempDir,
        mountinfo: String,
        proc_cgroup: String,
        hierarchies: u32,
    }

    impl FakeHost {
        fn new() -> FakeHost {
            FakeHost {
                root: tempfile::tempdir().unwrap(),
                mountinfo: "22 1 0:21 / /proc rw - proc proc rw\n".into(),
                proc_cgroup: String::new(),
                hierarchies: 0,
            }
        }

        /// A v1 hierarchy at `mount_point` with `controllers`, the runner in `own`.
        fn v1(mut self, mount_point: &str, controllers: &str, own: &str) -> FakeHost {
            self.hierarchies += 1;
            let id = self.hierarchies;
            self.mountinfo += &format!(
                "{} 31 0:{id} / {mount_point} rw,relatime shared:9 - cgroup cgroup rw,{controllers}\n",
                30 + id
            );
            self.proc_cgroup += &format!("{id}:{controllers}:{own}\n");
            fs::create_dir_all(self.dir(mount_point, own)).unwrap();
            self
        }

        /// A cgroup2 mount with the runner in `own`, whose files list these controllers.
        fn v2(
            mut self,
            mount_point: &str,
            own: &str,
            controllers: &str,
            subtree: &str,
        ) -> FakeHost {
            self.mountinfo +=
                &format!("41 31 0:38 / {mount_point} rw,relatime - cgroup2 cgroup2 rw\n");
            self.proc_cgroup += &format!("0::{own}\n");
            let dir = self.dir(mount_point, own);
            fs::create_dir_all(&dir).unwrap();
            fs::write(dir.join("cgroup.controllers"), controllers).unwrap();
            fs::write(dir.join("cgroup.subtree_control"), subtree).unwrap();
            self
        }

        fn dir(&self, mount_point: &str, own: &str) -> PathBuf {
            self.root
                .path()
                .join(mount_point.trim_start_matches('/'))
                .join(own.trim_start_matches('/'))
        }

        fn layout(&self) -> Result<Layout, CgroupError> {
            Layout::from_parts(&self.mountinfo, &self.proc_cgroup, self.root.path())
        }

        fn reason(&self) -> String {
            match self.layout() {
                Err(CgroupError::Unavailable { reason }) => reason,
                other => panic!("expected unavailable, got {other:?}"),
            }
        }
    }

    /// Control files as the kernel would have made them in a fresh cgroup.
    fn control_files(dir: &Path, files: &[(&str, &str)]) {
        fs::create_dir_all(dir).unwrap();
        for (name, content) in files {
            fs::write(dir.join(name), content).unwrap();
        }
    }

    fn content(path: PathBuf) -> String {
        fs::read_to_string(path).unwrap().trim().to_owned()
    }

    fn limits() -> CgroupLimits {
        CgroupLimits {
            memory_bytes: 64 << 20,
            cpu_millis: 500,
            pids: 32,
        }
    }

    /// This machine's shape: v1 with separate cpu and cpuacct, memory nested, and a
    /// cgroup2 mount that only has hugetlb.
    fn hybrid_host() -> FakeHost {
        FakeHost::new()
            .v1("/sys/fs/cgroup/cpu", "cpu", "/")
            .v1("/sys/fs/cgroup/cpuacct", "cpuacct", "/")
            .v1("/sys/fs/cgroup/memory", "memory", "/process_api/abc")
            .v1("/sys/fs/cgroup/pids", "pids", "/")
            .v1("/sys/fs/cgroup/systemd", "name=systemd", "/")
            .v2("/sys/fs/cgroup/unified", "/", "hugetlb", "")
    }

    #[test]
    fn v1_sandbox_is_a_child_of_the_runner_cgroup_in_each_hierarchy() {
        let host = hybrid_host();
        let layout = host.layout().unwrap();
        assert_eq!(layout.version(), Version::V1);
        let at = layout.own.join("nanoclaw-1-0-0");
        assert_eq!(
            at.dirs(),
            [
                host.dir("/sys/fs/cgroup/memory", "/process_api/abc/nanoclaw-1-0-0"),
                host.dir("/sys/fs/cgroup/cpu", "/nanoclaw-1-0-0"),
                host.dir("/sys/fs/cgroup/pids", "/nanoclaw-1-0-0"),
                host.dir("/sys/fs/cgroup/cpuacct", "/nanoclaw-1-0-0"),
            ]
        );
    }

    #[test]
    fn v1_combined_cpu_cpuacct_is_one_directory() {
        let host = FakeHost::new()
            .v1("/sys/fs/cgroup/cpu,cpuacct", "cpu,cpuacct", "/user.slice")
            .v1("/sys/fs/cgroup/memory", "memory", "/user.slice")
            .v1("/sys/fs/cgroup/pids", "pids", "/user.slice");
        let layout = host.layout().unwrap();
        let cpu = host.dir("/sys/fs/cgroup/cpu,cpuacct", "/user.slice");
        assert_eq!(layout.own.cpu, cpu);
        assert_eq!(layout.own.cpuacct, Some(cpu));
        assert_eq!(layout.own.dirs().len(), 3);
    }

    #[test]
    fn v1_without_cpuacct_still_has_every_limit() {
        let host = FakeHost::new()
            .v1("/c/cpu", "cpu", "/")
            .v1("/c/memory", "memory", "/")
            .v1("/c/pids", "pids", "/");
        assert_eq!(host.layout().unwrap().own.cpuacct, None);
    }

    #[test]
    fn v2_with_delegated_controllers_wins_and_enables_them_for_children() {
        let host = FakeHost::new()
            .v1("/sys/fs/cgroup/memory", "memory", "/")
            .v2(
                "/sys/fs/cgroup",
                "/runner.scope",
                "cpuset cpu io memory pids",
                "cpu",
            );
        let layout = host.layout().unwrap();
        assert_eq!(layout.version(), Version::V2);
        let own = host.dir("/sys/fs/cgroup", "/runner.scope");
        assert_eq!(layout.own.dirs(), std::slice::from_ref(&own));
        assert_eq!(content(own.join("cgroup.subtree_control")), "+memory +pids");
    }

    #[test]
    fn v2_already_enabled_is_not_written_again() {
        let host = FakeHost::new().v2("/sys/fs/cgroup", "/", "memory cpu pids", "cpu memory pids");
        host.layout().unwrap();
        let subtree = host
            .dir("/sys/fs/cgroup", "/")
            .join("cgroup.subtree_control");
        assert_eq!(content(subtree), "cpu memory pids");
    }

    #[test]
    fn v2_without_the_controllers_falls_back_to_v1() {
        assert_eq!(hybrid_host().layout().unwrap().version(), Version::V1);
    }

    #[test]
    fn unavailable_says_why_for_each_version() {
        let host = FakeHost::new()
            .v1("/sys/fs/cgroup/cpu", "cpu", "/")
            .v1("/sys/fs/cgroup/memory", "memory", "/")
            .v2("/sys/fs/cgroup/unified", "/", "hugetlb", "");
        let reason = host.reason();
        assert!(reason.starts_with("cgroup v2: "), "{reason}");
        assert!(
            reason.contains("cgroup.controllers lacks memory, cpu, pids"),
            "{reason}"
        );
        assert!(
            reason.ends_with("; cgroup v1: no pids hierarchy is mounted"),
            "{reason}"
        );

        let nothing = FakeHost::new().reason();
        assert_eq!(
            nothing,
            "cgroup v2: no cgroup2 filesystem is mounted; cgroup v1: no memory hierarchy is mounted"
        );
    }

    #[test]
    fn a_cgroup_outside_the_mounted_subtree_is_unavailable() {
        let mut host = FakeHost::new()
            .v1("/c/cpu", "cpu", "/")
            .v1("/c/pids", "pids", "/");
        // The memory hierarchy is mounted from /docker/x, but we are in /elsewhere.
        host.mountinfo += "50 31 0:50 /docker/x /c/memory rw - cgroup cgroup rw,memory\n";
        host.proc_cgroup += "9:memory:/elsewhere\n";
        let reason = host.reason();
        assert!(
            reason.ends_with(
                "cgroup v1: the runner's cgroup /elsewhere is not visible under /c/memory"
            ),
            "{reason}"
        );
    }

    #[test]
    fn a_mount_root_is_stripped_from_the_runner_cgroup() {
        let mut host = FakeHost::new()
            .v1("/c/cpu", "cpu", "/")
            .v1("/c/pids", "pids", "/");
        host.mountinfo += "50 31 0:50 /docker/x /c/mem\\040ory rw - cgroup cgroup rw,memory\n";
        host.proc_cgroup += "9:memory:/docker/x/runner\n";
        fs::create_dir_all(host.root.path().join("c/mem ory/runner")).unwrap();
        let layout = host.layout().unwrap();
        assert_eq!(layout.own.memory, host.root.path().join("c/mem ory/runner"));
    }

    #[test]
    fn v1_limits_are_written_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let (memory, cpu, pids) = (
            dir.path().join("m"),
            dir.path().join("c"),
            dir.path().join("p"),
        );
        control_files(
            &memory,
            &[
                ("memory.limit_in_bytes", "9223372036854771712"),
                ("memory.memsw.limit_in_bytes", "9223372036854771712"),
                ("memory.swappiness", "60"),
            ],
        );
        control_files(
            &cpu,
            &[("cpu.cfs_period_us", "100000"), ("cpu.cfs_quota_us", "-1")],
        );
        control_files(&pids, &[("pids.max", "max")]);
        let at = Placement {
            memory: memory.clone(),
            cpu: cpu.clone(),
            pids: pids.clone(),
            cpuacct: None,
        };
        apply_limits(Version::V1, &at, &limits()).unwrap();
        assert_eq!(content(memory.join("memory.limit_in_bytes")), "67108864");
        assert_eq!(
            content(memory.join("memory.memsw.limit_in_bytes")),
            "67108864"
        );
        assert_eq!(content(memory.join("memory.swappiness")), "0");
        assert_eq!(content(cpu.join("cpu.cfs_quota_us")), "50000");
        assert_eq!(content(pids.join("pids.max")), "32");
    }

    #[test]
    fn v1_without_swap_accounting_does_not_invent_memsw() {
        let dir = tempfile::tempdir().unwrap();
        control_files(
            dir.path(),
            &[
                ("memory.limit_in_bytes", "0"),
                ("cpu.cfs_period_us", "0"),
                ("cpu.cfs_quota_us", "0"),
                ("pids.max", "max"),
            ],
        );
        let own = dir.path().to_path_buf();
        let at = Placement {
            memory: own.clone(),
            cpu: own.clone(),
            pids: own.clone(),
            cpuacct: None,
        };
        apply_limits(Version::V1, &at, &limits()).unwrap();
        assert!(!own.join("memory.memsw.limit_in_bytes").exists());
        assert!(!own.join("memory.swappiness").exists());
    }

    #[test]
    fn v2_limits_are_written_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        control_files(
            dir.path(),
            &[
                ("memory.max", "max"),
                ("memory.swap.max", "max"),
                ("cpu.max", "max 100000"),
                ("pids.max", "max"),
            ],
        );
        let own = dir.path().to_path_buf();
        let at = Placement {
            memory: own.clone(),
            cpu: own.clone(),
            pids: own.clone(),
            cpuacct: None,
        };
        let limits = CgroupLimits {
            memory_bytes: (64 << 20) + 1,
            ..limits()
        };
        apply_limits(Version::V2, &at, &limits).unwrap();
        assert_eq!(
            content(own.join("memory.max")),
            "67108864",
            "rounded down to a page"
        );
        assert_eq!(content(own.join("memory.swap.max")), "0");
        assert_eq!(content(own.join("cpu.max")), "50000 100000");
        assert_eq!(content(own.join("pids.max")), "32");
    }

    #[test]
    fn a_limit_that_does_not_stick_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        control_files(dir.path(), &[("memory.max", "max")]);
        // Accepts the write, reads back empty: like a kernel that ignored the value.
        symlink("/dev/null", dir.path().join("pids.max")).unwrap();
        let own = dir.path().to_path_buf();
        let at = Placement {
            memory: own.clone(),
            cpu: own.clone(),
            pids: own.clone(),
            cpuacct: None,
        };
        control_files(&own, &[("cpu.max", "max 100000")]);
        match apply_limits(Version::V2, &at, &limits()) {
            Err(CgroupError::Mismatch { path, wrote, read }) => {
                assert_eq!(path, own.join("pids.max"));
                assert_eq!((wrote.as_str(), read.as_str()), ("32", ""));
            }
            other => panic!("expected a mismatch, got {other:?}"),
        }
    }

    #[test]
    fn a_missing_limit_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let own = dir.path().to_path_buf();
        let at = Placement {
            memory: own.clone(),
            cpu: own.clone(),
            pids: own.clone(),
            cpuacct: None,
        };
        let error = apply_limits(Version::V2, &at, &limits()).unwrap_err();
        assert!(
            matches!(&error, CgroupError::Io { op: "write", .. }),
            "{error:?}"
        );
        assert!(
            error
                .to_string()
                .starts_with(&format!("cannot write {}/memory.max: ", own.display())),
            "{error}"
        );
    }

    /// A cgroup over fake files; it owns no directories, so dropping it touches nothing.
    fn fake_cgroup(version: Version, dir: &Path, cpuacct: bool) -> Cgroup {
        let own = dir.to_path_buf();
        Cgroup {
            version,
            at: Placement {
                memory: own.clone(),
                cpu: own.clone(),
                pids: own.clone(),
                cpuacct: cpuacct.then_some(own),
            },
            dirs: Vec::new(),
        }
    }

    #[test]
    fn v1_oom_and_usage_are_parsed() {
        let dir = tempfile::tempdir().unwrap();
        control_files(
            dir.path(),
            &[
                (
                    "memory.oom_control",
                    "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
                ),
                ("memory.max_usage_in_bytes", "5242880\n"),
                ("cpuacct.usage", "1234567890\n"),
            ],
        );
        let cgroup = fake_cgroup(Version::V1, dir.path(), true);
        assert!(cgroup.oom_killed());
        assert_eq!(
            cgroup.usage(),
            CgroupUsage {
                cpu_ms: Some(1234),
                memory_peak_bytes: Some(5242880)
            }
        );
        assert_eq!(
            fake_cgroup(Version::V1, dir.path(), false).usage().cpu_ms,
            None
        );
    }

    #[test]
    fn v1_without_an_oom_kill_counter_reports_no_oom() {
        let dir = tempfile::tempdir().unwrap();
        control_files(
            dir.path(),
            &[
                ("memory.oom_control", "oom_kill_disable 0\nunder_oom 0\n"),
                ("memory.failcnt", "7"),
            ],
        );
        assert!(!fake_cgroup(Version::V1, dir.path(), false).oom_killed());
    }

    #[test]
    fn v2_oom_and_usage_are_parsed() {
        let dir = tempfile::tempdir().unwrap();
        control_files(
            dir.path(),
            &[
                (
                    "memory.events",
                    "low 0\nhigh 0\nmax 3\noom 1\noom_kill 0\noom_group_kill 0\n",
                ),
                (
                    "cpu.stat",
                    "usage_usec 2500\nuser_usec 2000\nsystem_usec 500\n",
                ),
            ],
        );
        let cgroup = fake_cgroup(Version::V2, dir.path(), false);
        assert!(!cgroup.oom_killed());
        assert_eq!(
            cgroup.usage(),
            CgroupUsage {
                cpu_ms: Some(2),
                memory_peak_bytes: None
            }
        );
        fs::write(dir.path().join("memory.events"), "oom 1\noom_kill 1\n").unwrap();
        fs::write(dir.path().join("memory.peak"), "4096\n").unwrap();
        assert!(cgroup.oom_killed());
        assert_eq!(cgroup.usage().memory_peak_bytes, Some(4096));
    }

    #[test]
    fn reap_stale_removes_only_dead_runners_cgroups() {
        let host = FakeHost::new().v2("/cg", "/", "memory cpu pids", "memory cpu pids");
        let layout = host.layout().unwrap();
        let own = host.dir("/cg", "/");
        // No pid reaches i32::MAX (pid_max is at most 2^22), so that runner is dead.
        let dead = own.join(format!("nanoclaw-{}-0-1", i32::MAX));
        let ours = own.join(format!("nanoclaw-{}-0-1", std::process::id()));
        let foreign = own.join("other-1");
        for dir in [&dead, &ours, &foreign] {
            fs::create_dir(dir).unwrap();
        }
        reap_stale(&layout);
        assert!(!dead.exists());
        assert!(ours.exists() && foreign.exists());
    }

    #[test]
    fn names_carry_the_runner_pid_and_are_unique() {
        let (a, b) = (unique_name(), unique_name());
        assert_ne!(a, b);
        assert_eq!(runner_pid(&a), Some(std::process::id()));
        assert_eq!(runner_pid("nanoclaw-x-1"), None);
    }

    fn is_root() -> bool {
        rustix::process::geteuid().is_root()
    }

    #[test]
    fn real_host_limits_a_process_and_leaves_nothing_behind() {
        if !is_root() {
            eprintln!("skipped: creating real cgroups needs root");
            return;
        }
        let layout = Layout::detect().unwrap();
        reap_stale(&layout);
        let cgroup = Cgroup::create(&layout, &limits()).unwrap();
        let at = cgroup.at.clone();
        let expected: &[(&Path, &str, &str)] = match cgroup.version() {
            Version::V1 => &[
                (&at.memory, "memory.limit_in_bytes", "67108864"),
                (&at.cpu, "cpu.cfs_period_us", "100000"),
                (&at.cpu, "cpu.cfs_quota_us", "50000"),
                (&at.pids, "pids.max", "32"),
            ],
            Version::V2 => &[
                (&at.memory, "memory.max", "67108864"),
                (&at.cpu, "cpu.max", "50000 100000"),
                (&at.pids, "pids.max", "32"),
            ],
        };
        for (dir, file, value) in expected {
            assert_eq!(
                content(dir.join(file)),
                *value,
                "{}",
                dir.join(file).display()
            );
        }
        let memsw = at.memory.join("memory.memsw.limit_in_bytes");
        if cgroup.version() == Version::V1 && memsw.exists() {
            assert_eq!(content(memsw), "67108864", "no swap on top");
        }

        let mut sleeper = Command::new("sleep").arg("30").spawn().unwrap();
        let pid = i32::try_from(sleeper.id()).unwrap();
        cgroup.add_process(pid).unwrap();
        let paths = cgroup.paths().to_vec();
        eprintln!("{} cgroup: {paths:?}", cgroup.version().as_str());
        for dir in &paths {
            assert_eq!(content(dir.join("cgroup.procs")), pid.to_string());
        }
        assert!(!cgroup.oom_killed());
        assert!(cgroup.usage().memory_peak_bytes.is_some());

        cgroup.remove().unwrap();
        assert!(
            sleeper.wait().unwrap().code().is_none(),
            "killed by a signal"
        );
        for dir in &paths {
            assert!(!dir.exists(), "{} left behind", dir.display());
        }
    }

    #[test]
    fn real_host_memory_limit_oom_kills_and_is_reported() {
        if !is_root() {
            eprintln!("skipped: creating real cgroups needs root");
            return;
        }
        let layout = Layout::detect().unwrap();
        let limits = CgroupLimits {
            memory_bytes: 16 << 20,
            ..limits()
        };
        let cgroup = Cgroup::create(&layout, &limits).unwrap();
        // The shell waits for a line so it joins the cgroup before it allocates 64 MiB.
        let mut hog = Command::new("sh")
            .args([
                "-c",
                "read go; x=$(head -c 67108864 /dev/zero | tr '\\0' a); echo ${#x}",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        cgroup
            .add_process(i32::try_from(hog.id()).unwrap())
            .unwrap();
        hog.stdin.take().unwrap().write_all(b"go\n").unwrap();
        let status = hog.wait().unwrap();
        assert!(!status.success(), "allocating past the limit must fail");
        assert!(cgroup.oom_killed());
        let paths = cgroup.paths().to_vec();
        drop(cgroup);
        assert!(
            paths.iter().all(|dir| !dir.exists()),
            "drop removes the cgroup"
        );
    }
}
