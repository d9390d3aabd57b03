//! The gate (`socksify_core::session::GATE_ADDR`): system calls the library has checked, made
//! from the one page the kernel guard's filter lets through. Mapped once at load under the
//! guard; everywhere else (no guard, another architecture, the address taken) `call` is the
//! ordinary system call and the guard, if any, traps it as before.

use std::sync::atomic::{AtomicBool, Ordering};

use libc::c_long;

use super::errno;

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
    const PAGE: usize = 4096;
    let at = GATE_ADDR as usize;
    // SAFETY: an anonymous private mapping at an address nothing else may hold
    // (MAP_FIXED_NOREPLACE fails rather than replace a mapping).
    let r = unsafe {
        super::call(
            libc::SYS_mmap,
            super::args!(
                at,
                PAGE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
                -1i32,
                0
            ),
        )
    };
    if r == -1 {
        if errno() == libc::EEXIST {
            let mut here = [0u8; GATE_CODE.len()];
            if super::mem::copy_in(at as *const u8, &mut here) && here == GATE_CODE {
                OPEN.store(true, Ordering::Relaxed);
            }
        }
        return;
    }
    if r as usize != at {
        // An old kernel took the address as a hint and mapped elsewhere: no gate.
        // SAFETY: unmaps the page just mapped.
        unsafe { super::call(libc::SYS_munmap, super::args!(r, PAGE)) };
        return;
    }
    // SAFETY: the page is ours, writable, and GATE_CODE fits in it.
    unsafe { std::ptr::copy_nonoverlapping(GATE_CODE.as_ptr(), at as *mut u8, GATE_CODE.len()) };
    // SAFETY: our page becomes read-only code.
    let r =
        unsafe { super::call(libc::SYS_mprotect, super::args!(at, PAGE, libc::PROT_READ | libc::PROT_EXEC)) };
    if r == 0 {
        OPEN.store(true, Ordering::Relaxed);
    } else {
        // Refused (MemoryDenyWriteExecute, a sandbox): no gate, and no page left behind.
        // SAFETY: unmaps the page just mapped.
        unsafe { super::call(libc::SYS_munmap, super::args!(at, PAGE)) };
    }
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
        let r: isize;
        // SAFETY: the gate is `syscall; ret`, mapped by `map`: a call to it is the system call
        // with the x86_64 convention (rcx and r11 clobbered), and its return address is pushed
        // on our stack (no `nostack`: the compiler keeps the red zone free).
        unsafe {
            std::arch::asm!(
                "call {gate}",
                gate = in(reg) socksify_core::session::GATE_ADDR,
                inlateout("rax") nr as isize => r,
                in("rdi") a[0],
                in("rsi") a[1],
                in("rdx") a[2],
                in("r10") a[3],
                in("r8") a[4],
                in("r9") a[5],
                lateout("rcx") _,
                lateout("r11") _,
            );
        }
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
        assert_eq!(errno(), libc::EBADF);
    }
}
