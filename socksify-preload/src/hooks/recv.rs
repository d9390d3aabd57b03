//! recvfrom, recv, read, readv, recvmsg, recvmmsg: on a socket with a UDP association,
//! datagrams are unwrapped; on every other descriptor they are the real functions, after one
//! atomic load.

use libc::{c_int, c_long, c_uint, c_void, iovec, mmsghdr, msghdr, size_t, sockaddr, socklen_t, ssize_t};
use socksify_ops::ops::msg::{self, Msg};
use socksify_ops::ops::{gated, udp};
use socksify_ops::runtime::{self, real, Flow};
use socksify_ops::sys::args;
use socksify_ops::sys::mem;
use socksify_ops::table;

/// # Safety
/// The arguments of recvfrom(2).
#[no_mangle]
pub unsafe extern "C" fn recvfrom(
    fd: c_int,
    buf: *mut c_void,
    n: size_t,
    flags: c_int,
    addr: *mut sockaddr,
    len: *mut socklen_t,
) -> ssize_t {
    // SAFETY: the real recvfrom with the caller's arguments.
    let real = || unsafe { real::recvfrom(fd, buf, n, flags, addr, len) };
    if !table::relayed(fd) {
        // The kernel guard traps a recvfrom with an address: it shows its DNS stub's replies as
        // the nameserver's. Local sockets, and those the library saw send only direct, have
        // nothing for it to rewrite: through the gate.
        if gated::open() && !addr.is_null() && (table::direct(fd) || gated::is_local(fd)) {
            return gated::call_now(libc::SYS_recvfrom, args!(fd, buf, n, flags, addr, len), 3, || {
                real() as c_long
            }) as ssize_t;
        }
        return real();
    }
    // The length slot, read as the kernel would (a bad pointer: the kernel's EFAULT).
    let room =
        if addr.is_null() || len.is_null() { Some(0) } else { mem::copy_value(len as *const socklen_t) };
    let Some(room) = room else { return real() };
    let m = Msg::one(buf, n, if len.is_null() { std::ptr::null() } else { addr }, room);
    runtime::run(-1, libc::EIO, || udp::recv_into(fd, m, flags, len), real)
}

hook! {
    fn recv(fd: c_int, buf: *mut c_void, n: size_t, flags: c_int) -> ssize_t {
        gate: table::relayed(fd), fail: -1, panic: libc::EIO,
        body: udp::recv_into(fd, Msg::one(buf, n, std::ptr::null(), 0), flags, std::ptr::null_mut()),
    }
}

hook! {
    fn read(fd: c_int, buf: *mut c_void, n: size_t) -> ssize_t {
        gate: table::relayed(fd), fail: -1, panic: libc::EIO,
        body: udp::recv_into(fd, Msg::one(buf, n, std::ptr::null(), 0), 0, std::ptr::null_mut()),
    }
}

hook! {
    fn readv(fd: c_int, iov: *const iovec, n: c_int) -> ssize_t {
        gate: table::relayed(fd), fail: -1, panic: libc::EIO,
        body: match Msg::vector(iov, n) {
            Ok(m) => udp::recv_into(fd, m, 0, std::ptr::null_mut()),
            Err(_) => Flow::Bypass, // the kernel's EFAULT or EINVAL
        },
    }
}

hook! {
    fn recvmsg(fd: c_int, msg: *mut msghdr, flags: c_int) -> ssize_t {
        gate: table::relayed(fd), fail: -1, panic: libc::EIO, body: udp::recvmsg(fd, msg, flags),
    }
}

/// # Safety
/// The arguments of recvmmsg(2). The timeout is honoured only by the real function (sockets
/// without an association).
#[no_mangle]
pub unsafe extern "C" fn recvmmsg(
    fd: c_int,
    msgs: *mut mmsghdr,
    count: c_uint,
    flags: c_int,
    timeout: *mut libc::timespec,
) -> c_int {
    if msgs.is_null() || count == 0 || !table::relayed(fd) {
        // SAFETY: the real recvmmsg with the caller's arguments.
        return unsafe { real::recvmmsg(fd, msgs, count, flags, timeout) };
    }
    // After the first datagram, only what is already there (MSG_WAITFORONE).
    msg::one_by_one(msgs, count, |hdr, first| {
        let f = if first { flags & !libc::MSG_WAITFORONE } else { flags | libc::MSG_DONTWAIT };
        // SAFETY: the real recvmsg with the caller's header.
        runtime::run(-1, libc::EIO, || udp::recvmsg(fd, hdr, f), || unsafe { real::recvmsg(fd, hdr, f) })
    })
}
