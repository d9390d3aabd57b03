//! SOCKS4/4a from the client's side against a hostile proxy: `v4::read_reply` on raw bytes, and
//! `v4::request` on a scripted stream whose server bytes are the input.
//!
//! Input: one control byte, then the proxy's bytes.
//!   bit 0: 0 = read_reply alone, 1 = a whole request
//!   bits 1-3: bytes per `read` (0 = as many as asked)
//!   bits 4-5: the request's target and protocol (IPv4 on 4, IPv4 on 4a, name on 4a, name on 4)
//!   bit 6: CONNECT or BIND
//!   bit 7: with or without a user id
//! Properties: no panic, no hang; an accepted reply is exactly eight bytes with VN 0 or 4 and
//! CD 0x5a, and the address returned is DSTIP:DSTPORT of those bytes.
#![no_main]

mod common;

use std::net::{Ipv4Addr, SocketAddr};

use common::Script;
use libfuzzer_sys::fuzz_target;
use socksify_core::proxy::Command;
use socksify_core::{v4, TargetAddr};

fn check_accepted(bytes: &[u8], consumed: usize, addr: &TargetAddr) {
    assert_eq!(consumed, 8, "a SOCKS4 reply is eight bytes");
    assert!(bytes[0] == 0 || bytes[0] == v4::VERSION, "VN {}", bytes[0]);
    assert_eq!(bytes[1], v4::GRANTED);
    let ip = Ipv4Addr::new(bytes[4], bytes[5], bytes[6], bytes[7]);
    let port = u16::from_be_bytes([bytes[2], bytes[3]]);
    assert_eq!(*addr, TargetAddr::Ip(SocketAddr::from((ip, port))));
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, rest)) = data.split_first() else { return };
    if control & 1 == 0 {
        let mut r = rest;
        match v4::read_reply(&mut r) {
            Ok(addr) => check_accepted(rest, rest.len() - r.len(), &addr),
            Err(e) => {
                let _ = (e.to_string(), e.errno(), e.is_refusal());
            }
        }
        return;
    }
    let chunk = usize::from((control >> 1) & 7);
    let (target, socks4a) = match (control >> 4) & 3 {
        0 => (TargetAddr::Ip("192.0.2.1:80".parse().unwrap()), false),
        1 => (TargetAddr::Ip("192.0.2.1:80".parse().unwrap()), true),
        2 => (TargetAddr::domain("example.org", 443).unwrap(), true),
        _ => (TargetAddr::domain("example.org", 443).unwrap(), false),
    };
    let cmd = if control & 0x40 == 0 { Command::Connect } else { Command::Bind };
    let user = if control & 0x80 == 0 { "" } else { "bob" };
    let mut s = Script::new(rest, chunk);
    match v4::request(&mut s, cmd, &target, user, socks4a) {
        Ok(addr) => {
            assert!(!s.written.is_empty(), "a reply was read before the request was sent");
            check_accepted(rest, s.pos, &addr);
        }
        Err(e) => {
            let _ = (e.to_string(), e.errno());
        }
    }
});
