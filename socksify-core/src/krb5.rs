//! The Kerberos mechanism of [`crate::gssapi`]: MIT Kerberos' GSS-API, `libgssapi_krb5.so.2`,
//! opened with `dlopen` the first time a GSSAPI hop is used. A program that never meets such a
//! hop pays nothing (not even the library's load), and socksify's own library still loads on a
//! machine without Kerberos: the hop then fails with a message that names the package.
//!
//! The credentials are the user's ticket cache (`KRB5CCNAME`, else the default cache), as for
//! `ssh -K` or `curl --negotiate`. Whatever the Kerberos library sends to the KDC while a
//! context is made is its own traffic (like the connection to the chain's first hop), made
//! with the real functions.

use std::ffi::{c_int, c_void, CStr};
use std::sync::OnceLock;
use std::time::Duration;

use crate::error::SocksError;
use crate::gssapi::{Mechanism, Step};

type Om = u32;
type Name = *mut c_void;
type Ctx = *mut c_void;
type Cred = *mut c_void;

#[repr(C)]
struct Buffer {
    length: usize,
    value: *mut c_void,
}

impl Buffer {
    fn empty() -> Buffer {
        Buffer { length: 0, value: std::ptr::null_mut() }
    }

    /// A view of `data` for an input argument (the library does not write through it).
    fn of(data: &[u8]) -> Buffer {
        Buffer { length: data.len(), value: data.as_ptr() as *mut c_void }
    }
}

#[repr(C)]
struct Oid {
    length: Om,
    elements: *const c_void,
}

// SAFETY: the OIDs point at static bytes that nothing writes.
unsafe impl Sync for Oid {}

/// 1.2.840.113554.1.2.1.4, GSS_C_NT_HOSTBASED_SERVICE: `service@host`.
static NT_HOSTBASED_SERVICE: Oid =
    Oid { length: 10, elements: b"\x2a\x86\x48\x86\xf7\x12\x01\x02\x01\x04".as_ptr().cast() };
/// 1.2.840.113554.1.2.2, the Kerberos 5 mechanism.
static MECH_KRB5: Oid = Oid { length: 9, elements: b"\x2a\x86\x48\x86\xf7\x12\x01\x02\x02".as_ptr().cast() };

const S_COMPLETE: Om = 0;
const S_CONTINUE_NEEDED: Om = 1;
const ROUTINE_ERROR_MASK: Om = 0xff << 16;
const CALLING_ERROR_MASK: Om = 0xff << 24;
const S_BAD_NAME: Om = 2 << 16;
const S_NO_CRED: Om = 7 << 16;
const S_CREDENTIALS_EXPIRED: Om = 11 << 16;
const C_MUTUAL_FLAG: Om = 2;
const C_REPLAY_FLAG: Om = 4;
const C_INTEG_FLAG: Om = 32;
const C_GSS_CODE: c_int = 1;
const C_MECH_CODE: c_int = 2;
const C_INITIATE: c_int = 1;
const C_INDEFINITE: Om = 0xffff_ffff;

/// The functions used, looked up once.
struct Api {
    import_name: unsafe extern "C" fn(*mut Om, *const Buffer, *const Oid, *mut Name) -> Om,
    release_name: unsafe extern "C" fn(*mut Om, *mut Name) -> Om,
    display_name: unsafe extern "C" fn(*mut Om, Name, *mut Buffer, *mut *const Oid) -> Om,
    #[allow(clippy::type_complexity)]
    init_sec_context: unsafe extern "C" fn(
        *mut Om,
        Cred,
        *mut Ctx,
        Name,
        *const Oid,
        Om,
        Om,
        *const c_void,
        *const Buffer,
        *mut *const Oid,
        *mut Buffer,
        *mut Om,
        *mut Om,
    ) -> Om,
    delete_sec_context: unsafe extern "C" fn(*mut Om, *mut Ctx, *mut Buffer) -> Om,
    wrap: unsafe extern "C" fn(*mut Om, Ctx, c_int, Om, *const Buffer, *mut c_int, *mut Buffer) -> Om,
    unwrap: unsafe extern "C" fn(*mut Om, Ctx, *const Buffer, *mut Buffer, *mut c_int, *mut Om) -> Om,
    release_buffer: unsafe extern "C" fn(*mut Om, *mut Buffer) -> Om,
    display_status: unsafe extern "C" fn(*mut Om, Om, c_int, *const Oid, *mut Om, *mut Buffer) -> Om,
    #[allow(clippy::type_complexity)]
    acquire_cred: unsafe extern "C" fn(
        *mut Om,
        Name,
        Om,
        *const c_void,
        c_int,
        *mut Cred,
        *mut *mut c_void,
        *mut Om,
    ) -> Om,
    inquire_cred: unsafe extern "C" fn(*mut Om, Cred, *mut Name, *mut Om, *mut c_int, *mut *mut c_void) -> Om,
    release_cred: unsafe extern "C" fn(*mut Om, *mut Cred) -> Om,
}

