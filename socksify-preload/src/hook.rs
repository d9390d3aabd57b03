//! The one macro every hook is made with (after mirrord's `hook_guard_fn`): the exported
//! function, a gate that sends it to the real function at once when socksify has nothing to
//! do, and the body run under the runtime's guard (errno, re-entry, panics → failure).

/// `hook! { fn name(args) -> ret { gate: EXPR, fail: VALUE, panic: ERRNO, body: EXPR } }`:
/// `real` in `body` is the real function with the caller's arguments.
macro_rules! hook {
    ($(#[$doc:meta])* fn $name:ident($($arg:ident: $ty:ty),* $(,)?) -> $ret:ty {
        gate: $gate:expr, fail: $fail:expr, panic: $perr:expr, body: $body:expr $(,)?
    }) => {
        $(#[$doc])*
        ///
        /// # Safety
        /// The arguments of the libc function of the same name.
        #[no_mangle]
        #[allow(clippy::too_many_arguments)]
        pub unsafe extern "C" fn $name($($arg: $ty),*) -> $ret {
            // SAFETY: the real function with the caller's arguments.
            let real = || unsafe { socksify_ops::runtime::real::$name($($arg),*) };
            if !$gate {
                return real();
            }
            socksify_ops::runtime::run($fail, $perr, || $body, real)
        }
    };
    // `local: SYS_nr` — when the gate says "nothing to do", a call on a socket of a local family
    // (the first argument) goes through the kernel guard's gate as system call `nr`, untrapped.
    // Only for calls that never wait (a call that waits must stay a cancellation point).
    ($(#[$doc:meta])* fn $name:ident($fd:ident: $fty:ty $(, $arg:ident: $ty:ty)* $(,)?) -> $ret:ty {
        gate: $gate:expr, local: $nr:expr, fail: $fail:expr, panic: $perr:expr, body: $body:expr $(,)?
    }) => {
        $(#[$doc])*
        ///
        /// # Safety
        /// The arguments of the libc function of the same name.
        #[no_mangle]
        #[allow(clippy::too_many_arguments)]
        pub unsafe extern "C" fn $name($fd: $fty $(, $arg: $ty)*) -> $ret {
            // SAFETY: the real function with the caller's arguments.
            let real = || unsafe { socksify_ops::runtime::real::$name($fd $(, $arg)*) };
            if !$gate {
                use socksify_ops::ops::gated;
                if gated::open() && gated::is_local($fd) {
                    let a = socksify_ops::sys::args!($fd $(, $arg)*);
                    return gated::call($nr, a, || real() as libc::c_long) as $ret;
                }
                return real();
            }
            socksify_ops::runtime::run($fail, $perr, || $body, real)
        }
    };
}
