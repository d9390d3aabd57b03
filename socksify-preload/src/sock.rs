//! Sockets seen from C: addresses in and out, a socket's type and identity.

use std::net::{IpAddr, SocketAddr};

use libc::{c_int, sockaddr, socklen_t};
use socket2::SockAddr;

/// An AF_INET or AF_INET6 address from C; `None` for other families or bad lengths.
///
/// # Safety
/// `addr` is null or points to `len` readable bytes.
pub unsafe fn read_addr(addr: *const sockaddr, len: socklen_t) -> Option<SocketAddr> {
    if addr.is_null() || (len as usize) < std::mem::size_of::<libc::sa_family_t>() {
        return None;
    }
    let len = (len as usize).min(std::mem::size_of::<libc::sockaddr_storage>());
    // SAFETY: the caller vouches for `len` bytes at `addr`; SockAddr::try_init hands us zeroed
    // storage of sockaddr_storage size to copy them into.
    let ((), sa) = unsafe {
        SockAddr::try_init(|storage, out_len| {
            std::ptr::copy_nonoverlapping(addr.cast::<u8>(), storage.cast::<u8>(), len);
            *out_len = len as socklen_t;
            Ok(())
        })
    }
    .ok()?;
    sa.as_socket()
}

/// Writes `addr` to a C buffer of `*len` bytes, truncating as the kernel does, and sets `*len` to
/// the full size.
///
/// # Safety
/// `out` points to `*len` writable bytes and `len` is valid.
pub unsafe fn write_addr(addr: &SocketAddr, out: *mut sockaddr, len: *mut socklen_t) {
    let sa = SockAddr::from(*addr);
    // SAFETY: the caller vouches for `out`/`len`; we copy at most `*len` bytes.
    unsafe {
        let n = (*len as usize).min(sa.len() as usize);
        std::ptr::copy_nonoverlapping(sa.as_ptr().cast::<u8>(), out.cast::<u8>(), n);
        *len = sa.len();
    }
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
