//! Landlock: the file-system rules the kernel enforces in addition to the mount layout.
//! Read everywhere the sandbox can see, execute only beneath read-only mounts, write only
//! beneath writable mounts and tmpfs. Also scopes signals and abstract Unix sockets to the
//! sandbox (ABI 6).
//!
//! A kernel without Landlock (or with an older ABI) is reported as such in the outcome,
//! never hidden: the status string says "none" or "partial" and why.

use std::path::PathBuf;

use ::landlock::{
    Access, AccessFs, BitFlags, PathBeneath, PathFd, Ruleset, RulesetAttr, RulesetCreatedAttr,
    RulesetStatus, Scope, ABI,
};
use nanoclaw_spec::{LandlockStatus, SetupError};

use crate::rootfs::Layout;

/// The newest ABI whose rights the rules below are written for.
const TARGET: ABI = ABI::V6;

fn fail(step: &str, err: impl std::fmt::Display) -> SetupError {
    SetupError {
        step: step.to_string(),
        path: None,
        errno: None,
        message: err.to_string(),
    }
}

fn rule(path: &PathBuf, access: BitFlags<AccessFs>) -> Result<PathBeneath<PathFd>, SetupError> {
    let fd = PathFd::new(path).map_err(|e| SetupError {
        step: "open path for a landlock rule".into(),
        path: Some(path.display().to_string()),
        errno: None,
        message: e.to_string(),
    })?;
    // Directory rights on a file make the whole ruleset "partially enforced"; a file gets
    // only the rights that mean something for a file.
    let access = if path.is_dir() {
        access
    } else {
        access & AccessFs::from_file(TARGET)
    };
    Ok(PathBeneath::new(fd, access))
}

/// Restricts the calling process (and everything it starts) to `layout`.
pub fn restrict(layout: &Layout) -> Result<LandlockStatus, SetupError> {
    let read = AccessFs::ReadFile | AccessFs::ReadDir;
    let read_exec = read | AccessFs::Execute;
    let read_write = AccessFs::from_all(TARGET) & !AccessFs::Execute;
    let devices = read | AccessFs::WriteFile | AccessFs::IoctlDev;

    let mut rules = vec![rule(&"/".into(), read)?, rule(&"/dev".into(), devices)?];
    for path in &layout.read_exec {
        rules.push(rule(path, read_exec)?);
    }
    for path in &layout.read_write {
        rules.push(rule(path, read_write)?);
    }

    let status = Ruleset::default()
        .handle_access(AccessFs::from_all(TARGET))
        .and_then(|r| r.scope(Scope::from_all(TARGET)))
        .and_then(|r| r.create())
        .and_then(|r| r.add_rules(rules.into_iter().map(Ok::<_, ::landlock::RulesetError>)))
        .and_then(|r| r.restrict_self())
        .map_err(|e| fail("apply landlock rules", e))?;

    let abi = match status.landlock {
        ::landlock::LandlockStatus::Available {
            effective_abi,
            kernel_abi,
        } => kernel_abi.map_or(effective_abi as u32, |v| v as u32),
        _ => 0,
    };
    let (status, reason) = match status.ruleset {
        RulesetStatus::FullyEnforced => ("full", None),
        RulesetStatus::PartiallyEnforced => (
            "partial",
            Some(format!(
                "the kernel's landlock ABI {abi} enforces only some of the rights nanoclaw asks for (written for ABI {})",
                TARGET as u32
            )),
        ),
        RulesetStatus::NotEnforced => (
            "none",
            Some("the kernel does not support landlock or has it disabled".to_string()),
        ),
    };
    Ok(LandlockStatus {
        status: status.to_string(),
        abi,
        reason,
    })
}
