//! What the library knows about the program's sockets, keyed by the socket's inode so that every
//! descriptor of one socket (after `dup`) shares it and a reused descriptor number is never
//! mistaken for the old socket:
//! - the address the program connected a proxied socket to (for `getpeername`);
//! - a UDP socket's association: its internal control connection, the relay, the peer.
//!
//! Internal descriptors (control connections) are close-on-exec, live high in the descriptor
//! table, and survive the program's `close`, `close_range` and `closefrom`.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};

use libc::c_int;
use parking_lot::Mutex;
use socksify_core::TargetAddr;

use crate::sock::inode;

/// A UDP association of one of the program's sockets.
#[derive(Clone, Debug)]
pub struct Assoc {
    /// The program's descriptor the association was opened on.
    pub fd: c_int,
    /// The TCP control connection (internal descriptor).
    pub control: c_int,
    /// Where datagrams go, in the family of the program's socket.
    pub relay: SocketAddr,
    /// The peer of a `connect()`ed socket: as the program named it, and as the proxy gets it.
    pub peer: Option<(SocketAddr, TargetAddr)>,
    /// Recent destinations (as the program named them, and as sent), to name reply sources.
    pub sent: Vec<(SocketAddr, TargetAddr)>,
    /// The socket is connected to the relay: datagrams go there without an address (which the
    /// kernel guard would otherwise trap and check, one by one).
    pub on_relay: bool,
    /// The library connected it, not the program: `getpeername` says ENOTCONN, `send` without
    /// an address EDESTADDRREQ, and `getsockname` shows the wildcard address the program bound
    /// to (or the kernel would have chosen).
    pub own_link: Option<OwnLink>,
    /// A datagram is being built (MSG_MORE, UDP_CORK): its header went with its first piece,
    /// the kernel appends the next ones to it.
    pub open: bool,
    /// The socket is corked (UDP_CORK), as the program set it (filled in by `udp`).
    pub corked: bool,
}

/// How a socket the library connected to its relay looked before.
#[derive(Clone, Copy, Debug)]
pub struct OwnLink {
    /// Its local address was the wildcard (unbound, or bound to the wildcard).
    pub wildcard: bool,
}

const SENT_MEMORY: usize = 16;

/// A listening socket that became a SOCKS BIND: it is the control connection to the hop that
/// listens for the program.
#[derive(Clone, Copy, Debug)]
pub struct Bind {
    /// The hop (index in the chain's proxies) that sends the second reply.
    pub hop: usize,
    /// The one incoming connection was accepted already.
    pub accepted: bool,
}

#[derive(Default)]
struct Entry {
    /// The peer as the program named it (TCP through the chain, or a BIND's incoming peer).
    tcp_peer: Option<SocketAddr>,
    /// The destination sent to the proxy, and when (for the BIND's expected peer).
    tcp_target: Option<(u64, TargetAddr)>,
    /// What `getsockname` answers: the proxy's side of the connection.
    local: Option<SocketAddr>,
    /// An address the program bound to that is the proxy's, not this host's.
    virtual_bind: Option<SocketAddr>,
    bind: Option<Bind>,
    udp: Option<Assoc>,
    /// UDP_CORK as the program set it.
    udp_cork: bool,
}

#[derive(Default)]
struct Table {
    by_inode: HashMap<u64, Entry>,
    internal: HashSet<c_int>,
}

static TABLE: Mutex<Option<Table>> = Mutex::new(None);
/// Entries in the table: hooks on hot paths (`read`, `close`, …) skip all work while it is 0.
static ENTRIES: AtomicUsize = AtomicUsize::new(0);
/// UDP associations: `read`/`write`/`recv` hooks have nothing to do while it is 0.
static ASSOCS: AtomicUsize = AtomicUsize::new(0);

fn with<T>(f: impl FnOnce(&mut Table) -> T) -> T {
    let mut guard = TABLE.lock();
    let table = guard.get_or_insert_with(Table::default);
    let r = f(table);
    ENTRIES.store(table.by_inode.len() + table.internal.len(), Ordering::Release);
    ASSOCS.store(table.internal.len(), Ordering::Release);
    r
}

pub fn any() -> bool {
    ENTRIES.load(Ordering::Acquire) != 0
}

pub fn any_udp() -> bool {
    ASSOCS.load(Ordering::Acquire) != 0
}

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// Records a connection the chain made: the peer as the program named it, the target sent to
/// the proxy, and the proxy's side of the connection (for `getsockname`).
pub fn remember_tcp(fd: c_int, peer: SocketAddr, target: TargetAddr, local: Option<SocketAddr>) {
    if let Some(ino) = inode(fd) {
        let seq = SEQ.fetch_add(1, Ordering::Relaxed) as u64;
        with(|t| {
            let e = t.by_inode.entry(ino).or_default();
            e.tcp_peer = Some(peer);
            e.tcp_target = Some((seq, target));
            e.local = local;
        });
    }
}

