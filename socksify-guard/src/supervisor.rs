//! The supervisor: it receives every trapped call of the program's process tree, decides
//! (`policy`), acts on the program's behalf on its own sockets (`calls`), and answers. Calls
//! that can be answered at once are answered on the receiving thread (with the kernel's
//! synchronous wake-up, a trap then costs a few microseconds); calls that may wait — a proxy
//! handshake, a blocking connect, a BIND's second reply — go to a pool of workers that grows
//! with demand, so that no slow proxy ever holds up another call.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
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
}

#[derive(Clone, Copy, Debug)]
pub struct DnsMark {
    pub ns: usize,
    pub shown: SocketAddr,
    pub until: Instant,
}

#[derive(Clone, Copy, Debug)]
pub struct BindMark {
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
                if let Some(old) = self.order.pop_front() {
                    self.sockets.remove(&old);
                }
            }
            self.order.push_back(inode);
        }
        f(self.sockets.entry(inode).or_default());
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
    pub chain: Chain,
    pub stubs: Stubs,
    pub log: Log,
    table: Mutex<Table>,
    /// Entries in the table: calls that only matter for known sockets skip all work at 0.
    entries: AtomicUsize,
    dns_sockets: AtomicUsize,
    pool: Pool,
}

impl Supervisor {
    pub fn new(listener: Listener, policy: Arc<Policy>, chain: Chain, stubs: Stubs, log: Log) -> Supervisor {
        Supervisor {
            listener,
            policy,
            chain,
            stubs,
            log,
            table: Mutex::new(Table::default()),
            entries: AtomicUsize::new(0),
            dns_sockets: AtomicUsize::new(0),
            pool: Pool::default(),
        }
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

    /// Receives and answers calls until no process uses the filter any more.
    pub fn run(self: Arc<Self>) {
        while self.listener.wait() {
            let n = match self.listener.recv() {
                Ok(n) => n,
                Err(_) => continue, // the caller died between the poll and the receive
            };
            let outcome = self.decide(n);
            self.finish(n, outcome);
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

    fn finish(self: &Arc<Self>, n: Notif, outcome: Outcome) {
        match outcome {
            Outcome::Reply(r) => {
                let _ = self.listener.respond(n.id, r);
            }
            Outcome::Done => {}
            Outcome::Slow(job) => {
                let sup = self.clone();
                self.pool.submit(
                    self.clone(),
                    Box::new(move || {
                        let o = match catch_unwind(AssertUnwindSafe(|| job(&sup))) {
                            Ok(o) => o,
                            Err(_) => {
                                sup.log.error(
                                    n.tid,
                                    format_args!("internal error in the guard; the call failed"),
                                );
                                errno_reply(fail_errno(n.nr))
                            }
                        };
                        match o {
                            Outcome::Reply(r) => {
                                let _ = sup.listener.respond(n.id, r);
                            }
                            Outcome::Slow(_) | Outcome::Done => {}
                        }
                    }),
                );
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

/// Worker threads for calls that may wait: one is started whenever a call finds none idle.
#[derive(Default)]
struct Pool {
    queue: Mutex<PoolState>,
    ready: Condvar,
}

#[derive(Default)]
struct PoolState {
    jobs: VecDeque<Box<dyn FnOnce() + Send>>,
    idle: usize,
    threads: usize,
}

const MAX_WORKERS: usize = 1024;
const MAX_IDLE: usize = 4;

impl Pool {
    fn submit(&self, sup: Arc<Supervisor>, job: Box<dyn FnOnce() + Send>) {
        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        q.jobs.push_back(job);
        if q.idle == 0 && q.threads < MAX_WORKERS {
            q.threads += 1;
            let spawned = std::thread::Builder::new().name("guard-worker".into()).spawn(move || worker(sup));
            if spawned.is_err() {
                q.threads -= 1;
            }
        }
        drop(q);
        self.ready.notify_one();
    }
}

fn worker(sup: Arc<Supervisor>) {
    let pool = &sup.pool;
    let mut q = pool.queue.lock().unwrap_or_else(|p| p.into_inner());
    loop {
        if let Some(job) = q.jobs.pop_front() {
            drop(q);
            job();
            q = pool.queue.lock().unwrap_or_else(|p| p.into_inner());
            continue;
        }
        if q.idle >= MAX_IDLE {
            q.threads -= 1;
            return;
        }
        q.idle += 1;
        let (next, _) =
            pool.ready.wait_timeout(q, Duration::from_secs(30)).unwrap_or_else(|p| p.into_inner());
        q = next;
        q.idle -= 1;
    }
}

/// One trapped call being handled: its notification, and the program's process opened once.
pub struct Call<'a> {
    pub sup: &'a Supervisor,
    pub n: Notif,
    pidfd: Option<OwnedFd>,
}

impl<'a> Call<'a> {
    pub fn new(sup: &'a Supervisor, n: Notif) -> Call<'a> {
        Call { sup, n, pidfd: None }
    }

    pub fn arg(&self, i: usize) -> u64 {
        self.n.args[i]
    }

    /// Descriptor `fd` of the calling process: the very same open file. Fails with the errno
    /// the call itself would have (EBADF), or EPERM when the process cannot be acted for.
    pub fn take_fd(&mut self, fd: i32) -> Result<OwnedFd, i32> {
        if self.pidfd.is_none() {
            self.pidfd = Some(sys::pidfd_open(self.n.tid).map_err(|e| sys::errno(&e))?);
        }
        let pidfd = self.pidfd.as_ref().expect("opened above");
        let r = sys::pidfd_getfd(pidfd, fd).map_err(|e| match sys::errno(&e) {
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
        sys::tgid_of(self.n.tid).unwrap_or(self.n.tid)
    }
}

fn fault(e: &std::io::Error) -> i32 {
    match sys::errno(e) {
        libc::ESRCH => libc::ESRCH,
        _ => libc::EFAULT,
    }
}
