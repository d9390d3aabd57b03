//! What every hook does around its body: a re-entry guard, errno kept or set on purpose, and
//! panics caught and turned into a failure — never into a call of the real function.

use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::OnceLock;

use crate::sys::{errno, set_errno};

/// What a hook's body decided.
#[derive(Debug, PartialEq, Eq)]
pub enum Flow<T> {
    /// Not ours: call the real function, with the caller's errno.
    Bypass,
    /// Return this, with the caller's errno.
    Done(T),
    /// Return the hook's failure value with this errno.
    Fail(i32),
}

impl<T> Flow<T> {
    /// The same decision for another value type.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Flow<U> {
        match self {
            Flow::Bypass => Flow::Bypass,
            Flow::Done(v) => Flow::Done(f(v)),
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

static PANIC_REPORT: OnceLock<fn()> = OnceLock::new();

/// Sets what reports a panic caught in a hook (the state's log line): injected from above, so
/// that this lowest layer of the runtime reaches nothing above it.
pub fn on_panic(report: fn()) {
    let _ = PANIC_REPORT.set(report);
}

/// Runs a hook: `body` decides, `real` is the real function. A panic in `body` returns `failed`
/// with errno `panic_errno` (and is reported), never the real function's answer.
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
            if let Some(report) = PANIC_REPORT.get() {
                report();
            }
            set_errno(panic_errno);
            failed
        }
    }
}

/// Runs `f` — the library's bookkeeping after a real call (a duplicate to follow, an option to
/// note) — under the guard: errno is kept, and a panic is reported and goes no further.
pub fn after(f: impl FnOnce()) {
    run(
        (),
        errno(),
        || {
            f();
            Flow::Done(())
        },
        || (),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_is_kept_set_or_failed_and_panics_never_reach_the_real_call() {
        set_errno(42);
        assert_eq!(run(-1, 0, || Flow::Done(7), || 0), 7);
        assert_eq!(errno(), 42, "Done keeps the caller's errno");
        assert_eq!(run(-1, 0, || Flow::Fail(libc::EPERM), || 0), -1);
        assert_eq!(errno(), libc::EPERM);
        set_errno(5);
        assert_eq!(
            run(
                -1,
                0,
                || Flow::Bypass,
                || {
                    assert_eq!(errno(), 5);
                    3
                }
            ),
            3
        );
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let r = run(-1, libc::ECONNREFUSED, || panic!("inside"), || unreachable!("never the real call"));
        std::panic::set_hook(prev);
        assert_eq!((r, errno()), (-1, libc::ECONNREFUSED));
    }

    #[test]
    fn calls_made_inside_a_hook_go_to_the_real_function() {
        let r = run(0, 0, || Flow::Done(run(1, 0, || Flow::Done(2), || 9)), || 0);
        assert_eq!(r, 9, "the inner hook's body does not run");
        assert!(!inside());
    }
}
