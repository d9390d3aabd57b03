//! AF_UNIX addresses made on the program's behalf. A path names a file in the program's view —
//! relative to its working directory, under its root, with its credentials — not the
//! supervisor's: the path is opened (O_PATH) through `/proc/TID/cwd` or `/proc/TID/root` with the
//! program's filesystem ids, and the socket is then reached through `/proc/self/fd/N`, which
//! names that very inode. Abstract and unnamed addresses are used as they are.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use crate::sys;

/// An AF_UNIX address the supervisor can use for the program: the program's own bytes, or a
/// `/proc/self/fd/N` path kept valid by `_pin`.
pub struct UnixAddr {
    pub bytes: Vec<u8>,
    _pin: Option<OwnedFd>,
}

/// The pathname inside a sockaddr_un, if it names one (not abstract, not unnamed).
pub fn pathname(bytes: &[u8]) -> Option<&[u8]> {
    if bytes.len() <= 2 || u16::from_ne_bytes([bytes[0], bytes[1]]) != libc::AF_UNIX as u16 || bytes[2] == 0 {
        return None;
    }
    let path = &bytes[2..];
    Some(&path[..path.iter().position(|&b| b == 0).unwrap_or(path.len())])
}

/// Runs `f` with this thread's filesystem credentials set to those of thread `tid` (only
/// when the supervisor runs as root: otherwise they are the same already).
pub fn as_program<T>(tid: libc::pid_t, f: impl FnOnce() -> T) -> io::Result<T> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(f());
    }
    let status = std::fs::read_to_string(format!("/proc/{tid}/status"))?;
    let field = |name: &str| status.lines().find_map(|l| l.strip_prefix(name)).map(str::split_whitespace);
    let fsuid: u32 = field("Uid:").and_then(|mut f| f.nth(3)?.parse().ok()).unwrap_or(0);
    let fsgid: u32 = field("Gid:").and_then(|mut f| f.nth(3)?.parse().ok()).unwrap_or(0);
    let groups: Vec<libc::gid_t> =
        field("Groups:").map(|f| f.filter_map(|g| g.parse().ok()).collect()).unwrap_or_default();
    if fsuid == 0 && fsgid == 0 {
        return Ok(f());
    }
    // Raw system calls: per thread (glibc's wrappers would change every thread's ids).
    let mut ours = [0 as libc::gid_t; 256];
    // SAFETY: getgroups into a local array.
    let n = unsafe { libc::syscall(libc::SYS_getgroups, ours.len() as libc::c_int, ours.as_mut_ptr()) };
    let ours = &ours[..n.max(0) as usize];
    // SAFETY: per-thread credential changes, undone below.
    unsafe {
        libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr());
        libc::syscall(libc::SYS_setfsgid, fsgid);
        libc::syscall(libc::SYS_setfsuid, fsuid);
    }
    let r = f();
    // SAFETY: back to the supervisor's own (root) ids.
    unsafe {
        libc::syscall(libc::SYS_setfsuid, 0);
        libc::syscall(libc::SYS_setfsgid, 0);
        libc::syscall(libc::SYS_setgroups, ours.len(), ours.as_ptr());
    }
    Ok(r)
}

/// The address to use for the program's AF_UNIX address `bytes`: opens a pathname where the
/// program would find it. Call inside `as_program`. Errors are the errnos the program's own
/// call would get (ENOENT, EACCES, ELOOP, ENOTDIR…).
pub fn resolve(tid: libc::pid_t, bytes: &[u8]) -> Result<UnixAddr, i32> {
    let Some(path) = pathname(bytes) else { return Ok(UnixAddr { bytes: bytes.to_vec(), _pin: None }) };
    let absolute = path.first() == Some(&b'/');
    let base = if absolute { "root" } else { "cwd" };
    let dir = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(format!("/proc/{tid}/{base}"))
        .map_err(|e| sys::errno(&e))?;
    let rel: &[u8] = if absolute { &path[1..] } else { path };
    let rel = if rel.is_empty() { b"." as &[u8] } else { rel };
    let c = CString::new(rel).map_err(|_| libc::EINVAL)?;
    // openat2 RESOLVE_IN_ROOT keeps absolute symlinks inside the program's root.
    #[repr(C)]
    struct OpenHow {
        flags: u64,
        mode: u64,
        resolve: u64,
    }
    const RESOLVE_IN_ROOT: u64 = 0x10;
    let how = OpenHow {
        flags: (libc::O_PATH | libc::O_CLOEXEC) as u64,
        mode: 0,
        resolve: if absolute { RESOLVE_IN_ROOT } else { 0 },
    };
    let mut fd = sys::syscall!(
        libc::SYS_openat2,
        dir.as_raw_fd(),
        c.as_ptr(),
        &how as *const OpenHow,
        std::mem::size_of::<OpenHow>()
    );
    if matches!(&fd, Err(e) if e.raw_os_error() == Some(libc::ENOSYS)) {
        fd = sys::syscall!(libc::SYS_openat, dir.as_raw_fd(), c.as_ptr(), libc::O_PATH | libc::O_CLOEXEC);
    }
    let pin = sys::owned(fd.map_err(|e| sys::errno(&e))?);
    let proc_path = format!("/proc/self/fd/{}", pin.as_raw_fd());
    let mut out = Vec::with_capacity(2 + proc_path.len() + 1);
    out.extend_from_slice(&(libc::AF_UNIX as u16).to_ne_bytes());
    out.extend_from_slice(proc_path.as_bytes());
    out.push(0);
    Ok(UnixAddr { bytes: out, _pin: Some(pin) })
}

use std::os::unix::fs::OpenOptionsExt;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pathnames_abstract_and_unnamed_addresses() {
        let mut a = (libc::AF_UNIX as u16).to_ne_bytes().to_vec();
        assert_eq!(pathname(&a), None, "unnamed");
        a.extend_from_slice(b"\0abstract");
        assert_eq!(pathname(&a), None);
        let mut p = (libc::AF_UNIX as u16).to_ne_bytes().to_vec();
        p.extend_from_slice(b"/run/x.sock\0junk");
        assert_eq!(pathname(&p), Some(&b"/run/x.sock"[..]));
    }

    #[test]
    fn a_path_is_found_where_the_program_sees_it() {
        // This process is the "program": its cwd holds a socket the supervisor reaches.
        let dir = std::env::temp_dir().join(format!("sfy-unix-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let sock_path = dir.join("s.sock");
        let _ = std::fs::remove_file(&sock_path);
        let listener = std::os::unix::net::UnixListener::bind(&sock_path).unwrap();
        let mut bytes = (libc::AF_UNIX as u16).to_ne_bytes().to_vec();
        bytes.extend_from_slice(sock_path.as_os_str().as_encoded_bytes());
        bytes.push(0);
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() };
        let resolved = resolve(tid, &bytes).unwrap();
        let s = sys::socket(libc::AF_UNIX, libc::SOCK_STREAM).unwrap();
        sys::connect_raw(s.as_raw_fd(), &resolved.bytes).unwrap();
        assert!(listener.accept().is_ok());
        let mut missing = (libc::AF_UNIX as u16).to_ne_bytes().to_vec();
        missing.extend_from_slice(b"/nonexistent/dir/s.sock\0");
        assert_eq!(resolve(tid, &missing).err(), Some(libc::ENOENT));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
