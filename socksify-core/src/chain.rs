//! A chain of proxies, each hop CONNECTing to the next, run on a socket the caller owns.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::addr::TargetAddr;
use crate::error::SocksError;
use crate::memory::{self, HopMemory, Pipelining};
use crate::proxy::{fill_unspecified, Command, Host, Proxy};
use crate::sys::{self, FdStream};

/// How the hops of a chain are picked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChainMode {
    /// Every hop, in order; any failure fails the chain.
    #[default]
    Strict,
    /// Every live hop, in order; dead hops are skipped.
    Dynamic,
    /// `chain_len` live hops in random order.
    Random,
    /// `chain_len` live hops, each connection starting where the previous one stopped.
    RoundRobin,
}

/// Where a chain failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Resolving the first hop's name locally.
    Resolve,
    /// Opening the TCP connection to the first hop.
    Reach,
    /// The handshake with this hop, asking it to reach the next hop (1-based) of the chain.
    NextHop(usize),
    /// The handshake with the last hop, sending the program's request.
    Request(Command, TargetAddr),
}

/// Why a chain could not be built. Each names the hop (1-based, as in the configuration) and the
/// proxy (without its password).
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    #[error("no proxy is configured")]
    Empty,
    #[error("{}", describe(*.hop, .proxy, .stage, .source))]
    Hop { hop: usize, proxy: String, stage: Stage, source: SocksError },
    #[error("no usable chain: {needed} live proxies needed, {alive} left; last failure: {last}")]
    NotEnoughAlive { needed: usize, alive: usize, last: Box<ChainError> },
    #[error("the program's socket: {0}")]
    Socket(std::io::Error),
    #[error("UDP cannot go through a chain of {0} hops: a SOCKS5 proxy relays UDP only for its own client; use one proxy (or chain_len = 1)")]
    UdpNeedsOneHop(usize),
}

fn describe(hop: usize, proxy: &str, stage: &Stage, source: &SocksError) -> String {
    let what = match stage {
        Stage::Resolve => "cannot resolve the proxy's name".to_owned(),
        Stage::Reach => "cannot connect to the proxy".to_owned(),
        Stage::NextHop(next) => format!("could not reach hop {next}"),
        Stage::Request(Command::Connect, target) => format!("could not reach {target}"),
        Stage::Request(Command::Bind, target) => {
            format!("BIND for a connection from {target} failed")
        }
        Stage::Request(Command::UdpAssociate, _) => "UDP ASSOCIATE failed".to_owned(),
    };
    format!("hop {hop} ({proxy}): {what}: {source}")
}

impl ChainError {
    /// The errno a hooked call reports.
    pub fn errno(&self) -> i32 {
        match self {
            ChainError::Empty => libc::ECONNREFUSED,
            ChainError::Hop { source, .. } => source.errno(),
            ChainError::NotEnoughAlive { last, .. } => last.errno(),
            ChainError::Socket(e) => crate::error::io_errno(e),
            ChainError::UdpNeedsOneHop(_) => libc::EOPNOTSUPP,
        }
    }
}

/// A chain that was built: which hops (indices into the configured list) it went through, the
/// address the last hop reported, and the first hop's address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Established {
    pub path: Vec<usize>,
    pub bound: TargetAddr,
    pub first_hop: SocketAddr,
}

/// What the caller of `Chain::connect_known` knows of its socket already.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Known {
    /// AF_INET or AF_INET6.
    pub family: libc::c_int,
    /// Its file flags (F_GETFL), if just read: the connect puts exactly these back.
    pub flags: Option<libc::c_long>,
}

/// Connect and read timeouts: the first for the TCP connection to the first hop, the second for
/// each hop's whole handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    pub connect: Duration,
    pub read: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts { connect: Duration::from_millis(8000), read: Duration::from_millis(15000) }
    }
}

#[derive(Debug)]
pub struct Chain {
    proxies: Vec<Proxy>,
    mode: ChainMode,
    chain_len: usize,
    timeouts: Timeouts,
    next: AtomicUsize,
    /// The session's memory of dead hops and round-robin positions, if any.
    memory: Option<Remembered>,
    /// `isolate`: SOCKS5 hops without credentials get a username and password of the
    /// process's own (see `isolation_credentials`).
    isolate: bool,
    /// SOCKS5 hops get their handshake in one write where they take it (`pipelining`).
    pipeline: bool,
    /// Each hop's `Pipelining` (a `memory::verdict` word) where there is no session memory.
    verdicts: Vec<std::sync::atomic::AtomicU64>,
}

