//! connect(2) on the program's behalf.

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::time::Instant;

use socksify_core::TargetAddr;

use super::{foreign, forget_socket, inet, local_family, maybe_slow, read_addr, result, socket_of};
use crate::addr::{self, Dest};
use crate::notif::Reply;
use crate::policy::{TcpPlan, UdpPlan};
use crate::supervisor::{errno_reply, reply, Call, DnsMark, Handshake, Outcome, Supervisor, DNS_MARK};
use crate::sys;

pub fn connect(call: &mut Call) -> Outcome {
    let (fd, ptr, len) = (call.arg(0) as i32, call.arg(1), call.arg(2));
    let (sock, family, ty) = match socket_of(call, fd) {
        Ok(s) => s,
        Err(e) => return errno_reply(e),
    };
    if local_family(family) {
        return local_connect(call, family, ptr, len);
    }
    if !inet(family) {
        return foreign(call, "a connect", family, ty);
    }
    let bytes = match read_addr(call, ptr, len) {
        Ok(b) => b,
        Err(e) => return errno_reply(e),
    };
    if !call.valid() {
        return Outcome::Done;
    }
    let dest = match addr::destination(&bytes, family, ty) {
        Dest::Inet(d) => d,
        // AF_UNSPEC, or an address the kernel refuses: its own answer, made on our copy.
        Dest::Unspec | Dest::Refused => {
            let r = sys::connect_raw(sock.as_raw_fd(), &bytes);
            forget_socket(call.sup, sock.as_raw_fd());
            return reply(result(r));
        }
    };
    if let Some(e) = refused_by_the_kernel(dest) {
        return errno_reply(e);
    }
    match ty {
        libc::SOCK_STREAM => tcp_connect(call, sock, family, bytes, dest),
        libc::SOCK_DGRAM => udp_connect(call, sock, family, bytes, dest),
        _ => foreign(call, "a connect", family, ty),
    }
}

/// Addresses the kernel refuses before sending anything, which a proxy would answer
/// differently: a link-local IPv6 address without its interface (EINVAL).
fn refused_by_the_kernel(dest: SocketAddr) -> Option<i32> {
    match dest {
        SocketAddr::V6(v6) if (v6.ip().segments()[0] & 0xffc0) == 0xfe80 && v6.scope_id() == 0 => {
            Some(libc::EINVAL)
        }
        _ => None,
    }
}

/// A connect of a local family (AF_UNIX, netlink, vsock…) is the program's own: the kernel
/// runs it as made, so that the server sees the program's pid, uid and gid (`SO_PEERCRED`)
/// and checks the program's permissions on the path — never the supervisor's. Only resolver
/// daemons are refused under remote DNS.
fn local_connect(call: &Call, family: libc::c_int, ptr: u64, len: u64) -> Outcome {
    if family != libc::AF_UNIX || !call.sup.policy.router.remote_dns() {
        return reply(Reply::Continue);
    }
    // An unreadable address: the kernel's own call says EFAULT (or EINVAL).
    let Ok(bytes) = read_addr(call, ptr, len) else { return reply(Reply::Continue) };
    if socksify_core::sockaddr::resolver_daemon(&bytes) && call.valid() {
        // Refused quietly: glibc asks nscd before every lookup, and falls back without it.
        return errno_reply(libc::ECONNREFUSED);
    }
    reply(Reply::Continue)
}

