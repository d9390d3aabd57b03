//! The resolver's low-level entry points (`res_query` and friends, `getaddrinfo_a`) build DNS
//! packets and send them through libc's internal sockets, out of the hooks' reach: under remote
//! DNS they fail, with a log line; under local DNS they are the real functions.

use libc::{c_char, c_int, c_uchar, c_void};
use socksify_ops::ops::dns;
use socksify_ops::runtime::real::Real;
use socksify_ops::runtime::run;

macro_rules! refused {
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
                // SAFETY: the real function with the caller's arguments.
                let real = || REAL.get().map_or($fail, |f| unsafe { f($($arg),*) });
                run($fail, libc::ECONNREFUSED, || dns::refuse_raw(stringify!($name)), real)
            }
        )*
    };
}

refused! {
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
