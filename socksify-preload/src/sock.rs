//! Sockets seen from C: addresses in and out, a socket's type and identity.

use std::net::{IpAddr, SocketAddr};

use libc::{c_int, sockaddr, socklen_t};
use socket2::SockAddr;

/// This process's id, for the checked copies below, without a system call each time: it is
/// kept in a page the kernel wipes in the child of any fork (MADV_WIPEONFORK, whichever way the
/// child was made), where it is read again. A vfork child shares this memory and so reads the
/// parent's id, which names the very same memory: the copies stay right.
fn self_pid() -> libc::pid_t {
    static PAGE: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    let page = *PAGE.get_or_init(|| {
        // SAFETY: a new anonymous page of our own.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return 0;
        }
        // SAFETY: advice on the page just mapped; without it (before Linux 4.14) no caching.
        if unsafe { libc::madvise(p, 4096, libc::MADV_WIPEONFORK) } != 0 {
            // SAFETY: unmapping the page just mapped.
            unsafe { libc::munmap(p, 4096) };
            return 0;
        }
        p as usize
    });
    if page == 0 {
        // SAFETY: getpid has no preconditions.
        return unsafe { libc::getpid() };
    }
    // SAFETY: the first word of our page; threads share the process id, so a race writes the
    // same value.
    let cached = unsafe { &*(page as *const std::sync::atomic::AtomicI32) };
    match cached.load(std::sync::atomic::Ordering::Relaxed) {
        0 => {
            // SAFETY: getpid has no preconditions.
            let pid = unsafe { libc::getpid() };
            cached.store(pid, std::sync::atomic::Ordering::Relaxed);
            pid
        }
        pid => pid,
    }
}

/// Copies `out.len()` bytes from the program's address `src` without trusting it: a pointer
/// the program got wrong is `false` (the kernel would say EFAULT), never a crash.
pub fn copy_in(src: *const u8, out: &mut [u8]) -> bool {
    if out.is_empty() {
        return true;
    }
    let local = libc::iovec { iov_base: out.as_mut_ptr().cast(), iov_len: out.len() };
    let remote = libc::iovec { iov_base: src as *mut libc::c_void, iov_len: out.len() };
    // SAFETY: process_vm_readv on this process checks the remote range; the local one is `out`.
    let n = unsafe { libc::process_vm_readv(self_pid(), &local, 1, &remote, 1, 0) };
    n == out.len() as isize
}

/// Copies `data` to the program's address `dst`; `false` when it is not writable.
///
/// process_vm_readv with the roles swapped: `data` is the "remote" range (of this process) and
/// `dst` the local one, which the kernel writes with its own fault checks. Not
/// process_vm_writev, which the kernel guard traps (it confines writes into other processes).
pub fn copy_out(dst: *mut u8, data: &[u8]) -> bool {
    if data.is_empty() {
        return true;
    }
    let local = libc::iovec { iov_base: dst.cast(), iov_len: data.len() };
    let remote = libc::iovec { iov_base: data.as_ptr() as *mut libc::c_void, iov_len: data.len() };
    // SAFETY: process_vm_readv on this process: the kernel reads `data` (ours, valid) and checks
    // every byte of the program's range `dst` as it writes it.
    let n = unsafe { libc::process_vm_readv(self_pid(), &local, 1, &remote, 1, 0) };
    n == data.len() as isize
}

/// A value of plain old data at the program's address `src`, or `None` when unreadable.
pub fn copy_value<T: Copy>(src: *const T) -> Option<T> {
    let mut v = std::mem::MaybeUninit::<T>::zeroed();
    // SAFETY: the bytes of `v`, which any bit pattern fills for plain old data.
    let bytes =
        unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr().cast::<u8>(), std::mem::size_of::<T>()) };
    // SAFETY: every byte was copied from the program's value of type T.
    copy_in(src.cast(), bytes).then(|| unsafe { v.assume_init() })
}

/// An AF_INET or AF_INET6 address from C; `None` for other families, bad lengths, or memory
/// that cannot be read (the real call then gives the kernel's answer, EFAULT).
pub fn read_addr(addr: *const sockaddr, len: socklen_t) -> Option<SocketAddr> {
    if addr.is_null() || (len as usize) < std::mem::size_of::<libc::sa_family_t>() {
        return None;
    }
    let len = (len as usize).min(std::mem::size_of::<libc::sockaddr_storage>());
    let mut bytes = [0u8; std::mem::size_of::<libc::sockaddr_storage>()];
    if !copy_in(addr.cast(), &mut bytes[..len]) {
        return None;
    }
    parse_addr(&bytes[..len])
}

/// An AF_INET or AF_INET6 address in the library's own memory (a buffer the kernel filled).
pub fn local_sockaddr(st: &libc::sockaddr_storage, len: socklen_t) -> Option<SocketAddr> {
    let len = (len as usize).min(std::mem::size_of::<libc::sockaddr_storage>());
    // SAFETY: the storage's bytes, of which the first `len` are the address.
    let bytes =
        unsafe { std::slice::from_raw_parts((st as *const libc::sockaddr_storage).cast::<u8>(), len) };
    parse_addr(bytes)
}

