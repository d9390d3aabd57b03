//! Connections: `connect` runs the proxy chain on the program's own descriptor (or lets it
//! through, or refuses it); sends dispatch to UDP's relay or TCP Fast Open's chain;
//! `getpeername` answers the address the program connected to.

use std::net::SocketAddr;

use libc::{c_int, sockaddr, socklen_t, ssize_t};
use socksify_core::logjson::Outcome;
use socksify_core::router::Route;
use socksify_core::sockaddr::{self as raw_addr, SendDest};
use socksify_core::TargetAddr;

use super::msg::Msg;
use super::{pending, udp};
use crate::runtime::state::log_broken;
use crate::runtime::{state, Flow, State};
use crate::sys::{self, addr, sock};
use crate::table;

/// Where a TCP connection to `dest` goes.
#[derive(Debug, PartialEq, Eq)]
pub enum Plan {
    /// As the program asked (a `direct` rule, loopback, the kernel guard's DNS stub).
    AsIs,
    /// Through chain `.1` (`State::chain`'s index), to this target.
    Chain(TargetAddr, usize),
    /// Refused, with this errno (the reason was logged).
    Refuse(c_int),
}

/// Where a TCP connection to `dest` goes, under state `st`.
pub fn plan(st: &State, dest: SocketAddr) -> Plan {
    if st.for_the_stub(dest) {
        return Plan::AsIs; // the kernel guard sends it to its DNS stub
    }
    let refused = |outcome: Outcome, errno: c_int, why: Option<&str>| {
        if st.log.json() {
            let named = match st.router.reverse(dest.ip()) {
                Some(name) => TargetAddr::Domain(name, dest.port()),
                None => TargetAddr::Ip(dest),
            };
            decision(st, &named, outcome, None, Vec::new(), errno, why, None);
        }
    };
    match st.router.route(dest) {
        Route::Direct => {
            refused(Outcome::Direct, 0, None);
            Plan::AsIs
        }
        Route::UnknownFake => {
            refused(
                Outcome::Failed,
                libc::EHOSTUNREACH,
                Some("a fake address this process never handed out"),
            );
            st.log.error(format_args!(
                "connect to {dest} failed: a fake address this process never handed out (no name to send)"
            ));
            Plan::Refuse(libc::EHOSTUNREACH)
        }
        Route::Proxy(target, chain) => Plan::Chain(target, chain),
        Route::Block(i) => {
            st.log.error(format_args!("connect to {dest} refused by {}", st.router.describe(i)));
            refused(Outcome::Refused, libc::ECONNREFUSED, None);
            Plan::Refuse(libc::ECONNREFUSED)
        }
        Route::DirectFake(name) => {
            refused(
                Outcome::Failed,
                libc::EHOSTUNREACH,
                Some("a name on a direct route has no fake address"),
            );
            st.log.error(format_args!(
                "connect to {dest} ({name}) failed: a name on a direct route is resolved by the system, not given a fake address"
            ));
            Plan::Refuse(libc::EHOSTUNREACH)
        }
    }
}

/// connect(2) of the program's `fd` to the address at `to`.
pub fn connect(fd: c_int, to: *const sockaddr, len: socklen_t) -> Flow<c_int> {
    let Some(dest) = addr::read(to, len) else {
        if addr::family_of(to, len) == Some(libc::AF_UNSPEC)
            && sock::socket_type(fd) == Some(libc::SOCK_DGRAM)
        {
            return udp::disconnect(fd, to, len).unwrap_or(Flow::Bypass);
        }
        return Flow::Bypass; // the kernel's answer: EFAULT, EINVAL, EAFNOSUPPORT, AF_UNIX…
    };
    // What the program's socket() said of it, else the kernel's answer. A datagram socket's
    // connect may go unproxied (`udp = "direct"`, a direct route): only the kernel's answer
    // says it is one.
    match table::socket_type(fd, |ty| ty == libc::SOCK_DGRAM) {
        Some(libc::SOCK_STREAM) => tcp_connect(fd, dest, Some((to, len))),
        Some(libc::SOCK_DGRAM) => udp::connect(fd, dest, to, len),
        _ => Flow::Bypass,
    }
}

