//! Layer 3 — what the library knows about the program's descriptors. Entries are keyed by the
//! socket's inode (every descriptor of one socket shares one) and reached through the
//! descriptors that refer to it, followed through `dup`, `dup2`, `dup3`, `fcntl(F_DUPFD*)`,
//! `close`, `close_range` and `closefrom`: an entry goes when its socket's last descriptor
//! does. A reused descriptor number is never mistaken for the old socket (the inode is checked
//! on every access). Two bitmaps answer the hot paths with one atomic load: `known` (the
//! descriptor has an entry, or is the library's own) and `relayed` (its socket has a UDP
//! association). Uses `sys` only.
//!
//! Internal descriptors (control connections) are close-on-exec, live high in the descriptor
//! table, and survive the program's `close`, `close_range` and `closefrom`.

mod bits;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use libc::c_int;
use socksify_core::TargetAddr;

pub use bits::Bits;

use crate::sys::lock::ForkMutex as Mutex;
use crate::sys::sock::{self, Owned};

/// The largest RFC 1928 UDP header (a 255-byte name).
pub const MAX_HEADER: usize = 4 + 1 + 255 + 2;

/// An encoded RFC 1928 UDP header, kept whole (no allocation on the datagram path).
#[derive(Clone, Copy)]
pub struct Header {
    bytes: [u8; MAX_HEADER],
    len: u16,
}

impl Header {
    pub fn new(target: &TargetAddr) -> Result<Header, socksify_core::SocksError> {
        let mut bytes = [0u8; MAX_HEADER];
        let len = socksify_core::v5::write_udp_header(target, &mut bytes)? as u16;
        Ok(Header { bytes, len })
    }

    pub fn bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }
}

impl std::fmt::Debug for Header {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Header({:02x?})", self.bytes())
    }
}

/// How a socket the library connected to its relay looked before.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OwnLink {
    /// Its local address was the wildcard (unbound, or bound to the wildcard).
    pub wildcard: bool,
}

/// A UDP association of one of the program's sockets.
#[derive(Debug)]
pub struct Assoc {
    /// The TCP control connection: the association lives as long as it does.
    pub control: Owned,
    /// Where datagrams go, in the family of the program's socket.
    pub relay: SocketAddr,
    /// The chain (`State::chain`'s index) the association was made through.
    pub chain: usize,
    /// The peer of a `connect()`ed socket: as the program named it, as the proxy gets it, and
    /// that target's header.
    pub peer: Option<(SocketAddr, TargetAddr, Header)>,
    /// Recent destinations (as the program named them, and as sent), to name reply sources.
    pub sent: Vec<(SocketAddr, TargetAddr)>,
    /// The socket is connected to the relay: datagrams go there without an address (which the
    /// kernel guard would otherwise trap and check, one by one).
    pub on_relay: bool,
    /// The library connected it, not the program.
    pub own_link: Option<OwnLink>,
    /// A datagram is being built (MSG_MORE, UDP_CORK): its header went with its first piece,
    /// the kernel appends the next ones to it.
    pub open: bool,
}

const SENT_MEMORY: usize = 16;

impl Assoc {
    pub fn new(control: Owned, relay: SocketAddr, chain: usize) -> Assoc {
        Assoc {
            control,
            relay,
            chain,
            peer: None,
            sent: Vec::new(),
            on_relay: false,
            own_link: None,
            open: false,
        }
    }

    /// Remembers a destination of the socket's datagrams, to name the source of replies.
    pub fn note_sent(&mut self, program: SocketAddr, target: &TargetAddr) {
        if !self.sent.iter().any(|(p, _)| *p == program) {
            if self.sent.len() == SENT_MEMORY {
                self.sent.remove(0);
            }
            self.sent.push((program, target.clone()));
        }
    }
}

/// What a datagram needs of its socket's association, copied out (no lock, no allocation
/// while it is sent).
#[derive(Clone, Copy, Debug)]
pub struct Link {
    pub control: c_int,
    pub relay: SocketAddr,
    pub chain: usize,
    pub peer: Option<(SocketAddr, Header)>,
    pub on_relay: bool,
    pub own_link: Option<OwnLink>,
    pub open: bool,
    pub corked: bool,
}

