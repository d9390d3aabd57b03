//! Names. With remote DNS, a name gets a fake address (or its hosts-file address) and the
//! system resolver is never asked; the resolver's low-level entry points (`res_query` and
//! friends, `getaddrinfo_a`), which send packets through libc's internal sockets, are refused.
//! With local DNS every call goes to libc.
//!
//! Address lists are always built by the real `getaddrinfo` from numeric strings, so glibc
//! allocates every node and the real `freeaddrinfo` frees them, and socktype/protocol/service
//! handling is exactly glibc's.

use std::ffi::{CStr, CString};
use std::net::IpAddr;

use libc::{addrinfo, c_char, c_int, c_void, hostent, size_t, sockaddr, socklen_t};
use socksify_core::fakedns::FakeDnsError;
use socksify_core::router::Resolution;

use crate::runtime::state::log_broken;
use crate::runtime::{real, state, Flow};
use crate::sys::addr;

pub const HOST_NOT_FOUND: c_int = 1;
pub const NO_RECOVERY: c_int = 3;

extern "C" {
    fn __h_errno_location() -> *mut c_int;
    fn inet_aton(cp: *const c_char, inp: *mut libc::in_addr) -> c_int;
}

/// Sets the thread's h_errno, and the caller's slot when it gave one.
fn set_h_errno(v: c_int, slot: *mut c_int) {
    // SAFETY: glibc's per-thread h_errno.
    unsafe { *__h_errno_location() = v };
    if !slot.is_null() {
        // SAFETY: the caller's h_errno slot.
        unsafe { *slot = v }
    }
}

/// An IPv6 address with a scope, numeric or an interface's name (`fe80::1%eth0`): getaddrinfo
/// reads it without asking any resolver.
pub fn is_scoped_ipv6(name: &str) -> bool {
    name.split_once('%')
        .is_some_and(|(addr, scope)| !scope.is_empty() && addr.parse::<std::net::Ipv6Addr>().is_ok())
}

/// Numeric hosts as libc reads them (`inet_aton` forms such as `127.1` included).
pub fn is_numeric(name: &str) -> bool {
    if name.parse::<IpAddr>().is_ok() {
        return true;
    }
    let Ok(c) = CString::new(name) else { return false };
    // SAFETY: in_addr is plain old data.
    let mut out: libc::in_addr = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated string and a local in_addr.
    unsafe { inet_aton(c.as_ptr(), &mut out) != 0 }
}

/// Resolution of a name for the hooks: `None` to let libc answer (local DNS or a numeric host).
fn resolve(name: &str) -> Option<Result<Resolution, ()>> {
    if is_numeric(name) {
        return None;
    }
    let st = match state() {
        Ok(st) => st,
        Err(_) => {
            log_broken(format_args!("looking up {name}"));
            return Some(Err(()));
        }
    };
    let r = st.router.resolve(name);
    if r == Resolution::System {
        return None;
    }
    if let Resolution::Blocked(i) = r {
        st.log.error(format_args!("lookup of {name:?} refused by {}: no such name", st.router.describe(i)));
    }
    // A string that is no host name fails as libc fails it (EAI_NONAME), without a word; a
    // full table is socksify's own failure, and says so.
    if let Resolution::Fail(e @ FakeDnsError::Full(_)) = &r {
        st.log.error(format_args!("lookup of {name:?} failed: {e}"));
    }
    Some(Ok(r))
}

/// The addresses getaddrinfo answers for `r` and the hints' `family`; `Err` is its return code;
/// `None` to let libc answer.
pub fn gai_addrs(r: Resolution, family: c_int) -> Option<Result<Vec<IpAddr>, c_int>> {
    Some(match r {
        Resolution::System => return None,
        Resolution::Local(addrs) => Ok(addrs),
        Resolution::Fake { v4, v6, unspec } => Ok(vec![match family {
            libc::AF_INET => v4,
            libc::AF_INET6 => v6,
            _ => unspec,
        }]),
        Resolution::Fail(FakeDnsError::Full(_)) => Err(libc::EAI_MEMORY),
        Resolution::Fail(FakeDnsError::BadName) | Resolution::Blocked(_) => Err(libc::EAI_NONAME),
    })
}

