//! The library's DNS stub: under remote DNS without the kernel guard (`--mode preload`, or
//! where the guard is unavailable), queries a program sends itself to the system's nameservers
//! (c-ares, Chromium's resolver, `dig @resolver`) never leave the process. They are answered
//! by `socksify_core::stub` — the guard's stub too — from the fake table, and what the table
//! cannot answer goes over TCP through the chain to `dns_server`.
//!
//! UDP: the answer is sent by the program's socket to itself (its own address, loopback for a
//! wildcard one), so it waits in the socket's own queue and `poll`/`epoll` see it arrive; a
//! socket the program connects to a nameserver is connected to itself instead. Replies are
//! shown as coming from the nameserver asked (`recvfrom`, `recvmsg`), and `getpeername`
//! answers the nameserver. TCP: the program's socket is connected to a one-connection listener
//! on loopback whose accepted end a thread of the library serves.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use libc::{c_int, ssize_t};
use socksify_core::dnswire;
use socksify_core::stub::{self as core_stub, Answer};

use super::msg::Msg;
use crate::runtime::{Flow, State};
use crate::sys::{self, addr, sock};
use crate::table;

const MAX_QUERY: usize = 65535;
const FLAGS: c_int = libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL;

fn loopback(family: c_int) -> IpAddr {
    if family == libc::AF_INET6 {
        IpAddr::V6(Ipv6Addr::LOCALHOST)
    } else {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    }
}

/// The address a datagram socket's stub replies come from and go to: its own (loopback for a
/// wildcard one). An unbound socket is bound to the wildcard first, as its first send would.
fn own_address(fd: c_int) -> Result<SocketAddr, c_int> {
    let family = sock::family(fd).ok_or(libc::ENOTSOCK)?;
    let local = match sock::local_addr(fd) {
        Some(a) if a.port() != 0 => a,
        _ => {
            let any = match family {
                libc::AF_INET6 => SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0),
                _ => SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
            };
            sock::bind(fd, &any)?;
            sock::local_addr(fd).ok_or(libc::EINVAL)?
        }
    };
    if local.ip().is_unspecified() {
        return Ok(SocketAddr::new(loopback(family), local.port()));
    }
    Ok(local)
}

/// True when a datagram from `src` is the socket's own: a stub reply.
fn from_itself(fd: c_int, src: SocketAddr) -> bool {
    let Some(local) = sock::local_addr(fd) else { return false };
    let (src, local) = (addr::unmapped(src), addr::unmapped(local));
    src.port() == local.port()
        && (src.ip() == local.ip() || (local.ip().is_unspecified() && src.ip().is_loopback()))
}

/// `connect()` of a datagram socket to a nameserver: connected to itself, the nameserver
/// recorded for `getpeername`.
pub fn connect(fd: c_int, ns: SocketAddr) -> Flow<c_int> {
    let own = match own_address(fd) {
        Ok(a) => a,
        Err(e) => return Flow::Fail(e),
    };
    if let Err(e) = sock::connect(fd, &own) {
        return Flow::Fail(e);
    }
    table::assoc(fd, |a| {
        a.peer = None;
        a.on_relay = false;
        a.own_link = None;
    });
    table::entry_or_new(fd, |e| e.dns.get_or_insert_with(Default::default).peer = Some(ns));
    Flow::Done(0)
}

/// The nameserver a socket was connected to by [`connect`], if it was.
pub fn connected_to(fd: c_int) -> Option<SocketAddr> {
    table::entry(fd, |e| e.dns.as_ref().and_then(|d| d.peer)).flatten()
}

/// Forgets the nameserver of a socket the program connects elsewhere (or disconnects).
pub fn forget_peer(fd: c_int) {
    table::entry(fd, |e| {
        if let Some(d) = e.dns.as_mut() {
            d.peer = None;
        }
    });
}

