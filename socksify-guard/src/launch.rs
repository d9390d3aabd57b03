//! How a guarded run starts. Where the supervisor may live outside the program's tree (no
//! Yama, or its ptrace scope 0, or CAP_SYS_PTRACE), the program is the very process the shell
//! started (`run_detached`):
//!
//! ```text
//!   shell ── socksify → exec → the program (filter installed on itself) ── its children …
//!   init (or a subreaper) ── supervisor (its own session; ends with the filter's last process)
//! ```
//!
//! Under Yama's scope 1 the supervisor must be an ancestor of every process it acts for
//! (`pidfd_getfd` and `process_vm_readv` need ptrace rights, which that scope grants to
//! ancestors), so three processes stand in (`run`):
//!
//! ```text
//!   shell ── socksify (the "front": what the shell waits for; same pid as before)
//!               └── supervisor (subreaper: every orphan of the tree comes back to it)
//!                      └── the program (filter installed, then exec) ── its children …
//! ```
//!
//! There the shell must see the program's own life: it waits for the front, which ends with
//! the program's exit status (re-raising the signal that killed it), stops when the program
//! stops, and passes on the signals sent to it. All three share the shell's process group, so
//! the terminal's own signals (Ctrl-C, Ctrl-Z, SIGWINCH) reach the program directly.
//!
//! Either way the filter is installed by the program's process itself, before its `exec`, and
//! the supervisor outlives the program as long as any process under the filter lives (a
//! daemon the program started still has its calls trapped).

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::Arc;

use socksify_core::hosts::Hosts;
use socksify_core::router::Router;
use socksify_core::session::{Session, SESSION_ENV};
use socksify_core::Config;

use crate::log::{Level, Log};
use crate::notif::Listener;
use crate::policy::Policy;
use crate::supervisor::Supervisor;
use crate::sys;

/// What the program's process does when the filter cannot be installed.
pub enum Fallback {
    /// Run without the guard, after this warning (a dynamic program in auto mode).
    Warn(String),
    /// Do not run: print this and exit 126.
    Refuse(String),
}

pub struct Launch {
    pub argv: Vec<CString>,
    /// The program's environment, without the session variable (the supervisor adds it).
    pub env: Vec<CString>,
    pub config: Config,
    pub level: Level,
    pub fallback: Fallback,
    /// The program is a Go program: its connects are answered at once (`bpf::Filter::go`).
    pub go: bool,
}

const MSG_PID: i32 = 1;
const MSG_STOPPED: i32 = 2;
const MSG_EXITED: i32 = 4;

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both were just created for us.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    Ok((high(r)?, high(w)?))
}

/// Moves a descriptor of ours away from 0, 1 and 2, which may have been closed by whoever
/// started us: the program must find them as they were.
fn high(fd: OwnedFd) -> io::Result<OwnedFd> {
    if fd.as_raw_fd() > 2 {
        return Ok(fd);
    }
    // SAFETY: F_DUPFD_CLOEXEC of a descriptor we own.
    let new = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 10) };
    if new < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a descriptor just created for us.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

fn write_all(fd: RawFd, bytes: &[u8]) {
    let mut at = 0;
    while at < bytes.len() {
        // SAFETY: writing from a live slice.
        let n = unsafe { libc::write(fd, bytes[at..].as_ptr().cast(), bytes.len() - at) };
        if n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
            continue;
        }
        if n <= 0 {
            return;
        }
        at += n as usize;
    }
}

/// Reads exactly `buf.len()` bytes; false at EOF or on error.
fn read_full(fd: RawFd, buf: &mut [u8]) -> bool {
    let mut at = 0;
    while at < buf.len() {
        // SAFETY: reading into a live slice.
        let n = unsafe { libc::read(fd, buf[at..].as_mut_ptr().cast(), buf.len() - at) };
        if n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
            continue;
        }
        if n <= 0 {
            return false;
        }
        at += n as usize;
    }
    true
}

fn send_msg(fd: RawFd, kind: i32, value: i32) {
    let mut m = [0u8; 8];
    m[..4].copy_from_slice(&kind.to_ne_bytes());
    m[4..].copy_from_slice(&value.to_ne_bytes());
    write_all(fd, &m);
}

/// Whether the supervisor may live outside the program's tree, so that the program can be the
/// process the shell started (`run_detached`). It reads the program's memory and takes its
/// descriptors, which needs ptrace rights: Yama's scope 1 (Ubuntu's default) grants those to
/// ancestors only, unless the supervisor holds CAP_SYS_PTRACE. `SOCKSIFY_GUARD_FRONT=1` asks
/// for the front process anyway (how the tests reach that path on a machine without Yama).
pub fn detached_possible() -> bool {
    if std::env::var_os(FRONT_ENV).is_some_and(|v| v == "1") {
        return false;
    }
    // A subreaper keeps its flag across exec: the orphaned supervisor would come back to this
    // very process, the program, as a child it never made.
    let mut subreaper: libc::c_int = 0;
    // SAFETY: PR_GET_CHILD_SUBREAPER writes one int.
    if unsafe { libc::prctl(libc::PR_GET_CHILD_SUBREAPER, &mut subreaper as *mut libc::c_int) } != 0
        || subreaper != 0
    {
        return false;
    }
    match std::fs::read_to_string("/proc/sys/kernel/yama/ptrace_scope") {
        Err(_) => true,
        Ok(s) => match s.trim() {
            "0" => true,
            "1" | "2" => effective_cap(CAP_SYS_PTRACE),
            _ => false,
        },
    }
}

