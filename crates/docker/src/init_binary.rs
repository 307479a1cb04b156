//! nanoclaw itself as a container's init (`nanoclaw_native::container`): its binary,
//! mounted read-only at `/.nanoclaw`, and, when it is dynamically linked, the loader and
//! shared libraries it runs with, mounted beside it and named to the loader explicitly, so
//! that it runs in any image whatever (or whether) libc the image has.
//!
//! Only files of the host's own nanoclaw are mounted, each read-only, and nothing of the
//! image is loaded into it (the loader is given its library path; it still reads an image's
//! `/etc/ld.so.preload`, which only the image's author can write: the root is read-only).

use std::path::{Path, PathBuf};

use nanoclaw_spec::BackendError;

/// Where the init's files are inside a container.
pub const DIR_INSIDE: &str = "/.nanoclaw";
/// The named pipe the init reports on (read-only, as every mount here).
pub const REPORT_INSIDE: &str = "/.nanoclaw/report";
/// The named pipe whose end of file tells the init the runner is gone (read-only).
pub const LIFELINE_INSIDE: &str = "/.nanoclaw/lifeline";

/// A nanoclaw binary that can be a container's init, with what it needs to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitBinary {
    binary: PathBuf,
    /// The dynamic loader (first) and the shared libraries; empty for a static binary.
    libraries: Vec<PathBuf>,
}

impl InitBinary {
    /// The running nanoclaw: its executable, and the loader and libraries mapped into this
    /// process when it is dynamically linked.
    pub fn current() -> Result<Self, BackendError> {
        let locate = |e| BackendError::io("locate the nanoclaw binary", e);
        let binary = std::env::current_exe().map_err(locate)?;
        let Some(loader) = interpreter(&binary).map_err(locate)? else {
            return Ok(InitBinary {
                binary,
                libraries: Vec::new(),
            });
        };
        let maps = std::fs::read_to_string("/proc/self/maps").map_err(locate)?;
        let loader = std::fs::canonicalize(&loader).map_err(locate)?;
        let mut libraries = vec![loader];
        for library in mapped_libraries(&maps) {
            if !libraries.contains(&library) {
                libraries.push(library);
            }
        }
        Ok(InitBinary { binary, libraries })
    }

    /// A static nanoclaw binary at `binary` (e.g. one built for musl). A dynamically
    /// linked one is refused: only the running process knows its libraries.
    pub fn static_at(binary: PathBuf) -> Result<Self, BackendError> {
        let what = |e| BackendError::io(format!("read {}", binary.display()), e);
        match interpreter(&binary).map_err(what)? {
            None => Ok(InitBinary {
                binary,
                libraries: Vec::new(),
            }),
            Some(_) => Err(BackendError::Invalid(format!(
                "{} is dynamically linked; name a static nanoclaw build",
                binary.display()
            ))),
        }
    }

    /// The host files to mount read-only, each with its path inside.
    pub fn mounts(&self) -> Vec<(PathBuf, PathBuf)> {
        let inside = Path::new(DIR_INSIDE);
        let mut mounts = vec![(self.binary.clone(), inside.join("nanoclaw"))];
        for library in &self.libraries {
            if let Some(name) = library.file_name() {
                mounts.push((library.clone(), inside.join("lib").join(name)));
            }
        }
        mounts
    }

    /// Every path the docker backend mounts read-only into a container for its init.
    pub fn paths_inside(&self) -> Vec<PathBuf> {
        let mounts = self.mounts().into_iter().map(|(_, inside)| inside);
        mounts
            .chain([REPORT_INSIDE, LIFELINE_INSIDE].map(PathBuf::from))
            .collect()
    }

    /// The argv that runs this nanoclaw inside a container (arguments follow): the binary,
    /// behind its loader when it is dynamically linked.
    pub fn command(&self) -> Vec<String> {
        let inside = |p: &str| format!("{DIR_INSIDE}/{p}");
        let mut argv = Vec::new();
        if let Some(name) = self.libraries.first().and_then(|l| l.file_name()) {
            argv.push(inside(&format!("lib/{}", name.to_string_lossy())));
            argv.push("--library-path".into());
            argv.push(inside("lib"));
        }
        argv.push(inside("nanoclaw"));
        argv
    }

    /// The argv that starts the init inside the container with `arguments`.
    pub fn entrypoint(&self, arguments: String) -> Vec<String> {
        let mut argv = self.command();
        argv.push(nanoclaw_spec::container::CONTAINER_INIT_ARG.into());
        argv.push(arguments);
        argv
    }
}

/// The shared objects a process has mapped, from its `/proc/PID/maps`.
fn mapped_libraries(maps: &str) -> Vec<PathBuf> {
    maps.lines()
        .filter_map(|line| line.split_whitespace().nth(5))
        .filter(|path| path.starts_with('/') && path.contains(".so"))
        .map(PathBuf::from)
        .collect()
}