/// A query sent to nameserver `ns` (`sendto`, or a send on a socket connected to it): answered
/// on the socket itself, now or when `dns_server` has answered.
pub fn send(st: &'static State, fd: c_int, ns: SocketAddr, msg: &Msg) -> Flow<ssize_t> {
    if msg.iov.len() > MAX_QUERY {
        return Flow::Fail(libc::EMSGSIZE);
    }
    let mut query = Vec::with_capacity(msg.iov.len());
    if let Err(e) = msg.iov.gather(&mut query) {
        return Flow::Fail(e);
    }
    let own = match own_address(fd) {
        Ok(a) => a,
        Err(e) => return Flow::Fail(e),
    };
    if query.len() >= 2 {
        let id = u16::from_be_bytes([query[0], query[1]]);
        table::entry_or_new(fd, |e| e.dns.get_or_insert_with(Default::default).note(id, ns));
    }
    match core_stub::answer(&st.router, &query) {
        Some(Answer::Now(reply)) => {
            if let Some(why) = core_stub::refusal(&st.router, &query, &reply) {
                st.log.error(format_args!("{why}"));
            }
            sock::send_to(fd, &dnswire::fit_udp(&query, reply), &own, FLAGS);
        }
        // A name on a direct route too: the library cannot reach the system resolver from inside
        // the program's own send, so it asks `dns_server` through the chain (nothing leaks).
        Some(Answer::Forward | Answer::System) => forward_later(st, fd, own, query),
        None => {} // not a query: a server would not answer either
    }
    Flow::Done(msg.iov.len() as ssize_t)
}

fn servfail(query: &[u8]) -> Vec<u8> {
    dnswire::error_response(query, dnswire::RCODE_SERVFAIL).unwrap_or_default()
}

/// Asks `dns_server` through the chain, in a thread of its own (the program's send returns at
/// once), and sends its answer on a duplicate of the program's socket to itself. The
/// duplicate is the library's own (the program's closes leave it alone) and is checked to be
/// the same socket before the answer goes.
fn forward_later(st: &'static State, fd: c_int, own: SocketAddr, query: Vec<u8>) {
    let Some((dup, ino)) = sock::dup_high(fd).map(|d| (d, sock::inode(d))) else {
        sock::send_to(fd, &servfail(&query), &own, FLAGS);
        return;
    };
    table::own(dup);
    let fallback = servfail(&query);
    let work = move || {
        let reply = ask(st, &query);
        if sock::inode(dup) == ino {
            sock::send_to(dup, &dnswire::fit_udp(&query, reply), &own, FLAGS);
        }
        table::disown(dup);
        sock::close(dup);
    };
    if std::thread::Builder::new().name("socksify-dns".into()).spawn(work).is_err() {
        st.log.error(format_args!("DNS query forwarding failed: cannot start a thread; answered SERVFAIL"));
        sock::send_to(fd, &fallback, &own, FLAGS);
        table::disown(dup);
        sock::close(dup);
    }
}

/// `dns_server`'s answer to `query` through the chain, or SERVFAIL (logged).
fn ask(st: &State, query: &[u8]) -> Vec<u8> {
    let server = &st.router.config().dns_server;
    let (reply, why) = match sock::socket_high(core_stub::first_hop_family(st.chain(0)), libc::SOCK_STREAM) {
        Ok(ctl) => {
            table::own(ctl.raw());
            let r = core_stub::forward(st.chain(0), ctl.raw(), server, query);
            table::disown(ctl.raw());
            r
        }
        Err(e) => (servfail(query), Some(std::io::Error::from_raw_os_error(e).to_string())),
    };
    if let Some(why) = why {
        let what = match dnswire::parse_query(query) {
            Ok(q) => format!("{} (type {})", q.name, q.qtype),
            Err(_) => "a query".to_owned(),
        };
        st.log.error(format_args!("DNS query for {what} to {server} failed: {why}; answered SERVFAIL"));
    }
    reply
}