/// Asks for the three-process launch (`run`) even where the detached one is possible.
pub const FRONT_ENV: &str = "SOCKSIFY_GUARD_FRONT";

const CAP_SYS_PTRACE: u32 = 19;

fn effective_cap(cap: u32) -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .is_some_and(|mask| mask & (1u64 << cap) != 0)
}

const MSG_LISTENER: i32 = 8;
const MSG_UNGUARDED: i32 = 16;

/// Runs the program as this very process, under the guard, with the supervisor outside its
/// tree:
///
/// ```text
///   shell ── socksify, which becomes the program (filter installed, then exec) ── its children …
///   (init or a subreaper) ── supervisor (its own session; ends with the filter's last process)
/// ```
///
/// The supervisor is forked twice before the filter exists (so it is not under it, and is not
/// a child the program could wait for). This process makes the session meanwhile, installs
/// the filter and sends the listener to the supervisor over a socket, through the gate (the
/// one `sendmsg` the filter lets by) — nothing here waits for the supervisor — then execs.
/// Returns only when the guard could not be started, with the status to exit with, before
/// anything of the program ran.
pub fn run_detached(launch: Launch) -> i32 {
    #[cfg(target_arch = "x86_64")]
    let gate = socksify_core::sys::map_gate();
    #[cfg(not(target_arch = "x86_64"))]
    let gate: Result<bool, i32> = Err(libc::ENOSYS);
    if gate != Ok(true) {
        // No gate of our own (taken, or refused): the supervisor takes the listener itself.
        return run(launch);
    }
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() };
    let started = (|| -> io::Result<OwnedFd> {
        let me = high(sys::owned(sys::syscall!(libc::SYS_pidfd_open, pid, 0)?))?;
        let (ours, theirs) = socketpair()?;
        // SAFETY: this process is single-threaded; the child forks once more and exits, the
        // grandchild runs `supervise_detached`.
        match unsafe { libc::fork() } {
            -1 => Err(io::Error::last_os_error()),
            0 => {
                drop(ours);
                // SAFETY: as above.
                match unsafe { libc::fork() } {
                    0 => supervise_detached(&launch, (pid, me), theirs),
                    // SAFETY: leaving the intermediate process at once; its status says
                    // whether the supervisor exists.
                    -1 => unsafe { libc::_exit(1) },
                    // SAFETY: as above.
                    _ => unsafe { libc::_exit(0) },
                }
            }
            child => {
                INTERMEDIATE.store(child, Ordering::Relaxed);
                Ok(ours)
            }
        }
    })();
    let sock = match started {
        Ok(s) => s,
        Err(e) => return fail(&format!("cannot start the guard: {e}")),
    };
    // While the supervisor comes into being: the session, held for as long as the supervisor
    // lives (it is named after this process, which may end long before the program's tree).
    let made = Session::create(&launch.config).and_then(|s| match s.hold() {
        Ok(lock) => Ok((s, lock)),
        Err(e) => {
            s.remove();
            Err(e)
        }
    });
    let (session, lock) = match made {
        Ok(m) => m,
        Err(e) => {
            reap_intermediate();
            return fail(&format!("cannot make the session directory: {e}"));
        }
    };
    let env = with_session(&launch.env, Some(session.dir()));
    let start = prepare(&launch, &env, Some(&session));
    let dir = session.dir().as_os_str().as_bytes();
    let give = |fd: RawFd| {
        let sent = send_fds(sock.as_raw_fd(), MSG_LISTENER, dir, &[fd, lock.as_raw_fd()]);
        // SAFETY: closing our listener (once sent, the supervisor's copy is on the socket).
        unsafe { libc::close(fd) };
        if let Err(errno) = sent {
            // Under the filter with nobody to answer it: the program must not run.
            raw_write(b"socksify: cannot hand the kernel guard over to its supervisor: ");
            raw_errno(errno);
            session.remove();
            // SAFETY: leaving before the program runs.
            unsafe { libc::_exit(126) };
        }
    };
    let unguarded = |_| {
        // The supervisor only removes the session when the program has ended.
        let _ = send_fds(sock.as_raw_fd(), MSG_UNGUARDED, dir, &[lock.as_raw_fd()]);
    };
    let pending = sigchld_pending();
    install(&start, &give, &unguarded);
    // The intermediate process is gone before the program could see it as a child, and the
    // supervisor exists (else the listener sent is lost with the socket: the program must not
    // run).
    if !reap_intermediate() {
        raw_write(b"socksify: cannot start the guard's supervisor (fork failed)\n");
        session.remove();
        // SAFETY: leaving before the program runs.
        unsafe { libc::_exit(126) };
    }
    forget_sigchld(pending);
    exec_program(&start)
}

/// The intermediate process between this one and the detached supervisor.
static INTERMEDIATE: AtomicI32 = AtomicI32::new(0);

/// Reaps the intermediate process; false when it says it could not fork the supervisor.
fn reap_intermediate() -> bool {
    let child = INTERMEDIATE.swap(0, Ordering::Relaxed);
    if child <= 0 {
        return true;
    }
    let mut st = 0;
    // SAFETY: reaping our own child, which exits at once.
    while unsafe { libc::waitpid(child, &mut st, 0) } < 0 {
        if io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            return true; // SIGCHLD ignored by whoever started us: reaped by the kernel
        }
    }
    !(libc::WIFEXITED(st) && libc::WEXITSTATUS(st) != 0)
}

/// True when SIGCHLD is blocked and pending already (the caller's own).
fn sigchld_pending() -> bool {
    // SAFETY: sigset_t is plain old data; sigpending fills it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigpending(&mut set) == 0 && libc::sigismember(&set, libc::SIGCHLD) == 1
    }
}

