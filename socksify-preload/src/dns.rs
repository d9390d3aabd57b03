//! Resolver hooks. With remote DNS, a name gets a fake address (or its hosts-file address) and
//! the system resolver is never asked; with local DNS every call goes to libc.
//!
//! Address lists are always built by the real `getaddrinfo` from numeric strings, so glibc
//! allocates every node and the real `freeaddrinfo` frees them, and socktype/protocol/service
//! handling is exactly glibc's.

use std::ffi::{CStr, CString};
use std::net::IpAddr;

use libc::{addrinfo, c_char, c_int, c_void, hostent, size_t, sockaddr, socklen_t};
use socksify_core::fakedns::FakeDnsError;
use socksify_core::router::Resolution;

use crate::hook::{run, Flow};
use crate::{real, sock, state};

const HOST_NOT_FOUND: c_int = 1;
const NO_RECOVERY: c_int = 3;

extern "C" {
    fn __h_errno_location() -> *mut c_int;
}

fn set_h_errno(v: c_int) {
    // SAFETY: glibc's per-thread h_errno.
    unsafe { *__h_errno_location() = v }
}

/// Resolution of a name for the hooks: `None` to let libc answer (local DNS or a numeric host).
fn resolve(name: &str) -> Option<Result<Resolution, ()>> {
    if is_numeric(name) {
        return None;
    }
    let st = match state::get() {
        Ok(st) => st,
        Err(_) => {
            state::log_broken(format_args!("looking up {name}"));
            return Some(Err(()));
        }
    };
    if !st.router.remote_dns() {
        return None;
    }
    let r = st.router.resolve(name);
    if let Resolution::Fail(e) = &r {
        st.log.error(format_args!("lookup of {name:?} failed: {e}"));
    }
    Some(Ok(r))
}

/// Numeric hosts as libc reads them (`inet_aton` forms such as `127.1` included).
fn is_numeric(name: &str) -> bool {
    if name.parse::<IpAddr>().is_ok() {
        return true;
    }
    let Ok(c) = CString::new(name) else { return false };
    // SAFETY: a NUL-terminated string and a local in_addr.
    let mut out: libc::in_addr = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    unsafe { inet_aton(c.as_ptr(), &mut out) != 0 }
}

extern "C" {
    fn inet_aton(cp: *const c_char, inp: *mut libc::in_addr) -> c_int;
}

fn real_getaddrinfo(
    node: *const c_char,
    service: *const c_char,
    hints: *const addrinfo,
    res: *mut *mut addrinfo,
) -> c_int {
    match real::getaddrinfo.get() {
        // SAFETY: the real getaddrinfo with valid arguments.
        Some(f) => unsafe { f(node, service, hints, res) },
        None => libc::EAI_FAIL,
    }
}

/// # Safety
/// The arguments of getaddrinfo(3).
#[no_mangle]
pub unsafe extern "C" fn getaddrinfo(
    node: *const c_char,
    service: *const c_char,
    hints: *const addrinfo,
    res: *mut *mut addrinfo,
) -> c_int {
    run(
        libc::EAI_FAIL,
        0,
        // SAFETY: the caller's arguments.
        || unsafe { getaddrinfo_flow(node, service, hints, res) },
        || real_getaddrinfo(node, service, hints, res),
    )
}

