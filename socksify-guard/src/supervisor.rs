//! The supervisor: it receives every trapped call of the program's process tree, decides
//! (`policy`), acts on the program's behalf on its own sockets (`calls`), and answers.
//!
//! Threads take turns (leader/followers): every idle thread waits in the listener's receive;
//! the one that gets a call handles it to the end, on the CPU the kernel woke it on (with the
//! synchronous wake-up a trap then costs a few microseconds, and no hand-off adds another).
//! Before a call that may wait — a proxy handshake, a blocking connect, a BIND's second reply —
//! the thread makes sure another one is receiving, starting one if none is idle, so that no
//! slow proxy ever holds up another call.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use socksify_core::{Chain, TargetAddr};

use crate::log::Log;
use crate::notif::{Listener, Notif, Reply};
use crate::policy::Policy;
use crate::stub::Stubs;
use crate::sys;

/// How a call ended up.
pub enum Outcome {
    Reply(Reply),
    /// To finish on a worker thread.
    Slow(Job),
    /// Answered already (ADDFD with SEND), or the caller is gone.
    Done,
}

pub type Job = Box<dyn FnOnce(&Supervisor) -> Outcome + Send>;

pub fn reply(r: Reply) -> Outcome {
    Outcome::Reply(r)
}

pub fn errno_reply(e: i32) -> Outcome {
    Outcome::Reply(Reply::Error(e))
}

/// What the supervisor knows about a socket it acted on, by inode (the same for every
/// descriptor and process sharing the socket).
#[derive(Default, Clone, Debug)]
pub struct Entry {
    /// What `getpeername` answers: the address the program connected to.
    pub peer: Option<SocketAddr>,
    /// What `getsockname` answers: the proxy's side (BIND: where the proxy listens).
    pub local: Option<SocketAddr>,
    /// A socket whose queries went to the stub: replies from it are shown as from `shown`.
    pub dns: Option<DnsMark>,
    pub bind: Option<BindMark>,
    /// A proxied connect is under way (another connect: EALREADY; getpeername: ENOTCONN).
    pub connecting: bool,
    /// A Go program's proxied connect, answered `EINPROGRESS` at once and run in the
    /// background: its `getsockopt(SO_ERROR)` answers from this.
    pub handshake: Option<Arc<Handshake>>,
}

/// The end of a background handshake: 0, or the errno the connect failed with.
#[derive(Default, Debug)]
pub struct Handshake {
    done: Mutex<Option<i32>>,
}

impl Handshake {
    pub fn finish(&self, errno: i32) {
        *self.done.lock().unwrap_or_else(|p| p.into_inner()) = Some(errno);
    }

