//! bind, listen, accept, accept4, getsockname: SOCKS BIND.

use libc::{c_int, sockaddr, socklen_t};
use socksify_ops::ops::bind;
use socksify_ops::runtime::{self, real};
use socksify_ops::{sys, table};

/// # Safety
/// The arguments of bind(2).
#[no_mangle]
pub unsafe extern "C" fn bind(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int {
    // SAFETY: the real bind with the caller's arguments.
    let r = unsafe { real::bind(fd, addr, len) };
    if r == 0 {
        runtime::after(|| bind::bound(fd, addr, len));
    }
    if r == 0 || sys::errno() != libc::EADDRNOTAVAIL {
        return r;
    }
    runtime::run(-1, libc::EADDRNOTAVAIL, || bind::bind_elsewhere(fd, addr, len), || -1)
}

hook! {
    fn listen(fd: c_int, backlog: c_int) -> c_int {
        gate: !socksify_ops::ops::gated::is_local(fd), local: libc::SYS_listen, fail: -1,
        panic: libc::EADDRINUSE, body: bind::listen(fd),
    }
}

hook! {
    fn accept(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int {
        gate: table::known(fd), fail: -1, panic: libc::ECONNABORTED,
        body: bind::accept(fd, addr, len, 0),
    }
}

hook! {
    fn accept4(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t, flags: c_int) -> c_int {
        gate: table::known(fd), fail: -1, panic: libc::ECONNABORTED,
        body: bind::accept(fd, addr, len, flags),
    }
}

hook! {
    fn getsockname(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int {
        gate: table::known(fd), local: libc::SYS_getsockname, fail: -1, panic: libc::EBADF,
        body: bind::getsockname(fd, addr, len),
    }
}