unsafe fn getaddrinfo_flow(
    node: *const c_char,
    service: *const c_char,
    hints: *const addrinfo,
    res: *mut *mut addrinfo,
) -> Flow<c_int> {
    if node.is_null() || res.is_null() {
        return Flow::Bypass;
    }
    // SAFETY: a NUL-terminated string from the caller.
    let Ok(name) = (unsafe { CStr::from_ptr(node) }).to_str() else { return Flow::Done(libc::EAI_NONAME) };
    let resolution = match resolve(name) {
        None => return Flow::Bypass,
        Some(Err(())) => return Flow::Done(libc::EAI_FAIL),
        Some(Ok(r)) => r,
    };
    // glibc's defaults for NULL hints.
    let mut h: addrinfo = if hints.is_null() {
        // SAFETY: addrinfo is plain old data.
        let mut h: addrinfo = unsafe { std::mem::zeroed() };
        h.ai_flags = libc::AI_V4MAPPED | libc::AI_ADDRCONFIG;
        h
    } else {
        // SAFETY: the caller's hints.
        unsafe { *hints }
    };
    if h.ai_flags & libc::AI_NUMERICHOST != 0 {
        return Flow::Done(libc::EAI_NONAME);
    }
    let addrs = match resolution {
        Resolution::System => return Flow::Bypass,
        Resolution::Local(addrs) => addrs,
        Resolution::Fake { v4, v6, unspec } => vec![match h.ai_family {
            libc::AF_INET => v4,
            libc::AF_INET6 => v6,
            _ => unspec,
        }],
        Resolution::Fail(FakeDnsError::Full(_)) => return Flow::Done(libc::EAI_MEMORY),
        Resolution::Fail(FakeDnsError::BadName) => return Flow::Done(libc::EAI_NONAME),
    };
    let canonical = h.ai_flags & libc::AI_CANONNAME != 0;
    h.ai_flags = (h.ai_flags | libc::AI_NUMERICHOST) & !(libc::AI_CANONNAME | libc::AI_ADDRCONFIG);
    // SAFETY: `h` and the caller's service and result pointer.
    match unsafe { numeric_list(&addrs, service, &h) } {
        Ok(list) => {
            if canonical {
                // SAFETY: list is a non-empty glibc list; strdup'd memory is freed by freeaddrinfo.
                unsafe { (*list).ai_canonname = libc::strdup(node) };
            }
            // SAFETY: the caller's result pointer.
            unsafe { *res = list };
            Flow::Done(0)
        }
        Err(rc) => Flow::Done(rc),
    }
}

/// One glibc list for several numeric addresses, in order.
unsafe fn numeric_list(
    addrs: &[IpAddr],
    service: *const c_char,
    h: &addrinfo,
) -> Result<*mut addrinfo, c_int> {
    let mut head: *mut addrinfo = std::ptr::null_mut();
    let mut tail: *mut addrinfo = std::ptr::null_mut();
    let mut last_rc = libc::EAI_NONAME;
    for ip in addrs {
        let text = CString::new(ip.to_string()).expect("no NUL in an address");
        let mut part: *mut addrinfo = std::ptr::null_mut();
        let rc = real_getaddrinfo(text.as_ptr(), service, h, &mut part);
        if rc != 0 {
            last_rc = rc;
            continue;
        }
        if head.is_null() {
            head = part;
        } else {
            // SAFETY: tail is the last node of the list built so far.
            unsafe { (*tail).ai_next = part };
        }
        tail = part;
        // SAFETY: walking a list glibc just returned.
        unsafe {
            while !(*tail).ai_next.is_null() {
                tail = (*tail).ai_next;
            }
        }
    }
    if head.is_null() {
        Err(last_rc)
    } else {
        Ok(head)
    }
}

/// # Safety
/// A list from getaddrinfo (every list this library returns was built by glibc).
#[no_mangle]
pub unsafe extern "C" fn freeaddrinfo(res: *mut addrinfo) {
    if let Some(f) = real::freeaddrinfo.get() {
        // SAFETY: the caller's list, allocated by glibc's getaddrinfo.
        unsafe { f(res) }
    }
}

