//! UDP through the proxy's relay (SOCKS5 UDP ASSOCIATE). The first datagram a socket sends to a
//! proxied destination opens an association on an internal TCP control connection; from then on
//! each datagram leaves the program's own socket wrapped in the RFC 1928 UDP header, to the
//! relay, and replies are unwrapped before the program sees them. Datagrams from anywhere else
//! are the program's as the kernel delivers them (a socket may also talk to loopback or a
//! `direct` route).

use std::cell::RefCell;
use std::net::{IpAddr, SocketAddr};

use libc::{c_int, c_void, iovec, msghdr, sockaddr, socklen_t, ssize_t};
use socket2::SockAddr;
use socksify_core::router::{Resolution, Route, UdpRoute};
use socksify_core::{v5, TargetAddr};

use crate::hook::Flow;
use crate::sockets::{self, Assoc};
use crate::{real, sock, state};

/// The largest RFC 1928 UDP header (a 255-byte name).
const MAX_HEADER: usize = 4 + 1 + 255 + 2;
const MAX_DATAGRAM: usize = 65536 + MAX_HEADER;

/// What to do with a datagram to `dest`: `Ok(None)` to send it as is, `Ok(Some(target))` through
/// the relay, `Err(errno)` to refuse it (logged).
fn decide(dest: SocketAddr, what: &str) -> Result<Option<TargetAddr>, c_int> {
    let st = match state::get() {
        Ok(st) => st,
        Err(_) => {
            state::log_broken(format_args!("UDP {what} to {dest}"));
            return Err(libc::ENETUNREACH);
        }
    };
    if st.for_the_stub(dest) {
        return Ok(None); // the kernel guard answers it with its DNS stub
    }
    match st.router.route_udp(dest) {
        UdpRoute::Direct => Ok(None),
        UdpRoute::Blocked => {
            st.log.error(format_args!("UDP {what} to {dest} refused: udp = \"block\""));
            Err(libc::ENETUNREACH)
        }
        UdpRoute::Route(Route::Proxy(target)) => Ok(Some(target)),
        UdpRoute::Route(_) => {
            st.log.error(format_args!(
                "UDP {what} to {dest} failed: a fake address this process never handed out"
            ));
            Err(libc::EHOSTUNREACH)
        }
    }
}

/// The association of `fd`, opened now if it has none (`for_send`: for a datagram with an
/// address, not a `connect`).
fn association(fd: c_int, for_send: bool) -> Result<Assoc, c_int> {
    if let Some(a) = sockets::udp(fd) {
        if control_alive(a.control) {
            return Ok(a);
        }
        sockets::drop_udp(fd);
        sock::close_raw(a.control);
        if let Ok(st) = state::get() {
            st.log.error(format_args!(
                "the proxy closed the UDP association of descriptor {fd}; the send failed"
            ));
        }
        return Err(libc::ECONNRESET);
    }
    let st = state::get().map_err(|_| libc::ENETUNREACH)?;
    let family = socksify_core::sys::family(fd).map_err(|e| e.raw_os_error().unwrap_or(libc::EINVAL))?;
    // The control connection's family follows the proxy's address.
    let first = st.chain.proxies().first().ok_or(libc::ENETUNREACH)?;
    let ctl_family = match first.host {
        socksify_core::Host::Ip(IpAddr::V6(_)) => libc::AF_INET6,
        _ => libc::AF_INET,
    };
    // SAFETY: a new socket of the library's own, straight from the kernel.
    let raw = unsafe {
        crate::syscall::raw(
            libc::SYS_socket,
            &[
                ctl_family as libc::c_long,
                (libc::SOCK_STREAM | libc::SOCK_CLOEXEC) as libc::c_long,
                0 as libc::c_long,
            ],
        )
    } as c_int;
    if raw < 0 {
        let e = crate::hook::errno();
        st.log.error(format_args!(
            "UDP association for descriptor {fd} failed: cannot open its control connection: {}",
            std::io::Error::from_raw_os_error(e)
        ));
        return Err(e);
    }
    let control = match sock::dup_high(raw) {
        Some(high) => {
            sock::close_raw(raw);
            high
        }
        None => raw,
    };
    // Under the kernel guard the guard makes the association (and so knows the relay, which
    // it lets datagrams through to); otherwise the library does.
    let relay = if st.guarded { guard_associate(control) } else { own_associate(st, control) };
    let relay = match relay {
        Ok(r) => r,
        Err((errno, why)) => {
            sock::close_raw(control);
            st.log.error(format_args!("UDP association for descriptor {fd} failed: {why}"));
            return Err(errno);
        }
    };
    let relay = match sock::in_family(relay, family) {
        Some(r) if !(relay.is_ipv4() && family == libc::AF_INET6 && socksify_core::sys::v6_only(fd)) => r,
        _ => {
            sock::close_raw(control);
            let from = if family == libc::AF_INET { "an IPv4 socket" } else { "an IPv6-only socket" };
            st.log.error(format_args!("the UDP relay {relay} cannot be reached from {from}"));
            return Err(libc::EAFNOSUPPORT);
        }
    };
    if st.log.verbose() {
        st.log.info(format_args!("UDP association for descriptor {fd}: relay {relay} via {}", first));
    }
    let made = Assoc {
        fd,
        control,
        relay,
        peer: None,
        sent: Vec::new(),
        on_relay: false,
        own_link: None,
        open: false,
        corked: false,
    };
    let assoc = sockets::insert_udp(fd, made).ok_or(libc::EBADF)?;
    if st.guarded && for_send && assoc.control == control {
        return Ok(link_to_relay(st, fd, assoc));
    }
    Ok(assoc)
}