pub const LIBRARY: &str = "libgssapi_krb5.so.2";

static API: OnceLock<Api> = OnceLock::new();

/// The library, loaded on first use. Only a success is kept: a load that failed (say, out of
/// descriptors) is tried again by the next GSSAPI hop. Two threads loading at once both call
/// `dlopen`, which hands both the same handle; no lock is held across it (a fork meanwhile
/// leaves the child nothing to wait for).
fn api() -> Result<&'static Api, SocksError> {
    if let Some(api) = API.get() {
        return Ok(api);
    }
    let api = load().map_err(SocksError::Gssapi)?;
    Ok(API.get_or_init(|| api))
}

fn load() -> Result<Api, String> {
    let name = c"libgssapi_krb5.so.2";
    // SAFETY: a constant NUL-terminated name; the handle is kept for the process's life.
    let handle = unsafe { libc::dlopen(name.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
    if handle.is_null() {
        // SAFETY: dlerror returns NULL or a NUL-terminated message valid until the next call.
        let why = unsafe { libc::dlerror() };
        let why = if why.is_null() {
            "not found".to_owned()
        } else {
            // SAFETY: non-NULL, NUL-terminated (dlerror's contract).
            unsafe { CStr::from_ptr(why) }.to_string_lossy().into_owned()
        };
        return Err(format!(
            "MIT Kerberos' {LIBRARY} did not load ({why}); on Debian: apt-get install libgssapi-krb5-2"
        ));
    }
    let sym = |s: &CStr| -> Result<*mut c_void, String> {
        // SAFETY: a live handle and a NUL-terminated symbol name.
        let p = unsafe { libc::dlsym(handle, s.as_ptr()) };
        if p.is_null() {
            Err(format!("{LIBRARY} has no {}", s.to_string_lossy()))
        } else {
            Ok(p)
        }
    };
    // SAFETY: each symbol is MIT's GSS-API function of that name, whose C prototype (RFC 2744)
    // is the function pointer type of the field it goes in.
    unsafe {
        Ok(Api {
            import_name: fn_ptr(sym(c"gss_import_name")?),
            release_name: fn_ptr(sym(c"gss_release_name")?),
            display_name: fn_ptr(sym(c"gss_display_name")?),
            init_sec_context: fn_ptr(sym(c"gss_init_sec_context")?),
            delete_sec_context: fn_ptr(sym(c"gss_delete_sec_context")?),
            wrap: fn_ptr(sym(c"gss_wrap")?),
            unwrap: fn_ptr(sym(c"gss_unwrap")?),
            release_buffer: fn_ptr(sym(c"gss_release_buffer")?),
            display_status: fn_ptr(sym(c"gss_display_status")?),
            acquire_cred: fn_ptr(sym(c"gss_acquire_cred")?),
            inquire_cred: fn_ptr(sym(c"gss_inquire_cred")?),
            release_cred: fn_ptr(sym(c"gss_release_cred")?),
        })
    }
}

/// A symbol's address as the function pointer type `F`.
///
/// # Safety
/// `p` must be a function whose C prototype is `F`.
unsafe fn fn_ptr<F: Copy>(p: *mut c_void) -> F {
    assert_eq!(std::mem::size_of::<F>(), std::mem::size_of::<*mut c_void>());
    // SAFETY: same size (checked), and the caller vouches for the prototype.
    unsafe { std::mem::transmute_copy(&p) }
}

impl Api {
    /// Copies a buffer the library allocated and releases it.
    fn take(&self, buf: &mut Buffer) -> Vec<u8> {
        let out = if buf.value.is_null() || buf.length == 0 {
            Vec::new()
        } else {
            // SAFETY: the library filled `length` bytes at `value`.
            unsafe { std::slice::from_raw_parts(buf.value as *const u8, buf.length) }.to_vec()
        };
        let mut minor = 0;
        // SAFETY: a buffer the library allocated (or an empty one, which it ignores).
        unsafe { (self.release_buffer)(&mut minor, buf) };
        out
    }

    /// The library's words for a status: the GSS-API routine's, then the mechanism's.
    fn status(&self, major: Om, minor: Om) -> String {
        let mut parts = Vec::new();
        for (code, kind) in [(major, C_GSS_CODE), (minor, C_MECH_CODE)] {
            if code == 0 {
                continue;
            }
            let mut ctx: Om = 0;
            // At most a few messages a code: the loop is bounded in case the library misbehaves.
            for _ in 0..8 {
                let (mut m, mut buf) = (0, Buffer::empty());
                // SAFETY: valid out-pointers; a NULL mechanism means the default one.
                let r = unsafe {
                    (self.display_status)(&mut m, code, kind, std::ptr::null(), &mut ctx, &mut buf)
                };
                let text = self.take(&mut buf);
                if r != S_COMPLETE {
                    break;
                }
                let text = String::from_utf8_lossy(&text).trim().to_owned();
                if !text.is_empty() {
                    parts.push(text);
                }
                if ctx == 0 {
                    break;
                }
            }
        }
        parts.join(": ")
    }

    fn display_name(&self, name: Name) -> String {
        let (mut minor, mut buf) = (0, Buffer::empty());
        // SAFETY: a name the library made; the type out-pointer may be NULL.
        let r = unsafe { (self.display_name)(&mut minor, name, &mut buf, std::ptr::null_mut()) };
        let text = self.take(&mut buf);
        if r == S_COMPLETE {
            String::from_utf8_lossy(&text).into_owned()
        } else {
            "?".to_owned()
        }
    }
}

fn is_error(major: Om) -> bool {
    major & (ROUTINE_ERROR_MASK | CALLING_ERROR_MASK) != 0
}

/// What a user can do about a failed call.
fn explain(api: &Api, call: &str, major: Om, minor: Om, service: &str) -> SocksError {
    let text = api.status(major, minor);
    let cache = std::env::var("KRB5CCNAME").map(|c| format!(" (KRB5CCNAME={c})")).unwrap_or_default();
    let lower = text.to_ascii_lowercase();
    let hint = match major & ROUTINE_ERROR_MASK {
        S_NO_CRED => format!("no Kerberos ticket{cache}: run kinit"),
        S_CREDENTIALS_EXPIRED => format!("the Kerberos ticket has expired{cache}: run kinit"),
        _ if lower.contains("ticket expired") => format!("the Kerberos ticket has expired{cache}: run kinit"),
        _ if lower.contains("not found in kerberos database") => format!(
            "the KDC knows no service principal for `{service}`; set gssapi_service to the proxy's \
             principal, e.g. \"rcmd/proxy.example\""
        ),
        S_BAD_NAME => format!("`{service}` is not a usable GSSAPI service name"),
        _ if lower.contains("cannot contact any kdc") => format!(
            "the Kerberos KDC could not be reached (it is asked directly, not through the proxies; \
             under the kernel guard only a service ticket already in the cache is usable: run \
             socksify again to fetch it){cache}"
        ),
        _ => String::new(),
    };
    match hint.is_empty() {
        true => SocksError::Gssapi(format!("{call} failed: {text}")),
        false => SocksError::Gssapi(format!("{hint} ({call}: {text})")),
    }
}

/// A Kerberos security context being made with one proxy.
pub struct Context {
    api: &'static Api,
    target: Name,
    ctx: Ctx,
    service: String,
}

// SAFETY: the context and name are used by one thread at a time (the struct is owned), and
// MIT's GSS-API is thread-safe for distinct contexts.
unsafe impl Send for Context {}

impl Context {
    /// A context for `principal`: a host-based service name (`rcmd@proxy.example`), or, when
    /// it has a `/`, a Kerberos principal name as written (`rcmd/proxy.example@REALM`).
    pub fn new(principal: &str) -> Result<Context, SocksError> {
        let api = api()?;
        let text = principal.to_owned();
        let oid: *const Oid = if principal.contains('/') { std::ptr::null() } else { &NT_HOSTBASED_SERVICE };
        let mut minor = 0;
        let mut target: Name = std::ptr::null_mut();
        let buf = Buffer::of(text.as_bytes());
        // SAFETY: `buf` views `text`, alive for the call; out-pointers are valid.
        let major = unsafe { (api.import_name)(&mut minor, &buf, oid, &mut target) };
        if is_error(major) {
            return Err(explain(api, "gss_import_name", major, minor, &text));
        }
        Ok(Context { api, target, ctx: std::ptr::null_mut(), service: text })
    }
}

impl Mechanism for Context {
    fn step(&mut self, input: Option<&[u8]>) -> Result<Step, SocksError> {
        let api = self.api;
        let (mut minor, mut out, mut flags, mut time) = (0, Buffer::empty(), 0, 0);
        let input_buf = input.map(Buffer::of);
        let input_ptr = input_buf.as_ref().map_or(std::ptr::null(), |b| b as *const Buffer);
        // SAFETY: every pointer is valid for the call; `self.ctx` is NULL the first time and
        // the library's context afterwards; the input views a live slice.
        let major = unsafe {
            (api.init_sec_context)(
                &mut minor,
                std::ptr::null_mut(),
                &mut self.ctx,
                self.target,
                &MECH_KRB5,
                C_MUTUAL_FLAG | C_REPLAY_FLAG | C_INTEG_FLAG,
                0,
                std::ptr::null(),
                input_ptr,
                std::ptr::null_mut(),
                &mut out,
                &mut flags,
                &mut time,
            )
        };
        let token = api.take(&mut out);
        if is_error(major) {
            return Err(explain(api, "gss_init_sec_context", major, minor, &self.service));
        }
        // A supplementary bit beside it (a duplicate token, say) does not end the exchange.
        if major & S_CONTINUE_NEEDED != 0 {
            Ok(Step::Continue(token))
        } else {
            Ok(Step::Done(token))
        }
    }

    fn wrap(&mut self, data: &[u8]) -> Result<Vec<u8>, SocksError> {
        let api = self.api;
        let (mut minor, mut out, mut conf) = (0, Buffer::empty(), 0);
        let input = Buffer::of(data);
        // SAFETY: an established context; valid in and out buffers.
        let major = unsafe { (api.wrap)(&mut minor, self.ctx, 0, 0, &input, &mut conf, &mut out) };
        let token = api.take(&mut out);
        if is_error(major) {
            return Err(explain(api, "gss_wrap", major, minor, &self.service));
        }
        Ok(token)
    }

    fn unwrap(&mut self, token: &[u8]) -> Result<Vec<u8>, SocksError> {
        let api = self.api;
        let (mut minor, mut out, mut conf, mut qop) = (0, Buffer::empty(), 0, 0);
        let input = Buffer::of(token);
        // SAFETY: an established context; valid in and out buffers.
        let major = unsafe { (api.unwrap)(&mut minor, self.ctx, &input, &mut out, &mut conf, &mut qop) };
        let data = api.take(&mut out);
        if is_error(major) {
            return Err(explain(api, "gss_unwrap", major, minor, &self.service));
        }
        Ok(data)
    }
}

impl Drop for Context {
    fn drop(&mut self) {
        let mut minor = 0;
        // SAFETY: the context (or NULL) and the name this struct owns, released once.
        unsafe {
            if !self.ctx.is_null() {
                (self.api.delete_sec_context)(&mut minor, &mut self.ctx, std::ptr::null_mut());
            }
            (self.api.release_name)(&mut minor, &mut self.target);
        }
    }
}

/// Asks the KDC now for `principal`'s service ticket, which the Kerberos library keeps in the
/// user's ticket cache: a program started afterwards under the kernel guard makes its GSSAPI
/// contexts from the cache, without traffic to the KDC (the guard would proxy or refuse it).
pub fn fetch_service_ticket(principal: &str) -> Result<(), SocksError> {
    let mut ctx = Context::new(principal)?;
    ctx.step(None).map(drop)
}

/// The user's Kerberos ticket, for `socksify check`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticket {
    pub principal: String,
    /// What is left of its life.
    pub lifetime: Duration,
}

/// The default credentials' principal and remaining life, or why there are none.
pub fn ticket() -> Result<Ticket, SocksError> {
    let api = api()?;
    let (mut minor, mut cred): (Om, Cred) = (0, std::ptr::null_mut());
    // SAFETY: default name, default mechanisms, valid out-pointers.
    let major = unsafe {
        (api.acquire_cred)(
            &mut minor,
            std::ptr::null_mut(),
            C_INDEFINITE,
            std::ptr::null(),
            C_INITIATE,
            &mut cred,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        )
    };
    if is_error(major) {
        return Err(explain(api, "gss_acquire_cred", major, minor, ""));
    }
    let (mut name, mut life, mut usage): (Name, Om, c_int) = (std::ptr::null_mut(), 0, 0);
    // SAFETY: credentials just acquired; valid out-pointers (mechanisms not asked).
    let major = unsafe {
        (api.inquire_cred)(&mut minor, cred, &mut name, &mut life, &mut usage, std::ptr::null_mut())
    };
    let result = if is_error(major) {
        Err(explain(api, "gss_inquire_cred", major, minor, ""))
    } else {
        let principal = api.display_name(name);
        // SAFETY: the name inquire_cred made.
        unsafe { (api.release_name)(&mut minor, &mut name) };
        match life {
            0 => {
                Err(SocksError::Gssapi(format!("the Kerberos ticket of {principal} has expired: run kinit")))
            }
            l => Ok(Ticket { principal, lifetime: Duration::from_secs(l as u64) }),
        }
    };
    // SAFETY: the credentials acquired above, released once.
    unsafe { (api.release_cred)(&mut minor, &mut cred) };
    result
}