/// Fills a hostent and its data in `buf`: addresses, the address list, an empty alias list and
/// the name. `Err(())` when `buf` is too small.
unsafe fn fill_hostent(
    name: &str,
    af: c_int,
    addrs: &[IpAddr],
    ret: *mut hostent,
    buf: &mut [u8],
) -> Result<(), ()> {
    let alen = if af == libc::AF_INET6 { 16 } else { 4 };
    let ptr = std::mem::size_of::<*mut c_char>();
    let mut off = 0usize;
    let mut take = |n: usize, align: usize| -> Result<usize, ()> {
        let start = (buf.as_ptr() as usize + off).next_multiple_of(align) - buf.as_ptr() as usize;
        if start + n > buf.len() {
            return Err(());
        }
        off = start + n;
        Ok(start)
    };
    let addr_at = take(alen * addrs.len(), 8)?;
    let list_at = take(ptr * (addrs.len() + 1), ptr)?;
    let alias_at = take(ptr, ptr)?;
    let name_at = take(name.len() + 1, 1)?;
    let base = buf.as_mut_ptr();
    for (i, ip) in addrs.iter().enumerate() {
        let bytes: Vec<u8> = match ip {
            IpAddr::V4(v4) if af == libc::AF_INET => v4.octets().to_vec(),
            IpAddr::V4(v4) => v4.to_ipv6_mapped().octets().to_vec(),
            IpAddr::V6(v6) => v6.octets().to_vec(),
        };
        // SAFETY: every offset below was reserved inside `buf` by `take`.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), base.add(addr_at + i * alen), alen);
            *(base.add(list_at + i * ptr) as *mut *mut c_char) = base.add(addr_at + i * alen) as *mut c_char;
        }
    }
    // SAFETY: as above; `ret` is the caller's hostent.
    unsafe {
        *(base.add(list_at + addrs.len() * ptr) as *mut *mut c_char) = std::ptr::null_mut();
        *(base.add(alias_at) as *mut *mut c_char) = std::ptr::null_mut();
        std::ptr::copy_nonoverlapping(name.as_ptr(), base.add(name_at), name.len());
        *base.add(name_at + name.len()) = 0;
        (*ret).h_name = base.add(name_at) as *mut c_char;
        (*ret).h_aliases = base.add(alias_at) as *mut *mut c_char;
        (*ret).h_addrtype = af;
        (*ret).h_length = alen as c_int;
        (*ret).h_addr_list = base.add(list_at) as *mut *mut c_char;
    }
    Ok(())
}

/// The addresses of `name` for a hostent of family `af`, or an h_errno.
fn host_addrs(name: &str, af: c_int) -> Option<Result<Vec<IpAddr>, c_int>> {
    let r = match resolve(name)? {
        Err(()) => return Some(Err(NO_RECOVERY)),
        Ok(r) => r,
    };
    Some(match r {
        Resolution::System => return None,
        Resolution::Local(addrs) => {
            let want_v6 = af == libc::AF_INET6;
            let fit: Vec<IpAddr> = addrs.into_iter().filter(|a| a.is_ipv6() == want_v6).collect();
            if fit.is_empty() {
                Err(HOST_NOT_FOUND)
            } else {
                Ok(fit)
            }
        }
        Resolution::Fake { v4, v6, .. } => Ok(vec![if af == libc::AF_INET6 { v6 } else { v4 }]),
        Resolution::Fail(_) => Err(HOST_NOT_FOUND),
    })
}

struct HostentBuf {
    ent: hostent,
    data: [u8; 1024],
}

thread_local! {
    static HOSTENT: std::cell::UnsafeCell<HostentBuf> = const {
        std::cell::UnsafeCell::new(HostentBuf {
            ent: hostent {
                h_name: std::ptr::null_mut(),
                h_aliases: std::ptr::null_mut(),
                h_addrtype: 0,
                h_length: 0,
                h_addr_list: std::ptr::null_mut(),
            },
            data: [0; 1024],
        })
    };
}

