//! sendto, sendmsg, sendmmsg on the program's behalf: the data is copied out of the program's
//! memory and sent on its own socket, to the address the guard checked — or refused.

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::Instant;

use socksify_core::session::GUARD_ASSOCIATE;
use socksify_core::TargetAddr;

use super::connect::{chain_connect, mark_dns};
use super::{count, foreign, identity, inet, local_family, read_addr, socket_of};
use crate::addr::{self, Dest, SendDest};
use crate::notif::Reply;
use crate::policy::{TcpPlan, UdpPlan};
use crate::supervisor::{errno_reply, reply, Call, Outcome, Supervisor};
use crate::sys;

/// The largest datagram copied (UDP cannot carry more).
const MAX_DATAGRAM: usize = 65_536;
/// A stream send is copied and sent in pieces of this size.
const CHUNK: usize = 256 * 1024;
const MAX_CONTROL: usize = 65_536;
const MAX_IOV: usize = 1024;
const MSGHDR: usize = 56;
const MMSGHDR: usize = 64;

/// A message in the program's memory: its address and control data copied, its data still
/// there (an iovec list), read when sent.
struct Message {
    name: Option<Vec<u8>>,
    iov: Vec<(u64, usize)>,
    control: Vec<u8>,
}

impl Message {
    fn len(&self) -> usize {
        self.iov.iter().map(|(_, l)| *l).fold(0usize, usize::saturating_add)
    }

    /// Up to `max` bytes of the data from offset `from`.
    fn read(&self, call_tid: libc::pid_t, from: usize, max: usize) -> Result<Vec<u8>, i32> {
        let mut out = Vec::with_capacity(max.min(self.len().saturating_sub(from)));
        let mut skip = from;
        for &(base, len) in &self.iov {
            if out.len() >= max {
                break;
            }
            if skip >= len {
                skip -= len;
                continue;
            }
            let take = (len - skip).min(max - out.len());
            let start = out.len();
            out.resize(start + take, 0);
            sys::read_mem(call_tid, base + skip as u64, &mut out[start..]).map_err(|_| libc::EFAULT)?;
            skip = 0;
        }
        Ok(out)
    }
}

fn read_msghdr(call: &Call, ptr: u64) -> Result<Message, i32> {
    let h = call.read(ptr, MSGHDR)?;
    let word = |at: usize| u64::from_ne_bytes(h[at..at + 8].try_into().expect("8 bytes"));
    let (name_ptr, name_len) = (word(0), u32::from_ne_bytes(h[8..12].try_into().expect("4 bytes")) as u64);
    let (iov_ptr, iov_len) = (word(16), word(24) as usize);
    let (control_ptr, control_len) = (word(32), word(40) as usize);
    let name = if name_ptr != 0 && name_len != 0 { Some(read_addr(call, name_ptr, name_len)?) } else { None };
    if iov_len > MAX_IOV {
        return Err(libc::EMSGSIZE);
    }
    let raw = call.read(iov_ptr, iov_len * 16)?;
    let iov = raw
        .chunks_exact(16)
        .map(|v| {
            (
                u64::from_ne_bytes(v[..8].try_into().expect("8 bytes")),
                u64::from_ne_bytes(v[8..].try_into().expect("8 bytes")) as usize,
            )
        })
        .collect();
    if control_len > MAX_CONTROL {
        return Err(libc::ENOBUFS);
    }
    let control =
        if control_ptr != 0 && control_len != 0 { call.read(control_ptr, control_len)? } else { Vec::new() };
    Ok(Message { name, iov, control })
}

/// sendmsg(2) of `data` (and `control`) on `fd`, to `to` (address bytes) or the connected peer,
/// for thread `tid`. Control data is sent with that thread's privileges: the kernel checks the
/// sender's capabilities for some (`SO_MARK`, `SO_PRIORITY`, IPv6 hop-by-hop and destination
/// options), and a root supervisor must not lend its own to a program that dropped them.
fn send_bytes(
    tid: libc::pid_t,
    fd: RawFd,
    to: Option<&[u8]>,
    data: &[u8],
    control: &[u8],
    flags: i32,
) -> std::io::Result<usize> {
    let mut iov = libc::iovec { iov_base: data.as_ptr() as *mut libc::c_void, iov_len: data.len() };
    // SAFETY: msghdr is plain old data.
    let mut h: libc::msghdr = unsafe { std::mem::zeroed() };
    if let Some(name) = to {
        h.msg_name = name.as_ptr() as *mut libc::c_void;
        h.msg_namelen = name.len() as libc::socklen_t;
    }
    h.msg_iov = &mut iov;
    h.msg_iovlen = 1;
    if !control.is_empty() {
        h.msg_control = control.as_ptr() as *mut libc::c_void;
        h.msg_controllen = control.len();
    }
    // MSG_NOSIGNAL: a broken connection must not raise SIGPIPE in the supervisor (the program
    // gets it from `pipe_signal`).
    let send = || {
        sys::syscall!(libc::SYS_sendmsg, fd, &h as *const libc::msghdr, flags | libc::MSG_NOSIGNAL)
            .map(|n| n as usize)
    };
    if control.is_empty() {
        return send();
    }
    identity::as_program(tid, send).unwrap_or_else(|_| Err(std::io::Error::from_raw_os_error(libc::EPERM)))
}

