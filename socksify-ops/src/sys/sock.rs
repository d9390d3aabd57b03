//! Descriptors and sockets: queries (type, family, inode, addresses, flags) and the few
//! operations the library makes on its own behalf or on the program's socket.

use std::net::SocketAddr;

use libc::{c_int, c_long, socklen_t};
use socket2::SockAddr;

use super::{args, call, check, errno};

/// A descriptor of the library's own (a UDP association's control connection): closed when
/// dropped.
#[derive(Debug)]
pub struct Owned(c_int);

impl Owned {
    /// Takes ownership of `fd`.
    pub fn new(fd: c_int) -> Owned {
        Owned(fd)
    }

    pub fn raw(&self) -> c_int {
        self.0
    }

    /// Moves the descriptor to another number, high in the table (the program wants this one).
    pub fn relocate(&mut self) -> bool {
        match dup_high(self.0) {
            Some(new) => {
                close(self.0);
                self.0 = new;
                true
            }
            None => false,
        }
    }
}

impl Drop for Owned {
    fn drop(&mut self) {
        close(self.0);
    }
}

/// An integer socket option.
pub fn sockopt_int(fd: c_int, level: c_int, name: c_int) -> Option<c_int> {
    socksify_core::sys::sockopt_int(fd, level, name).ok()
}

/// The socket's SO_SNDTIMEO or SO_RCVTIMEO (`name`), if one is set.
pub fn timeout(fd: c_int, name: c_int) -> Option<std::time::Duration> {
    // SAFETY: timeval is plain old data.
    let mut tv: libc::timeval = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::timeval>() as socklen_t;
    // SAFETY: getsockopt into a local timeval.
    let r = unsafe {
        call(
            libc::SYS_getsockopt,
            args!(fd, libc::SOL_SOCKET, name, &mut tv as *mut libc::timeval, &mut len as *mut socklen_t),
        )
    };
    let t = std::time::Duration::new(tv.tv_sec.max(0) as u64, (tv.tv_usec.max(0) as u32) * 1000);
    (r == 0 && !t.is_zero()).then_some(t)
}

/// TCP states, as `tcp_state` reads them.
pub const TCP_SYN_SENT: u8 = 2;
pub const TCP_CLOSE: u8 = 7;

/// The TCP state of socket `fd` (TCP_INFO's first byte: the kernel copies as much of the
/// record as asked); `None` for anything but a TCP socket.
pub fn tcp_state(fd: c_int) -> Option<u8> {
    sockopt_int(fd, libc::IPPROTO_TCP, libc::TCP_INFO).map(|s| s as u8)
}

/// What `fd` is ready for among `events` right now (poll without waiting).
pub fn ready_now(fd: c_int, events: i16) -> i16 {
    let mut p = libc::pollfd { fd, events, revents: 0 };
    // SAFETY: poll of one local pollfd, without waiting.
    unsafe { call(libc::SYS_poll, args!(&mut p as *mut libc::pollfd, 1, 0)) };
    p.revents
}

/// The socket type (SOCK_STREAM, SOCK_DGRAM, …) of `fd`; `None` for anything but a socket.
pub fn socket_type(fd: c_int) -> Option<c_int> {
    sockopt_int(fd, libc::SOL_SOCKET, libc::SO_TYPE)
}

/// The address family (AF_INET, AF_INET6, AF_UNIX, …) of socket `fd`.
pub fn family(fd: c_int) -> Option<c_int> {
    sockopt_int(fd, libc::SOL_SOCKET, libc::SO_DOMAIN)
}

/// An IPv6 socket that cannot reach IPv4 addresses (IPV6_V6ONLY).
pub fn v6_only(fd: c_int) -> bool {
    sockopt_int(fd, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY).is_some_and(|v| v != 0)
}

/// The inode of the open file behind `fd`: the same for every descriptor of one socket, and
/// what tells a reused descriptor number from the socket the library saw.
pub fn inode(fd: c_int) -> Option<u64> {
    identity(fd).map(|(_, ino)| ino)
}

/// The (device, inode) of the file behind `fd`.
pub fn identity(fd: c_int) -> Option<(u64, u64)> {
    // SAFETY: stat is plain old data.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat into a local stat.
    let r = unsafe { call(libc::SYS_fstat, args!(fd, &mut st as *mut libc::stat)) };
    (r == 0).then_some((st.st_dev, st.st_ino))
}

fn name(nr: c_long, fd: c_int) -> Option<SocketAddr> {
    // SAFETY: sockaddr_storage is plain old data.
    let mut st: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as socklen_t;
    // SAFETY: getsockname/getpeername into local storage.
    let r =
        unsafe { call(nr, args!(fd, &mut st as *mut libc::sockaddr_storage, &mut len as *mut socklen_t)) };
    if r != 0 {
        return None;
    }
    super::addr::from_storage(&st, len)
}

/// The local address of socket `fd`, as the kernel has it.
pub fn local_addr(fd: c_int) -> Option<SocketAddr> {
    name(libc::SYS_getsockname, fd)
}