/// A listening socket that became a SOCKS BIND: it is the control connection to the hop that
/// listens for the program.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bind {
    /// The chain (`State::chain`'s index) and its hop that sends the second reply.
    pub chain: usize,
    pub hop: usize,
    /// The one incoming connection was accepted already.
    pub accepted: bool,
}

/// A datagram socket whose queries to the system's nameservers the library's DNS stub answers
/// (remote DNS without the kernel guard): its replies come from the socket's own address (to
/// which a `connect()`ed one is connected) and are shown as the nameserver's.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DnsStub {
    /// The nameserver the program connected the socket to (`getpeername` answers it).
    pub peer: Option<SocketAddr>,
    /// Recent queries: their id and the nameserver asked, to name a reply's source.
    pub asked: Vec<(u16, SocketAddr)>,
}

impl DnsStub {
    /// Remembers that query `id` went to `ns`.
    pub fn note(&mut self, id: u16, ns: SocketAddr) {
        self.asked.retain(|&(i, _)| i != id);
        if self.asked.len() == SENT_MEMORY {
            self.asked.remove(0);
        }
        self.asked.push((id, ns));
    }

    /// The nameserver a reply with `id` is shown from.
    pub fn source_of(&self, id: Option<u16>) -> Option<SocketAddr> {
        let by_id = id.and_then(|id| self.asked.iter().rev().find(|(i, _)| *i == id));
        by_id.or(self.asked.last()).map(|(_, ns)| *ns).or(self.peer)
    }
}

/// What the library knows of one socket.
/// A connect through the chain that runs in the background (a non-blocking socket's, or a
/// blocking one's after a signal or its SO_SNDTIMEO): until it ends, the socket is hidden from
/// the program's waits and its data calls say EAGAIN.
#[derive(Debug)]
pub struct Pending {
    /// An eventfd of the library's own, readable once the handshake has ended: what the
    /// program's `poll`/`select` wait on in place of the socket.
    pub done: Owned,
    pub outcome: Outcome,
    /// The process whose thread runs the handshake: a child forked meanwhile only learns that
    /// it ended (its `done` turns readable), and then leaves the socket to the kernel.
    pub pid: c_int,
    /// The chain dropped the socket's connection once to try again: the hang-up the program
    /// may have seen then says nothing (`pending::so_error`).
    pub restarted: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Running,
    /// The chain failed with this errno, which `SO_ERROR` (or the next connect) reports once.
    Failed(c_int),
    /// Connected, or a failure already reported.
    Over,
}

#[derive(Default, Debug)]
pub struct Entry {
    pub pending: Option<Pending>,
    /// The peer as the program named it (TCP through the chain, or a BIND's incoming peer).
    pub tcp_peer: Option<SocketAddr>,
    /// The destination sent to the proxy, and when (for a BIND's expected peer).
    pub tcp_target: Option<(u64, TargetAddr)>,
    /// What `getsockname` answers: the proxy's side of the connection.
    pub local: Option<SocketAddr>,
    /// An address the program bound to that is the proxy's, not this host's.
    pub virtual_bind: Option<SocketAddr>,
    pub bind: Option<Bind>,
    pub udp: Option<Assoc>,
    /// UDP_CORK as the program set it.
    pub udp_cork: bool,
    /// Bound by the program to the wildcard address at a port it chose (a server).
    pub server_port: bool,
    /// Queries to the system's nameservers answered by the library's DNS stub.
    pub dns: Option<DnsStub>,
}

impl Entry {
    /// The peer the program connected to, if the library proxied it (TCP or UDP).
    pub fn peer(&self) -> Option<SocketAddr> {
        self.tcp_peer
            .or_else(|| self.udp.as_ref()?.peer.as_ref().map(|p| p.0))
            .or_else(|| self.dns.as_ref()?.peer)
    }

    /// Its datagrams need the hooks (the `relayed` bit): a UDP association or the DNS stub.
    fn gated(&self) -> bool {
        self.udp.is_some() || self.dns.is_some()
    }

