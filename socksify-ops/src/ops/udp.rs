//! UDP through the proxy's relay (SOCKS5 UDP ASSOCIATE). The first datagram a socket sends to a
//! proxied destination opens an association on an internal TCP control connection; from then on
//! each datagram leaves the program's own socket wrapped in the RFC 1928 UDP header, to the
//! relay, and replies are unwrapped before the program sees them. Datagrams from anywhere else
//! are the program's as the kernel delivers them (a socket may also talk to loopback or a
//! `direct` route). Under the kernel guard a close-on-exec socket is connected to its relay, so
//! that its datagrams need no trap; to the program it still looks unconnected.

use std::cell::RefCell;
use std::net::{IpAddr, SocketAddr};

use libc::{c_int, c_void, iovec, msghdr, sockaddr, socklen_t, ssize_t};
use socket2::SockAddr;
use socksify_core::router::{Resolution, Route, UdpRoute};
use socksify_core::{v5, TargetAddr};

use super::msg::Msg;
use super::stub;
use crate::runtime::state::log_broken;
use crate::runtime::{state, Flow, State};
use crate::sys::{self, addr, gate, sock};
use crate::table::{self, Assoc, Header, Link, OwnLink, MAX_HEADER};

const MAX_DATAGRAM: usize = 65536 + MAX_HEADER;

/// Where a datagram to `dest` goes.
#[derive(Debug, PartialEq, Eq)]
pub enum Plan {
    /// As the program sent it (direct, loopback, or the kernel guard's DNS stub).
    AsIs,
    /// Through the relay of chain `.1` (`State::chain`'s index), to this target.
    Relay(TargetAddr, usize),
    /// A query to the system's nameservers: answered by the library's DNS stub.
    Stub,
    /// Refused, with this errno (the reason was logged).
    Refuse(c_int),
}

/// Where a datagram to `dest` goes, under state `st`; `what` names the call in log lines.
pub fn plan(st: &State, dest: SocketAddr, what: &str) -> Plan {
    if st.for_the_stub(dest) {
        return Plan::AsIs; // the kernel guard answers it with its DNS stub
    }
    if st.for_our_stub(dest) {
        return Plan::Stub;
    }
    match st.router.route_udp(dest) {
        UdpRoute::Direct => Plan::AsIs,
        UdpRoute::Blocked => {
            st.log.error(format_args!("UDP {what} to {dest} refused: udp = \"block\""));
            Plan::Refuse(libc::ENETUNREACH)
        }
        UdpRoute::Route(Route::Proxy(target, chain)) => Plan::Relay(target, chain),
        UdpRoute::Route(Route::Block(i)) => {
            st.log.error(format_args!("UDP {what} to {dest} refused by {}", st.router.describe(i)));
            Plan::Refuse(libc::ECONNREFUSED)
        }
        UdpRoute::Route(_) => {
            st.log.error(format_args!(
                "UDP {what} to {dest} failed: a fake address this process never handed out"
            ));
            Plan::Refuse(libc::EHOSTUNREACH)
        }
    }
}

fn plan_now(dest: SocketAddr, what: &str) -> Plan {
    match state() {
        Ok(st) => plan(st, dest, what),
        Err(_) => {
            log_broken(format_args!("UDP {what} to {dest}"));
            Plan::Refuse(libc::ENETUNREACH)
        }
    }
}

