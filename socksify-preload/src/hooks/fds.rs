//! close, dup, dup2, dup3, fcntl, close_range, closefrom: the table follows the program's
//! descriptors, and the library's own survive the program's closes.

use libc::{c_int, c_long, c_uint};
use socksify_ops::ops::fds;
use socksify_ops::runtime::{self, real, Flow};
use socksify_ops::table;

hook! {
    fn close(fd: c_int) -> c_int {
        gate: {
            table::forget_bits(fd);
            table::known(fd)
        },
        fail: -1, panic: libc::EBADF, body: fds::close(fd),
    }
}

/// socket(2): what the program made is remembered (`table::note_kind`), so that its connects
/// and datagrams need not ask the kernel again. One atomic store.
///
/// # Safety
/// The arguments of socket(2).
#[no_mangle]
pub unsafe extern "C" fn socket(domain: c_int, ty: c_int, protocol: c_int) -> c_int {
    // SAFETY: the real socket with the caller's arguments.
    let r = unsafe { real::socket(domain, ty, protocol) };
    if r >= 0 {
        table::note_kind(r, domain, ty);
    }
    r
}

/// A duplicate made by `real`: the table follows it.
fn dup_hook(old: c_int, new: c_int, cloexec: bool, real: impl FnOnce() -> c_int) -> c_int {
    if !table::known(old) && !table::known(new) {
        let r = real();
        table::follow_bits(old, r);
        return r;
    }
    runtime::run(
        -1,
        libc::EBADF,
        || {
            fds::before_replacing(old, new, cloexec);
            Flow::Bypass
        },
        || {
            let r = real();
            table::follow_bits(old, r);
            fds::duplicated(old, r);
            r
        },
    )
}

/// # Safety
/// The argument of dup(2).
#[no_mangle]
pub unsafe extern "C" fn dup(fd: c_int) -> c_int {
    // SAFETY: the real dup with the caller's argument.
    let r = unsafe { real::dup(fd) };
    table::follow_bits(fd, r);
    if table::known(fd) {
        runtime::after(|| fds::duplicated(fd, r));
    }
    r
}

/// # Safety
/// The arguments of dup2(2).
#[no_mangle]
pub unsafe extern "C" fn dup2(old: c_int, new: c_int) -> c_int {
    // SAFETY: the real dup2 with the caller's arguments.
    dup_hook(old, new, false, || unsafe { real::dup2(old, new) })
}

/// # Safety
/// The arguments of dup3(2).
#[no_mangle]
pub unsafe extern "C" fn dup3(old: c_int, new: c_int, flags: c_int) -> c_int {
    // SAFETY: the real dup3 with the caller's arguments.
    dup_hook(old, new, flags & libc::O_CLOEXEC != 0, || unsafe { real::dup3(old, new, flags) })
}

/// fcntl(2): its third argument, an integer or a pointer, travels in the same register either
/// way and is passed on as it came.
///
/// # Safety
/// The arguments of fcntl(2) for `cmd`.
#[no_mangle]
pub unsafe extern "C" fn fcntl(fd: c_int, cmd: c_int, arg: c_long) -> c_int {
    // SAFETY: the real fcntl with the caller's arguments.
    let r = unsafe { real::fcntl(fd, cmd, arg) };
    if fds::duplicates(cmd) {
        table::follow_bits(fd, r);
    }
    if fds::duplicates(cmd) && table::known(fd) {
        runtime::after(|| fds::duplicated(fd, r));
    }
    r
}

/// # Safety
/// The arguments of fcntl(2) (glibc's name for it with 64-bit offsets).
#[no_mangle]
pub unsafe extern "C" fn fcntl64(fd: c_int, cmd: c_int, arg: c_long) -> c_int {
    // SAFETY: the caller's arguments.
    unsafe { fcntl(fd, cmd, arg) }
}

hook! {
    fn close_range(first: c_uint, last: c_uint, flags: c_int) -> c_int {
        gate: first <= last, fail: -1, panic: libc::EINVAL, body: fds::close_range(first, last, flags),
    }
}

hook! {
    fn closefrom(low: c_int) -> () {
        gate: true, fail: (), panic: libc::EBADF, body: fds::closefrom(low),
    }
}