/// Proxies a TCP connection to `dest` (as the program gave it) on `fd`. `asked`: the program's
/// own address, for a connect the routes send direct to make through the gate.
pub fn tcp_connect(fd: c_int, dest: SocketAddr, asked: Option<(*const sockaddr, socklen_t)>) -> Flow<c_int> {
    let st = match state() {
        Ok(st) => st,
        Err(_) => {
            log_broken(format_args!("connect to {dest}"));
            return Flow::Fail(libc::ECONNREFUSED);
        }
    };
    if st.for_our_stub(dest) {
        return super::stub::tcp_connect(st, fd, dest); // DNS over TCP, answered in the library
    }
    match plan(st, dest) {
        Plan::AsIs => match asked {
            // Port 53 takes the guard's path: its nameservers, not ours, decide its stub's.
            Some((to, len)) if !st.for_the_stub(dest) && dest.port() != 53 => {
                super::gated::connect_direct(fd, to, len).unwrap_or(Flow::Bypass)
            }
            _ => Flow::Bypass,
        },
        Plan::Refuse(e) => Flow::Fail(e),
        Plan::Chain(target, via) => {
            if let Some(errno) = pending::connect_again(fd) {
                return Flow::Fail(errno);
            }
            // A socket connected or listening already, or with its own connect under way,
            // gets the kernel's answer, and no byte of a handshake (it would go to the peer).
            match sock::tcp_state(fd).and_then(connected_already) {
                Some(errno) => Flow::Fail(errno),
                None => chain(st, fd, dest, target, via),
            }
        }
    }
}

/// True when a signal handler without SA_RESTART is installed: an interrupted connect then
/// ends with EINTR, as the kernel's does (which one interrupted cannot be told).
fn not_restarted() -> bool {
    (1..=64).filter(|&s| s != libc::SIGKILL && s != libc::SIGSTOP).any(|sig| {
        // SAFETY: sigaction is plain old data; reading the handler of `sig` only.
        let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        let r = unsafe { libc::sigaction(sig, std::ptr::null(), &mut old) };
        r == 0
            && old.sa_sigaction != libc::SIG_DFL
            && old.sa_sigaction != libc::SIG_IGN
            && old.sa_flags & libc::SA_RESTART == 0
    })
}

/// The kernel's answer to a connect on a TCP socket that is not closed: `EISCONN` when it is
/// connected (directly or through the chain) or listening, `EALREADY` while its own connect is
/// in progress; `None` for a socket that may connect. A chain must never start inside a live
/// connection (its greeting would go to the peer).
fn connected_already(state: u8) -> Option<c_int> {
    match state {
        sock::TCP_CLOSE => None,
        sock::TCP_SYN_SENT => Some(libc::EALREADY),
        _ => Some(libc::EISCONN),
    }
}

/// Builds the chain to `target` on `fd`; the program named it `dest`. A non-blocking socket's
/// runs in the background (`EINPROGRESS` now); a blocking socket's here, unless a signal
/// handler without SA_RESTART interrupts it (`EINTR`) or its SO_SNDTIMEO runs out
/// (`EINPROGRESS`): then it starts again in the background, as the kernel's connect goes on.
fn chain(st: &'static State, fd: c_int, dest: SocketAddr, target: TargetAddr, via: usize) -> Flow<c_int> {
    if st.test_panic {
        panic!("SOCKSIFY_TEST_PANIC: connect to {target}");
    }
    let flags = sock::file_flags(fd);
    if flags.is_some_and(|f| f & libc::O_NONBLOCK != 0) {
        if let Some(errno) = pending::start(st, fd, dest, target.clone(), via) {
            return Flow::Fail(errno);
        }
    }
    let started = std::time::Instant::now();
    // Learnt when the program made the socket (`table::kind`), else asked of the kernel.
    let kind = table::kind(fd);
    let until = match kind {
        Some(k) if k.no_send_timeout => None,
        _ => sock::timeout(fd, libc::SO_SNDTIMEO),
    }
    .map(|t| std::time::Instant::now() + t);
    let known = kind
        .map(|k| k.family)
        .or_else(|| sock::family(fd))
        .map(|family| socksify_core::chain::Known { family, flags: flags.map(|f| f as libc::c_long) });
    let stop: fn() -> bool = if until.is_some() { || true } else { not_restarted };
    let result = socksify_core::sys::interruptible(stop, || match known {
        Some(known) => st.chain(via).connect_known(fd, known, &target, until),
        None => st.chain(via).connect_until(fd, &target, until),
    });
    let interrupted = socksify_core::sys::take_interrupted() && result.is_err();
    let timed_out = result.is_err() && until.is_some_and(|u| std::time::Instant::now() >= u);
    if interrupted || timed_out {
        let _ = socksify_core::sys::disconnect(fd);
        if pending::start(st, fd, dest, target.clone(), via).is_some() {
            return Flow::Fail(if interrupted { libc::EINTR } else { libc::EINPROGRESS });
        }
    }
    if !matches!(result, Err(socksify_core::ChainError::Socket(_))) {
        log_result(st, &target, via, &result, started);
    }
    match result {
        Ok(est) => {
            let family = if dest.is_ipv6() { libc::AF_INET6 } else { libc::AF_INET };
            let local = est.bound.ip().and_then(|b| addr::in_family(b, family));
            let seq = table::next_seq();
            table::entry_or_new(fd, |e| {
                e.tcp_peer = Some(dest);
                e.tcp_target = Some((seq, target));
                e.local = local;
            });
            Flow::Done(0)
        }
        // The socket could not connect at all: as it was, and as quiet as the kernel.
        Err(socksify_core::ChainError::Socket(e)) => Flow::Fail(socksify_core::error::io_errno(&e)),
        Err(e) => {
            // Leave the socket unconnected rather than half-way into a chain.
            let _ = socksify_core::sys::disconnect(fd);
            Flow::Fail(e.errno())
        }
    }
}

