//! Descriptor-closing hooks. They keep the library's internal descriptors (UDP control
//! connections) alive through the program's `close`, `dup2`/`dup3` onto them, `close_range` and
//! `closefrom` (ssh and others close every descriptor), and close a socket's control connection
//! when the program closes the socket. While the library has no state, they are the real calls
//! after one atomic load.

use libc::{c_int, c_uint};

use crate::hook::{run, Flow};
use crate::{real, sock, sockets};

/// # Safety
/// The argument of close(2).
#[no_mangle]
pub unsafe extern "C" fn close(fd: c_int) -> c_int {
    let real_close = || match real::close.get() {
        // SAFETY: the real close with the caller's descriptor.
        Some(f) => unsafe { f(fd) },
        // SAFETY: as above, straight to the kernel.
        None => unsafe { crate::syscall::raw(libc::SYS_close, &[fd as libc::c_long]) as c_int },
    };
    if !sockets::any() {
        return real_close();
    }
    run(
        -1,
        libc::EBADF,
        || {
            if sockets::is_internal(fd) {
                // The program closes a number it never opened: the library's own stays open.
                return Flow::Done(0);
            }
            if let Some(control) = sockets::forget(fd) {
                sock::close_raw(control);
            }
            Flow::Bypass
        },
        real_close,
    )
}

/// dup2/dup3 of `oldfd` onto `newfd` by `real`, after making way: the library's own descriptor
/// moves away, a replaced socket's association goes.
///
/// A copy that survives exec (no `O_CLOEXEC`) of a socket the library connected to its UDP
/// relay is disconnected from it first: the association would not survive the exec.
fn replacing(oldfd: c_int, newfd: c_int, cloexec: bool, real: impl FnOnce() -> c_int) -> c_int {
    if !sockets::any() || oldfd == newfd {
        return real();
    }
    run(
        -1,
        libc::EBADF,
        || {
            before_replacing(newfd);
            if !cloexec && sockets::any_udp() {
                let errno = crate::hook::errno();
                crate::udp::unlink(oldfd);
                crate::hook::set_errno(errno);
            }
            Flow::Bypass
        },
        real,
    )
}

fn before_replacing(newfd: c_int) {
    if sockets::is_internal(newfd) {
        sockets::relocate_internal(newfd);
    } else if let Some(control) = sockets::forget(newfd) {
        sock::close_raw(control);
    }
}

/// # Safety
/// The arguments of dup2(2).
#[no_mangle]
pub unsafe extern "C" fn dup2(oldfd: c_int, newfd: c_int) -> c_int {
    let real_dup2 = || match real::dup2.get() {
        // SAFETY: the real dup2 with the caller's arguments.
        Some(f) => unsafe { f(oldfd, newfd) },
        // SAFETY: as above, straight to the kernel (dup3 with no flags, except for equal fds).
        None => unsafe {
            crate::syscall::raw(
                libc::SYS_dup3,
                &[oldfd as libc::c_long, newfd as libc::c_long, 0 as libc::c_long],
            ) as c_int
        },
    };
    replacing(oldfd, newfd, false, real_dup2)
}

/// # Safety
/// The arguments of dup3(2).
#[no_mangle]
pub unsafe extern "C" fn dup3(oldfd: c_int, newfd: c_int, flags: c_int) -> c_int {
    let real_dup3 = || match real::dup3.get() {
        // SAFETY: the real dup3 with the caller's arguments.
        Some(f) => unsafe { f(oldfd, newfd, flags) },
        // SAFETY: as above, straight to the kernel.
        None => unsafe {
            crate::syscall::raw(
                libc::SYS_dup3,
                &[oldfd as libc::c_long, newfd as libc::c_long, flags as libc::c_long],
            ) as c_int
        },
    };
    replacing(oldfd, newfd, flags & libc::O_CLOEXEC != 0, real_dup3)
}

fn sys_close_range(first: c_uint, last: c_uint, flags: c_int) -> c_int {
    // SAFETY: close_range(2) with the caller's arguments.
    unsafe {
        crate::syscall::raw(
            libc::SYS_close_range,
            &[first as libc::c_long, last as libc::c_long, flags as libc::c_long],
        ) as c_int
    }
}

/// close_range with the library's internal descriptors left out of the range.
fn close_range_keeping_internal(first: c_uint, last: c_uint, flags: c_int) -> Flow<c_int> {
    if flags & libc::CLOSE_RANGE_CLOEXEC as c_int == 0 {
        let hi = last.min(c_int::MAX as c_uint) as c_int;
        for control in sockets::forget_range(first as c_int, hi) {
            sock::close_raw(control);
        }
    }
    let mut cursor = first;
    for fd in sockets::internal_fds().into_iter().map(|fd| fd as c_uint) {
        if fd < first || fd > last {
            continue;
        }
        if cursor < fd && sys_close_range(cursor, fd - 1, flags) != 0 {
            return Flow::Fail(crate::hook::errno());
        }
        cursor = fd + 1;
    }
    if cursor <= last && cursor >= first && sys_close_range(cursor, last, flags) != 0 {
        return Flow::Fail(crate::hook::errno());
    }
    Flow::Done(0)
}

/// # Safety
/// The arguments of close_range(2).
#[no_mangle]
pub unsafe extern "C" fn close_range(first: c_uint, last: c_uint, flags: c_int) -> c_int {
    if !sockets::any() || first > last {
        return sys_close_range(first, last, flags);
    }
    run(
        -1,
        libc::EINVAL,
        || close_range_keeping_internal(first, last, flags),
        || sys_close_range(first, last, flags),
    )
}

/// # Safety
/// The argument of closefrom(3).
#[no_mangle]
pub unsafe extern "C" fn closefrom(lowfd: c_int) {
    let real_closefrom = || match real::closefrom.get() {
        // SAFETY: the real closefrom with the caller's argument.
        Some(f) => unsafe { f(lowfd) },
        None => {
            sys_close_range(lowfd.max(0) as c_uint, c_uint::MAX, 0);
        }
    };
    if !sockets::any() {
        return real_closefrom();
    }
    run(
        (),
        libc::EBADF,
        || close_range_keeping_internal(lowfd.max(0) as c_uint, c_uint::MAX, 0).map_done(),
        real_closefrom,
    )
}