/// A SIGCHLD that the intermediate process's exit left pending (SIGCHLD blocked by whoever
/// started us) is taken, unless one was pending before: the program must not find it.
fn forget_sigchld(was_pending: bool) {
    if was_pending || !sigchld_pending() {
        return;
    }
    let set = sigset([libc::SIGCHLD]);
    let zero = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: taking one pending, blocked signal without waiting.
    unsafe { libc::sigtimedwait(&set, std::ptr::null_mut(), &zero) };
}

fn socketpair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: socketpair fills two descriptors.
    if unsafe {
        libc::socketpair(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0, fds.as_mut_ptr())
    } != 0
    {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both were just created for us.
    let (a, b) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    Ok((high(a)?, high(b)?))
}

/// The longest message between the launcher and the supervisor: a kind and a session path.
const MSG_MAX: usize = 4 + 4096;

/// One message of `kind` and `bytes`, with descriptors `fds`, sent through the gate (the
/// filter may be installed already). Async-signal-safe: no allocation.
fn send_fds(sock: RawFd, kind: i32, bytes: &[u8], fds: &[RawFd]) -> Result<(), i32> {
    let mut body = [0u8; MSG_MAX];
    let len = 4 + bytes.len().min(MSG_MAX - 4);
    body[..4].copy_from_slice(&kind.to_ne_bytes());
    body[4..len].copy_from_slice(&bytes[..len - 4]);
    let mut iov = libc::iovec { iov_base: body.as_mut_ptr().cast(), iov_len: len };
    // Room for two descriptors' control message, 8-byte aligned.
    let mut control = [0u64; 4];
    let fds = &fds[..fds.len().min(2)];
    // SAFETY: msghdr is plain old data.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    // SAFETY: CMSG_SPACE/CMSG_LEN are arithmetic.
    msg.msg_controllen = unsafe { libc::CMSG_SPACE(std::mem::size_of_val(fds) as u32) } as usize;
    // SAFETY: the control buffer holds one header and `fds`, as CMSG_SPACE measured.
    unsafe {
        let c = libc::CMSG_FIRSTHDR(&msg);
        (*c).cmsg_level = libc::SOL_SOCKET;
        (*c).cmsg_type = libc::SCM_RIGHTS;
        (*c).cmsg_len = libc::CMSG_LEN(std::mem::size_of_val(fds) as u32) as usize;
        std::ptr::copy_nonoverlapping(fds.as_ptr(), libc::CMSG_DATA(c).cast::<RawFd>(), fds.len());
    }
    let args = [sock as usize, &msg as *const libc::msghdr as usize, libc::MSG_NOSIGNAL as usize, 0, 0, 0];
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the gate is mapped (`run_detached`); a sendmsg of a live header.
    let r = unsafe { socksify_core::sys::gated(libc::SYS_sendmsg, args) };
    #[cfg(not(target_arch = "x86_64"))]
    // SAFETY: as above, without the gate (never reached: `run_detached` needs it).
    let r = unsafe { socksify_core::sys::raw(libc::SYS_sendmsg, args) };
    if r < 0 {
        Err(-r as i32)
    } else {
        Ok(())
    }
}

/// The launcher's message: its kind, the session's directory and the descriptors with it.
fn recv_fds(sock: RawFd) -> Option<(i32, std::path::PathBuf, Vec<OwnedFd>)> {
    let mut body = vec![0u8; MSG_MAX];
    let mut iov = libc::iovec { iov_base: body.as_mut_ptr().cast(), iov_len: body.len() };
    let mut control = [0u64; 8];
    // SAFETY: msghdr is plain old data.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control);
    let n = loop {
        // SAFETY: recvmsg into live buffers.
        let n = unsafe { libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
            continue;
        }
        break n;
    };
    let mut fds = Vec::new();
    // SAFETY: walking the control messages the kernel wrote into `control`.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let count =
                    ((*c).cmsg_len as usize - libc::CMSG_LEN(0) as usize) / std::mem::size_of::<RawFd>();
                let data = libc::CMSG_DATA(c).cast::<RawFd>();
                for i in 0..count {
                    fds.push(OwnedFd::from_raw_fd(data.add(i).read_unaligned()));
                }
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    // Standard descriptors the program was started without are the program's numbers: ours
    // go above them (a later dup2 of /dev/null onto 2 must not close the listener).
    let fds: Vec<OwnedFd> = fds.into_iter().filter_map(|fd| high(fd).ok()).collect();
    if msg.msg_flags & libc::MSG_CTRUNC != 0 {
        return None;
    }
    if n < 4 {
        return None;
    }
    let kind = i32::from_ne_bytes(body[..4].try_into().expect("4 bytes"));
    let dir = std::path::PathBuf::from(std::ffi::OsString::from_vec(body[4..n as usize].to_vec()));
    Some((kind, dir, fds))
}