    pub fn link(&self) -> Option<Link> {
        let a = self.udp.as_ref()?;
        Some(Link {
            control: a.control.raw(),
            relay: a.relay,
            chain: a.chain,
            peer: a.peer.as_ref().map(|(p, _, h)| (*p, *h)),
            on_relay: a.on_relay,
            own_link: a.own_link,
            open: a.open,
            corked: self.udp_cork,
        })
    }
}

#[derive(Default)]
struct Table {
    by_inode: HashMap<u64, Entry>,
    /// The program's descriptors that refer to an entry, and the entry's inode.
    by_fd: HashMap<c_int, u64>,
    /// The library's own descriptors (control connections).
    internal: HashSet<c_int>,
    /// When `by_fd` reaches this size, descriptors closed behind the library's back are swept.
    sweep_at: usize,
}

static TABLE: Mutex<Option<Table>> = Mutex::new(None);
const SWEEP_MIN: usize = 64;
static KNOWN: Bits = Bits::new();
static RELAYED: Bits = Bits::new();
/// Datagram sockets the library has seen send direct (and never to the kernel guard's DNS
/// stub): their `recvfrom`s have no source for the guard to rewrite. Follows dup and close;
/// a socket the library has not seen so (inherited across exec, made by raw system calls)
/// takes the guard's path.
static DIRECT: Bits = Bits::new();
/// Datagram sockets the library has seen send to the guard's DNS stub: never direct again.
static STUB: Bits = Bits::new();
/// What the library learnt of a socket when the program made it (`note_kind`): one byte per
/// descriptor number, following dup and close as the bits above do.
static KINDS: Kinds = Kinds::new();
static SEQ: AtomicU64 = AtomicU64::new(0);
/// How many handshakes run in the background: the waiting calls look further only when some do.
static RUNNING: AtomicUsize = AtomicUsize::new(0);

fn with<T>(f: impl FnOnce(&mut Table) -> T) -> T {
    let mut guard = TABLE.lock();
    f(guard.get_or_insert_with(|| Table { sweep_at: SWEEP_MIN, ..Table::default() }))
}

/// True when socksify may know `fd` (an entry's descriptor, or one of its own): one atomic load.
pub fn known(fd: c_int) -> bool {
    KNOWN.get(fd)
}

/// True when `fd`'s socket may have a UDP association: one atomic load.
pub fn relayed(fd: c_int) -> bool {
    RELAYED.get(fd)
}

/// True when the library saw `fd` send direct and never to the guard's DNS stub.
pub fn direct(fd: c_int) -> bool {
    // Beyond the bitmaps a bit means "some descriptor up there": not knowledge of this one.
    (0..65_536).contains(&fd) && DIRECT.get(fd) && !STUB.get(fd)
}

/// `fd` sent direct (`true`), or to the guard's DNS stub (`false`, for good).
pub fn mark_direct(fd: c_int, direct: bool) {
    if direct {
        DIRECT.set(fd);
    } else {
        STUB.set(fd);
    }
}

/// `new` is now a duplicate of `old` (dup, dup2, dup3, F_DUPFD): it has the same DIRECT and STUB
/// bits and kind, whatever the table knows of either. Three atomic operations: every dup pays
/// them.
pub fn follow_bits(old: c_int, new: c_int) {
    if new >= 0 && old != new {
        copy_bit(&DIRECT, old, new);
        copy_bit(&STUB, old, new);
        KINDS.copy(old, new);
    }
}

/// `fd` is closed: it is nobody's DIRECT or STUB socket any more, and of no kind.
pub fn forget_bits(fd: c_int) {
    DIRECT.clear(fd);
    STUB.clear(fd);
    KINDS.clear(fd);
}

/// An internet socket as the program made it: what a connect needs to know of it, without
/// asking the kernel again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Kind {
    /// AF_INET or AF_INET6.
    pub family: c_int,
    /// SOCK_STREAM or SOCK_DGRAM.
    pub ty: c_int,
    /// No SO_SNDTIMEO set since (through the library's `setsockopt`).
    pub no_send_timeout: bool,
}

