//! Calls the library has checked, made straight to the kernel — through the gate under the
//! kernel guard, so that the guard's filter lets them through untrapped and they cost what
//! they cost without socksify:
//! - every call of a socket of a local family (AF_UNIX, netlink, …), never the library's
//!   business (and the program's own call: its pid, uid and gid are what a server sees);
//! - connects and datagrams that the routes send direct (not to the system's nameservers,
//!   which the guard's stub answers, and without control data, which the guard checks).

use libc::{c_int, c_long, sockaddr, socklen_t, ssize_t};

use super::msg::Msg;
use crate::runtime::{state, Flow};
use crate::sys::{args, gate, mem, sock};

/// True for a socket of a local family. Asked of the kernel every time (one `getsockopt`,
/// which no filter traps), so that a reused descriptor number is never taken for the socket
/// it once was.
pub fn is_local(fd: c_int) -> bool {
    matches!(
        sock::family(fd),
        Some(libc::AF_UNIX | libc::AF_NETLINK | libc::AF_ALG | libc::AF_KEY | libc::AF_VSOCK)
    )
}

/// True when this process has the gate (under the kernel guard).
pub fn open() -> bool {
    gate::open()
}

extern "C" {
    fn pthread_setcanceltype(ty: c_int, old: *mut c_int) -> c_int;
}
const PTHREAD_CANCEL_ASYNCHRONOUS: c_int = 1;

/// Runs a gated system call as a cancellation point, as libc's socket functions are: with
/// asynchronous cancellation on for its duration (how libc made its calls cancellable before
/// glibc 2.34), so that `pthread_cancel` ends a thread blocked in it, and a cancel already
/// pending acts at once.
pub fn cancellable(f: impl FnOnce() -> c_long) -> c_long {
    let mut old = 0;
    // SAFETY: sets this thread's cancellation type; errno is not touched.
    unsafe { pthread_setcanceltype(PTHREAD_CANCEL_ASYNCHRONOUS, &mut old) };
    let r = f();
    // SAFETY: back to the type the program had.
    unsafe { pthread_setcanceltype(old, &mut old) };
    r
}

/// `real` (the libc function) without the guard; the same system call through the gate under
/// it. `nr` and `a` are the call's number and arguments.
pub fn call(nr: c_long, a: [usize; 6], real: impl FnOnce() -> c_long) -> c_long {
    if !gate::open() {
        return real();
    }
    // SAFETY: the program's own call, with its own arguments, unchanged.
    cancellable(|| unsafe { gate::call(nr, a) })
}

/// connect(2) of a local socket: through the gate, except a resolver daemon's socket under
/// remote DNS (nscd, systemd-resolved), which is left to the guard (it refuses it).
pub fn connect(fd: c_int, to: *const sockaddr, len: socklen_t, real: impl FnOnce() -> c_int) -> c_int {
    if gate::open() && resolver_daemon(to, len) {
        return real();
    }
    call(libc::SYS_connect, args!(fd, to, len), || real() as c_long) as c_int
}

fn resolver_daemon(to: *const sockaddr, len: socklen_t) -> bool {
    let Ok(st) = state() else { return false };
    if !st.router.remote_dns() || to.is_null() {
        return false;
    }
    let mut buf = [0u8; std::mem::size_of::<libc::sockaddr_un>()];
    let n = (len as usize).min(buf.len());
    // An unreadable address is the kernel's own answer (EFAULT) either way.
    mem::copy_in(to.cast(), &mut buf[..n]) && socksify_core::sockaddr::resolver_daemon(&buf[..n])
}

/// The program's connect of `fd` to `to`, which the routes send direct: made here through the
/// gate (`None` without one: the hook then calls the real function, which the guard traps).
pub fn connect_direct(fd: c_int, to: *const sockaddr, len: socklen_t) -> Option<Flow<c_int>> {
    if !gate::open() {
        return None;
    }
    // SAFETY: the program's own connect, with its own arguments.
    let r = cancellable(|| unsafe { gate::call(libc::SYS_connect, args!(fd, to, len)) });
    Some(if r < 0 { Flow::Fail(crate::sys::errno()) } else { Flow::Done(r as c_int) })
}

/// The program's datagram `msg` on `fd`, which the routes send direct: through the gate when it
/// carries no control data (`None` otherwise: the guard checks control data itself).
pub fn send_direct(fd: c_int, msg: &Msg, flags: c_int) -> Option<Flow<ssize_t>> {
    if !gate::open() || msg.controllen != 0 {
        return None;
    }
    let iov = msg.iov.as_slice();
    // SAFETY: msghdr is plain old data.
    let mut h: libc::msghdr = unsafe { std::mem::zeroed() };
    h.msg_name = msg.name;
    h.msg_namelen = msg.namelen;
    h.msg_iov = iov.as_ptr() as *mut libc::iovec;
    h.msg_iovlen = iov.len();
    // SAFETY: the program's own buffers and address (the kernel checks them).
    let r =
        cancellable(|| unsafe { gate::call(libc::SYS_sendmsg, args!(fd, &h as *const libc::msghdr, flags)) });
    Some(if r < 0 { Flow::Fail(crate::sys::errno()) } else { Flow::Done(r as ssize_t) })
}