/// The destination of the most recent proxied connection still open.
pub fn latest_target() -> Option<TargetAddr> {
    if !any() {
        return None;
    }
    with(|t| {
        t.by_inode
            .values()
            .filter_map(|e| e.tcp_target.as_ref())
            .max_by_key(|(seq, _)| *seq)
            .map(|(_, t)| t.clone())
    })
}

/// What `getsockname` of `fd` answers, if the library knows better than the kernel.
pub fn local(fd: c_int) -> Option<SocketAddr> {
    if !any() {
        return None;
    }
    let ino = inode(fd)?;
    with(|t| t.by_inode.get(&ino)?.local)
}

pub fn set_virtual_bind(fd: c_int, addr: SocketAddr) {
    if let Some(ino) = inode(fd) {
        with(|t| t.by_inode.entry(ino).or_default().virtual_bind = Some(addr));
    }
}

pub fn virtual_bind(fd: c_int) -> Option<SocketAddr> {
    if !any() {
        return None;
    }
    let ino = inode(fd)?;
    with(|t| t.by_inode.get(&ino)?.virtual_bind)
}

/// Records that `fd` is a BIND through hop `hop`, listening at `listen` on the proxy.
pub fn set_bind(fd: c_int, hop: usize, listen: SocketAddr) {
    if let Some(ino) = inode(fd) {
        with(|t| {
            let e = t.by_inode.entry(ino).or_default();
            e.bind = Some(Bind { hop, accepted: false });
            e.local = Some(listen);
        });
    }
}

pub fn bind_state(fd: c_int) -> Option<Bind> {
    if !any() {
        return None;
    }
    let ino = inode(fd)?;
    with(|t| t.by_inode.get(&ino)?.bind)
}

/// The BIND socket now on `conn` delivered its connection, from `peer`.
pub fn bind_accepted(conn: c_int, peer: SocketAddr) {
    if let Some(ino) = inode(conn) {
        with(|t| {
            if let Some(e) = t.by_inode.get_mut(&ino) {
                if let Some(b) = e.bind.as_mut() {
                    b.accepted = true;
                }
                e.tcp_peer = Some(peer);
            }
        });
    }
}

/// The address the program connected `fd` to, if the library proxied it (TCP or UDP).
pub fn peer(fd: c_int) -> Option<SocketAddr> {
    if !any() {
        return None;
    }
    let ino = inode(fd)?;
    with(|t| {
        let e = t.by_inode.get(&ino)?;
        e.tcp_peer.or_else(|| e.udp.as_ref()?.peer.as_ref().map(|p| p.0))
    })
}

/// The association of a UDP socket.
pub fn udp(fd: c_int) -> Option<Assoc> {
    if !any_udp() {
        return None;
    }
    let ino = inode(fd)?;
    with(|t| {
        let e = t.by_inode.get(&ino)?;
        e.udp.clone().map(|a| Assoc { corked: e.udp_cork, ..a })
    })
}

/// Records the program's UDP_CORK setting of `fd` (a corked datagram's pieces must not each get
/// a header).
pub fn set_cork(fd: c_int, on: bool) {
    let Some(ino) = inode(fd) else { return };
    with(|t| {
        if on || t.by_inode.contains_key(&ino) {
            let e = t.by_inode.entry(ino).or_default();
            e.udp_cork = on;
            if !on {
                // Uncorking sends what was built.
                if let Some(a) = e.udp.as_mut() {
                    a.open = false;
                }
            }
        }
    })
}

/// Records a new association for `fd` and returns the one in force: if another thread was
/// quicker, its association, and `assoc`'s control connection is closed.
pub fn insert_udp(fd: c_int, assoc: Assoc) -> Option<Assoc> {
    let Some(ino) = inode(fd) else {
        crate::sock::close_raw(assoc.control);
        return None;
    };
    let (in_force, spare) = with(|t| {
        let entry = t.by_inode.entry(ino).or_default();
        if let Some(existing) = &entry.udp {
            return (existing.clone(), Some(assoc.control));
        }
        t.internal.insert(assoc.control);
        entry.udp = Some(assoc.clone());
        (assoc, None)
    });
    if let Some(control) = spare {
        crate::sock::close_raw(control);
    }
    Some(in_force)
}

/// Updates the association of `fd`, if it has one.
pub fn update_udp(fd: c_int, f: impl FnOnce(&mut Assoc)) {
    let Some(ino) = inode(fd) else { return };
    with(|t| {
        if let Some(a) = t.by_inode.get_mut(&ino).and_then(|e| e.udp.as_mut()) {
            f(a)
        }
    })
}