fn tcp_connect(
    call: &mut Call,
    sock: OwnedFd,
    family: libc::c_int,
    bytes: Vec<u8>,
    dest: SocketAddr,
) -> Outcome {
    let shown = addr::decode(&bytes).unwrap_or(dest);
    let plan = call.sup.policy.tcp(dest);
    let ino = sys::inode(sock.as_raw_fd()).ok();
    if let Some(ino) = ino {
        if call.sup.any_entries() && call.sup.with_table(|t| t.get(ino).is_some_and(|e| e.connecting)) {
            return errno_reply(libc::EALREADY); // another thread's connect is under way
        }
    }
    match plan {
        TcpPlan::Direct => {
            forget_socket(call.sup, sock.as_raw_fd());
            maybe_slow(sock, false, move |fd| result(sys::connect_raw(fd, &bytes)))
        }
        TcpPlan::Stub(i) => {
            let Some(stubs) = call.sup.stubs(call.n.tid) else { return errno_reply(libc::ECONNREFUSED) };
            let to = addr::for_family(stubs.tcp_addr(i, family), family);
            remember_peer(call.sup, sock.as_raw_fd(), shown);
            maybe_slow(sock, false, move |fd| result(sys::connect_to(fd, &to)))
        }
        TcpPlan::Refuse(e, why) => {
            call.sup.log.error(call.tgid(), format_args!("{why}"));
            if call.sup.log.json() {
                use socksify_core::logjson::{program_of, Decision, Outcome};
                let policy = &call.sup.policy;
                let named = match policy.router.reverse(dest.ip()) {
                    Some(name) => TargetAddr::Domain(name, dest.port()),
                    None => TargetAddr::Ip(dest),
                };
                let outcome = if e == libc::ECONNREFUSED { Outcome::Refused } else { Outcome::Failed };
                let program = program_of(call.tgid() as u32);
                call.sup.log.decision(
                    policy.router.config(),
                    Decision {
                        pid: call.tgid() as u32,
                        program: &program,
                        destination: &named,
                        outcome,
                        chain: None,
                        hops: &[],
                        errno: e,
                        error: (outcome == Outcome::Failed).then_some(why.as_str()),
                        ms: 0,
                    },
                );
            }
            errno_reply(e)
        }
        TcpPlan::Chain(target, chain) => {
            let fd = sock.as_raw_fd();
            if sys::peer_addr(fd).is_some() {
                return errno_reply(libc::EISCONN);
            }
            if sys::connecting(fd) {
                return errno_reply(libc::EALREADY);
            }
            if dest.port() == 0 {
                return errno_reply(libc::ECONNREFUSED); // as the kernel: nothing listens on port 0
            }
            // A blocking socket's SO_SNDTIMEO bounds its connect, as it does the kernel's.
            let until =
                (!sys::nonblocking(fd)).then(|| sys::send_timeout(fd)).flatten().map(|t| Instant::now() + t);
            if let Some(ino) = ino {
                call.sup.with_table(|t| t.update(ino, |e| e.connecting = true));
            }
            let tgid = call.tgid();
            // The end must be able to wake the program (`wake_writers`: MPTCP and old kernels
            // may lack the option).
            if let Some(ino) = ino {
                if until.is_none()
                    && sys::nonblocking(fd)
                    && call.sup.is_go(tgid)
                    && notsent_lowat(fd).is_some()
                {
                    return in_background(call, sock, chain, tgid, target, shown, ino);
                }
            }
            Outcome::Slow(Box::new(move |sup| {
                let r = chain_connect(sup, chain, tgid, &sock, &target, shown, until);
                if let Some(ino) = ino {
                    sup.with_table(|t| t.update(ino, |e| e.connecting = false));
                }
                reply(r)
            }))
        }
    }
}

/// A Go program's non-blocking connect: `EINPROGRESS` at once, as the kernel answers, and the
/// chain built on a worker thread meanwhile. Go's runtime waits for the socket to be writable,
/// then asks `getsockopt(SO_ERROR)` before it writes a byte: while the chain is built that
/// answers `EINPROGRESS` (Go's connect loop waits again; any other caller fails rather than
/// write into the handshake), and at the end the socket is woken (`wake_writers`) and it
/// answers the result. No thread of the program ever waits in the supervisor.
fn in_background(
    call: &mut Call,
    sock: OwnedFd,
    chain: usize,
    tgid: libc::pid_t,
    target: TargetAddr,
    shown: SocketAddr,
    ino: u64,
) -> Outcome {
    // (`tcp_connect` has marked the entry connecting already.)
    let handshake = Arc::new(Handshake::default());
    call.sup.with_table(|t| t.update(ino, |e| e.handshake = Some(handshake.clone())));
    let id = call.n.id;
    Outcome::Slow(Box::new(move |sup| {
        // However the job ends (a panic included), the socket's connect ends with it.
        let mut end = BackgroundEnd {
            sup,
            ino,
            fd: sock.as_raw_fd(),
            handshake: &handshake,
            errno: libc::ECONNREFUSED,
        };
        if sup.listener.respond(id, Reply::Error(libc::EINPROGRESS)).is_err() {
            // The caller is gone (killed): nobody waits for this chain.
            end.errno = libc::EINTR;
            return Outcome::Done;
        }
        end.errno = match chain_connect(sup, chain, tgid, &sock, &target, shown, None) {
            Reply::Error(e) => e,
            _ => 0,
        };
        Outcome::Done
    }))
}

