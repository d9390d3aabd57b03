//! The real libc functions behind the hooks, found with `dlsym(RTLD_NEXT)` on first use.

use std::ffi::{c_void, CStr};
use std::marker::PhantomData;
use std::sync::atomic::{AtomicPtr, Ordering};

/// A libc function resolved lazily and cached. `F` is its `unsafe extern "C" fn` type.
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

macro_rules! reals {
    ($($name:ident: fn($($arg:ty),*) -> $ret:ty;)*) => {
        $(
            #[allow(non_upper_case_globals)]
            pub static $name: Real<unsafe extern "C" fn($($arg),*) -> $ret> =
                Real::new(match CStr::from_bytes_with_nul(concat!(stringify!($name), "\0").as_bytes()) {
                    Ok(name) => name,
                    Err(_) => panic!("symbol name"),
                });
        )*
    };
}

use libc::{addrinfo, c_char, c_int, hostent, mmsghdr, msghdr, size_t, sockaddr, socklen_t, ssize_t};

reals! {
    connect: fn(c_int, *const sockaddr, socklen_t) -> c_int;
    getpeername: fn(c_int, *mut sockaddr, *mut socklen_t) -> c_int;
    sendto: fn(c_int, *const c_void, size_t, c_int, *const sockaddr, socklen_t) -> ssize_t;
    sendmsg: fn(c_int, *const msghdr, c_int) -> ssize_t;
    sendmmsg: fn(c_int, *mut mmsghdr, libc::c_uint, c_int) -> c_int;
    send: fn(c_int, *const c_void, size_t, c_int) -> ssize_t;
    write: fn(c_int, *const c_void, size_t) -> ssize_t;
    writev: fn(c_int, *const libc::iovec, c_int) -> ssize_t;
    readv: fn(c_int, *const libc::iovec, c_int) -> ssize_t;
    setsockopt: fn(c_int, c_int, c_int, *const c_void, socklen_t) -> c_int;
    recvfrom: fn(c_int, *mut c_void, size_t, c_int, *mut sockaddr, *mut socklen_t) -> ssize_t;
    recv: fn(c_int, *mut c_void, size_t, c_int) -> ssize_t;
    read: fn(c_int, *mut c_void, size_t) -> ssize_t;
    recvmsg: fn(c_int, *mut msghdr, c_int) -> ssize_t;
    recvmmsg: fn(c_int, *mut mmsghdr, libc::c_uint, c_int, *mut libc::timespec) -> c_int;
    close: fn(c_int) -> c_int;
    bind: fn(c_int, *const sockaddr, socklen_t) -> c_int;
    listen: fn(c_int, c_int) -> c_int;
    accept: fn(c_int, *mut sockaddr, *mut socklen_t) -> c_int;
    accept4: fn(c_int, *mut sockaddr, *mut socklen_t, c_int) -> c_int;
    getsockname: fn(c_int, *mut sockaddr, *mut socklen_t) -> c_int;
    dup2: fn(c_int, c_int) -> c_int;
    dup3: fn(c_int, c_int, c_int) -> c_int;
    closefrom: fn(c_int) -> ();
    getaddrinfo: fn(*const c_char, *const c_char, *const addrinfo, *mut *mut addrinfo) -> c_int;
    freeaddrinfo: fn(*mut addrinfo) -> ();
    getnameinfo: fn(*const sockaddr, socklen_t, *mut c_char, socklen_t, *mut c_char, socklen_t, c_int) -> c_int;
    gethostbyname: fn(*const c_char) -> *mut hostent;
    gethostbyname2: fn(*const c_char, c_int) -> *mut hostent;
    gethostbyname_r: fn(*const c_char, *mut hostent, *mut c_char, size_t, *mut *mut hostent, *mut c_int) -> c_int;
    gethostbyname2_r: fn(*const c_char, c_int, *mut hostent, *mut c_char, size_t, *mut *mut hostent, *mut c_int) -> c_int;
    gethostbyaddr: fn(*const c_void, socklen_t, c_int) -> *mut hostent;
    gethostbyaddr_r: fn(*const c_void, socklen_t, c_int, *mut hostent, *mut c_char, size_t, *mut *mut hostent, *mut c_int) -> c_int;
}

/// The real sendmsg (or the system call when libc has none): the library's own datagrams and
/// the program's passed-through ones.
pub fn sendmsg_now(fd: c_int, msg: *const msghdr, flags: c_int) -> ssize_t {
    match sendmsg.get() {
        // SAFETY: the real sendmsg with a header the caller vouches for.
        Some(f) => unsafe { f(fd, msg, flags) },
        // SAFETY: as above, straight to the kernel.
        None => unsafe {
            crate::syscall::raw(libc::SYS_sendmsg, &[fd as _, msg as _, flags as _]) as ssize_t
        },
    }
}

/// The real recvmsg (or the system call when libc has none).
pub fn recvmsg_now(fd: c_int, msg: *mut msghdr, flags: c_int) -> ssize_t {
    match recvmsg.get() {
        // SAFETY: the real recvmsg with a header the caller vouches for.
        Some(f) => unsafe { f(fd, msg, flags) },
        // SAFETY: as above, straight to the kernel.
        None => unsafe {
            crate::syscall::raw(libc::SYS_recvmsg, &[fd as _, msg as _, flags as _]) as ssize_t
        },
    }
}