/// gethostbyname / gethostbyname2 / gethostbyaddr answers live in a per-thread buffer, valid
/// until the thread's next such call (glibc's is per process).
fn hostent_static(name: &str, af: c_int, addrs: &[IpAddr]) -> Flow<*mut hostent> {
    let r = HOSTENT.try_with(|cell| {
        let slot = cell.get();
        // SAFETY: this thread's buffer; the previous answer is overwritten, as documented.
        unsafe {
            let ent = std::ptr::addr_of_mut!((*slot).ent);
            let data = &mut (*slot).data;
            fill_hostent(name, af, addrs, ent, data).map(|()| ent)
        }
    });
    match r {
        Ok(Ok(ent)) => Flow::Done(ent),
        _ => {
            set_h_errno(NO_RECOVERY);
            Flow::Done(std::ptr::null_mut())
        }
    }
}

fn gethostbyname2_flow(name: *const c_char, af: c_int) -> Flow<*mut hostent> {
    if name.is_null() || (af != libc::AF_INET && af != libc::AF_INET6) {
        return Flow::Bypass;
    }
    // SAFETY: a NUL-terminated string from the caller.
    let Ok(text) = (unsafe { CStr::from_ptr(name) }).to_str() else { return Flow::Bypass };
    match host_addrs(text, af) {
        None => Flow::Bypass,
        Some(Ok(addrs)) => hostent_static(text, af, &addrs),
        Some(Err(h)) => {
            set_h_errno(h);
            Flow::Done(std::ptr::null_mut())
        }
    }
}

/// # Safety
/// The argument of gethostbyname(3).
#[no_mangle]
pub unsafe extern "C" fn gethostbyname(name: *const c_char) -> *mut hostent {
    run(
        std::ptr::null_mut(),
        0,
        || gethostbyname2_flow(name, libc::AF_INET),
        || match real::gethostbyname.get() {
            // SAFETY: the real function with the caller's argument.
            Some(f) => unsafe { f(name) },
            None => std::ptr::null_mut(),
        },
    )
}

/// # Safety
/// The arguments of gethostbyname2(3).
#[no_mangle]
pub unsafe extern "C" fn gethostbyname2(name: *const c_char, af: c_int) -> *mut hostent {
    run(
        std::ptr::null_mut(),
        0,
        || gethostbyname2_flow(name, af),
        || match real::gethostbyname2.get() {
            // SAFETY: the real function with the caller's arguments.
            Some(f) => unsafe { f(name, af) },
            None => std::ptr::null_mut(),
        },
    )
}

/// The reentrant variants: the answer goes in the caller's `ret` and `buf`.
#[allow(clippy::too_many_arguments)]
unsafe fn gethostbyname_r_flow(
    name: *const c_char,
    af: c_int,
    ret: *mut hostent,
    buf: *mut c_char,
    buflen: size_t,
    result: *mut *mut hostent,
    h_errnop: *mut c_int,
) -> Flow<c_int> {
    if name.is_null() || ret.is_null() || buf.is_null() || result.is_null() {
        return Flow::Bypass;
    }
    // SAFETY: a NUL-terminated string from the caller.
    let Ok(text) = (unsafe { CStr::from_ptr(name) }).to_str() else { return Flow::Bypass };
    match host_addrs(text, af) {
        None => Flow::Bypass,
        // SAFETY: the caller's result slot and buffer.
        Some(answer) => unsafe {
            fill_r(answer.map(|addrs| (addrs, text.to_owned())), af, ret, buf, buflen, result, h_errnop)
        },
    }
}

