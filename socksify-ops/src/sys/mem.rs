//! The program's memory, read and written without trusting its pointers: process_vm_readv on
//! this very process, so that a pointer the program got wrong is an error (the kernel would
//! have said EFAULT), never a crash.

use std::sync::atomic::{AtomicBool, Ordering};

use super::{args, call, errno};

/// Set once process_vm_readv turned out to be refused (a sandbox's seccomp profile may): the
/// copies then trust the pointers, as a plain C library would.
static NO_VM_READV: AtomicBool = AtomicBool::new(false);

/// How many ranges one checked copy takes at most.
const MAX_PAIRS: usize = 4;

/// Copies `to.len()` bytes from `from` for every (from, to, len), one side of each being the
/// program's memory. Only EFAULT is "wrong": any other failure (the call refused) falls back to
/// a plain copy, so that no pointer is ever taken for a bad one and its call handed to the
/// kernel unexamined.
fn checked_copy(pairs: &[(*const u8, *mut u8, usize)]) -> bool {
    let total: usize = pairs.iter().map(|p| p.2).sum();
    if total == 0 {
        return true;
    }
    assert!(pairs.len() <= MAX_PAIRS, "a checked copy takes at most {MAX_PAIRS} ranges");
    if !NO_VM_READV.load(Ordering::Relaxed) {
        let none = libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 };
        let (mut local, mut remote) = ([none; MAX_PAIRS], [none; MAX_PAIRS]);
        for (i, &(from, to, n)) in pairs.iter().enumerate() {
            local[i] = libc::iovec { iov_base: to.cast(), iov_len: n };
            remote[i] = libc::iovec { iov_base: from as *mut libc::c_void, iov_len: n };
        }
        let n = pairs.len();
        let read_as = |pid: libc::c_int| {
            // SAFETY: process_vm_readv on this process: the kernel checks every byte of both
            // sides.
            unsafe { call(libc::SYS_process_vm_readv, args!(pid, local.as_ptr(), n, remote.as_ptr(), n, 0)) }
        };
        let mut r = read_as(super::pid_for_copies());
        if r < 0 && matches!(errno(), libc::EPERM | libc::ESRCH) {
            // The remembered id was not this process's (a vfork child shares its parent's
            // page): asked again, it is.
            r = read_as(super::pid());
        }
        if r == total as libc::c_long {
            return true;
        }
        if r >= 0 || errno() == libc::EFAULT {
            return false;
        }
        NO_VM_READV.store(true, Ordering::Relaxed);
    }
    for &(from, to, n) in pairs {
        // SAFETY: without process_vm_readv the program's pointers are trusted, as libc does.
        unsafe { std::ptr::copy_nonoverlapping(from, to, n) };
    }
    true
}

/// Copies `out.len()` bytes from the program's address `src`; `false` when unreadable.
pub fn copy_in(src: *const u8, out: &mut [u8]) -> bool {
    checked_copy(&[(src, out.as_mut_ptr(), out.len())])
}

/// Copies `data` to the program's address `dst`; `false` when it is not writable.
///
/// process_vm_readv with the roles swapped: `data` is the "remote" range (of this process) and
/// `dst` the local one, which the kernel writes with its own fault checks. Not
/// process_vm_writev, which the kernel guard traps (it confines writes into other processes).
pub fn copy_out(dst: *mut u8, data: &[u8]) -> bool {
    checked_copy(&[(data.as_ptr(), dst, data.len())])
}

/// Two copies out, in one system call; `false` when either is not writable.
pub fn copy_out_two(a: (*mut u8, &[u8]), b: (*mut u8, &[u8])) -> bool {
    checked_copy(&[(a.1.as_ptr(), a.0, a.1.len()), (b.1.as_ptr(), b.0, b.1.len())])
}

/// A value of plain old data at the program's address `src`, or `None` when unreadable.
pub fn copy_value<T: Copy>(src: *const T) -> Option<T> {
    let mut v = std::mem::MaybeUninit::<T>::zeroed();
    // SAFETY: the bytes of `v`, which any bit pattern fills for plain old data.
    let bytes =
        unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr().cast::<u8>(), std::mem::size_of::<T>()) };
    // SAFETY: every byte was copied from the program's value of type T.
    copy_in(src.cast(), bytes).then(|| unsafe { v.assume_init() })
}

/// The program's array of `n` values at `src` (an iovec list, say), copied; `None` when
/// unreadable.
pub fn copy_array<T: Copy>(src: *const T, n: usize) -> Option<Vec<T>> {
    let mut v: Vec<T> = Vec::with_capacity(n);
    let bytes = n.checked_mul(std::mem::size_of::<T>())?;
    // SAFETY: the vector's capacity, filled as bytes.
    let dst = unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr().cast::<u8>(), bytes) };
    if !copy_in(src.cast(), dst) {
        return None;
    }
    // SAFETY: all `n` values were copied in as plain old data.
    unsafe { v.set_len(n) };
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_pointers_copy_and_bad_ones_are_refused() {
        let src = [1u8, 2, 3, 4];
        let mut out = [0u8; 4];
        assert!(copy_in(src.as_ptr(), &mut out));
        assert_eq!(out, src);
        assert!(!copy_in(8 as *const u8, &mut out), "a wild pointer is EFAULT, not a crash");
        let mut dst = [0u8; 2];
        assert!(copy_out(dst.as_mut_ptr(), &[9, 8]));
        assert_eq!(dst, [9, 8]);
        assert!(!copy_out(8 as *mut u8, &[1]));
        // Read-only memory is not writable.
        static RO: [u8; 4] = [0; 4];
        assert!(!copy_out(RO.as_ptr() as *mut u8, &[1]));
        assert_eq!(copy_value(&7u32 as *const u32), Some(7));
        assert_eq!(copy_value(16 as *const u64), None);
        assert_eq!(copy_array([5u16, 6].as_ptr(), 2), Some(vec![5, 6]));
        let (mut a, mut b) = ([0u8; 1], [0u8; 2]);
        assert!(copy_out_two((a.as_mut_ptr(), &[1]), (b.as_mut_ptr(), &[2, 3])));
        assert_eq!((a, b), ([1], [2, 3]));
    }
}
