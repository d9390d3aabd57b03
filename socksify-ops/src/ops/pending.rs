//! Connects that do not block the program: a non-blocking socket's `connect()` through the
//! chain returns `EINPROGRESS` at once, and the handshake runs on a thread of the library's own
//! (a blocking socket's too, once a signal handler without `SA_RESTART` interrupted it, or its
//! `SO_SNDTIMEO` ran out: `EINTR` or `EINPROGRESS`, as the kernel answers). Until the chain is
//! established, the socket is hidden from the program's waits — `poll`, `ppoll`, `select` and
//! `pselect` wait on an eventfd of the library's own in its place, and its `epoll`
//! registrations are narrowed to errors (`epoll_ctl` is followed), then put back, which
//! delivers a fresh edge — and its data calls say `EAGAIN`. Then it becomes writable, with
//! `SO_ERROR` 0 or the chain's errno.

use std::collections::HashMap;
use std::net::SocketAddr;

use libc::{c_int, c_long, epoll_event, pollfd};
use socksify_core::TargetAddr;

use crate::runtime::{Flow, State};
use crate::sys::lock::ForkMutex as Mutex;
use crate::sys::{self, args, call, sock};
use crate::table::{self, Outcome};

/// Starts the chain to `target` on `fd` in the background; the program named it `dest`. What
/// the caller returns: `EINPROGRESS` (or `errno` given), or `None` when no thread could be
/// started (the caller then builds the chain in place).
pub fn start(
    st: &'static State,
    fd: c_int,
    dest: SocketAddr,
    target: TargetAddr,
    via: usize,
) -> Option<c_int> {
    // SAFETY: a new eventfd of the library's own.
    let done = sys::check(unsafe { call(libc::SYS_eventfd2, args!(0, libc::EFD_CLOEXEC)) }).ok()? as c_int;
    let mut done = sock::Owned::new(done);
    done.relocate();
    // The worker's own reference to the socket: a program that closes its descriptor (and
    // reuses the number) meanwhile never gets the handshake written into another file.
    let work = sock::dup_high(fd)?;
    let Some(ino) = table::begin_pending(fd, done) else {
        sock::close(work);
        return None;
    };
    hide(fd);
    // Recorded in the session: an exec in the middle ends the thread, and the program it starts
    // must not find the socket half-way into the chain (see `after_exec`).
    if let Some(s) = &st.session {
        s.handshake_started(ino, sys::pid() as u32);
    }
    let spawned = spawn_quiet(move || {
        // The library's own thread: what a proxy's authentication calls (Kerberos reaching its
        // KDC, say) goes to the real functions, as from inside a hook.
        let _own = crate::runtime::guard::Guard::enter();
        let started = std::time::Instant::now();
        let result = socksify_core::chain::telling_retries(table::mark_restarted, || {
            st.chain(via).connect(work, &target)
        });
        finish(st, ino, work, dest, target, via, result, started);
    });
    if !spawned {
        if let Some(s) = &st.session {
            s.handshake_ended(ino);
        }
        table::end_pending(ino, Outcome::Over, |e| e.pending = None);
        show(fd, ino);
        sock::close(work);
        return None;
    }
    // As the kernel's connect, return once the first SYN is out: an unconnected socket reads
    // as hung up (EPOLLHUP, which no epoll mask hides) to a program that waits on it.
    let started = std::time::Instant::now();
    while sock::tcp_state(fd) == Some(sock::TCP_CLOSE)
        && matches!(table::pending(fd), Some((Outcome::Running, _)))
        && started.elapsed() < std::time::Duration::from_millis(50)
    {
        std::thread::yield_now();
    }
    Some(libc::EINPROGRESS)
}

/// At load: sockets whose chain this process (the same pid, before its `exec`) was building in
/// the background are reset — the thread that built it is gone, and the program must never
/// write into a half-made chain. It sees a connection reset, and a log line says why.
pub fn after_exec(st: &State) {
    let Some(session) = &st.session else { return };
    let cut = session.handshakes_cut_by_exec(sys::pid() as u32);
    if cut.is_empty() {
        return;
    }
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else { return };
    for fd in dir.flatten().filter_map(|e| e.file_name().to_str()?.parse::<c_int>().ok()) {
        if sock::inode(fd).is_some_and(|ino| cut.contains(&ino)) {
            // SAFETY: shutdown of a socket whose handshake can no longer finish.
            unsafe { call(libc::SYS_shutdown, args!(fd, libc::SHUT_RDWR)) };
            st.log.error(format_args!(
                "descriptor {fd}: its connection through the proxies was being made when the program exec'd; it is reset"
            ));
        }
    }
}

