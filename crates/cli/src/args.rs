//! The parsers of `nanoclaw run`'s mount options (`-v`, `--mount`, `--tmpfs`): text the
//! user typed to the `Mount` and `Tmpfs` of a spec. Pure functions (bar the current
//! directory a relative host path is made absolute against), so that they can be fuzzed.
//! They must never open, follow or check a host path: the backend does.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use nanoclaw_spec::{parse_bytes, Mount, Tmpfs};

/// `path` if it is absolute; `what` names it in the error.
pub fn absolute(what: &str, path: &str) -> Result<PathBuf> {
    let path = PathBuf::from(path);
    if !path.is_absolute() {
        bail!("{what} {} must be an absolute path", path.display());
    }
    Ok(path)
}

/// A host path as given, made absolute against the current directory (as `docker -v`
/// does not, but a person typing `-v ./repo:/work` means).
pub fn host_path(path: &str) -> Result<PathBuf> {
    let path = PathBuf::from(path);
    if path.is_absolute() {
        return Ok(path);
    }
    Ok(std::env::current_dir()
        .context("read the current directory")?
        .join(path))
}

/// One `-v HOST:PATH[:ro|rw]` (read-only unless `rw`).
pub fn parse_volume(value: &str) -> Result<Mount> {
    let parts: Vec<&str> = value.split(':').collect();
    let (src, dst, mode) = match parts.as_slice() {
        [src, dst] => (*src, *dst, "ro"),
        [src, dst, mode] => (*src, *dst, *mode),
        _ => bail!("invalid -v {value:?}: expected HOST:PATH[:ro|rw]"),
    };
    let writable = match mode {
        "ro" => false,
        "rw" => true,
        other => bail!("invalid -v {value:?}: mode {other:?} is not ro or rw"),
    };
    Ok(Mount {
        src: host_path(src)?,
        dst: absolute("mount target", dst)?,
        writable,
    })
}

/// One `--mount type=bind,src=HOST,dst=PATH[,readonly|rw]`, Docker's syntax.
pub fn parse_mount(value: &str) -> Result<Mount> {
    let (mut src, mut dst, mut writable) = (None, None, false);
    for field in value.split(',') {
        let (key, val) = field.split_once('=').unwrap_or((field, ""));
        match (key, val) {
            ("type", "bind") => {}
            ("type", other) => bail!("invalid --mount {value:?}: type {other:?} is not supported (use type=bind, or --tmpfs)"),
            ("src" | "source", v) if !v.is_empty() => src = Some(host_path(v)?),
            ("dst" | "destination" | "target", v) if !v.is_empty() => dst = Some(absolute("mount target", v)?),
            ("readonly" | "ro", "" | "true" | "1") => writable = false,
            ("readonly" | "ro", "false" | "0") | ("rw", "" | "true" | "1") => writable = true,
            _ => bail!("invalid --mount {value:?}: unknown or malformed field {field:?} (valid: type=bind, src=, dst=, readonly, rw)"),
        }
    }
    match (src, dst) {
        (Some(src), Some(dst)) => Ok(Mount { src, dst, writable }),
        _ => bail!("invalid --mount {value:?}: both src= and dst= are required"),
    }
}

/// One `--tmpfs PATH[:size=N]` (64m unless sized).
pub fn parse_tmpfs(value: &str) -> Result<Tmpfs> {
    let (path, options) = value.split_once(':').unwrap_or((value, ""));
    let mut size_bytes = 64 << 20;
    for option in options.split(',').filter(|o| !o.is_empty()) {
        match option.split_once('=') {
            Some(("size", size)) => size_bytes = parse_bytes(size)?,
            _ => bail!("invalid --tmpfs {value:?}: unknown option {option:?} (valid: size=N)"),
        }
    }
    Ok(Tmpfs {
        dst: absolute("tmpfs", path)?,
        size_bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volumes_are_read_only_unless_rw() {
        let m = parse_volume("/srv:/data").unwrap();
        assert!(!m.writable);
        assert!(parse_volume("/srv:/data:rw").unwrap().writable);
        assert!(!parse_volume("/srv:/data:ro").unwrap().writable);
        assert!(parse_volume("/srv:/data:rx").is_err());
        assert!(parse_volume("/srv:data").is_err());
    }

    #[test]
    fn mount_syntax_follows_docker() {
        let m = parse_mount("type=bind,src=/srv,dst=/data").unwrap();
        assert_eq!(
            (m.src.to_str(), m.dst.to_str(), m.writable),
            (Some("/srv"), Some("/data"), false)
        );
        assert!(
            parse_mount("type=bind,source=/srv,target=/data,rw")
                .unwrap()
                .writable
        );
        assert!(
            !parse_mount("type=bind,source=/srv,target=/data,readonly")
                .unwrap()
                .writable
        );
        assert!(parse_mount("type=volume,src=x,dst=/y").is_err());
        assert!(parse_mount("type=bind,src=/srv").is_err());
        assert!(parse_mount("type=bind,src=/srv,dst=/d,exec").is_err());
    }

    #[test]
    fn tmpfs_takes_a_size() {
        let t = parse_tmpfs("/scratch:size=8m").unwrap();
        assert_eq!(t.size_bytes, 8 << 20);
        assert!(parse_tmpfs("/scratch:mode=777").is_err());
        assert!(parse_tmpfs("scratch").is_err());
    }
}