/// A chain's share of the session's memory.
#[derive(Debug)]
struct Remembered {
    memory: Arc<HopMemory>,
    /// The chain's round-robin counter.
    id: usize,
    /// Each hop's key.
    keys: Vec<u64>,
    /// How long a hop found dead is skipped; zero: not at all.
    dead_hop: Duration,
}

/// A failed attempt: the hop to leave out of the next attempt (None when the chain worked but
/// the destination did not), and the error.
/// A failed attempt names the hop to blame (if any) and whether that hop is to be remembered
/// dead by the session.
type Attempt = Result<Established, (Option<(usize, bool)>, ChainError)>;

/// Whether an error says the hop itself is down or broken — what the session remembers. Not:
/// a socket of the wrong family for it, credentials or a ticket of ours it refused, and, for
/// the last request, a timeout (the destination may be what is slow).
fn kills_hop(e: &SocksError, last_request: bool) -> bool {
    match e {
        SocksError::Unsupported(_)
        | SocksError::AuthRejected(_)
        | SocksError::NoAcceptableMethods { .. }
        | SocksError::Gssapi(_)
        | SocksError::GssapiAborted
        | SocksError::GssapiProtection(_)
        | SocksError::BadDomain(_) => false,
        SocksError::Timeout => !last_request,
        SocksError::NotPipelined => false,
        _ => true,
    }
}

impl Chain {
    pub fn new(proxies: Vec<Proxy>, mode: ChainMode, chain_len: usize, timeouts: Timeouts) -> Self {
        let n = proxies.len();
        Chain {
            proxies,
            mode,
            chain_len: chain_len.max(1),
            timeouts,
            next: AtomicUsize::new(0),
            memory: None,
            isolate: false,
            pipeline: true,
            verdicts: proxies_verdicts(n),
        }
    }

    /// The same chain, remembering dead hops (for `dead_hop`) and its round-robin position
    /// (counter `id`) in `memory`, which every process of the session shares.
    pub fn remembering(mut self, memory: Arc<HopMemory>, id: usize, dead_hop: Duration) -> Self {
        let keys = self.proxies.iter().map(memory::hop_key).collect();
        self.memory = Some(Remembered { memory, id, keys, dead_hop });
        self
    }

    /// The same chain, giving each process its own SOCKS5 username and password on the hops
    /// that have none (Tor then puts each process on a circuit of its own).
    pub fn isolating(mut self, isolate: bool) -> Self {
        self.isolate = isolate;
        self
    }

    /// The same chain, sending each SOCKS5 hop that takes it its whole handshake in one write
    /// (`enabled`, the default), or every hop step by step.
    pub fn pipelining(mut self, enabled: bool) -> Self {
        self.pipeline = enabled;
        self
    }

    /// What is known of hop `i`'s pipelining: the session's, or this process's without one.
    pub fn pipelining_of(&self, i: usize) -> Pipelining {
        let now = memory::now_ms();
        match &self.memory {
            Some(r) => r.memory.pipelining(r.keys[i], now),
            None => memory::verdict::read(&self.verdicts[i], now),
        }
    }

    /// Takes the probe of hop `i` (for as long as a whole handshake may last, and more).
    fn claim_probe(&self, i: usize) -> bool {
        let now = memory::now_ms();
        let until = now + 2 * (self.timeouts.connect + self.timeouts.read).as_millis() as u64;
        match &self.memory {
            Some(r) => r.memory.claim_probe(r.keys[i], now, until),
            None => memory::verdict::claim(&self.verdicts[i], now, until),
        }
    }

    fn found_pipelining(&self, i: usize, verdict: Pipelining) {
        match &self.memory {
            Some(r) => r.memory.set_pipelining(r.keys[i], verdict),
            None => memory::verdict::set(&self.verdicts[i], verdict),
        }
    }

