//! A mutex that a forked child can take again: a futex word and nothing else.
//!
//! parking_lot's mutex keeps its waiters in a process-wide table and, now and then, hands the
//! lock straight to a waiting thread instead of releasing it ("eventual fairness"). After a
//! `fork()` that waiting thread does not exist in the child, so unlocking there could give the
//! lock to no one: the child's next `connect()` waited forever (2 runs in 5 of the stress test).
//! This lock has no handoff and no table: unlocking is one swap (and a wake if a thread sleeps),
//! the same in the parent and the child.

use std::cell::UnsafeCell;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU32, Ordering};

use super::{args, call};

const UNLOCKED: u32 = 0;
const LOCKED: u32 = 1;
/// Locked, and a thread may sleep on the word.
const CONTENDED: u32 = 2;

pub struct ForkMutex<T> {
    state: AtomicU32,
    value: UnsafeCell<T>,
}

// SAFETY: the value is only reached through a guard, and one guard exists at a time.
unsafe impl<T: Send> Sync for ForkMutex<T> {}

impl<T> ForkMutex<T> {
    pub const fn new(value: T) -> Self {
        ForkMutex { state: AtomicU32::new(UNLOCKED), value: UnsafeCell::new(value) }
    }

    pub fn lock(&self) -> ForkMutexGuard<'_, T> {
        if self.state.compare_exchange(UNLOCKED, LOCKED, Ordering::Acquire, Ordering::Relaxed).is_err() {
            self.lock_contended();
        }
        ForkMutexGuard { lock: self }
    }

    fn lock_contended(&self) {
        for _ in 0..64 {
            if self.state.load(Ordering::Relaxed) == UNLOCKED
                && self.state.compare_exchange(UNLOCKED, LOCKED, Ordering::Acquire, Ordering::Relaxed).is_ok()
            {
                return;
            }
            std::hint::spin_loop();
        }
        while self.state.swap(CONTENDED, Ordering::Acquire) != UNLOCKED {
            // SAFETY: FUTEX_WAIT on our own word, sleeping only while it still reads CONTENDED.
            unsafe {
                call(
                    libc::SYS_futex,
                    args!(
                        self.state.as_ptr(),
                        libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
                        CONTENDED,
                        0usize
                    ),
                )
            };
        }
    }

    /// Releases a lock taken by `lock` whose guard was forgotten (the `pthread_atfork` handlers:
    /// taken before `fork()`, released after it in the parent and in the child).
    ///
    /// # Safety
    /// This thread took the lock and forgot its guard.
    pub unsafe fn force_unlock(&self) {
        self.unlock();
    }

    fn unlock(&self) {
        if self.state.swap(UNLOCKED, Ordering::Release) == CONTENDED {
            // SAFETY: FUTEX_WAKE of one sleeper on our own word (in a forked child there is none:
            // harmless).
            unsafe {
                call(
                    libc::SYS_futex,
                    args!(self.state.as_ptr(), libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG, 1),
                )
            };
        }
    }
}

pub struct ForkMutexGuard<'a, T> {
    lock: &'a ForkMutex<T>,
}

impl<T> Deref for ForkMutexGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard holds the lock.
        unsafe { &*self.lock.value.get() }
    }
}

impl<T> DerefMut for ForkMutexGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the guard holds the lock, and is borrowed mutably.
        unsafe { &mut *self.lock.value.get() }
    }
}

impl<T> Drop for ForkMutexGuard<'_, T> {
    fn drop(&mut self) {
        self.lock.unlock();
    }
}

#[cfg(test)]
mod tests {
    use super::ForkMutex;
    use std::sync::Arc;

    #[test]
    fn threads_count_under_the_lock() {
        let m = Arc::new(ForkMutex::new(0u64));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let m = m.clone();
                std::thread::spawn(move || {
                    for _ in 0..20_000 {
                        *m.lock() += 1;
                    }
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        assert_eq!(*m.lock(), 160_000);
    }

    #[test]
    fn a_forgotten_guard_is_released_by_force_unlock() {
        let m = ForkMutex::new(1);
        std::mem::forget(m.lock());
        // SAFETY: this thread took it and forgot the guard.
        unsafe { m.force_unlock() };
        assert_eq!(*m.lock(), 1);
    }

    #[test]
    fn a_child_forked_while_threads_wait_takes_the_lock_again() {
        static M: ForkMutex<u64> = ForkMutex::new(0);
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        *M.lock() += 1;
                    }
                })
            })
            .collect();
        for _ in 0..200 {
            std::mem::forget(M.lock());
            // SAFETY: the child only takes and releases the lock and leaves with _exit.
            let pid = unsafe { libc::fork() };
            if pid == 0 {
                // SAFETY: the lock was taken by this (the forking) thread.
                unsafe { M.force_unlock() };
                for _ in 0..100 {
                    *M.lock() += 1;
                }
                // SAFETY: leaving the child without running the parent's destructors.
                unsafe { libc::_exit(0) };
            }
            // SAFETY: as in the child.
            unsafe { M.force_unlock() };
            let mut status = 0;
            // SAFETY: waiting for our own child, with a local status word.
            assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
            assert_eq!(status, 0);
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        threads.into_iter().for_each(|t| t.join().unwrap());
    }
}