/// The program made socket `fd` with `socket(domain, ty, _)`: internet stream and datagram
/// sockets are remembered, anything else is forgotten.
///
/// What is remembered is only ever a shortcut for an internet socket's own path (connect,
/// datagrams): a number closed and reused behind the library's back (raw system calls) can
/// make it wrong, and then that call fails or takes the slower path — never the gate or an
/// unproxied call, which only an answer of the kernel's allows (`gated::is_local`,
/// `kind_confirmed`).
pub fn note_kind(fd: c_int, domain: c_int, ty: c_int) {
    KINDS.set(fd, domain, ty & !(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC));
}

/// True unless `note_kind`'s type for `fd` is not what the kernel says now (a number reused
/// behind the library's back): asked of the kernel only where a call is about to go unproxied
/// or through the gate on the strength of that type.
pub fn kind_confirmed(fd: c_int) -> bool {
    match kind(fd) {
        Some(k) => socket_type(fd, |_| true) == Some(k.ty),
        None => true,
    }
}

/// The type of socket `fd`: what its socket() said (`note_kind`), else the kernel's answer —
/// the kernel's too when `exact(type)` says the call would go unproxied on the strength of
/// that type (a remembered kind that turns out wrong is forgotten).
pub fn socket_type(fd: c_int, exact: impl FnOnce(c_int) -> bool) -> Option<c_int> {
    match kind(fd) {
        Some(k) if exact(k.ty) => {
            let ty = sock::socket_type(fd);
            if ty != Some(k.ty) {
                forget_bits(fd);
            }
            ty
        }
        Some(k) => Some(k.ty),
        None => sock::socket_type(fd),
    }
}

/// What `note_kind` remembered of `fd`.
pub fn kind(fd: c_int) -> Option<Kind> {
    KINDS.get(fd)
}

/// The program set a socket option of `fd`: a send timeout ends what its kind says of it.
pub fn option_set(fd: c_int, level: c_int, name: c_int) {
    if level == libc::SOL_SOCKET && matches!(name, libc::SO_SNDTIMEO | SO_SNDTIMEO_NEW) {
        KINDS.timeout_set(fd);
    }
}

/// SO_SNDTIMEO with a 64-bit time (asm-generic's SO_SNDTIMEO_NEW).
const SO_SNDTIMEO_NEW: c_int = 67;

/// One byte a descriptor number below `bits::BITS`: 0 for nothing known; else VALID, the family
/// and type codes, and NO_TIMEOUT.
struct Kinds {
    bytes: [std::sync::atomic::AtomicU8; KIND_SLOTS],
}

const KIND_SLOTS: usize = 65536;
const VALID: u8 = 0x80;
const INET6: u8 = 0x01;
const DGRAM: u8 = 0x02;
const NO_TIMEOUT: u8 = 0x04;

