//! Socket hooks: `connect` runs the proxy chain on the program's own descriptor; UDP that would
//! leave without the proxies is refused; `getpeername` answers with the address the program
//! connected to.

use std::net::SocketAddr;

use libc::{c_int, c_void, mmsghdr, msghdr, size_t, sockaddr, socklen_t, ssize_t};
use socksify_core::router::Route;
use socksify_core::sockaddr::{self as raw_addr, SendDest};
use socksify_core::sys;

use crate::hook::{run, Flow};
use crate::{real, sock, sockets, state, udp};

/// # Safety
/// The arguments of connect(2).
#[no_mangle]
pub unsafe extern "C" fn connect(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int {
    let real = || match real::connect.get() {
        // SAFETY: the real connect with the caller's arguments.
        Some(f) => unsafe { f(fd, addr, len) },
        None => syscall_connect(fd, addr, len),
    };
    if crate::hook::inside() {
        return reentrant_connect(fd, addr, len, real);
    }
    run(
        -1,
        libc::ECONNREFUSED,
        // SAFETY: the caller's arguments, as connect(2) takes them.
        || unsafe { connect_flow(fd, addr, len) },
        real,
    )
}

/// A connect made while this thread is inside a hook already: from a signal handler that
/// interrupted one, or from a library the real function called. It cannot run the chain from
/// there (the hook it interrupted may hold what the chain needs), so only what would not be
/// proxied anyway goes through; the rest fails — unless the kernel guard supervises the
/// process, which then proxies it. Allocation-free: signal handlers run here.
fn reentrant_connect(
    fd: c_int,
    addr: *const sockaddr,
    len: socklen_t,
    real: impl FnOnce() -> c_int,
) -> c_int {
    let Some(dest) = sock::read_addr(addr, len) else { return real() };
    let st = match state::get() {
        Ok(st) if st.guarded => return real(),
        Ok(st) => st,
        Err(_) => return real(),
    };
    let unmapped = match dest {
        SocketAddr::V6(v6) => {
            v6.ip().to_ipv4_mapped().map_or(dest, |v4| SocketAddr::new(std::net::IpAddr::V4(v4), v6.port()))
        }
        v4 => v4,
    };
    let stream = sock::socket_type(fd) == Some(libc::SOCK_STREAM);
    if !stream || (!st.router.is_fake(unmapped.ip()) && st.router.config().is_direct(&unmapped)) {
        return real();
    }
    const MSG: &[u8] = b"socksify: a connect made inside another socksify call (a signal handler?) failed: it cannot go through the proxies from there\n";
    // SAFETY: one raw write of a static message; async-signal-safe.
    unsafe {
        crate::syscall::raw(libc::SYS_write, &[2, MSG.as_ptr() as libc::c_long, MSG.len() as libc::c_long])
    };
    crate::hook::set_errno(libc::ECONNREFUSED);
    -1
}

fn syscall_connect(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int {
    // SAFETY: the caller's arguments, passed to the kernel unchanged.
    unsafe {
        crate::syscall::raw(
            libc::SYS_connect,
            &[fd as libc::c_long, addr as libc::c_long, len as libc::c_long],
        ) as c_int
    }
}

unsafe fn connect_flow(fd: c_int, addr: *const sockaddr, len: socklen_t) -> Flow<c_int> {
    let Some(dest) = sock::read_addr(addr, len) else {
        if unspec(addr, len) && sock::socket_type(fd) == Some(libc::SOCK_DGRAM) {
            return udp::disconnect(fd, addr, len).unwrap_or(Flow::Bypass);
        }
        return Flow::Bypass;
    };
    match sock::socket_type(fd) {
        Some(libc::SOCK_STREAM) => tcp_connect(fd, dest),
        Some(libc::SOCK_DGRAM) => udp::connect(fd, dest),
        _ => Flow::Bypass,
    }
}

/// An AF_UNSPEC address: `connect` with it dissolves a datagram socket's association.
fn unspec(addr: *const sockaddr, len: socklen_t) -> bool {
    (len as usize) >= std::mem::size_of::<libc::sa_family_t>()
        && sock::copy_value(addr.cast::<libc::sa_family_t>()).is_some_and(|f| f as c_int == libc::AF_UNSPEC)
}

/// Proxies a TCP connection to `dest` (as the program gave it) on `fd`.
fn tcp_connect(fd: c_int, dest: SocketAddr) -> Flow<c_int> {
    let st = match state::get() {
        Ok(st) => st,
        Err(_) => {
            state::log_broken(format_args!("connect to {dest}"));
            return Flow::Fail(libc::ECONNREFUSED);
        }
    };
    if st.for_the_stub(dest) {
        return Flow::Bypass; // the kernel guard sends it to its DNS stub
    }
    let target = match st.router.route(dest) {
        Route::Direct => return Flow::Bypass,
        Route::UnknownFake => {
            st.log.error(format_args!(
                "connect to {dest} failed: a fake address this process never handed out (no name to send)"
            ));
            return Flow::Fail(libc::EHOSTUNREACH);
        }
        Route::Proxy(target) => target,
    };
    if st.test_panic {
        panic!("SOCKSIFY_TEST_PANIC: connect to {target}");
    }
    match st.chain.connect(fd, &target) {
        Ok(est) => {
            if st.log.verbose() {
                let hops: Vec<String> = est.path.iter().map(|&i| st.chain.proxies()[i].to_string()).collect();
                st.log.info(format_args!("{target} via {}", hops.join(" -> ")));
            }
            let family = if dest.is_ipv6() { libc::AF_INET6 } else { libc::AF_INET };
            let local = est.bound.ip().and_then(|b| sock::in_family(b, family));
            sockets::remember_tcp(fd, dest, target, local);
            Flow::Done(0)
        }
        Err(e) => {
            st.log.error(format_args!("connect to {target} failed: {e}"));
            // Leave the socket unconnected rather than half-way into a chain.
            let _ = sys::disconnect(fd);
            Flow::Fail(e.errno())
        }
    }
}

/// # Safety
/// The arguments of getpeername(2).
#[no_mangle]
pub unsafe extern "C" fn getpeername(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int {
    run(
        -1,
        libc::ENOTCONN,
        || match sockets::peer(fd) {
            Some(peer) if !addr.is_null() && !len.is_null() => {
                if sock::write_addr(&peer, addr, len) {
                    Flow::Done(0)
                } else {
                    Flow::Fail(libc::EFAULT)
                }
            }
            // Connected to its relay by the library, not by the program.
            None if udp::own_link(fd).is_some() => Flow::Fail(libc::ENOTCONN),
            _ => Flow::Bypass,
        },
        || match real::getpeername.get() {
            // SAFETY: the real getpeername with the caller's arguments.
            Some(f) => unsafe { f(fd, addr, len) },
            // SAFETY: as above, straight to the kernel.
            None => unsafe {
                crate::syscall::raw(
                    libc::SYS_getpeername,
                    &[fd as libc::c_long, addr as libc::c_long, len as libc::c_long],
                ) as c_int
            },
        },
    )
}

/// A send: UDP to a proxied destination goes through the relay (or is refused); TCP Fast Open
/// (`MSG_FASTOPEN`), an implicit connect, goes through the chain first. `fast_open` is set when
/// the chain was built and the data still has to be sent.
fn send_flow(fd: c_int, msg: &msghdr, flags: c_int, fast_open: &mut bool) -> Flow<ssize_t> {
    let named = !msg.msg_name.is_null() && msg.msg_namelen != 0;
    let dest = sock::read_addr(msg.msg_name as *const sockaddr, msg.msg_namelen);
    match (sock::socket_type(fd), dest) {
        (Some(libc::SOCK_DGRAM), Some(dest)) => udp::send_to(fd, dest, msg, flags),
        // Not an IPv4 or IPv6 address as such: AF_UNSPEC means IPv4 on an IPv4 socket and no
        // address on an IPv6 one (udp_sendmsg); anything else, or memory that cannot be read,
        // gets the kernel's answer.
        (Some(libc::SOCK_DGRAM), None) if named => match unnamed_family(fd, msg) {
            Some(SendDest::Inet(dest)) => udp::send_to(fd, dest, msg, flags),
            Some(SendDest::Peer) => udp::send_connected(fd, msg, flags).unwrap_or(Flow::Bypass),
            _ => Flow::Bypass,
        },
        (Some(libc::SOCK_DGRAM), None) => udp::send_connected(fd, msg, flags).unwrap_or(Flow::Bypass),
        (Some(libc::SOCK_STREAM), Some(dest)) if flags & libc::MSG_FASTOPEN != 0 => {
            match tcp_connect(fd, dest) {
                Flow::Done(_) => {
                    *fast_open = true;
                    Flow::Done(0)
                }
                Flow::Bypass => Flow::Bypass,
                Flow::Fail(e) => Flow::Fail(e),
            }
        }
        _ => Flow::Bypass,
    }
}

/// Where a datagram with an address that is neither AF_INET nor AF_INET6 goes, as the kernel
/// reads it for this socket; `None` when the address cannot be read.
fn unnamed_family(fd: c_int, msg: &msghdr) -> Option<SendDest> {
    let len = (msg.msg_namelen as usize).min(raw_addr::MAX_LEN);
    let mut bytes = [0u8; raw_addr::MAX_LEN];
    if !sock::copy_in(msg.msg_name as *const u8, &mut bytes[..len]) {
        return None;
    }
    let family = sys::family(fd).ok()?;
    Some(raw_addr::send_destination(&bytes[..len], family))
}

/// Runs a send through `send_flow`; `real` sends the message as the program gave it.
fn send_hook(fd: c_int, msg: &msghdr, flags: c_int, real: impl FnOnce() -> ssize_t) -> ssize_t {
    let mut fast_open = false;
    let r = run(-1, libc::ENETUNREACH, || send_flow(fd, msg, flags, &mut fast_open), real);
    if fast_open {
        // The chain is built: the data follows on the now connected socket.
        let mut copy = *msg;
        copy.msg_name = std::ptr::null_mut();
        copy.msg_namelen = 0;
        return real::sendmsg_now(fd, &copy, flags & !libc::MSG_FASTOPEN);
    }
    r
}

/// A message header for a plain buffer.
fn one_buffer(
    buf: *const c_void,
    n: size_t,
    addr: *const sockaddr,
    len: socklen_t,
    iov: &mut libc::iovec,
) -> msghdr {
    *iov = libc::iovec { iov_base: buf as *mut c_void, iov_len: n };
    // SAFETY: msghdr is plain old data.
    let mut msg: msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = addr as *mut c_void;
    msg.msg_namelen = if addr.is_null() { 0 } else { len };
    msg.msg_iov = iov;
    msg.msg_iovlen = 1;
    msg
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
    let real_sendto = || match real::sendto.get() {
        // SAFETY: the real sendto with the caller's arguments.
        Some(f) => unsafe { f(fd, buf, n, flags, addr, len) },
        // SAFETY: as above, straight to the kernel.
        None => unsafe {
            crate::syscall::raw(
                libc::SYS_sendto,
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
    };
    // An address of length 0 is not "no address" to sendto (a datagram socket says EINVAL), as
    // it is to sendmsg: the kernel answers it.
    if !addr.is_null() && len == 0 {
        return real_sendto();
    }
    let mut iov = libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 };
    let msg = one_buffer(buf, n, addr, len, &mut iov);
    send_hook(fd, &msg, flags, real_sendto)
}

/// # Safety
/// The arguments of send(2).
#[no_mangle]
pub unsafe extern "C" fn send(fd: c_int, buf: *const c_void, n: size_t, flags: c_int) -> ssize_t {
    let real_send = || match real::send.get() {
        // SAFETY: the real send with the caller's arguments.
        Some(f) => unsafe { f(fd, buf, n, flags) },
        // SAFETY: as above, straight to the kernel.
        None => unsafe {
            crate::syscall::raw(
                libc::SYS_sendto,
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
    };
    if !sockets::any_udp() {
        return real_send();
    }
    let mut iov = libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 };
    let msg = one_buffer(buf, n, std::ptr::null(), 0, &mut iov);
    send_hook(fd, &msg, flags, real_send)
}

/// # Safety
/// The arguments of write(2).
#[no_mangle]
pub unsafe extern "C" fn write(fd: c_int, buf: *const c_void, n: size_t) -> ssize_t {
    let real_write = || match real::write.get() {
        // SAFETY: the real write with the caller's arguments.
        Some(f) => unsafe { f(fd, buf, n) },
        // SAFETY: as above, straight to the kernel.
        None => unsafe {
            crate::syscall::raw(
                libc::SYS_write,
                &[fd as libc::c_long, buf as libc::c_long, n as libc::c_long],
            ) as ssize_t
        },
    };
    if !sockets::any_udp() {
        return real_write();
    }
    let mut iov = libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 };
    let msg = one_buffer(buf, n, std::ptr::null(), 0, &mut iov);
    run(-1, libc::EIO, || udp::send_connected(fd, &msg, 0).unwrap_or(Flow::Bypass), real_write)
}

/// # Safety
/// The arguments of writev(2).
#[no_mangle]
pub unsafe extern "C" fn writev(fd: c_int, iov: *const libc::iovec, n: c_int) -> ssize_t {
    let real_writev = || match real::writev.get() {
        // SAFETY: the real writev with the caller's arguments.
        Some(f) => unsafe { f(fd, iov, n) },
        // SAFETY: as above, straight to the kernel.
        None => unsafe {
            crate::syscall::raw(
                libc::SYS_writev,
                &[fd as libc::c_long, iov as libc::c_long, n as libc::c_long],
            ) as ssize_t
        },
    };
    if !sockets::any_udp() || n < 0 {
        return real_writev();
    }
    // SAFETY: msghdr is plain old data.
    let mut msg: msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov as *mut libc::iovec;
    msg.msg_iovlen = n as usize;
    run(-1, libc::EIO, || udp::send_connected(fd, &msg, 0).unwrap_or(Flow::Bypass), real_writev)
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
    let r = match real::setsockopt.get() {
        // SAFETY: the real setsockopt with the caller's arguments.
        Some(f) => unsafe { f(fd, level, name, value, len) },
        // SAFETY: as above, straight to the kernel.
        None => unsafe {
            crate::syscall::raw(
                libc::SYS_setsockopt,
                &[fd as libc::c_long, level as _, name as _, value as libc::c_long, len as libc::c_long],
            ) as c_int
        },
    };
    if r == 0 && level == libc::IPPROTO_UDP && name == libc::UDP_CORK {
        // The kernel took it, so the value is readable.
        let on = sock::copy_value(value.cast::<c_int>()).is_some_and(|v| v != 0);
        let errno = crate::hook::errno();
        sockets::set_cork(fd, on);
        crate::hook::set_errno(errno);
    }
    r
}

/// # Safety
/// The arguments of sendmsg(2).
#[no_mangle]
pub unsafe extern "C" fn sendmsg(fd: c_int, msg: *const msghdr, flags: c_int) -> ssize_t {
    // A header that cannot be read goes to the kernel, which says EFAULT.
    let Some(m) = sock::copy_value(msg) else { return real::sendmsg_now(fd, msg, flags) };
    send_hook(fd, &m, flags, || real::sendmsg_now(fd, msg, flags))
}

/// # Safety
/// The arguments of sendmmsg(2).
#[no_mangle]
pub unsafe extern "C" fn sendmmsg(fd: c_int, msgs: *mut mmsghdr, count: libc::c_uint, flags: c_int) -> c_int {
    let real_sendmmsg = || match real::sendmmsg.get() {
        // SAFETY: the real sendmmsg with the caller's arguments.
        Some(f) => unsafe { f(fd, msgs, count, flags) },
        // SAFETY: as above, straight to the kernel.
        None => unsafe {
            crate::syscall::raw(
                libc::SYS_sendmmsg,
                &[fd as libc::c_long, msgs as libc::c_long, count as libc::c_long, flags as libc::c_long],
            ) as c_int
        },
    };
    if msgs.is_null() || count == 0 || sock::socket_type(fd) != Some(libc::SOCK_DGRAM) {
        return real_sendmmsg();
    }
    // One message at a time through the same path as sendmsg: each may need the relay.
    let mut sent = 0;
    for i in 0..count as usize {
        // SAFETY: the caller's array of `count` headers.
        let entry = unsafe { &mut *msgs.add(i) };
        let r = send_hook(fd, &entry.msg_hdr, flags, || real::sendmsg_now(fd, &entry.msg_hdr, flags));
        if r < 0 {
            return if sent == 0 { -1 } else { sent };
        }
        entry.msg_len = r as libc::c_uint;
        sent += 1;
    }
    sent
}
