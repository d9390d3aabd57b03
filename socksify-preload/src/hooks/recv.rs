//! recvfrom, recv, read, readv, recvmsg, recvmmsg: on a socket with a UDP association,
//! datagrams are unwrapped; on every other descriptor they are the real functions, after one
//! atomic load.

use libc::{c_int, c_uint, c_void, iovec, mmsghdr, msghdr, size_t, sockaddr, socklen_t, ssize_t};
use socksify_ops::ops::msg::Msg;
use socksify_ops::ops::udp::{self, RecvMsg};
use socksify_ops::runtime::{self, real, Flow};
use socksify_ops::sys::mem;
use socksify_ops::table;

/// A receive into `m`; `len` is the program's address-length slot (written back).
fn recv_into(fd: c_int, m: Msg, flags: c_int, len: *mut socklen_t) -> Flow<ssize_t> {
    let mut r = RecvMsg::new(m);
    match udp::recv(fd, &mut r, flags) {
        None => Flow::Bypass,
        Some(Flow::Done(n)) if !len.is_null() && !r.msg.name.is_null() => {
            if mem::copy_out(len.cast(), &r.msg.namelen.to_ne_bytes()) {
                Flow::Done(n)
            } else {
                Flow::Fail(libc::EFAULT)
            }
        }
        Some(flow) => flow,
    }
}

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
        return real();
    }
    // The length slot, read as the kernel would (a bad pointer: the kernel's EFAULT).
    let room =
        if addr.is_null() || len.is_null() { Some(0) } else { mem::copy_value(len as *const socklen_t) };
    let Some(room) = room else { return real() };
    let name = if len.is_null() { std::ptr::null() } else { addr as *const sockaddr };
    runtime::run(-1, libc::EIO, || recv_into(fd, Msg::one(buf, n, name, room), flags, len), real)
}

hook! {
    fn recv(fd: c_int, buf: *mut c_void, n: size_t, flags: c_int) -> ssize_t {
        gate: table::relayed(fd), fail: -1, panic: libc::EIO,
        body: recv_into(fd, Msg::one(buf, n, std::ptr::null(), 0), flags, std::ptr::null_mut()),
    }
}

hook! {
    fn read(fd: c_int, buf: *mut c_void, n: size_t) -> ssize_t {
        gate: table::relayed(fd), fail: -1, panic: libc::EIO,
        body: recv_into(fd, Msg::one(buf, n, std::ptr::null(), 0), 0, std::ptr::null_mut()),
    }
}

hook! {
    fn readv(fd: c_int, iov: *const iovec, n: c_int) -> ssize_t {
        gate: table::relayed(fd), fail: -1, panic: libc::EIO,
        body: match Msg::vector(iov, n) {
            Ok(m) => recv_into(fd, m, 0, std::ptr::null_mut()),
            Err(_) => Flow::Bypass, // the kernel's EFAULT or EINVAL
        },
    }
}

/// recvmsg of the program's header at `msg`: the header is copied, and what the kernel would
/// write back into it (name length, control length, flags) is.
fn recvmsg_flow(fd: c_int, msg: *mut msghdr, flags: c_int) -> Flow<ssize_t> {
    let Ok(m) = Msg::copy(msg) else { return Flow::Bypass }; // the kernel's EFAULT
    let mut r = RecvMsg::new(m);
    let Some(flow) = udp::recv(fd, &mut r, flags) else { return Flow::Bypass };
    if let Flow::Done(_) = flow {
        // SAFETY: fields of the header the program gave (it was readable just now).
        let (namelen, controllen, mflags) = unsafe {
            (
                std::ptr::addr_of_mut!((*msg).msg_namelen),
                std::ptr::addr_of_mut!((*msg).msg_controllen),
                std::ptr::addr_of_mut!((*msg).msg_flags),
            )
        };
        let ok = mem::copy_out(namelen.cast(), &r.msg.namelen.to_ne_bytes())
            && mem::copy_out(controllen.cast(), &r.controllen.to_ne_bytes())
            && mem::copy_out(mflags.cast(), &r.flags.to_ne_bytes());
        if !ok {
            return Flow::Fail(libc::EFAULT);
        }
    }
    flow
}

hook! {
    fn recvmsg(fd: c_int, msg: *mut msghdr, flags: c_int) -> ssize_t {
        gate: table::relayed(fd), fail: -1, panic: libc::EIO, body: recvmsg_flow(fd, msg, flags),
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
    if msgs.is_null() || count == 0 || table::link(fd).is_none() {
        // SAFETY: the real recvmmsg with the caller's arguments.
        return unsafe { real::recvmmsg(fd, msgs, count, flags, timeout) };
    }
    // One datagram at a time; after the first, only what is already there (MSG_WAITFORONE).
    let mut got = 0;
    for i in 0..count as usize {
        let f = if i == 0 { flags & !libc::MSG_WAITFORONE } else { flags | libc::MSG_DONTWAIT };
        let entry = msgs.wrapping_add(i);
        // SAFETY: the caller's array of `count` headers (each is copied checked).
        let hdr = unsafe { std::ptr::addr_of_mut!((*entry).msg_hdr) };
        // SAFETY: the real recvmsg with the caller's header.
        let r =
            runtime::run(-1, libc::EIO, || recvmsg_flow(fd, hdr, f), || unsafe { real::recvmsg(fd, hdr, f) });
        // SAFETY: as above.
        let len = unsafe { std::ptr::addr_of_mut!((*entry).msg_len) };
        if r < 0 || !mem::copy_out(len.cast(), &(r as c_uint).to_ne_bytes()) {
            return if got == 0 { -1 } else { got };
        }
        got += 1;
    }
    got
}