impl Kinds {
    const fn new() -> Kinds {
        #[allow(clippy::declare_interior_mutable_const)]
        const ZERO: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);
        Kinds { bytes: [ZERO; KIND_SLOTS] }
    }

    fn slot(&self, fd: c_int) -> Option<&std::sync::atomic::AtomicU8> {
        usize::try_from(fd).ok().and_then(|i| self.bytes.get(i))
    }

    fn set(&self, fd: c_int, domain: c_int, ty: c_int) {
        let code = match (domain, ty) {
            (libc::AF_INET | libc::AF_INET6, libc::SOCK_STREAM | libc::SOCK_DGRAM) => {
                let v6 = if domain == libc::AF_INET6 { INET6 } else { 0 };
                let dgram = if ty == libc::SOCK_DGRAM { DGRAM } else { 0 };
                VALID | v6 | dgram | NO_TIMEOUT
            }
            _ => 0,
        };
        if let Some(b) = self.slot(fd) {
            b.store(code, Ordering::Release);
        }
    }

    fn get(&self, fd: c_int) -> Option<Kind> {
        let code = self.slot(fd)?.load(Ordering::Acquire);
        (code & VALID != 0).then_some(Kind {
            family: if code & INET6 != 0 { libc::AF_INET6 } else { libc::AF_INET },
            ty: if code & DGRAM != 0 { libc::SOCK_DGRAM } else { libc::SOCK_STREAM },
            no_send_timeout: code & NO_TIMEOUT != 0,
        })
    }

    fn clear(&self, fd: c_int) {
        if let Some(b) = self.slot(fd) {
            b.store(0, Ordering::Release);
        }
    }

    fn clear_range(&self, first: c_int, last: c_int) {
        let lo = first.max(0) as usize;
        let hi = (i64::from(last) + 1).clamp(0, KIND_SLOTS as i64) as usize;
        for b in self.bytes.get(lo..hi.max(lo)).unwrap_or_default() {
            b.store(0, Ordering::Release);
        }
    }

    /// `new` duplicates `old`. A socket with two descriptors may get a send timeout through
    /// either: neither says "no timeout" any more (the kernel is asked).
    fn copy(&self, old: c_int, new: c_int) {
        let code = self.slot(old).map_or(0, |b| b.fetch_and(!NO_TIMEOUT, Ordering::AcqRel)) & !NO_TIMEOUT;
        if let Some(b) = self.slot(new) {
            b.store(code, Ordering::Release);
        }
    }

    fn timeout_set(&self, fd: c_int) {
        if let Some(b) = self.slot(fd) {
            b.fetch_and(!NO_TIMEOUT, Ordering::AcqRel);
        }
    }
}

fn copy_bit(bits: &Bits, old: c_int, new: c_int) {
    if bits.get(old) {
        bits.set(new);
    } else {
        bits.clear(new);
    }
}

impl Table {
    /// The inode `fd` refers to, if it is still the socket the table knows by that number; a
    /// number that was closed behind the library's back (and maybe reused) is forgotten.
    fn inode_of(&mut self, fd: c_int) -> Option<u64> {
        let ino = *self.by_fd.get(&fd)?;
        if sock::inode(fd) == Some(ino) {
            return Some(ino);
        }
        self.unmap(fd);
        None
    }

    fn map(&mut self, fd: c_int, ino: u64) {
        self.by_fd.insert(fd, ino);
        KNOWN.set(fd);
        if self.by_inode.get(&ino).is_some_and(Entry::gated) {
            RELAYED.set(fd);
        }
    }

    /// Forgets descriptor `fd`; the entry goes with its last descriptor (and with it a control
    /// connection, closed).
    fn unmap(&mut self, fd: c_int) {
        KNOWN.clear(fd);
        RELAYED.clear(fd);
        let Some(ino) = self.by_fd.remove(&fd) else { return };
        if !self.by_fd.values().any(|&i| i == ino) {
            if let Some(e) = self.by_inode.remove(&ino) {
                if let Some(a) = &e.udp {
                    self.internal.remove(&a.control.raw());
                    KNOWN.clear(a.control.raw());
                }
                if let Some(p) = &e.pending {
                    self.internal.remove(&p.done.raw());
                    KNOWN.clear(p.done.raw());
                    if p.outcome == Outcome::Running {
                        RUNNING.fetch_sub(1, Ordering::AcqRel);
                    }
                }
            }
        }
    }

    /// Before a new record: forgets descriptors that were closed without a `close()` the hooks
    /// saw (`fclose`, `fdclose` and glibc's other internal closes) or that now name another
    /// file. Associations are few and hold a control connection (and the proxy's relay), so
    /// theirs are checked every time; the rest when the table has doubled since the last sweep,
    /// so that records never pile up and the cost per record stays constant.
    fn sweep(&mut self) {
        let full = self.by_fd.len() >= self.sweep_at;
        let stale: Vec<c_int> = self
            .by_fd
            .iter()
            .filter(|(_, ino)| full || self.by_inode.get(ino).is_some_and(|e| e.udp.is_some()))
            .filter(|(&fd, &ino)| sock::inode(fd) != Some(ino))
            .map(|(&fd, _)| fd)
            .collect();
        for fd in stale {
            self.unmap(fd);
        }
        if full {
            self.sweep_at = (self.by_fd.len() * 2).max(SWEEP_MIN);
        }
    }

