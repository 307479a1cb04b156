//! Exhausting what the host shares: processes, memory, CPU time and disk. Limits stop these
//! by failing a call (fork, write) or by killing the probe (OOM killer, timeout); in the second
//! case the caller sees the death, not a report.

use std::fs::{self, OpenOptions};
use std::hint::black_box;
use std::io::{self, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::attempt::wait_for;
use crate::{required, Finding};

pub(crate) fn fork_bomb(args: &[String]) -> Result<Finding, String> {
    let wanted: usize = required(args, 0, "N")?;
    // SAFETY: getpid has no preconditions.
    let parent = unsafe { libc::getpid() };
    let mut children = Vec::with_capacity(wanted);
    let mut failure = None;
    while children.len() < wanted {
        // SAFETY: the child only makes raw calls in `idle_until_killed`.
        match unsafe { libc::fork() } {
            -1 => {
                failure = Some(io::Error::last_os_error());
                break;
            }
            0 => idle_until_killed(parent),
            pid => children.push(pid),
        }
    }
    for &pid in &children {
        // SAFETY: kill takes no pointers; each pid is an unreaped child of ours.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    for &pid in &children {
        // Each ends by SIGKILL, which wait_for reports as an error.
        let _ = wait_for(pid);
    }
    let forked = children.len();
    Ok(match failure {
        Some(e) => Finding::blocked(format!(
            "forked {forked} of {wanted} children, then fork failed: {e}"
        )),
        None => Finding::escaped(format!("forked all {wanted} children")),
    })
}

fn idle_until_killed(parent: libc::pid_t) -> ! {
    // SAFETY: raw calls only. The death signal makes the kernel kill this child should the
    // probe die before it can; checking the parent afterwards closes the race with that.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
        if libc::getppid() != parent {
            libc::_exit(0);
        }
        loop {
            libc::pause();
        }
    }
}

pub(crate) fn memory_hog(args: &[String]) -> Result<Finding, String> {
    const STEP_MIB: usize = 16;
    let wanted: usize = required(args, 0, "MIB")?;
    let mut held = Vec::new();
    let mut done = 0;
    while done < wanted {
        let step = STEP_MIB.min(wanted - done);
        let mut chunk: Vec<u8> = Vec::new();
        if let Err(e) = chunk.try_reserve_exact(step << 20) {
            return Ok(Finding::blocked(format!(
                "allocation failed after {done} MiB: {e}"
            )));
        }
        // Writing every byte makes the kernel back every page.
        chunk.resize(step << 20, 0xa5);
        held.push(black_box(chunk));
        done += step;
        eprintln!("memory-hog: {done} of {wanted} MiB allocated and touched");
    }
    Ok(Finding::escaped(format!(
        "allocated and touched {done} MiB"
    )))
}

pub(crate) fn spin(args: &[String]) -> Result<Finding, String> {
    let length = seconds(args)?;
    let start = Instant::now();
    let mut turns = 0u64;
    while start.elapsed() < length {
        turns = black_box(turns.wrapping_add(1));
    }
    Ok(Finding::escaped(format!(
        "spun for {:.2} s",
        start.elapsed().as_secs_f64()
    )))
}

pub(crate) fn sleep(args: &[String]) -> Result<Finding, String> {
    let length = seconds(args)?;
    std::thread::sleep(length);
    Ok(Finding::escaped(format!(
        "slept for {:.2} s",
        length.as_secs_f64()
    )))
}

fn seconds(args: &[String]) -> Result<Duration, String> {
    let secs: f64 = required(args, 0, "SECONDS")?;
    Duration::try_from_secs_f64(secs).map_err(|e| format!("bad SECONDS {secs}: {e}"))
}

pub(crate) fn disk_fill(args: &[String]) -> Result<Finding, String> {
    let path: PathBuf = required(args, 0, "PATH")?;
    let wanted: u64 = required(args, 1, "MIB")?;
    let shown = path.display();
    // SAFETY: changes only this process's disposition of SIGXFSZ, so that passing
    // RLIMIT_FSIZE fails the write with EFBIG instead of killing the probe.
    unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };
    let mut file = match OpenOptions::new().write(true).create_new(true).open(&path) {
        Ok(file) => file,
        Err(e) => return Ok(Finding::not_attempted(format!("create {shown}: {e}"))),
    };
    let block = vec![0xa5u8; 1 << 20];
    let mut written = 0;
    let mut stopped = None;
    while written < wanted {
        if let Err(e) = file.write_all(&block) {
            stopped = Some(e);
            break;
        }
        written += 1;
    }
    if stopped.is_none() {
        // Some filesystems report a full disk only when the data reaches it.
        stopped = file.sync_all().err();
    }
    drop(file);
    let finding = match stopped {
        Some(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::ENOSPC | libc::EFBIG | libc::EDQUOT)
            ) =>
        {
            Finding::blocked(format!(
                "wrote {written} of {wanted} MiB to {shown}, then: {e}"
            ))
        }
        Some(e) => Finding::escaped(format!(
            "wrote {written} of {wanted} MiB to {shown}, then: {e} (not a space limit)"
        )),
        None => Finding::escaped(format!("wrote {wanted} MiB to {shown}")),
    };
    Ok(finding.with_cleanup(fs::remove_file(&path), &shown))
}
