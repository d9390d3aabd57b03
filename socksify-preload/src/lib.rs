//! socksify's LD_PRELOAD library. Its hooks are thin: they turn C arguments into calls of
//! `socksify-core` (the router decides, the chain connects) and the answers back into C return
//! values and errno. Every hook catches panics and fails closed; none ever falls back to a
//! direct connection.

mod bind;
mod dns;
mod fds;
mod hook;
mod log;
mod net;
mod rawdns;
mod real;
mod recv;
mod sock;
mod sockets;
mod state;
mod syscall;
mod udp;

/// Runs when the library is loaded: reads the configuration, so that no hook pays for it (and no
/// lazy initialisation can be caught by a `fork()`). The real functions are found on first use
/// (`real.rs`): most programs call few of the hooked functions, and every `dlsym` at start-up is
/// paid by every program, `/bin/true` included.
extern "C" fn init() {
    let Some(_guard) = hook::Guard::enter() else { return };
    // SAFETY: registering fork handlers that take and release the fd table's lock.
    unsafe {
        libc::pthread_atfork(Some(sockets::before_fork), Some(sockets::after_fork), Some(sockets::after_fork))
    };
    let _ = std::panic::catch_unwind(|| {
        let _ = state::get();
    });
}

#[used]
#[link_section = ".init_array"]
static INIT: extern "C" fn() = init;