/// The detached supervisor: takes the listener and the session, serves the filter's processes
/// until none is left, then removes the session.
fn supervise_detached(launch: &Launch, (root, program): (libc::pid_t, OwnedFd), sock: OwnedFd) -> ! {
    // Out of the program's session and process group: the terminal's signals and the shell's
    // job control are the program's business. Nothing of the program's may reach into the
    // supervisor (ptrace, process_vm_writev, /proc/PID/mem).
    // SAFETY: setsid and prctl with constant arguments, in a new process.
    unsafe {
        libc::setsid();
        libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
    }
    ignore_job_signals();
    to_dev_null(&[0, 1]);
    // Whatever else the program was given (a pipe its parent waits to see closed) is the
    // program's alone.
    close_others(&[program.as_raw_fd(), sock.as_raw_fd()]);
    let Some((kind, dir, mut fds)) = recv_fds(sock.as_raw_fd()) else {
        // The launcher failed before the program could run (and said so).
        // SAFETY: ending the supervisor.
        unsafe { libc::_exit(0) }
    };
    drop(sock);
    let want = if kind == MSG_LISTENER { 2 } else { 1 };
    if fds.len() != want {
        // The listener did not arrive whole (no descriptor left here?): nobody can answer the
        // program's calls, which fail (ENOSYS) — said once, while stderr is still its.
        eprintln!("socksify: the guard's supervisor did not receive the filter's listener; the program's network calls fail");
        // SAFETY: ending the supervisor.
        unsafe { libc::_exit(0) }
    }
    // The session is this process's to remove now; the hold (the last descriptor) keeps it
    // from being swept while this process lives.
    let mut session = match Session::adopt(&dir, &launch.config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!(
                "socksify: the guard's supervisor cannot open the session {}: {e}; the program's network calls fail",
                dir.display()
            );
            // SAFETY: ending the supervisor (the listener closes: trapped calls fail).
            unsafe { libc::_exit(0) }
        }
    };
    let _hold = fds.pop();
    let Some(listener) = fds.pop() else {
        // No filter (an outer guard has the program, or none could be installed and the
        // program runs with the library only, or not at all): the session lasts as long as
        // the program.
        wait_for(program.as_raw_fd(), libc::POLLIN);
        session.remove();
        // SAFETY: ending the supervisor.
        unsafe { libc::_exit(0) }
    };
    let (policy, chain, log) = supervisor_parts(launch, Some(&mut session));
    let sup =
        Arc::new(Supervisor::new(Listener::new(listener), policy, chain, log).below(root).with_go(launch.go));
    let running = sup.clone();
    if let Err(e) = std::thread::Builder::new().name("guard".into()).spawn(move || running.run()) {
        eprintln!("socksify: the guard's supervisor cannot start: {e}; the program's network calls fail");
        session.remove();
        // SAFETY: ending the supervisor (the listener closes: trapped calls fail).
        unsafe { libc::_exit(0) }
    }
    // The program ended: whatever it left running must not keep its stderr open (a pipe
    // reading it would never end). Their log lines go to log_file only, if there is one.
    wait_for(program.as_raw_fd(), libc::POLLIN);
    // Its pid may be anyone's from now on.
    sup.tree_root.store(-1, Ordering::Release);
    sup.log.detach_stderr();
    to_dev_null(&[2]);
    // The last process under the filter is gone when the listener hangs up.
    wait_for(sup.listener.raw(), 0);
    session.remove();
    // SAFETY: ending the supervisor (its threads with it).
    unsafe { libc::_exit(0) }
}

/// Closes every descriptor above 2 but `keep`.
fn close_others(keep: &[RawFd]) {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else { return };
    let fds: Vec<RawFd> = dir.flatten().filter_map(|e| e.file_name().to_str()?.parse().ok()).collect();
    for fd in fds.into_iter().filter(|fd| *fd > 2 && !keep.contains(fd)) {
        // SAFETY: closing a descriptor of this new process that nothing in it uses (the
        // directory's own is gone already, or refused harmlessly with EBADF).
        unsafe { libc::close(fd) };
    }
}

/// Waits until `fd` polls with one of `events`, or hung up (`events` 0: hung up only).
fn wait_for(fd: RawFd, events: libc::c_short) {
    let mut pfd = libc::pollfd { fd, events, revents: 0 };
    // SAFETY: poll on one local pollfd.
    while unsafe { libc::poll(&mut pfd, 1, -1) } < 0 {
        if io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            return;
        }
    }
}

/// Runs the program under the guard; returns the exit status for the front to exit with (or
/// never returns, when the program was killed by a signal that the front re-raises).
pub fn run(launch: Launch) -> i32 {
    // Nothing of the program's may reach into socksify's own processes (ptrace,
    // process_vm_writev, /proc/PID/mem): the front and the supervisor are not dumpable.
    // SAFETY: prctl with constant arguments.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    let (status_r, status_w) = match pipe() {
        Ok(p) => p,
        Err(e) => return fail(&format!("cannot start the guard: {e}")),
    };
    let (alive_r, alive_w) = match pipe() {
        Ok(p) => p,
        Err(e) => return fail(&format!("cannot start the guard: {e}")),
    };
    // The front takes the signals it passes on from before the supervisor (and the program)
    // exist: one sent the moment the program runs must not find the default action here.
    let set = forwarded();
    // SAFETY: sigset_t is plain old data.
    let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: blocking signals of this (single-threaded) process; the old mask is kept.
    unsafe { libc::sigprocmask(libc::SIG_BLOCK, &set, &mut old) };
    // SAFETY: this process is single-threaded here; the child only runs `supervise`.
    match unsafe { libc::fork() } {
        -1 => {
            // SAFETY: restoring the mask of before.
            unsafe { libc::sigprocmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
            fail(&format!("cannot start the guard: {}", io::Error::last_os_error()))
        }
        0 => {
            // The supervisor, and so the program, start with the mask socksify was given.
            // SAFETY: restoring the mask of before, in the new process.
            unsafe { libc::sigprocmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
            drop(status_r);
            drop(alive_w);
            supervise(launch, status_w, alive_r)
        }
        supervisor => {
            drop(status_w);
            drop(alive_r);
            // The front keeps `alive_w` open until it exits: the supervisor sees it go.
            let code = front(status_r, supervisor);
            drop(alive_w);
            code
        }
    }
}

fn fail(msg: &str) -> i32 {
    eprintln!("socksify: {msg}");
    126
}

/// The signals the front cannot take: every other one is passed on to the program.
const NOT_FORWARDED: &[libc::c_int] = &[libc::SIGKILL, libc::SIGSTOP, libc::SIGCHLD];

fn sigset(signals: impl IntoIterator<Item = libc::c_int>) -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset on a local set (glibc refuses its two internal signals).
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in signals {
            libc::sigaddset(&mut set, s);
        }
        set
    }
}

