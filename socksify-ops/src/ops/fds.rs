//! Descriptors: the library's own (UDP control connections) stay alive through the program's
//! `close`, `dup2`/`dup3` onto them, `close_range` and `closefrom` (ssh and others close every
//! descriptor); the table follows every duplicate and close of the program's.

use libc::{c_int, c_uint};

use super::udp;
use crate::runtime::{state, Flow};
use crate::sys;
use crate::table::{self, Closing};

/// close(2) of `fd`.
pub fn close(fd: c_int) -> Flow<c_int> {
    if table::known(fd) {
        super::pending::closing(fd);
    }
    match table::closing(fd) {
        // The program closes a number it never opened: the library's own stays open.
        Closing::Internal => Flow::Done(0),
        Closing::Program => Flow::Bypass,
    }
}

/// Before dup2/dup3 of `old` onto `new`: the library's own descriptor moves away, a replaced
/// socket is forgotten, and a copy that survives exec (no `O_CLOEXEC`) of a socket the library
/// connected to its UDP relay is disconnected from it first (its association would not survive
/// the exec).
pub fn before_replacing(old: c_int, new: c_int, cloexec: bool) {
    if old == new {
        return;
    }
    if table::is_internal(new) {
        match state::logger().and_then(|log| log.relocate(new)) {
            Some(moved) => table::moved_internal(new, moved),
            None => table::relocate_internal(new),
        }
    } else {
        table::closing(new);
    }
    if !cloexec && table::relayed(old) {
        let errno = sys::errno();
        udp::unlink(old);
        sys::set_errno(errno);
    }
}

/// At load: the log's descriptor is the library's own, kept through the program's closes.
pub fn keep_log_descriptor() {
    if let Some(fd) = state::logger().and_then(|log| log.descriptor()) {
        table::own(fd);
    }
}

/// After a duplicate (dup, dup2, dup3, F_DUPFD…) made `new` from `old`, or failed (`new` < 0).
pub fn duplicated(old: c_int, new: c_int) {
    if new >= 0 {
        table::duplicated(old, new);
    }
}

/// fcntl's commands that duplicate a descriptor.
pub fn duplicates(cmd: c_int) -> bool {
    cmd == libc::F_DUPFD || cmd == libc::F_DUPFD_CLOEXEC
}

/// close_range(2) with the library's own descriptors left out of the range.
pub fn close_range(first: c_uint, last: c_uint, flags: c_int) -> Flow<c_int> {
    let hi = last.min(c_int::MAX as c_uint) as c_int;
    let keep = if flags & libc::CLOSE_RANGE_CLOEXEC as c_int == 0 {
        table::closing_range(first as c_int, hi)
    } else {
        internal_in(first as c_int, hi)
    };
    let mut cursor = first;
    for fd in keep.into_iter().map(|fd| fd as c_uint) {
        if cursor < fd && sys_close_range(cursor, fd - 1, flags) != 0 {
            return Flow::Fail(sys::errno());
        }
        cursor = fd + 1;
    }
    if cursor <= last && cursor >= first && sys_close_range(cursor, last, flags) != 0 {
        return Flow::Fail(sys::errno());
    }
    Flow::Done(0)
}

/// The library's own descriptors in `first..=last`, sorted.
fn internal_in(first: c_int, last: c_int) -> Vec<c_int> {
    table::internal_fds().into_iter().filter(|fd| (first..=last).contains(fd)).collect()
}

fn sys_close_range(first: c_uint, last: c_uint, flags: c_int) -> c_int {
    // SAFETY: close_range(2) with the program's arguments.
    unsafe { sys::call(libc::SYS_close_range, sys::args!(first, last, flags)) as c_int }
}

/// closefrom(3): close_range from `low` on.
pub fn closefrom(low: c_int) -> Flow<()> {
    close_range(low.max(0) as c_uint, c_uint::MAX, 0).map(drop)
}
