//! The gate (`socksify_core::session::GATE_ADDR`): system calls the library has checked, made
//! from the one page the kernel guard's filter lets through. Mapped once at load under the
//! guard; everywhere else (no guard, another architecture, the address taken) `call` is the
//! ordinary system call and the guard, if any, traps it as before.

use std::sync::atomic::{AtomicBool, Ordering};

use libc::c_long;

static OPEN: AtomicBool = AtomicBool::new(false);

/// True when this process has the gate.
pub fn open() -> bool {
    OPEN.load(Ordering::Relaxed)
}

/// Maps the gate (under the kernel guard only: elsewhere it would do nothing). A page already
/// there is used only if it holds exactly the gate's code (after `fork` it does).
#[cfg(target_arch = "x86_64")]
pub fn map() {
    use socksify_core::session::{GATE_ADDR, GATE_CODE};
    let open = match socksify_core::sys::map_gate() {
        Ok(true) => true,
        Ok(false) => {
            let mut here = [0u8; GATE_CODE.len()];
            super::mem::copy_in(GATE_ADDR as usize as *const u8, &mut here) && here == GATE_CODE
        }
        Err(_) => false,
    };
    OPEN.store(open, Ordering::Relaxed);
    socksify_core::sys::gate_own_connects(open);
}

#[cfg(not(target_arch = "x86_64"))]
pub fn map() {}

/// System call `nr` through the gate when this process has it (else as `super::call`), as
/// libc's `syscall` answers: the result, or -1 with errno set. Unlike libc's socket functions
/// it is no cancellation point.
///
/// # Safety
/// The arguments of system call `nr`.
pub unsafe fn call(nr: c_long, a: [usize; 6]) -> c_long {
    #[cfg(target_arch = "x86_64")]
    if open() {
        // SAFETY: the gate is mapped (`open`); the caller's arguments.
        let r = unsafe { socksify_core::sys::gated(nr, a) };
        if (-4095..0).contains(&r) {
            super::set_errno(-r as i32);
            return -1;
        }
        return r as c_long;
    }
    // SAFETY: the caller's arguments.
    unsafe { super::call(nr, a) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_through_the_gate_are_the_system_calls() {
        map();
        #[cfg(target_arch = "x86_64")]
        assert!(open(), "the gate could not be mapped");
        map(); // a second time finds it there
               // SAFETY: getpid has no arguments.
        assert_eq!(unsafe { call(libc::SYS_getpid, [0; 6]) }, super::super::pid() as c_long);
        // SAFETY: close of a descriptor that is not open.
        assert_eq!(unsafe { call(libc::SYS_close, [100_000, 0, 0, 0, 0, 0]) }, -1);
        assert_eq!(crate::sys::errno(), libc::EBADF);
    }
}
