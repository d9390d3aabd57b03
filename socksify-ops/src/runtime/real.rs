//! The real libc functions behind the hooks (`dlsym(RTLD_NEXT)`), each with what stands in for
//! it when libc has none: the system call itself, or a failure. The socket and descriptor
//! functions — those a signal handler may call — are found when the library loads (dlsym is not
//! async-signal-safe); the resolver's on first use.

use std::ffi::{c_void, CStr};
use std::marker::PhantomData;
use std::sync::atomic::{AtomicPtr, Ordering};

use libc::{
    addrinfo, c_char, c_int, c_long, c_uint, hostent, mmsghdr, msghdr, size_t, sockaddr, socklen_t, ssize_t,
};

/// A libc function resolved once and cached. `F` is its `unsafe extern "C" fn` type.
pub struct Real<F> {
    name: &'static CStr,
    ptr: AtomicPtr<c_void>,
    _f: PhantomData<F>,
}

impl<F: Copy> Real<F> {
    pub const fn new(name: &'static CStr) -> Self {
        Real { name, ptr: AtomicPtr::new(std::ptr::null_mut()), _f: PhantomData }
    }

    /// The next definition of the symbol after this library's own, or `None` if there is none.
    pub fn get(&self) -> Option<F> {
        let mut p = self.ptr.load(Ordering::Acquire);
        if p.is_null() {
            // SAFETY: dlsym with a NUL-terminated name; RTLD_NEXT skips this library's own hook.
            p = unsafe { libc::dlsym(libc::RTLD_NEXT, self.name.as_ptr()) };
            if p.is_null() {
                return None;
            }
            self.ptr.store(p, Ordering::Release);
        }
        debug_assert_eq!(std::mem::size_of::<F>(), std::mem::size_of::<*mut c_void>());
        // SAFETY: `F` is the C signature of the symbol `name`, a function pointer the size of a
        // data pointer on every Linux ABI.
        Some(unsafe { std::mem::transmute_copy::<*mut c_void, F>(&p) })
    }
}

/// The system call in place of a missing libc function, as libc answers it.
macro_rules! sys {
    ($nr:expr $(, $arg:expr)*) => {
        // SAFETY: the caller's arguments, handed to the kernel unchanged.
        unsafe { crate::sys::call($nr, crate::sys::args!($($arg),*)) as _ }
    };
}

macro_rules! reals {
    ($( $when:ident $name:ident ( $($arg:ident : $ty:ty),* ) -> $ret:ty = $fallback:expr; )*) => {
        /// The symbols, resolved once.
        #[allow(non_upper_case_globals)]
        pub mod sym {
            use super::*;
            $(
                pub static $name: Real<unsafe extern "C" fn($($ty),*) -> $ret> =
                    Real::new(match CStr::from_bytes_with_nul(concat!(stringify!($name), "\0").as_bytes()) {
                        Ok(name) => name,
                        Err(_) => panic!("symbol name"),
                    });
            )*
        }

        $(
            /// The real function (or its stand-in) with the caller's arguments.
            ///
            /// # Safety
            /// The arguments of the libc function of the same name.
            #[allow(clippy::too_many_arguments, unused_unsafe)]
            pub unsafe fn $name($($arg: $ty),*) -> $ret {
                match sym::$name.get() {
                    // SAFETY: the real function with the caller's arguments.
                    Some(f) => unsafe { f($($arg),*) },
                    None => $fallback,
                }
            }
        )*

        /// Finds now the functions marked `load`.
        pub fn resolve_at_load() {
            $( reals!(@load $when $name); )*
            let _ = SYSCALL.get();
            let _ = FCNTL.get();
        }
    };
    (@load load $name:ident) => { let _ = sym::$name.get(); };
    (@load lazy $name:ident) => {};
}

