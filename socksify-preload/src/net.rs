//! Socket hooks: `connect` runs the proxy chain on the program's own descriptor; UDP that would
//! leave without the proxies is refused; `getpeername` answers with the address the program
//! connected to.

use std::net::SocketAddr;

use libc::{c_int, c_void, mmsghdr, msghdr, size_t, sockaddr, socklen_t, ssize_t};
use socksify_core::router::Route;
use socksify_core::sys;

use crate::hook::{run, Flow};
use crate::{fdtable, real, sock, state};

/// # Safety
/// The arguments of connect(2).
#[no_mangle]
pub unsafe extern "C" fn connect(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int {
    run(
        -1,
        libc::ECONNREFUSED,
        // SAFETY: the caller's arguments, as connect(2) takes them.
        || unsafe { connect_flow(fd, addr, len) },
        || match real::connect.get() {
            // SAFETY: the real connect with the caller's arguments.
            Some(f) => unsafe { f(fd, addr, len) },
            None => syscall_connect(fd, addr, len),
        },
    )
}

fn syscall_connect(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int {
    // SAFETY: the caller's arguments, passed to the kernel unchanged.
    unsafe { libc::syscall(libc::SYS_connect, fd, addr, len) as c_int }
}

unsafe fn connect_flow(fd: c_int, addr: *const sockaddr, len: socklen_t) -> Flow<c_int> {
    // SAFETY: the caller's buffer of `len` bytes.
    let Some(dest) = (unsafe { sock::read_addr(addr, len) }) else { return Flow::Bypass };
    match sock::socket_type(fd) {
        Some(libc::SOCK_STREAM) => tcp_connect(fd, dest),
        Some(libc::SOCK_DGRAM) => udp_check(dest, "connect"),
        _ => Flow::Bypass,
    }
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
            fdtable::remember(fd, dest);
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

/// UDP to `dest`: allowed only to `direct` destinations until the library relays UDP.
fn udp_check(dest: SocketAddr, what: &str) -> Flow<c_int> {
    let st = match state::get() {
        Ok(st) => st,
        Err(_) => {
            state::log_broken(format_args!("UDP {what} to {dest}"));
            return Flow::Fail(libc::ENETUNREACH);
        }
    };
    match st.router.route(dest) {
        Route::Direct => Flow::Bypass,
        _ => {
            st.log.error(format_args!("UDP {what} to {dest} refused: socksify does not relay UDP yet"));
            Flow::Fail(libc::ENETUNREACH)
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
        || match fdtable::peer(fd) {
            Some(peer) if !addr.is_null() && !len.is_null() => {
                // SAFETY: the caller's buffer of `*len` bytes.
                unsafe { sock::write_addr(&peer, addr, len) };
                Flow::Done(0)
            }
            _ => Flow::Bypass,
        },
        || match real::getpeername.get() {
            // SAFETY: the real getpeername with the caller's arguments.
            Some(f) => unsafe { f(fd, addr, len) },
            // SAFETY: as above, straight to the kernel.
            None => unsafe { libc::syscall(libc::SYS_getpeername, fd, addr, len) as c_int },
        },
    )
}

/// A send with a destination: UDP is checked like `connect`; TCP Fast Open (`MSG_FASTOPEN`),
/// an implicit connect, goes through the chain first.
unsafe fn send_flow(fd: c_int, addr: *const sockaddr, len: socklen_t, flags: c_int) -> Flow<c_int> {
    // SAFETY: the caller's buffer of `len` bytes.
    let Some(dest) = (unsafe { sock::read_addr(addr, len) }) else { return Flow::Bypass };
    match sock::socket_type(fd) {
        Some(libc::SOCK_DGRAM) => udp_check(dest, "send"),
        Some(libc::SOCK_STREAM) if flags & libc::MSG_FASTOPEN != 0 => tcp_connect(fd, dest),
        _ => Flow::Bypass,
    }
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
    let real_sendto = |addr: *const sockaddr, len: socklen_t, flags: c_int| match real::sendto.get() {
        // SAFETY: the real sendto with the caller's buffer.
        Some(f) => unsafe { f(fd, buf, n, flags, addr, len) },
        // SAFETY: as above, straight to the kernel.
        None => unsafe { libc::syscall(libc::SYS_sendto, fd, buf, n, flags, addr, len) as ssize_t },
    };
    let mut connected = false;
    let r = run(
        -1,
        libc::ENETUNREACH,
        // SAFETY: the caller's address buffer.
        || match unsafe { send_flow(fd, addr, len, flags) } {
            Flow::Done(_) => {
                connected = true;
                Flow::Done(0)
            }
            Flow::Bypass => Flow::Bypass,
            Flow::Fail(e) => Flow::Fail(e),
        },
        || real_sendto(addr, len, flags),
    );
    if connected {
        // Fast Open through the chain: the data follows on the now connected socket.
        return real_sendto(std::ptr::null(), 0, flags & !libc::MSG_FASTOPEN);
    }
    r
}

/// # Safety
/// The arguments of sendmsg(2).
#[no_mangle]
pub unsafe extern "C" fn sendmsg(fd: c_int, msg: *const msghdr, flags: c_int) -> ssize_t {
    let real_sendmsg = |msg: *const msghdr, flags: c_int| match real::sendmsg.get() {
        // SAFETY: the real sendmsg with the caller's message.
        Some(f) => unsafe { f(fd, msg, flags) },
        // SAFETY: as above, straight to the kernel.
        None => unsafe { libc::syscall(libc::SYS_sendmsg, fd, msg, flags) as ssize_t },
    };
    let mut connected = false;
    let r = run(
        -1,
        libc::ENETUNREACH,
        || {
            if msg.is_null() {
                return Flow::Bypass;
            }
            // SAFETY: the caller's message header.
            let (name, namelen) = unsafe { ((*msg).msg_name as *const sockaddr, (*msg).msg_namelen) };
            // SAFETY: the message's address buffer.
            match unsafe { send_flow(fd, name, namelen, flags) } {
                Flow::Done(_) => {
                    connected = true;
                    Flow::Done(0)
                }
                Flow::Bypass => Flow::Bypass,
                Flow::Fail(e) => Flow::Fail(e),
            }
        },
        || real_sendmsg(msg, flags),
    );
    if connected {
        // SAFETY: a copy of the caller's header without the destination.
        let mut copy = unsafe { *msg };
        copy.msg_name = std::ptr::null_mut();
        copy.msg_namelen = 0;
        return real_sendmsg(&copy, flags & !libc::MSG_FASTOPEN);
    }
    r
}

/// # Safety
/// The arguments of sendmmsg(2).
#[no_mangle]
pub unsafe extern "C" fn sendmmsg(fd: c_int, msgs: *mut mmsghdr, count: libc::c_uint, flags: c_int) -> c_int {
    run(
        -1,
        libc::ENETUNREACH,
        || {
            if msgs.is_null() || sock::socket_type(fd) != Some(libc::SOCK_DGRAM) {
                return Flow::Bypass;
            }
            for i in 0..count as usize {
                // SAFETY: the caller's array of `count` headers.
                let hdr = unsafe { &(*msgs.add(i)).msg_hdr };
                // SAFETY: each header's address buffer.
                if let Some(dest) =
                    unsafe { sock::read_addr(hdr.msg_name as *const sockaddr, hdr.msg_namelen) }
                {
                    if let Flow::Fail(e) = udp_check(dest, "send") {
                        return Flow::Fail(e);
                    }
                }
            }
            Flow::Bypass
        },
        || match real::sendmmsg.get() {
            // SAFETY: the real sendmmsg with the caller's arguments.
            Some(f) => unsafe { f(fd, msgs, count, flags) },
            // SAFETY: as above, straight to the kernel.
            None => unsafe { libc::syscall(libc::SYS_sendmmsg, fd, msgs, count, flags) as c_int },
        },
    )
}
