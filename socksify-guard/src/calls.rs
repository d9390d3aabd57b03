//! What each trapped call means, done on the program's behalf. The rule throughout: where the
//! destination decides, the supervisor makes the call itself — on the program's own socket
//! (`pidfd_getfd` gives the very same open file) with the bytes it checked — so no other thread
//! of the program can change the address between the check and the kernel's read. The kernel
//! is let run a call as made (`Continue`) only where nothing in memory decides.

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use socksify_core::sys::FdStream;
use socksify_core::{Command, TargetAddr};

use crate::addr::{self, Dest};
use crate::notif::{Notif, Reply};
use crate::policy::{TcpPlan, UdpPlan};
use crate::supervisor::{errno_reply, reply, BindMark, Call, DnsMark, Outcome, Supervisor, DNS_MARK};
use crate::sys;

/// The largest datagram (or Fast Open payload) copied for a send made on the program's behalf.
const MAX_DATA: usize = 65_536;
const MAX_CONTROL: usize = 65_536;
const MAX_IOV: usize = 1024;
const MSGHDR: usize = 56;
const MMSGHDR: usize = 64;

pub fn handle(sup: &Supervisor, n: Notif) -> Outcome {
    if n.arch != crate::bpf::NATIVE_ARCH {
        return compat(sup, n);
    }
    let mut call = Call::new(sup, n);
    match n.nr {
        libc::SYS_connect => connect(&mut call),
        libc::SYS_sendto => sendto(&mut call),
        libc::SYS_sendmsg => sendmsg(&mut call),
        libc::SYS_sendmmsg => sendmmsg(&mut call),
        libc::SYS_recvfrom => recvfrom(&mut call),
        libc::SYS_getpeername => sockname(&mut call, true),
        libc::SYS_getsockname => sockname(&mut call, false),
        libc::SYS_listen => listen(&mut call),
        libc::SYS_accept => accept(&mut call, 0),
        libc::SYS_accept4 => {
            let flags = call.arg(3) as i32;
            accept(&mut call, flags)
        }
        libc::SYS_socket => socket(&mut call),
        libc::SYS_io_uring_setup => {
            sup.log.info(
                n.tid,
                format_args!("io_uring_setup refused (ENOSYS): io_uring would go around the guard; the program falls back to ordinary calls"),
            );
            errno_reply(libc::ENOSYS)
        }
        _ => reply(Reply::Continue),
    }
}

/// A system call of another architecture (`int 0x80` on x86_64): socket calls are refused.
fn compat(sup: &Supervisor, n: Notif) -> Outcome {
    sup.log.error(
        n.tid,
        format_args!(
            "a 32-bit network system call (number {}) was refused: the guard handles 64-bit calls only",
            n.nr
        ),
    );
    errno_reply(libc::EPERM)
}

/// The program's socket `fd` and its family and type; or the errno the call fails with.
fn socket_of(call: &mut Call, fd: i32) -> Result<(OwnedFd, libc::c_int, libc::c_int), i32> {
    let sock = call.take_fd(fd)?;
    let (family, ty) = sys::socket_kind(sock.as_raw_fd()).map_err(|e| sys::errno(&e))?;
    Ok((sock, family, ty))
}

/// Families whose sockets never reach the network: their calls run as made.
fn local_family(family: libc::c_int) -> bool {
    matches!(family, libc::AF_UNIX | libc::AF_NETLINK | libc::AF_ALG | libc::AF_KEY | libc::AF_VSOCK)
}

/// A socket the guard does not pass (an inherited packet or raw socket): refused.
fn foreign(call: &Call, family: libc::c_int, ty: libc::c_int) -> Outcome {
    call.sup.log.error(
        call.n.tid,
        format_args!(
            "a send on a socket of family {family}, type {ty} was refused: it would go around the proxies"
        ),
    );
    errno_reply(libc::EPERM)
}

fn result(r: std::io::Result<()>) -> Reply {
    match r {
        Ok(()) => Reply::Value(0),
        Err(e) => Reply::Error(sys::errno(&e)),
    }
}

fn count(r: std::io::Result<usize>) -> Reply {
    match r {
        Ok(n) => Reply::Value(n as i64),
        Err(e) => Reply::Error(sys::errno(&e)),
    }
}

