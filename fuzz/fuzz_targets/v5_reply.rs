//! SOCKS5 from the client's side against a hostile proxy: `v5::read_reply` on raw bytes, and
//! `v5::negotiate` (with and without credentials) followed by `v5::request`, on a scripted
//! stream whose server bytes are the input.
//!
//! Input: one control byte, then the proxy's bytes.
//!   bits 0-1: 0 = read_reply alone, 1 = negotiate without credentials, 2 = with fixed
//!             credentials, 3 = with credentials taken from the input (ULEN PLEN USER PASS)
//!   bits 2-4: bytes per `read` (0 = as many as asked), for modes 1-3
//!   bits 5-7: the request's target (IPv4, IPv6, name)
//! Properties: no panic, no hang; an accepted reply is exactly one well-formed reply (re-encoding
//! its address gives back the bytes read) and nothing past it is consumed; credentials are sent
//! only when the proxy picks username/password, and then exactly as RFC 1929 says.
#![no_main]

mod common;

use common::Script;
use libfuzzer_sys::fuzz_target;
use socksify_core::proxy::Command;
use socksify_core::{v5, Credentials, TargetAddr};

/// `bytes` starts with what `read_reply` accepted as `addr`, of which it consumed `consumed`.
fn check_accepted(bytes: &[u8], consumed: usize, addr: &TargetAddr) {
    // encode_udp writes RSV RSV FRAG, then ATYP ADDR PORT exactly as a reply carries them.
    let header = v5::encode_udp(addr, &[]).expect("an address that read_reply accepts can be sent");
    assert_eq!(consumed, header.len(), "read_reply consumed {consumed} bytes for {addr:?}");
    assert_eq!(bytes[0], v5::VERSION);
    assert_eq!(bytes[1], 0, "only REP=0 is a success");
    assert_eq!(&bytes[3..consumed], &header[3..], "the reply's address does not re-encode to its bytes");
}

fn target(sel: u8) -> TargetAddr {
    match sel % 3 {
        0 => TargetAddr::Ip("192.0.2.1:80".parse().unwrap()),
        1 => TargetAddr::Ip("[2001:db8::1]:443".parse().unwrap()),
        _ => TargetAddr::domain("example.org", 8080).unwrap(),
    }
}

fn handshake(server: &[u8], chunk: usize, creds: Option<&Credentials>, sel: u8) {
    let mut s = Script::new(server, chunk);
    let negotiated = v5::negotiate(&mut s, creds);
    let _ = negotiated.as_ref().map_err(|e| (e.to_string(), e.errno()));

    let greeting: &[u8] = if creds.is_some() { &[5, 2, 0, 2] } else { &[5, 1, 0] };
    assert!(s.written.starts_with(greeting), "greeting {:?}", s.written);
    let picked_user_pass = server.len() >= 2 && server[..2] == [v5::VERSION, v5::METHOD_USER_PASS];
    if s.written.len() > greeting.len() {
        assert!(picked_user_pass, "credentials sent although the proxy chose {server:?}");
        let c = creds.expect("an auth message needs credentials");
        let mut want = vec![1, c.user.len() as u8];
        want.extend_from_slice(c.user.as_bytes());
        want.push(c.pass.len() as u8);
        want.extend_from_slice(c.pass.as_bytes());
        assert_eq!(&s.written[greeting.len()..], &want[..], "malformed RFC 1929 request");
    }
    if negotiated.is_err() {
        return;
    }
    if creds.is_none() {
        assert_eq!(s.written, greeting);
    }

    let at = s.pos;
    let before = s.written.len();
    let bound = v5::request(&mut s, Command::Connect, &target(sel));
    assert!(s.written.len() > before, "the request was not sent");
    match bound {
        Ok(addr) => check_accepted(&server[at..], s.pos - at, &addr),
        Err(e) => {
            let _ = (e.to_string(), e.errno(), e.is_refusal());
        }
    }
    let _ = s.unread();
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, rest)) = data.split_first() else { return };
    let (mode, chunk, sel) = (control & 3, usize::from((control >> 2) & 7), control >> 5);
    match mode {
        0 => {
            let mut r = rest;
            match v5::read_reply(&mut r) {
                Ok(addr) => check_accepted(rest, rest.len() - r.len(), &addr),
                Err(e) => {
                    let _ = (e.to_string(), e.errno());
                }
            }
        }
        1 => handshake(rest, chunk, None, sel),
        2 => {
            let creds = Credentials { user: "alice".into(), pass: "s3cret".into() };
            handshake(rest, chunk, Some(&creds), sel);
        }
        _ => {
            let [ulen, plen, rest @ ..] = rest else { return };
            let (ulen, plen) = (usize::from(*ulen), usize::from(*plen));
            if rest.len() < ulen + plen {
                return;
            }
            let user = String::from_utf8_lossy(&rest[..ulen]).into_owned();
            let pass = String::from_utf8_lossy(&rest[ulen..ulen + plen]).into_owned();
            let creds = Credentials { user, pass };
            let _ = format!("{creds:?}");
            handshake(&rest[ulen + plen..], chunk, Some(&creds), sel);
        }
    }
});
