//! Incoming connections through SOCKS BIND. A program told to expect a connection back (active
//! FTP) binds, listens, advertises its address and accepts; under socksify the listen becomes a
//! BIND on the program's own socket, `getsockname` answers with the proxy's listening address
//! (and, on a proxied connection, the proxy's side of it), and `accept` waits for the BIND's
//! second reply and hands back the connection.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use libc::{c_int, sockaddr, socklen_t};
use socksify_core::sys::{self as core_sys, FdStream};
use socksify_core::{Command, TargetAddr};

use super::udp;
use crate::runtime::{state, Flow};
use crate::sys::{self, addr, sock};
use crate::table;

/// bind(2) failed with EADDRNOTAVAIL: the program binds to an address it learnt from
/// getsockname of a proxied connection — the proxy's, not this host's. That socket can only
/// listen through the proxy: a BIND, sent now (programs read their port with getsockname right
/// after bind, as curl does), so that listen() has nothing left to do.
pub fn bind_elsewhere(fd: c_int, to: *const sockaddr, len: socklen_t) -> Flow<c_int> {
    let Some(wanted) = addr::read(to, len) else { return Flow::Fail(libc::EADDRNOTAVAIL) };
    let Ok(st) = state() else { return Flow::Fail(libc::EADDRNOTAVAIL) };
    let known = table::latest_target().is_some();
    if sock::socket_type(fd) != Some(libc::SOCK_STREAM) || !st.router.proxies_listen(wanted, known) {
        return Flow::Fail(libc::EADDRNOTAVAIL);
    }
    table::entry_or_new(fd, |e| e.virtual_bind = Some(wanted));
    start_bind(fd, wanted)
}

/// bind(2) done: a TCP socket bound to the wildcard address at a port of the program's choice
/// is a server's, for whoever connects to that port: its listen stays local (see `listen`).
pub fn bound(fd: c_int, addr: *const sockaddr, len: socklen_t) {
    let Some(a) = addr::read(addr, len) else { return };
    if a.port() == 0
        || !addr::unmapped(a).ip().is_unspecified()
        || sock::socket_type(fd) != Some(libc::SOCK_STREAM)
    {
        return;
    }
    let errno = sys::errno();
    table::entry_or_new(fd, |e| e.server_port = true);
    sys::set_errno(errno);
}

/// listen(2): a BIND when the socket's address is the proxy's to listen on. A wildcard
/// listen becomes one only at a port the kernel chose (the way a program waits for the one
/// connection it is about to announce: active FTP); at a port the program chose it is a
/// server's, which local clients must reach, and stays local.
pub fn listen(fd: c_int) -> Flow<c_int> {
    if sock::socket_type(fd) != Some(libc::SOCK_STREAM) {
        return Flow::Bypass;
    }
    let (bind, virtual_bind, server) =
        table::entry(fd, |e| (e.bind, e.virtual_bind, e.server_port)).unwrap_or((None, None, false));
    if bind.is_some() {
        return Flow::Done(0); // the BIND was sent at bind()
    }
    if server && virtual_bind.is_none() {
        return Flow::Bypass;
    }
    let Some(bound) = virtual_bind.or_else(|| sock::local_addr(fd)) else { return Flow::Bypass };
    let Ok(st) = state() else { return Flow::Bypass };
    if !st.router.proxies_listen(bound, table::latest_target().is_some()) {
        return Flow::Bypass;
    }
    start_bind(fd, bound)
}

/// Sends a BIND on `fd` for a listen on `bound`: its first reply says where the proxy listens.
fn start_bind(fd: c_int, bound: SocketAddr) -> Flow<c_int> {
    let Ok(st) = state() else { return Flow::Fail(libc::ECONNREFUSED) };
    // The peer the proxy is to expect: the destination of the connection the program talks to.
    let expected = table::latest_target().unwrap_or_else(|| {
        let any = if bound.is_ipv6() { IpAddr::from([0u16; 8]) } else { IpAddr::from([0u8; 4]) };
        TargetAddr::Ip(SocketAddr::new(any, 0))
    });
    // BIND follows the route of the peer it expects.
    let via = st.router.chain_of(&expected);
    let chain = st.chain(via);
    match chain.establish(fd, Command::Bind, &expected) {
        Ok(est) => {
            let family = family(fd);
            let Some(listen) = est.bound.ip().and_then(|a| addr::in_family(a, family)) else {
                st.log.error(format_args!(
                    "BIND: the proxy named its listening address by a host name ({})",
                    est.bound
                ));
                let _ = core_sys::disconnect(fd);
                return Flow::Fail(libc::EPROTO);
            };
            let hop = *est.path.last().expect("a chain has a hop");
            if st.log.verbose() {
                st.log.info(format_args!(
                    "listen on descriptor {fd}: BIND at {listen} via {} for a connection from {expected}",
                    chain.proxies()[hop]
                ));
            }
            table::entry_or_new(fd, |e| {
                e.bind = Some(table::Bind { chain: via, hop, accepted: false });
                e.local = Some(listen);
            });
            Flow::Done(0)
        }
        Err(e) => {
            st.log.error(format_args!(
                "listen on descriptor {fd} failed: BIND for a connection from {expected}: {e}"
            ));
            let _ = core_sys::disconnect(fd);
            Flow::Fail(e.errno())
        }
    }
}