/// A thread of the library's own, with every signal blocked (they are the program's threads').
fn spawn_quiet(f: impl FnOnce() + Send + 'static) -> bool {
    // SAFETY: sigset_t is plain old data; the masks are this thread's, put back at once.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        let r = std::thread::Builder::new().name("socksify".into()).stack_size(256 << 10).spawn(f);
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        r.is_ok()
    }
}

#[allow(clippy::too_many_arguments)]
fn finish(
    st: &State,
    ino: u64,
    work: c_int,
    dest: SocketAddr,
    target: TargetAddr,
    via: usize,
    result: Result<socksify_core::chain::Established, socksify_core::ChainError>,
    started: std::time::Instant,
) {
    let outcome = match &result {
        Ok(_) => Outcome::Over,
        Err(e) => Outcome::Failed(e.errno()),
    };
    let family = if dest.is_ipv6() { libc::AF_INET6 } else { libc::AF_INET };
    let local =
        result.as_ref().ok().and_then(|est| est.bound.ip()).and_then(|b| sys::addr::in_family(b, family));
    // Said before the program can learn the outcome (it may exit at once); a socket the program
    // closed meanwhile needs no word.
    if table::entry_by_inode(ino, |_| ()).is_some() {
        super::net::log_result(st, &target, via, &result, started);
    }
    let seq = table::next_seq();
    let fds = table::end_pending(ino, outcome, |e| {
        if outcome == Outcome::Over {
            e.tcp_peer = Some(dest);
            e.tcp_target = Some((seq, target.clone()));
            e.local = local;
        }
    });
    if let Some(s) = &st.session {
        s.handshake_ended(ino);
    }
    // The outcome is recorded first: a failed chain's socket is disconnected only now, and the
    // hang-up that shows (to epoll, through any mask) finds SO_ERROR saying why.
    if outcome != Outcome::Over {
        let _ = socksify_core::sys::disconnect(work);
    }
    table::entry_by_inode(ino, |e| {
        if let Some(p) = &e.pending {
            let one: u64 = 1;
            // SAFETY: an 8-byte write to the eventfd, from a local.
            unsafe { call(libc::SYS_write, args!(p.done.raw(), &one as *const u64, 8)) };
        }
    });
    for fd in fds {
        show(fd, ino);
    }
    sock::close(work);
}

/// The data calls (send, recv, read, write…) of `fd` while its handshake runs: `EAGAIN` (a
/// blocking socket waits for the end), then the failure once; `None`: as usual.
pub fn data_call(fd: c_int, sending: bool) -> Option<Flow<isize>> {
    let (outcome, done) = table::pending(fd)?;
    match outcome {
        Outcome::Running if sock::nonblocking(fd) => Some(Flow::Fail(libc::EAGAIN)),
        Outcome::Running => {
            // A blocking call waits for the connection as the kernel's does: within the
            // socket's SO_RCVTIMEO/SO_SNDTIMEO (then EAGAIN), and a signal ends it (EINTR).
            let name = if sending { libc::SO_SNDTIMEO } else { libc::SO_RCVTIMEO };
            match wait_done(done, sock::timeout(fd, name)) {
                Err(errno) => Some(Flow::Fail(errno)),
                Ok(()) => match table::pending(fd).map(|p| p.0) {
                    Some(Outcome::Running) => Some(Flow::Fail(libc::EAGAIN)),
                    Some(Outcome::Failed(_)) => table::take_failure(fd).map(Flow::Fail),
                    _ => Some(Flow::Bypass),
                },
            }
        }
        Outcome::Failed(_) => table::take_failure(fd).map(Flow::Fail),
        Outcome::Over => None,
    }
}

/// Waits for `done` to be readable, at most `timeout`: `Err(EINTR)` when a signal came.
fn wait_done(done: c_int, timeout: Option<std::time::Duration>) -> Result<(), c_int> {
    let mut p = pollfd { fd: done, events: libc::POLLIN, revents: 0 };
    let ts = timeout
        .map(|t| libc::timespec { tv_sec: t.as_secs() as libc::time_t, tv_nsec: t.subsec_nanos() as c_long });
    let ts_ptr = ts.as_ref().map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: ppoll of one local pollfd.
    let r = unsafe { call(libc::SYS_ppoll, args!(&mut p as *mut pollfd, 1, ts_ptr, 0, 8)) };
    if r < 0 {
        return Err(sys::errno());
    }
    Ok(())
}