/// The control messages that make packets travel elsewhere than their address says: IPv4
/// options (source routes) and IPv6 routing headers.
fn routes_elsewhere(control: &[u8]) -> bool {
    let mut at = 0;
    while at + 16 <= control.len() {
        let len = u64::from_ne_bytes(control[at..at + 8].try_into().expect("8 bytes")) as usize;
        let level = i32::from_ne_bytes(control[at + 8..at + 12].try_into().expect("4 bytes"));
        let ty = i32::from_ne_bytes(control[at + 12..at + 16].try_into().expect("4 bytes"));
        if (level == libc::IPPROTO_IP && (ty == libc::IP_OPTIONS || ty == libc::IP_RETOPTS))
            || (level == libc::IPPROTO_IPV6 && (ty == libc::IPV6_RTHDR || ty == 5))
        {
            return true;
        }
        if len < 16 {
            return false;
        }
        at += len.div_ceil(8) * 8;
    }
    false
}

/// What one message becomes.
enum Plan {
    /// Send the copy now, to these address bytes (None: the connected peer).
    Send(Option<Vec<u8>>),
    /// A stream's data: sent in pieces on the connected socket.
    Stream,
    /// TCP Fast Open to a proxied destination: the chain first, then the data.
    Chain(TargetAddr, usize, SocketAddr),
    Fail(i32),
}

fn plan(
    call: &mut Call,
    sock: &OwnedFd,
    family: libc::c_int,
    ty: libc::c_int,
    m: &Message,
    flags: i32,
) -> Plan {
    if routes_elsewhere(&m.control) {
        call.sup.log.error(
            call.tgid(),
            format_args!("a send with IP options or a routing header was refused: the packets would go around the proxies"),
        );
        return Plan::Fail(libc::EPERM);
    }
    if ty == libc::SOCK_STREAM {
        if flags & libc::MSG_FASTOPEN == 0 {
            return Plan::Stream; // a connected stream ignores the address
        }
        let Some(bytes) = &m.name else { return Plan::Stream };
        let dest = match addr::destination(bytes, family, ty) {
            Dest::Inet(d) => d,
            Dest::Unspec | Dest::Refused => return Plan::Send(Some(bytes.clone())),
        };
        return match call.sup.policy.tcp(dest) {
            TcpPlan::Direct => Plan::Send(Some(bytes.clone())),
            TcpPlan::Stub(i) => match call.sup.stubs(call.n.tid) {
                Some(stubs) => {
                    Plan::Send(Some(addr::encode(addr::for_family(stubs.tcp_addr(i, family), family))))
                }
                None => Plan::Fail(libc::ECONNREFUSED),
            },
            TcpPlan::Refuse(e, why) => {
                call.sup.log.error(call.tgid(), format_args!("{why}"));
                Plan::Fail(e)
            }
            TcpPlan::Chain(target, chain) => {
                if sys::peer_addr(sock.as_raw_fd()).is_some() {
                    return Plan::Fail(libc::EISCONN);
                }
                Plan::Chain(target, chain, addr::decode(bytes).unwrap_or(dest))
            }
        };
    }
    let Some(bytes) = &m.name else { return Plan::Send(None) };
    let dest = match addr::send_destination(bytes, family) {
        SendDest::Inet(d) => d,
        SendDest::Peer => return Plan::Send(None),
        // sendto's address of length 0 (sendmsg's is no address at all): EINVAL.
        SendDest::Refused if bytes.is_empty() => return Plan::Fail(libc::EINVAL),
        // The kernel's own error, on our copy: nothing is sent.
        SendDest::Refused => return Plan::Send(Some(bytes.clone())),
    };
    let shown = addr::decode(bytes).unwrap_or(dest);
    match call.sup.policy.udp(dest) {
        UdpPlan::Direct => Plan::Send(Some(bytes.clone())),
        UdpPlan::Stub(i) => {
            let Some(stubs) = call.sup.stubs(call.n.tid) else { return Plan::Fail(libc::ECONNREFUSED) };
            mark_dns(call.sup, sock.as_raw_fd(), i, shown, false);
            Plan::Send(Some(addr::encode(addr::for_family(stubs.udp_addr(i, family), family))))
        }
        UdpPlan::Refuse(e, why) => {
            call.sup.log.error(call.tgid(), format_args!("{why}"));
            Plan::Fail(e)
        }
    }
}

