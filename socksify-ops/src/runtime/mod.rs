//! Layer 2 — what every hook runs in: the re-entry guard, errno and panics (`guard`), log lines
//! (`log`), the real libc functions (`real`) and the state read once at load (`state`). Uses
//! only `sys` (and socksify-core).

pub mod guard;
pub mod log;
pub mod real;
pub mod state;

pub use guard::{after, inside, run, Flow};
pub use state::{state, State};

/// Runs once, when the library is loaded: the state is read and the real functions that
/// signal handlers may reach are found, so that no hook pays for either (and no lazy
/// initialisation is caught half-way by a `fork()` or runs in a signal handler).
pub fn init() {
    real::resolve_at_load();
    // Remembered now, by the process that loaded the library (a vfork child would find its
    // parent's, which shares its memory, rather than leave its own for the parent).
    let _ = crate::sys::pid_for_copies();
    guard::on_panic(state::report_panic);
    if state::state().is_ok_and(|st| st.guarded) {
        crate::sys::gate::map();
    }
}