/// The association of `fd` through chain `via`, opened now if it has none (`for_send`: for a
/// datagram with an address, not a `connect`). A socket's association is through one chain:
/// a datagram whose route is another chain is refused.
fn association(st: &State, fd: c_int, for_send: bool, via: usize) -> Result<Link, c_int> {
    if let Some(link) = table::link(fd) {
        if link.chain != via {
            st.log.error(format_args!(
                "UDP on descriptor {fd}: its association is through chain {}, and this datagram's route is chain {}: refused (one socket, one chain)",
                st.router.config().chain_name(link.chain),
                st.router.config().chain_name(via)
            ));
            return Err(libc::EHOSTUNREACH);
        }
        if sock::quiet(link.control) {
            return Ok(link);
        }
        table::drop_assoc(fd);
        st.log
            .error(format_args!("the proxy closed the UDP association of descriptor {fd}; the send failed"));
        return Err(libc::ECONNRESET);
    }
    let family = sock::family(fd).ok_or(libc::ENOTSOCK)?;
    // The control connection's family follows the proxy's address.
    let chain = st.chain(via);
    let first = chain.proxies().first().ok_or(libc::ENETUNREACH)?;
    let ctl_family = match first.host {
        socksify_core::Host::Ip(IpAddr::V6(_)) => libc::AF_INET6,
        _ => libc::AF_INET,
    };
    let control = sock::socket_high(ctl_family, libc::SOCK_STREAM).inspect_err(|&e| {
        st.log.error(format_args!(
            "UDP association for descriptor {fd} failed: cannot open its control connection: {}",
            std::io::Error::from_raw_os_error(e)
        ));
    })?;
    // Under the kernel guard the guard makes the association (and so knows the relay, which
    // it lets datagrams through to); otherwise the library does.
    let relay =
        if st.guarded { guard_associate(control.raw(), via) } else { own_associate(chain, control.raw()) };
    let relay = relay.map_err(|(errno, why)| {
        st.log.error(format_args!("UDP association for descriptor {fd} failed: {why}"));
        errno
    })?;
    let relay = match addr::in_family(relay, family) {
        Some(r) if !(relay.is_ipv4() && family == libc::AF_INET6 && sock::v6_only(fd)) => r,
        _ => {
            let from = if family == libc::AF_INET { "an IPv4 socket" } else { "an IPv6-only socket" };
            st.log.error(format_args!("the UDP relay {relay} cannot be reached from {from}"));
            return Err(libc::EAFNOSUPPORT);
        }
    };
    if st.log.verbose() {
        st.log.info(format_args!("UDP association for descriptor {fd}: relay {relay} via {first}"));
    }
    let mine = control.raw();
    let link = table::insert_assoc(fd, Assoc::new(control, relay, via)).ok_or(libc::EBADF)?;
    if st.guarded && for_send && link.control == mine {
        return Ok(link_to_relay(st, fd, link));
    }
    Ok(link)
}

/// Connects an unconnected, close-on-exec socket with a new association to its relay (under
/// the kernel guard, so that its datagrams do not each pay a trap). A socket the program
/// connected elsewhere is left alone (the guard says ENOTCONN for one connected to an old
/// relay); one that outlives exec too (its association would not).
fn link_to_relay(st: &State, fd: c_int, mut link: Link) -> Link {
    if sock::peer_addr(fd).is_some() || sock::fd_flags(fd).is_none_or(|f| f & libc::FD_CLOEXEC == 0) {
        return link;
    }
    let wildcard = sock::local_addr(fd).is_none_or(|a| a.ip().is_unspecified());
    if let Err(e) = sock::connect(fd, &link.relay) {
        if st.log.verbose() {
            st.log.info(format_args!(
                "descriptor {fd} stays unconnected ({}): its datagrams go to the relay one by one",
                std::io::Error::from_raw_os_error(e)
            ));
        }
        return link;
    }
    let own = OwnLink { wildcard };
    table::assoc(fd, |a| {
        a.on_relay = true;
        a.own_link = Some(own);
    });
    link.on_relay = true;
    link.own_link = Some(own);
    link
}

/// The relay of a UDP association made on `control` through the chain.
fn own_associate(chain: &socksify_core::Chain, control: c_int) -> Result<SocketAddr, (c_int, String)> {
    let est = chain.udp_associate(control).map_err(|e| (e.errno(), e.to_string()))?;
    est.bound.ip().ok_or_else(|| {
        (libc::EPROTO, format!("the proxy named its UDP relay by a host name ({}); not supported", est.bound))
    })
}