fn forwarded() -> libc::sigset_t {
    sigset((1..=libc::SIGRTMAX()).filter(|s| !NOT_FORWARDED.contains(s)))
}

/// The process the shell waits for: mirrors the program's stops and exit, passes signals on.
fn front(status: OwnedFd, supervisor: libc::pid_t) -> i32 {
    // The signals are blocked already (`run`): a signalfd takes them.
    let set = forwarded();
    // SAFETY: a new signalfd for a local set.
    let sigfd = unsafe { libc::signalfd(-1, &set, libc::SFD_CLOEXEC) };
    // SAFETY: taking ownership of the signalfd just made.
    let sigfd = (sigfd >= 0).then(|| high(unsafe { OwnedFd::from_raw_fd(sigfd) }).ok()).flatten();
    // Neither stdin nor stdout is the front's business: a pipe the program writes to must end
    // when the program's end of it does.
    to_dev_null(&[0, 1]);
    let mut program: libc::pid_t = 0;
    // Signals that came before the program's pid did: passed on as soon as it is known.
    let mut early: Vec<libc::signalfd_siginfo> = Vec::new();
    loop {
        let mut fds = [
            libc::pollfd { fd: status.as_raw_fd(), events: libc::POLLIN, revents: 0 },
            libc::pollfd {
                fd: sigfd.as_ref().map_or(-1, |f| f.as_raw_fd()),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: poll over a local array.
        let r = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
        if r < 0 {
            continue;
        }
        if fds[1].revents & libc::POLLIN != 0 {
            // SAFETY: signalfd_siginfo is plain old data, read whole from the signalfd.
            let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
            // SAFETY: reading one struct from the signalfd.
            let n = unsafe {
                libc::read(
                    fds[1].fd,
                    (&mut info as *mut libc::signalfd_siginfo).cast(),
                    std::mem::size_of_val(&info),
                )
            };
            if n == std::mem::size_of_val(&info) as isize {
                if program > 0 {
                    forward(&info, program, supervisor);
                } else if early.len() < 64 {
                    early.push(info);
                }
            }
        }
        if fds[0].revents & (libc::POLLIN | libc::POLLHUP) != 0 {
            let mut m = [0u8; 8];
            if !read_full(status.as_raw_fd(), &mut m) {
                eprintln!("socksify: the guard's supervisor ended unexpectedly; the program's network calls now fail");
                wait_for_exit(program);
                return 1;
            }
            let kind = i32::from_ne_bytes(m[..4].try_into().expect("4 bytes"));
            let value = i32::from_ne_bytes(m[4..].try_into().expect("4 bytes"));
            match kind {
                MSG_PID => {
                    program = value;
                    for info in early.drain(..) {
                        forward(&info, program, supervisor);
                    }
                }
                MSG_STOPPED => mirror_stop(program, value),
                MSG_EXITED => {
                    return exit_like(value);
                }
                _ => {}
            }
        }
    }
}

/// Waits for a process that is not our child to end (the shell keeps waiting for it).
fn wait_for_exit(pid: libc::pid_t) {
    if pid <= 0 {
        return;
    }
    // A pidfd is readable when the process has ended.
    if let Ok(fd) = sys::syscall!(libc::SYS_pidfd_open, pid, 0) {
        wait_for(sys::owned(fd).as_raw_fd(), libc::POLLIN);
    }
}

/// Passes a signal on, unless the program has it already: the terminal sent it to the whole
/// process group (SI_KERNEL), or a process of the program's tree sent it.
fn forward(info: &libc::signalfd_siginfo, program: libc::pid_t, supervisor: libc::pid_t) {
    const SI_KERNEL: i32 = 0x80;
    if info.ssi_code == SI_KERNEL {
        return;
    }
    let sender = info.ssi_pid as libc::pid_t;
    if sender > 0 && crate::sys::descends_from(sender, &[program, supervisor]) {
        return;
    }
    // SAFETY: a signal to the program's process.
    unsafe { libc::kill(program, info.ssi_signo as libc::c_int) };
}

/// The program stopped: the front stops too (so the shell sees the job stopped), with the same
/// signal, unless it has been continued already (a terminal stop stopped the front as well —
/// the signal was blocked there, so it is raised now — and `fg` may have woken both).
fn mirror_stop(program: libc::pid_t, sig: i32) {
    let state = std::fs::read_to_string(format!("/proc/{program}/stat")).unwrap_or_default();
    let stopped = state.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with(['T', 't']));
    if !stopped {
        return;
    }
    let own = if matches!(sig, libc::SIGTSTP | libc::SIGTTIN | libc::SIGTTOU) { sig } else { libc::SIGSTOP };
    let one = sigset([own]);
    // SAFETY: the stop signal, let through for the moment it takes to stop this process.
    unsafe {
        libc::kill(libc::getpid(), own);
        libc::sigprocmask(libc::SIG_UNBLOCK, &one, std::ptr::null_mut());
        libc::sigprocmask(libc::SIG_BLOCK, &one, std::ptr::null_mut());
    }
}

/// Ends the front as the program ended: its exit code, or its signal (re-raised, no core).
fn exit_like(status: i32) -> i32 {
    if libc::WIFEXITED(status) {
        return libc::WEXITSTATUS(status);
    }
    if libc::WIFSIGNALED(status) {
        let sig = libc::WTERMSIG(status);
        // SAFETY: no core file for the front, the default action, unblocked, then the signal.
        unsafe {
            let none = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
            libc::setrlimit(libc::RLIMIT_CORE, &none);
            libc::signal(sig, libc::SIG_DFL);
            let set = sigset([sig]);
            libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
            libc::kill(libc::getpid(), sig);
        }
        return 128 + sig;
    }
    1
}

fn to_dev_null(fds: &[RawFd]) {
    // SAFETY: opening /dev/null and putting it in place of standard descriptors.
    unsafe {
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC);
        if null < 0 {
            return;
        }
        for &fd in fds {
            libc::dup2(null, fd);
        }
        libc::close(null);
    }
}

