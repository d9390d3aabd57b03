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
}
