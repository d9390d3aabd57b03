//! Every system call the client makes, in one place.
//!
//! They are issued with the `syscall` instruction itself ([`raw`]) rather than through libc: a
//! preload library that embeds this crate exports hooks named `connect`, `recv`, `close`… and
//! `syscall`, and a call through any libc symbol could land back in those hooks.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use socket2::SockAddr;

/// System call `nr` with up to six arguments, made with the CPU's system-call instruction:
/// never through libc's `syscall` symbol (which a preload library's own hook may shadow).
/// Returns the kernel's result: a negative errno on failure.
///
/// # Safety
/// The arguments of system call `nr`: pointers must be valid for what the call does with them.
#[inline]
pub unsafe fn raw(nr: libc::c_long, args: [usize; 6]) -> isize {
    let ret: isize;
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the x86_64 Linux system-call convention; the kernel clobbers rcx and r11 only.
    unsafe {
        std::arch::asm!(
            "syscall",
            inlateout("rax") nr as isize => ret,
            in("rdi") args[0],
            in("rsi") args[1],
            in("rdx") args[2],
            in("r10") args[3],
            in("r8") args[4],
            in("r9") args[5],
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    #[cfg(target_arch = "aarch64")]
    // SAFETY: the aarch64 Linux system-call convention (number in x8, result in x0).
    unsafe {
        std::arch::asm!(
            "svc 0",
            in("x8") nr,
            inlateout("x0") args[0] as isize => ret,
            in("x1") args[1],
            in("x2") args[2],
            in("x3") args[3],
            in("x4") args[4],
            in("x5") args[5],
            options(nostack),
        );
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    compile_error!("socksify's raw system calls are written for x86_64 and aarch64");
    ret
}

/// System call `nr` made from the gate's page (`session::GATE_ADDR`, `syscall; ret`), which
/// the kernel guard's filter lets through; the caller has mapped it there. Returns the
/// kernel's result, as [`raw`].
///
/// # Safety
/// The gate's code is mapped at `GATE_ADDR`; the arguments are those of system call `nr`.
#[cfg(target_arch = "x86_64")]
#[inline]
pub unsafe fn gated(nr: libc::c_long, args: [usize; 6]) -> isize {
    let ret: isize;
    // SAFETY: the gate is `syscall; ret`: a call to it is the system call with the x86_64
    // convention (rcx and r11 clobbered), and its return address is pushed on our stack (no
    // `nostack`: the compiler keeps the red zone free).
    unsafe {
        std::arch::asm!(
            "call {gate}",
            gate = in(reg) crate::session::GATE_ADDR,
            inlateout("rax") nr as isize => ret,
            in("rdi") args[0],
            in("rsi") args[1],
            in("rdx") args[2],
            in("r10") args[3],
            in("r8") args[4],
            in("r9") args[5],
            lateout("rcx") _,
            lateout("r11") _,
        );
    }
    ret
}

/// Maps the gate's page at `session::GATE_ADDR` (x86_64): `Ok(true)` when it is there now,
/// `Ok(false)` when the address is taken (by a copy of the gate after `fork`, or by anything
/// else: `taken` is for the caller to check), `Err(errno)` when it cannot be made (an old
/// kernel that took the address as a hint, or a refused executable page: nothing is left).
#[cfg(target_arch = "x86_64")]
pub fn map_gate() -> Result<bool, i32> {
    use crate::session::{GATE_ADDR, GATE_CODE};
    const PAGE: usize = 4096;
    let at = GATE_ADDR as usize;
    let prot = (libc::PROT_READ | libc::PROT_WRITE) as usize;
    let flags = (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE) as usize;
    // SAFETY: an anonymous private mapping at an address nothing else may hold
    // (MAP_FIXED_NOREPLACE fails rather than replace a mapping).
    let r = unsafe { raw(libc::SYS_mmap, [at, PAGE, prot, flags, usize::MAX, 0]) };
    if r == -(libc::EEXIST as isize) {
        return Ok(false);
    }
    if r < 0 {
        return Err(-r as i32);
    }
    if r as usize != at {
        // SAFETY: unmaps the page just mapped (elsewhere than asked).
        unsafe { raw(libc::SYS_munmap, [r as usize, PAGE, 0, 0, 0, 0]) };
        return Err(libc::EEXIST);
    }
    // SAFETY: the page is ours, writable, and GATE_CODE fits in it.
    unsafe { std::ptr::copy_nonoverlapping(GATE_CODE.as_ptr(), at as *mut u8, GATE_CODE.len()) };
    let rx = (libc::PROT_READ | libc::PROT_EXEC) as usize;
    // SAFETY: our page becomes read-only code.
    let r = unsafe { raw(libc::SYS_mprotect, [at, PAGE, rx, 0, 0, 0]) };
    if r < 0 {
        // Refused (MemoryDenyWriteExecute, a sandbox): no page left behind.
        // SAFETY: unmaps the page just mapped.
        unsafe { raw(libc::SYS_munmap, [at, PAGE, 0, 0, 0, 0]) };
        return Err(-r as i32);
    }
    Ok(true)
}

/// [`raw`] as libc's `syscall` answers: the result, or -1 with the thread's errno set.
///
/// # Safety
/// As for [`raw`].
pub unsafe fn syscall(nr: libc::c_long, args: [usize; 6]) -> libc::c_long {
    // SAFETY: the caller's arguments.
    let r = unsafe { raw(nr, args) };
    if (-4095..0).contains(&r) {
        // SAFETY: __errno_location always returns this thread's errno.
        unsafe { *libc::__errno_location() = -r as i32 };
        -1
    } else {
        r as libc::c_long
    }
}

/// The arguments of a system call as the kernel takes them (integers and pointers alike).
#[macro_export]
macro_rules! sys_args {
    ($($arg:expr),* $(,)?) => {{
        let mut a = [0usize; 6];
        let given = [$($arg as usize),*];
        a[..given.len()].copy_from_slice(&given);
        a
    }};
}

/// A system call that turns a failure into an `io::Error`.
macro_rules! syscall {
    ($nr:expr $(, $arg:expr)* $(,)?) => {{
        // SAFETY: a raw system call with arguments the caller has checked; the kernel validates
        // every pointer and descriptor and reports bad ones through errno, never by faulting.
        let r = unsafe { raw($nr, $crate::sys_args!($($arg),*)) };
        if r < 0 { Err(io::Error::from_raw_os_error(-r as i32)) } else { Ok(r as libc::c_long) }
    }};
}

fn get_flags(fd: RawFd) -> io::Result<libc::c_long> {
    syscall!(libc::SYS_fcntl, fd, libc::F_GETFL)
}

fn set_flags(fd: RawFd, flags: libc::c_long) -> io::Result<()> {
    syscall!(libc::SYS_fcntl, fd, libc::F_SETFL, flags).map(drop)
}

thread_local! {
    /// Asked when a wait of this thread is interrupted by a signal: `true` ends it with an
    /// error (see `interruptible`).
    static ON_SIGNAL: std::cell::Cell<Option<fn() -> bool>> = const { std::cell::Cell::new(None) };
    /// Set when a wait ended that way.
    static STOPPED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// True while a wait of this thread has ended because of a signal and nobody took it.
pub fn interrupted() -> bool {
    STOPPED.with(|c| c.get())
}

/// True (once) when a wait of this thread ended because of a signal (see `interruptible`).
pub fn take_interrupted() -> bool {
    STOPPED.with(|c| c.replace(false))
}

/// Runs `f` with this thread's waits ending in an error when a signal interrupts them and
/// `stop()` says so (a handler without SA_RESTART ran, say; `take_interrupted` then tells);
/// otherwise they resume.
pub fn interruptible<T>(stop: fn() -> bool, f: impl FnOnce() -> T) -> T {
    STOPPED.with(|c| c.set(false));
    let before = ON_SIGNAL.with(|c| c.replace(Some(stop)));
    let r = f();
    ON_SIGNAL.with(|c| c.set(before));
    r
}

/// Waits until `fd` is ready for `events` or `deadline` passes (then `TimedOut`). Interrupted
/// waits resume with the time that is left (unless `interruptible` says otherwise).
pub fn wait(fd: RawFd, events: libc::c_short, deadline: Option<Instant>) -> io::Result<()> {
    wait_events(fd, events, deadline).map(drop)
}

/// `wait`, returning the events that happened (`revents`: POLLERR and POLLHUP included).
fn wait_events(fd: RawFd, events: libc::c_short, deadline: Option<Instant>) -> io::Result<libc::c_short> {
    loop {
        let mut pfd = libc::pollfd { fd, events, revents: 0 };
        let ts = deadline.map(|d| {
            let left = d.saturating_duration_since(Instant::now());
            libc::timespec { tv_sec: left.as_secs() as libc::time_t, tv_nsec: left.subsec_nanos() as _ }
        });
        let ts_ptr = ts.as_ref().map_or(std::ptr::null(), |t| t as *const libc::timespec);
        match syscall!(libc::SYS_ppoll, &mut pfd as *mut libc::pollfd, 1, ts_ptr, std::ptr::null::<u8>(), 0) {
            Ok(0) => return Err(io::ErrorKind::TimedOut.into()),
            Ok(_) => return Ok(pfd.revents),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                if ON_SIGNAL.with(|c| c.get()).is_some_and(|stop| stop()) {
                    // Not `Interrupted`: readers such as `read_exact` would simply try again.
                    STOPPED.with(|c| c.set(true));
                    return Err(io::Error::other("interrupted by a signal"));
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// Connects `fd` to `addr` within `timeout`, whatever the socket's blocking mode. A blocking
/// socket is switched to non-blocking for the wait and its exact flags are put back.
pub fn connect_timeout(fd: RawFd, addr: &SocketAddr, timeout: Duration) -> io::Result<()> {
    connect_timeout_flags(fd, addr, timeout, None)
}

/// `connect_timeout` for a socket whose file flags (F_GETFL) the caller has just read.
pub fn connect_timeout_flags(
    fd: RawFd,
    addr: &SocketAddr,
    timeout: Duration,
    flags: Option<libc::c_long>,
) -> io::Result<()> {
    let addr = SockAddr::from(*addr);
    let flags = match flags {
        Some(f) => f,
        None => get_flags(fd)?,
    };
    let blocking = flags & libc::O_NONBLOCK as libc::c_long == 0;
    if blocking {
        set_flags(fd, flags | libc::O_NONBLOCK as libc::c_long)?;
    }
    let result = match own_connect(fd, &addr) {
        Ok(_) => Ok(()),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EINPROGRESS) | Some(libc::EINTR)) => {
            // Writable without an error or a hang-up: connected (SO_ERROR is 0 then). The
            // socket stays "connecting" for the kernel until the next connect, which answers
            // 0 once: callers that let a program connect again ask TCP_INFO first.
            wait_events(fd, libc::POLLOUT, Some(Instant::now() + timeout)).and_then(|ev| {
                match ev & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) {
                    0 => Ok(()),
                    _ => take_error(fd),
                }
            })
        }
        Err(e) => Err(e),
    };
    if blocking {
        set_flags(fd, flags)?;
    }
    result
}

/// Set in the preload library when it has the kernel guard's gate: the chain's connect to its
/// first hop — an address the library took from the configuration, on the program's socket,
/// made with the program's own identity either way — is made through the gate instead of
/// being trapped, checked and made again by the supervisor.
static OWN_CONNECTS_GATED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// See `OWN_CONNECTS_GATED`; for the library, once it has mapped the gate.
pub fn gate_own_connects(gated: bool) {
    OWN_CONNECTS_GATED.store(gated, std::sync::atomic::Ordering::Relaxed);
}

fn own_connect(fd: RawFd, addr: &SockAddr) -> io::Result<libc::c_long> {
    #[cfg(target_arch = "x86_64")]
    if OWN_CONNECTS_GATED.load(std::sync::atomic::Ordering::Relaxed) {
        // SAFETY: the gate is mapped (the flag says so); connect of a socket address of ours.
        let r = unsafe { gated(libc::SYS_connect, crate::sys_args!(fd, addr.as_ptr(), addr.len())) };
        return if r < 0 { Err(io::Error::from_raw_os_error(-r as i32)) } else { Ok(r as libc::c_long) };
    }
    syscall!(libc::SYS_connect, fd, addr.as_ptr(), addr.len())
}

/// The pending error of a socket (SO_ERROR), as a result.
pub fn take_error(fd: RawFd) -> io::Result<()> {
    let mut err: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    syscall!(
        libc::SYS_getsockopt,
        fd,
        libc::SOL_SOCKET,
        libc::SO_ERROR,
        &mut err as *mut libc::c_int,
        &mut len as *mut libc::socklen_t
    )?;
    if err == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(err))
    }
}

/// Drops a TCP socket's connection so that it can connect again (connect to AF_UNSPEC): how a
/// chain retries on the program's own descriptor.
/// The error the dropped connection leaves pending (a reset) is cleared: the failure was
/// reported already, and the kernel's SO_ERROR after a failed connect is 0.
pub fn disconnect(fd: RawFd) -> io::Result<()> {
    let mut sa: libc::sockaddr = zeroed_sockaddr();
    sa.sa_family = libc::AF_UNSPEC as libc::sa_family_t;
    let r = syscall!(
        libc::SYS_connect,
        fd,
        &sa as *const libc::sockaddr,
        std::mem::size_of::<libc::sockaddr>() as libc::socklen_t
    )
    .map(drop);
    let _ = take_error(fd);
    r
}

fn zeroed_sockaddr() -> libc::sockaddr {
    // SAFETY: sockaddr is plain old data; all-zero bytes are a valid value.
    unsafe { std::mem::zeroed() }
}

fn sock_name(nr: libc::c_long, fd: RawFd) -> io::Result<SocketAddr> {
    // SAFETY: sockaddr_storage is plain old data; all-zero bytes are a valid value.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    syscall!(nr, fd, &mut storage as *mut _ as *mut libc::sockaddr, &mut len as *mut libc::socklen_t)?;
    // SAFETY: the kernel wrote a socket address of `len` bytes into `storage`.
    let addr = unsafe { SockAddr::new(storage, len) };
    addr.as_socket().ok_or_else(|| io::Error::from_raw_os_error(libc::EAFNOSUPPORT))
}

/// The local address of a socket.
pub fn local_addr(fd: RawFd) -> io::Result<SocketAddr> {
    sock_name(libc::SYS_getsockname, fd)
}

/// The address family of a socket (AF_INET, AF_INET6, …).
pub fn family(fd: RawFd) -> io::Result<libc::c_int> {
    sockopt_int(fd, libc::SOL_SOCKET, libc::SO_DOMAIN)
}

/// An integer socket option.
pub fn sockopt_int(fd: RawFd, level: libc::c_int, name: libc::c_int) -> io::Result<libc::c_int> {
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    syscall!(
        libc::SYS_getsockopt,
        fd,
        level,
        name,
        &mut v as *mut libc::c_int,
        &mut len as *mut libc::socklen_t
    )?;
    Ok(v)
}

/// A borrowed socket descriptor read and written with a deadline, whatever its blocking mode,
/// and without touching its flags: every call is `MSG_DONTWAIT` and waits in `ppoll`.
/// Writes use `MSG_NOSIGNAL`, so a proxy that hangs up never raises SIGPIPE in the program.
#[derive(Debug)]
pub struct FdStream {
    fd: RawFd,
    deadline: Option<Instant>,
}

impl FdStream {
    /// Borrows `fd`; the caller keeps it open for the stream's life and closes it.
    pub fn new(fd: RawFd) -> Self {
        FdStream { fd, deadline: None }
    }

    /// Sets the deadline `timeout` from now.
    pub fn set_timeout(&mut self, timeout: Option<Duration>) {
        self.deadline = timeout.map(|t| Instant::now() + t);
    }
}

impl FdStream {
    /// recv(2) with `flags`, waiting (until the deadline) while nothing has arrived.
    fn recv_waiting(&mut self, buf: &mut [u8], flags: libc::c_int) -> io::Result<usize> {
        loop {
            let r = syscall!(
                libc::SYS_recvfrom,
                self.fd,
                buf.as_mut_ptr(),
                buf.len(),
                libc::MSG_DONTWAIT | flags,
                std::ptr::null_mut::<libc::sockaddr>(),
                std::ptr::null_mut::<libc::socklen_t>()
            );
            match r {
                Ok(n) => return Ok(n as usize),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    wait(self.fd, libc::POLLIN, self.deadline)?
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

impl Read for FdStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.recv_waiting(buf, 0)
    }
}

impl crate::wire::Peek for FdStream {
    fn peek(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.recv_waiting(buf, libc::MSG_PEEK)
    }

    fn readable(&mut self) -> io::Result<()> {
        wait(self.fd, libc::POLLIN, self.deadline)
    }

    /// At most half of what is left before the stream's deadline: the answer to a probe that
    /// ran out must leave time for what the caller does next (ask again step by step).
    fn ready_within(&mut self, wait_for: Duration) -> io::Result<bool> {
        let now = Instant::now();
        let wait_for = match self.deadline {
            Some(d) => wait_for.min(d.saturating_duration_since(now) / 2),
            None => wait_for,
        };
        match wait(self.fd, libc::POLLIN, Some(now + wait_for)) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::TimedOut => Ok(false),
            Err(e) => Err(e),
        }
    }
}

impl Write for FdStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        loop {
            let r = syscall!(
                libc::SYS_sendto,
                self.fd,
                buf.as_ptr(),
                buf.len(),
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                std::ptr::null::<libc::sockaddr>(),
                0
            );
            match r {
                Ok(n) => return Ok(n as usize),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    wait(self.fd, libc::POLLOUT, self.deadline)?
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
