//! What every hook does around its body: a re-entry guard, errno kept or set on purpose, and
//! panics caught and turned into a failure — never into a call of the real function.

use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// What a hook's body decided.
pub enum Flow<T> {
    /// Not ours: call the real function, with the caller's errno.
    Bypass,
    /// Return this, with the caller's errno.
    Done(T),
    /// Return the hook's failure value with this errno.
    Fail(i32),
}

impl<T> Flow<T> {
    /// The same decision for a hook that returns nothing.
    pub fn map_done(self) -> Flow<()> {
        match self {
            Flow::Bypass => Flow::Bypass,
            Flow::Done(_) => Flow::Done(()),
            Flow::Fail(e) => Flow::Fail(e),
        }
    }
}

thread_local! {
    static IN_HOOK: Cell<bool> = const { Cell::new(false) };
}

/// True while this thread runs the library's own code: its calls go to the real functions.
/// (`IN_HOOK` has no destructor, so it stays readable even while the thread is torn down.)
pub fn inside() -> bool {
    IN_HOOK.try_with(Cell::get).unwrap_or(false)
}

/// Marks "inside a hook" for this thread until dropped.
pub struct Guard {
    active: bool,
}

impl Guard {
    /// `None` when this thread is already inside a hook: the library's own calls (through std,
    /// the resolver, the allocator) must reach the real functions.
    pub fn enter() -> Option<Guard> {
        match IN_HOOK.try_with(|c| c.replace(true)) {
            Ok(true) => None,
            Ok(false) => Some(Guard { active: true }),
            // Thread-local storage is being torn down: run the hook without a guard.
            Err(_) => Some(Guard { active: false }),
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if self.active {
            let _ = IN_HOOK.try_with(|c| c.set(false));
        }
    }
}

pub fn errno() -> i32 {
    // SAFETY: __errno_location always returns this thread's errno.
    unsafe { *libc::__errno_location() }
}

pub fn set_errno(value: i32) {
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = value }
}

/// Runs a hook: `body` decides, `real` is the real function. A panic in `body` returns `failed`
/// with errno `panic_errno`.
pub fn run<T>(failed: T, panic_errno: i32, body: impl FnOnce() -> Flow<T>, real: impl FnOnce() -> T) -> T {
    let saved = errno();
    let Some(_guard) = Guard::enter() else { return real() };
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Flow::Bypass) => {
            set_errno(saved);
            real()
        }
        Ok(Flow::Done(value)) => {
            set_errno(saved);
            value
        }
        Ok(Flow::Fail(e)) => {
            set_errno(e);
            failed
        }
        Err(_) => {
            crate::log::panic_caught();
            set_errno(panic_errno);
            failed
        }
    }
}
