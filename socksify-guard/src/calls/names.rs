//! Names: replies of the stub shown as the nameserver's, and the addresses of sockets the
//! guard proxied (`getpeername` answers the address the program connected to, `getsockname`
//! the proxy's side, as the library does).

use std::os::fd::AsRawFd;

use super::socket_of;
use crate::addr;
use crate::notif::Reply;
use crate::supervisor::{errno_reply, reply, Call, Outcome, Supervisor};
use crate::sys;

const MAX_DATA: usize = 65_536;

/// recvfrom with a source address: on a socket whose queries went to the stub, the reply is
/// received on the program's behalf and shown as coming from the nameserver it asked.
pub fn recvfrom(call: &mut Call) -> Outcome {
    if !call.sup.any_dns_sockets() {
        return reply(Reply::Continue);
    }
    let (fd, buf, len, flags, addr_ptr, alen_ptr) =
        (call.arg(0) as i32, call.arg(1), call.arg(2) as usize, call.arg(3) as i32, call.arg(4), call.arg(5));
    let Ok(sock) = call.take_fd(fd) else { return reply(Reply::Continue) };
    let Ok(ino) = sys::inode(sock.as_raw_fd()) else { return reply(Reply::Continue) };
    let now = std::time::Instant::now();
    let Some(mark) =
        call.sup.with_table(|t| t.get(ino).and_then(|e| e.dns).filter(|m| m.until.is_none_or(|u| u > now)))
    else {
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
///
/// A datagram socket connected to one of the session's UDP relays was connected there by the
/// library (so that its datagrams need no trap), not by the program: it has no peer. Telling so
/// to every caller — a program that asks without libc, the library of a program that inherited
/// the socket across exec — lets the library connect it to a new relay when the old
/// association is gone.
pub fn sockname(call: &mut Call, peer: bool) -> Outcome {
    let relays = peer && call.sup.policy.any_relays();
    if !call.sup.any_entries() && !relays {
        return reply(Reply::Continue);
    }
    let (fd, addr_ptr, len_ptr) = (call.arg(0) as i32, call.arg(1), call.arg(2));
    let Ok((sock, family, ty)) = socket_of(call, fd) else { return reply(Reply::Continue) };
    if relays && ty == libc::SOCK_DGRAM {
        if let Some(p) = sys::peer_addr(sock.as_raw_fd()) {
            if call.sup.policy.is_relay(p) {
                return errno_reply(libc::ENOTCONN);
            }
        }
    }
    let Ok(ino) = sys::inode(sock.as_raw_fd()) else { return reply(Reply::Continue) };
    let entry = call.sup.with_table(|t| t.get(ino).cloned());
    let Some(entry) = entry else { return reply(Reply::Continue) };
    if peer
        && (entry.connecting || entry.handshake.as_ref().is_some_and(|h| h.result().is_some_and(|e| e != 0)))
    {
        // The handshake is under way, or failed: not connected.
        return errno_reply(libc::ENOTCONN);
    }
    let Some(known) = (if peer { entry.peer } else { entry.local }) else { return reply(Reply::Continue) };
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
