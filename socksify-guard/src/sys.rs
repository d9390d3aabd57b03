//! The system calls the supervisor makes, typed: pidfds, descriptors taken from and given to
//! the program, its memory, and the socket queries behind every decision.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use socket2::SockAddr;

/// Turns -1 into the thread's errno.
macro_rules! syscall {
    ($nr:expr $(, $arg:expr)* $(,)?) => {{
        // SAFETY: a raw system call whose pointer arguments the caller keeps valid; the kernel
        // checks every descriptor and address and reports bad ones through errno.
        let r = unsafe { libc::syscall($nr $(, $arg)*) };
        if r == -1 { Err(std::io::Error::last_os_error()) } else { Ok(r) }
    }};
}
pub(crate) use syscall;

/// The errno of an I/O error (EIO when it has none).
pub fn errno(e: &io::Error) -> i32 {
    e.raw_os_error().unwrap_or(libc::EIO)
}

pub fn owned(fd: libc::c_long) -> OwnedFd {
    // SAFETY: a descriptor the kernel just created for this process, owned from here on.
    unsafe { OwnedFd::from_raw_fd(fd as RawFd) }
}

/// A pidfd for thread `tid` (6.9+), else for its process when `tid` leads it.
pub fn pidfd_open(tid: libc::pid_t) -> io::Result<OwnedFd> {
    const PIDFD_THREAD: libc::c_long = libc::O_EXCL as libc::c_long;
    match syscall!(libc::SYS_pidfd_open, tid, PIDFD_THREAD) {
        Ok(fd) => Ok(owned(fd)),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            let tgid = tgid_of(tid)?;
            syscall!(libc::SYS_pidfd_open, tgid, 0).map(owned)
        }
        Err(e) => Err(e),
    }
}