    fn fds_of(&self, ino: u64) -> Vec<c_int> {
        self.by_fd.iter().filter(|(_, &i)| i == ino).map(|(&fd, _)| fd).collect()
    }
}

/// `f` on `fd`'s entry, if the library has one.
pub fn entry<T>(fd: c_int, f: impl FnOnce(&mut Entry) -> T) -> Option<T> {
    if !known(fd) {
        return None;
    }
    with(|t| {
        let ino = t.inode_of(fd)?;
        t.by_inode.get_mut(&ino).map(f)
    })
}

/// `f` on `fd`'s entry, made now if there is none.
pub fn entry_or_new<T>(fd: c_int, f: impl FnOnce(&mut Entry) -> T) -> Option<T> {
    let ino = sock::inode(fd)?;
    Some(with(|t| {
        if t.by_fd.get(&fd) != Some(&ino) {
            if t.by_fd.contains_key(&fd) {
                t.unmap(fd); // a reused number: the old socket's record goes
            }
            t.sweep();
            t.map(fd, ino);
        }
        let r = f(t.by_inode.entry(ino).or_default());
        if t.by_inode.get(&ino).is_some_and(Entry::gated) {
            for d in t.fds_of(ino) {
                RELAYED.set(d);
            }
        }
        r
    }))
}

/// True when some handshake runs in the background: one atomic load.
pub fn any_running() -> bool {
    RUNNING.load(Ordering::Acquire) > 0
}

/// Records that `fd`'s handshake runs in the background, done when `done` is readable; the
/// socket's data calls then ask the table (as for a UDP association). Returns its inode.
pub fn begin_pending(fd: c_int, done: Owned) -> Option<u64> {
    let ino = sock::inode(fd)?;
    with(|t| {
        if t.by_fd.get(&fd) != Some(&ino) {
            if t.by_fd.contains_key(&fd) {
                t.unmap(fd);
            }
            t.sweep();
            t.map(fd, ino);
        }
        t.internal.insert(done.raw());
        KNOWN.set(done.raw());
        t.by_inode.entry(ino).or_default().pending =
            Some(Pending { done, outcome: Outcome::Running, pid: crate::sys::pid(), restarted: false });
        for d in t.fds_of(ino) {
            RELAYED.set(d);
        }
        RUNNING.fetch_add(1, Ordering::AcqRel);
    });
    Some(ino)
}

/// The background handshake of the socket `ino` ended with `outcome` (`f` records what a
/// success brings); returns its descriptors' numbers (none if the program closed them all).
pub fn end_pending(ino: u64, outcome: Outcome, f: impl FnOnce(&mut Entry)) -> Vec<c_int> {
    with(|t| {
        let fds = t.fds_of(ino);
        // Gone (the program closed every descriptor): forgetting it counted it out already.
        let Some(e) = t.by_inode.get_mut(&ino) else { return fds };
        if let Some(p) = e.pending.as_mut().filter(|p| p.outcome == Outcome::Running) {
            p.outcome = outcome;
            RUNNING.fetch_sub(1, Ordering::AcqRel);
        }
        f(e);
        if e.udp.is_none() {
            for &d in &fds {
                RELAYED.clear(d);
            }
            // Failures stay marked until reported (SO_ERROR, connect, a data call).
            if matches!(outcome, Outcome::Failed(_)) {
                fds.iter().for_each(|&d| RELAYED.set(d));
            }
        }
        fds
    })
}

/// `f` on the entry of the socket `ino`, if the table still has it.
pub fn entry_by_inode<T>(ino: u64, f: impl FnOnce(&mut Entry) -> T) -> Option<T> {
    with(|t| t.by_inode.get_mut(&ino).map(f))
}

/// `fd`'s background handshake: its outcome so far and its `done` eventfd.
pub fn pending(fd: c_int) -> Option<(Outcome, c_int)> {
    if !known(fd) {
        return None;
    }
    entry(fd, |e| {
        let p = e.pending.as_mut()?;
        if p.outcome == Outcome::Running
            && p.pid != crate::sys::pid()
            && sock::ready_now(p.done.raw(), libc::POLLIN) & libc::POLLIN != 0
        {
            // Forked while the handshake ran, and the parent's thread is done: whatever came of
            // it is the socket's state now, which the kernel tells.
            p.outcome = Outcome::Over;
            RUNNING.fetch_sub(1, Ordering::AcqRel);
        }
        Some((p.outcome, p.done.raw()))
    })
    .flatten()
}