/// The program interpreter (`PT_INTERP`) an ELF executable names: `None` for a static one.
/// Reads only the ELF header, the program headers and the interpreter's name (every docker
/// run asks this of the nanoclaw binary, which is megabytes long).
fn interpreter(path: &Path) -> std::io::Result<Option<PathBuf>> {
    use std::os::unix::fs::FileExt;
    const PT_INTERP: u32 = 3;
    // The size of an ELF64 header, and the part of a program header read (to p_filesz).
    const EHDR: usize = 64;
    const PHDR_READ: usize = 0x28;
    let file = std::fs::File::open(path)?;
    let bad = || std::io::Error::other(format!("{} is not a 64-bit ELF file", path.display()));
    let read = |at: u64, len: usize| {
        let mut buf = vec![0u8; len];
        file.read_exact_at(&mut buf, at)
            .map(|()| buf)
            .map_err(|_| bad())
    };
    let u16_at = |b: &[u8], at: usize| b.get(at..at + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u32_at = |b: &[u8], at: usize| b.get(at..at + 4)?.try_into().ok().map(u32::from_le_bytes);
    let u64_at = |b: &[u8], at: usize| b.get(at..at + 8)?.try_into().ok().map(u64::from_le_bytes);
    let header = read(0, EHDR)?;
    if header.get(..6) != Some(&[0x7f, b'E', b'L', b'F', 2, 1][..]) {
        return Err(bad());
    }
    // e_phoff (0x20), e_phentsize (0x36), e_phnum (0x38); in each program header p_type
    // (0x00), p_offset (0x08) and p_filesz (0x20).
    let (Some(offset), Some(size), Some(count)) = (
        u64_at(&header, 0x20),
        u16_at(&header, 0x36).map(usize::from),
        u16_at(&header, 0x38).map(usize::from),
    ) else {
        return Err(bad());
    };
    if size < PHDR_READ {
        return Err(bad());
    }
    let table = read(offset, size * count)?;
    for entry in table.chunks_exact(size) {
        if u32_at(entry, 0) != Some(PT_INTERP) {
            continue;
        }
        let (Some(start), Some(len)) = (u64_at(entry, 0x08), u64_at(entry, 0x20)) else {
            return Err(bad());
        };
        let name = read(start, usize::try_from(len).map_err(|_| bad())?.min(4096))?;
        let name = name.split(|&b| b == 0).next().unwrap_or_default();
        return Ok(Some(PathBuf::from(
            String::from_utf8_lossy(name).into_owned(),
        )));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dynamic_binary_names_its_loader_and_a_static_one_none() {
        let sh = interpreter(Path::new("/bin/sh")).ok().flatten();
        assert!(
            sh.is_some_and(|l| l.to_string_lossy().contains("ld-linux")),
            "/bin/sh is dynamic"
        );
        let busybox = Path::new("/bin/busybox");
        if busybox.exists() {
            assert_eq!(interpreter(busybox).ok(), Some(None));
        }
        assert!(interpreter(Path::new("/etc/passwd")).is_err());
        assert!(InitBinary::static_at("/bin/sh".into()).is_err());
    }

    #[test]
    fn this_process_ships_its_loader_first_and_its_libraries() {
        // The test binary is dynamically linked like a default nanoclaw build.
        let init = InitBinary::current().unwrap_or_else(|e| panic!("{e}"));
        let mounts = init.mounts();
        assert_eq!(mounts[0].1, Path::new("/.nanoclaw/nanoclaw"));
        assert!(mounts
            .iter()
            .any(|(_, inside)| inside.ends_with("libc.so.6")));
        let argv = init.entrypoint("{}".into());
        assert!(argv[0].starts_with("/.nanoclaw/lib/ld-linux"), "{argv:?}");
        assert_eq!(argv[1..3], ["--library-path", "/.nanoclaw/lib"]);
        assert_eq!(argv[3], "/.nanoclaw/nanoclaw");
    }

    #[test]
    fn maps_lines_give_their_shared_objects() {
        let maps = "55d0-55d1 r--p 00000000 fe:01 12 /usr/bin/nanoclaw\n\
                    7f00-7f01 r-xp 00000000 fe:01 13 /usr/lib/x86_64-linux-gnu/libc.so.6\n\
                    7f02-7f03 rw-p 00000000 00:00 0 \n\
                    7ffc-7ffd rw-p 00000000 00:00 0 [stack]\n";
        assert_eq!(
            mapped_libraries(maps),
            [PathBuf::from("/usr/lib/x86_64-linux-gnu/libc.so.6")]
        );
    }
}