/// The answer of a reentrant call, in the caller's hostent and buffer.
unsafe fn fill_r<A: AsRef<[IpAddr]>>(
    answer: Result<(A, String), c_int>,
    af: c_int,
    ret: *mut hostent,
    buf: *mut c_char,
    buflen: size_t,
    result: *mut *mut hostent,
    h_errnop: *mut c_int,
) -> Flow<c_int> {
    // Both the caller's slot and the thread's h_errno: callers read either.
    let set_h = |v: c_int| {
        set_h_errno(v);
        if !h_errnop.is_null() {
            // SAFETY: the caller's h_errno slot.
            unsafe { *h_errnop = v }
        }
    };
    // SAFETY: the caller's result slot.
    unsafe { *result = std::ptr::null_mut() };
    match answer {
        Ok((addrs, name)) => {
            // SAFETY: the caller's buffer of `buflen` bytes.
            let data = unsafe { std::slice::from_raw_parts_mut(buf as *mut u8, buflen) };
            // SAFETY: the caller's hostent and buffer.
            match unsafe { fill_hostent(&name, af, addrs.as_ref(), ret, data) } {
                Ok(()) => {
                    // SAFETY: the caller's result slot.
                    unsafe { *result = ret };
                    Flow::Done(0)
                }
                Err(()) => {
                    set_h(NO_RECOVERY);
                    Flow::Done(libc::ERANGE)
                }
            }
        }
        Err(h) => {
            set_h(h);
            Flow::Done(libc::ENOENT)
        }
    }
}

/// # Safety
/// The arguments of gethostbyname_r(3).
#[no_mangle]
pub unsafe extern "C" fn gethostbyname_r(
    name: *const c_char,
    ret: *mut hostent,
    buf: *mut c_char,
    buflen: size_t,
    result: *mut *mut hostent,
    h_errnop: *mut c_int,
) -> c_int {
    run(
        libc::EIO,
        0,
        // SAFETY: the caller's arguments.
        || unsafe { gethostbyname_r_flow(name, libc::AF_INET, ret, buf, buflen, result, h_errnop) },
        || match real::gethostbyname_r.get() {
            // SAFETY: the real function with the caller's arguments.
            Some(f) => unsafe { f(name, ret, buf, buflen, result, h_errnop) },
            None => libc::ENOSYS,
        },
    )
}

/// # Safety
/// The arguments of gethostbyname2_r(3).
#[no_mangle]
pub unsafe extern "C" fn gethostbyname2_r(
    name: *const c_char,
    af: c_int,
    ret: *mut hostent,
    buf: *mut c_char,
    buflen: size_t,
    result: *mut *mut hostent,
    h_errnop: *mut c_int,
) -> c_int {
    let real = || match real::gethostbyname2_r.get() {
        // SAFETY: the real function with the caller's arguments.
        Some(f) => unsafe { f(name, af, ret, buf, buflen, result, h_errnop) },
        None => libc::ENOSYS,
    };
    if af != libc::AF_INET && af != libc::AF_INET6 {
        return real();
    }
    run(
        libc::EIO,
        0,
        // SAFETY: the caller's arguments.
        || unsafe { gethostbyname_r_flow(name, af, ret, buf, buflen, result, h_errnop) },
        real,
    )
}

/// # Safety
/// The arguments of getnameinfo(3).
#[no_mangle]
pub unsafe extern "C" fn getnameinfo(
    sa: *const sockaddr,
    salen: socklen_t,
    host: *mut c_char,
    hostlen: socklen_t,
    serv: *mut c_char,
    servlen: socklen_t,
    flags: c_int,
) -> c_int {
    let real_gni = |flags: c_int| match real::getnameinfo.get() {
        // SAFETY: the real function with the caller's buffers.
        Some(f) => unsafe { f(sa, salen, host, hostlen, serv, servlen, flags) },
        None => libc::EAI_FAIL,
    };
    run(
        libc::EAI_FAIL,
        0,
        || {
            let Some(addr) = sock::read_addr(sa, salen) else { return Flow::Bypass };
            let st = match state::get() {
                Ok(st) => st,
                Err(_) => return Flow::Done(libc::EAI_FAIL),
            };
            if !st.router.remote_dns() {
                return Flow::Bypass;
            }
            // Numeric first: the system resolver is never asked for a PTR record.
            let rc = real_gni((flags | libc::NI_NUMERICHOST) & !libc::NI_NAMEREQD);
            let want_name = !host.is_null() && hostlen > 0 && flags & libc::NI_NUMERICHOST == 0;
            if rc != 0 || !want_name {
                return Flow::Done(rc);
            }
            match st.router.reverse(addr.ip()) {
                Some(mut name) => {
                    if flags & libc::NI_NOFQDN != 0 {
                        if let Some(dot) = name.find('.') {
                            name.truncate(dot);
                        }
                    }
                    if name.len() + 1 > hostlen as usize {
                        return Flow::Done(libc::EAI_OVERFLOW);
                    }
                    // SAFETY: the caller's host buffer of `hostlen` bytes.
                    unsafe {
                        std::ptr::copy_nonoverlapping(name.as_ptr(), host as *mut u8, name.len());
                        *host.add(name.len()) = 0;
                    }
                    Flow::Done(0)
                }
                None if flags & libc::NI_NAMEREQD != 0 => Flow::Done(libc::EAI_NONAME),
                None => Flow::Done(0),
            }
        },
        || real_gni(flags),
    )
}

