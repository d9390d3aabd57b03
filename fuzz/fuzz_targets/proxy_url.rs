//! Proxy URLs (`socks5://user:pass@host:port`): `str::parse::<Proxy>()` on arbitrary strings
//! (the input, decoded lossily).
//!
//! Properties: no panic, no hang; a parsed proxy's `Display` and `Debug` do not depend on the
//! password (so never show it) and, without a password, `Display` parses back to the same
//! proxy; an error message shows the URL redacted, and the redaction does not depend on the
//! password either.
#![no_main]

use libfuzzer_sys::fuzz_target;
use socksify_core::proxy::redact_url;
use socksify_core::Proxy;

/// Where the parser finds the password in `url`: its byte range.
fn password_range(url: &str) -> Option<std::ops::Range<usize>> {
    let (scheme, rest) = url.split_once("://")?;
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let (info, _) = rest.rsplit_once('@')?;
    let (user, pass) = info.split_once(':')?;
    let start = scheme.len() + 3 + user.len() + 1;
    Some(start..start + pass.len())
}

fn other_password(pass: &str) -> &'static str {
    if pass == "PW" {
        "QX"
    } else {
        "PW"
    }
}

fuzz_target!(|data: &[u8]| {
    let url = String::from_utf8_lossy(data);
    match url.parse::<Proxy>() {
        Ok(p) => {
            let shown = p.to_string();
            let debug = format!("{p:?}");
            let _ = (p.target(), p.resolves_names());
            if let Some(c) = &p.creds {
                let mut q = p.clone();
                q.creds.as_mut().unwrap().pass = other_password(&c.pass).to_owned();
                assert_eq!(q.to_string(), shown, "Display depends on the password");
                assert_eq!(format!("{q:?}"), debug, "Debug depends on the password");
            }
            let plain_user = p.creds.as_ref().is_none_or(|c| {
                c.pass.is_empty() && c.user.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
            });
            if plain_user {
                assert_eq!(shown.parse::<Proxy>().as_ref(), Ok(&p), "{url:?} displays as {shown:?}");
            }
        }
        Err(e) => {
            let msg = e.to_string();
            let redacted = redact_url(&url);
            assert!(msg.contains(&redacted), "{msg:?} does not show {redacted:?}");
            if let Some(range) = password_range(&url) {
                let pass = &url[range.clone()];
                let mut other = url.to_string();
                other.replace_range(range, other_password(pass));
                assert_eq!(redact_url(&other), redacted, "the redaction of {url:?} shows the password");
            }
        }
    }
});
