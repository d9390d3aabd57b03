//! Layer 1 — every system call the library makes, typed, straight to the kernel with the CPU's
//! system-call instruction (`socksify_core::sys::raw`): never through libc, whose symbols
//! (`connect`, `close`, `syscall`…) are the library's own hooks in the program. Uses nothing
//! above it.

pub mod addr;
pub mod gate;
pub mod lock;
pub mod mem;
pub mod sock;

use libc::{c_int, c_long};

pub use socksify_core::sys_args as args;

/// System call `nr` as libc's `syscall` answers it: the result, or -1 with errno set.
///
/// # Safety
/// The arguments of system call `nr`.
pub unsafe fn call(nr: c_long, args: [usize; 6]) -> c_long {
    // SAFETY: the caller's arguments.
    unsafe { socksify_core::sys::syscall(nr, args) }
}

/// The calling thread's errno.
pub fn errno() -> c_int {
    // SAFETY: __errno_location always returns this thread's errno.
    unsafe { *libc::__errno_location() }
}

pub fn set_errno(value: c_int) {
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = value }
}

/// `Ok(value)`, or `Err(errno)` for a call that returned -1.
pub fn check(r: c_long) -> Result<c_long, c_int> {
    if r < 0 {
        Err(errno())
    } else {
        Ok(r)
    }
}

/// This process's id.
pub fn pid() -> c_int {
    // SAFETY: getpid has no arguments.
    unsafe { call(libc::SYS_getpid, args!()) as c_int }
}
