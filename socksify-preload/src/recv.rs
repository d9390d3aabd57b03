//! Receive hooks: on a socket with a UDP association, datagrams are unwrapped (see `udp.rs`);
//! on every other descriptor they are the real functions, at the cost of one atomic load while
//! the process has no association.

use libc::{c_int, c_void, iovec, mmsghdr, msghdr, size_t, sockaddr, socklen_t, ssize_t};

use crate::hook::{run, Flow};
use crate::{real, sockets, udp};

/// A receive into one buffer, with an optional source address.
fn recv_one(
    fd: c_int,
    buf: *mut c_void,
    n: size_t,
    flags: c_int,
    addr: *mut sockaddr,
    len: *mut socklen_t,
    real: impl FnOnce() -> ssize_t,
) -> ssize_t {
    if !sockets::any_udp() {
        return real();
    }
    let mut iov = iovec { iov_base: buf, iov_len: n };
    // SAFETY: msghdr is plain old data.
    let mut msg: msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    let mut name_wanted = false;
    if !addr.is_null() && !len.is_null() {
        msg.msg_name = addr.cast();
        // The caller's length slot, read as the kernel would (a bad pointer is EFAULT).
        match crate::sock::copy_value(len as *const socklen_t) {
            Some(room) => msg.msg_namelen = room,
            None => return real(),
        }
        name_wanted = true;
    }
    run(
        -1,
        libc::EIO,
        || match udp::recv(fd, &mut msg, flags) {
            None => Flow::Bypass,
            Some(Flow::Done(n)) if name_wanted => {
                if crate::sock::copy_out(len.cast(), &msg.msg_namelen.to_ne_bytes()) {
                    Flow::Done(n)
                } else {
                    Flow::Fail(libc::EFAULT)
                }
            }
            Some(r) => r,
        },
        real,
    )
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
    recv_one(fd, buf, n, flags, addr, len, || match real::recvfrom.get() {
        // SAFETY: the real recvfrom with the caller's arguments.
        Some(f) => unsafe { f(fd, buf, n, flags, addr, len) },
        // SAFETY: as above, straight to the kernel.
        None => unsafe {
            crate::syscall::raw(
                libc::SYS_recvfrom,
                &[
                    fd as libc::c_long,
                    buf as libc::c_long,
                    n as libc::c_long,
                    flags as libc::c_long,
                    addr as libc::c_long,
                    len as libc::c_long,
                ],
            ) as ssize_t
        },
    })
}

/// # Safety
/// The arguments of recv(2).
#[no_mangle]
pub unsafe extern "C" fn recv(fd: c_int, buf: *mut c_void, n: size_t, flags: c_int) -> ssize_t {
    recv_one(fd, buf, n, flags, std::ptr::null_mut(), std::ptr::null_mut(), || match real::recv.get() {
        // SAFETY: the real recv with the caller's arguments.
        Some(f) => unsafe { f(fd, buf, n, flags) },
        // SAFETY: as above, straight to the kernel.
        None => unsafe {
            crate::syscall::raw(
                libc::SYS_recvfrom,
                &[
                    fd as libc::c_long,
                    buf as libc::c_long,
                    n as libc::c_long,
                    flags as libc::c_long,
                    0 as libc::c_long,
                    0 as libc::c_long,
                ],
            ) as ssize_t
        },
    })
}

/// # Safety
/// The arguments of read(2).
#[no_mangle]
pub unsafe extern "C" fn read(fd: c_int, buf: *mut c_void, n: size_t) -> ssize_t {
    recv_one(fd, buf, n, 0, std::ptr::null_mut(), std::ptr::null_mut(), || match real::read.get() {
        // SAFETY: the real read with the caller's arguments.
        Some(f) => unsafe { f(fd, buf, n) },
        // SAFETY: as above, straight to the kernel.
        None => unsafe {
            crate::syscall::raw(libc::SYS_read, &[fd as libc::c_long, buf as libc::c_long, n as libc::c_long])
                as ssize_t
        },
    })
}

/// # Safety
/// The arguments of recvmsg(2).
#[no_mangle]
pub unsafe extern "C" fn recvmsg(fd: c_int, msg: *mut msghdr, flags: c_int) -> ssize_t {
    if msg.is_null() || !sockets::any_udp() {
        return real::recvmsg_now(fd, msg, flags);
    }
    run(
        -1,
        libc::EIO,
        // SAFETY: the caller's message header.
        || udp::recv(fd, unsafe { &mut *msg }, flags).unwrap_or(Flow::Bypass),
        || real::recvmsg_now(fd, msg, flags),
    )
}

/// # Safety
/// The arguments of recvmmsg(2). The timeout is honoured only by the real function (sockets
/// without an association).
#[no_mangle]
pub unsafe extern "C" fn recvmmsg(
    fd: c_int,
    msgs: *mut mmsghdr,
    count: libc::c_uint,
    flags: c_int,
    timeout: *mut libc::timespec,
) -> c_int {
    let real_recvmmsg = || match real::recvmmsg.get() {
        // SAFETY: the real recvmmsg with the caller's arguments.
        Some(f) => unsafe { f(fd, msgs, count, flags, timeout) },
        // SAFETY: as above, straight to the kernel.
        None => unsafe {
            crate::syscall::raw(
                libc::SYS_recvmmsg,
                &[
                    fd as libc::c_long,
                    msgs as libc::c_long,
                    count as libc::c_long,
                    flags as libc::c_long,
                    timeout as libc::c_long,
                ],
            ) as c_int
        },
    };
    if msgs.is_null() || count == 0 || !sockets::any_udp() || sockets::udp(fd).is_none() {
        return real_recvmmsg();
    }
    // One datagram at a time; after the first, only what is already there (MSG_WAITFORONE).
    let mut got = 0;
    for i in 0..count as usize {
        let f = if i == 0 { flags & !libc::MSG_WAITFORONE } else { flags | libc::MSG_DONTWAIT };
        // SAFETY: the caller's array of `count` headers.
        let entry = unsafe { &mut *msgs.add(i) };
        let hdr: *mut msghdr = &mut entry.msg_hdr;
        let r = run(
            -1,
            libc::EIO,
            // SAFETY: the caller's header, used by one of the two closures only.
            || udp::recv(fd, unsafe { &mut *hdr }, f).unwrap_or(Flow::Bypass),
            || real::recvmsg_now(fd, hdr, f),
        );
        if r < 0 {
            return if got == 0 { -1 } else { got };
        }
        entry.msg_len = r as libc::c_uint;
        got += 1;
    }
    got
}

/// # Safety
/// The arguments of readv(2).
#[no_mangle]
pub unsafe extern "C" fn readv(fd: c_int, iov: *const iovec, n: c_int) -> ssize_t {
    let real_readv = || match real::readv.get() {
        // SAFETY: the real readv with the caller's arguments.
        Some(f) => unsafe { f(fd, iov, n) },
        // SAFETY: as above, straight to the kernel.
        None => unsafe {
            crate::syscall::raw(
                libc::SYS_readv,
                &[fd as libc::c_long, iov as libc::c_long, n as libc::c_long],
            ) as ssize_t
        },
    };
    if !sockets::any_udp() || n < 0 {
        return real_readv();
    }
    // SAFETY: msghdr is plain old data.
    let mut msg: msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov as *mut iovec;
    msg.msg_iovlen = n as usize;
    run(-1, libc::EIO, || udp::recv(fd, &mut msg, 0).map_or(Flow::Bypass, |r| r), real_readv)
}
