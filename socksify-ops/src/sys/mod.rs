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

/// This process's id for the checked copies of `mem` (`process_vm_readv` on itself), asked of
/// the kernel once per process: kept in a page that every fork wipes (`MADV_WIPEONFORK`), so
/// that a child — however it was forked, raw `clone` included — asks again. A `vfork` child
/// shares the page and gets its parent's id, whose memory it shares too. Without that page
/// (Linux before 4.14), asked every time.
pub fn pid_for_copies() -> c_int {
    use std::sync::atomic::{AtomicI32, AtomicPtr, Ordering};
    static PAGE: AtomicPtr<AtomicI32> = AtomicPtr::new(std::ptr::null_mut());
    static NO_PAGE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    let mut page = PAGE.load(Ordering::Acquire);
    if page.is_null() {
        if NO_PAGE.load(Ordering::Relaxed) {
            return pid();
        }
        // SAFETY: an anonymous private page of this process's own, then advice on it.
        let made = unsafe {
            let p = call(
                libc::SYS_mmap,
                args!(
                    0,
                    4096,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    usize::MAX,
                    0
                ),
            );
            if p < 0 {
                None
            } else if call(libc::SYS_madvise, args!(p, 4096, libc::MADV_WIPEONFORK)) != 0 {
                call(libc::SYS_munmap, args!(p, 4096));
                None
            } else {
                Some(p as *mut AtomicI32)
            }
        };
        let Some(made) = made else {
            NO_PAGE.store(true, Ordering::Relaxed);
            return pid();
        };
        page = match PAGE.compare_exchange(std::ptr::null_mut(), made, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => made,
            Err(theirs) => {
                // SAFETY: our page, never published.
                unsafe { call(libc::SYS_munmap, args!(made, 4096)) };
                theirs
            }
        };
    }
    // SAFETY: the page is mapped for the process's life, aligned, read and written atomically.
    let slot = unsafe { &*page };
    match slot.load(Ordering::Relaxed) {
        0 => {
            let me = pid();
            slot.store(me, Ordering::Relaxed);
            me
        }
        me => me,
    }
}