/// The log lines of a chain built for `target` since `started`: the text ones (the path with
/// `--verbose`, a failure always) and the JSON decision.
pub fn log_result(
    st: &State,
    target: &TargetAddr,
    via: usize,
    result: &Result<socksify_core::chain::Established, socksify_core::ChainError>,
    started: std::time::Instant,
) {
    let proxies = st.chain(via).proxies();
    match result {
        Ok(est) => {
            let hops = || est.path.iter().map(|&i| proxies[i].to_string()).collect::<Vec<String>>();
            if st.log.verbose() {
                st.log.info(format_args!("{target} via {}{}", hops().join(" -> "), st.chain_words(via)));
            }
            if st.log.json() {
                decision(st, target, Outcome::Proxied, Some(via), hops(), 0, None, Some(started));
            }
        }
        Err(e) => {
            st.log.error(format_args!("connect to {target} failed: {e}"));
            if st.log.json() {
                let hops = proxies.iter().map(|p| p.to_string()).collect();
                let why = e.to_string();
                decision(st, target, Outcome::Failed, Some(via), hops, e.errno(), Some(&why), Some(started));
            }
        }
    }
}

/// A JSON decision line (`log_format = "json"`).
#[allow(clippy::too_many_arguments)]
fn decision(
    st: &State,
    destination: &TargetAddr,
    outcome: Outcome,
    chain: Option<usize>,
    hops: Vec<String>,
    errno: c_int,
    error: Option<&str>,
    started: Option<std::time::Instant>,
) {
    let program = crate::runtime::log::program();
    st.log.decision(
        st.router.config(),
        socksify_core::logjson::Decision {
            pid: crate::sys::pid() as u32,
            program: &program,
            destination,
            outcome,
            chain,
            hops: &hops,
            errno,
            error,
            ms: started.map_or(0, |t| t.elapsed().as_millis() as u64),
        },
    );
}

/// A connect made while this thread is inside a hook already: from a signal handler that
/// interrupted one, or from a library the real function called. It cannot run the chain from
/// there (the hook it interrupted may hold what the chain needs), so only what would not be
/// proxied anyway goes through; the rest fails — unless the kernel guard supervises the
/// process, which then proxies it. `true`: make the real call. Allocation-free: signal
/// handlers run here.
pub fn reentrant_connect_allowed(fd: c_int, to: *const sockaddr, len: socklen_t) -> bool {
    let Some(dest) = addr::read(to, len) else { return true };
    let st = match state() {
        Ok(st) if !st.guarded => st,
        _ => return true,
    };
    let dest = addr::unmapped(dest);
    let stream = sock::socket_type(fd) == Some(libc::SOCK_STREAM);
    if !stream || (!st.router.is_fake(dest.ip()) && st.router.is_direct(&dest)) {
        return true;
    }
    const MSG: &[u8] = b"socksify: a connect made inside another socksify call (a signal handler?) failed: it cannot go through the proxies from there\n";
    st.log.raw(MSG);
    false
}

/// getpeername(2): the address the program connected a proxied socket to.
pub fn getpeername(fd: c_int, out: *mut sockaddr, len: *mut socklen_t) -> Flow<c_int> {
    if pending::running(fd) {
        return Flow::Fail(libc::ENOTCONN);
    }
    match table::entry(fd, |e| e.peer()).flatten() {
        Some(peer) if !out.is_null() && !len.is_null() => {
            if addr::write(&peer, out, len) {
                Flow::Done(0)
            } else {
                Flow::Fail(libc::EFAULT)
            }
        }
        // Connected to its relay by the library, not by the program.
        None if udp::own_link(fd).is_some() => Flow::Fail(libc::ENOTCONN),
        _ => Flow::Bypass,
    }
}

/// What a send needs after its hook: nothing, or the data of a TCP Fast Open whose chain was
/// just built (to be sent on the now connected socket).
#[derive(Debug, PartialEq, Eq)]
pub enum After {
    Nothing,
    FastOpenData,
}