/// The peer of socket `fd`, as the kernel has it (`None` when not connected).
pub fn peer_addr(fd: c_int) -> Option<SocketAddr> {
    name(libc::SYS_getpeername, fd)
}

/// fcntl with an integer argument, as libc answers it.
pub fn fcntl(fd: c_int, cmd: c_int, arg: c_long) -> c_long {
    // SAFETY: fcntl with an integer argument changes only the descriptor's flags or table.
    unsafe { call(libc::SYS_fcntl, args!(fd, cmd, arg)) }
}

/// The descriptor's flags (FD_CLOEXEC).
pub fn fd_flags(fd: c_int) -> Option<c_int> {
    check(fcntl(fd, libc::F_GETFD, 0)).ok().map(|f| f as c_int)
}

/// The open file's flags (O_NONBLOCK, …).
pub fn file_flags(fd: c_int) -> Option<c_int> {
    check(fcntl(fd, libc::F_GETFL, 0)).ok().map(|f| f as c_int)
}

pub fn nonblocking(fd: c_int) -> bool {
    file_flags(fd).is_some_and(|f| f & libc::O_NONBLOCK != 0)
}

pub fn close(fd: c_int) {
    // SAFETY: closing a descriptor the caller owns.
    unsafe { call(libc::SYS_close, args!(fd)) };
}

/// A close-on-exec duplicate of `fd` high in the descriptor table, away from the numbers
/// programs use (and never 0, 1 or 2).
pub fn dup_high(fd: c_int) -> Option<c_int> {
    // SAFETY: rlimit is plain old data; prlimit64 of this process reads it.
    let mut lim: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let r =
        unsafe { call(libc::SYS_prlimit64, args!(0, libc::RLIMIT_NOFILE, 0, &mut lim as *mut libc::rlimit)) };
    let soft = if r == 0 { lim.rlim_cur } else { 1024 };
    let floor = (soft.min(65536) * 3 / 4).max(64) as c_long;
    [floor, 10]
        .into_iter()
        .find_map(|start| check(fcntl(fd, libc::F_DUPFD_CLOEXEC, start)).ok().map(|n| n as c_int))
}

/// A new socket of the library's own, close-on-exec, high in the descriptor table.
pub fn socket_high(domain: c_int, ty: c_int) -> Result<Owned, c_int> {
    // SAFETY: a new socket from the kernel.
    let fd = check(unsafe { call(libc::SYS_socket, args!(domain, ty | libc::SOCK_CLOEXEC, 0)) })? as c_int;
    match dup_high(fd) {
        Some(high) => {
            close(fd);
            Ok(Owned(high))
        }
        None => Ok(Owned(fd)),
    }
}

fn with_addr(nr: c_long, fd: c_int, addr: &SocketAddr) -> Result<(), c_int> {
    let sa = SockAddr::from(*addr);
    // SAFETY: the address lives in `sa` for the call.
    check(unsafe { call(nr, args!(fd, sa.as_ptr(), sa.len())) }).map(drop)
}

pub fn connect(fd: c_int, addr: &SocketAddr) -> Result<(), c_int> {
    with_addr(libc::SYS_connect, fd, addr)
}

pub fn bind(fd: c_int, addr: &SocketAddr) -> Result<(), c_int> {
    with_addr(libc::SYS_bind, fd, addr)
}

/// `connect(AF_UNSPEC)`: dissolves a datagram socket's connection.
pub fn disconnect(fd: c_int) -> Result<(), c_int> {
    let unspec = [0u8; std::mem::size_of::<libc::sockaddr_in6>()];
    // SAFETY: an AF_UNSPEC address of our own.
    check(unsafe { call(libc::SYS_connect, args!(fd, unspec.as_ptr(), unspec.len())) }).map(drop)
}

pub fn listen(fd: c_int, backlog: c_int) -> Result<(), c_int> {
    // SAFETY: listen has no pointer arguments.
    check(unsafe { call(libc::SYS_listen, args!(fd, backlog)) }).map(drop)
}

pub fn dup3(old: c_int, new: c_int, flags: c_int) -> Result<c_int, c_int> {
    // SAFETY: dup3 has no pointer arguments.
    check(unsafe { call(libc::SYS_dup3, args!(old, new, flags)) }).map(|n| n as c_int)
}

/// True while nothing can be read from `fd` and it has not been hung up (a control connection
/// the proxy keeps open).
pub fn quiet(fd: c_int) -> bool {
    let mut pfd = libc::pollfd { fd, events: libc::POLLIN | libc::POLLRDHUP, revents: 0 };
    let zero = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: ppoll on one local pollfd with a zero timeout.
    let r = unsafe {
        call(libc::SYS_ppoll, args!(&mut pfd as *mut libc::pollfd, 1, &zero as *const libc::timespec, 0, 0))
    };
    r == 0
}

