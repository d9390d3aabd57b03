//! What kind of program is about to run: whether the preload library can enter it. A program
//! without an ELF interpreter (`PT_INTERP`) is static, and the dynamic loader never reads
//! `LD_PRELOAD` for it; a Go program (a `.go.buildinfo` section or a Go build-id note) makes its
//! network calls itself even when it is dynamic. Scripts are judged by their interpreter.

use std::io::Read;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A dynamically linked program: the library enters it.
    Dynamic,
    /// A statically linked program (glibc, musl, static-pie).
    Static,
    /// A Go program (static or not): it makes its own system calls.
    Go { dynamic: bool },
    /// Not an ELF file we can read (the kernel will say what it is).
    Unknown,
}

impl Kind {
    /// True when only the kernel guard can socksify it.
    pub fn needs_guard(&self) -> bool {
        matches!(self, Kind::Static | Kind::Go { .. })
    }

    pub fn describe(&self) -> &'static str {
        match self {
            Kind::Dynamic => "a dynamically linked program",
            Kind::Static => "a statically linked program",
            Kind::Go { dynamic: false } => "a static Go program",
            Kind::Go { dynamic: true } => "a Go program (it makes its own system calls)",
            Kind::Unknown => "a program of unknown kind",
        }
    }
}

/// The kind of the program `path` (following `#!` to the interpreter, twice at most).
pub fn inspect(path: &Path) -> Kind {
    inspect_depth(path, 0)
}

fn inspect_depth(path: &Path, depth: usize) -> Kind {
    let Ok(bytes) = read_head(path) else { return Kind::Unknown };
    if let Some(rest) = bytes.strip_prefix(b"#!") {
        if depth >= 2 {
            return Kind::Unknown;
        }
        let line = rest.split(|&b| b == b'\n').next().unwrap_or(&[]);
        let text = String::from_utf8_lossy(line);
        let mut words = text.split_whitespace();
        let Some(interp) = words.next() else { return Kind::Unknown };
        // `#!/usr/bin/env prog`: env itself is dynamic, but prog is what runs.
        if interp.ends_with("/env") {
            if let Some(prog) = words.find(|w| !w.starts_with('-')) {
                if let Some(found) = which(prog) {
                    return inspect_depth(&found, depth + 1);
                }
            }
        }
        return inspect_depth(Path::new(interp), depth + 1);
    }
    match parse(path) {
        Some(k) => k,
        None => Kind::Unknown,
    }
}

fn read_head(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut f = std::fs::File::open(path)?;
    let mut buf = vec![0u8; 256];
    let n = f.read(&mut buf)?;
    buf.truncate(n);
    Ok(buf)
}

/// `prog` looked up in PATH, as execvp would.
pub fn which(prog: &str) -> Option<PathBuf> {
    if prog.contains('/') {
        return Some(PathBuf::from(prog));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(prog)).find(|p| p.is_file())
}

