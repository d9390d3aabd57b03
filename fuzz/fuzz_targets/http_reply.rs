//! HTTP CONNECT from the client's side against a hostile proxy: `http::connect` on a scripted
//! stream (reads and peeks) whose server bytes are the input.
//!
//! Input: one control byte, then the proxy's bytes.
//!   bit 0: with or without credentials
//!   bits 1-3: bytes per `read`/`peek` (0 = as many as asked)
//!   bits 4-5: the target (IPv4, IPv6, name)
//! Properties: no panic, no hang; nothing past the response head (up to and including the first
//! blank line) is ever consumed, and on success all of it is; success means a 2xx status line.
#![no_main]

mod common;

use common::Script;
use libfuzzer_sys::fuzz_target;
use socksify_core::{http, Credentials, TargetAddr};

fuzz_target!(|data: &[u8]| {
    let Some((&control, server)) = data.split_first() else { return };
    let chunk = usize::from((control >> 1) & 7);
    let target = match (control >> 4) % 3 {
        0 => TargetAddr::Ip("192.0.2.1:80".parse().unwrap()),
        1 => TargetAddr::Ip("[2001:db8::1]:443".parse().unwrap()),
        _ => TargetAddr::domain("example.org", 8080).unwrap(),
    };
    let creds = Credentials { user: "alice".into(), pass: "s3cret".into() };
    let creds = (control & 1 == 1).then_some(&creds);

    let mut s = Script::new(server, chunk);
    let result = http::connect(&mut s, &target, creds);
    assert!(s.written.starts_with(b"CONNECT "), "request {:?}", String::from_utf8_lossy(&s.written));
    let head_end = server.windows(4).position(|w| w == b"\r\n\r\n").map(|at| at + 4);
    if let Some(end) = head_end {
        assert!(s.pos <= end, "consumed {} bytes, past the head's {end}", s.pos);
    }
    match result {
        Ok(_) => {
            assert_eq!(Some(s.pos), head_end, "success without consuming exactly the head");
            let status = &server[..server.iter().position(|&b| b == b'\n').unwrap_or(server.len())];
            let status = String::from_utf8_lossy(status).trim_end().to_owned();
            let code = status.split(' ').nth(1).unwrap_or("");
            assert!(code.len() == 3 && code.starts_with('2'), "success with status line {status:?}");
        }
        Err(e) => {
            let _ = (e.to_string(), e.errno(), e.is_refusal());
        }
    }
});