    /// Hop `i`'s handshake for `cmd` to `target`: in one write where the hop takes it, else step
    /// by step. While nothing is known, one connection at a time probes (in the whole
    /// session) and the others go step by step.
    fn ask(
        &self,
        i: usize,
        stream: &mut FdStream,
        cmd: Command,
        target: &TargetAddr,
    ) -> Result<TargetAddr, SocksError> {
        let hop = self.hop(i);
        if !self.pipeline || !hop.can_pipeline() {
            return hop.request(stream, cmd, target);
        }
        let probe = match self.pipelining_of(i) {
            Pipelining::Takes => false,
            Pipelining::Unknown if self.claim_probe(i) => true,
            _ => return hop.request(stream, cmd, target),
        };
        let r = hop.request_pipelined(stream, cmd, target, probe);
        match &r {
            // Also when it was known to take it (the server behind the hop changed): step by
            // step from now on, never the same write again.
            Err(SocksError::NotPipelined) => self.found_pipelining(i, Pipelining::Refuses),
            // The request's reply came (a refusal is a reply too).
            Ok(_) | Err(SocksError::Socks5(_)) if probe => self.found_pipelining(i, Pipelining::Takes),
            // Nothing found out: the probe is given back.
            Err(_) if probe => self.found_pipelining(i, Pipelining::Unknown),
            // Known to take it, and now silent: perhaps no longer (a slot taken over, another
            // server behind the address): the next connection probes again.
            Err(SocksError::Timeout) => self.found_pipelining(i, Pipelining::Unknown),
            _ => {}
        }
        r
    }