/// Connects an unconnected socket with a new association to its relay (under the kernel guard,
/// so that its datagrams do not each pay a trap). Replies come from the relay only either way
/// (`recv` drops anything else), so the program sees no difference; a socket the program
/// connected elsewhere is left alone.
fn link_to_relay(st: &state::State, fd: c_int, mut assoc: Assoc) -> Assoc {
    // Connected by the program (the guard says ENOTCONN for one connected to an old relay).
    if socksify_core::sys::peer_addr(fd).is_ok() {
        return assoc;
    }
    // A socket that outlives exec would carry the connection into a program whose library
    // knows nothing of it (the association dies at exec): only close-on-exec ones are linked.
    // SAFETY: F_GETFD on the program's descriptor, which changes nothing.
    let fd_flags =
        unsafe { crate::syscall::raw(libc::SYS_fcntl, &[fd as libc::c_long, libc::F_GETFD as libc::c_long]) };
    if fd_flags < 0 || fd_flags & libc::FD_CLOEXEC as libc::c_long == 0 {
        return assoc;
    }
    let wildcard = sock::local_addr(fd).is_none_or(|a| a.ip().is_unspecified());
    let relay = SockAddr::from(assoc.relay);
    // SAFETY: connect to the relay's address, straight to the kernel (the guard lets it
    // through: it made the association).
    let r = unsafe {
        crate::syscall::raw(
            libc::SYS_connect,
            &[fd as libc::c_long, relay.as_ptr() as libc::c_long, relay.len() as libc::c_long],
        )
    };
    if r != 0 {
        if st.log.verbose() {
            st.log.info(format_args!(
                "descriptor {fd} stays unconnected ({}): its datagrams go to the relay one by one",
                std::io::Error::from_raw_os_error(crate::hook::errno())
            ));
        }
        return assoc;
    }
    let link = sockets::OwnLink { wildcard };
    sockets::update_udp(fd, |a| {
        a.on_relay = true;
        a.own_link = Some(link);
    });
    assoc.on_relay = true;
    assoc.own_link = Some(link);
    assoc
}

/// The relay of a UDP association made on `control` through the chain.
fn own_associate(st: &state::State, control: c_int) -> Result<SocketAddr, (c_int, String)> {
    let est = st.chain.udp_associate(control).map_err(|e| (e.errno(), e.to_string()))?;
    est.bound.ip().ok_or_else(|| {
        (libc::EPROTO, format!("the proxy named its UDP relay by a host name ({}); not supported", est.bound))
    })
}

/// The relay of a UDP association the kernel guard makes on `control` when asked with
/// `GUARD_ASSOCIATE` (it says why it failed in its own log line).
fn guard_associate(control: c_int) -> Result<SocketAddr, (c_int, String)> {
    let mut buf = [0u8; std::mem::size_of::<libc::sockaddr_storage>()];
    let ask = socksify_core::session::GUARD_ASSOCIATE;
    // SAFETY: sendto from/into local buffers; the guard answers it (the kernel never sends).
    let n = unsafe {
        crate::syscall::raw(
            libc::SYS_sendto,
            &[
                control as libc::c_long,
                buf.as_mut_ptr() as libc::c_long,
                buf.len() as libc::c_long,
                0,
                ask.as_ptr() as libc::c_long,
                ask.len() as libc::c_long,
            ],
        )
    };
    if n < 0 {
        let e = crate::hook::errno();
        return Err((
            e,
            format!("the kernel guard could not make it ({})", std::io::Error::from_raw_os_error(e)),
        ));
    }
    // SAFETY: the guard wrote at most sockaddr_storage's size into our buffer; an unaligned
    // read of plain old data.
    let st: libc::sockaddr_storage = unsafe { std::ptr::read_unaligned(buf.as_ptr().cast()) };
    sock::local_sockaddr(&st, n as socklen_t)
        .ok_or((libc::EPROTO, "the kernel guard's answer is not an address".to_owned()))
}

