//! What each trapped call means, done on the program's behalf. Two rules:
//!
//! - Calls of internet sockets, whose destination decides where packets go, are made by the
//!   supervisor itself — on the program's own socket (`pidfd_getfd` gives the very same open
//!   file), with the bytes it checked — so that no other thread of the program can change the
//!   address between the check and the kernel's work. What the kernel checks the caller for
//!   there (control messages' capabilities, a new socket's owner) is checked against the
//!   program's credentials (`identity::as_program`), never the supervisor's.
//! - Calls of local families (AF_UNIX, netlink, …), whose meaning depends on who makes them
//!   (`SO_PEERCRED`, `SCM_CREDENTIALS`, permissions on a path), are the program's own: the
//!   kernel runs them as made (`Continue`) once the supervisor has seen the socket's family (an
//!   open socket's family never changes). So do receiving, names and listening where the guard
//!   has nothing to add. The README's "who makes each call" table lists them all.
//!
//! - `connect`: connect (local families: the program's own, nscd's socket refused under remote DNS);
//! - `send`: sendto, sendmsg, sendmmsg;
//! - `names`: recvfrom on resolver sockets, getsockname, getpeername;
//! - `bind`: listen and accept through SOCKS BIND;
//! - `misc`: refused sockets and options, io_uring, reaching into other processes.

mod bind;
mod connect;
mod identity;
mod misc;
mod names;
mod send;

use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use crate::notif::{Notif, Reply};
use crate::supervisor::{errno_reply, reply, Call, Outcome, Supervisor};
use crate::sys;

pub fn handle(sup: &Supervisor, n: Notif) -> Outcome {
    if n.arch != crate::bpf::NATIVE_ARCH {
        return misc::compat(sup, n);
    }
    let mut call = Call::new(sup, n);
    match n.nr {
        libc::SYS_connect => connect::connect(&mut call),
        libc::SYS_sendto => send::sendto(&mut call),
        libc::SYS_sendmsg => send::sendmsg(&mut call),
        libc::SYS_sendmmsg => send::sendmmsg(&mut call),
        libc::SYS_recvfrom => names::recvfrom(&mut call),
        libc::SYS_getpeername => names::sockname(&mut call, true),
        libc::SYS_getsockname => names::sockname(&mut call, false),
        libc::SYS_listen => bind::listen(&mut call),
        libc::SYS_accept => bind::accept(&mut call, 0),
        libc::SYS_accept4 => {
            let flags = call.arg(3) as i32;
            bind::accept(&mut call, flags)
        }
        libc::SYS_socket => misc::socket(&mut call),
        libc::SYS_setsockopt => misc::setsockopt(&mut call),
        libc::SYS_getsockopt => connect::so_error(&mut call),
        libc::SYS_ptrace | libc::SYS_process_vm_writev | libc::SYS_pidfd_getfd => misc::reach(&mut call),
        libc::SYS_io_uring_setup => {
            sup.log.info(
                n.tid,
                format_args!(
                    "io_uring_setup refused (ENOSYS): io_uring would go around the guard; the program falls back to ordinary calls"
                ),
            );
            errno_reply(libc::ENOSYS)
        }
        _ => reply(Reply::Continue),
    }
}

/// The program's socket `fd` and its family and type; or the errno the call fails with.
fn socket_of(call: &mut Call, fd: i32) -> Result<(OwnedFd, libc::c_int, libc::c_int), i32> {
    let sock = call.take_fd(fd)?;
    let (family, ty) = sys::socket_kind(sock.as_raw_fd()).map_err(|e| sys::errno(&e))?;
    Ok((sock, family, ty))
}

fn inet(family: libc::c_int) -> bool {
    family == libc::AF_INET || family == libc::AF_INET6
}

/// Families whose sockets never reach the network.
fn local_family(family: libc::c_int) -> bool {
    matches!(family, libc::AF_UNIX | libc::AF_NETLINK | libc::AF_ALG | libc::AF_KEY | libc::AF_VSOCK)
}

/// A socket the guard does not pass (an inherited packet or raw socket): refused.
fn foreign(call: &Call, what: &str, family: libc::c_int, ty: libc::c_int) -> Outcome {
    call.sup.log.error(
        call.tgid(),
        format_args!(
            "{what} on a socket of family {family}, type {ty} was refused: it would go around the proxies"
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

/// Runs `f` now when it cannot block (`now`, or a non-blocking socket), else on a worker.
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
    if len > crate::addr::MAX_LEN || (len as i32) < 0 {
        return Err(libc::EINVAL);
    }
    call.read(ptr, len)
}

/// Forgets what the guard said about a socket that is connected somewhere else now.
fn forget_socket(sup: &Supervisor, fd: RawFd) {
    if sup.any_entries() {
        if let Ok(ino) = sys::inode(fd) {
            sup.with_table(|t| t.forget(ino));
        }
    }
}
