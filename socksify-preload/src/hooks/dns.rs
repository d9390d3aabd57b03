//! getaddrinfo, freeaddrinfo, gethostbyname(2)(_r), gethostbyaddr(_r), getnameinfo.

use libc::{addrinfo, c_char, c_int, c_void, hostent, size_t, sockaddr, socklen_t};
use socksify_ops::ops::dns::{self, Slots};
use socksify_ops::runtime::real;

hook! {
    fn getaddrinfo(node: *const c_char, service: *const c_char, hints: *const addrinfo, res: *mut *mut addrinfo) -> c_int {
        // SAFETY: the caller's arguments.
        gate: true, fail: libc::EAI_FAIL, panic: 0, body: unsafe { dns::getaddrinfo(node, service, hints, res) },
    }
}

/// # Safety
/// A list from getaddrinfo (every list this library returns was built by glibc).
#[no_mangle]
pub unsafe extern "C" fn freeaddrinfo(res: *mut addrinfo) {
    // SAFETY: the caller's list, allocated by glibc's getaddrinfo.
    unsafe { real::freeaddrinfo(res) }
}

hook! {
    fn gethostbyname(name: *const c_char) -> *mut hostent {
        gate: true, fail: std::ptr::null_mut(), panic: 0, body: dns::gethostbyname2(name, libc::AF_INET),
    }
}

hook! {
    fn gethostbyname2(name: *const c_char, af: c_int) -> *mut hostent {
        gate: true, fail: std::ptr::null_mut(), panic: 0, body: dns::gethostbyname2(name, af),
    }
}

hook! {
    fn gethostbyname_r(name: *const c_char, ret: *mut hostent, buf: *mut c_char, buflen: size_t, result: *mut *mut hostent, h_errnop: *mut c_int) -> c_int {
        gate: true, fail: libc::EIO, panic: 0,
        body: dns::gethostbyname2_r(name, libc::AF_INET, Slots { ret, buf, buflen, result, h_errnop }),
    }
}

hook! {
    fn gethostbyname2_r(name: *const c_char, af: c_int, ret: *mut hostent, buf: *mut c_char, buflen: size_t, result: *mut *mut hostent, h_errnop: *mut c_int) -> c_int {
        gate: true, fail: libc::EIO, panic: 0, body: dns::gethostbyname2_r(name, af, Slots { ret, buf, buflen, result, h_errnop }),
    }
}

hook! {
    fn gethostbyaddr(addr: *const c_void, len: socklen_t, af: c_int) -> *mut hostent {
        gate: true, fail: std::ptr::null_mut(), panic: 0, body: dns::gethostbyaddr(addr, len, af),
    }
}

hook! {
    fn gethostbyaddr_r(addr: *const c_void, len: socklen_t, af: c_int, ret: *mut hostent, buf: *mut c_char, buflen: size_t, result: *mut *mut hostent, h_errnop: *mut c_int) -> c_int {
        gate: true, fail: libc::EIO, panic: 0, body: dns::gethostbyaddr_r(addr, len, af, Slots { ret, buf, buflen, result, h_errnop }),
    }
}

hook! {
    fn getnameinfo(sa: *const sockaddr, salen: socklen_t, host: *mut c_char, hostlen: socklen_t, serv: *mut c_char, servlen: socklen_t, flags: c_int) -> c_int {
        gate: true, fail: libc::EAI_FAIL, panic: 0,
        // SAFETY: the real function with the caller's buffers and other flags.
        body: dns::getnameinfo(sa, salen, host, hostlen, flags, |f| unsafe { real::getnameinfo(sa, salen, host, hostlen, serv, servlen, f) }),
    }
}
