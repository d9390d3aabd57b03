//! connect, getpeername.

use libc::{c_int, sockaddr, socklen_t};
use socksify_ops::ops::{gated, net};
use socksify_ops::runtime::{self, real};
use socksify_ops::table;

/// # Safety
/// The arguments of connect(2).
#[no_mangle]
pub unsafe extern "C" fn connect(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int {
    // SAFETY: the real connect with the caller's arguments.
    let real = || unsafe { real::connect(fd, addr, len) };
    // A socket the program made as an internet one (`table::kind`) is not asked its family
    // again; only the kernel's answer sends a connect through the gate.
    if table::kind(fd).is_none() && gated::is_local(fd) {
        return gated::connect(fd, addr, len, real);
    }
    if runtime::inside() && !net::reentrant_connect_allowed(fd, addr, len) {
        socksify_ops::sys::set_errno(libc::ECONNREFUSED);
        return -1;
    }
    runtime::run(-1, libc::ECONNREFUSED, || net::connect(fd, addr, len), real)
}

hook! {
    fn getpeername(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int {
        gate: table::known(fd), local: libc::SYS_getpeername, fail: -1, panic: libc::ENOTCONN,
        body: net::getpeername(fd, addr, len),
    }
}