/// The control connection still stands: nothing to read, no hang-up, still open.
fn control_alive(control: c_int) -> bool {
    let mut pfd = libc::pollfd { fd: control, events: libc::POLLIN | libc::POLLRDHUP, revents: 0 };
    let zero = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: ppoll on one local pollfd with a zero timeout.
    let r = unsafe {
        crate::syscall::raw(
            libc::SYS_ppoll,
            &[
                &mut pfd as *mut libc::pollfd as libc::c_long,
                1 as libc::c_long,
                &zero as *const libc::timespec as libc::c_long,
                std::ptr::null::<u8>() as libc::c_long,
                0 as libc::c_long,
            ],
        )
    };
    r == 0
}

/// Sends one datagram to the relay: `iov` wrapped behind the header for `target`.
/// Returns the payload bytes sent.
fn send_via_relay(
    fd: c_int,
    assoc: &Assoc,
    target: &TargetAddr,
    msg: &msghdr,
    flags: c_int,
) -> Flow<ssize_t> {
    let mut header = [0u8; MAX_HEADER];
    // A datagram under construction (MSG_MORE, UDP_CORK) has its header already.
    let hlen = if assoc.open {
        0
    } else {
        match v5::write_udp_header(target, &mut header) {
            Ok(n) => n,
            Err(e) => return Flow::Fail(e.errno()),
        }
    };
    let more = flags & libc::MSG_MORE != 0 || assoc.corked;
    let r = send_pieces(fd, assoc, &mut header[..hlen], msg, flags);
    if matches!(r, Flow::Done(_)) && assoc.open != more {
        sockets::update_udp(fd, |a| a.open = more);
    }
    r
}

/// Sends `header` (possibly empty) and the program's data to the relay.
fn send_pieces(fd: c_int, assoc: &Assoc, header: &mut [u8], msg: &msghdr, flags: c_int) -> Flow<ssize_t> {
    let hlen = header.len();
    let user_iov: &[iovec] = if msg.msg_iov.is_null() || msg.msg_iovlen == 0 {
        &[]
    } else {
        // SAFETY: the caller's iovec array of msg_iovlen entries.
        unsafe { std::slice::from_raw_parts(msg.msg_iov, msg.msg_iovlen) }
    };
    if assoc.on_relay && msg.msg_controllen == 0 {
        if let Some(r) = send_on_link(fd, header, user_iov, flags) {
            return r;
        }
    }
    let mut iov = Vec::with_capacity(user_iov.len() + 1);
    iov.push(iovec { iov_base: header.as_mut_ptr().cast(), iov_len: hlen });
    iov.extend_from_slice(user_iov);
    let relay = SockAddr::from(assoc.relay);
    let mut out = *msg;
    out.msg_name = relay.as_ptr() as *mut c_void;
    out.msg_namelen = relay.len();
    out.msg_iov = iov.as_mut_ptr();
    out.msg_iovlen = iov.len();
    match real::sendmsg_now(fd, &out, flags) {
        n if n >= 0 => Flow::Done((n as usize).saturating_sub(hlen) as ssize_t),
        _ => Flow::Fail(crate::hook::errno()),
    }
}

