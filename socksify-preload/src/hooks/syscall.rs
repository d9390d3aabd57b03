//! `syscall(2)`, the libc function: some libraries issue socket calls through it (libuv 1.44,
//! used by dig, sends and receives datagrams with `syscall(SYS_sendmmsg, …)`). The calls the
//! library hooks are sent to their hooks; every other number goes to the real function at once.
//!
//! `syscall` is variadic; on x86_64 and aarch64 Linux its integer arguments travel in the same
//! registers as those of a function with six `long` parameters, which is how glibc itself
//! implements it. The library's own system calls never come here: they are made with the
//! system-call instruction itself.

use libc::{c_int, c_long, c_uint};
use socksify_ops::runtime::{inside, real};

use super::{bind, connect, fds, recv, send, wait};

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
    // SAFETY: the real syscall with the caller's arguments.
    let real = || unsafe { real::syscall(n, [a1, a2, a3, a4, a5, a6]) };
    if inside() {
        return real();
    }
    // SAFETY (every arm): the caller's arguments, reinterpreted as the system call's own types,
    // handed to the hook of the same call.
    unsafe {
        match n {
            libc::SYS_connect => connect::connect(a1 as c_int, a2 as _, a3 as _) as c_long,
            libc::SYS_sendto => {
                send::sendto(a1 as c_int, a2 as _, a3 as _, a4 as c_int, a5 as _, a6 as _) as c_long
            }
            libc::SYS_sendmsg => send::sendmsg(a1 as c_int, a2 as _, a3 as c_int) as c_long,
            libc::SYS_sendmmsg => send::sendmmsg(a1 as c_int, a2 as _, a3 as c_uint, a4 as c_int) as c_long,
            libc::SYS_recvfrom => {
                recv::recvfrom(a1 as c_int, a2 as _, a3 as _, a4 as c_int, a5 as _, a6 as _) as c_long
            }
            libc::SYS_recvmsg => recv::recvmsg(a1 as c_int, a2 as _, a3 as c_int) as c_long,
            libc::SYS_recvmmsg => {
                recv::recvmmsg(a1 as c_int, a2 as _, a3 as c_uint, a4 as c_int, a5 as _) as c_long
            }
            libc::SYS_close => fds::close(a1 as c_int) as c_long,
            libc::SYS_bind => bind::bind(a1 as c_int, a2 as _, a3 as _) as c_long,
            libc::SYS_listen => bind::listen(a1 as c_int, a2 as c_int) as c_long,
            libc::SYS_accept4 => bind::accept4(a1 as c_int, a2 as _, a3 as _, a4 as c_int) as c_long,
            libc::SYS_getsockname => bind::getsockname(a1 as c_int, a2 as _, a3 as _) as c_long,
            libc::SYS_close_range => fds::close_range(a1 as c_uint, a2 as c_uint, a3 as c_int) as c_long,
            libc::SYS_epoll_ctl => wait::epoll_ctl(a1 as c_int, a2 as c_int, a3 as c_int, a4 as _) as c_long,
            libc::SYS_poll => wait::poll(a1 as _, a2 as _, a3 as c_int) as c_long,
            libc::SYS_ppoll => wait::ppoll(a1 as _, a2 as _, a3 as _, a4 as _) as c_long,
            libc::SYS_getsockopt => {
                wait::getsockopt(a1 as c_int, a2 as c_int, a3 as c_int, a4 as _, a5 as _) as c_long
            }
            libc::SYS_dup3 => fds::dup3(a1 as c_int, a2 as c_int, a3 as c_int) as c_long,
            _ => real(),
        }
    }
}
