//! Sockets seen from C: addresses in and out, a socket's type and identity.

use std::net::{IpAddr, SocketAddr};

use libc::{c_int, sockaddr, socklen_t};
use socket2::SockAddr;

/// Set once process_vm_readv turned out to be unavailable (a sandbox's seccomp profile may
/// refuse it): the copies then trust the pointers, as a plain C library would.
static NO_VM_READV: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Copies `to[i].len()` bytes from `from[i]` for every i, where one side of each pair is the
/// program's (unchecked) memory: process_vm_readv on this process, so that a pointer the
/// program got wrong is `false` (the kernel would say EFAULT), never a crash. Only EFAULT is
/// "wrong": any other failure (the call refused by a sandbox) falls back to a plain copy, so
/// that no pointer is ever taken for a bad one and its call handed to the kernel unexamined.
const MAX_PAIRS: usize = 4;

fn checked_copy(pairs: &[(*const u8, *mut u8, usize)]) -> bool {
    let total: usize = pairs.iter().map(|p| p.2).sum();
    if total == 0 {
        return true;
    }
    assert!(pairs.len() <= MAX_PAIRS, "checked_copy takes at most {MAX_PAIRS} ranges");
    if !NO_VM_READV.load(std::sync::atomic::Ordering::Relaxed) {
        let none = libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 };
        let (mut local, mut remote) = ([none; MAX_PAIRS], [none; MAX_PAIRS]);
        for (i, &(from, to, n)) in pairs.iter().enumerate() {
            local[i] = libc::iovec { iov_base: to.cast(), iov_len: n };
            remote[i] = libc::iovec { iov_base: from as *mut libc::c_void, iov_len: n };
        }
        let count = pairs.len() as libc::c_ulong;
        // SAFETY: process_vm_readv on this process: the kernel checks every byte of both sides.
        let n = unsafe {
            libc::process_vm_readv(libc::getpid(), local.as_ptr(), count, remote.as_ptr(), count, 0)
        };
        if n == total as isize {
            return true;
        }
        if n >= 0 || crate::hook::errno() == libc::EFAULT {
            return false;
        }
        NO_VM_READV.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    for &(from, to, n) in pairs {
        // SAFETY: without process_vm_readv the program's pointers are trusted, as libc does.
        unsafe { std::ptr::copy_nonoverlapping(from, to, n) };
    }
    true
}

/// Copies `out.len()` bytes from the program's address `src` without trusting it: a pointer
/// the program got wrong is `false` (the kernel would say EFAULT), never a crash.
pub fn copy_in(src: *const u8, out: &mut [u8]) -> bool {
    checked_copy(&[(src, out.as_mut_ptr(), out.len())])
}

/// Copies `data` to the program's address `dst`; `false` when it is not writable.
///
/// process_vm_readv with the roles swapped: `data` is the "remote" range (of this process) and
/// `dst` the local one, which the kernel writes with its own fault checks. Not
/// process_vm_writev, which the kernel guard traps (it confines writes into other processes).
pub fn copy_out(dst: *mut u8, data: &[u8]) -> bool {
    checked_copy(&[(data.as_ptr(), dst, data.len())])
}

/// Copies each `data` to its program address `dst`, in one system call; `false` when any is not
/// writable.
pub fn copy_out_each(parts: &[(*mut u8, &[u8]); 2]) -> bool {
    let [(d0, b0), (d1, b1)] = *parts;
    checked_copy(&[(b0.as_ptr(), d0, b0.len()), (b1.as_ptr(), d1, b1.len())])
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

/// An AF_INET or AF_INET6 address as the kernel reads it: shorter than a `sockaddr_in` (or a
/// `sockaddr_in6` without its scope) is no address at all (the kernel says EINVAL).
fn parse_addr(bytes: &[u8]) -> Option<SocketAddr> {
    socksify_core::sockaddr::decode(bytes)
}

/// Writes `addr` to a C buffer of `*len` bytes, truncating as the kernel does, and sets `*len` to
/// the full size. `false` (EFAULT) when either pointer is unusable.
pub fn write_addr(addr: &SocketAddr, out: *mut sockaddr, len: *mut socklen_t) -> bool {
    let Some(room) = copy_value(len as *const socklen_t) else { return false };
    let sa = SockAddr::from(*addr);
    let n = (room as usize).min(sa.len() as usize);
    // SAFETY: the storage holds sa.len() initialised bytes.
    let bytes = unsafe { std::slice::from_raw_parts(sa.as_ptr().cast::<u8>(), n) };
    let full = sa.len().to_ne_bytes();
    copy_out_each(&[(out.cast(), bytes), (len.cast(), &full)])
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

/// The local address of socket `fd` (the kernel's own answer).
pub fn local_addr(fd: c_int) -> Option<SocketAddr> {
    socksify_core::sys::local_addr(fd).ok()
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