    /// The end, if it has come.
    pub fn result(&self) -> Option<i32> {
        *self.done.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[derive(Clone, Copy, Debug)]
pub struct DnsMark {
    pub ns: usize,
    pub shown: SocketAddr,
    /// None: for as long as the socket lives (a connected resolver socket).
    pub until: Option<Instant>,
}

#[derive(Clone, Copy, Debug)]
pub struct BindMark {
    /// The chain (the supervisor's index) and the hop of it that listens.
    pub chain: usize,
    pub hop: usize,
    pub accepted: bool,
}

/// A resolver's socket keeps its mark this long after its last query.
pub const DNS_MARK: Duration = Duration::from_secs(60);
const MAX_ENTRIES: usize = 65_536;

#[derive(Default)]
pub struct Table {
    sockets: HashMap<u64, Entry>,
    order: VecDeque<u64>,
    /// The latest target each process reached through the guard (the BIND's expected peer).
    proxied: HashMap<libc::pid_t, TargetAddr>,
}

impl Table {
    pub fn get(&self, inode: u64) -> Option<&Entry> {
        self.sockets.get(&inode)
    }

    pub fn update(&mut self, inode: u64, f: impl FnOnce(&mut Entry)) {
        if !self.sockets.contains_key(&inode) {
            if self.order.len() >= MAX_ENTRIES {
                // The oldest entry goes, unless a handshake still runs on it (its connect's
                // answers depend on it): those go to the back, a few at most are skipped.
                for _ in 0..64 {
                    let Some(old) = self.order.pop_front() else { break };
                    if self.sockets.get(&old).is_some_and(|e| e.connecting || e.handshake.is_some()) {
                        self.order.push_back(old);
                        continue;
                    }
                    self.sockets.remove(&old);
                    break;
                }
            }
            self.order.push_back(inode);
        }
        f(self.sockets.entry(inode).or_default());
    }

    /// Forgets a socket that is connected elsewhere now.
    pub fn forget(&mut self, inode: u64) {
        if let Some(e) = self.sockets.get_mut(&inode) {
            *e = Entry { bind: e.bind, ..Entry::default() };
        }
    }

    pub fn note_proxied(&mut self, tgid: libc::pid_t, target: TargetAddr) {
        if self.proxied.len() >= MAX_ENTRIES {
            self.proxied.clear();
        }
        self.proxied.insert(tgid, target);
    }

    pub fn proxied_by(&self, tgid: libc::pid_t) -> Option<&TargetAddr> {
        self.proxied.get(&tgid)
    }
}

pub struct Supervisor {
    pub listener: Listener,
    pub policy: Arc<Policy>,
    /// Every chain, by `Route::Proxy`'s index (the default one first).
    pub chains: Vec<Chain>,
    pub log: Arc<Log>,
    /// The DNS stub, started at the first query (most programs send none).
    stubs: OnceLock<Option<Stubs>>,
    table: Mutex<Table>,
    /// Entries in the table: calls that only matter for known sockets skip all work at 0.
    entries: AtomicUsize,
    dns_sockets: AtomicUsize,
    /// pidfds of the threads that made calls, and their processes, kept for their next calls.
    threads: Mutex<HashMap<libc::pid_t, ThreadRef>>,
    idle: AtomicUsize,
    workers: AtomicUsize,
    /// The filter traps `getsockopt(SO_ERROR)` (`bpf::Filter::go`).
    so_error_trapped: bool,
    /// Which executables (device, inode, modification and change times) are Go programs, as
    /// seen once.
    go: Mutex<HashMap<(u64, u64, i64, i64), bool>>,
    /// The process the program's tree descends from: 0 when the supervisor is its subreaper
    /// (the three-process launch), else the program's first process (the detached one), or -1
    /// once that has ended (its pid may name an unrelated process from then on).
    pub tree_root: std::sync::atomic::AtomicI32,
}

/// A thread of the program: a pidfd for it, and its process (looked up once).
#[derive(Clone)]
pub struct ThreadRef {
    pub pidfd: Arc<OwnedFd>,
    tgid: Option<libc::pid_t>,
}

const MAX_THREADS_KNOWN: usize = 4096;
const MAX_WORKERS: usize = 8192;
const MAX_IDLE: usize = 2;

impl Supervisor {
    pub fn new(listener: Listener, policy: Arc<Policy>, chains: Vec<Chain>, log: Log) -> Supervisor {
        Supervisor {
            listener,
            policy,
            chains,
            log: Arc::new(log),
            stubs: OnceLock::new(),
            table: Mutex::new(Table::default()),
            entries: AtomicUsize::new(0),
            dns_sockets: AtomicUsize::new(0),
            threads: Mutex::new(HashMap::new()),
            idle: AtomicUsize::new(0),
            workers: AtomicUsize::new(0),
            so_error_trapped: false,
            go: Mutex::new(HashMap::new()),
            tree_root: std::sync::atomic::AtomicI32::new(0),
        }
    }

    /// True when process `tgid` runs a Go program (its executable, inspected once): Go's
    /// runtime confirms every non-blocking connect with `getsockopt(SO_ERROR)` before it uses
    /// the socket, so its connects can be answered at once and finished in the background.
    pub fn is_go(&self, tgid: libc::pid_t) -> bool {
        use std::os::unix::fs::MetadataExt;
        if !self.so_error_trapped {
            return false; // no call to wait in: every connect ends with its handshake
        }
        let exe = format!("/proc/{tgid}/exe");
        let Ok(meta) = std::fs::metadata(&exe) else { return false };
        let key = (
            meta.dev(),
            meta.ino(),
            meta.mtime_nsec() + meta.mtime() * 1_000_000_000,
            meta.ctime_nsec() + meta.ctime() * 1_000_000_000,
        );
        if let Some(&go) = self.go.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
            return go;
        }
        let go = matches!(crate::elf::inspect(std::path::Path::new(&exe)), crate::elf::Kind::Go { .. });
        let mut known = self.go.lock().unwrap_or_else(|p| p.into_inner());
        if known.len() >= 256 {
            known.clear();
        }
        known.insert(key, go);
        go
    }

    /// A supervisor whose filter traps `getsockopt(SO_ERROR)` when `go`.
    pub fn with_go(mut self, go: bool) -> Supervisor {
        self.so_error_trapped = go;
        self
    }

    /// A supervisor that is not the program's ancestor: its tree descends from `root`.
    pub fn below(self, root: libc::pid_t) -> Supervisor {
        self.tree_root.store(root, Ordering::Release);
        self
    }

    /// Chain `i` (`Route::Proxy`'s index; the default chain for one out of range).
    pub fn chain(&self, i: usize) -> &Chain {
        self.chains.get(i).unwrap_or(&self.chains[0])
    }

    /// The DNS stub (one server per system nameserver), started on first use; `None` (logged)
    /// when it cannot be.
    pub fn stubs(&self, tid: libc::pid_t) -> Option<&Stubs> {
        self.stubs
            .get_or_init(|| {
                match Stubs::start(self.policy.nameservers.len(), self.policy.clone(), self.log.clone()) {
                    Ok(s) => Some(s),
                    Err(e) => {
                        self.log.error(tid, format_args!("cannot start the DNS stub: {e}; DNS queries fail"));
                        None
                    }
                }
            })
            .as_ref()
    }

    /// A pidfd for thread `tid` (kept: a dead thread's pidfd never works for a new thread of
    /// the same number, so a stale one only costs a retry).
    pub fn thread(&self, tid: libc::pid_t, fresh: bool) -> std::io::Result<ThreadRef> {
        let mut known = self.threads.lock().unwrap_or_else(|p| p.into_inner());
        if !fresh {
            if let Some(t) = known.get(&tid) {
                return Ok(t.clone());
            }
        }
        let t = ThreadRef { pidfd: Arc::new(sys::pidfd_open(tid)?), tgid: None };
        if known.len() >= MAX_THREADS_KNOWN {
            known.clear();
        }
        known.insert(tid, t.clone());
        Ok(t)
    }

    /// The process of thread `tid` (from /proc once, then remembered).
    pub fn tgid(&self, tid: libc::pid_t) -> libc::pid_t {
        if let Some(Some(t)) =
            self.threads.lock().unwrap_or_else(|p| p.into_inner()).get(&tid).map(|t| t.tgid)
        {
            return t;
        }
        let tgid = sys::tgid_of(tid).unwrap_or(tid);
        if let Some(t) = self.threads.lock().unwrap_or_else(|p| p.into_inner()).get_mut(&tid) {
            t.tgid = Some(tgid);
        }
        tgid
    }

    pub fn any_entries(&self) -> bool {
        self.entries.load(Ordering::Acquire) != 0
    }

    pub fn any_dns_sockets(&self) -> bool {
        self.dns_sockets.load(Ordering::Acquire) != 0
    }

    pub fn with_table<T>(&self, f: impl FnOnce(&mut Table) -> T) -> T {
        let mut t = self.table.lock().unwrap_or_else(|p| p.into_inner());
        let r = f(&mut t);
        self.entries.store(t.sockets.len(), Ordering::Release);
        let dns = t.sockets.values().filter(|e| e.dns.is_some()).count();
        self.dns_sockets.store(dns, Ordering::Release);
        r
    }

    /// Serves calls on this thread (the first receiving thread: more start when calls wait).
    pub fn run(self: Arc<Self>) {
        self.workers.fetch_add(1, Ordering::AcqRel);
        self.serve();
    }

    fn spawn_worker(self: &Arc<Self>) {
        if self.workers.fetch_add(1, Ordering::AcqRel) >= MAX_WORKERS {
            self.workers.fetch_sub(1, Ordering::AcqRel);
            return;
        }
        let sup = self.clone();
        let spawned = std::thread::Builder::new()
            .name("guard".into())
            .stack_size(256 * 1024)
            .spawn(move || sup.serve());
        if spawned.is_err() {
            self.workers.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// One receiving thread: takes a call, handles it to the end, and waits again — or leaves
    /// when enough others wait. The process ends when the program's tree is gone.
    fn serve(self: Arc<Self>) {
        loop {
            self.idle.fetch_add(1, Ordering::AcqRel);
            let got = self.listener.recv();
            self.idle.fetch_sub(1, Ordering::AcqRel);
            let n = match got {
                Ok(n) => n,
                // A caller killed before we took its call; or, once the program's tree is
                // gone, every receive (a thread that kept trying would spin).
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) && !self.listener.hung_up() => continue,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    // The listener is unusable: answer nothing more from this thread.
                    self.workers.fetch_sub(1, Ordering::AcqRel);
                    return;
                }
            };
            match self.decide(n) {
                Outcome::Reply(r) => {
                    let _ = self.listener.respond(n.id, r);
                }
                Outcome::Done => {}
                Outcome::Slow(job) => {
                    // This call may wait: someone else must be receiving meanwhile.
                    if self.idle.load(Ordering::Acquire) == 0 {
                        self.spawn_worker();
                    }
                    let o = match catch_unwind(AssertUnwindSafe(|| job(&self))) {
                        Ok(o) => o,
                        Err(_) => {
                            self.log
                                .error(n.tid, format_args!("internal error in the guard; the call failed"));
                            errno_reply(fail_errno(n.nr))
                        }
                    };
                    if let Outcome::Reply(r) = o {
                        let _ = self.listener.respond(n.id, r);
                    }
                }
            }
            if self.idle.load(Ordering::Acquire) >= MAX_IDLE {
                self.workers.fetch_sub(1, Ordering::AcqRel);
                return;
            }
        }
    }

    /// A handler's decision; a panic fails the call (never lets it through).
    fn decide(&self, n: Notif) -> Outcome {
        match catch_unwind(AssertUnwindSafe(|| crate::calls::handle(self, n))) {
            Ok(o) => o,
            Err(_) => {
                self.log.error(
                    n.tid,
                    format_args!("internal error in the guard; the call failed (nothing went direct)"),
                );
                errno_reply(fail_errno(n.nr))
            }
        }
    }
}

/// The errno of a call that failed inside the guard.
fn fail_errno(nr: i64) -> i32 {
    if nr == libc::SYS_connect {
        libc::ECONNREFUSED
    } else {
        libc::EPERM
    }
}

/// One trapped call being handled: its notification, and the program's process opened once.
pub struct Call<'a> {
    pub sup: &'a Supervisor,
    pub n: Notif,
}