fn parse_addr(bytes: &[u8]) -> Option<SocketAddr> {
    let len = bytes.len();
    if len < std::mem::size_of::<libc::sa_family_t>() {
        return None;
    }
    // SAFETY: SockAddr::try_init hands us zeroed storage of sockaddr_storage size.
    let ((), sa) = unsafe {
        SockAddr::try_init(|storage, out_len| {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), storage.cast::<u8>(), len);
            *out_len = len as socklen_t;
            Ok(())
        })
    }
    .ok()?;
    sa.as_socket()
}

/// Writes `addr` to a C buffer of `*len` bytes, truncating as the kernel does, and sets `*len` to
/// the full size. `false` (EFAULT) when either pointer is unusable.
pub fn write_addr(addr: &SocketAddr, out: *mut sockaddr, len: *mut socklen_t) -> bool {
    let Some(room) = copy_value(len as *const socklen_t) else { return false };
    write_addr_into(addr, out, room).is_some_and(|full| copy_out(len.cast(), &full.to_ne_bytes()))
}

/// Writes `addr` to a C buffer of `room` bytes, truncating as the kernel does; returns the
/// full size (for the caller's length slot), `None` (EFAULT) when the buffer is unusable.
pub fn write_addr_into(addr: &SocketAddr, out: *mut sockaddr, room: socklen_t) -> Option<socklen_t> {
    let sa = SockAddr::from(*addr);
    let n = (room as usize).min(sa.len() as usize);
    // SAFETY: the storage holds sa.len() initialised bytes.
    let bytes = unsafe { std::slice::from_raw_parts(sa.as_ptr().cast::<u8>(), n) };
    copy_out(out.cast(), bytes).then_some(sa.len())
}

/// The socket type (SOCK_STREAM, SOCK_DGRAM, …) of `fd`.
pub fn socket_type(fd: c_int) -> Option<c_int> {
    let mut ty: c_int = 0;
    let mut len = std::mem::size_of::<c_int>() as socklen_t;
    // SAFETY: getsockopt into a local int; the raw call never re-enters the library's hooks.
    let r = unsafe {
        crate::syscall::raw(
            libc::SYS_getsockopt,
            &[
                fd as libc::c_long,
                libc::SOL_SOCKET as libc::c_long,
                libc::SO_TYPE as libc::c_long,
                &mut ty as *mut c_int as libc::c_long,
                &mut len as *mut socklen_t as libc::c_long,
            ],
        )
    };
    (r == 0).then_some(ty)
}

/// The local address of socket `fd` (the kernel's own answer; the raw call never re-enters the
/// library's hooks).
pub fn local_addr(fd: c_int) -> Option<SocketAddr> {
    // SAFETY: sockaddr_storage is plain old data.
    let mut st: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as socklen_t;
    // SAFETY: getsockname into local storage.
    let r = unsafe {
        crate::syscall::raw(
            libc::SYS_getsockname,
            &[
                fd as libc::c_long,
                &mut st as *mut _ as libc::c_long,
                &mut len as *mut socklen_t as libc::c_long,
            ],
        )
    };
    if r != 0 {
        return None;
    }
    local_sockaddr(&st, len)
}

/// The inode of the open file behind `fd`: tells a descriptor number that was closed and reused
/// from the socket the library saw.
pub fn inode(fd: c_int) -> Option<u64> {
    // SAFETY: fstat into a zeroed local stat.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let r = unsafe {
        crate::syscall::raw(
            libc::SYS_fstat,
            &[fd as libc::c_long, &mut st as *mut libc::stat as libc::c_long],
        )
    };
    (r == 0).then_some(st.st_ino)
}

/// Closes a descriptor of the library's own, straight to the kernel.
pub fn close_raw(fd: c_int) {
    // SAFETY: closing a descriptor the library owns.
    unsafe { crate::syscall::raw(libc::SYS_close, &[fd as libc::c_long]) };
}

/// A close-on-exec duplicate of `fd` high in the descriptor table, away from the numbers
/// programs use (and never 0, 1 or 2).
pub fn dup_high(fd: c_int) -> Option<c_int> {
    // SAFETY: getrlimit into a local struct.
    let mut lim: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let soft =
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 { lim.rlim_cur } else { 1024 };
    let floor = (soft.min(65536) * 3 / 4).max(64) as c_int;
    for start in [floor, 10] {
        // SAFETY: fcntl(F_DUPFD_CLOEXEC) on a descriptor the library owns.
        let new = unsafe {
            crate::syscall::raw(
                libc::SYS_fcntl,
                &[fd as libc::c_long, libc::F_DUPFD_CLOEXEC as libc::c_long, start as libc::c_long],
            )
        } as c_int;
        if new >= 0 {
            return Some(new);
        }
    }
    None
}

/// An address as a socket of `family` sees it (IPv4 as v4-mapped on an IPv6 socket).
pub fn in_family(addr: SocketAddr, family: c_int) -> Option<SocketAddr> {
    match (addr, family) {
        (SocketAddr::V4(v4), libc::AF_INET6) => {
            Some(SocketAddr::new(IpAddr::V6(v4.ip().to_ipv6_mapped()), v4.port()))
        }
        (SocketAddr::V6(v6), libc::AF_INET) => {
            v6.ip().to_ipv4_mapped().map(|ip| SocketAddr::new(IpAddr::V4(ip), v6.port()))
        }
        _ => Some(addr),
    }
}
