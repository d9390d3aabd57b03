//! Incoming connections through SOCKS BIND, for programs the library is not in.

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};

use socksify_core::sys::FdStream;
use socksify_core::{Command, TargetAddr};

use super::{identity, socket_of};
use crate::addr;
use crate::notif::Reply;
use crate::supervisor::{errno_reply, reply, BindMark, Call, Outcome};
use crate::sys;

/// listen: a SOCKS BIND when the policy says so (on a worker: the handshake waits).
pub fn listen(call: &mut Call) -> Outcome {
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
    // BIND follows the route of the peer it expects (the program's proxied connection).
    let chain_index = call.sup.policy.router.chain_of(&expected);
    Outcome::Slow(Box::new(move |sup| {
        let fd = sock.as_raw_fd();
        let chain = sup.chain(chain_index);
        match socksify_core::chain::on_behalf_of(tgid as u32, || {
            chain.establish(fd, Command::Bind, &expected)
        }) {
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
                        chain.proxies()[hop]
                    ),
                );
                if let Ok(ino) = sys::inode(fd) {
                    sup.with_table(|t| {
                        t.update(ino, |e| {
                            e.bind = Some(BindMark { chain: chain_index, hop, accepted: false });
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
pub fn accept(call: &mut Call, flags: i32) -> Outcome {
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
        let chain = sup.chain(bind.chain);
        stream.set_timeout(Some(chain.timeouts().read.max(std::time::Duration::from_secs(1))));
        let peer = match chain.proxies()[bind.hop].read_bind_reply(&mut stream) {
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
        // Made with the program's filesystem ids: the socket's owner is the program's.
        if let Ok(Ok(placeholder)) = identity::as_program(tid, || loopback_listener(family)) {
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
fn fd_cloexec(tid: libc::pid_t, fd: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{tid}/fdinfo/{fd}"))
        .ok()
        .and_then(|t| t.lines().find_map(|l| l.strip_prefix("flags:").map(|v| v.trim().to_owned())))
        .and_then(|v| i64::from_str_radix(&v, 8).ok())
        .is_some_and(|f| f & libc::O_CLOEXEC as i64 != 0)
}