/// The source a received datagram is shown from: a stub reply (from the socket itself) as the
/// nameserver asked (by its id, `payload`'s first two bytes); `None` for other datagrams.
pub fn shown_source(fd: c_int, src: SocketAddr, payload: &[u8]) -> Option<SocketAddr> {
    if !from_itself(fd, src) {
        return None;
    }
    let id = (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]));
    let ns = table::entry(fd, |e| e.dns.as_ref().and_then(|d| d.source_of(id))).flatten()?;
    let family = sock::family(fd)?;
    Some(addr::in_family(ns, family).unwrap_or(ns))
}

/// True when `fd` has sent queries to the stub (its receives may need their source named).
pub fn asked(fd: c_int) -> bool {
    table::entry(fd, |e| e.dns.is_some()).unwrap_or(false)
}

/// `connect()` of a stream socket to a nameserver's port 53: to a one-connection listener on
/// loopback instead, whose accepted end a thread serves with the stub (DNS over TCP).
pub fn tcp_connect(st: &'static State, fd: c_int, ns: SocketAddr) -> Flow<c_int> {
    match tcp_link(st, fd) {
        Ok(()) => {
            table::entry_or_new(fd, |e| e.tcp_peer = Some(ns));
            Flow::Done(0)
        }
        Err(e) => {
            st.log.error(format_args!(
                "connect to {ns} (DNS, answered by socksify) failed: {}",
                std::io::Error::from_raw_os_error(e)
            ));
            Flow::Fail(e)
        }
    }
}

fn tcp_link(st: &'static State, fd: c_int) -> Result<(), c_int> {
    let family = sock::family(fd).ok_or(libc::ENOTSOCK)?;
    let listener = sock::socket_high(family, libc::SOCK_STREAM)?;
    sock::bind(listener.raw(), &SocketAddr::new(loopback(family), 0))?;
    sock::listen(listener.raw(), 1)?;
    let at = sock::local_addr(listener.raw()).ok_or(libc::EINVAL)?;
    socksify_core::sys::connect_timeout(fd, &at, st.chain(0).timeouts().connect)
        .map_err(|e| e.raw_os_error().unwrap_or(libc::ECONNREFUSED))?;
    // SAFETY: accept4 on our own listener, without an address.
    let conn = unsafe { sys::call(libc::SYS_accept4, sys::args!(listener.raw(), 0, 0, libc::SOCK_CLOEXEC)) };
    if conn < 0 {
        return Err(sys::errno());
    }
    let conn = conn as c_int;
    let served = match sock::dup_high(conn) {
        Some(high) => {
            sock::close(conn);
            high
        }
        None => conn,
    };
    let ino = sock::inode(served);
    table::own(served);
    let work = move || {
        serve_tcp(st, served, ino);
        table::disown(served);
        sock::close(served);
    };
    std::thread::Builder::new().name("socksify-dns-tcp".into()).spawn(work).map_err(|_| libc::EAGAIN)?;
    Ok(())
}

/// DNS over TCP on `fd` (each message behind its two-byte length) until the program closes its
/// end, goes quiet for 30 s, or `fd` is no longer the socket it was (`ino`).
fn serve_tcp(st: &State, fd: c_int, ino: Option<u64>) {
    use std::io::{Read, Write};
    let mut s = socksify_core::sys::FdStream::new(fd);
    loop {
        s.set_timeout(Some(Duration::from_secs(30)));
        let mut len = [0u8; 2];
        if sock::inode(fd) != ino || s.read_exact(&mut len).is_err() {
            return;
        }
        let mut query = vec![0u8; u16::from_be_bytes(len) as usize];
        if s.read_exact(&mut query).is_err() {
            return;
        }
        let reply = match core_stub::answer(&st.router, &query) {
            Some(Answer::Now(reply)) => {
                if let Some(why) = core_stub::refusal(&st.router, &query, &reply) {
                    st.log.error(format_args!("{why}"));
                }
                reply
            }
            Some(Answer::Forward | Answer::System) => ask(st, &query),
            None => return,
        };
        let mut out = (reply.len() as u16).to_be_bytes().to_vec();
        out.extend_from_slice(&reply);
        s.set_timeout(Some(st.chain(0).timeouts().read));
        if sock::inode(fd) != ino || s.write_all(&out).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests;