    /// Hop `i` as it is asked: with the process's own credentials under `isolate`.
    fn hop(&self, i: usize) -> std::borrow::Cow<'_, Proxy> {
        let p = &self.proxies[i];
        match (self.isolate, p.kind, &p.creds) {
            // A GSSAPI hop is its ticket's: it gets no username of ours.
            (true, crate::proxy::ProxyKind::Socks5, None) if p.gssapi.is_none() => {
                std::borrow::Cow::Owned(Proxy { creds: Some(isolation_credentials()), ..p.clone() })
            }
            _ => std::borrow::Cow::Borrowed(p),
        }
    }

    /// The hops the session remembers as dead now (indices), for `explain` and logs.
    pub fn remembered_dead(&self) -> Vec<usize> {
        let Some(r) = &self.memory else { return Vec::new() };
        let now = memory::now_ms();
        (0..self.proxies.len()).filter(|&i| r.memory.dead_until(r.keys[i], now).is_some()).collect()
    }

    pub fn proxies(&self) -> &[Proxy] {
        &self.proxies
    }

    pub fn timeouts(&self) -> Timeouts {
        self.timeouts
    }

    /// Builds the chain on `fd`, a TCP socket that is not connected, and has the last hop
    /// CONNECT to `target`.
    pub fn connect(&self, fd: RawFd, target: &TargetAddr) -> Result<Established, ChainError> {
        self.establish(fd, Command::Connect, target)
    }

    /// How many hops one connection goes through.
    pub fn hops_per_connection(&self) -> usize {
        match self.mode {
            ChainMode::Strict | ChainMode::Dynamic => self.proxies.len(),
            ChainMode::Random | ChainMode::RoundRobin => self.chain_len.min(self.proxies.len()),
        }
    }

    /// Opens a UDP association on `fd`, a TCP socket that is not connected and becomes its
    /// control connection. Returns the relay's address (BND.ADDR 0.0.0.0 or :: replaced by the
    /// proxy's) in `bound`. Plain SOCKS5 cannot relay UDP through several hops.
    pub fn udp_associate(&self, fd: RawFd) -> Result<Established, ChainError> {
        let hops = self.hops_per_connection();
        if hops > 1 {
            return Err(ChainError::UdpNeedsOneHop(hops));
        }
        let family = sys::family(fd).map_err(ChainError::Socket)?;
        let any: SocketAddr =
            if family == libc::AF_INET6 { "[::]:0" } else { "0.0.0.0:0" }.parse().expect("literal");
        self.establish(fd, Command::UdpAssociate, &TargetAddr::Ip(any))
    }

    /// Builds the chain on `fd` and sends `cmd` for `target` to the last hop. Dead hops are left
    /// out and the chain built again on the same descriptor, except in strict mode.
    pub fn establish(&self, fd: RawFd, cmd: Command, target: &TargetAddr) -> Result<Established, ChainError> {
        self.establish_until(fd, cmd, target, None)
    }

    /// `connect` that also gives up at `until` (a socket's SO_SNDTIMEO, say), whatever the
    /// configured timeouts leave.
    pub fn connect_until(
        &self,
        fd: RawFd,
        target: &TargetAddr,
        until: Option<Instant>,
    ) -> Result<Established, ChainError> {
        self.establish_until(fd, Command::Connect, target, until)
    }

    /// `connect_until` for a socket whose family and file flags the caller knows already (they
    /// are not asked of the kernel again).
    pub fn connect_known(
        &self,
        fd: RawFd,
        known: Known,
        target: &TargetAddr,
        until: Option<Instant>,
    ) -> Result<Established, ChainError> {
        self.establish_known(fd, Some(known), Command::Connect, target, until)
    }

    /// `establish`, giving up at `until` if it comes before the configured timeouts.
    pub fn establish_until(
        &self,
        fd: RawFd,
        cmd: Command,
        target: &TargetAddr,
        until: Option<Instant>,
    ) -> Result<Established, ChainError> {
        self.establish_known(fd, None, cmd, target, until)
    }

    fn establish_known(
        &self,
        fd: RawFd,
        known: Option<Known>,
        cmd: Command,
        target: &TargetAddr,
        until: Option<Instant>,
    ) -> Result<Established, ChainError> {
        if self.proxies.is_empty() {
            return Err(ChainError::Empty);
        }
        let known = match known {
            Some(k) => k,
            None => Known { family: sys::family(fd).map_err(ChainError::Socket)?, flags: None },
        };
        // Hops the session remembers as dead are left out first (never in strict mode, which
        // uses every hop); when too few are left, they are tried after all.
        let mut remembered = match self.mode {
            ChainMode::Strict => Vec::new(),
            _ => self.remembered_dead(),
        };
        let mut dead = vec![false; self.proxies.len()];
        for &i in &remembered {
            dead[i] = true;
        }
        let mut last: Option<ChainError> = None;
        let mut stepwise_retries = 0;
        loop {
            let path = match self.select(&dead) {
                Ok(path) => path,
                Err(_) if !remembered.is_empty() => {
                    for i in remembered.drain(..) {
                        dead[i] = false;
                    }
                    continue;
                }
                Err((needed, alive)) => {
                    let last = Box::new(last.unwrap_or(ChainError::Empty));
                    return Err(ChainError::NotEnoughAlive { needed, alive, last });
                }
            };
            match self.attempt(fd, known, &path, cmd, target, until) {
                Ok(est) => {
                    self.remember_alive(&est.path);
                    return Ok(est);
                }
                // A signal ended the wait (`sys::interruptible`): no other hop is tried.
                Err((_, e)) if sys::interrupted() => return Err(e),
                // A hop dropped the handshake sent in one write: the same hops again, that one
                // step by step now (`ask` has noted it) — once a hop at most.
                Err((_, ChainError::Hop { source: SocksError::NotPipelined, .. }))
                    if stepwise_retries < self.proxies.len() =>
                {
                    stepwise_retries += 1;
                    retry_on(fd);
                }
                Err((_, e @ ChainError::Hop { source: SocksError::NotPipelined, .. })) => return Err(e),
                Err((Some((culprit, kills)), e)) => {
                    // A hop that only ran out of the caller's own time is not dead.
                    if kills && until.is_none_or(|u| Instant::now() < u) {
                        self.remember_dead(culprit);
                    }
                    if self.mode == ChainMode::Strict {
                        return Err(e);
                    }
                    dead[culprit] = true;
                    last = Some(e);
                    // Ready the same descriptor for the next attempt; an error here shows in it.
                    retry_on(fd);
                }
                Err((None, e)) => return Err(e),
            }
        }
    }

    fn remember_dead(&self, hop: usize) {
        if let Some(r) = &self.memory {
            if let Some(until) = memory::dead_deadline(r.dead_hop) {
                r.memory.mark_dead(r.keys[hop], until);
            }
        }
    }

    fn remember_alive(&self, path: &[usize]) {
        if let Some(r) = &self.memory {
            for &hop in path {
                r.memory.mark_alive(r.keys[hop]);
            }
        }
    }

    /// The hops of the next attempt, or how many were needed and how many are alive.
    fn select(&self, dead: &[bool]) -> Result<Vec<usize>, (usize, usize)> {
        let n = self.proxies.len();
        let alive: Vec<usize> = (0..n).filter(|&i| !dead[i]).collect();
        let needed = match self.mode {
            ChainMode::Strict => return Ok((0..n).collect()),
            ChainMode::Dynamic => 1,
            ChainMode::Random | ChainMode::RoundRobin => self.chain_len.min(n),
        };
        if alive.len() < needed {
            return Err((needed, alive.len()));
        }
        Ok(match self.mode {
            ChainMode::Strict | ChainMode::Dynamic => alive,
            ChainMode::Random => {
                let mut picked = alive;
                fastrand::shuffle(&mut picked);
                picked.truncate(needed);
                picked
            }
            ChainMode::RoundRobin => {
                let start = match &self.memory {
                    Some(r) => r.memory.next_start(r.id, needed),
                    None => self.next.fetch_add(needed, Ordering::Relaxed),
                } % n;
                (0..n).map(|k| (start + k) % n).filter(|&i| !dead[i]).take(needed).collect()
            }
        })
    }

    fn hop_error(&self, index: usize, stage: Stage, source: SocksError) -> ChainError {
        ChainError::Hop { hop: index + 1, proxy: self.proxies[index].to_string(), stage, source }
    }

    fn attempt(
        &self,
        fd: RawFd,
        known: Known,
        path: &[usize],
        cmd: Command,
        target: &TargetAddr,
        until: Option<Instant>,
    ) -> Attempt {
        // Each phase's timeout, cut short by `until`.
        let within = |t: Duration| match until {
            Some(u) => t.min(u.saturating_duration_since(Instant::now())),
            None => t,
        };
        let first = path[0];
        let first_addr = resolve(&self.proxies[first], known.family)
            .map_err(|e| (Some((first, kills_hop(&e, false))), self.hop_error(first, Stage::Resolve, e)))?;
        sys::connect_timeout_flags(fd, &first_addr, within(self.timeouts.connect), known.flags).map_err(
            |e| match e.raw_os_error() {
                // The program's socket cannot connect at all (connected or listening already,
                // its own connect under way, not an internet socket): the kernel's answer to
                // the program, no fault of the hop's, and nothing to undo.
                Some(
                    libc::EISCONN
                    | libc::EALREADY
                    | libc::EINVAL
                    | libc::EAFNOSUPPORT
                    | libc::ENOTSOCK
                    | libc::EBADF,
                ) => (None, ChainError::Socket(e)),
                _ => (Some((first, true)), self.hop_error(first, Stage::Reach, e.into())),
            },
        )?;

        let mut stream = FdStream::new(fd);
        for pair in path.windows(2) {
            let (hop, next) = (pair[0], pair[1]);
            stream.set_timeout(Some(within(self.timeouts.read)));
            if let Err(e) = self.ask(hop, &mut stream, Command::Connect, &self.proxies[next].target()) {
                // A proxy that answered with a refusal works; the hop it could not reach doesn't.
                let culprit = if e.is_refusal() { next } else { hop };
                let kills = kills_hop(&e, false);
                return Err((Some((culprit, kills)), self.hop_error(hop, Stage::NextHop(next + 1), e)));
            }
        }

        let last = *path.last().expect("a path has at least one hop");
        stream.set_timeout(Some(within(self.timeouts.read)));
        let bound = self.ask(last, &mut stream, cmd, target).map_err(|e| {
            let culprit = if e.is_refusal() { None } else { Some((last, kills_hop(&e, true))) };
            (culprit, self.hop_error(last, Stage::Request(cmd, target.clone()), e))
        })?;
        let last_addr = match self.proxies[last].host {
            _ if path.len() == 1 => Some(first_addr),
            Host::Ip(ip) => Some(SocketAddr::new(ip, self.proxies[last].port)),
            Host::Name(_) => None,
        };
        let bound = match last_addr {
            Some(addr) => fill_unspecified(bound, addr),
            None => bound,
        };
        Ok(Established { path: path.to_vec(), bound, first_hop: first_addr })
    }
}