/// Runs `f` now when the socket cannot block, else on a worker.
fn maybe_slow(sock: OwnedFd, now: bool, f: impl FnOnce(RawFd) -> Reply + Send + 'static) -> Outcome {
    if now || sys::nonblocking(sock.as_raw_fd()) {
        return reply(f(sock.as_raw_fd()));
    }
    Outcome::Slow(Box::new(move |_| {
        let r = f(sock.as_raw_fd());
        drop(sock);
        reply(r)
    }))
}

/// Reads a socket address argument: EINVAL when longer than any the kernel takes, EFAULT when
/// unreadable.
fn read_addr(call: &Call, ptr: u64, len: u64) -> Result<Vec<u8>, i32> {
    let len = len as u32 as usize;
    if len > addr::MAX_LEN || (len as i32) < 0 {
        return Err(libc::EINVAL);
    }
    call.read(ptr, len)
}

fn connect(call: &mut Call) -> Outcome {
    let (fd, ptr, len) = (call.arg(0) as i32, call.arg(1), call.arg(2));
    let (sock, family, ty) = match socket_of(call, fd) {
        Ok(s) => s,
        Err(e) => return errno_reply(e),
    };
    if family != libc::AF_INET && family != libc::AF_INET6 {
        if family == libc::AF_UNIX && call.sup.policy.router.remote_dns() {
            if let Some(refused) = refuse_resolver_daemon(call, ptr, len) {
                return refused;
            }
        }
        return reply(Reply::Continue);
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
        Dest::Unspec | Dest::Refused => return reply(result(sys::connect_raw(sock.as_raw_fd(), &bytes))),
    };
    match ty {
        libc::SOCK_STREAM => tcp_connect(call, sock, family, bytes, dest),
        libc::SOCK_DGRAM => udp_connect(call, sock, family, bytes, dest),
        _ => foreign(call, family, ty),
    }
}

/// Resolver daemons answer lookups for a program over a local socket — nscd, and
/// systemd-resolved's varlink socket — and would resolve its names with the system's
/// resolver. Under remote DNS they are refused; glibc then falls back to the hosts file and
/// DNS, whose queries reach the stub.
fn refuse_resolver_daemon(call: &Call, ptr: u64, len: u64) -> Option<Outcome> {
    const DAEMONS: &[&[u8]] =
        &[b"/var/run/nscd/socket", b"/run/nscd/socket", b"/run/systemd/resolve/io.systemd.Resolve"];
    let bytes = read_addr(call, ptr, len).ok()?;
    let path = bytes.get(2..)?;
    let path = &path[..path.iter().position(|&b| b == 0).unwrap_or(path.len())];
    // Refused quietly: glibc asks nscd before every lookup, and falls back without it.
    DAEMONS.contains(&path).then(|| errno_reply(libc::ECONNREFUSED))
}

fn tcp_connect(
    call: &mut Call,
    sock: OwnedFd,
    family: libc::c_int,
    bytes: Vec<u8>,
    dest: SocketAddr,
) -> Outcome {
    let shown = addr::decode(&bytes).unwrap_or(dest);
    match call.sup.policy.tcp(dest) {
        TcpPlan::Direct => maybe_slow(sock, false, move |fd| result(sys::connect_raw(fd, &bytes))),
        TcpPlan::Stub(i) => {
            let Some(stubs) = call.sup.stubs(call.n.tid) else { return errno_reply(libc::ECONNREFUSED) };
            let to = addr::for_family(stubs.tcp_addr(i, family), family);
            remember_peer(call.sup, sock.as_raw_fd(), shown);
            maybe_slow(sock, false, move |fd| result(sys::connect_to(fd, &to)))
        }
        TcpPlan::Refuse(e, why) => {
            call.sup.log.error(call.tgid(), format_args!("{why}"));
            errno_reply(e)
        }
        TcpPlan::Chain(target) => {
            let fd = sock.as_raw_fd();
            if sys::peer_addr(fd).is_some() {
                return errno_reply(libc::EISCONN);
            }
            if sys::connecting(fd) {
                return errno_reply(libc::EALREADY);
            }
            let tgid = call.tgid();
            Outcome::Slow(Box::new(move |sup| reply(chain_connect(sup, tgid, &sock, &target, shown))))
        }
    }
}