reals! {
    load connect(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int = sys!(libc::SYS_connect, fd, addr, len);
    load getpeername(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int = sys!(libc::SYS_getpeername, fd, addr, len);
    load getsockname(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int = sys!(libc::SYS_getsockname, fd, addr, len);
    load sendto(fd: c_int, buf: *const c_void, n: size_t, flags: c_int, addr: *const sockaddr, len: socklen_t) -> ssize_t = sys!(libc::SYS_sendto, fd, buf, n, flags, addr, len);
    load sendmsg(fd: c_int, msg: *const msghdr, flags: c_int) -> ssize_t = sys!(libc::SYS_sendmsg, fd, msg, flags);
    load sendmmsg(fd: c_int, msgs: *mut mmsghdr, n: c_uint, flags: c_int) -> c_int = sys!(libc::SYS_sendmmsg, fd, msgs, n, flags);
    load send(fd: c_int, buf: *const c_void, n: size_t, flags: c_int) -> ssize_t = sys!(libc::SYS_sendto, fd, buf, n, flags, 0, 0);
    load write(fd: c_int, buf: *const c_void, n: size_t) -> ssize_t = sys!(libc::SYS_write, fd, buf, n);
    load writev(fd: c_int, iov: *const libc::iovec, n: c_int) -> ssize_t = sys!(libc::SYS_writev, fd, iov, n);
    load recvfrom(fd: c_int, buf: *mut c_void, n: size_t, flags: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> ssize_t = sys!(libc::SYS_recvfrom, fd, buf, n, flags, addr, len);
    load recv(fd: c_int, buf: *mut c_void, n: size_t, flags: c_int) -> ssize_t = sys!(libc::SYS_recvfrom, fd, buf, n, flags, 0, 0);
    load read(fd: c_int, buf: *mut c_void, n: size_t) -> ssize_t = sys!(libc::SYS_read, fd, buf, n);
    load readv(fd: c_int, iov: *const libc::iovec, n: c_int) -> ssize_t = sys!(libc::SYS_readv, fd, iov, n);
    load recvmsg(fd: c_int, msg: *mut msghdr, flags: c_int) -> ssize_t = sys!(libc::SYS_recvmsg, fd, msg, flags);
    load recvmmsg(fd: c_int, msgs: *mut mmsghdr, n: c_uint, flags: c_int, timeout: *mut libc::timespec) -> c_int = sys!(libc::SYS_recvmmsg, fd, msgs, n, flags, timeout);
    load setsockopt(fd: c_int, level: c_int, name: c_int, value: *const c_void, len: socklen_t) -> c_int = sys!(libc::SYS_setsockopt, fd, level, name, value, len);
    load getsockopt(fd: c_int, level: c_int, name: c_int, value: *mut c_void, len: *mut socklen_t) -> c_int = sys!(libc::SYS_getsockopt, fd, level, name, value, len);
    load poll(fds: *mut libc::pollfd, n: libc::nfds_t, timeout: c_int) -> c_int = sys!(libc::SYS_poll, fds, n, timeout);
    load ppoll(fds: *mut libc::pollfd, n: libc::nfds_t, timeout: *const libc::timespec, mask: *const libc::sigset_t) -> c_int = sys!(libc::SYS_ppoll, fds, n, timeout, mask, 8);
    load select(n: c_int, r: *mut libc::fd_set, w: *mut libc::fd_set, e: *mut libc::fd_set, timeout: *mut libc::timeval) -> c_int = sys!(libc::SYS_select, n, r, w, e, timeout);
    load pselect(n: c_int, r: *mut libc::fd_set, w: *mut libc::fd_set, e: *mut libc::fd_set, timeout: *const libc::timespec, mask: *const libc::sigset_t) -> c_int = pselect_by_syscall(n, r, w, e, timeout, mask);
    load epoll_ctl(epfd: c_int, op: c_int, fd: c_int, event: *mut libc::epoll_event) -> c_int = sys!(libc::SYS_epoll_ctl, epfd, op, fd, event);
    load close(fd: c_int) -> c_int = sys!(libc::SYS_close, fd);
    load close_range(first: c_uint, last: c_uint, flags: c_int) -> c_int = sys!(libc::SYS_close_range, first, last, flags);
    load socket(domain: c_int, ty: c_int, protocol: c_int) -> c_int = sys!(libc::SYS_socket, domain, ty, protocol);
    load bind(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int = sys!(libc::SYS_bind, fd, addr, len);
    load listen(fd: c_int, backlog: c_int) -> c_int = sys!(libc::SYS_listen, fd, backlog);
    load accept(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int = sys!(libc::SYS_accept4, fd, addr, len, 0);
    load accept4(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t, flags: c_int) -> c_int = sys!(libc::SYS_accept4, fd, addr, len, flags);
    load dup(fd: c_int) -> c_int = sys!(libc::SYS_dup, fd);
    load dup2(old: c_int, new: c_int) -> c_int = dup2_by_syscall(old, new);
    load dup3(old: c_int, new: c_int, flags: c_int) -> c_int = sys!(libc::SYS_dup3, old, new, flags);
    lazy closefrom(low: c_int) -> () = {
        let _: c_long = sys!(libc::SYS_close_range, low.max(0), c_uint::MAX, 0);
    };
    lazy getaddrinfo(node: *const c_char, service: *const c_char, hints: *const addrinfo, res: *mut *mut addrinfo) -> c_int = libc::EAI_FAIL;
    lazy freeaddrinfo(res: *mut addrinfo) -> () = ();
    lazy getnameinfo(sa: *const sockaddr, salen: socklen_t, host: *mut c_char, hostlen: socklen_t, serv: *mut c_char, servlen: socklen_t, flags: c_int) -> c_int = libc::EAI_FAIL;
    lazy gethostbyname(name: *const c_char) -> *mut hostent = std::ptr::null_mut();
    lazy gethostbyname2(name: *const c_char, af: c_int) -> *mut hostent = std::ptr::null_mut();
    lazy gethostbyname_r(name: *const c_char, ret: *mut hostent, buf: *mut c_char, buflen: size_t, result: *mut *mut hostent, h_errnop: *mut c_int) -> c_int = libc::ENOSYS;
    lazy gethostbyname2_r(name: *const c_char, af: c_int, ret: *mut hostent, buf: *mut c_char, buflen: size_t, result: *mut *mut hostent, h_errnop: *mut c_int) -> c_int = libc::ENOSYS;
    lazy gethostbyaddr(addr: *const c_void, len: socklen_t, af: c_int) -> *mut hostent = std::ptr::null_mut();
    lazy gethostbyaddr_r(addr: *const c_void, len: socklen_t, af: c_int, ret: *mut hostent, buf: *mut c_char, buflen: size_t, result: *mut *mut hostent, h_errnop: *mut c_int) -> c_int = libc::ENOSYS;
}

/// pselect in system calls: the kernel takes the signal mask with its size.
fn pselect_by_syscall(
    n: c_int,
    r: *mut libc::fd_set,
    w: *mut libc::fd_set,
    e: *mut libc::fd_set,
    timeout: *const libc::timespec,
    mask: *const libc::sigset_t,
) -> c_int {
    let sig = [mask as usize, 8];
    let sig_ptr = if mask.is_null() { std::ptr::null() } else { sig.as_ptr() };
    sys!(libc::SYS_pselect6, n, r, w, e, timeout, sig_ptr)
}

/// dup2 in system calls: dup3 refuses equal descriptors, which dup2 returns as they are (if
/// open).
fn dup2_by_syscall(old: c_int, new: c_int) -> c_int {
    if old == new {
        return if crate::sys::sock::fd_flags(old).is_some() { new } else { -1 };
    }
    sys!(libc::SYS_dup3, old, new, 0)
}

/// libc's `syscall`: the `syscall` hook passes every number it does not handle to it.
static SYSCALL: Real<unsafe extern "C" fn(c_long, c_long, c_long, c_long, c_long, c_long, c_long) -> c_long> =
    Real::new(c"syscall");

/// The real `syscall(n, a1, …, a6)`, or the system call itself.
///
/// # Safety
/// The arguments of system call `n`.
pub unsafe fn syscall(n: c_long, a: [c_long; 6]) -> c_long {
    match SYSCALL.get() {
        // SAFETY: the real syscall with the caller's arguments.
        Some(f) => unsafe { f(n, a[0], a[1], a[2], a[3], a[4], a[5]) },
        None => sys!(n, a[0], a[1], a[2], a[3], a[4], a[5]),
    }
}

/// fcntl is variadic: its real function is called as one.
static FCNTL: Real<unsafe extern "C" fn(c_int, c_int, ...) -> c_int> = Real::new(c"fcntl");

/// The real `fcntl(fd, cmd, arg)` (the third argument as the caller passed it: an integer or a
/// pointer, in the same register), or the system call itself.
///
/// # Safety
/// The arguments of fcntl(2) for `cmd`.
pub unsafe fn fcntl(fd: c_int, cmd: c_int, arg: c_long) -> c_int {
    match FCNTL.get() {
        // SAFETY: the real fcntl with the caller's arguments.
        Some(f) => unsafe { f(fd, cmd, arg) },
        None => sys!(libc::SYS_fcntl, fd, cmd, arg),
    }
}
