//! Calls the library has checked, made straight to the kernel — through the gate under the
//! kernel guard, so that the guard's filter lets them through untrapped and they cost what
//! they cost without socksify:
//! - every call of a socket of a local family (AF_UNIX, netlink, …), never the library's
//!   business (and the program's own call: its pid, uid and gid are what a server sees);
//! - connects and datagrams that the routes send direct (not to the system's nameservers,
//!   which the guard's stub answers, and without control data, which the guard checks).
//!
//! A call that would wait is not made here (`call_now`): the real function makes it, as a
//! cancellation point that signals interrupt as the kernel's own call (`pthread_cancel` must
//! end a thread blocked in `recvfrom`).

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

/// `real` (the libc function) without the guard; the same system call through the gate under
/// it, for calls that never wait (`listen`, `getsockname`, `getpeername`). `nr` and `a` are the
/// call's number and arguments.
pub fn call(nr: c_long, a: [usize; 6], real: impl FnOnce() -> c_long) -> c_long {
    if !gate::open() {
        return real();
    }
    // SAFETY: the program's own call, with its own arguments, unchanged.
    unsafe { gate::call(nr, a) }
}

/// A call that may wait (a send or a receive; `a[flags_at]` its flags): through the gate only
/// as far as it does not wait — with `MSG_DONTWAIT` added — and by `real` (a cancellation point,
/// interrupted by signals as the kernel's own call is) when it would have to wait. With
/// `MSG_WAITALL` it is `real`'s. A send may then be short: see `sent_rest`.
pub fn call_now(nr: c_long, mut a: [usize; 6], flags_at: usize, real: impl FnOnce() -> c_long) -> c_long {
    let flags = a[flags_at] as c_int;
    if !gate::open() || flags & libc::MSG_WAITALL != 0 {
        return real();
    }
    if flags & libc::MSG_DONTWAIT != 0 {
        // SAFETY: the program's own call, with its own arguments.
        return unsafe { gate::call(nr, a) };
    }
    let saved = crate::sys::errno();
    a[flags_at] = (flags | libc::MSG_DONTWAIT) as usize;
    // SAFETY: the program's own call, with its own arguments and MSG_DONTWAIT.
    let r = unsafe { gate::call(nr, a) };
    if r < 0 && crate::sys::errno() == libc::EAGAIN {
        crate::sys::set_errno(saved);
        return real();
    }
    r
}

/// After `call_now` sent `sent` of `total` bytes of a send that the program made without
/// `MSG_DONTWAIT`: a blocking stream send sends it all, so `rest(sent)` sends the remainder
/// (the real function, which waits) and the total so far is returned.
pub fn sent_rest(flags: c_int, sent: c_long, total: usize, rest: impl FnOnce(usize) -> c_long) -> c_long {
    if sent < 0 || sent as usize >= total || flags & libc::MSG_DONTWAIT != 0 || !gate::open() {
        return sent;
    }
    let saved = crate::sys::errno();
    let more = rest(sent as usize);
    if more < 0 {
        // Some went: the kernel reports the part sent, not the error.
        crate::sys::set_errno(saved);
        return sent;
    }
    sent + more
}

/// sendmsg(2) of a local socket: through the gate as far as it need not wait; a blocking stream
/// socket's send that went only in part is finished by the real function (the kernel's
/// blocking send sends it all).
///
/// # Safety
/// `msg` is the program's header for sendmsg(2), as it handed it to libc.
pub unsafe fn sendmsg(
    fd: c_int,
    msg: *const libc::msghdr,
    flags: c_int,
    real: impl FnOnce() -> c_long,
) -> c_long {
    let sent = call_now(libc::SYS_sendmsg, args!(fd, msg, flags), 2, real);
    if sent <= 0 || flags & libc::MSG_DONTWAIT != 0 || !gate::open() {
        return sent;
    }
    // SAFETY: the kernel has just read this header and its iovecs for this very call (it sent
    // `sent` bytes from them): they are the program's, readable.
    let iov: &[libc::iovec] = unsafe {
        let h = std::ptr::read(msg);
        if h.msg_iov.is_null() {
            return sent;
        }
        std::slice::from_raw_parts(h.msg_iov, h.msg_iovlen.min(super::msg::MAX_IOV))
    };
    let total = iov.iter().map(|v| v.iov_len).fold(0usize, usize::saturating_add);
    // Only a stream send goes in part (a datagram goes whole or not at all).
    if sent as usize >= total || sock::socket_type(fd) != Some(libc::SOCK_STREAM) {
        return sent;
    }
    sent_rest(flags, sent, total, |done| {
        let mut skip = done;
        let rest: Vec<libc::iovec> = iov
            .iter()
            .filter_map(|v| {
                if skip >= v.iov_len {
                    skip -= v.iov_len;
                    return None;
                }
                // SAFETY: an offset within the program's own buffer.
                let base = unsafe { (v.iov_base as *mut u8).add(skip) };
                let len = v.iov_len - skip;
                skip = 0;
                Some(libc::iovec { iov_base: base.cast(), iov_len: len })
            })
            .collect();
        // SAFETY: msghdr is plain old data.
        let mut h: libc::msghdr = unsafe { std::mem::zeroed() };
        h.msg_iov = rest.as_ptr() as *mut libc::iovec;
        h.msg_iovlen = rest.len();
        // SAFETY: the rest of the program's own buffers (the control data went with the first
        // part); the real sendmsg, which waits.
        unsafe { crate::runtime::real::sendmsg(fd, &h, flags) as c_long }
    })
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
    if !gate::open() || !crate::table::kind_confirmed(fd) {
        return None;
    }
    // SAFETY: the program's own connect, with its own arguments.
    let r = unsafe { gate::call(libc::SYS_connect, args!(fd, to, len)) };
    Some(if r < 0 { Flow::Fail(crate::sys::errno()) } else { Flow::Done(r as c_int) })
}

/// The program's datagram `msg` on `fd`, which the routes send direct: through the gate when it
/// carries no control data and need not wait (`None` otherwise: the hook then calls the real
/// function, which the guard traps — it checks control data itself, and a send that waits is a
/// cancellation point there).
pub fn send_direct(fd: c_int, msg: &Msg, flags: c_int) -> Option<Flow<ssize_t>> {
    if !gate::open()
        || msg.controllen != 0
        || flags & libc::MSG_WAITALL != 0
        || !crate::table::kind_confirmed(fd)
    {
        return None;
    }
    let iov = msg.iov.as_slice();
    // SAFETY: msghdr is plain old data.
    let mut h: libc::msghdr = unsafe { std::mem::zeroed() };
    h.msg_name = msg.name;
    h.msg_namelen = msg.namelen;
    h.msg_iov = iov.as_ptr() as *mut libc::iovec;
    h.msg_iovlen = iov.len();
    let saved = crate::sys::errno();
    // SAFETY: the program's own buffers and address (the kernel checks them).
    let r = unsafe {
        gate::call(libc::SYS_sendmsg, args!(fd, &h as *const libc::msghdr, flags | libc::MSG_DONTWAIT))
    };
    if r < 0 {
        let e = crate::sys::errno();
        crate::sys::set_errno(saved);
        if e == libc::EAGAIN && flags & libc::MSG_DONTWAIT == 0 {
            return None; // it must wait: the real function's
        }
        return Some(Flow::Fail(e));
    }
    Some(Flow::Done(r as ssize_t))
}
