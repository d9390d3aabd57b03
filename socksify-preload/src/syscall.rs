//! `syscall(2)`, the libc function: some libraries issue socket calls through it (libuv 1.44,
//! used by dig, sends and receives datagrams with `syscall(SYS_sendmmsg, …)`). The calls the
//! library hooks are sent to their hooks; every other number goes to the real function at once.
//!
//! `syscall` is variadic; on x86_64 and aarch64 Linux its integer arguments travel in the same
//! registers as those of a function with six `long` parameters, which is how glibc itself
//! implements it.

use libc::{c_int, c_long, c_uint};

use crate::real::Real;

static REAL: Real<unsafe extern "C" fn(c_long, c_long, c_long, c_long, c_long, c_long, c_long) -> c_long> =
    Real::new(c"syscall");

/// A system call straight to the kernel through the real `syscall`, never through the hook:
/// how the library makes its own raw calls. Unused arguments are 0.
///
/// # Safety
/// The arguments of syscall(2) for system call `n`.
pub unsafe fn raw(n: c_long, args: &[c_long]) -> c_long {
    let mut a = [0 as c_long; 6];
    a[..args.len()].copy_from_slice(args);
    match REAL.get() {
        // SAFETY: the caller vouches for the arguments.
        Some(f) => unsafe { f(n, a[0], a[1], a[2], a[3], a[4], a[5]) },
        None => {
            crate::hook::set_errno(libc::ENOSYS);
            -1
        }
    }
}

/// # Safety
/// The arguments of syscall(2) for system call `n`.
#[no_mangle]
pub unsafe extern "C" fn syscall(
    n: c_long,
    a1: c_long,
    a2: c_long,
    a3: c_long,
    a4: c_long,
    a5: c_long,
    a6: c_long,
) -> c_long {
    let real = || match REAL.get() {
        // SAFETY: the real syscall with the caller's arguments.
        Some(f) => unsafe { f(n, a1, a2, a3, a4, a5, a6) },
        None => {
            crate::hook::set_errno(libc::ENOSYS);
            -1
        }
    };
    // The library's own raw system calls (socksify-core's, its fallbacks) go straight through.
    if crate::hook::inside() {
        return real();
    }
    // SAFETY (every arm): the caller's arguments, reinterpreted as the system call's own types,
    // handed to the hook of the same call.
    unsafe {
        match n {
            libc::SYS_connect => crate::net::connect(a1 as c_int, a2 as _, a3 as _) as c_long,
            libc::SYS_sendto => {
                crate::net::sendto(a1 as c_int, a2 as _, a3 as _, a4 as c_int, a5 as _, a6 as _) as c_long
            }
            libc::SYS_sendmsg => crate::net::sendmsg(a1 as c_int, a2 as _, a3 as c_int) as c_long,
            libc::SYS_sendmmsg => {
                crate::net::sendmmsg(a1 as c_int, a2 as _, a3 as c_uint, a4 as c_int) as c_long
            }
            libc::SYS_recvfrom => {
                crate::recv::recvfrom(a1 as c_int, a2 as _, a3 as _, a4 as c_int, a5 as _, a6 as _) as c_long
            }
            libc::SYS_recvmsg => crate::recv::recvmsg(a1 as c_int, a2 as _, a3 as c_int) as c_long,
            libc::SYS_recvmmsg => {
                crate::recv::recvmmsg(a1 as c_int, a2 as _, a3 as c_uint, a4 as c_int, a5 as _) as c_long
            }
            libc::SYS_close => crate::fds::close(a1 as c_int) as c_long,
            libc::SYS_bind => crate::bind::bind(a1 as c_int, a2 as _, a3 as _) as c_long,
            libc::SYS_listen => crate::bind::listen(a1 as c_int, a2 as c_int) as c_long,
            libc::SYS_accept4 => crate::bind::accept4(a1 as c_int, a2 as _, a3 as _, a4 as c_int) as c_long,
            libc::SYS_getsockname => crate::bind::getsockname(a1 as c_int, a2 as _, a3 as _) as c_long,
            libc::SYS_close_range => {
                crate::fds::close_range(a1 as c_uint, a2 as c_uint, a3 as c_int) as c_long
            }
            libc::SYS_dup3 => crate::fds::dup3(a1 as c_int, a2 as c_int, a3 as c_int) as c_long,
            _ => real(),
        }
    }
}