/// The chain of a running handshake is about to drop the connection and try again (`fd`: any
/// descriptor of the socket, the worker's own included).
pub fn mark_restarted(fd: c_int) {
    let Some(ino) = sock::inode(fd) else { return };
    entry_by_inode(ino, |e| {
        if let Some(p) = e.pending.as_mut() {
            p.restarted = true;
        }
    });
}

/// True when `fd`'s running handshake dropped its connection once to try again.
pub fn restarted(fd: c_int) -> bool {
    entry(fd, |e| e.pending.as_ref().is_some_and(|p| p.restarted)).unwrap_or(false)
}

/// Takes `fd`'s failure, to report it once.
pub fn take_failure(fd: c_int) -> Option<c_int> {
    entry(fd, |e| {
        let p = e.pending.as_mut()?;
        match p.outcome {
            Outcome::Failed(errno) => {
                p.outcome = Outcome::Over;
                Some(errno)
            }
            _ => None,
        }
    })
    .flatten()
}

/// The next sequence number for a proxied connection (the latest one names a BIND's peer).
pub fn next_seq() -> u64 {
    SEQ.fetch_add(1, Ordering::Relaxed)
}

/// The destination of the most recent proxied connection still open.
pub fn latest_target() -> Option<TargetAddr> {
    with(|t| {
        t.by_inode
            .values()
            .filter_map(|e| e.tcp_target.as_ref())
            .max_by_key(|(seq, _)| *seq)
            .map(|(_, t)| t.clone())
    })
}

/// The association of `fd`, copied out for one datagram.
pub fn link(fd: c_int) -> Option<Link> {
    if !relayed(fd) {
        return None;
    }
    entry(fd, |e| e.link()).flatten()
}

/// `f` on `fd`'s association, if it has one.
pub fn assoc<T>(fd: c_int, f: impl FnOnce(&mut Assoc) -> T) -> Option<T> {
    if !relayed(fd) {
        return None;
    }
    entry(fd, |e| e.udp.as_mut().map(f)).flatten()
}

/// Records a new association for `fd` and returns its link — or, if another thread was quicker,
/// that one's (and `assoc` is dropped, its control connection closed).
pub fn insert_assoc(fd: c_int, assoc: Assoc) -> Option<Link> {
    let ino = sock::inode(fd)?;
    let control = assoc.control.raw();
    with(|t| {
        t.sweep();
        if t.by_fd.get(&fd) != Some(&ino) {
            if t.by_fd.contains_key(&fd) {
                t.unmap(fd);
            }
            t.map(fd, ino);
        }
        let e = t.by_inode.entry(ino).or_default();
        if e.udp.is_none() {
            e.udp = Some(assoc);
            t.internal.insert(control);
            KNOWN.set(control);
        }
        for d in t.fds_of(ino) {
            RELAYED.set(d);
        }
        t.by_inode.get(&ino).and_then(Entry::link)
    })
}

/// Dissolves `fd`'s association (its control connection is closed).
pub fn drop_assoc(fd: c_int) {
    with(|t| {
        let Some(ino) = t.inode_of(fd) else { return };
        if let Some(a) = t.by_inode.get_mut(&ino).and_then(|e| e.udp.take()) {
            t.internal.remove(&a.control.raw());
            KNOWN.clear(a.control.raw());
        }
        if t.by_inode.get(&ino).is_some_and(Entry::gated) {
            return;
        }
        for d in t.fds_of(ino) {
            RELAYED.clear(d);
        }
    });
}

/// `new` is a duplicate of `old` (dup, dup2, dup3, F_DUPFD): it shares `old`'s entry.
pub fn duplicated(old: c_int, new: c_int) {
    if !known(old) || old == new {
        return;
    }
    with(|t| {
        if let Some(ino) = t.inode_of(old) {
            if t.by_fd.contains_key(&new) {
                t.unmap(new);
            }
            t.map(new, ino);
        }
    });
}