/// Builds the chain on the program's socket to `target`; `shown` is what its `getpeername`
/// answers afterwards.
fn chain_connect(
    sup: &Supervisor,
    tgid: libc::pid_t,
    sock: &OwnedFd,
    target: &TargetAddr,
    shown: SocketAddr,
) -> Reply {
    let fd = sock.as_raw_fd();
    match sup.chain.connect(fd, target) {
        Ok(est) => {
            if sup.log.verbose() {
                let hops: Vec<String> =
                    est.path.iter().map(|&i| sup.chain.proxies()[i].to_string()).collect();
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

fn remember_peer(sup: &Supervisor, fd: RawFd, shown: SocketAddr) {
    if let Ok(ino) = sys::inode(fd) {
        sup.with_table(|t| t.update(ino, |e| e.peer = Some(shown)));
    }
}

fn mark_dns(sup: &Supervisor, fd: RawFd, ns: usize, shown: SocketAddr) {
    if let Ok(ino) = sys::inode(fd) {
        let until = std::time::Instant::now() + DNS_MARK;
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
        UdpPlan::Direct => reply(result(sys::connect_raw(sock.as_raw_fd(), &bytes))),
        UdpPlan::Stub(i) => {
            let Some(stubs) = call.sup.stubs(call.n.tid) else { return errno_reply(libc::ECONNREFUSED) };
            let to = addr::for_family(stubs.udp_addr(i, family), family);
            let r = sys::connect_to(sock.as_raw_fd(), &to);
            if r.is_ok() {
                mark_dns(call.sup, sock.as_raw_fd(), i, shown);
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

/// A message to send on the program's behalf: its bytes, copied out of its memory.
struct Message {
    name: Option<Vec<u8>>,
    data: Vec<u8>,
    control: Vec<u8>,
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
    let iov = call.read(iov_ptr, iov_len * 16)?;
    let mut data = Vec::new();
    for v in iov.chunks_exact(16) {
        let base = u64::from_ne_bytes(v[..8].try_into().expect("8 bytes"));
        let len = u64::from_ne_bytes(v[8..].try_into().expect("8 bytes")) as usize;
        let take = len.min(MAX_DATA.saturating_sub(data.len()));
        if take > 0 {
            data.extend_from_slice(&call.read(base, take)?);
        }
        if len > take && data.len() >= MAX_DATA {
            return Err(libc::EMSGSIZE);
        }
    }
    if control_len > MAX_CONTROL {
        return Err(libc::ENOBUFS);
    }
    let control =
        if control_ptr != 0 && control_len != 0 { call.read(control_ptr, control_len)? } else { Vec::new() };
    Ok(Message { name, data, control })
}

/// sendmsg(2) of a copied message on `fd`, to `to` (bytes of an address) or the connected peer.
fn send_copy(fd: RawFd, to: Option<&[u8]>, m: &Message, flags: i32) -> std::io::Result<usize> {
    let mut iov = libc::iovec { iov_base: m.data.as_ptr() as *mut libc::c_void, iov_len: m.data.len() };
    // SAFETY: msghdr is plain old data.
    let mut h: libc::msghdr = unsafe { std::mem::zeroed() };
    if let Some(name) = to {
        h.msg_name = name.as_ptr() as *mut libc::c_void;
        h.msg_namelen = name.len() as libc::socklen_t;
    }
    h.msg_iov = &mut iov;
    h.msg_iovlen = 1;
    if !m.control.is_empty() {
        h.msg_control = m.control.as_ptr() as *mut libc::c_void;
        h.msg_controllen = m.control.len();
    }
    // MSG_NOSIGNAL: a broken connection must not raise SIGPIPE in the supervisor.
    sys::syscall!(libc::SYS_sendmsg, fd, &h as *const libc::msghdr, flags | libc::MSG_NOSIGNAL)
        .map(|n| n as usize)
}

/// One datagram (or Fast Open payload) to send; `Continue` when nothing in memory decides.
fn send_one(call: &mut Call, sock: &OwnedFd, family: libc::c_int, ty: libc::c_int, m: &Message) -> SendPlan {
    let dest = match &m.name {
        None => None,
        Some(bytes) => match addr::destination(bytes, family, ty) {
            Dest::Inet(d) => Some(d),
            // The kernel's own error (or, for AF_UNSPEC on a datagram socket, its peer).
            Dest::Unspec | Dest::Refused => return SendPlan::Now(Some(bytes.clone())),
        },
    };
    if ty == libc::SOCK_STREAM {
        // Only MSG_FASTOPEN reaches here: an implicit connect.
        let Some(dest) = dest else { return SendPlan::Now(None) };
        return match call.sup.policy.tcp(dest) {
            TcpPlan::Direct => SendPlan::Now(m.name.clone()),
            TcpPlan::Stub(i) => match call.sup.stubs(call.n.tid) {
                Some(stubs) => SendPlan::Now(Some(addr::encode(addr::for_family(stubs.tcp_addr(i, family), family)))),
                None => SendPlan::Fail(libc::ECONNREFUSED),
            },
            TcpPlan::Refuse(e, why) => {
                call.sup.log.error(call.tgid(), format_args!("{why}"));
                SendPlan::Fail(e)
            }
            TcpPlan::Chain(target) => {
                if sys::peer_addr(sock.as_raw_fd()).is_some() {
                    return SendPlan::Fail(libc::EISCONN);
                }
                SendPlan::Chain(target, addr::decode(m.name.as_deref().unwrap_or(&[])).unwrap_or(dest))
            }
        };
    }
    let Some(dest) = dest else { return SendPlan::Now(None) };
    let shown = addr::decode(m.name.as_deref().unwrap_or(&[])).unwrap_or(dest);
    match call.sup.policy.udp(dest) {
        UdpPlan::Direct => SendPlan::Now(m.name.clone()),
        UdpPlan::Stub(i) => {
            let Some(stubs) = call.sup.stubs(call.n.tid) else { return SendPlan::Fail(libc::ECONNREFUSED) };
            mark_dns(call.sup, sock.as_raw_fd(), i, shown);
            SendPlan::Now(Some(addr::encode(addr::for_family(stubs.udp_addr(i, family), family))))
        }
        UdpPlan::Refuse(e, why) => {
            call.sup.log.error(call.tgid(), format_args!("{why}"));
            SendPlan::Fail(e)
        }
    }
}

enum SendPlan {
    /// Send the copy now, to these address bytes (or the connected peer).
    Now(Option<Vec<u8>>),
    /// Build the chain first (TCP Fast Open to a proxied destination), then send.
    Chain(TargetAddr, SocketAddr),
    Fail(i32),
}

/// Carries out a send plan on the program's socket.
fn carry_out(call: &mut Call, sock: OwnedFd, plan: SendPlan, m: Message, flags: i32) -> Outcome {
    match plan {
        SendPlan::Fail(e) => errno_reply(e),
        SendPlan::Now(to) => maybe_slow(sock, flags & libc::MSG_DONTWAIT != 0, move |fd| {
            count(send_copy(fd, to.as_deref(), &m, flags))
        }),
        SendPlan::Chain(target, shown) => {
            let tgid = call.tgid();
            Outcome::Slow(Box::new(move |sup| match chain_connect(sup, tgid, &sock, &target, shown) {
                Reply::Value(_) => {
                    reply(count(send_copy(sock.as_raw_fd(), None, &m, flags & !libc::MSG_FASTOPEN)))
                }
                other => reply(other),
            }))
        }
    }
}

fn sendto(call: &mut Call) -> Outcome {
    let (fd, buf, len, flags, ptr, alen) =
        (call.arg(0) as i32, call.arg(1), call.arg(2) as usize, call.arg(3) as i32, call.arg(4), call.arg(5));
    let (sock, family, ty) = match socket_of(call, fd) {
        Ok(s) => s,
        Err(e) => return errno_reply(e),
    };
    if local_family(family) {
        return reply(Reply::Continue);
    }
    if family != libc::AF_INET && family != libc::AF_INET6
        || !matches!(ty, libc::SOCK_STREAM | libc::SOCK_DGRAM)
    {
        return foreign(call, family, ty);
    }
    if ty == libc::SOCK_STREAM && flags & libc::MSG_FASTOPEN == 0 {
        return reply(Reply::Continue); // a connected stream ignores the address
    }
    if ty == libc::SOCK_DGRAM && len > MAX_DATA {
        return errno_reply(libc::EMSGSIZE);
    }
    let name = if ptr != 0 {
        match read_addr(call, ptr, alen) {
            Ok(b) => Some(b),
            Err(e) => return errno_reply(e),
        }
    } else {
        None
    };
    let data = match call.read(buf, len.min(MAX_DATA)) {
        Ok(d) => d,
        Err(e) => return errno_reply(e),
    };
    if !call.valid() {
        return Outcome::Done;
    }
    let m = Message { name, data, control: Vec::new() };
    let plan = send_one(call, &sock, family, ty, &m);
    carry_out(call, sock, plan, m, flags)
}

fn sendmsg(call: &mut Call) -> Outcome {
    let (fd, ptr, flags) = (call.arg(0) as i32, call.arg(1), call.arg(2) as i32);
    let (sock, family, ty) = match socket_of(call, fd) {
        Ok(s) => s,
        Err(e) => return errno_reply(e),
    };
    if local_family(family) {
        return reply(Reply::Continue);
    }
    if family != libc::AF_INET && family != libc::AF_INET6
        || !matches!(ty, libc::SOCK_STREAM | libc::SOCK_DGRAM)
    {
        return foreign(call, family, ty);
    }
    if ty == libc::SOCK_STREAM && flags & libc::MSG_FASTOPEN == 0 {
        return reply(Reply::Continue);
    }
    let m = match read_msghdr(call, ptr) {
        Ok(m) => m,
        Err(e) => return errno_reply(e),
    };
    if !call.valid() {
        return Outcome::Done;
    }
    let plan = send_one(call, &sock, family, ty, &m);
    carry_out(call, sock, plan, m, flags)
}

fn sendmmsg(call: &mut Call) -> Outcome {
    let (fd, ptr, vlen, flags) =
        (call.arg(0) as i32, call.arg(1), call.arg(2) as u32 as usize, call.arg(3) as i32);
    let (sock, family, ty) = match socket_of(call, fd) {
        Ok(s) => s,
        Err(e) => return errno_reply(e),
    };
    if local_family(family) {
        return reply(Reply::Continue);
    }
    if family != libc::AF_INET && family != libc::AF_INET6
        || !matches!(ty, libc::SOCK_STREAM | libc::SOCK_DGRAM)
    {
        return foreign(call, family, ty);
    }
    if ty == libc::SOCK_STREAM && flags & libc::MSG_FASTOPEN == 0 {
        return reply(Reply::Continue);
    }
    let vlen = vlen.min(MAX_IOV);
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
        let plan = if i > 0 && ty == libc::SOCK_STREAM {
            SendPlan::Now(None)
        } else {
            send_one(call, &sock, family, ty, &m)
        };
        let r = match plan {
            SendPlan::Fail(e) => Err(e),
            SendPlan::Now(to) => {
                send_copy(sock.as_raw_fd(), to.as_deref(), &m, f).map_err(|e| sys::errno(&e))
            }
            SendPlan::Chain(target, shown) => {
                // Rare (Fast Open through sendmmsg): the handshake runs here.
                match chain_connect(call.sup, call.tgid(), &sock, &target, shown) {
                    Reply::Value(_) => send_copy(sock.as_raw_fd(), None, &m, f & !libc::MSG_FASTOPEN)
                        .map_err(|e| sys::errno(&e)),
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

/// recvfrom with a source address: on a socket whose queries went to the stub, the reply is
/// received on the program's behalf and shown as coming from the nameserver it asked.
fn recvfrom(call: &mut Call) -> Outcome {
    if !call.sup.any_dns_sockets() {
        return reply(Reply::Continue);
    }
    let (fd, buf, len, flags, addr_ptr, alen_ptr) =
        (call.arg(0) as i32, call.arg(1), call.arg(2) as usize, call.arg(3) as i32, call.arg(4), call.arg(5));
    let Ok(sock) = call.take_fd(fd) else { return reply(Reply::Continue) };
    let Ok(ino) = sys::inode(sock.as_raw_fd()) else { return reply(Reply::Continue) };
    let now = std::time::Instant::now();
    let Some(mark) = call.sup.with_table(|t| t.get(ino).and_then(|e| e.dns).filter(|m| m.until > now)) else {
        return reply(Reply::Continue);
    };
    let alen = if alen_ptr != 0 {
        match call.read_u32(alen_ptr) {
            Ok(n) => n as usize,
            Err(e) => return errno_reply(e),
        }
    } else {
        0
    };
    let tid = call.n.tid;
    let id = call.n.id;
    let now = flags & libc::MSG_DONTWAIT != 0 || sys::nonblocking(sock.as_raw_fd());
    let job = move |sup: &Supervisor| -> Reply {
        let fd = sock.as_raw_fd();
        let mut data = vec![0u8; len.min(MAX_DATA)];
        // SAFETY: sockaddr_storage is plain old data.
        let mut from: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let mut from_len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        let n = match sys::syscall!(
            libc::SYS_recvfrom,
            fd,
            data.as_mut_ptr(),
            data.len(),
            flags,
            &mut from as *mut _ as *mut libc::sockaddr,
            &mut from_len as *mut libc::socklen_t
        ) {
            Ok(n) => n as usize,
            Err(e) => return Reply::Error(sys::errno(&e)),
        };
        // SAFETY: the kernel wrote `from_len` bytes of an address into `from`.
        let from_bytes =
            unsafe { std::slice::from_raw_parts(&from as *const _ as *const u8, from_len as usize) };
        let family = sys::socket_kind(fd).map(|k| k.0).unwrap_or(libc::AF_INET);
        let src = addr::decode(from_bytes);
        let shown_bytes = match src.and_then(|s| sup.stubs(tid)?.nameserver_of(s)) {
            Some(ns) if ns == mark.ns => addr::encode(addr::for_family(mark.shown, family)),
            _ => from_bytes.to_vec(),
        };
        if !sup.listener.valid(id) {
            return Reply::Error(libc::EINTR);
        }
        let copied = n.min(data.len());
        let w = |addr: u64, bytes: &[u8]| sys::write_mem(tid, addr, bytes).map_err(|_| libc::EFAULT);
        if let Err(e) = w(buf, &data[..copied]) {
            return Reply::Error(e);
        }
        if addr_ptr != 0 && alen_ptr != 0 {
            let shown = &shown_bytes[..shown_bytes.len().min(alen)];
            if let Err(e) =
                w(addr_ptr, shown).and_then(|()| w(alen_ptr, &(shown_bytes.len() as u32).to_ne_bytes()))
            {
                return Reply::Error(e);
            }
        }
        Reply::Value(n as i64)
    };
    if now {
        return reply(job(call.sup));
    }
    Outcome::Slow(Box::new(move |sup| reply(job(sup))))
}

/// getpeername / getsockname of a socket the guard proxied (or sent to the stub, or BINDs).
fn sockname(call: &mut Call, peer: bool) -> Outcome {
    if !call.sup.any_entries() {
        return reply(Reply::Continue);
    }
    let (fd, addr_ptr, len_ptr) = (call.arg(0) as i32, call.arg(1), call.arg(2));
    let Ok((sock, family, _)) = socket_of(call, fd) else { return reply(Reply::Continue) };
    let Ok(ino) = sys::inode(sock.as_raw_fd()) else { return reply(Reply::Continue) };
    let known = call.sup.with_table(|t| t.get(ino).and_then(|e| if peer { e.peer } else { e.local }));
    let Some(known) = known else { return reply(Reply::Continue) };
    let bytes = addr::encode(addr::for_family(known, family));
    let room = match call.read_u32(len_ptr) {
        Ok(n) => n as usize,
        Err(e) => return errno_reply(e),
    };
    if (room as i32) < 0 {
        return errno_reply(libc::EINVAL);
    }
    let w = call
        .write(addr_ptr, &bytes[..bytes.len().min(room)])
        .and_then(|()| call.write(len_ptr, &(bytes.len() as u32).to_ne_bytes()));
    match w {
        Ok(()) => reply(Reply::Value(0)),
        Err(e) => errno_reply(e),
    }
}

fn socket(call: &mut Call) -> Outcome {
    let (domain, ty, proto) = (call.arg(0) as i32, call.arg(1) as i32 & 0xf, call.arg(2) as i32);
    let (what, errno) = match domain {
        libc::AF_PACKET => ("packet sockets".to_owned(), libc::EPERM),
        libc::AF_INET | libc::AF_INET6 if ty == libc::SOCK_RAW => ("raw sockets".to_owned(), libc::EPERM),
        libc::AF_INET | libc::AF_INET6 if proto == libc::IPPROTO_ICMP || proto == libc::IPPROTO_ICMPV6 => {
            ("ICMP sockets".to_owned(), libc::EPERM)
        }
        libc::AF_INET | libc::AF_INET6 => (format!("sockets of type {ty}, protocol {proto}"), libc::EPERM),
        other => (format!("sockets of family {other}"), libc::EPERM),
    };
    call.sup.log.error(
        call.tgid(),
        format_args!(
            "socket() refused: {what} would go around the proxies (only TCP and UDP can be proxied)"
        ),
    );
    errno_reply(errno)
}

/// listen: a SOCKS BIND when the policy says so (on a worker: the handshake waits).
fn listen(call: &mut Call) -> Outcome {
    let fd = call.arg(0) as i32;
    let Ok((sock, family, ty)) = socket_of(call, fd) else { return reply(Reply::Continue) };
    if !matches!(family, libc::AF_INET | libc::AF_INET6) || ty != libc::SOCK_STREAM {
        return reply(Reply::Continue);
    }
    let Some(bound) = sys::local_addr(sock.as_raw_fd()) else { return reply(Reply::Continue) };
    if let Ok(ino) = sys::inode(sock.as_raw_fd()) {
        if call.sup.with_table(|t| t.get(ino).is_some_and(|e| e.bind.is_some())) {
            return reply(Reply::Value(0));
        }
    }
    let tgid = call.tgid();
    let expected = call.sup.with_table(|t| t.proxied_by(tgid).cloned());
    if !call.sup.policy.binds(bound, expected.is_some()) {
        return reply(Reply::Continue);
    }
    let expected = expected.unwrap_or_else(|| {
        let any = if bound.is_ipv6() { "[::]:0" } else { "0.0.0.0:0" };
        TargetAddr::Ip(any.parse().expect("literal"))
    });
    Outcome::Slow(Box::new(move |sup| {
        let fd = sock.as_raw_fd();
        match sup.chain.establish(fd, Command::Bind, &expected) {
            Ok(est) => {
                let hop = *est.path.last().expect("a chain has a hop");
                let Some(at) = est.bound.ip() else {
                    sup.log.error(
                        tgid,
                        format_args!(
                            "BIND: the proxy named its listening address by a host name ({})",
                            est.bound
                        ),
                    );
                    let _ = socksify_core::sys::disconnect(fd);
                    return errno_reply(libc::EPROTO);
                };
                sup.log.info(
                    tgid,
                    format_args!(
                        "listen: BIND at {at} via {} for a connection from {expected}",
                        sup.chain.proxies()[hop]
                    ),
                );
                if let Ok(ino) = sys::inode(fd) {
                    sup.with_table(|t| {
                        t.update(ino, |e| {
                            e.bind = Some(BindMark { hop, accepted: false });
                            e.local = Some(at);
                        })
                    });
                }
                reply(Reply::Value(0))
            }
            Err(e) => {
                sup.log
                    .error(tgid, format_args!("listen failed: BIND for a connection from {expected}: {e}"));
                let _ = socksify_core::sys::disconnect(fd);
                errno_reply(e.errno())
            }
        }
    }))
}

/// accept on a BIND socket: waits for the second reply, then hands the connection over on a
/// new descriptor, and gives the listening descriptor a fresh loopback listener (as the
/// library does).
fn accept(call: &mut Call, flags: i32) -> Outcome {
    if !call.sup.any_entries() {
        return reply(Reply::Continue);
    }
    let (fd, addr_ptr, len_ptr) = (call.arg(0) as i32, call.arg(1), call.arg(2));
    let Ok((sock, family, _)) = socket_of(call, fd) else { return reply(Reply::Continue) };
    let Ok(ino) = sys::inode(sock.as_raw_fd()) else { return reply(Reply::Continue) };
    let Some(bind) = call.sup.with_table(|t| t.get(ino).and_then(|e| e.bind)) else {
        return reply(Reply::Continue);
    };
    if bind.accepted {
        return reply(Reply::Continue);
    }
    let listener_flags = sys::file_flags(sock.as_raw_fd()).unwrap_or(0);
    if listener_flags & libc::O_NONBLOCK != 0
        && socksify_core::sys::wait(sock.as_raw_fd(), libc::POLLIN, Some(std::time::Instant::now())).is_err()
    {
        return errno_reply(libc::EAGAIN);
    }
    let cloexec_listener = fd_cloexec(call.n.tid, fd);
    let room = if addr_ptr != 0 && len_ptr != 0 {
        match call.read_u32(len_ptr) {
            Ok(n) => Some(n as usize),
            Err(e) => return errno_reply(e),
        }
    } else {
        None
    };
    let (tid, id) = (call.n.tid, call.n.id);
    Outcome::Slow(Box::new(move |sup| {
        let conn = sock.as_raw_fd();
        let mut stream = FdStream::new(conn);
        stream.set_timeout(Some(sup.chain.timeouts().read.max(std::time::Duration::from_secs(1))));
        let peer = match sup.chain.proxies()[bind.hop].read_bind_reply(&mut stream) {
            Ok(TargetAddr::Ip(p)) => addr::for_family(p, family),
            Ok(other) => {
                sup.log.error(tid, format_args!("accept: the proxy named the peer by a host name ({other})"));
                return errno_reply(libc::EPROTO);
            }
            Err(e) => {
                sup.log.error(tid, format_args!("accept failed: BIND's second reply: {e}"));
                return errno_reply(e.errno());
            }
        };
        // The connection keeps the BIND socket, with O_NONBLOCK as accept4 asks.
        let conn_flags = if flags & libc::SOCK_NONBLOCK != 0 {
            listener_flags | libc::O_NONBLOCK
        } else {
            listener_flags & !libc::O_NONBLOCK
        };
        let _ = sys::set_file_flags(conn, conn_flags);
        if let Some(room) = room {
            let bytes = addr::encode(peer);
            let w = sys::write_mem(tid, addr_ptr, &bytes[..bytes.len().min(room)])
                .and_then(|()| sys::write_mem(tid, len_ptr, &(bytes.len() as u32).to_ne_bytes()));
            if w.is_err() {
                return errno_reply(libc::EFAULT);
            }
        }
        // The listening descriptor: a loopback listener nothing connects to.
        if let Ok(placeholder) = loopback_listener(family) {
            let _ = sys::set_file_flags(placeholder.as_raw_fd(), listener_flags);
            let _ = sup.listener.add_fd(id, placeholder.as_raw_fd(), Some(fd), cloexec_listener, false);
        }
        sup.with_table(|t| {
            t.update(ino, |e| {
                e.peer = Some(peer);
                if let Some(b) = e.bind.as_mut() {
                    b.accepted = true;
                }
            })
        });
        sup.log.info(tid, format_args!("accept: connection from {peer} through the BIND"));
        let cloexec = flags & libc::SOCK_CLOEXEC != 0;
        match sup.listener.add_fd(id, conn, None, cloexec, true) {
            Ok(_) => Outcome::Done,
            Err(_) => match sup.listener.add_fd(id, conn, None, cloexec, false) {
                Ok(new) => reply(Reply::Value(new as i64)),
                Err(e) => errno_reply(sys::errno(&e)),
            },
        }
    }))
}

fn loopback_listener(family: libc::c_int) -> std::io::Result<OwnedFd> {
    let s = sys::socket(family, libc::SOCK_STREAM)?;
    let lo: SocketAddr =
        if family == libc::AF_INET6 { "[::1]:0" } else { "127.0.0.1:0" }.parse().expect("literal");
    let b = addr::encode(lo);
    sys::syscall!(libc::SYS_bind, s.as_raw_fd(), b.as_ptr(), b.len() as libc::socklen_t)?;
    sys::syscall!(libc::SYS_listen, s.as_raw_fd(), 1)?;
    Ok(s)
}

/// Whether descriptor `fd` of thread `tid` is close-on-exec (from /proc/TID/fdinfo).
fn fd_cloexec(tid: libc::pid_t, fd: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{tid}/fdinfo/{fd}"))
        .ok()
        .and_then(|t| t.lines().find_map(|l| l.strip_prefix("flags:").map(|v| v.trim().to_owned())))
        .and_then(|v| i64::from_str_radix(&v, 8).ok())
        .is_some_and(|f| f & libc::O_CLOEXEC as i64 != 0)
}