impl<'a> Call<'a> {
    pub fn new(sup: &'a Supervisor, n: Notif) -> Call<'a> {
        Call { sup, n }
    }

    pub fn arg(&self, i: usize) -> u64 {
        self.n.args[i]
    }

    /// Descriptor `fd` of the calling process: the very same open file. Fails with the errno
    /// the call itself would have (EBADF), or EPERM when the process cannot be acted for.
    pub fn take_fd(&mut self, fd: i32) -> Result<OwnedFd, i32> {
        let thread = self.sup.thread(self.n.tid, false).map_err(|e| sys::errno(&e))?;
        let mut r = sys::pidfd_getfd(&thread.pidfd, fd);
        if matches!(&r, Err(e) if e.raw_os_error() == Some(libc::ESRCH)) {
            // A pidfd kept for an earlier thread of this number: open a fresh one.
            let thread = self.sup.thread(self.n.tid, true).map_err(|e| sys::errno(&e))?;
            r = sys::pidfd_getfd(&thread.pidfd, fd);
        }
        let r = r.map_err(|e| match sys::errno(&e) {
            libc::EPERM | libc::EACCES => {
                self.sup.log.error(
                    self.n.tid,
                    format_args!("the guard may not act for this process (it made itself non-dumpable?); the call failed"),
                );
                libc::EPERM
            }
            e => e,
        });
        // The descriptor is the calling thread's only if it still waits for us.
        if r.is_ok() && !self.valid() {
            return Err(libc::ESRCH);
        }
        r
    }

    /// `len` bytes at `addr` in the caller's memory: EFAULT when they are not all readable.
    pub fn read(&self, addr: u64, len: usize) -> Result<Vec<u8>, i32> {
        let mut buf = vec![0u8; len];
        sys::read_mem(self.n.tid, addr, &mut buf).map_err(|e| fault(&e))?;
        Ok(buf)
    }

    pub fn read_u32(&self, addr: u64) -> Result<u32, i32> {
        let b = self.read(addr, 4)?;
        Ok(u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub fn write(&self, addr: u64, data: &[u8]) -> Result<(), i32> {
        sys::write_mem(self.n.tid, addr, data).map_err(|e| fault(&e))
    }

    /// True while the caller still waits: what was read from its memory was its own.
    pub fn valid(&self) -> bool {
        self.sup.listener.valid(self.n.id)
    }

    /// The calling process (for log lines and per-process state).
    pub fn tgid(&self) -> libc::pid_t {
        self.sup.tgid(self.n.tid)
    }
}

fn fault(e: &std::io::Error) -> i32 {
    match sys::errno(e) {
        libc::ESRCH => libc::ESRCH,
        _ => libc::EFAULT,
    }
}