/// connect(2) on a socket whose chain runs or ran in the background: `EALREADY` while it runs,
/// its failure once; `None` otherwise (connected: the kernel's EISCONN).
pub fn connect_again(fd: c_int) -> Option<c_int> {
    match table::pending(fd)?.0 {
        Outcome::Running => Some(libc::EALREADY),
        Outcome::Failed(_) => table::take_failure(fd),
        Outcome::Over => None,
    }
}

/// getsockopt(SO_ERROR): 0 while the handshake runs, then its failure once. A socket that
/// shows an error or a hang-up meanwhile (the proxy dropped it: epoll reports that through any
/// mask), or showed one (the chain dropped the connection to try again: for a moment the socket
/// was closed), waits for the handshake's end, so that the answer is its outcome, never a
/// false 0.
pub fn so_error(fd: c_int) -> Option<c_int> {
    let (outcome, done) = table::pending(fd)?;
    match outcome {
        Outcome::Running
            if table::restarted(fd)
                || sock::ready_now(fd, libc::POLLOUT) & (libc::POLLHUP | libc::POLLERR) != 0 =>
        {
            let _ = socksify_core::sys::wait(done, libc::POLLIN, None);
            so_error(fd)
        }
        Outcome::Running => Some(0),
        Outcome::Failed(_) => table::take_failure(fd),
        Outcome::Over => None,
    }
}

/// True while `fd`'s handshake runs (getpeername: ENOTCONN).
pub fn running(fd: c_int) -> bool {
    table::any_running() && matches!(table::pending(fd), Some((Outcome::Running, _)))
}

/// The program closes `fd`: if it was its socket's last descriptor and the handshake runs, the
/// handshake is cut short (its epoll registrations go first: the kernel would drop them).
pub fn closing(fd: c_int) {
    if !running(fd) {
        return;
    }
    for (epfd, _) in registrations(fd) {
        let mut ev = epoll_event { events: 0, u64: 0 };
        // SAFETY: epoll_ctl DEL of the program's registration, which closing removes anyway.
        unsafe {
            call(libc::SYS_epoll_ctl, args!(epfd, libc::EPOLL_CTL_DEL, fd, &mut ev as *mut epoll_event))
        };
        forget(epfd, fd);
    }
    // The handshake itself runs to its end on the worker's own duplicate, which then goes: the
    // socket may live on in another process (a forked child closing its copy must not cut the
    // parent's connect short).
}

// ---- epoll: the program's registrations, narrowed while a handshake runs -----------------

/// `pthread_atfork` handlers for the library's two locks, taken in the order every call takes
/// them (the registrations', then the table's): a child never inherits one held by a thread it
/// does not have.
pub extern "C" fn before_fork() {
    std::mem::forget(EPOLL.lock());
    table::before_fork();
}

pub extern "C" fn after_fork() {
    table::after_fork();
    // SAFETY: `before_fork` locked it in this thread and leaked the guard.
    unsafe { EPOLL.force_unlock() };
}

/// (epoll descriptor, descriptor) → (events the program asked for, its data).
type Registrations = HashMap<(c_int, c_int), (u32, u64)>;
static EPOLL: Mutex<Option<Registrations>> = Mutex::new(None);

const HIDDEN: u32 =
    (libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDNORM | libc::EPOLLWRNORM | libc::EPOLLPRI) as u32;

fn forget(epfd: c_int, fd: c_int) {
    if let Some(m) = EPOLL.lock().as_mut() {
        m.remove(&(epfd, fd));
    }
}

fn registrations(fd: c_int) -> Vec<(c_int, (u32, u64))> {
    let map = EPOLL.lock();
    map.as_ref()
        .map_or(Vec::new(), |m| m.iter().filter(|((_, f), _)| *f == fd).map(|((e, _), v)| (*e, *v)).collect())
}