/// sendmsg(2), as libc answers it.
///
/// # Safety
/// A message header whose pointers are valid, or the program's own (the kernel checks them).
pub unsafe fn sendmsg(fd: c_int, msg: *const libc::msghdr, flags: c_int) -> isize {
    // SAFETY: the caller's header.
    unsafe { call(libc::SYS_sendmsg, args!(fd, msg, flags)) as isize }
}

/// recvmsg(2), as libc answers it.
///
/// # Safety
/// As for [`sendmsg`].
pub unsafe fn recvmsg(fd: c_int, msg: *mut libc::msghdr, flags: c_int) -> isize {
    // SAFETY: the caller's header.
    unsafe { call(libc::SYS_recvmsg, args!(fd, msg, flags)) as isize }
}

/// writev(2) of iovecs that may be the program's (the kernel checks them).
///
/// # Safety
/// `iov` points to `n` iovecs.
pub unsafe fn writev(fd: c_int, iov: *const libc::iovec, n: usize) -> isize {
    // SAFETY: the caller's iovecs.
    unsafe { call(libc::SYS_writev, args!(fd, iov, n)) as isize }
}

/// send(2) of our own buffer, without an address.
pub fn send(fd: c_int, data: &[u8], flags: c_int) -> isize {
    // SAFETY: sendto from a live slice, without an address.
    unsafe { call(libc::SYS_sendto, args!(fd, data.as_ptr(), data.len(), flags, 0, 0)) as isize }
}

/// sendto(2) of our own buffer to `to`.
pub fn send_to(fd: c_int, data: &[u8], to: &SocketAddr, flags: c_int) -> isize {
    let sa = SockAddr::from(*to);
    // SAFETY: sendto from a live slice to an address that lives in `sa` for the call.
    unsafe {
        call(libc::SYS_sendto, args!(fd, data.as_ptr(), data.len(), flags, sa.as_ptr(), sa.len())) as isize
    }
}

/// recv(2) into our own buffer.
pub fn recv(fd: c_int, buf: &mut [u8], flags: c_int) -> isize {
    // SAFETY: recvfrom into a live slice, without an address.
    unsafe { call(libc::SYS_recvfrom, args!(fd, buf.as_mut_ptr(), buf.len(), flags, 0, 0)) as isize }
}

/// Writes all of `bytes` to `fd` (a log line); `Err(errno)` if it cannot.
pub fn write_all(fd: c_int, mut bytes: &[u8]) -> Result<(), c_int> {
    while !bytes.is_empty() {
        // SAFETY: writes from a live slice.
        let n = unsafe { call(libc::SYS_write, args!(fd, bytes.as_ptr(), bytes.len())) };
        if n < 0 {
            match errno() {
                libc::EINTR => continue,
                e => return Err(e),
            }
        }
        bytes = &bytes[n as usize..];
    }
    Ok(())
}

/// Opens `path` to append log lines to it, close-on-exec and non-blocking (a FIFO without a
/// reader fails at once with ENXIO; one with a reader never makes a line wait).
pub fn open_log(path: &std::ffi::CStr) -> Option<Owned> {
    let flags =
        libc::O_WRONLY | libc::O_APPEND | libc::O_CREAT | libc::O_CLOEXEC | libc::O_NONBLOCK | libc::O_NOCTTY;
    // SAFETY: a NUL-terminated path.
    let fd = unsafe { call(libc::SYS_openat, args!(libc::AT_FDCWD, path.as_ptr(), flags, 0o600)) };
    check(fd).ok().map(|fd| Owned(fd as c_int))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn udp() -> Owned {
        socket_high(libc::AF_INET, libc::SOCK_DGRAM).unwrap()
    }

    #[test]
    fn queries_answer_for_sockets_and_nothing_else() {
        let s = udp();
        assert_eq!(socket_type(s.raw()), Some(libc::SOCK_DGRAM));
        assert_eq!(family(s.raw()), Some(libc::AF_INET));
        assert!(s.raw() >= 10, "high in the table");
        assert!(fd_flags(s.raw()).unwrap() & libc::FD_CLOEXEC != 0);
        assert!(inode(s.raw()).is_some());
        assert_eq!(peer_addr(s.raw()), None);
        assert_eq!(socket_type(0xffff), None);
        let lo: SocketAddr = "127.0.0.1:0".parse().unwrap();
        bind(s.raw(), &lo).unwrap();
        let local = local_addr(s.raw()).unwrap();
        assert!(local.port() > 0);
        let t = udp();
        connect(t.raw(), &local).unwrap();
        assert_eq!(peer_addr(t.raw()), Some(local));
        disconnect(t.raw()).unwrap();
        assert_eq!(peer_addr(t.raw()), None);
        assert_eq!(connect(t.raw(), &"[::1]:1".parse().unwrap()), Err(libc::EAFNOSUPPORT));
    }

    #[test]
    fn an_owned_descriptor_is_closed_when_dropped_and_can_move() {
        let mut s = udp();
        let before = s.raw();
        assert!(s.relocate());
        assert_ne!(s.raw(), before);
        assert_eq!(inode(before), None, "the old number was closed");
        let fd = s.raw();
        drop(s);
        assert_eq!(inode(fd), None);
    }
}