/// The supervisor's process: starts the program, then serves its tree until the tree is gone.
fn supervise(launch: Launch, status: OwnedFd, alive: OwnedFd) -> ! {
    // SAFETY: getppid has no preconditions; the front is our parent now.
    let front = unsafe { libc::getppid() };
    // A pidfd of the front, to wake it (SIGCONT) without ever signalling a reused pid.
    let front_fd = sys::syscall!(libc::SYS_pidfd_open, front, 0).ok().map(sys::owned);
    // SAFETY: prctl with constant arguments.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    // The session holds the configuration every library in the tree reads: without it the
    // program could not be socksified at all.
    let mut session = match Session::create(&launch.config) {
        Ok(s) => Some(s),
        Err(e) => die(&format!("cannot make the session directory: {e}")),
    };
    let env = with_session(&launch.env, session.as_ref().map(|s| s.dir()));
    // Everything the supervisor needs is ready before the program starts: nothing then competes
    // with the program (or with the reaping of a program that ends at once).
    let parts = supervisor_parts(&launch, session.as_mut());
    let (child, listener) = start_program(&launch, &env, session.as_ref());
    if child < 0 {
        die(&format!("cannot start the program: {}", io::Error::from_raw_os_error(-child)));
    }
    send_msg(status.as_raw_fd(), MSG_PID, child);
    to_dev_null(&[0, 1]);
    ignore_job_signals();
    watch_front(alive, child, front);
    // The reaper is this thread: it must see the program end as soon as it does. The
    // supervisor is made ready on its own thread meanwhile.
    let sup = listener.map(|fd| {
        let (policy, chain, log) = parts;
        let sup = Arc::new(Supervisor::new(Listener::new(fd), policy, chain, log).with_go(launch.go));
        let running = sup.clone();
        let _ = std::thread::Builder::new().name("guard".into()).spawn(move || running.run());
        sup
    });
    reap(child, &status, front_fd.as_ref(), || {
        // The program ended: whatever it left running must not keep its stderr open (a pipe
        // reading it would never end). Their log lines go to log_file only, if there is one.
        if let Some(sup) = &sup {
            sup.log.detach_stderr();
        }
        to_dev_null(&[2]);
    });
    if let Some(s) = &session {
        s.remove();
    }
    // SAFETY: ending the supervisor without running the front's destructors twice.
    unsafe { libc::_exit(0) }
}

/// What the program's process gets from the supervisor: everything prepared beforehand, since
/// it runs in the supervisor's memory (CLONE_VM) until it execs and must not allocate.
struct Start {
    prog: Vec<libc::sock_filter>,
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
    /// Out: the listener's descriptor (in the shared table), or -errno.
    listener: AtomicI32,
    session: Option<*const Session>,
    /// Printed when the filter cannot be installed (and the program runs without it).
    warn: Vec<u8>,
    /// Printed when the filter cannot be installed and the program must not run.
    refuse: Option<Vec<u8>>,
    nested: Option<Vec<u8>>,
    cannot_run: Vec<u8>,
}

/// Everything `enter` reads, prepared beforehand (it may run in the supervisor's memory).
fn prepare(launch: &Launch, env: &[CString], session: Option<&Session>) -> Start {
    let ptrs = |v: &[CString]| v.iter().map(|c| c.as_ptr()).chain([std::ptr::null()]).collect::<Vec<_>>();
    let name = launch.argv[0].to_string_lossy();
    let (warn, refuse) = match &launch.fallback {
        Fallback::Warn(w) => {
            (format!("socksify: warning: the kernel guard cannot be installed; {w}\n"), None)
        }
        Fallback::Refuse(r) => (
            String::new(),
            Some(format!("socksify: the kernel guard cannot be installed; {r}\n").into_bytes()),
        ),
    };
    Start {
        prog: crate::bpf::program(crate::bpf::Filter { go: launch.go }),
        argv: ptrs(&launch.argv),
        envp: ptrs(env),
        listener: AtomicI32::new(-libc::EINVAL),
        session: session.map(|s| s as *const Session),
        warn: warn.into_bytes(),
        refuse,
        nested: (launch.level >= Level::Normal).then(|| {
            b"socksify: note: already under an outer socksify's guard: calls the library does not proxy take the outer one's proxies\n".to_vec()
        }),
        cannot_run: format!("socksify: cannot run {name}: ").into_bytes(),
    }
}