/// The name of the address at `addr` for a reverse lookup: `None` to let libc answer (local
/// DNS, or not an address), else the name or an h_errno.
fn reverse_flow(addr: *const c_void, len: socklen_t, af: c_int) -> Option<(IpAddr, Result<String, c_int>)> {
    let ip = match (af, len) {
        // SAFETY: 4 bytes of an in_addr from the caller.
        (libc::AF_INET, 4) if !addr.is_null() => IpAddr::from(unsafe { *(addr as *const [u8; 4]) }),
        // SAFETY: 16 bytes of an in6_addr from the caller.
        (libc::AF_INET6, 16) if !addr.is_null() => IpAddr::from(unsafe { *(addr as *const [u8; 16]) }),
        _ => return None,
    };
    let st = match state::get() {
        Ok(st) => st,
        Err(_) => return Some((ip, Err(NO_RECOVERY))),
    };
    if !st.router.remote_dns() {
        return None;
    }
    Some((ip, st.router.reverse(ip).ok_or(HOST_NOT_FOUND)))
}

/// # Safety
/// The arguments of gethostbyaddr(3).
#[no_mangle]
pub unsafe extern "C" fn gethostbyaddr(addr: *const c_void, len: socklen_t, af: c_int) -> *mut hostent {
    run(
        std::ptr::null_mut(),
        0,
        || match reverse_flow(addr, len, af) {
            None => Flow::Bypass,
            Some((ip, Ok(name))) => hostent_static(&name, af, &[ip]),
            Some((_, Err(h))) => {
                set_h_errno(h);
                Flow::Done(std::ptr::null_mut())
            }
        },
        || match real::gethostbyaddr.get() {
            // SAFETY: the real function with the caller's arguments.
            Some(f) => unsafe { f(addr, len, af) },
            None => std::ptr::null_mut(),
        },
    )
}

/// # Safety
/// The arguments of gethostbyaddr_r(3).
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn gethostbyaddr_r(
    addr: *const c_void,
    len: socklen_t,
    af: c_int,
    ret: *mut hostent,
    buf: *mut c_char,
    buflen: size_t,
    result: *mut *mut hostent,
    h_errnop: *mut c_int,
) -> c_int {
    run(
        libc::EIO,
        0,
        || {
            if ret.is_null() || buf.is_null() || result.is_null() {
                return Flow::Bypass;
            }
            let answer = match reverse_flow(addr, len, af) {
                None => return Flow::Bypass,
                Some((ip, answer)) => answer.map(|name| ([ip], name)),
            };
            // SAFETY: the caller's result slot and buffer.
            unsafe { fill_r(answer, af, ret, buf, buflen, result, h_errnop) }
        },
        || match real::gethostbyaddr_r.get() {
            // SAFETY: the real function with the caller's arguments.
            Some(f) => unsafe { f(addr, len, af, ret, buf, buflen, result, h_errnop) },
            None => libc::ENOSYS,
        },
    )
}