fn proxies_verdicts(n: usize) -> Vec<std::sync::atomic::AtomicU64> {
    (0..n).map(|_| std::sync::atomic::AtomicU64::new(Pipelining::Unknown as u64)).collect()
}

thread_local! {
    /// Told of a descriptor before the chain drops its connection to try again (see
    /// `telling_retries`).
    static BEFORE_RETRY: std::cell::Cell<Option<fn(RawFd)>> = const { std::cell::Cell::new(None) };
}

/// Runs `f` (building chains), calling `before` with the descriptor each time a chain is about
/// to drop its connection and build it again (another hop, or a hop asked step by step): the
/// socket is closed for a moment then, which a program watching it may see (epoll's hang-up).
pub fn telling_retries<R>(before: fn(RawFd), f: impl FnOnce() -> R) -> R {
    let old = BEFORE_RETRY.with(|c| c.replace(Some(before)));
    let r = f();
    BEFORE_RETRY.with(|c| c.set(old));
    r
}

/// Drops `fd`'s connection for the next attempt.
fn retry_on(fd: RawFd) {
    if let Some(before) = BEFORE_RETRY.with(|c| c.get()) {
        before(fd);
    }
    let _ = sys::disconnect(fd);
}

thread_local! {
    /// The process a chain is built for, when it is not this one (the kernel guard builds
    /// chains for the processes it supervises).
    static ON_BEHALF_OF: std::cell::Cell<Option<u32>> = const { std::cell::Cell::new(None) };
}