/// getaddrinfo(3).
///
/// # Safety
/// The arguments of getaddrinfo(3).
pub unsafe fn getaddrinfo(
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
    if is_scoped_ipv6(name) {
        return Flow::Bypass; // libc gives the address with its interface's index
    }
    let resolution = match resolve(name) {
        // SAFETY: the caller's arguments.
        None => return unsafe { system_and_learn(name, node, service, hints, res) },
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
    let addrs = match gai_addrs(resolution, h.ai_family) {
        None => return Flow::Bypass,
        Some(Ok(a)) => a,
        Some(Err(rc)) => return Flow::Done(rc),
    };
    let canonical = h.ai_flags & libc::AI_CANONNAME != 0;
    h.ai_flags = (h.ai_flags | libc::AI_NUMERICHOST) & !(libc::AI_CANONNAME | libc::AI_ADDRCONFIG);
    // SAFETY: the caller's service.
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

/// libc's own answer for `name`; when a route matches the name (a direct route's under remote
/// DNS, any under local DNS), its addresses are learned, so that connections to them take the
/// name's route.
///
/// # Safety
/// The arguments of getaddrinfo(3).
unsafe fn system_and_learn(
    name: &str,
    node: *const c_char,
    service: *const c_char,
    hints: *const addrinfo,
    res: *mut *mut addrinfo,
) -> Flow<c_int> {
    let Some((st, route)) = state().ok().and_then(|st| Some((st, st.router.learns(name)?))) else {
        return Flow::Bypass;
    };
    // SAFETY: the caller's arguments, to the real function.
    let rc = unsafe { crate::runtime::real::getaddrinfo(node, service, hints, res) };
    if rc == 0 {
        // SAFETY: the list glibc just returned, walked without changing it.
        let mut at = unsafe { *res };
        let mut full = false;
        while !at.is_null() {
            // SAFETY: a node of that list.
            let ai = unsafe { &*at };
            if let Some(sa) = crate::sys::addr::read(ai.ai_addr, ai.ai_addrlen) {
                full |= !st.router.learn(sa.ip(), route);
            }
            at = ai.ai_next;
        }
        if full {
            st.log.error(format_args!(
                "the table of addresses learned from names on routes is full: some of {name:?}'s take the routes of their address"
            ));
        }
        if st.log.verbose() {
            st.log.info(format_args!("{name} resolved by the system for {}", st.router.describe(route)));
        }
    }
    Flow::Done(rc)
}

/// One glibc list for several numeric addresses, in order.
///
/// # Safety
/// `service` is NULL or a NUL-terminated string.
pub unsafe fn numeric_list(
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
        // SAFETY: the real getaddrinfo with a numeric host, the caller's service and our hints.
        let rc = unsafe { real::getaddrinfo(text.as_ptr(), service, h, &mut part) };
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

/// `buf` is too small for the answer (ERANGE).
#[derive(Debug, PartialEq, Eq)]
pub struct TooSmall;

/// Fills `ret` and its data in `buf`: addresses, the address list, an empty alias list and the
/// name.
pub fn fill_hostent(
    name: &str,
    af: c_int,
    addrs: &[IpAddr],
    ret: &mut hostent,
    buf: &mut [u8],
) -> Result<(), TooSmall> {
    let alen = if af == libc::AF_INET6 { 16 } else { 4 };
    let ptr = std::mem::size_of::<*mut c_char>();
    let mut off = 0usize;
    let base_addr = buf.as_ptr() as usize;
    let len = buf.len();
    let mut take = |n: usize, align: usize| -> Result<usize, TooSmall> {
        let start = (base_addr + off).next_multiple_of(align) - base_addr;
        if start + n > len {
            return Err(TooSmall);
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
        let bytes: [u8; 16] = match ip {
            IpAddr::V4(v4) if af == libc::AF_INET => {
                let mut b = [0u8; 16];
                b[..4].copy_from_slice(&v4.octets());
                b
            }
            IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
            IpAddr::V6(v6) => v6.octets(),
        };
        // SAFETY: every offset below was reserved inside `buf` by `take`.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), base.add(addr_at + i * alen), alen);
            *(base.add(list_at + i * ptr) as *mut *mut c_char) = base.add(addr_at + i * alen) as *mut c_char;
        }
    }
    // SAFETY: as above.
    unsafe {
        *(base.add(list_at + addrs.len() * ptr) as *mut *mut c_char) = std::ptr::null_mut();
        *(base.add(alias_at) as *mut *mut c_char) = std::ptr::null_mut();
        std::ptr::copy_nonoverlapping(name.as_ptr(), base.add(name_at), name.len());
        *base.add(name_at + name.len()) = 0;
    }
    ret.h_name = base.wrapping_add(name_at) as *mut c_char;
    ret.h_aliases = base.wrapping_add(alias_at) as *mut *mut c_char;
    ret.h_addrtype = af;
    ret.h_length = alen as c_int;
    ret.h_addr_list = base.wrapping_add(list_at) as *mut *mut c_char;
    Ok(())
}

/// The addresses a hostent of family `af` answers for `r`, or an h_errno; `None` to let libc
/// answer.
pub fn hostent_addrs(r: Resolution, af: c_int) -> Option<Result<Vec<IpAddr>, c_int>> {
    Some(match r {
        Resolution::System => return None,
        Resolution::Local(addrs) => {
            let fit: Vec<IpAddr> =
                addrs.into_iter().filter(|a| a.is_ipv6() == (af == libc::AF_INET6)).collect();
            if fit.is_empty() {
                Err(HOST_NOT_FOUND)
            } else {
                Ok(fit)
            }
        }
        Resolution::Fake { v4, v6, .. } => Ok(vec![if af == libc::AF_INET6 { v6 } else { v4 }]),
        Resolution::Fail(_) | Resolution::Blocked(_) => Err(HOST_NOT_FOUND),
    })
}

/// The answer of a forward lookup of the C string `name` for family `af`: the name and its
/// addresses, or an h_errno; `None` to let libc answer.
fn forward(name: *const c_char, af: c_int) -> Option<Result<(String, Vec<IpAddr>), c_int>> {
    if name.is_null() || (af != libc::AF_INET && af != libc::AF_INET6) {
        return None;
    }
    // SAFETY: a NUL-terminated string from the caller.
    let text = (unsafe { CStr::from_ptr(name) }).to_str().ok()?;
    let r = match resolve(text)? {
        Err(()) => return Some(Err(NO_RECOVERY)),
        Ok(r) => r,
    };
    Some(hostent_addrs(r, af)?.map(|addrs| (text.to_owned(), addrs)))
}

/// The answer of a reverse lookup of the address at `addr`: the name, or an h_errno; `None` to
/// let libc answer (local DNS, or not an address).
fn reverse(addr: *const c_void, len: socklen_t, af: c_int) -> Option<Result<(String, Vec<IpAddr>), c_int>> {
    let ip = match (af, len) {
        (libc::AF_INET, 4) => IpAddr::from(crate::sys::mem::copy_value(addr as *const [u8; 4])?),
        (libc::AF_INET6, 16) => IpAddr::from(crate::sys::mem::copy_value(addr as *const [u8; 16])?),
        _ => return None,
    };
    let st = match state() {
        Ok(st) => st,
        Err(_) => return Some(Err(NO_RECOVERY)),
    };
    if !st.router.remote_dns() {
        return None;
    }
    Some(st.router.reverse(ip).map(|name| (name, vec![ip])).ok_or(HOST_NOT_FOUND))
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

/// An answer of gethostbyname, gethostbyname2 or gethostbyaddr, in a per-thread buffer valid
/// until the thread's next such call (glibc's is per process).
fn static_answer(answer: Option<Result<(String, Vec<IpAddr>), c_int>>, af: c_int) -> Flow<*mut hostent> {
    let (name, addrs) = match answer {
        None => return Flow::Bypass,
        Some(Ok(a)) => a,
        Some(Err(h)) => {
            set_h_errno(h, std::ptr::null_mut());
            return Flow::Done(std::ptr::null_mut());
        }
    };
    let r = HOSTENT.try_with(|cell| {
        // SAFETY: this thread's buffer; the previous answer is overwritten, as documented.
        let slot = unsafe { &mut *cell.get() };
        fill_hostent(&name, af, &addrs, &mut slot.ent, &mut slot.data).map(|()| &mut slot.ent as *mut hostent)
    });
    match r {
        Ok(Ok(ent)) => Flow::Done(ent),
        _ => {
            set_h_errno(NO_RECOVERY, std::ptr::null_mut());
            Flow::Done(std::ptr::null_mut())
        }
    }
}

/// Where a reentrant call (`gethostbyname_r`…) puts its answer: the caller's hostent, buffer,
/// result slot and h_errno slot.
pub struct Slots {
    pub ret: *mut hostent,
    pub buf: *mut c_char,
    pub buflen: size_t,
    pub result: *mut *mut hostent,
    pub h_errnop: *mut c_int,
}

impl Slots {
    /// False when a slot the answer needs is missing (libc answers that call).
    fn usable(&self) -> bool {
        !self.ret.is_null() && !self.buf.is_null() && !self.result.is_null()
    }

    /// Puts `answer` in the caller's slots: 0, ERANGE (buffer too small) or ENOENT (with
    /// h_errno).
    fn put(&self, answer: Option<Result<(String, Vec<IpAddr>), c_int>>, af: c_int) -> Flow<c_int> {
        let Some(answer) = answer else { return Flow::Bypass };
        // SAFETY: the caller's result slot.
        unsafe { *self.result = std::ptr::null_mut() };
        match answer {
            Ok((name, addrs)) => {
                // SAFETY: the caller's hostent and buffer of `buflen` bytes.
                let (ent, data) = unsafe {
                    (&mut *self.ret, std::slice::from_raw_parts_mut(self.buf as *mut u8, self.buflen))
                };
                match fill_hostent(&name, af, &addrs, ent, data) {
                    Ok(()) => {
                        // SAFETY: the caller's result slot.
                        unsafe { *self.result = self.ret };
                        Flow::Done(0)
                    }
                    Err(TooSmall) => {
                        set_h_errno(NO_RECOVERY, self.h_errnop);
                        Flow::Done(libc::ERANGE)
                    }
                }
            }
            Err(h) => {
                set_h_errno(h, self.h_errnop);
                Flow::Done(libc::ENOENT)
            }
        }
    }
}

/// gethostbyname(3), gethostbyname2(3).
pub fn gethostbyname2(name: *const c_char, af: c_int) -> Flow<*mut hostent> {
    static_answer(forward(name, af), af)
}

/// gethostbyname_r(3), gethostbyname2_r(3).
pub fn gethostbyname2_r(name: *const c_char, af: c_int, slots: Slots) -> Flow<c_int> {
    if !slots.usable() {
        return Flow::Bypass;
    }
    slots.put(forward(name, af), af)
}

/// gethostbyaddr(3).
pub fn gethostbyaddr(addr: *const c_void, len: socklen_t, af: c_int) -> Flow<*mut hostent> {
    static_answer(reverse(addr, len, af), af)
}

/// gethostbyaddr_r(3).
pub fn gethostbyaddr_r(addr: *const c_void, len: socklen_t, af: c_int, slots: Slots) -> Flow<c_int> {
    if !slots.usable() {
        return Flow::Bypass;
    }
    slots.put(reverse(addr, len, af), af)
}

/// getnameinfo(3): numeric first (the system resolver is never asked for a PTR record), then the
/// name of a fake address. `real` is the real function with the given flags.
#[allow(clippy::too_many_arguments)]
pub fn getnameinfo(
    sa: *const sockaddr,
    salen: socklen_t,
    host: *mut c_char,
    hostlen: socklen_t,
    flags: c_int,
    real: impl Fn(c_int) -> c_int,
) -> Flow<c_int> {
    let Some(addr) = addr::read(sa, salen) else { return Flow::Bypass };
    let st = match state() {
        Ok(st) => st,
        Err(_) => return Flow::Done(libc::EAI_FAIL),
    };
    if !st.router.remote_dns() {
        return Flow::Bypass;
    }
    let rc = real((flags | libc::NI_NUMERICHOST) & !libc::NI_NAMEREQD);
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
            let mut bytes = name.into_bytes();
            bytes.push(0);
            if !crate::sys::mem::copy_out(host.cast(), &bytes) {
                return Flow::Done(libc::EAI_SYSTEM);
            }
            Flow::Done(0)
        }
        None if flags & libc::NI_NAMEREQD != 0 => Flow::Done(libc::EAI_NONAME),
        None => Flow::Done(0),
    }
}

/// A raw resolver entry point (`res_query`…): under remote DNS it would query the system
/// resolver directly, so it fails, with a log line; under local DNS it is the real function.
pub fn refuse_raw(what: &str) -> Flow<c_int> {
    match state() {
        Ok(st) if !st.router.remote_dns() => Flow::Bypass,
        Ok(st) => {
            st.log.error(format_args!(
                "{what} refused: it would query the system resolver directly, and DNS goes through the proxies"
            ));
            set_h_errno(NO_RECOVERY, std::ptr::null_mut());
            Flow::Fail(libc::ECONNREFUSED)
        }
        Err(_) => {
            log_broken(format_args!("{what}"));
            Flow::Fail(libc::ECONNREFUSED)
        }
    }
}

#[cfg(test)]
mod tests;