/// Remembers a destination of `fd`'s datagrams, to name the source of replies.
pub fn note_sent(fd: c_int, program: SocketAddr, target: &TargetAddr) {
    update_udp(fd, |a| {
        if !a.sent.iter().any(|(p, _)| *p == program) {
            if a.sent.len() == SENT_MEMORY {
                a.sent.remove(0);
            }
            a.sent.push((program, target.clone()));
        }
    });
}

/// Forgets `fd`'s socket (it is being closed or replaced); returns the internal descriptor that
/// belonged to it, for the caller to close.
pub fn forget(fd: c_int) -> Option<c_int> {
    if !any() {
        return None;
    }
    let ino = inode(fd)?;
    // A UDP association is kept while another descriptor (a `dup`) keeps the socket: the
    // socket is of no use without it. (Only then is /proc read: a TCP socket's close costs
    // nothing more.)
    match with(|t| t.by_inode.get(&ino).map(|e| e.udp.is_some())) {
        None => return None,
        Some(true) if open_elsewhere(ino, |d| d == fd) => return None,
        Some(_) => {}
    }
    with(|t| {
        let control = t.by_inode.remove(&ino)?.udp.map(|a| a.control);
        if let Some(c) = control {
            t.internal.remove(&c);
        }
        control
    })
}

/// Forgets the sockets of associations opened on descriptors `first..=last` (being closed
/// together); returns their internal descriptors, for the caller to close.
pub fn forget_range(first: c_int, last: c_int) -> Vec<c_int> {
    if !any_udp() {
        return Vec::new();
    }
    let candidates: Vec<(c_int, u64)> = with(|t| {
        t.by_inode
            .iter()
            .filter_map(|(ino, e)| e.udp.as_ref().map(|a| (a.fd, *ino)))
            .filter(|(fd, _)| (first..=last).contains(fd))
            .collect()
    });
    // Only descriptors that still are those sockets (fstat outside the lock), and that no
    // descriptor outside the range keeps open.
    let closing: Vec<u64> = candidates
        .into_iter()
        .filter(|(fd, ino)| inode(*fd) == Some(*ino))
        .map(|(_, i)| i)
        .filter(|&ino| !open_elsewhere(ino, |d| (first..=last).contains(&d)))
        .collect();
    with(|t| {
        let mut controls = Vec::new();
        for ino in closing {
            if let Some(c) = t.by_inode.remove(&ino).and_then(|e| e.udp).map(|a| a.control) {
                t.internal.remove(&c);
                controls.push(c);
            }
        }
        controls
    })
}

/// True when a descriptor of this process other than those `closing` is the socket of inode
/// `ino` (read from /proc/self/fd: only when a socket the library knows is being closed).
fn open_elsewhere(ino: u64, closing: impl Fn(c_int) -> bool) -> bool {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else { return false };
    let want = format!("socket:[{ino}]");
    dir.filter_map(Result::ok).any(|e| {
        let Some(fd) = e.file_name().to_str().and_then(|n| n.parse::<c_int>().ok()) else { return false };
        !closing(fd) && std::fs::read_link(e.path()).is_ok_and(|l| l.as_os_str() == want.as_str())
    })
}

/// Forgets an association whose control connection is gone.
pub fn drop_udp(fd: c_int) {
    let Some(ino) = inode(fd) else { return };
    with(|t| {
        if let Some(a) = t.by_inode.get_mut(&ino).and_then(|e| e.udp.take()) {
            t.internal.remove(&a.control);
        }
    });
}

/// True when `fd` is one of the library's internal descriptors.
pub fn is_internal(fd: c_int) -> bool {
    any_udp() && with(|t| t.internal.contains(&fd))
}

/// The internal descriptors, sorted.
pub fn internal_fds() -> Vec<c_int> {
    if !any_udp() {
        return Vec::new();
    }
    let mut v: Vec<c_int> = with(|t| t.internal.iter().copied().collect());
    v.sort_unstable();
    v
}

/// Moves internal descriptor `fd` to another number (the program wants that one); returns the
/// new number.
pub fn relocate_internal(fd: c_int) -> Option<c_int> {
    let new = crate::sock::dup_high(fd)?;
    with(|t| {
        t.internal.remove(&fd);
        t.internal.insert(new);
        for e in t.by_inode.values_mut() {
            if let Some(a) = e.udp.as_mut().filter(|a| a.control == fd) {
                a.control = new;
            }
        }
    });
    crate::sock::close_raw(fd);
    Some(new)
}

/// `pthread_atfork` handlers: the lock is taken before `fork()` and released on both sides, so a
/// child never inherits it held by a thread that does not exist there.
pub extern "C" fn before_fork() {
    std::mem::forget(TABLE.lock());
}

pub extern "C" fn after_fork() {
    // SAFETY: `before_fork` locked the table in this thread and leaked the guard.
    unsafe { TABLE.force_unlock() };
}