/// What closing descriptor `fd` means for the library.
#[derive(Debug, PartialEq, Eq)]
pub enum Closing {
    /// One of the library's own: the program closes a number it never opened; it stays open.
    Internal,
    /// The program's: whatever the table knew of it is forgotten (the real close follows).
    Program,
}

/// The program closes (or replaces, with dup2/dup3) descriptor `fd`.
pub fn closing(fd: c_int) -> Closing {
    DIRECT.clear(fd);
    STUB.clear(fd);
    KINDS.clear(fd);
    if !known(fd) {
        return Closing::Program;
    }
    with(|t| {
        if t.internal.contains(&fd) {
            return Closing::Internal;
        }
        t.unmap(fd);
        Closing::Program
    })
}

/// The program closes descriptors `first..=last` together: they are forgotten; returns the
/// library's own descriptors in the range (to be kept open).
pub fn closing_range(first: c_int, last: c_int) -> Vec<c_int> {
    DIRECT.clear_range(first, last);
    STUB.clear_range(first, last);
    KINDS.clear_range(first, last);
    with(|t| {
        let gone: Vec<c_int> = t.by_fd.keys().copied().filter(|fd| (first..=last).contains(fd)).collect();
        for fd in gone {
            t.unmap(fd);
        }
        let mut keep: Vec<c_int> =
            t.internal.iter().copied().filter(|fd| (first..=last).contains(fd)).collect();
        keep.sort_unstable();
        keep
    })
}

/// The library's own descriptors, sorted.
pub fn internal_fds() -> Vec<c_int> {
    let mut v: Vec<c_int> = with(|t| t.internal.iter().copied().collect());
    v.sort_unstable();
    v
}

/// True when `fd` is one of the library's own descriptors.
pub fn is_internal(fd: c_int) -> bool {
    known(fd) && with(|t| t.internal.contains(&fd))
}

/// Records `fd` as one of the library's own (its log's descriptor): the program's close,
/// close_range and closefrom leave it open.
pub fn own(fd: c_int) {
    with(|t| {
        t.internal.insert(fd);
        KNOWN.set(fd);
    });
}

/// `fd` is no longer one of the library's own (its owner is about to close it).
pub fn disown(fd: c_int) {
    with(|t| {
        if t.internal.remove(&fd) {
            KNOWN.clear(fd);
        }
    });
}

/// `fd`, one of the library's own, was moved to `new` by its owner.
pub fn moved_internal(fd: c_int, new: c_int) {
    with(|t| {
        if t.internal.remove(&fd) {
            KNOWN.clear(fd);
            t.internal.insert(new);
            KNOWN.set(new);
        }
    });
}

/// Moves the library's descriptor `fd` to another number (the program wants this one).
pub fn relocate_internal(fd: c_int) {
    with(|t| {
        if !t.internal.remove(&fd) {
            return;
        }
        KNOWN.clear(fd);
        for e in t.by_inode.values_mut() {
            if let Some(a) = e.udp.as_mut().filter(|a| a.control.raw() == fd) {
                a.control.relocate();
                t.internal.insert(a.control.raw());
                KNOWN.set(a.control.raw());
            }
            if let Some(p) = e.pending.as_mut().filter(|p| p.done.raw() == fd) {
                p.done.relocate();
                t.internal.insert(p.done.raw());
                KNOWN.set(p.done.raw());
            }
        }
    });
}

/// Fork handlers (called by `ops::pending`'s, which take the epoll registrations' lock first):
/// the lock is taken before `fork()` and released on both sides, so a child never inherits it
/// held by a thread that does not exist there.
pub extern "C" fn before_fork() {
    std::mem::forget(TABLE.lock());
}

pub extern "C" fn after_fork() {
    // SAFETY: `before_fork` locked the table in this thread and leaked the guard.
    unsafe { TABLE.force_unlock() };
}

#[cfg(test)]
mod tests;