/// Runs `f` (building chains) on behalf of process `pid`: `isolate` credentials are its own.
pub fn on_behalf_of<R>(pid: u32, f: impl FnOnce() -> R) -> R {
    let before = ON_BEHALF_OF.with(|c| c.replace(Some(pid)));
    let r = f();
    ON_BEHALF_OF.with(|c| c.set(before));
    r
}

/// A process's own SOCKS5 credentials under `isolate`: `socksify-PID` and a password drawn
/// from the kernel's random source when the process first asks, as torsocks `-i` makes them —
/// so Tor's IsolateSOCKSAuth gives every process a circuit of its own. A fork's child (a new
/// pid) draws its own; a pid used again later by another process (told apart by its start
/// time) does not share the circuit of its namesake.
pub fn isolation_credentials() -> crate::proxy::Credentials {
    let (pid, nonce) = match ON_BEHALF_OF.with(|c| c.get()) {
        Some(pid) => (pid, nonce_of_other(pid)),
        None => {
            // SAFETY: getpid has no preconditions.
            let pid = unsafe { libc::getpid() } as u32;
            (pid, own_nonce(pid))
        }
    };
    crate::proxy::Credentials { user: format!("socksify-{pid}"), pass: format!("{nonce:08x}") }
}

/// Four bytes from getrandom(2) (never 0); fastrand's state would be the same in every child
/// a process forks.
fn random_nonce() -> u32 {
    let mut b = [0u8; 4];
    // SAFETY: a 4-byte buffer of ours; flag 0 blocks only before the pool is initialised.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    let r = if n == 4 { u32::from_ne_bytes(b) } else { fastrand::u32(..) ^ std::process::id() };
    r.max(1)
}

/// This process's nonce: (pid << 32 | nonce), drawn again in a child.
fn own_nonce(pid: u32) -> u32 {
    use std::sync::atomic::AtomicU64;
    static OWN: AtomicU64 = AtomicU64::new(0);
    let seen = OWN.load(Ordering::Acquire);
    if seen != 0 && seen >> 32 == pid as u64 {
        return seen as u32;
    }
    let nonce = random_nonce();
    match OWN.compare_exchange(seen, (pid as u64) << 32 | nonce as u64, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => nonce,
        // Another thread drew first: its nonce is the process's.
        Err(now) if now >> 32 == pid as u64 => now as u32,
        Err(_) => nonce,
    }
}

/// The nonce of another process (the guard asks on behalf of those it supervises), by pid and
/// start time; the table forgets everything past 4,096 processes.
fn nonce_of_other(pid: u32) -> u32 {
    use std::collections::HashMap;
    use std::sync::Mutex;
    static OTHERS: Mutex<Option<HashMap<(u32, u64), u32>>> = Mutex::new(None);
    let key = (pid, start_time(pid));
    let mut table = OTHERS.lock().unwrap_or_else(|p| p.into_inner());
    let table = table.get_or_insert_with(HashMap::new);
    if table.len() >= 4096 && !table.contains_key(&key) {
        table.clear();
    }
    *table.entry(key).or_insert_with(random_nonce)
}

/// Field 22 of /proc/PID/stat (clock ticks after boot), 0 when unreadable.
fn start_time(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name may hold spaces and parentheses: fields count from the last ')'.
    stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(19)?.parse().ok()).unwrap_or(0)
}