/// epoll_ctl(2): recorded; while `fd`'s handshake runs, what the program asks for is kept and
/// the kernel given only errors to report.
pub fn epoll_ctl(epfd: c_int, op: c_int, fd: c_int, event: *mut epoll_event) -> Flow<c_int> {
    let asked =
        if op == libc::EPOLL_CTL_DEL { None } else { sys::mem::copy_value(event as *const epoll_event) };
    if op != libc::EPOLL_CTL_DEL && asked.is_none() {
        return Flow::Bypass; // the kernel's EFAULT
    }
    // The lock is held from the look at the handshake to the record: a handshake that ends
    // meanwhile puts this registration back (`show` takes the lock too), never leaves it narrowed.
    let mut map = EPOLL.lock();
    let hidden = running(fd);
    let mut given = asked.unwrap_or(epoll_event { events: 0, u64: 0 });
    if hidden {
        given.events &= !HIDDEN;
    }
    // SAFETY: epoll_ctl with the program's arguments (a copy of its event).
    let r = unsafe { call(libc::SYS_epoll_ctl, args!(epfd, op, fd, &mut given as *mut epoll_event)) };
    if r < 0 {
        return Flow::Fail(sys::errno());
    }
    let map = map.get_or_insert_with(HashMap::new);
    match asked {
        Some(ev) => {
            map.insert((epfd, fd), (ev.events, ev.u64));
        }
        None => {
            map.remove(&(epfd, fd));
        }
    }
    Flow::Done(0)
}

fn set_events(fd: c_int, mask: u32, ino: Option<u64>) {
    let mut map = EPOLL.lock();
    // The worker puts back the registrations of its socket only: the program may have closed
    // the number and made it another socket, whose own handshake runs.
    if ino.is_some_and(|ino| sock::inode(fd) != Some(ino) || running(fd)) {
        return;
    }
    let Some(map) = map.as_mut() else { return };
    let mine: Vec<(c_int, (u32, u64))> =
        map.iter().filter(|((_, f), _)| *f == fd).map(|((e, _), v)| (*e, *v)).collect();
    for (epfd, (events, data)) in mine {
        let mut ev = epoll_event { events: events & mask, u64: data };
        // An EPOLLEXCLUSIVE registration cannot be modified: it is made again.
        let op =
            if events & libc::EPOLLEXCLUSIVE as u32 != 0 { libc::EPOLL_CTL_DEL } else { libc::EPOLL_CTL_MOD };
        // SAFETY: epoll_ctl MOD (or DEL, then ADD) of a registration the program made, with its
        // own data.
        let mut r = unsafe { call(libc::SYS_epoll_ctl, args!(epfd, op, fd, &mut ev as *mut epoll_event)) };
        if r == 0 && op == libc::EPOLL_CTL_DEL {
            // SAFETY: as above.
            r = unsafe {
                call(libc::SYS_epoll_ctl, args!(epfd, libc::EPOLL_CTL_ADD, fd, &mut ev as *mut epoll_event))
            };
        }
        if r < 0 {
            map.remove(&(epfd, fd));
        }
    }
}

fn hide(fd: c_int) {
    set_events(fd, !HIDDEN, None);
}

/// Puts the program's registrations back: the kernel looks at the socket again, and an
/// edge-triggered registration gets its edge.
fn show(fd: c_int, ino: u64) {
    set_events(fd, u32::MAX, Some(ino));
}

// ---- poll and select -----------------------------------------------------------------------