thread_local! {
    static OUT: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Sends the header and the program's data on a socket connected to its relay, by calls the
/// kernel guard does not trap (no address in them): `writev` when there are no flags, else a
/// copy (checked: a bad pointer is EFAULT) sent with `sendto` without an address. `None` when
/// neither fits (too many pieces): the caller sends it with the relay's address.
fn send_on_link(fd: c_int, header: &mut [u8], user_iov: &[iovec], flags: c_int) -> Option<Flow<ssize_t>> {
    let hlen = header.len();
    let done = |n: libc::c_long| {
        if n >= 0 {
            Flow::Done((n as usize).saturating_sub(hlen) as ssize_t)
        } else {
            Flow::Fail(crate::hook::errno())
        }
    };
    if flags == 0 && user_iov.len() < 1024 {
        let mut iov = Vec::with_capacity(user_iov.len() + 1);
        iov.push(iovec { iov_base: header.as_mut_ptr().cast(), iov_len: hlen });
        iov.extend_from_slice(user_iov);
        // SAFETY: writev of our header and the program's own iovecs (the kernel checks them).
        let n = unsafe {
            crate::syscall::raw(
                libc::SYS_writev,
                &[fd as libc::c_long, iov.as_ptr() as libc::c_long, iov.len() as libc::c_long],
            )
        };
        return Some(done(n));
    }
    let total = user_iov.iter().map(|v| v.iov_len).fold(0usize, usize::saturating_add);
    if total > MAX_DATAGRAM {
        return None; // the kernel's EMSGSIZE, from the ordinary path
    }
    OUT.try_with(|out| {
        let mut out = out.borrow_mut();
        out.clear();
        out.extend_from_slice(header);
        for v in user_iov {
            let at = out.len();
            out.resize(at + v.iov_len, 0);
            if !sock::copy_in(v.iov_base.cast(), &mut out[at..]) {
                return Flow::Fail(libc::EFAULT);
            }
        }
        // SAFETY: sendto of our own buffer, without an address (the connected relay).
        let n = unsafe {
            crate::syscall::raw(
                libc::SYS_sendto,
                &[
                    fd as libc::c_long,
                    out.as_ptr() as libc::c_long,
                    out.len() as libc::c_long,
                    flags as libc::c_long,
                    0,
                    0,
                ],
            )
        };
        done(n)
    })
    .ok()
}

/// A datagram socket's send with a destination (`sendto`, `sendmsg`): direct, refused, or
/// through the relay.
pub fn send_to(fd: c_int, dest: SocketAddr, msg: &msghdr, flags: c_int) -> Flow<ssize_t> {
    let target = match decide(dest, "send") {
        Ok(None) => {
            // Its replies must reach the socket: one the library connected to its relay is
            // disconnected first.
            unlink(fd);
            return Flow::Bypass;
        }
        Ok(Some(t)) => t,
        Err(e) => return Flow::Fail(e),
    };
    let assoc = match association(fd, true) {
        Ok(a) => a,
        Err(e) => return Flow::Fail(e),
    };
    let r = send_via_relay(fd, &assoc, &target, msg, flags);
    if matches!(r, Flow::Done(_)) && !assoc.sent.iter().any(|(p, _)| *p == dest) {
        sockets::note_sent(fd, dest, &target);
    }
    r
}

/// A send without a destination (`send`, `write`, `sendmsg` without a name) on a socket whose
/// peer goes through the relay; `None` when the socket is not one of those.
pub fn send_connected(fd: c_int, msg: &msghdr, flags: c_int) -> Option<Flow<ssize_t>> {
    let assoc = sockets::udp(fd)?;
    let Some((_, target)) = assoc.peer.clone() else {
        // Connected to the relay by the library only: to the program it has no peer.
        return assoc.on_relay.then_some(Flow::Fail(libc::EDESTADDRREQ));
    };
    if !control_alive(assoc.control) {
        return Some(match association(fd, false) {
            Ok(_) => unreachable!("a dead association is never returned"),
            Err(e) => Flow::Fail(e),
        });
    }
    Some(send_via_relay(fd, &assoc, &target, msg, flags))
}

/// `connect()` of a datagram socket: a proxied peer is recorded and the socket connected to the
/// relay (so the kernel itself drops datagrams from anywhere else).
pub fn connect(fd: c_int, dest: SocketAddr) -> Flow<c_int> {
    let target = match decide(dest, "connect") {
        Ok(None) => {
            sockets::update_udp(fd, |a| {
                a.peer = None;
                a.on_relay = false;
                a.own_link = None;
            });
            return Flow::Bypass;
        }
        Ok(Some(t)) => t,
        Err(e) => return Flow::Fail(e),
    };
    let assoc = match association(fd, false) {
        Ok(a) => a,
        Err(e) => return Flow::Fail(e),
    };
    let relay = SockAddr::from(assoc.relay);
    let r = match real::connect.get() {
        // SAFETY: the real connect, to the relay's address.
        Some(f) => unsafe { f(fd, relay.as_ptr(), relay.len()) },
        // SAFETY: as above, straight to the kernel.
        None => unsafe {
            crate::syscall::raw(
                libc::SYS_connect,
                &[fd as libc::c_long, relay.as_ptr() as libc::c_long, relay.len() as libc::c_long],
            ) as c_int
        },
    };
    if r != 0 {
        return Flow::Fail(crate::hook::errno());
    }
    sockets::update_udp(fd, |a| {
        a.peer = Some((dest, target));
        a.on_relay = true;
        a.own_link = None;
    });
    Flow::Done(0)
}

/// Disconnects a socket that the library (not the program) connected to its relay, keeping
/// its address and port (a disconnect alone would give an unbound socket a new port, which the
/// relay does not know): from then on its datagrams go to the relay by address.
pub fn unlink(fd: c_int) {
    let Some(a) = sockets::udp(fd) else { return };
    let (true, None, Some(link)) = (a.on_relay, &a.peer, a.own_link) else { return };
    let Some(mut local) = sock::local_addr(fd) else { return };
    let unspec = [0u8; std::mem::size_of::<libc::sockaddr_in6>()];
    // SAFETY: connect with an AF_UNSPEC address of our own, straight to the kernel.
    let r = unsafe {
        crate::syscall::raw(
            libc::SYS_connect,
            &[fd as libc::c_long, unspec.as_ptr() as libc::c_long, unspec.len() as libc::c_long],
        )
    };
    sockets::update_udp(fd, |a| {
        a.on_relay = false;
        a.own_link = None;
    });
    if r != 0 || sock::local_addr(fd).is_some_and(|now| now.port() == local.port()) {
        return;
    }
    if link.wildcard {
        local.set_ip(match local {
            SocketAddr::V4(_) => std::net::Ipv4Addr::UNSPECIFIED.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::UNSPECIFIED.into(),
        });
    }
    let sa = SockAddr::from(local);
    // SAFETY: bind to the address the socket had, straight to the kernel.
    let r = unsafe {
        crate::syscall::raw(
            libc::SYS_bind,
            &[fd as libc::c_long, sa.as_ptr() as libc::c_long, sa.len() as libc::c_long],
        )
    };
    if r != 0 {
        // The port was taken meanwhile: the association is of no use any more.
        if let Some(a) = sockets::udp(fd) {
            sockets::drop_udp(fd);
            sock::close_raw(a.control);
        }
        if let Ok(st) = state::get() {
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
pub fn disconnect(fd: c_int, addr: *const sockaddr, len: socklen_t) -> Option<Flow<c_int>> {
    let assoc = sockets::udp(fd)?;
    // SAFETY: the program's own arguments, straight to the kernel.
    let r = unsafe {
        crate::syscall::raw(
            libc::SYS_connect,
            &[fd as libc::c_long, addr as libc::c_long, len as libc::c_long],
        )
    };
    if r != 0 {
        return Some(Flow::Fail(crate::hook::errno()));
    }
    sockets::drop_udp(fd);
    sock::close_raw(assoc.control);
    Some(Flow::Done(0))
}

/// What `getpeername` and `getsockname` of a socket the library connected to its relay show:
/// `Some(true)` for one the program never connected (ENOTCONN; a wildcard local address),
/// `Some(false)` when it was bound to a particular address; `None` for other sockets.
pub fn own_link(fd: c_int) -> Option<bool> {
    let a = sockets::udp(fd)?;
    if !a.on_relay || a.peer.is_some() {
        return None;
    }
    a.own_link.map(|l| l.wildcard)
}

thread_local! {
    static BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Receives one datagram from the relay into the program's `msg`, unwrapped; `None` when `fd`
/// has no association. Datagrams that are not from the relay, are fragments or are malformed
/// are dropped.
pub fn recv(fd: c_int, msg: &mut msghdr, flags: c_int) -> Option<Flow<ssize_t>> {
    if flags & libc::MSG_ERRQUEUE != 0 {
        return None;
    }
    let assoc = sockets::udp(fd)?;
    let family = socksify_core::sys::family(fd).ok()?;
    let r = BUF.try_with(|buf| {
        let mut buf = buf.borrow_mut();
        if buf.len() < MAX_DATAGRAM {
            buf.resize(MAX_DATAGRAM, 0);
        }
        loop {
            // SAFETY: sockaddr_storage is plain old data.
            let mut from: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
            let mut iov = iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
            let mut m = *msg;
            m.msg_name = (&mut from as *mut libc::sockaddr_storage).cast();
            m.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as socklen_t;
            m.msg_iov = &mut iov;
            m.msg_iovlen = 1;
            let n = real::recvmsg_now(fd, &mut m, flags & !libc::MSG_TRUNC);
            if n < 0 {
                return Flow::Fail(crate::hook::errno());
            }
            let src = sock::local_sockaddr(&from, m.msg_namelen);
            let from_relay =
                src.is_some_and(|s| s.ip() == assoc.relay.ip() && s.port() == assoc.relay.port());
            // The relay's datagrams are unwrapped (a malformed one or a fragment is dropped);
            // any other comes as the kernel delivers it: this socket is unconnected to the
            // program, which may talk to others (loopback, `direct` routes) beside the relay.
            let decoded = match src {
                Some(_) if from_relay => v5::decode_udp(&buf[..n as usize]).ok().map(|(s, at)| (Some(s), at)),
                // Another relay port of the proxy's, with a relayed datagram: an association
                // this process does not know (a parent's or child's on a shared socket).
                Some(s) if s.ip() == assoc.relay.ip() && v5::decode_udp(&buf[..n as usize]).is_ok() => None,
                Some(_) => Some((None, 0)),
                None => None,
            };
            let Some((source, at)) = decoded else {
                if flags & libc::MSG_PEEK != 0 {
                    // Consume the datagram that was only peeked at, then look again.
                    let mut m2 = m;
                    real::recvmsg_now(fd, &mut m2, (flags & !libc::MSG_PEEK) | libc::MSG_DONTWAIT);
                }
                continue;
            };
            let payload = &buf[at..n as usize];
            let copied = scatter(payload, msg);
            msg.msg_controllen = m.msg_controllen;
            msg.msg_flags = m.msg_flags & !libc::MSG_TRUNC;
            if copied < payload.len() {
                msg.msg_flags |= libc::MSG_TRUNC;
            }
            if !msg.msg_name.is_null() {
                let shown = match (source, src) {
                    (Some(source), _) => source_as_seen(&assoc, source, family),
                    (None, Some(direct)) => direct,
                    (None, None) => unreachable!("a datagram without a source was dropped"),
                };
                match sock::write_addr_into(&shown, msg.msg_name.cast::<sockaddr>(), msg.msg_namelen) {
                    Some(full) => msg.msg_namelen = full,
                    None => return Flow::Fail(libc::EFAULT),
                }
            }
            let len = if flags & libc::MSG_TRUNC != 0 { payload.len() } else { copied };
            return Flow::Done(len as ssize_t);
        }
    });
    Some(r.unwrap_or(Flow::Fail(libc::ENOMEM)))
}

/// Copies `data` into the iovecs of `msg`; returns how much fit.
fn scatter(mut data: &[u8], msg: &msghdr) -> usize {
    if msg.msg_iov.is_null() {
        return 0;
    }
    // SAFETY: the caller's iovec array of msg_iovlen entries.
    let iovs = unsafe { std::slice::from_raw_parts(msg.msg_iov, msg.msg_iovlen) };
    let mut copied = 0;
    for v in iovs {
        if data.is_empty() {
            break;
        }
        let n = v.iov_len.min(data.len());
        // SAFETY: iov_base holds iov_len writable bytes.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), v.iov_base.cast::<u8>(), n) };
        data = &data[n..];
        copied += n;
    }
    copied
}

/// The source address the program is shown for a reply: its connected peer; else the address it
/// sent to (a fake address stands for the name the relay resolved); else the relay's word.
fn source_as_seen(assoc: &Assoc, source: TargetAddr, family: c_int) -> SocketAddr {
    if let Some((peer, _)) = &assoc.peer {
        return *peer;
    }
    if let Some((program, _)) = assoc.sent.iter().find(|(_, t)| *t == source) {
        return *program;
    }
    let same_port: Vec<&SocketAddr> = assoc
        .sent
        .iter()
        .filter(|(_, t)| matches!(t, TargetAddr::Domain(_, p) if *p == source.port()))
        .map(|(p, _)| p)
        .collect();
    if let [only] = same_port.as_slice() {
        return **only;
    }
    let addr = match source {
        TargetAddr::Ip(sa) => sa,
        TargetAddr::Domain(name, port) => match state::get().map(|st| st.router.resolve(&name)) {
            Ok(Resolution::Fake { v4, v6, .. }) => {
                SocketAddr::new(if family == libc::AF_INET6 { v6 } else { v4 }, port)
            }
            _ => SocketAddr::new(IpAddr::from([0, 0, 0, 0]), port),
        },
    };
    sock::in_family(addr, family).unwrap_or(addr)
}
