//! The resolver's low-level entry points (`res_query` and friends, `getaddrinfo_a`) build DNS
//! packets and send them through libc's internal sockets, out of the hooks' reach. Under remote
//! DNS they fail, with a log line; under local DNS they are the real functions.

use libc::{c_char, c_int, c_uchar, c_void};

use crate::hook::{run, Flow};
use crate::{real::Real, state};

const NO_RECOVERY: c_int = 3;

extern "C" {
    fn __h_errno_location() -> *mut c_int;
}

/// `None` to call the real function (local DNS), else the failure to return.
fn refuse(what: &str) -> Flow<c_int> {
    match state::get() {
        Ok(st) if !st.router.remote_dns() => Flow::Bypass,
        Ok(st) => {
            st.log.error(format_args!(
                "{what} refused: it would query the system resolver directly, and DNS goes through the proxies"
            ));
            // SAFETY: glibc's per-thread h_errno.
            unsafe { *__h_errno_location() = NO_RECOVERY };
            Flow::Fail(libc::ECONNREFUSED)
        }
        Err(_) => {
            state::log_broken(format_args!("{what}"));
            Flow::Fail(libc::ECONNREFUSED)
        }
    }
}

macro_rules! refused_hooks {
    ($($name:ident ( $($arg:ident : $ty:ty),* ) = $fail:expr;)*) => {
        $(
            /// # Safety
            /// The arguments of the libc function of the same name.
            #[no_mangle]
            pub unsafe extern "C" fn $name($($arg: $ty),*) -> c_int {
                static REAL: Real<unsafe extern "C" fn($($ty),*) -> c_int> =
                    Real::new(match std::ffi::CStr::from_bytes_with_nul(concat!(stringify!($name), "\0").as_bytes()) {
                        Ok(name) => name,
                        Err(_) => panic!("symbol name"),
                    });
                run(
                    $fail,
                    libc::ECONNREFUSED,
                    || refuse(stringify!($name)),
                    || match REAL.get() {
                        // SAFETY: the real function with the caller's arguments.
                        Some(f) => unsafe { f($($arg),*) },
                        None => $fail,
                    },
                )
            }
        )*
    };
}

refused_hooks! {
    res_query(dname: *const c_char, class: c_int, ty: c_int, answer: *mut c_uchar, anslen: c_int) = -1;
    __res_query(dname: *const c_char, class: c_int, ty: c_int, answer: *mut c_uchar, anslen: c_int) = -1;
    res_search(dname: *const c_char, class: c_int, ty: c_int, answer: *mut c_uchar, anslen: c_int) = -1;
    __res_search(dname: *const c_char, class: c_int, ty: c_int, answer: *mut c_uchar, anslen: c_int) = -1;
    res_querydomain(name: *const c_char, domain: *const c_char, class: c_int, ty: c_int, answer: *mut c_uchar, anslen: c_int) = -1;
    __res_querydomain(name: *const c_char, domain: *const c_char, class: c_int, ty: c_int, answer: *mut c_uchar, anslen: c_int) = -1;
    res_send(msg: *const c_uchar, msglen: c_int, answer: *mut c_uchar, anslen: c_int) = -1;
    __res_send(msg: *const c_uchar, msglen: c_int, answer: *mut c_uchar, anslen: c_int) = -1;
    res_nquery(statp: *mut c_void, dname: *const c_char, class: c_int, ty: c_int, answer: *mut c_uchar, anslen: c_int) = -1;
    __res_nquery(statp: *mut c_void, dname: *const c_char, class: c_int, ty: c_int, answer: *mut c_uchar, anslen: c_int) = -1;
    res_nsearch(statp: *mut c_void, dname: *const c_char, class: c_int, ty: c_int, answer: *mut c_uchar, anslen: c_int) = -1;
    __res_nsearch(statp: *mut c_void, dname: *const c_char, class: c_int, ty: c_int, answer: *mut c_uchar, anslen: c_int) = -1;
    res_nquerydomain(statp: *mut c_void, name: *const c_char, domain: *const c_char, class: c_int, ty: c_int, answer: *mut c_uchar, anslen: c_int) = -1;
    __res_nquerydomain(statp: *mut c_void, name: *const c_char, domain: *const c_char, class: c_int, ty: c_int, answer: *mut c_uchar, anslen: c_int) = -1;
    res_nsend(statp: *mut c_void, msg: *const c_uchar, msglen: c_int, answer: *mut c_uchar, anslen: c_int) = -1;
    __res_nsend(statp: *mut c_void, msg: *const c_uchar, msglen: c_int, answer: *mut c_uchar, anslen: c_int) = -1;
    getaddrinfo_a(mode: c_int, list: *mut *mut c_void, nitems: c_int, sevp: *mut c_void) = libc::EAI_FAIL;
}