/// EPIPE on a stream without MSG_NOSIGNAL: the kernel would have raised SIGPIPE in the thread.
fn pipe_signal(sup: &Supervisor, tid: libc::pid_t, flags: i32, e: &std::io::Error) {
    if e.raw_os_error() == Some(libc::EPIPE) && flags & libc::MSG_NOSIGNAL == 0 {
        let tgid = sup.tgid(tid);
        // SAFETY: a signal to the thread that made the call.
        unsafe { libc::syscall(libc::SYS_tgkill, tgid, tid, libc::SIGPIPE) };
    }
}

/// Sends a stream's data in pieces: all of it on a blocking socket (as the kernel does),
/// what fits on a non-blocking one.
/// `sent` bytes went already (and with them the control data).
fn send_stream_from(
    sup: &Supervisor,
    tid: libc::pid_t,
    fd: RawFd,
    m: &Message,
    flags: i32,
    mut sent: usize,
) -> Reply {
    let total = m.len();
    let once = flags & libc::MSG_DONTWAIT != 0 || sys::nonblocking(fd);
    loop {
        let data = match m.read(tid, sent, CHUNK) {
            Ok(d) => d,
            Err(e) if sent == 0 => return Reply::Error(e),
            Err(_) => break,
        };
        let control: &[u8] = if sent == 0 { &m.control } else { &[] };
        match send_bytes(tid, fd, None, &data, control, flags & !libc::MSG_FASTOPEN) {
            Ok(n) => {
                sent += n;
                // A short send (full buffer, SO_SNDTIMEO) ends it, as in the kernel.
                if once || n < data.len() || sent >= total {
                    break;
                }
            }
            Err(e) => {
                if sent > 0 {
                    break;
                }
                pipe_signal(sup, tid, flags, &e);
                return Reply::Error(sys::errno(&e));
            }
        }
    }
    Reply::Value(sent as i64)
}

fn send_stream(sup: &Supervisor, tid: libc::pid_t, fd: RawFd, m: &Message, flags: i32) -> Reply {
    send_stream_from(sup, tid, fd, m, flags, 0)
}

/// A blocking send's first try, without waiting: most sends find room in the socket's buffer,
/// and so need no worker. `Err` is the kernel's EAGAIN: the send must wait.
fn try_now(
    tid: libc::pid_t,
    fd: RawFd,
    to: Option<&[u8]>,
    data: &[u8],
    control: &[u8],
    flags: i32,
) -> Result<std::io::Result<usize>, ()> {
    match send_bytes(tid, fd, to, data, control, flags | libc::MSG_DONTWAIT) {
        Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => Err(()),
        r => Ok(r),
    }
}