/// The relay of a UDP association the kernel guard makes on `control` when asked with
/// `GUARD_ASSOCIATE` through chain `via` (the call's flags; it says why it failed in its own log
/// line).
fn guard_associate(control: c_int, via: usize) -> Result<SocketAddr, (c_int, String)> {
    // SAFETY: sockaddr_storage is plain old data.
    let mut buf: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let ask = socksify_core::session::GUARD_ASSOCIATE;
    let size = std::mem::size_of::<libc::sockaddr_storage>();
    // SAFETY: sendto from/into local buffers; the guard answers it (the kernel never sends).
    let n = unsafe {
        sys::call(
            libc::SYS_sendto,
            sys::args!(control, &mut buf as *mut libc::sockaddr_storage, size, via, ask.as_ptr(), ask.len()),
        )
    };
    if n < 0 {
        let e = sys::errno();
        return Err((
            e,
            format!("the kernel guard could not make it ({})", std::io::Error::from_raw_os_error(e)),
        ));
    }
    addr::from_storage(&buf, n as socklen_t)
        .ok_or((libc::EPROTO, "the kernel guard's answer is not an address".into()))
}

/// Sends one datagram of `msg` to the relay behind `header` (none while a datagram under
/// construction gets its next piece). Returns the payload bytes sent.
fn send_via_relay(fd: c_int, link: &Link, header: &Header, msg: &Msg, flags: c_int) -> Flow<ssize_t> {
    let more = flags & libc::MSG_MORE != 0 || link.corked;
    let head: &[u8] = if link.open { &[] } else { header.bytes() };
    let r = send_pieces(fd, link, head, msg, flags);
    if matches!(r, Flow::Done(_)) && link.open != more {
        table::assoc(fd, |a| a.open = more);
    }
    r
}