/// The program's environment: `env` and the session's variable.
fn with_session(env: &[CString], dir: Option<&std::path::Path>) -> Vec<CString> {
    let mut env = env.to_vec();
    if let Some(dir) = dir {
        let mut kv = format!("{SESSION_ENV}=").into_bytes();
        kv.extend_from_slice(dir.as_os_str().as_encoded_bytes());
        if let Ok(c) = CString::new(kv) {
            env.push(c);
        }
    }
    env
}

/// Starts the program's process: it shares the supervisor's memory and descriptor table until
/// it execs (CLONE_VM | CLONE_VFORK | CLONE_FILES, as posix_spawn does), so the listener the
/// filter returns is in the supervisor's table already — no hand-over, no second copy of the
/// address space. Returns the program's pid (or -errno) and the listener, if installed.
fn start_program(
    launch: &Launch,
    env: &[CString],
    session: Option<&Session>,
) -> (libc::pid_t, Option<OwnedFd>) {
    let start = prepare(launch, env, session);
    let mut stack = vec![0u8; 256 * 1024];
    // SAFETY: the top of our stack buffer, 16-byte aligned as the ABI wants.
    let top = unsafe { stack.as_mut_ptr().add(stack.len()) as usize & !15 } as *mut libc::c_void;
    // SAFETY: the child runs `program_process` on its own stack in our memory; CLONE_VFORK
    // suspends this thread until it execs or exits, so nothing else touches what it reads.
    // No signal handler of ours is installed yet.
    let pid = unsafe {
        libc::clone(
            program_process,
            top,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::CLONE_FILES | libc::SIGCHLD,
            &start as *const Start as *mut libc::c_void,
        )
    };
    if pid < 0 {
        return (-io::Error::last_os_error().raw_os_error().unwrap_or(libc::EAGAIN), None);
    }
    drop(stack);
    let fd = start.listener.load(Ordering::Acquire);
    // SAFETY: the filter's listener, created in our descriptor table by the child.
    (pid, (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) }))
}

fn raw_write(bytes: &[u8]) {
    // SAFETY: a write from a live slice to stderr; async-signal-safe.
    unsafe { libc::write(2, bytes.as_ptr().cast(), bytes.len()) };
}

/// In the program's process, between clone and exec (the three-process launch).
extern "C" fn program_process(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the supervisor's `Start`, alive (the supervisor waits: CLONE_VFORK).
    let start = unsafe { &*(arg as *const Start) };
    // The descriptor is in the table we share with the supervisor: it keeps it.
    let give = |fd: RawFd| start.listener.store(fd, Ordering::Release);
    let unguarded = |errno: i32| start.listener.store(-errno, Ordering::Release);
    enter(start, &give, &unguarded)
}

/// Installs the filter, gives its listener to the supervisor (or says there is none), then
/// execs the program. It may run in the supervisor's memory, so it only reads what `Start`
/// prepared, makes system calls and calls `give` and `unguarded`.
fn enter(start: &Start, give: &dyn Fn(RawFd), unguarded: &dyn Fn(i32)) -> ! {
    install(start, give, unguarded);
    exec_program(start)
}

/// Installs the filter and gives its listener to the supervisor, or tells it there is none
/// (and leaves, when the program must not run without the filter).
fn install(start: &Start, give: &dyn Fn(RawFd), unguarded: &dyn Fn(i32)) {
    match crate::bpf::install(&start.prog) {
        Ok(listener) => {
            give(listener.into_raw_fd());
            if let Some(session) = start.session {
                // SAFETY: the session of whoever prepared `start` (the supervisor, waiting for
                // us, or this very process), alive until the exec.
                unsafe { (*session).mark_guarded() };
            }
        }
        Err(errno) => {
            unguarded(errno);
            if errno == libc::EBUSY {
                // Already under a guard (an outer socksify's): that one keeps enforcing.
                if let Some(m) = &start.nested {
                    raw_write(m);
                }
            } else if let Some(refuse) = &start.refuse {
                raw_write(refuse);
                // SAFETY: leaving the child at once.
                unsafe { libc::_exit(126) };
            } else {
                raw_write(&start.warn);
            }
        }
    }
}

/// execvpe, and the shell's statuses if it fails (127: not found, 126: not runnable).
fn exec_program(start: &Start) -> ! {
    // SAFETY: NUL-terminated arrays prepared in `prepare`, alive until the exec.
    unsafe { libc::execvpe(start.argv[0], start.argv.as_ptr(), start.envp.as_ptr()) };
    let errno = io::Error::last_os_error().raw_os_error().unwrap_or(libc::ENOENT);
    raw_write(&start.cannot_run);
    raw_errno(errno);
    // SAFETY: leaving the child (the shell's statuses: 127 not found, 126 not runnable).
    unsafe { libc::_exit(if errno == libc::ENOENT { 127 } else { 126 }) }
}

/// strerror's message for `errno`, and a newline, to stderr.
fn raw_errno(errno: i32) {
    // SAFETY: strerror's static message for this errno.
    let msg = unsafe { std::ffi::CStr::from_ptr(libc::strerror(errno)) };
    raw_write(msg.to_bytes());
    raw_write(b"\n");
}

/// The supervisor ignores what the terminal and the shell send the job.
fn ignore_job_signals() {
    for sig in [
        libc::SIGINT,
        libc::SIGQUIT,
        libc::SIGTSTP,
        libc::SIGTTIN,
        libc::SIGTTOU,
        libc::SIGHUP,
        libc::SIGTERM,
        libc::SIGPIPE,
    ] {
        // SAFETY: setting a signal's disposition to "ignore".
        unsafe { libc::signal(sig, libc::SIG_IGN) };
    }
}