/// Carries out the plan of one message (of sendto or sendmsg).
fn carry_out(call: &mut Call, sock: OwnedFd, plan: Plan, m: Message, flags: i32) -> Outcome {
    let tid = call.n.tid;
    let blocking = flags & libc::MSG_DONTWAIT == 0 && !sys::nonblocking(sock.as_raw_fd());
    match plan {
        Plan::Fail(e) => errno_reply(e),
        Plan::Stream => {
            if !blocking {
                return reply(send_stream(call.sup, tid, sock.as_raw_fd(), &m, flags));
            }
            // All of it at once when it fits (the common case); the rest waits on a worker.
            let mut sent = 0;
            if m.len() <= CHUNK {
                let data = match m.read(tid, 0, CHUNK) {
                    Ok(d) => d,
                    Err(e) => return errno_reply(e),
                };
                match try_now(tid, sock.as_raw_fd(), None, &data, &m.control, flags & !libc::MSG_FASTOPEN) {
                    Ok(Ok(n)) if n >= data.len() => return reply(Reply::Value(n as i64)),
                    Ok(Ok(n)) => sent = n,
                    Ok(Err(e)) => {
                        pipe_signal(call.sup, tid, flags, &e);
                        return errno_reply(sys::errno(&e));
                    }
                    Err(()) => {}
                }
            }
            Outcome::Slow(Box::new(move |sup| {
                reply(send_stream_from(sup, tid, sock.as_raw_fd(), &m, flags, sent))
            }))
        }
        Plan::Send(to) => {
            if m.len() > MAX_DATAGRAM {
                return errno_reply(libc::EMSGSIZE);
            }
            let data = match m.read(tid, 0, MAX_DATAGRAM) {
                Ok(d) => d,
                Err(e) => return errno_reply(e),
            };
            let fd = sock.as_raw_fd();
            let r = if blocking {
                match try_now(tid, fd, to.as_deref(), &data, &m.control, flags) {
                    Ok(r) => r,
                    Err(()) => {
                        // No room in the buffer: wait for it on a worker.
                        return Outcome::Slow(Box::new(move |sup| {
                            let r =
                                send_bytes(tid, sock.as_raw_fd(), to.as_deref(), &data, &m.control, flags);
                            if let Err(e) = &r {
                                pipe_signal(sup, tid, flags, e);
                            }
                            reply(count(r))
                        }));
                    }
                }
            } else {
                send_bytes(tid, fd, to.as_deref(), &data, &m.control, flags)
            };
            if let Err(e) = &r {
                pipe_signal(call.sup, tid, flags, e);
            }
            reply(count(r))
        }
        Plan::Chain(target, chain, shown) => {
            let tgid = call.tgid();
            let until =
                blocking.then(|| sys::send_timeout(sock.as_raw_fd())).flatten().map(|t| Instant::now() + t);
            Outcome::Slow(Box::new(move |sup| {
                match chain_connect(sup, chain, tgid, &sock, &target, shown, until) {
                    Reply::Value(_) => {
                        reply(send_stream(sup, tid, sock.as_raw_fd(), &m, flags & !libc::MSG_FASTOPEN))
                    }
                    other => reply(other),
                }
            }))
        }
    }
}

/// Checks the socket; `Err` is the outcome when nothing more is to be done.
fn usable(call: &mut Call, fd: i32) -> Result<(OwnedFd, libc::c_int, libc::c_int), Outcome> {
    let (sock, family, ty) = socket_of(call, fd).map_err(errno_reply)?;
    if local_family(family) {
        // The program's own send (see `local_connect`): the receiver's SCM_CREDENTIALS and
        // SO_PEERCRED, and the permission checks on a datagram's path, are the program's.
        return Err(reply(Reply::Continue));
    }
    if !inet(family) || !matches!(ty, libc::SOCK_STREAM | libc::SOCK_DGRAM) {
        return Err(foreign(call, "a send", family, ty));
    }
    Ok((sock, family, ty))
}

pub fn sendto(call: &mut Call) -> Outcome {
    let (fd, buf, len, flags, ptr, alen) =
        (call.arg(0) as i32, call.arg(1), call.arg(2) as usize, call.arg(3) as i32, call.arg(4), call.arg(5));
    let (sock, family, ty) = match usable(call, fd) {
        Ok(s) => s,
        Err(o) => return o,
    };
    let name = if ptr != 0 {
        match read_addr(call, ptr, alen) {
            Ok(b) => Some(b),
            Err(e) => return errno_reply(e),
        }
    } else {
        None
    };
    if ty == libc::SOCK_STREAM && inet(family) && name.as_deref() == Some(&GUARD_ASSOCIATE[..]) {
        return associate(call, sock, buf, len, flags as u32 as usize);
    }
    if !call.valid() {
        return Outcome::Done;
    }
    let m = Message { name, iov: vec![(buf, len)], control: Vec::new() };
    let plan = plan(call, &sock, family, ty, &m, flags);
    carry_out(call, sock, plan, m, flags)
}

pub fn sendmsg(call: &mut Call) -> Outcome {
    let (fd, ptr, flags) = (call.arg(0) as i32, call.arg(1), call.arg(2) as i32);
    let (sock, family, ty) = match usable(call, fd) {
        Ok(s) => s,
        Err(o) => return o,
    };
    let m = match read_msghdr(call, ptr) {
        Ok(m) => m,
        Err(e) => return errno_reply(e),
    };
    if !call.valid() {
        return Outcome::Done;
    }
    let plan = plan(call, &sock, family, ty, &m, flags);
    carry_out(call, sock, plan, m, flags)
}

