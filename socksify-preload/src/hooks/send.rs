//! sendto, sendmsg, sendmmsg, send, write, writev, setsockopt: UDP through the relay, TCP Fast
//! Open through the chain.

use libc::{c_int, c_long, c_uint, c_void, iovec, mmsghdr, msghdr, size_t, sockaddr, socklen_t, ssize_t};
use socksify_ops::ops::msg::{self, Msg};
use socksify_ops::ops::{gated, net, udp};
use socksify_ops::runtime::{self, real, Flow};
use socksify_ops::sys::args;
use socksify_ops::table;

/// # Safety
/// The arguments of sendto(2).
#[no_mangle]
pub unsafe extern "C" fn sendto(
    fd: c_int,
    buf: *const c_void,
    n: size_t,
    flags: c_int,
    addr: *const sockaddr,
    len: socklen_t,
) -> ssize_t {
    // SAFETY: the real sendto with the caller's arguments.
    let real = || unsafe { real::sendto(fd, buf, n, flags, addr, len) };
    // An internet socket by its socket() (`table::kind`) is not asked its family again; only
    // the kernel's answer sends a call through the gate.
    if table::kind(fd).is_none() && gated::is_local(fd) {
        let sent =
            gated::call_now(libc::SYS_sendto, args!(fd, buf, n, flags, addr, len), 3, || real() as c_long);
        return gated::sent_rest(flags, sent, n, |done| {
            // SAFETY: the rest of the caller's buffer, to the real sendto (which waits).
            unsafe {
                real::sendto(fd, buf.cast::<u8>().add(done).cast(), n - done, flags, addr, len) as c_long
            }
        }) as ssize_t;
    }
    // An address of length 0 is not "no address" to sendto (a datagram socket says EINVAL).
    if !addr.is_null() && len == 0 {
        return real();
    }
    net::send_hook(fd, &Msg::one(buf, n, addr, len), flags, real)
}

/// # Safety
/// The arguments of sendmsg(2).
#[no_mangle]
pub unsafe extern "C" fn sendmsg(fd: c_int, msg: *const msghdr, flags: c_int) -> ssize_t {
    // SAFETY: the real sendmsg with the caller's arguments.
    let real = || unsafe { real::sendmsg(fd, msg, flags) };
    if table::kind(fd).is_none() && gated::is_local(fd) {
        // SAFETY: the caller's header, as it gave it to sendmsg.
        return unsafe { gated::sendmsg(fd, msg, flags, || real() as c_long) } as ssize_t;
    }
    // A header or iovec list that cannot be read goes to the kernel, which says EFAULT.
    let Ok(m) = Msg::copy(msg) else { return real() };
    net::send_hook(fd, &m, flags, real)
}

/// # Safety
/// The arguments of sendmmsg(2).
#[no_mangle]
pub unsafe extern "C" fn sendmmsg(fd: c_int, msgs: *mut mmsghdr, count: c_uint, flags: c_int) -> c_int {
    if gated::is_local(fd) {
        // SAFETY: the real sendmmsg with the caller's arguments.
        let real = || unsafe { real::sendmmsg(fd, msgs, count, flags) } as c_long;
        // Through the gate only when it cannot wait: a batch cannot be finished part by part.
        if flags & libc::MSG_DONTWAIT == 0 {
            return real() as c_int;
        }
        return gated::call(libc::SYS_sendmmsg, args!(fd, msgs, count, flags), real) as c_int;
    }
    let one_by_one = match socksify_ops::sys::sock::socket_type(fd) {
        Some(libc::SOCK_DGRAM) => true,
        // TCP Fast Open: the first message is an implicit connect (through the chain).
        Some(libc::SOCK_STREAM) => flags & libc::MSG_FASTOPEN != 0,
        _ => false,
    };
    if msgs.is_null() || count == 0 || !one_by_one {
        // SAFETY: the real sendmmsg with the caller's arguments.
        return unsafe { real::sendmmsg(fd, msgs, count, flags) };
    }
    // One message at a time through sendmsg's path: each may need the relay or the chain.
    // SAFETY: each header of the caller's array, to sendmsg.
    msg::one_by_one(msgs, count, |hdr, _| unsafe { sendmsg(fd, hdr, flags) })
}

hook! {
    fn send(fd: c_int, buf: *const c_void, n: size_t, flags: c_int) -> ssize_t {
        gate: table::relayed(fd), fail: -1, panic: libc::ENETUNREACH,
        body: udp::send_connected(fd, &Msg::one(buf, n, std::ptr::null(), 0), flags).unwrap_or(Flow::Bypass),
    }
}

hook! {
    fn write(fd: c_int, buf: *const c_void, n: size_t) -> ssize_t {
        gate: table::relayed(fd), fail: -1, panic: libc::EIO,
        body: udp::send_connected(fd, &Msg::one(buf, n, std::ptr::null(), 0), 0).unwrap_or(Flow::Bypass),
    }
}

hook! {
    fn writev(fd: c_int, iov: *const iovec, n: c_int) -> ssize_t {
        gate: table::relayed(fd), fail: -1, panic: libc::EIO,
        body: match Msg::vector(iov, n) {
            Ok(m) => udp::send_connected(fd, &m, 0).unwrap_or(Flow::Bypass),
            Err(_) => Flow::Bypass, // the kernel's EFAULT or EINVAL
        },
    }
}

/// # Safety
/// The arguments of setsockopt(2).
#[no_mangle]
pub unsafe extern "C" fn setsockopt(
    fd: c_int,
    level: c_int,
    name: c_int,
    value: *const c_void,
    len: socklen_t,
) -> c_int {
    // SAFETY: the real setsockopt with the caller's arguments.
    let r = unsafe { real::setsockopt(fd, level, name, value, len) };
    if r == 0 {
        socksify_ops::table::option_set(fd, level, name);
        runtime::after(|| net::after_setsockopt(fd, level, name, value));
    }
    r
}