/// The end of a background handshake, when its job ends: the result recorded, the entry no
/// longer connecting, and the socket woken.
struct BackgroundEnd<'a> {
    sup: &'a Supervisor,
    ino: u64,
    fd: i32,
    handshake: &'a Arc<Handshake>,
    errno: i32,
}

impl Drop for BackgroundEnd<'_> {
    fn drop(&mut self) {
        self.handshake.finish(self.errno);
        self.sup.with_table(|t| t.update(self.ino, |e| e.connecting = false));
        wake_writers(self.fd);
    }
}

fn notsent_lowat(fd: i32) -> Option<libc::c_int> {
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    sys::syscall!(
        libc::SYS_getsockopt,
        fd,
        libc::IPPROTO_TCP,
        libc::TCP_NOTSENT_LOWAT,
        &mut v as *mut libc::c_int,
        &mut len as *mut libc::socklen_t
    )
    .ok()
    .map(|_| v)
}

/// Wakes whoever waits for the socket to be writable (an edge for an edge-triggered `epoll`),
/// changing nothing: TCP_NOTSENT_LOWAT set to the value it has makes the kernel run the
/// socket's write-space callback.
fn wake_writers(fd: i32) {
    if let Some(v) = notsent_lowat(fd) {
        let len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        let _ = sys::syscall!(
            libc::SYS_setsockopt,
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_NOTSENT_LOWAT,
            &v as *const libc::c_int,
            len
        );
    }
}

/// `getsockopt(fd, SOL_SOCKET, SO_ERROR, …)` (trapped only with that level and name): on a
/// socket whose chain is built in the background (`in_background`), `EINPROGRESS` while it is,
/// then once the errno the connect failed with; on any other socket, and after a chain that
/// worked, the kernel's own answer.
pub fn so_error(call: &mut Call) -> Outcome {
    if !call.sup.any_entries() {
        return reply(Reply::Continue);
    }
    let Ok(sock) = call.take_fd(call.arg(0) as i32) else { return reply(Reply::Continue) };
    let Ok(ino) = sys::inode(sock.as_raw_fd()) else { return reply(Reply::Continue) };
    if !call.sup.with_table(|t| t.get(ino).is_some_and(|e| e.handshake.is_some())) {
        return reply(Reply::Continue);
    }
    // The length first, as the kernel checks it: a bad one loses nothing.
    let (val, len_ptr) = (call.arg(3), call.arg(4));
    let len = match call.read_u32(len_ptr) {
        Ok(n) if (n as i32) < 0 => return errno_reply(libc::EINVAL),
        Ok(n) => (n as usize).min(4),
        Err(e) => return errno_reply(e),
    };
    // Taken under the table's lock: the errno is answered once, as the kernel clears a
    // socket's error when it reports it.
    let answer = call.sup.with_table(|t| {
        let h = t.get(ino).and_then(|e| e.handshake.clone())?;
        let done = h.result();
        if done.is_some() {
            t.update(ino, |e| e.handshake = None);
        }
        Some(done)
    });
    let errno = match answer {
        None | Some(Some(0)) => return reply(Reply::Continue),
        Some(None) => libc::EINPROGRESS,
        Some(Some(e)) => e,
    };
    let written = call
        .write(val, &errno.to_ne_bytes()[..len])
        .and_then(|()| call.write(len_ptr, &(len as u32).to_ne_bytes()));
    match written {
        Ok(()) => reply(Reply::Value(0)),
        Err(e) => errno_reply(e),
    }
}