pub fn sendmmsg(call: &mut Call) -> Outcome {
    let (fd, ptr, vlen, flags) =
        (call.arg(0) as i32, call.arg(1), call.arg(2) as u32 as usize, call.arg(3) as i32);
    let (sock, family, ty) = match usable(call, fd) {
        Ok(s) => s,
        Err(o) => return o,
    };
    let vlen = vlen.min(MAX_IOV);
    let tid = call.n.tid;
    let mut sent = 0usize;
    let mut first_error = None;
    for i in 0..vlen {
        let at = ptr + (i * MMSGHDR) as u64;
        let m = match read_msghdr(call, at) {
            Ok(m) => m,
            Err(e) => {
                first_error = Some(e);
                break;
            }
        };
        if !call.valid() {
            return Outcome::Done;
        }
        let f = if i == 0 { flags } else { flags & !libc::MSG_FASTOPEN };
        let r = match plan(call, &sock, family, ty, &m, f) {
            Plan::Fail(e) => Err(e),
            Plan::Stream => match send_stream(call.sup, tid, sock.as_raw_fd(), &m, f | libc::MSG_DONTWAIT) {
                Reply::Value(n) => Ok(n as usize),
                Reply::Error(e) => Err(e),
                Reply::Continue => Err(libc::EIO),
            },
            Plan::Send(to) => match m.read(tid, 0, MAX_DATAGRAM) {
                Ok(data) if m.len() <= MAX_DATAGRAM => {
                    send_bytes(tid, sock.as_raw_fd(), to.as_deref(), &data, &m.control, f)
                        .map_err(|e| sys::errno(&e))
                }
                Ok(_) => Err(libc::EMSGSIZE),
                Err(e) => Err(e),
            },
            Plan::Chain(target, chain, shown) => {
                // Rare (Fast Open through sendmmsg): the handshake runs here.
                match chain_connect(call.sup, chain, call.tgid(), &sock, &target, shown, None) {
                    Reply::Value(_) => {
                        match send_stream(call.sup, tid, sock.as_raw_fd(), &m, f & !libc::MSG_FASTOPEN) {
                            Reply::Value(n) => Ok(n as usize),
                            Reply::Error(e) => Err(e),
                            Reply::Continue => Err(libc::EIO),
                        }
                    }
                    Reply::Error(e) => Err(e),
                    Reply::Continue => Err(libc::EIO),
                }
            }
        };
        match r {
            Ok(n) => {
                if let Err(e) = call.write(at + MSGHDR as u64, &(n as u32).to_ne_bytes()) {
                    first_error = Some(e);
                    break;
                }
                sent += 1;
            }
            Err(e) => {
                first_error = Some(e);
                break;
            }
        }
    }
    match (sent, first_error) {
        (0, Some(e)) => errno_reply(e),
        (n, _) => reply(Reply::Value(n as i64)),
    }
}

/// The library's request for a UDP association (`GUARD_ASSOCIATE`): made here, through the
/// chain numbered by the call's flags, on the library's control socket; the relay is
/// remembered and written to `buf`.
fn associate(call: &mut Call, sock: OwnedFd, buf: u64, len: usize, chain: usize) -> Outcome {
    let (tid, tgid) = (call.n.tid, call.tgid());
    if chain >= call.sup.chains.len() {
        return errno_reply(libc::EINVAL);
    }
    Outcome::Slow(Box::new(move |sup| {
        let fd = sock.as_raw_fd();
        let est = match socksify_core::chain::on_behalf_of(tgid as u32, || sup.chain(chain).udp_associate(fd))
        {
            Ok(est) => est,
            Err(e) => {
                sup.log.error(tgid, format_args!("UDP association failed: {e}"));
                let _ = socksify_core::sys::disconnect(fd);
                return errno_reply(e.errno());
            }
        };
        let Some(relay) = est.bound.ip() else {
            sup.log.error(
                tgid,
                format_args!("the proxy named its UDP relay by a host name ({}); not supported", est.bound),
            );
            return errno_reply(libc::EPROTO);
        };
        sup.policy.add_relay(relay);
        let bytes = addr::encode(relay);
        if len < bytes.len() || sys::write_mem(tid, buf, &bytes).is_err() {
            return errno_reply(libc::EFAULT);
        }
        reply(Reply::Value(bytes.len() as i64))
    }))
}