thread_local! {
    static OUT: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Sends `head` and the program's data to the relay. On a socket connected to it, by calls the
/// kernel guard does not trap (no address in them): `writev` when there are no flags, else a
/// checked copy sent with `sendto` without an address; otherwise `sendmsg` to its address.
fn send_pieces(fd: c_int, link: &Link, head: &[u8], msg: &Msg, flags: c_int) -> Flow<ssize_t> {
    let hlen = head.len();
    let done = |n: isize| {
        if n >= 0 {
            Flow::Done((n as usize).saturating_sub(hlen) as ssize_t)
        } else {
            Flow::Fail(sys::errno())
        }
    };
    let user = msg.iov.as_slice();
    // The header first, then the program's buffers (on the stack for a few).
    let first = iovec { iov_base: head.as_ptr() as *mut c_void, iov_len: hlen };
    let mut few = [first; 9];
    let mut many = Vec::new();
    let iov: &mut [iovec] = if user.len() < few.len() {
        few[1..=user.len()].copy_from_slice(user);
        &mut few[..=user.len()]
    } else {
        many.reserve(user.len() + 1);
        many.push(first);
        many.extend_from_slice(user);
        &mut many
    };
    if link.on_relay && msg.controllen == 0 {
        if flags == 0 {
            // SAFETY: our header and the program's own buffers (the kernel checks them).
            return done(unsafe { sock::writev(fd, iov.as_ptr(), iov.len()) });
        }
        if msg.iov.len() <= MAX_DATAGRAM {
            let r = OUT.try_with(|out| {
                let mut out = out.borrow_mut();
                out.clear();
                out.extend_from_slice(head);
                match msg.iov.gather(&mut out) {
                    Ok(()) => done(sock::send(fd, &out, flags)),
                    Err(e) => Flow::Fail(e),
                }
            });
            if let Ok(r) = r {
                return r;
            }
        }
    }
    let relay = SockAddr::from(link.relay);
    // SAFETY: msghdr is plain old data.
    let mut out: msghdr = unsafe { std::mem::zeroed() };
    out.msg_name = relay.as_ptr() as *mut c_void;
    out.msg_namelen = relay.len();
    out.msg_iov = iov.as_mut_ptr();
    out.msg_iovlen = iov.len();
    out.msg_control = msg.control;
    out.msg_controllen = msg.controllen;
    if msg.controllen == 0 {
        // To the relay of the library's own association: through the gate (the guard would
        // only check that the relay is one, and let it through).
        // SAFETY: our header and address, the program's buffers (the kernel checks them).
        // SAFETY: our header and address, the program's buffers (the kernel checks them).
        let r = unsafe { gate::call(libc::SYS_sendmsg, sys::args!(fd, &out as *const msghdr, flags)) };
        return done(r as isize);
    }
    // SAFETY: our header and address, the program's buffers and control data (the kernel
    // checks them; the guard checks the control data).
    done(unsafe { sock::sendmsg(fd, &out, flags) })
}

/// A datagram socket's send with a destination (`sendto`, `sendmsg`): as is, refused, or
/// through the relay.
pub fn send_to(fd: c_int, dest: SocketAddr, msg: &Msg, flags: c_int) -> Flow<ssize_t> {
    let target = match plan_now(dest, "send") {
        Plan::AsIs => {
            // Its replies must reach the socket: one the library connected to its relay is
            // disconnected first.
            unlink(fd);
            // Port 53 always takes the guard's path: its list of nameservers, not ours, decides
            // what its stub answers.
            if for_the_guards_stub(fd, dest) || dest.port() == 53 {
                return Flow::Bypass;
            }
            let sent = super::gated::send_direct(fd, msg, flags);
            if sent.is_some() {
                table::mark_direct(fd, true);
            }
            return sent.unwrap_or(Flow::Bypass);
        }
        Plan::Relay(t, via) => (t, via),
        Plan::Refuse(e) => return Flow::Fail(e),
        Plan::Stub => {
            // Its answer comes from the socket itself: not connected to the relay any more.
            unlink(fd);
            let Ok(st) = state() else { return Flow::Fail(libc::ENETUNREACH) };
            return stub::send(st, fd, dest, msg);
        }
    };
    let (target, via) = target;
    let Ok(st) = state() else { return Flow::Fail(libc::ENETUNREACH) };
    let link = match association(st, fd, true, via) {
        Ok(l) => l,
        Err(e) => return Flow::Fail(e),
    };
    let header = match Header::new(&target) {
        Ok(h) => h,
        Err(e) => return Flow::Fail(e.errno()),
    };
    let r = send_via_relay(fd, &link, &header, msg, flags);
    if matches!(r, Flow::Done(_)) {
        table::assoc(fd, |a| a.note_sent(dest, &target));
    }
    r
}

/// A send without a destination (`send`, `write`, `writev`, `sendmsg` without a name) on a
/// socket with an association; `None` when the socket has none.
pub fn send_connected(fd: c_int, msg: &Msg, flags: c_int) -> Option<Flow<ssize_t>> {
    if let Some(flow) = super::pending::data_call(fd, true) {
        return Some(flow);
    }
    if let Some(ns) = stub::connected_to(fd) {
        let Ok(st) = state() else { return Some(Flow::Fail(libc::ENETUNREACH)) };
        return Some(stub::send(st, fd, ns, msg));
    }
    let link = table::link(fd)?;
    let Some((_, header)) = link.peer else {
        // Connected to the relay by the library only: to the program it has no peer.
        return link.on_relay.then_some(Flow::Fail(libc::EDESTADDRREQ));
    };
    let Ok(st) = state() else { return Some(Flow::Fail(libc::ENETUNREACH)) };
    Some(match association(st, fd, false, link.chain) {
        Ok(link) => send_via_relay(fd, &link, &header, msg, flags),
        Err(e) => Flow::Fail(e),
    })
}

/// True for a datagram (or connect) to the system's nameservers that the kernel guard's stub
/// answers: left to the guard, and the socket no longer known as direct, so that its
/// `recvfrom`s are the guard's too (it shows its stub's replies as the nameserver's).
fn for_the_guards_stub(fd: c_int, dest: SocketAddr) -> bool {
    let stub = state().is_ok_and(|st| st.for_the_stub(dest));
    if stub {
        table::mark_direct(fd, false);
    }
    stub
}

/// `connect()` of a datagram socket: a proxied peer is recorded and the socket connected to the
/// relay (so the kernel itself drops datagrams from anywhere else).
pub fn connect(fd: c_int, dest: SocketAddr, to: *const sockaddr, len: socklen_t) -> Flow<c_int> {
    let plan = plan_now(dest, "connect");
    if plan != Plan::Stub {
        stub::forget_peer(fd);
    }
    let target = match plan {
        Plan::Stub => return stub::connect(fd, dest),
        Plan::AsIs => {
            table::assoc(fd, |a| {
                a.peer = None;
                a.on_relay = false;
                a.own_link = None;
            });
            if for_the_guards_stub(fd, dest) || dest.port() == 53 {
                return Flow::Bypass;
            }
            if !table::direct(fd) {
                // A socket that may have asked the guard's stub before: the guard must see it
                // connect elsewhere (it forgets the socket's mark then). Known direct after.
                table::mark_direct(fd, true);
                return Flow::Bypass;
            }
            return super::gated::connect_direct(fd, to, len).unwrap_or(Flow::Bypass);
        }
        Plan::Relay(t, via) => (t, via),
        Plan::Refuse(e) => return Flow::Fail(e),
    };
    let (target, via) = target;
    let header = match Header::new(&target) {
        Ok(h) => h,
        Err(e) => return Flow::Fail(e.errno()),
    };
    let Ok(st) = state() else { return Flow::Fail(libc::ENETUNREACH) };
    let link = match association(st, fd, false, via) {
        Ok(l) => l,
        Err(e) => return Flow::Fail(e),
    };
    if let Err(e) = sock::connect(fd, &link.relay) {
        return Flow::Fail(e);
    }
    table::assoc(fd, |a| {
        a.peer = Some((dest, target, header));
        a.on_relay = true;
        a.own_link = None;
    });
    Flow::Done(0)
}

/// Disconnects a socket that the library (not the program) connected to its relay, keeping its
/// address and port (a disconnect alone would give an unbound socket a new port, which the
/// relay does not know): from then on its datagrams go to the relay by address.
pub fn unlink(fd: c_int) {
    let Some(link) = table::link(fd) else { return };
    let (true, None, Some(own)) = (link.on_relay, link.peer, link.own_link) else { return };
    let Some(local) = sock::local_addr(fd) else { return };
    let r = sock::disconnect(fd);
    table::assoc(fd, |a| {
        a.on_relay = false;
        a.own_link = None;
    });
    if r.is_err() || sock::local_addr(fd).is_some_and(|now| now.port() == local.port()) {
        return;
    }
    let keep = if own.wildcard { addr::wildcard(local) } else { local };
    if sock::bind(fd, &keep).is_err() {
        // The port was taken meanwhile: the association is of no use any more.
        table::drop_assoc(fd);
        if let Ok(st) = state() {
            st.log.error(format_args!(
                "descriptor {fd} lost its port {} (taken by another socket); its UDP association was dissolved",
                local.port()
            ));
        }
    }
}

/// `connect(AF_UNSPEC)` of a datagram socket with an association: the kernel's disconnect
/// (which also gives an unbound socket a new port when it next sends), and the association is
/// dissolved: the relay knows the old port only, so the next proxied datagram opens a new one.
/// `None` for sockets without an association.
pub fn disconnect(fd: c_int, to: *const sockaddr, len: socklen_t) -> Option<Flow<c_int>> {
    stub::forget_peer(fd);
    table::link(fd)?;
    // SAFETY: the program's own arguments, straight to the kernel.
    if unsafe { sys::call(libc::SYS_connect, sys::args!(fd, to, len)) } != 0 {
        return Some(Flow::Fail(sys::errno()));
    }
    table::drop_assoc(fd);
    Some(Flow::Done(0))
}

/// What `getpeername` and `getsockname` of a socket the library connected to its relay show:
/// `Some(true)` for one the program never connected (ENOTCONN; a wildcard local address),
/// `Some(false)` when it was bound to a particular address; `None` for other sockets.
pub fn own_link(fd: c_int) -> Option<bool> {
    let l = table::link(fd)?;
    if !l.on_relay || l.peer.is_some() {
        return None;
    }
    l.own_link.map(|o| o.wildcard)
}

thread_local! {
    static BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// A received datagram's source and payload: unwrapped from the relay, or as it came.
enum Got {
    Relayed(TargetAddr, usize),
    AsIs(SocketAddr),
}

/// Receives one datagram from the relay into the program's `msg`, unwrapped; `None` when `fd`
/// has no association. `msg` is the program's, copied: its `namelen` and `flags` are set for
/// the caller to hand back. A datagram from the relay that is malformed or a fragment is
/// dropped, as is one from another of the proxy's relay ports (an association this process
/// does not know: a parent's or child's on a shared socket).
pub fn recv(fd: c_int, msg: &mut RecvMsg, flags: c_int) -> Option<Flow<ssize_t>> {
    if flags & libc::MSG_ERRQUEUE != 0 {
        return None;
    }
    let link = table::link(fd);
    if link.is_none() && !stub::asked(fd) {
        return None;
    }
    let family = sock::family(fd)?;
    let r = BUF.try_with(|buf| {
        let mut buf = buf.borrow_mut();
        if buf.len() < MAX_DATAGRAM {
            buf.resize(MAX_DATAGRAM, 0);
        }
        loop {
            // SAFETY: sockaddr_storage is plain old data.
            let mut from: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
            let mut iov = iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
            // SAFETY: msghdr is plain old data.
            let mut m: msghdr = unsafe { std::mem::zeroed() };
            m.msg_name = (&mut from as *mut libc::sockaddr_storage).cast();
            m.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as socklen_t;
            m.msg_iov = &mut iov;
            m.msg_iovlen = 1;
            m.msg_control = msg.msg.control;
            m.msg_controllen = msg.msg.controllen;
            // SAFETY: our buffers; the program's control buffer (the kernel checks it).
            let n = unsafe { sock::recvmsg(fd, &mut m, flags & !libc::MSG_TRUNC) };
            if n < 0 {
                return Flow::Fail(sys::errno());
            }
            let n = n as usize;
            let src = addr::from_storage(&from, m.msg_namelen);
            let relay = link.map(|l| l.relay);
            let got = match src {
                Some(s) if Some(s) == relay => {
                    v5::decode_udp(&buf[..n]).ok().map(|(s, at)| Got::Relayed(s, at))
                }
                Some(s) if Some(s.ip()) == relay.map(|r| r.ip()) && v5::decode_udp(&buf[..n]).is_ok() => None,
                Some(s) => Some(Got::AsIs(s)),
                None => None,
            };
            let Some(got) = got else {
                if flags & libc::MSG_PEEK != 0 {
                    // Consume the datagram that was only peeked at, then look again.
                    // SAFETY: as above.
                    unsafe { sock::recvmsg(fd, &mut m, (flags & !libc::MSG_PEEK) | libc::MSG_DONTWAIT) };
                }
                continue;
            };
            let at = match &got {
                Got::Relayed(_, at) => *at,
                Got::AsIs(_) => 0,
            };
            let payload = &buf[at..n];
            let copied = match msg.msg.iov.scatter(payload) {
                Ok(c) => c,
                Err(e) => return Flow::Fail(e),
            };
            msg.controllen = m.msg_controllen;
            msg.flags = m.msg_flags & !libc::MSG_TRUNC;
            if copied < payload.len() {
                msg.flags |= libc::MSG_TRUNC;
            }
            if !msg.msg.name.is_null() {
                let shown = match got {
                    Got::Relayed(source, _) => {
                        table::assoc(fd, |a| source_as_seen(a, source.clone(), family))
                            .unwrap_or_else(|| fallback_source(source, family))
                    }
                    Got::AsIs(s) => stub::shown_source(fd, s, payload).unwrap_or(s),
                };
                match addr::write_into(&shown, msg.msg.name.cast(), msg.msg.namelen) {
                    Some(full) => msg.msg.namelen = full,
                    None => return Flow::Fail(libc::EFAULT),
                }
            }
            let len = if flags & libc::MSG_TRUNC != 0 { payload.len() } else { copied };
            return Flow::Done(len as ssize_t);
        }
    });
    Some(r.unwrap_or(Flow::Fail(libc::ENOMEM)))
}

/// A receive into the program's buffer(s) `m`; `len` is the program's address-length slot
/// (written back); `None` when `fd` has no association.
pub fn recv_into(fd: c_int, m: Msg, flags: c_int, len: *mut socklen_t) -> Flow<ssize_t> {
    if let Some(flow) = super::pending::data_call(fd, false) {
        return flow;
    }
    let mut r = RecvMsg::new(m);
    match recv(fd, &mut r, flags) {
        None => Flow::Bypass,
        Some(Flow::Done(n)) if !len.is_null() && !r.msg.name.is_null() => {
            if sys::mem::copy_out(len.cast(), &r.msg.namelen.to_ne_bytes()) {
                Flow::Done(n)
            } else {
                Flow::Fail(libc::EFAULT)
            }
        }
        Some(flow) => flow,
    }
}

/// recvmsg(2) of the program's header at `msg`: the header is copied, and what the kernel
/// would write back into it (name length, control length, flags) is.
pub fn recvmsg(fd: c_int, msg: *mut msghdr, flags: c_int) -> Flow<ssize_t> {
    if let Some(flow) = super::pending::data_call(fd, false) {
        return flow;
    }
    let Ok(m) = Msg::copy(msg) else { return Flow::Bypass }; // the kernel's EFAULT
    let mut r = RecvMsg::new(m);
    let Some(flow) = recv(fd, &mut r, flags) else { return Flow::Bypass };
    if let Flow::Done(_) = flow {
        // The fields of the header the program gave, written checked.
        let field = |offset: usize| (msg as *mut u8).wrapping_add(offset);
        let namelen = field(std::mem::offset_of!(msghdr, msg_namelen));
        let controllen = field(std::mem::offset_of!(msghdr, msg_controllen));
        let mflags = field(std::mem::offset_of!(msghdr, msg_flags));
        let ok = sys::mem::copy_out(namelen, &r.msg.namelen.to_ne_bytes())
            && sys::mem::copy_out(controllen, &r.controllen.to_ne_bytes())
            && sys::mem::copy_out(mflags, &r.flags.to_ne_bytes());
        if !ok {
            return Flow::Fail(libc::EFAULT);
        }
    }
    flow
}

/// A receive: the program's message (copied) and what the kernel would write back into its
/// header (`msg.namelen`, and these).
pub struct RecvMsg {
    pub msg: Msg,
    pub controllen: usize,
    pub flags: c_int,
}

impl RecvMsg {
    pub fn new(msg: Msg) -> RecvMsg {
        let controllen = msg.controllen;
        RecvMsg { msg, controllen, flags: 0 }
    }
}

/// The source address the program is shown for a reply: its connected peer; else the address it
/// sent to (a fake address stands for the name the relay resolved); else the relay's word.
fn source_as_seen(assoc: &Assoc, source: TargetAddr, family: c_int) -> SocketAddr {
    if let Some((peer, _, _)) = &assoc.peer {
        return *peer;
    }
    if let Some((program, _)) = assoc.sent.iter().find(|(_, t)| *t == source) {
        return *program;
    }
    let mut same_port =
        assoc.sent.iter().filter(|(_, t)| matches!(t, TargetAddr::Domain(_, p) if *p == source.port()));
    if let (Some((only, _)), None) = (same_port.next(), same_port.next()) {
        return *only;
    }
    fallback_source(source, family)
}

/// The relay's word for a source: an address, or a name (shown by its fake address).
fn fallback_source(source: TargetAddr, family: c_int) -> SocketAddr {
    let addr = match source {
        TargetAddr::Ip(sa) => sa,
        TargetAddr::Domain(name, port) => match state().map(|st| st.router.resolve(&name)) {
            Ok(Resolution::Fake { v4, v6, .. }) => {
                SocketAddr::new(if family == libc::AF_INET6 { v6 } else { v4 }, port)
            }
            _ => SocketAddr::new(IpAddr::from([0, 0, 0, 0]), port),
        },
    };
    addr::in_family(addr, family).unwrap_or(addr)
}

#[cfg(test)]
mod tests;