/// The process a thread belongs to, from `/proc/TID/status`.
pub fn tgid_of(tid: libc::pid_t) -> io::Result<libc::pid_t> {
    let text = std::fs::read_to_string(format!("/proc/{tid}/status"))?;
    text.lines()
        .find_map(|l| l.strip_prefix("Tgid:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| io::Error::from_raw_os_error(libc::ESRCH))
}

/// True when `pid` is one of `ancestors` or descends from one (by /proc's parent links).
pub fn descends_from(pid: libc::pid_t, ancestors: &[libc::pid_t]) -> bool {
    let mut p = pid;
    for _ in 0..256 {
        if ancestors.contains(&p) {
            return true;
        }
        if p <= 1 {
            return false;
        }
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else { return false };
        // "pid (comm) state ppid …": comm may hold spaces and parentheses.
        let Some(ppid) =
            stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse().ok())
        else {
            return false;
        };
        p = ppid;
    }
    false
}

/// A duplicate of descriptor `fd` of the process behind `pidfd`: the very same open file.
pub fn pidfd_getfd(pidfd: &OwnedFd, fd: RawFd) -> io::Result<OwnedFd> {
    syscall!(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0).map(owned)
}

/// Copies `buf.len()` bytes from address `addr` of process (or thread) `pid`; a short or bad
/// read is EFAULT.
pub fn read_mem(pid: libc::pid_t, addr: u64, buf: &mut [u8]) -> io::Result<()> {
    if buf.is_empty() {
        return Ok(());
    }
    let local = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    let remote = libc::iovec { iov_base: addr as *mut libc::c_void, iov_len: buf.len() };
    // SAFETY: one local iovec over `buf`; the remote one is checked by the kernel.
    let n = unsafe { libc::process_vm_readv(pid, &local, 1, &remote, 1, 0) };
    match n {
        n if n as usize == buf.len() => Ok(()),
        n if n >= 0 => Err(io::Error::from_raw_os_error(libc::EFAULT)),
        _ => Err(io::Error::last_os_error()),
    }
}

/// Copies `data` to address `addr` of process `pid`; a short or bad write is EFAULT.
pub fn write_mem(pid: libc::pid_t, addr: u64, data: &[u8]) -> io::Result<()> {
    if data.is_empty() {
        return Ok(());
    }
    let local = libc::iovec { iov_base: data.as_ptr() as *mut libc::c_void, iov_len: data.len() };
    let remote = libc::iovec { iov_base: addr as *mut libc::c_void, iov_len: data.len() };
    // SAFETY: one local iovec over `data` (only read); the remote one is checked by the kernel.
    let n = unsafe { libc::process_vm_writev(pid, &local, 1, &remote, 1, 0) };
    match n {
        n if n as usize == data.len() => Ok(()),
        n if n >= 0 => Err(io::Error::from_raw_os_error(libc::EFAULT)),
        _ => Err(io::Error::last_os_error()),
    }
}

/// A socket's family and type (SO_DOMAIN, SO_TYPE); ENOTSOCK for anything else.
pub fn socket_kind(fd: RawFd) -> io::Result<(libc::c_int, libc::c_int)> {
    Ok((
        socksify_core::sys::sockopt_int(fd, libc::SOL_SOCKET, libc::SO_DOMAIN)?,
        socksify_core::sys::sockopt_int(fd, libc::SOL_SOCKET, libc::SO_TYPE)?,
    ))
}

/// The inode of the socket behind `fd`: the same for every descriptor of one socket, in every
/// process.
pub fn inode(fd: RawFd) -> io::Result<u64> {
    // SAFETY: stat is plain old data; fstat fills it.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    syscall!(libc::SYS_fstat, fd, &mut st as *mut libc::stat)?;
    Ok(st.st_ino)
}

pub fn file_flags(fd: RawFd) -> io::Result<libc::c_int> {
    syscall!(libc::SYS_fcntl, fd, libc::F_GETFL).map(|f| f as libc::c_int)
}

pub fn set_file_flags(fd: RawFd, flags: libc::c_int) -> io::Result<()> {
    syscall!(libc::SYS_fcntl, fd, libc::F_SETFL, flags).map(drop)
}

pub fn nonblocking(fd: RawFd) -> bool {
    file_flags(fd).is_ok_and(|f| f & libc::O_NONBLOCK != 0)
}

/// connect(2) with the bytes of a socket address, as the program gave them.
pub fn connect_raw(fd: RawFd, addr: &[u8]) -> io::Result<()> {
    syscall!(libc::SYS_connect, fd, addr.as_ptr(), addr.len() as libc::socklen_t).map(drop)
}

pub fn connect_to(fd: RawFd, addr: &SocketAddr) -> io::Result<()> {
    let sa = SockAddr::from(*addr);
    syscall!(libc::SYS_connect, fd, sa.as_ptr(), sa.len()).map(drop)
}

/// The address a socket is connected to, if it is.
pub fn peer_addr(fd: RawFd) -> Option<SocketAddr> {
    name_of(libc::SYS_getpeername, fd)
}

pub fn local_addr(fd: RawFd) -> Option<SocketAddr> {
    name_of(libc::SYS_getsockname, fd)
}

fn name_of(nr: libc::c_long, fd: RawFd) -> Option<SocketAddr> {
    // SAFETY: sockaddr_storage is plain old data.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    syscall!(nr, fd, &mut storage as *mut _ as *mut libc::sockaddr, &mut len as *mut libc::socklen_t).ok()?;
    // SAFETY: the kernel wrote a socket address of `len` bytes.
    unsafe { SockAddr::new(storage, len) }.as_socket()
}

/// True while a TCP socket's connect is under way (SYN sent, no answer yet).
pub fn connecting(fd: RawFd) -> bool {
    // tcp_info's first byte is the state; TCP_SYN_SENT = 2.
    let mut info = [0u8; 8];
    let mut len = info.len() as libc::socklen_t;
    let r = syscall!(
        libc::SYS_getsockopt,
        fd,
        libc::IPPROTO_TCP,
        libc::TCP_INFO,
        info.as_mut_ptr(),
        &mut len as *mut libc::socklen_t
    );
    r.is_ok() && info[0] == 2
}

/// The socket's SO_SNDTIMEO, if set: the longest a blocking connect may take.
pub fn send_timeout(fd: RawFd) -> Option<std::time::Duration> {
    let mut tv = libc::timeval { tv_sec: 0, tv_usec: 0 };
    let mut len = std::mem::size_of::<libc::timeval>() as libc::socklen_t;
    syscall!(
        libc::SYS_getsockopt,
        fd,
        libc::SOL_SOCKET,
        libc::SO_SNDTIMEO,
        &mut tv as *mut libc::timeval,
        &mut len as *mut libc::socklen_t
    )
    .ok()?;
    let d = std::time::Duration::new(tv.tv_sec.max(0) as u64, (tv.tv_usec.max(0) as u32) * 1000);
    (!d.is_zero()).then_some(d)
}

/// A new socket of the supervisor's own.
pub fn socket(family: libc::c_int, ty: libc::c_int) -> io::Result<OwnedFd> {
    syscall!(libc::SYS_socket, family, ty | libc::SOCK_CLOEXEC, 0).map(owned)
}