/// A send hook's work: `send` decides under the runtime's guard, `real` sends the message as
/// the program gave it; after a TCP Fast Open whose chain was just built, the data follows on
/// the connected socket.
pub fn send_hook(fd: c_int, msg: &Msg, flags: c_int, real: impl FnOnce() -> ssize_t) -> ssize_t {
    let mut after = After::Nothing;
    let body = || {
        let (flow, a) = send(fd, msg, flags);
        after = a;
        flow
    };
    let r = crate::runtime::run(-1, libc::ENETUNREACH, body, real);
    if after != After::FastOpenData {
        return r;
    }
    let iov = msg.iov.as_slice();
    // SAFETY: msghdr is plain old data.
    let mut h: libc::msghdr = unsafe { std::mem::zeroed() };
    h.msg_iov = iov.as_ptr() as *mut libc::iovec;
    h.msg_iovlen = iov.len();
    h.msg_control = msg.control;
    h.msg_controllen = msg.controllen;
    // SAFETY: the program's buffers and control data (the kernel checks them).
    unsafe { sock::sendmsg(fd, &h, flags & !libc::MSG_FASTOPEN) }
}

/// A send: UDP to a proxied destination goes through the relay (or is refused); TCP Fast Open
/// (`MSG_FASTOPEN`), an implicit connect, goes through the chain first.
pub fn send(fd: c_int, msg: &Msg, flags: c_int) -> (Flow<ssize_t>, After) {
    // What the program's socket() said of it, else the kernel's answer. A stream socket's
    // addressed send goes to the kernel unproxied (without MSG_FASTOPEN it ignores the
    // address): that the socket is one, only the kernel's answer says.
    let ty = table::socket_type(fd, |ty| match ty {
        libc::SOCK_STREAM => msg.named(),
        // A stream socket's MSG_FASTOPEN is a connect: it must not take a datagram's route.
        libc::SOCK_DGRAM => flags & libc::MSG_FASTOPEN != 0,
        _ => false,
    });
    if ty == Some(libc::SOCK_STREAM) {
        if let Some(flow) = pending::data_call(fd, true) {
            return (flow, After::Nothing);
        }
        if flags & libc::MSG_FASTOPEN == 0 || !msg.named() {
            return (Flow::Bypass, After::Nothing);
        }
        let Some(dest) = addr::read(msg.name.cast(), msg.namelen) else {
            return (Flow::Bypass, After::Nothing);
        };
        return match tcp_connect(fd, dest, None) {
            Flow::Done(_) => (Flow::Done(0), After::FastOpenData),
            other => (other.map(|v| v as ssize_t), After::Nothing),
        };
    }
    if ty != Some(libc::SOCK_DGRAM) {
        return (Flow::Bypass, After::Nothing);
    }
    let flow = if !msg.named() {
        udp::send_connected(fd, msg, flags).unwrap_or(Flow::Bypass)
    } else if let Some(dest) = addr::read(msg.name.cast(), msg.namelen) {
        udp::send_to(fd, dest, msg, flags)
    } else {
        // Not an IPv4 or IPv6 address as such: AF_UNSPEC means IPv4 on an IPv4 socket and no
        // address on an IPv6 one (udp_sendmsg); anything else, or memory that cannot be read,
        // gets the kernel's answer.
        match unnamed_family(fd, msg) {
            Some(SendDest::Inet(dest)) => udp::send_to(fd, dest, msg, flags),
            Some(SendDest::Peer) => udp::send_connected(fd, msg, flags).unwrap_or(Flow::Bypass),
            _ => Flow::Bypass,
        }
    };
    (flow, After::Nothing)
}

/// Where a datagram with an address that is neither AF_INET nor AF_INET6 goes, as the kernel
/// reads it for this socket; `None` when the address cannot be read.
fn unnamed_family(fd: c_int, msg: &Msg) -> Option<SendDest> {
    let (bytes, len) = addr::read_bytes(msg.name.cast(), msg.namelen)?;
    let family = sock::family(fd)?;
    Some(raw_addr::send_destination(&bytes[..len], family))
}

/// setsockopt(2) done: a UDP_CORK setting is followed (a corked datagram's pieces must not each
/// get a header). `value` was read by the kernel already.
pub fn after_setsockopt(fd: c_int, level: c_int, name: c_int, value: *const libc::c_void) {
    if level != libc::IPPROTO_UDP || name != libc::UDP_CORK {
        return;
    }
    let on = sys::mem::copy_value(value.cast::<c_int>()).is_some_and(|v| v != 0);
    if !on && !table::known(fd) {
        return;
    }
    let errno = sys::errno();
    table::entry_or_new(fd, |e| {
        e.udp_cork = on;
        if let (false, Some(a)) = (on, e.udp.as_mut()) {
            a.open = false; // uncorking sends what was built
        }
    });
    sys::set_errno(errno);
}

#[cfg(test)]
mod tests;
