//! socksify's LD_PRELOAD library: the exported C functions only — the layer `hooks` on top of
//! `socksify-ops` (see its crate documentation for the layers below). Each hook converts its C
//! arguments, asks `socksify_ops::ops` what the call means, and hands the answer back; every one
//! catches panics and fails closed, none ever falls back to a direct connection.

#[macro_use]
mod hook;

mod hooks;

/// Runs when the library is loaded: the state is read and the real functions found, so that no
/// hook pays for either (and no lazy initialisation is caught by a `fork()` or runs in a
/// signal handler).
extern "C" fn init() {
    let Some(_guard) = socksify_ops::runtime::guard::Guard::enter() else { return };
    // SAFETY: registering fork handlers that take and release the library's locks.
    unsafe {
        libc::pthread_atfork(
            Some(socksify_ops::ops::pending::before_fork),
            Some(socksify_ops::ops::pending::after_fork),
            Some(socksify_ops::ops::pending::after_fork),
        )
    };
    let _ = std::panic::catch_unwind(|| {
        socksify_ops::runtime::init();
        socksify_ops::ops::fds::keep_log_descriptor();
        if let Ok(st) = socksify_ops::runtime::state() {
            socksify_ops::ops::pending::after_exec(st);
        }
    });
}

#[used]
#[link_section = ".init_array"]
static INIT: extern "C" fn() = init;
