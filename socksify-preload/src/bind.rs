//! Incoming connections through SOCKS BIND. A program told to expect a connection back (active
//! FTP) binds, listens, advertises its address and accepts; under socksify the listen becomes a
//! BIND on the program's own socket, `getsockname` answers with the proxy's listening address
//! (and, on a proxied connection, the proxy's side of it), and `accept` waits for the BIND's
//! second reply and hands back the connection.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use libc::{c_int, sockaddr, socklen_t};
use socksify_core::sys::{self, FdStream};
use socksify_core::{Command, TargetAddr};

use crate::hook::{run, Flow};
use crate::{real, sock, sockets, state};

fn real_bind(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int {
    match real::bind.get() {
        // SAFETY: the real bind with the caller's arguments.
        Some(f) => unsafe { f(fd, addr, len) },
        // SAFETY: as above, straight to the kernel.
        None => unsafe { crate::syscall::raw(libc::SYS_bind, &[fd as _, addr as _, len as _]) as c_int },
    }
}

/// # Safety
/// The arguments of bind(2).
#[no_mangle]
pub unsafe extern "C" fn bind(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int {
    let r = real_bind(fd, addr, len);
    if r == 0 || crate::hook::errno() != libc::EADDRNOTAVAIL {
        return r;
    }
    // The program binds to an address it learnt from getsockname of a proxied connection: the
    // proxy's, not this host's. That socket can only listen through the proxy: a BIND.
    run(
        -1,
        libc::EADDRNOTAVAIL,
        || {
            let Some(wanted) = sock::read_addr(addr, len) else {
                return Flow::Fail(libc::EADDRNOTAVAIL);
            };
            let Ok(st) = state::get() else { return Flow::Fail(libc::EADDRNOTAVAIL) };
            let known = sockets::latest_target().is_some();
            if sock::socket_type(fd) != Some(libc::SOCK_STREAM) || !st.router.proxies_listen(wanted, known) {
                return Flow::Fail(libc::EADDRNOTAVAIL);
            }
            // Programs read their port with getsockname right after bind (curl does), so the
            // BIND goes to the proxy now, and listen() has nothing left to do.
            sockets::set_virtual_bind(fd, wanted);
            start_bind(fd, wanted)
        },
        || -1,
    )
}

/// The address a socket is bound to: the library's record of a proxy address, or the kernel's.
fn bound_address(fd: c_int) -> Option<SocketAddr> {
    sockets::virtual_bind(fd).or_else(|| sys::local_addr(fd).ok())
}

fn listen_flow(fd: c_int) -> Flow<c_int> {
    if sock::socket_type(fd) != Some(libc::SOCK_STREAM) {
        return Flow::Bypass;
    }
    if sockets::bind_state(fd).is_some() {
        return Flow::Done(0); // the BIND was sent at bind()
    }
    let Some(bound) = bound_address(fd) else { return Flow::Bypass };
    let Ok(st) = state::get() else { return Flow::Bypass };
    if !st.router.proxies_listen(bound, sockets::latest_target().is_some()) {
        return Flow::Bypass;
    }
    start_bind(fd, bound)
}

/// Sends a BIND on `fd` for a listen on `bound`: its first reply says where the proxy listens.
fn start_bind(fd: c_int, bound: SocketAddr) -> Flow<c_int> {
    let Ok(st) = state::get() else { return Flow::Fail(libc::ECONNREFUSED) };
    // The peer the proxy is to expect: the destination of the connection the program talks to.
    let expected = sockets::latest_target().unwrap_or_else(|| {
        let any = if bound.is_ipv6() { IpAddr::from([0u16; 8]) } else { IpAddr::from([0u8; 4]) };
        TargetAddr::Ip(SocketAddr::new(any, 0))
    });
    match st.chain.establish(fd, Command::Bind, &expected) {
        Ok(est) => {
            let family =
                if sys::family(fd).ok() == Some(libc::AF_INET6) { libc::AF_INET6 } else { libc::AF_INET };
            let Some(listen) = est.bound.ip().and_then(|a| sock::in_family(a, family)) else {
                st.log.error(format_args!(
                    "BIND: the proxy named its listening address by a host name ({})",
                    est.bound
                ));
                let _ = sys::disconnect(fd);
                return Flow::Fail(libc::EPROTO);
            };
            let hop = *est.path.last().expect("a chain has a hop");
            if st.log.verbose() {
                st.log.info(format_args!(
                    "listen on descriptor {fd}: BIND at {listen} via {} for a connection from {expected}",
                    st.chain.proxies()[hop]
                ));
            }
            sockets::set_bind(fd, hop, listen);
            Flow::Done(0)
        }
        Err(e) => {
            st.log.error(format_args!(
                "listen on descriptor {fd} failed: BIND for a connection from {expected}: {e}"
            ));
            let _ = sys::disconnect(fd);
            Flow::Fail(e.errno())
        }
    }
}

/// # Safety
/// The arguments of listen(2).
#[no_mangle]
pub unsafe extern "C" fn listen(fd: c_int, backlog: c_int) -> c_int {
    run(
        -1,
        libc::EADDRINUSE,
        || listen_flow(fd),
        || match real::listen.get() {
            // SAFETY: the real listen with the caller's arguments.
            Some(f) => unsafe { f(fd, backlog) },
            // SAFETY: as above, straight to the kernel.
            None => unsafe { crate::syscall::raw(libc::SYS_listen, &[fd as _, backlog as _]) as c_int },
        },
    )
}

/// Waits for the BIND's second reply on `fd` and returns a new descriptor for the connection.
fn accept_flow(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t, flags: c_int) -> Flow<c_int> {
    let Some(bind) = sockets::bind_state(fd) else { return Flow::Bypass };
    let Ok(st) = state::get() else { return Flow::Fail(libc::ECONNABORTED) };
    // SAFETY: fcntl(F_GETFL) on the program's descriptor.
    let nonblocking = unsafe { crate::syscall::raw(libc::SYS_fcntl, &[fd as _, libc::F_GETFL as _]) }
        as c_int
        & libc::O_NONBLOCK
        != 0;
    if bind.accepted {
        if !nonblocking {
            st.log.error(format_args!(
                "accept on descriptor {fd}: a SOCKS BIND carries one connection, which was accepted"
            ));
        }
        return Flow::Fail(if nonblocking { libc::EAGAIN } else { libc::ECONNABORTED });
    }
    if nonblocking && sys::wait(fd, libc::POLLIN, Some(std::time::Instant::now())).is_err() {
        return Flow::Fail(libc::EAGAIN);
    }
    let mut stream = FdStream::new(fd);
    stream.set_timeout(Some(st.chain.timeouts().read.max(Duration::from_secs(1))));
    let peer = match st.chain.proxies()[bind.hop].read_bind_reply(&mut stream) {
        Ok(TargetAddr::Ip(peer)) => peer,
        Ok(other) => {
            st.log.error(format_args!(
                "accept on descriptor {fd}: the proxy named the peer by a host name ({other})"
            ));
            return Flow::Fail(libc::EPROTO);
        }
        Err(e) => {
            st.log.error(format_args!("accept on descriptor {fd} failed: BIND's second reply: {e}"));
            return Flow::Fail(e.errno());
        }
    };
    let family = if sys::family(fd).ok() == Some(libc::AF_INET6) { libc::AF_INET6 } else { libc::AF_INET };
    let peer = sock::in_family(peer, family).unwrap_or(peer);
    let Some(new) = hand_over(fd, family, flags) else { return Flow::Fail(crate::hook::errno()) };
    sockets::bind_accepted(new, peer);
    if !addr.is_null() && !len.is_null() && !sock::write_addr(&peer, addr, len) {
        return Flow::Fail(libc::EFAULT);
    }
    if st.log.verbose() {
        st.log.info(format_args!("accept on descriptor {fd}: connection from {peer} through the BIND"));
    }
    Flow::Done(new)
}

fn fcntl(fd: c_int, cmd: c_int, arg: libc::c_long) -> c_int {
    // SAFETY: fcntl on a descriptor of the program's or the library's, as accept does.
    unsafe { crate::syscall::raw(libc::SYS_fcntl, &[fd as _, cmd as _, arg]) as c_int }
}

/// Gives the BIND's connection a descriptor of its own, as accept does: the connection keeps
/// the socket (its file description, with O_NONBLOCK as `flags` ask), and the program's
/// listening descriptor gets a fresh socket listening on loopback, with the listening
/// descriptor's flags, that nothing will connect to — what a listening socket whose one client
/// has come looks like. (The BIND socket cannot stay there: the connection and the listener
/// would share O_NONBLOCK, and the listener would read as ready whenever the peer sends.)
fn hand_over(fd: c_int, family: c_int, flags: c_int) -> Option<c_int> {
    let cloexec = if flags & libc::SOCK_CLOEXEC != 0 { libc::F_DUPFD_CLOEXEC } else { libc::F_DUPFD };
    let new = fcntl(fd, cloexec, 0);
    if new < 0 {
        return None;
    }
    let listener_fl = fcntl(fd, libc::F_GETFL, 0);
    let listener_fd_flags = fcntl(fd, libc::F_GETFD, 0);
    let conn_fl = if flags & libc::SOCK_NONBLOCK != 0 {
        listener_fl | libc::O_NONBLOCK
    } else {
        listener_fl & !libc::O_NONBLOCK
    };
    fcntl(new, libc::F_SETFL, conn_fl as libc::c_long);
    // SAFETY: a socket of the library's own, straight from the kernel.
    let placeholder = unsafe {
        crate::syscall::raw(
            libc::SYS_socket,
            &[family as _, (libc::SOCK_STREAM | libc::SOCK_CLOEXEC) as _, 0],
        )
    } as c_int;
    if placeholder >= 0 {
        let lo: SocketAddr =
            if family == libc::AF_INET6 { "[::1]:0" } else { "127.0.0.1:0" }.parse().expect("literal");
        let lo = socket2::SockAddr::from(lo);
        // SAFETY: bind and listen on the library's own socket; dup3 replaces the program's
        // listening descriptor atomically, keeping its close-on-exec flag.
        unsafe {
            crate::syscall::raw(libc::SYS_bind, &[placeholder as _, lo.as_ptr() as _, lo.len() as _]);
            crate::syscall::raw(libc::SYS_listen, &[placeholder as _, 1]);
            let keep_cloexec = if listener_fd_flags & libc::FD_CLOEXEC != 0 { libc::O_CLOEXEC } else { 0 };
            crate::syscall::raw(libc::SYS_dup3, &[placeholder as _, fd as _, keep_cloexec as _]);
        }
        fcntl(fd, libc::F_SETFL, listener_fl as libc::c_long);
        sock::close_raw(placeholder);
    }
    Some(new)
}

/// # Safety
/// The arguments of accept(2).
#[no_mangle]
pub unsafe extern "C" fn accept(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int {
    if !sockets::any() {
        return real_accept4(fd, addr, len, 0, false);
    }
    run(-1, libc::ECONNABORTED, || accept_flow(fd, addr, len, 0), || real_accept4(fd, addr, len, 0, false))
}

/// # Safety
/// The arguments of accept4(2).
#[no_mangle]
pub unsafe extern "C" fn accept4(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t, flags: c_int) -> c_int {
    if !sockets::any() {
        return real_accept4(fd, addr, len, flags, true);
    }
    run(
        -1,
        libc::ECONNABORTED,
        || accept_flow(fd, addr, len, flags),
        || real_accept4(fd, addr, len, flags, true),
    )
}

fn real_accept4(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t, flags: c_int, four: bool) -> c_int {
    let r = if four {
        real::accept4.get().map(|f| (Some(f), None))
    } else {
        real::accept.get().map(|f| (None, Some(f)))
    };
    match r {
        // SAFETY: the real accept4 with the caller's arguments.
        Some((Some(f), _)) => unsafe { f(fd, addr, len, flags) },
        // SAFETY: the real accept with the caller's arguments.
        Some((_, Some(f))) => unsafe { f(fd, addr, len) },
        // SAFETY: straight to the kernel.
        _ => unsafe {
            crate::syscall::raw(libc::SYS_accept4, &[fd as _, addr as _, len as _, flags as _]) as c_int
        },
    }
}

/// # Safety
/// The arguments of getsockname(2).
#[no_mangle]
pub unsafe extern "C" fn getsockname(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int {
    let real_getsockname = || match real::getsockname.get() {
        // SAFETY: the real getsockname with the caller's arguments.
        Some(f) => unsafe { f(fd, addr, len) },
        // SAFETY: as above, straight to the kernel.
        None => unsafe {
            crate::syscall::raw(libc::SYS_getsockname, &[fd as _, addr as _, len as _]) as c_int
        },
    };
    if !sockets::any() || addr.is_null() || len.is_null() {
        return real_getsockname();
    }
    run(
        -1,
        libc::EBADF,
        || match sockets::local(fd).or_else(|| sockets::virtual_bind(fd)).or_else(|| linked_local(fd)) {
            Some(local) if sock::write_addr(&local, addr, len) => Flow::Done(0),
            Some(_) => Flow::Fail(libc::EFAULT),
            None => Flow::Bypass,
        },
        real_getsockname,
    )
}

/// The local address of a socket the library connected to its UDP relay, as the program would
/// see it unconnected: the wildcard address, with the port the kernel gave it.
fn linked_local(fd: c_int) -> Option<std::net::SocketAddr> {
    if !crate::udp::own_link(fd)? {
        return None;
    }
    let mut local = sock::local_addr(fd)?;
    local.set_ip(match local {
        std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::UNSPECIFIED.into(),
        std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::UNSPECIFIED.into(),
    });
    Some(local)
}