/// poll/ppoll: a descriptor whose handshake runs is waited for through its eventfd; once that
/// is readable, the socket itself is asked. `timeout`: None waits for ever.
pub fn poll(
    fds: *mut pollfd,
    n: usize,
    timeout: Option<std::time::Duration>,
    sigmask: *const libc::sigset_t,
) -> Flow<c_int> {
    let Some(mut mine) = sys::mem::copy_array(fds as *const pollfd, n) else { return Flow::Bypass };
    let hidden: Vec<(usize, c_int)> = mine
        .iter()
        .enumerate()
        .filter_map(|(i, p)| match table::pending(p.fd) {
            Some((Outcome::Running, done)) => Some((i, done)),
            _ => None,
        })
        .collect();
    if hidden.is_empty() {
        return Flow::Bypass;
    }
    let deadline = timeout.map(|t| std::time::Instant::now() + t);
    loop {
        let mut ask = mine.clone();
        for &(i, done) in &hidden {
            if running(mine[i].fd) {
                ask[i] = pollfd { fd: done, events: libc::POLLIN, revents: 0 };
            }
        }
        let left = deadline.map(|d| d.saturating_duration_since(std::time::Instant::now()));
        let ts = left.map(|l| libc::timespec {
            tv_sec: l.as_secs() as libc::time_t,
            tv_nsec: l.subsec_nanos() as c_long,
        });
        let ts_ptr = ts.as_ref().map_or(std::ptr::null(), |t| t as *const libc::timespec);
        // SAFETY: ppoll of our copy of the array, with the caller's signal mask.
        let r = unsafe { call(libc::SYS_ppoll, args!(ask.as_mut_ptr(), n, ts_ptr, sigmask, 8)) };
        if r < 0 {
            return Flow::Fail(sys::errno());
        }
        let mut count = 0;
        for (i, p) in ask.iter().enumerate() {
            let revents = if ask[i].fd != mine[i].fd {
                if p.revents == 0 || running(mine[i].fd) {
                    0
                } else {
                    sock::ready_now(mine[i].fd, mine[i].events)
                }
            } else {
                p.revents
            };
            mine[i].revents = revents;
            if revents != 0 {
                count += 1;
            }
        }
        if count > 0 || left.is_some_and(|l| l.is_zero()) || r == 0 {
            let bytes: Vec<u8> = mine
                .iter()
                .flat_map(|p| {
                    let mut b = Vec::with_capacity(8);
                    b.extend_from_slice(&p.fd.to_ne_bytes());
                    b.extend_from_slice(&p.events.to_ne_bytes());
                    b.extend_from_slice(&p.revents.to_ne_bytes());
                    b
                })
                .collect();
            if !sys::mem::copy_out(fds as *mut u8, &bytes) {
                return Flow::Fail(libc::EFAULT);
            }
            return Flow::Done(count);
        }
    }
}

/// select/pselect as poll, when a descriptor in the sets has its handshake running; `None`:
/// none has (the real function answers). The sets are bit arrays of `nfds` bits, whatever their
/// size (programs with more than FD_SETSIZE descriptors allocate larger ones).
pub fn select(
    nfds: c_int,
    sets: [*mut libc::fd_set; 3],
    timeout: Option<std::time::Duration>,
    sigmask: *const libc::sigset_t,
) -> Option<Flow<c_int>> {
    let nfds = nfds.max(0) as usize;
    // The kernel reads whole longs: nfds rounded up to 64 bits.
    let len = nfds.div_ceil(64) * 8;
    let mut copies: [Option<Vec<u8>>; 3] = [None, None, None];
    for (k, &set) in sets.iter().enumerate() {
        if !set.is_null() {
            copies[k] = Some(sys::mem::copy_array(set as *const u8, len)?); // None: the kernel's EFAULT
        }
    }
    let bit = |v: &[u8], fd: usize| v[fd / 8] & (1 << (fd % 8)) != 0;
    let kinds = [libc::POLLIN, libc::POLLOUT, libc::POLLPRI];
    let mut list: Vec<pollfd> = Vec::new();
    for fd in 0..nfds {
        let events =
            (0..3).fold(
                0,
                |ev, k| {
                    if copies[k].as_deref().is_some_and(|v| bit(v, fd)) {
                        ev | kinds[k]
                    } else {
                        ev
                    }
                },
            );
        if events != 0 {
            list.push(pollfd { fd: fd as c_int, events, revents: 0 });
        }
    }
    if !list.iter().any(|p| running(p.fd)) {
        return None;
    }
    match poll(list.as_mut_ptr(), list.len(), timeout, sigmask) {
        Flow::Done(_) => {}
        other => return Some(other),
    }
    // What each kind of set reports: readable (or hung up, or an error), writable, exceptional.
    let reported =
        [libc::POLLIN | libc::POLLHUP | libc::POLLERR, libc::POLLOUT | libc::POLLERR, libc::POLLPRI];
    let mut out = [vec![0u8; len], vec![0u8; len], vec![0u8; len]];
    let mut count = 0;
    for p in &list {
        if p.revents & libc::POLLNVAL != 0 {
            return Some(Flow::Fail(libc::EBADF));
        }
        for k in 0..3 {
            if p.events & kinds[k] != 0 && p.revents & reported[k] != 0 {
                out[k][p.fd as usize / 8] |= 1 << (p.fd as usize % 8);
                count += 1;
            }
        }
    }
    for (k, &set) in sets.iter().enumerate() {
        if !set.is_null() && !sys::mem::copy_out(set as *mut u8, &out[k]) {
            return Some(Flow::Fail(libc::EFAULT));
        }
    }
    Some(Flow::Done(count))
}