fn family(fd: c_int) -> c_int {
    if sock::family(fd) == Some(libc::AF_INET6) {
        libc::AF_INET6
    } else {
        libc::AF_INET
    }
}

/// accept(2) on a BIND: waits for its second reply and returns a new descriptor for the
/// connection.
pub fn accept(fd: c_int, out: *mut sockaddr, len: *mut socklen_t, flags: c_int) -> Flow<c_int> {
    let Some(Some(bind)) = table::entry(fd, |e| e.bind) else { return Flow::Bypass };
    let Ok(st) = state() else { return Flow::Fail(libc::ECONNABORTED) };
    let nonblocking = sock::nonblocking(fd);
    if bind.accepted {
        if !nonblocking {
            st.log.error(format_args!(
                "accept on descriptor {fd}: a SOCKS BIND carries one connection, which was accepted"
            ));
        }
        return Flow::Fail(if nonblocking { libc::EAGAIN } else { libc::ECONNABORTED });
    }
    if nonblocking && core_sys::wait(fd, libc::POLLIN, Some(std::time::Instant::now())).is_err() {
        return Flow::Fail(libc::EAGAIN);
    }
    let mut stream = FdStream::new(fd);
    let chain = st.chain(bind.chain);
    stream.set_timeout(Some(chain.timeouts().read.max(Duration::from_secs(1))));
    let peer = match chain.proxies()[bind.hop].read_bind_reply(&mut stream) {
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
    let family = family(fd);
    let peer = addr::in_family(peer, family).unwrap_or(peer);
    let Some(new) = hand_over(fd, family, flags) else { return Flow::Fail(sys::errno()) };
    table::entry_or_new(new, |e| {
        if let Some(b) = e.bind.as_mut() {
            b.accepted = true;
        }
        e.tcp_peer = Some(peer);
    });
    if !out.is_null() && !len.is_null() && !addr::write(&peer, out, len) {
        return Flow::Fail(libc::EFAULT);
    }
    if st.log.verbose() {
        st.log.info(format_args!("accept on descriptor {fd}: connection from {peer} through the BIND"));
    }
    Flow::Done(new)
}

/// Gives the BIND's connection a descriptor of its own, as accept does: the connection keeps
/// the socket (its file description, with O_NONBLOCK as `flags` ask), and the program's
/// listening descriptor gets a fresh socket listening on loopback, with the listening
/// descriptor's flags, that nothing will connect to — what a listening socket whose one client
/// has come looks like. (The BIND socket cannot stay there: the connection and the listener
/// would share O_NONBLOCK, and the listener would read as ready whenever the peer sends.)
fn hand_over(fd: c_int, family: c_int, flags: c_int) -> Option<c_int> {
    let dup = if flags & libc::SOCK_CLOEXEC != 0 { libc::F_DUPFD_CLOEXEC } else { libc::F_DUPFD };
    let new = sys::check(sock::fcntl(fd, dup, 0)).ok()? as c_int;
    table::duplicated(fd, new);
    let listener_fl = sock::file_flags(fd).unwrap_or(0);
    let listener_cloexec = sock::fd_flags(fd).is_some_and(|f| f & libc::FD_CLOEXEC != 0);
    let conn_fl = if flags & libc::SOCK_NONBLOCK != 0 {
        listener_fl | libc::O_NONBLOCK
    } else {
        listener_fl & !libc::O_NONBLOCK
    };
    sock::fcntl(new, libc::F_SETFL, conn_fl as libc::c_long);
    if let Ok(placeholder) = sock::socket_high(family, libc::SOCK_STREAM) {
        let lo: SocketAddr =
            if family == libc::AF_INET6 { "[::1]:0" } else { "127.0.0.1:0" }.parse().expect("literal");
        let _ = sock::bind(placeholder.raw(), &lo);
        let _ = sock::listen(placeholder.raw(), 1);
        // dup3 replaces the program's listening descriptor atomically, keeping its
        // close-on-exec flag; the BIND's record stays with the connection.
        table::closing(fd);
        let _ = sock::dup3(placeholder.raw(), fd, if listener_cloexec { libc::O_CLOEXEC } else { 0 });
        sock::fcntl(fd, libc::F_SETFL, listener_fl as libc::c_long);
    }
    Some(new)
}

/// getsockname(2): the proxy's side of a proxied connection or BIND, an address the program
/// bound to that is the proxy's, or — for a socket the library connected to its UDP relay —
/// the wildcard address it would have unconnected.
pub fn getsockname(fd: c_int, out: *mut sockaddr, len: *mut socklen_t) -> Flow<c_int> {
    if out.is_null() || len.is_null() {
        return Flow::Bypass;
    }
    let known = table::entry(fd, |e| e.local.or(e.virtual_bind)).flatten();
    match known.or_else(|| linked_local(fd)) {
        Some(local) if addr::write(&local, out, len) => Flow::Done(0),
        Some(_) => Flow::Fail(libc::EFAULT),
        None => Flow::Bypass,
    }
}

fn linked_local(fd: c_int) -> Option<SocketAddr> {
    if !udp::own_link(fd)? {
        return None;
    }
    sock::local_addr(fd).map(addr::wildcard)
}