fn parse(path: &Path) -> Option<Kind> {
    use std::os::unix::fs::FileExt;
    // Only the headers are read: programs can be hundreds of megabytes.
    let f = std::fs::File::open(path).ok()?;
    let size = f.metadata().ok()?.len() as usize;
    let read = |off: usize, len: usize| -> Option<Vec<u8>> {
        if len > 16 << 20 || off.checked_add(len)? > size {
            return None;
        }
        let mut buf = vec![0u8; len];
        f.read_exact_at(&mut buf, off as u64).ok()?;
        Some(buf)
    };
    let h = read(0, 64)?;
    if &h[..4] != b"\x7fELF" || h[4] != 2 || h[5] != 1 {
        return None; // ELF64 little-endian only
    }
    let u16_at =
        |d: &[u8], o: usize| -> Option<u16> { Some(u16::from_le_bytes(d.get(o..o + 2)?.try_into().ok()?)) };
    let u32_at =
        |d: &[u8], o: usize| -> Option<u32> { Some(u32::from_le_bytes(d.get(o..o + 4)?.try_into().ok()?)) };
    let u64_at =
        |d: &[u8], o: usize| -> Option<u64> { Some(u64::from_le_bytes(d.get(o..o + 8)?.try_into().ok()?)) };
    let (phoff, shoff) = (u64_at(&h, 0x20)? as usize, u64_at(&h, 0x28)? as usize);
    let (phentsize, phnum) = (u16_at(&h, 0x36)? as usize, u16_at(&h, 0x38)? as usize);
    let (shentsize, shnum, shstrndx) =
        (u16_at(&h, 0x3a)? as usize, u16_at(&h, 0x3c)? as usize, u16_at(&h, 0x3e)? as usize);
    let mut dynamic = false;
    let mut go = false;
    let phs = read(phoff, phnum * phentsize)?;
    for i in 0..phnum {
        let ph = i * phentsize;
        match u32_at(&phs, ph)? {
            3 => dynamic = true, // PT_INTERP
            4 => {
                // PT_NOTE: a Go build id is note "Go", type 4.
                let (off, len) = (u64_at(&phs, ph + 8)? as usize, u64_at(&phs, ph + 32)? as usize);
                if let Some(notes) = read(off, len.min(1 << 16)) {
                    go |= notes_have_go(&notes);
                }
            }
            _ => {}
        }
    }
    if shoff != 0 && shnum > 0 && shstrndx < shnum {
        if let Some(shs) = read(shoff, shnum * shentsize) {
            let strtab_hdr = shstrndx * shentsize;
            let (str_off, str_size) =
                (u64_at(&shs, strtab_hdr + 0x18)? as usize, u64_at(&shs, strtab_hdr + 0x20)? as usize);
            let strtab = read(str_off, str_size)?;
            for i in 0..shnum {
                let name_off = u32_at(&shs, i * shentsize)? as usize;
                let name = strtab.get(name_off..)?.split(|&b| b == 0).next()?;
                go |= name == b".go.buildinfo" || name == b".note.go.buildid";
            }
        }
    }
    Some(match (go, dynamic) {
        (true, dynamic) => Kind::Go { dynamic },
        (false, true) => Kind::Dynamic,
        (false, false) => Kind::Static,
    })
}

fn notes_have_go(mut notes: &[u8]) -> bool {
    while notes.len() >= 12 {
        let namesz = u32::from_le_bytes(notes[0..4].try_into().expect("4")) as usize;
        let descsz = u32::from_le_bytes(notes[4..8].try_into().expect("4")) as usize;
        let ty = u32::from_le_bytes(notes[8..12].try_into().expect("4"));
        let name_end = 12 + namesz;
        if notes.get(12..name_end).is_some_and(|n| n.starts_with(b"Go\0")) && ty == 4 {
            return true;
        }
        let next = 12 + namesz.div_ceil(4) * 4 + descsz.div_ceil(4) * 4;
        if next > notes.len() || next == 0 {
            return false;
        }
        notes = &notes[next..];
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_programs_are_recognised() {
        assert_eq!(inspect(Path::new("/bin/sh")), Kind::Dynamic);
        assert_eq!(inspect(Path::new("/nonexistent/prog")), Kind::Unknown);
        // The test binary itself is a dynamic Rust program.
        assert_eq!(inspect(&std::env::current_exe().unwrap()), Kind::Dynamic);
    }

    #[test]
    fn scripts_are_judged_by_their_interpreter() {
        let dir = std::env::temp_dir().join(format!("sfy-elf-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let script = dir.join("s");
        std::fs::write(&script, "#!/bin/sh\necho hi\n").unwrap();
        assert_eq!(inspect(&script), Kind::Dynamic);
        std::fs::write(&script, "#!/usr/bin/env sh\necho hi\n").unwrap();
        assert_eq!(inspect(&script), Kind::Dynamic);
        std::fs::write(&script, "not a program").unwrap();
        assert_eq!(inspect(&script), Kind::Unknown);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