/// Builds the chain on the program's socket to `target`; `shown` is what its `getpeername`
/// answers afterwards.
pub fn chain_connect(
    sup: &Supervisor,
    chain: usize,
    tgid: libc::pid_t,
    sock: &OwnedFd,
    target: &TargetAddr,
    shown: SocketAddr,
    until: Option<Instant>,
) -> Reply {
    let fd = sock.as_raw_fd();
    let via = chain;
    let chain = sup.chain(via);
    let started = Instant::now();
    // `isolate` credentials are the program's, not the guard's.
    let result = socksify_core::chain::on_behalf_of(tgid as u32, || chain.connect_until(fd, target, until));
    if sup.log.json() {
        use socksify_core::logjson::{program_of, Decision, Outcome};
        let (outcome, hops, errno, why): (_, Vec<String>, _, _) = match &result {
            Ok(est) => (
                Outcome::Proxied,
                est.path.iter().map(|&i| chain.proxies()[i].to_string()).collect(),
                0,
                None,
            ),
            Err(e) => (
                Outcome::Failed,
                chain.proxies().iter().map(|p| p.to_string()).collect(),
                e.errno(),
                Some(e.to_string()),
            ),
        };
        let program = program_of(tgid as u32);
        sup.log.decision(
            sup.policy.router.config(),
            Decision {
                pid: tgid as u32,
                program: &program,
                destination: target,
                outcome,
                chain: Some(via),
                hops: &hops,
                errno,
                error: why.as_deref(),
                ms: started.elapsed().as_millis() as u64,
            },
        );
    }
    match result {
        Ok(est) => {
            if sup.log.verbose() {
                let hops: Vec<String> = est.path.iter().map(|&i| chain.proxies()[i].to_string()).collect();
                sup.log.info(tgid, format_args!("{target} via {} (kernel guard)", hops.join(" -> ")));
            }
            let local = est.bound.ip();
            if let Ok(ino) = sys::inode(fd) {
                sup.with_table(|t| {
                    t.update(ino, |e| {
                        e.peer = Some(shown);
                        e.local = local;
                    });
                    t.note_proxied(tgid, target.clone());
                });
            }
            Reply::Value(0)
        }
        Err(e) => {
            sup.log.error(tgid, format_args!("connect to {target} failed: {e}"));
            let _ = socksify_core::sys::disconnect(fd);
            Reply::Error(e.errno())
        }
    }
}

pub fn remember_peer(sup: &Supervisor, fd: i32, shown: SocketAddr) {
    if let Ok(ino) = sys::inode(fd) {
        sup.with_table(|t| t.update(ino, |e| e.peer = Some(shown)));
    }
}

/// Marks a socket whose queries go to stub `ns`: replies are shown as coming from `shown`. A
/// connected socket keeps its mark (its sends are not seen to renew it).
pub fn mark_dns(sup: &Supervisor, fd: i32, ns: usize, shown: SocketAddr, connected: bool) {
    if let Ok(ino) = sys::inode(fd) {
        let until = if connected { None } else { Some(Instant::now() + DNS_MARK) };
        sup.with_table(|t| t.update(ino, |e| e.dns = Some(DnsMark { ns, shown, until })));
    }
}

fn udp_connect(
    call: &mut Call,
    sock: OwnedFd,
    family: libc::c_int,
    bytes: Vec<u8>,
    dest: SocketAddr,
) -> Outcome {
    let shown = addr::decode(&bytes).unwrap_or(dest);
    match call.sup.policy.udp(dest) {
        UdpPlan::Direct => {
            forget_socket(call.sup, sock.as_raw_fd());
            reply(result(sys::connect_raw(sock.as_raw_fd(), &bytes)))
        }
        UdpPlan::Stub(i) => {
            let Some(stubs) = call.sup.stubs(call.n.tid) else { return errno_reply(libc::ECONNREFUSED) };
            let to = addr::for_family(stubs.udp_addr(i, family), family);
            let r = sys::connect_to(sock.as_raw_fd(), &to);
            if r.is_ok() {
                mark_dns(call.sup, sock.as_raw_fd(), i, shown, true);
                remember_peer(call.sup, sock.as_raw_fd(), shown);
            }
            reply(result(r))
        }
        UdpPlan::Refuse(e, why) => {
            call.sup.log.error(call.tgid(), format_args!("{why}"));
            errno_reply(e)
        }
    }
}
