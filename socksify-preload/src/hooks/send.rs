//! sendto, sendmsg, sendmmsg, send, write, writev, setsockopt: UDP through the relay, TCP Fast
//! Open through the chain.

use libc::{c_int, c_uint, c_void, iovec, mmsghdr, msghdr, size_t, sockaddr, socklen_t, ssize_t};
use socksify_ops::ops::msg::Msg;
use socksify_ops::ops::{net, udp};
use socksify_ops::runtime::{self, real, Flow};
use socksify_ops::{sys, table};

/// Runs a send of `msg` through `ops::net::send`; `real` sends it as the program gave it. After
/// a TCP Fast Open whose chain was just built, the data follows on the connected socket.
fn send_hook(
    fd: c_int,
    msg: &Msg,
    flags: c_int,
    real: impl FnOnce() -> ssize_t,
    header: *const msghdr,
) -> ssize_t {
    let mut after = net::After::Nothing;
    let r = runtime::run(
        -1,
        libc::ENETUNREACH,
        || {
            let (flow, a) = net::send(fd, msg, flags);
            after = a;
            flow
        },
        real,
    );
    if after != net::After::FastOpenData {
        return r;
    }
    // SAFETY: the program's header copied, without its address.
    let mut copy: msghdr = unsafe { std::ptr::read(header) };
    copy.msg_name = std::ptr::null_mut();
    copy.msg_namelen = 0;
    // SAFETY: the program's own buffers.
    unsafe { real::sendmsg(fd, &copy, flags & !libc::MSG_FASTOPEN) }
}

/// A header for one buffer (the Fast Open path sends the data with it).
fn one(buf: *const c_void, n: size_t, iov: &mut iovec) -> msghdr {
    *iov = iovec { iov_base: buf as *mut c_void, iov_len: n };
    // SAFETY: msghdr is plain old data.
    let mut h: msghdr = unsafe { std::mem::zeroed() };
    h.msg_iov = iov;
    h.msg_iovlen = 1;
    h
}

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
    // An address of length 0 is not "no address" to sendto (a datagram socket says EINVAL).
    if !addr.is_null() && len == 0 {
        return real();
    }
    let mut iov = iovec { iov_base: std::ptr::null_mut(), iov_len: 0 };
    let header = one(buf, n, &mut iov);
    send_hook(fd, &Msg::one(buf, n, addr, len), flags, real, &header)
}

/// # Safety
/// The arguments of sendmsg(2).
#[no_mangle]
pub unsafe extern "C" fn sendmsg(fd: c_int, msg: *const msghdr, flags: c_int) -> ssize_t {
    // SAFETY: the real sendmsg with the caller's arguments.
    let real = || unsafe { real::sendmsg(fd, msg, flags) };
    // A header or iovec list that cannot be read goes to the kernel, which says EFAULT.
    let Ok(m) = Msg::copy(msg) else { return real() };
    send_hook(fd, &m, flags, real, msg)
}

/// # Safety
/// The arguments of sendmmsg(2).
#[no_mangle]
pub unsafe extern "C" fn sendmmsg(fd: c_int, msgs: *mut mmsghdr, count: c_uint, flags: c_int) -> c_int {
    if msgs.is_null() || count == 0 || socksify_ops::sys::sock::socket_type(fd) != Some(libc::SOCK_DGRAM) {
        // SAFETY: the real sendmmsg with the caller's arguments.
        return unsafe { real::sendmmsg(fd, msgs, count, flags) };
    }
    // One message at a time through sendmsg's path: each may need the relay.
    let mut sent = 0;
    for i in 0..count as usize {
        let entry = msgs.wrapping_add(i);
        // SAFETY: the caller's array of `count` headers (the kernel checks each as sendmsg).
        let hdr = unsafe { std::ptr::addr_of_mut!((*entry).msg_hdr) };
        // SAFETY: as above.
        let r = unsafe { sendmsg(fd, hdr, flags) };
        if r < 0 {
            return if sent == 0 { -1 } else { sent };
        }
        let len = (r as c_uint).to_ne_bytes();
        // SAFETY: as above.
        if !sys::mem::copy_out(unsafe { std::ptr::addr_of_mut!((*entry).msg_len) }.cast(), &len) {
            return if sent == 0 { -1 } else { sent };
        }
        sent += 1;
    }
    sent
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
        runtime::after(|| net::after_setsockopt(fd, level, name, value));
    }
    r
}