fn die(msg: &str) -> ! {
    eprintln!("socksify: {msg}");
    // SAFETY: leaving the forked process at once.
    unsafe { libc::_exit(126) }
}

/// The supervisor's policy (over the session's fake table), chain and log.
fn supervisor_parts(
    launch: &Launch,
    session: Option<&mut Session>,
) -> (Arc<Policy>, Vec<socksify_core::Chain>, Log) {
    let config = &launch.config;
    let hops = session.as_ref().map(|s| s.hops());
    let fake = session.and_then(|s| s.take_fake());
    let router = match fake {
        Some(f) => Router::with_fake(config.clone(), Hosts::load_system(), Some(f)),
        None => {
            match Router::new(config.clone(), Hosts::load_system(), socksify_core::fakedns::DEFAULT_CAPACITY)
            {
                Ok(r) => r,
                Err(e) => die(&format!("cannot map the fake address table: {e}")),
            }
        }
    };
    let nameservers = socksify_core::resolvconf::system_nameservers();
    let policy = Arc::new(Policy::new(router, nameservers));
    let log = Log::new(launch.level, config.log_file.as_deref())
        .with_json(config.log_format == socksify_core::config::LogFormat::Json);
    (policy, config.chains_remembering(hops), log)
}

/// The program, for the signal handler below.
static PROGRAM: AtomicI32 = AtomicI32::new(0);
static PROGRAM_DONE: AtomicBool = AtomicBool::new(false);

/// The front's pid: the death signal is real only once our parent is someone else.
static FRONT: AtomicI32 = AtomicI32::new(0);

extern "C" fn front_died(_: libc::c_int) {
    let pid = PROGRAM.load(Ordering::Acquire);
    // SAFETY: getppid is async-signal-safe.
    let gone = unsafe { libc::getppid() } != FRONT.load(Ordering::Acquire);
    if gone && pid > 0 && !PROGRAM_DONE.load(Ordering::Acquire) {
        // SAFETY: kill is async-signal-safe; the program is our child, not yet reaped.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}

/// If the front is killed (SIGKILL, which it cannot pass on), the program is killed too, as
/// it would have been without socksify: the kernel signals us when the front (our parent)
/// dies, and the handler kills the program. (`alive` closes with the front: if it died before
/// the death signal was armed, its end is closed already.)
fn watch_front(alive: OwnedFd, child: libc::pid_t, front: libc::pid_t) {
    PROGRAM.store(child, Ordering::Release);
    FRONT.store(front, Ordering::Release);
    // SAFETY: a handler that only reads atomics and calls kill; then the death signal.
    unsafe {
        libc::signal(libc::SIGUSR1, front_died as *const () as libc::sighandler_t);
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGUSR1, 0, 0, 0);
    }
    let mut pfd = libc::pollfd { fd: alive.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    // SAFETY: a zero-timeout poll on our own pipe.
    if unsafe { libc::poll(&mut pfd, 1, 0) } > 0 {
        front_died(0);
    }
    std::mem::forget(alive); // open until we exit: its end tells nothing more
}

/// Reaps the tree (orphans come to us: we are their subreaper) until no process is left,
/// telling the front how the program stops and ends.
fn reap(child: libc::pid_t, status: &OwnedFd, front: Option<&OwnedFd>, mut program_ended: impl FnMut()) {
    loop {
        let mut st = 0;
        // SAFETY: waiting for any child of ours.
        let pid = unsafe { libc::waitpid(-1, &mut st, libc::__WALL | libc::WUNTRACED | libc::WCONTINUED) };
        if pid < 0 {
            match io::Error::last_os_error().raw_os_error() {
                Some(libc::EINTR) => continue,
                _ => return, // ECHILD: the tree is gone
            }
        }
        if pid != child {
            continue;
        }
        if libc::WIFSTOPPED(st) {
            send_msg(status.as_raw_fd(), MSG_STOPPED, libc::WSTOPSIG(st));
        } else if libc::WIFCONTINUED(st) {
            // Someone continued the program: the front, stopped to mirror it, goes on too.
            if let Some(f) = front {
                // SAFETY: pidfd_send_signal to the front's pidfd.
                unsafe { libc::syscall(libc::SYS_pidfd_send_signal, f.as_raw_fd(), libc::SIGCONT, 0, 0) };
            }
        } else if libc::WIFEXITED(st) || libc::WIFSIGNALED(st) {
            // Before the front hears of it (and exits, which signals us): the program's pid is
            // free now and must never be killed again.
            PROGRAM_DONE.store(true, Ordering::Release);
            send_msg(status.as_raw_fd(), MSG_EXITED, st);
            program_ended();
        }
    }
}

/// execvpe, with the shell's statuses on failure (127: not found, 126: not runnable).
pub fn exec(argv: &[CString], env: &[CString]) -> ! {
    let ptrs = |v: &[CString]| v.iter().map(|c| c.as_ptr()).chain([std::ptr::null()]).collect::<Vec<_>>();
    let (a, e) = (ptrs(argv), ptrs(env));
    // SAFETY: NUL-terminated argument and environment arrays that outlive the call.
    unsafe { libc::execvpe(a[0], a.as_ptr(), e.as_ptr()) };
    let err = io::Error::last_os_error();
    eprintln!("socksify: cannot run {}: {err}", argv[0].to_string_lossy());
    let code = if err.kind() == io::ErrorKind::NotFound { 127 } else { 126 };
    // SAFETY: leaving the forked process.
    unsafe { libc::_exit(code) }
}