/// The address of the first hop for a socket of `family`: an IPv6 socket reaches an IPv4 proxy
/// through an IPv4-mapped address; an IPv4 socket cannot reach an IPv6 proxy.
fn resolve(proxy: &Proxy, family: libc::c_int) -> Result<SocketAddr, SocksError> {
    let fit = |ip: IpAddr| -> Option<SocketAddr> {
        let ip = match (family, ip) {
            (libc::AF_INET, IpAddr::V4(_)) | (libc::AF_INET6, IpAddr::V6(_)) => ip,
            (libc::AF_INET6, IpAddr::V4(v4)) => IpAddr::V6(v4.to_ipv6_mapped()),
            _ => return None,
        };
        Some(SocketAddr::new(ip, proxy.port))
    };
    let wrong_family = SocksError::Unsupported(
        "the program's IPv4 socket cannot reach an IPv6 proxy: give the proxy an IPv4 address",
    );
    match &proxy.host {
        Host::Ip(ip) => fit(*ip).ok_or(wrong_family),
        Host::Name(name) => {
            let addrs: Vec<SocketAddr> = (name.as_str(), proxy.port).to_socket_addrs()?.collect();
            // Prefer the socket's own family, then whatever else fits.
            let native = addrs.iter().find(|a| (family == libc::AF_INET6) == a.is_ipv6());
            native.or(addrs.first()).and_then(|a| fit(a.ip())).ok_or(wrong_family)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_hop_that_is_down_or_broken_is_remembered_dead() {
        let io = || SocksError::Io(std::io::Error::from_raw_os_error(libc::ECONNREFUSED));
        assert!(kills_hop(&io(), false) && kills_hop(&SocksError::Closed, true));
        assert!(kills_hop(&SocksError::Timeout, false), "a hop that never answers the next hop's CONNECT");
        assert!(!kills_hop(&SocksError::Timeout, true), "the destination may be the slow one");
        assert!(!kills_hop(&SocksError::Unsupported("wrong family"), false));
        assert!(!kills_hop(&SocksError::AuthRejected(1), false));
        assert!(!kills_hop(&SocksError::Gssapi("no ticket".into()), false));
    }

    #[test]
    fn isolation_nonces_are_per_process_and_per_start() {
        let own = isolation_credentials();
        assert_eq!(own, isolation_credentials(), "one process, one password");
        assert_eq!(own.user, format!("socksify-{}", std::process::id()));
        let other = on_behalf_of(1, isolation_credentials);
        assert_eq!(other.user, "socksify-1");
        assert_eq!(other, on_behalf_of(1, isolation_credentials));
        assert_ne!(other.pass, own.pass);
        assert!(start_time(std::process::id()) > 0);
    }

    fn chain(mode: ChainMode, n: usize, len: usize) -> Chain {
        let proxies = (0..n).map(|i| format!("socks5://127.0.0.{}:1080", i + 1).parse().unwrap()).collect();
        Chain::new(proxies, mode, len, Timeouts::default())
    }

    /// A SOCKS5 server on loopback for `conns` connections, taking greeting and request in
    /// one `recv` each time as microsocks 1.0 does (`drops`: whatever followed the greeting in
    /// that `recv` is lost) or not; answers every CONNECT with success. Returns its address
    /// and what each connection's first `recv` held.
    fn one_recv_server(drops: bool, conns: usize) -> (SocketAddr, std::thread::JoinHandle<Vec<Vec<u8>>>) {
        use std::io::{Read, Write};
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let t = std::thread::spawn(move || {
            let mut firsts = Vec::new();
            for _ in 0..conns {
                let (mut c, _) = l.accept().unwrap();
                let mut buf = [0u8; 512];
                std::thread::sleep(Duration::from_millis(20)); // all of a pipelined write has come
                let n = c.read(&mut buf).unwrap();
                firsts.push(buf[..n].to_vec());
                c.write_all(&[5, 0]).unwrap();
                let greeting = 2 + buf[1] as usize;
                if drops || n == greeting {
                    c.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
                    match c.read(&mut buf) {
                        Ok(n) if n > 0 => {}
                        _ => continue, // the client gave up on this connection
                    }
                }
                c.write_all(&[5, 0, 0, 1, 127, 0, 0, 1, 0, 9]).unwrap();
            }
            firsts
        });
        (addr, t)
    }

    fn connect_through(c: &Chain) -> Result<Established, ChainError> {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        c.connect(std::os::fd::AsRawFd::as_raw_fd(&s), &TargetAddr::Ip("192.0.2.7:80".parse().unwrap()))
    }

    #[test]
    fn a_hop_that_takes_a_handshake_in_one_write_gets_it_every_time() {
        let (addr, server) = one_recv_server(false, 2);
        let c = Chain::new(
            vec![format!("socks5://{addr}").parse().unwrap()],
            ChainMode::Strict,
            1,
            Timeouts::default(),
        );
        connect_through(&c).unwrap();
        assert_eq!(c.pipelining_of(0), Pipelining::Takes);
        connect_through(&c).unwrap();
        let firsts = server.join().unwrap();
        assert!(firsts.iter().all(|f| f.len() == 3 + 10), "greeting and request together: {firsts:?}");
    }

    #[test]
    fn a_hop_that_drops_it_is_asked_again_step_by_step_and_remembered() {
        let (addr, server) = one_recv_server(true, 3);
        let memory = Arc::new(HopMemory::private());
        let proxies: Vec<Proxy> = vec![format!("socks5://{addr}").parse().unwrap()];
        let c = Chain::new(proxies.clone(), ChainMode::Strict, 1, Timeouts::default()).remembering(
            memory.clone(),
            0,
            Duration::from_secs(30),
        );
        let t = Instant::now();
        connect_through(&c).expect("the stepwise retry");
        assert!(t.elapsed() < Duration::from_secs(3), "one probe: {:?}", t.elapsed());
        assert_eq!(c.pipelining_of(0), Pipelining::Refuses);
        assert!(c.remembered_dead().is_empty(), "not dead");
        // Another process of the session knows it from the memory: no probe at all.
        let other = Chain::new(proxies, ChainMode::Strict, 1, Timeouts::default()).remembering(
            memory,
            0,
            Duration::from_secs(30),
        );
        let t = Instant::now();
        connect_through(&other).unwrap();
        assert!(t.elapsed() < PIPELINE_WAIT_NONE, "{:?}", t.elapsed());
        let firsts = server.join().unwrap();
        assert_eq!(firsts.iter().map(Vec::len).collect::<Vec<_>>(), [13, 3, 3]);
    }

    /// Less than a probe's wait.
    const PIPELINE_WAIT_NONE: Duration = Duration::from_millis(900);

    #[test]
    fn strict_uses_every_hop_even_dead_ones() {
        let c = chain(ChainMode::Strict, 3, 2);
        assert_eq!(c.select(&[false, true, false]).unwrap(), vec![0, 1, 2]);
    }

    #[test]
    fn dynamic_skips_dead_hops_and_fails_when_none_is_left() {
        let c = chain(ChainMode::Dynamic, 3, 2);
        assert_eq!(c.select(&[false, true, false]).unwrap(), vec![0, 2]);
        assert_eq!(c.select(&[true, true, true]).unwrap_err(), (1, 0));
    }

    #[test]
    fn random_picks_chain_len_distinct_live_hops() {
        let c = chain(ChainMode::Random, 5, 3);
        for _ in 0..100 {
            let mut p = c.select(&[false, false, true, false, false]).unwrap();
            assert_eq!(p.len(), 3);
            assert!(!p.contains(&2));
            p.sort();
            p.dedup();
            assert_eq!(p.len(), 3);
        }
        assert_eq!(c.select(&[true, true, true, false, false]).unwrap_err(), (3, 2));
    }

    #[test]
    fn round_robin_rotates() {
        let c = chain(ChainMode::RoundRobin, 3, 2);
        let ok = [false; 3];
        assert_eq!(c.select(&ok).unwrap(), vec![0, 1]);
        assert_eq!(c.select(&ok).unwrap(), vec![2, 0]);
        assert_eq!(c.select(&ok).unwrap(), vec![1, 2]);
        assert_eq!(c.select(&[false, true, false]).unwrap(), vec![0, 2]);
    }

    #[test]
    fn errors_name_the_hop_and_the_reason() {
        let c = chain(ChainMode::Strict, 2, 2);
        let e = c.hop_error(1, Stage::NextHop(3), SocksError::Socks5(crate::error::Socks5Reply(5)));
        let text = e.to_string();
        assert!(
            text.starts_with("hop 2 (socks5://127.0.0.2:1080): could not reach hop 3: SOCKS5 reply 0x05"),
            "{text}"
        );
        assert_eq!(e.errno(), libc::ECONNREFUSED);
    }

    #[test]
    fn an_ipv4_socket_cannot_use_an_ipv6_proxy() {
        let p: Proxy = "socks5://[::1]:1080".parse().unwrap();
        assert!(resolve(&p, libc::AF_INET).is_err());
        let p: Proxy = "socks5://127.0.0.1:1080".parse().unwrap();
        assert_eq!(resolve(&p, libc::AF_INET6).unwrap(), "[::ffff:127.0.0.1]:1080".parse().unwrap());
    }
}
