//! SOCKS5 (RFC 1928) with username/password authentication (RFC 1929).
//!
//! The greeting and the request are never sent in one write: microsocks reads the greeting with
//! a single `recv` and discards whatever follows it. Each reply is read with at most two reads:
//! the fixed head, then the rest whose length the head announces.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr};

use crate::addr::{validate_domain, TargetAddr};
use crate::error::{Socks5Reply, SocksError};
use crate::gssapi::{self, Mechanism, METHOD_GSSAPI};
use crate::proxy::{Command, Credentials};
use crate::wire::{self, read_exact, Msg};

pub const VERSION: u8 = 5;
pub const METHOD_NO_AUTH: u8 = 0x00;
pub const METHOD_USER_PASS: u8 = 0x02;
pub const METHOD_NONE_ACCEPTABLE: u8 = 0xff;
pub const ATYP_IPV4: u8 = 0x01;
pub const ATYP_DOMAIN: u8 = 0x03;
pub const ATYP_IPV6: u8 = 0x04;
const AUTH_VERSION: u8 = 0x01;

/// Greets the proxy and authenticates. Username/password is offered only when credentials are
/// configured, and sent only when the proxy picks it.
pub fn negotiate<S: Read + Write>(stream: &mut S, creds: Option<&Credentials>) -> Result<(), SocksError> {
    negotiate_with(stream, creds, None).map(|_| ())
}

/// Makes the GSSAPI context of a hop whose proxy picked method 0x01.
pub type GssapiContext<'a> = &'a mut dyn FnMut() -> Result<Box<dyn Mechanism>, SocksError>;

/// As [`negotiate`], offering GSSAPI (RFC 1961) first when `gssapi` can make its context;
/// returns the method the proxy chose.
pub fn negotiate_with<S: Read + Write>(
    stream: &mut S,
    creds: Option<&Credentials>,
    gssapi: Option<GssapiContext<'_>>,
) -> Result<u8, SocksError> {
    let mut methods = Vec::with_capacity(3);
    if gssapi.is_some() {
        methods.push(METHOD_GSSAPI);
    }
    methods.push(METHOD_NO_AUTH);
    if creds.is_some() {
        methods.push(METHOD_USER_PASS);
    }
    let mut greeting = Msg::new();
    greeting.push(&[VERSION, methods.len() as u8]).push(&methods);
    greeting.send(stream)?;

    let mut choice = [0u8; 2];
    read_exact(stream, &mut choice)?;
    check_version(choice[0])?;
    match (choice[1], creds, gssapi) {
        (METHOD_NO_AUTH, _, _) => Ok(METHOD_NO_AUTH),
        (METHOD_USER_PASS, Some(creds), _) => authenticate(stream, creds).map(|_| METHOD_USER_PASS),
        (METHOD_GSSAPI, _, Some(make)) => {
            let mut mech = make()?;
            gssapi::authenticate(stream, mech.as_mut()).map(|_| METHOD_GSSAPI)
        }
        (METHOD_NONE_ACCEPTABLE, c, _) => Err(SocksError::NoAcceptableMethods { offered_auth: c.is_some() }),
        (other, _, _) => Err(SocksError::MethodNotOffered(other)),
    }
}

fn authenticate<S: Read + Write>(stream: &mut S, creds: &Credentials) -> Result<(), SocksError> {
    let (user, pass) = (creds.user.as_bytes(), creds.pass.as_bytes());
    if user.is_empty() || user.len() > 255 || pass.len() > 255 {
        return Err(SocksError::Unsupported(
            "a SOCKS5 username must be 1 to 255 bytes and a password at most 255",
        ));
    }
    let mut msg = Msg::new();
    msg.byte(AUTH_VERSION).byte(user.len() as u8).push(user);
    msg.byte(pass.len() as u8).push(pass);
    msg.send(stream)?;

    let mut status = [0u8; 2];
    read_exact(stream, &mut status)?;
    // RFC 1929 says version 1; a few servers answer with 5. Both are accepted.
    if status[0] != AUTH_VERSION && status[0] != VERSION {
        return Err(SocksError::BadVersion { expected: AUTH_VERSION, got: status[0] });
    }
    match status[1] {
        0 => Ok(()),
        code => Err(SocksError::AuthRejected(code)),
    }
}

/// Sends a request and reads its (first) reply; returns BND.ADDR:BND.PORT.
pub fn request<S: Read + Write>(
    stream: &mut S,
    cmd: Command,
    target: &TargetAddr,
) -> Result<TargetAddr, SocksError> {
    let mut msg = Msg::new();
    msg.push(&[VERSION, cmd as u8, 0]);
    push_addr(&mut msg, target)?;
    msg.send(stream)?;
    read_reply(stream)
}

/// Reads one reply: the answer to a request, or the second reply of a BIND.
pub fn read_reply<S: Read>(stream: &mut S) -> Result<TargetAddr, SocksError> {
    // VER REP RSV ATYP and the first byte of the address: enough to know the rest's length.
    let mut head = [0u8; 5];
    read_exact(stream, &mut head)?;
    check_version(head[0])?;
    if head[1] != 0 {
        return Err(SocksError::Socks5(Socks5Reply(head[1])));
    }
    let mut rest = [0u8; 257];
    match head[3] {
        ATYP_IPV4 => {
            let rest = &mut rest[..5];
            read_exact(stream, rest)?;
            let ip = wire::ipv4(&[head[4], rest[0], rest[1], rest[2]]);
            Ok(TargetAddr::Ip(SocketAddr::new(IpAddr::V4(ip), wire::port(&rest[3..]))))
        }
        ATYP_IPV6 => {
            let rest = &mut rest[..17];
            read_exact(stream, rest)?;
            let mut octets = [0u8; 16];
            octets[0] = head[4];
            octets[1..].copy_from_slice(&rest[..15]);
            let ip = wire::ipv6(&octets);
            Ok(TargetAddr::Ip(SocketAddr::new(IpAddr::V6(ip), wire::port(&rest[15..]))))
        }
        ATYP_DOMAIN => {
            let len = head[4] as usize;
            if len == 0 {
                return Err(SocksError::BadReply("domain name of length 0"));
            }
            let rest = &mut rest[..len + 2];
            read_exact(stream, rest)?;
            let name = std::str::from_utf8(&rest[..len])
                .map_err(|_| SocksError::BadReply("domain name is not UTF-8"))?;
            validate_domain(name).map_err(|_| SocksError::BadReply("domain name contains NUL"))?;
            Ok(TargetAddr::Domain(name.to_owned(), wire::port(&rest[len..])))
        }
        _ => Err(SocksError::BadReply("unknown address type (ATYP)")),
    }
}

fn check_version(got: u8) -> Result<(), SocksError> {
    if got == VERSION {
        Ok(())
    } else {
        Err(SocksError::BadVersion { expected: VERSION, got })
    }
}

fn push_addr(msg: &mut Msg, target: &TargetAddr) -> Result<(), SocksError> {
    match target {
        TargetAddr::Ip(SocketAddr::V4(sa)) => {
            msg.byte(ATYP_IPV4).push(&sa.ip().octets());
        }
        TargetAddr::Ip(SocketAddr::V6(sa)) => {
            msg.byte(ATYP_IPV6).push(&sa.ip().octets());
        }
        TargetAddr::Domain(name, _) => {
            validate_domain(name)?;
            msg.byte(ATYP_DOMAIN).byte(name.len() as u8).push(name.as_bytes());
        }
    }
    msg.push(&target.port().to_be_bytes());
    Ok(())
}

/// The length of the UDP request header (RFC 1928, section 7) for `target`.
pub fn udp_header_len(target: &TargetAddr) -> usize {
    4 + match target {
        TargetAddr::Ip(SocketAddr::V4(_)) => 4,
        TargetAddr::Ip(SocketAddr::V6(_)) => 16,
        TargetAddr::Domain(name, _) => 1 + name.len(),
    } + 2
}

/// Writes the UDP request header for `target` at the start of `out`, which must hold at least
/// `udp_header_len(target)` bytes; returns the header's length.
pub fn write_udp_header(target: &TargetAddr, out: &mut [u8]) -> Result<usize, SocksError> {
    let mut msg = Msg::new();
    msg.push(&[0, 0, 0]);
    push_addr(&mut msg, target)?;
    let bytes = msg.as_bytes();
    out[..bytes.len()].copy_from_slice(bytes);
    Ok(bytes.len())
}

/// Wraps `data` for the relay: header then payload.
pub fn encode_udp(target: &TargetAddr, data: &[u8]) -> Result<Vec<u8>, SocksError> {
    let mut out = vec![0u8; udp_header_len(target) + data.len()];
    let n = write_udp_header(target, &mut out)?;
    out[n..].copy_from_slice(data);
    Ok(out)
}

/// Parses a datagram from the relay: the source it names and where its payload starts.
/// A fragment (FRAG != 0) is an error: the caller drops it.
pub fn decode_udp(datagram: &[u8]) -> Result<(TargetAddr, usize), SocksError> {
    let short = SocksError::BadReply("UDP datagram shorter than its header");
    if datagram.len() < 4 {
        return Err(short);
    }
    if datagram[2] != 0 {
        return Err(SocksError::Fragment(datagram[2]));
    }
    let (addr, end) = match datagram[3] {
        ATYP_IPV4 if datagram.len() >= 10 => {
            let ip = IpAddr::V4(wire::ipv4(&datagram[4..8]));
            (TargetAddr::Ip(SocketAddr::new(ip, wire::port(&datagram[8..10]))), 10)
        }
        ATYP_IPV6 if datagram.len() >= 22 => {
            let ip = IpAddr::V6(wire::ipv6(&datagram[4..20]));
            (TargetAddr::Ip(SocketAddr::new(ip, wire::port(&datagram[20..22]))), 22)
        }
        ATYP_DOMAIN if datagram.len() >= 5 => {
            let len = datagram[4] as usize;
            let end = 5 + len + 2;
            if len == 0 || datagram.len() < end {
                return Err(SocksError::BadReply("bad domain length in UDP header"));
            }
            let name = std::str::from_utf8(&datagram[5..5 + len])
                .map_err(|_| SocksError::BadReply("domain name is not UTF-8"))?;
            validate_domain(name).map_err(|_| SocksError::BadReply("domain name contains NUL"))?;
            (TargetAddr::Domain(name.to_owned(), wire::port(&datagram[5 + len..end])), end)
        }
        ATYP_IPV4 | ATYP_IPV6 | ATYP_DOMAIN => return Err(short),
        _ => return Err(SocksError::BadReply("unknown address type (ATYP) in UDP header")),
    };
    Ok((addr, end))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::testing::Scripted;

    fn creds() -> Credentials {
        Credentials { user: "alice".into(), pass: "s3cret".into() }
    }

    fn ok_v4_reply() -> Vec<u8> {
        vec![5, 0, 0, 1, 10, 0, 0, 1, 0x1f, 0x90]
    }

    #[test]
    fn no_auth_greeting_then_connect_by_ipv4() {
        let mut input = vec![5, 0];
        input.extend(ok_v4_reply());
        let mut s = Scripted::new(&input);
        negotiate(&mut s, None).unwrap();
        let target = TargetAddr::Ip("192.0.2.1:80".parse().unwrap());
        let bound = request(&mut s, Command::Connect, &target).unwrap();
        assert_eq!(bound, TargetAddr::Ip("10.0.0.1:8080".parse().unwrap()));
        assert_eq!(s.written, [5, 1, 0, 5, 1, 0, 1, 192, 0, 2, 1, 0, 80]);
        assert_eq!(s.reads, 3, "greeting in one read, reply in two");
    }

    #[test]
    fn credentials_are_sent_only_when_the_server_picks_them() {
        let mut s = Scripted::new(&[5, 0]);
        negotiate(&mut s, Some(&creds())).unwrap();
        assert_eq!(s.written, [5, 2, 0, 2]);

        let mut s = Scripted::new(&[5, 2, 1, 0]);
        negotiate(&mut s, Some(&creds())).unwrap();
        let mut want = vec![5, 2, 0, 2, 1, 5];
        want.extend(b"alice");
        want.push(6);
        want.extend(b"s3cret");
        assert_eq!(s.written, want);
    }

    #[test]
    fn gssapi_is_offered_first_and_run_when_picked() {
        struct Once;
        impl Mechanism for Once {
            fn step(&mut self, _: Option<&[u8]>) -> Result<gssapi::Step, SocksError> {
                Ok(gssapi::Step::Done(b"t".to_vec()))
            }
            fn wrap(&mut self, d: &[u8]) -> Result<Vec<u8>, SocksError> {
                Ok(d.to_vec())
            }
            fn unwrap(&mut self, t: &[u8]) -> Result<Vec<u8>, SocksError> {
                Ok(t.to_vec())
            }
        }
        let mut made = 0;
        let mut make = || -> Result<Box<dyn Mechanism>, SocksError> {
            made += 1;
            Ok(Box::new(Once))
        };
        // Picked: the context is made and the exchange runs.
        let mut s = Scripted::new(&[5, 1, 1, 2, 0, 1, 0]);
        assert_eq!(negotiate_with(&mut s, Some(&creds()), Some(&mut make)).unwrap(), METHOD_GSSAPI);
        assert_eq!(s.written, [5, 3, 1, 0, 2, 1, 1, 0, 1, b't', 1, 2, 0, 1, 0]);
        // Not picked: no context is made (no Kerberos library is even loaded).
        let mut s = Scripted::new(&[5, 0]);
        assert_eq!(negotiate_with(&mut s, None, Some(&mut make)).unwrap(), METHOD_NO_AUTH);
        assert_eq!(s.written, [5, 2, 1, 0]);
        assert_eq!(made, 1);
        // Picked though not offered.
        let mut s = Scripted::new(&[5, 1]);
        assert!(matches!(negotiate_with(&mut s, None, None), Err(SocksError::MethodNotOffered(1))));
    }

    #[test]
    fn auth_failure_status_is_an_error() {
        let mut s = Scripted::new(&[5, 2, 1, 1]);
        let e = negotiate(&mut s, Some(&creds())).unwrap_err();
        assert!(matches!(e, SocksError::AuthRejected(1)));
        assert_eq!(e.errno(), libc::EACCES);
    }

    #[test]
    fn no_acceptable_methods_is_clear() {
        let mut s = Scripted::new(&[5, 0xff]);
        let e = negotiate(&mut s, None).unwrap_err();
        assert!(e.to_string().contains("none of the offered authentication methods"));
        assert!(e.to_string().contains("username"));
        assert_eq!(e.errno(), libc::EACCES);
    }

    #[test]
    fn a_method_that_was_not_offered_is_refused() {
        // user/pass picked although no credentials were offered
        let mut s = Scripted::new(&[5, 2]);
        assert!(matches!(negotiate(&mut s, None), Err(SocksError::MethodNotOffered(2))));
        let mut s = Scripted::new(&[5, 1]);
        assert!(matches!(negotiate(&mut s, Some(&creds())), Err(SocksError::MethodNotOffered(1))));
    }

    #[test]
    fn wrong_version_is_refused() {
        let mut s = Scripted::new(&[4, 0]);
        assert!(matches!(negotiate(&mut s, None), Err(SocksError::BadVersion { expected: 5, got: 4 })));
        let mut s = Scripted::new(&[0x48, 0x54, 0x54, 0x50, 0x2f, 0x31]);
        assert!(matches!(read_reply(&mut s), Err(SocksError::BadVersion { .. })));
    }

    #[test]
    fn every_reply_code_maps_to_an_error() {
        for code in 1..=0xffu8 {
            let mut s = Scripted::new(&[5, code, 0, 1, 0, 0, 0, 0, 0, 0]);
            match read_reply(&mut s) {
                Err(SocksError::Socks5(Socks5Reply(c))) => assert_eq!(c, code),
                other => panic!("code {code}: {other:?}"),
            }
        }
    }

    #[test]
    fn ipv6_and_domain_targets_are_encoded() {
        let mut s = Scripted::new(&ok_v4_reply());
        let t6 = TargetAddr::Ip("[2001:db8::1]:443".parse().unwrap());
        request(&mut s, Command::Connect, &t6).unwrap();
        let mut want = vec![5, 1, 0, 4];
        want.extend("2001:db8::1".parse::<std::net::Ipv6Addr>().unwrap().octets());
        want.extend([1, 0xbb]);
        assert_eq!(s.written, want);

        let mut s = Scripted::new(&ok_v4_reply());
        let td = TargetAddr::domain("example.org", 80).unwrap();
        request(&mut s, Command::Bind, &td).unwrap();
        let mut want = vec![5, 2, 0, 3, 11];
        want.extend(b"example.org");
        want.extend([0, 80]);
        assert_eq!(s.written, want);
    }

    #[test]
    fn replies_with_ipv6_and_domain_addresses_are_decoded() {
        let mut input = vec![5, 0, 0, 4];
        input.extend("::1".parse::<std::net::Ipv6Addr>().unwrap().octets());
        input.extend([0, 22]);
        let mut s = Scripted::new(&input);
        assert_eq!(read_reply(&mut s).unwrap(), TargetAddr::Ip("[::1]:22".parse().unwrap()));
        assert_eq!(s.reads, 2);

        let mut input = vec![5, 0, 0, 3, 4];
        input.extend(b"host");
        input.extend([0, 21, 0xaa]);
        let mut s = Scripted::new(&input);
        assert_eq!(read_reply(&mut s).unwrap(), TargetAddr::Domain("host".into(), 21));
        assert_eq!(s.unread(), 1, "bytes after the reply belong to the program");
    }

    #[test]
    fn malformed_replies_are_errors_not_panics() {
        let cases: &[&[u8]] = &[
            &[],                                   // early close
            &[5],                                  // short
            &[5, 0, 0, 1, 1, 2],                   // truncated IPv4
            &[5, 0, 0, 9, 1, 2, 3, 4, 0, 0],       // unknown ATYP
            &[5, 0, 0, 3, 0, 0, 0],                // zero-length domain
            &[5, 0, 0, 3, 200, b'a', 0, 1],        // domain longer than what is sent
            &[5, 0, 0, 3, 2, 0xff, 0xfe, 0, 1],    // not UTF-8
            &[5, 0, 0, 3, 3, b'a', 0, b'b', 0, 1], // NUL inside
        ];
        for case in cases {
            let mut s = Scripted::new(case);
            assert!(read_reply(&mut s).is_err(), "{case:?}");
        }
        // truncation at every offset of a valid reply
        let full = ok_v4_reply();
        for cut in 0..full.len() {
            let mut s = Scripted::new(&full[..cut]);
            assert!(matches!(read_reply(&mut s), Err(SocksError::Closed)), "cut {cut}");
        }
    }

    #[test]
    fn oversized_names_are_rejected_before_sending() {
        let mut s = Scripted::new(&ok_v4_reply());
        let t = TargetAddr::Domain("a".repeat(256), 80);
        assert!(matches!(request(&mut s, Command::Connect, &t), Err(SocksError::BadDomain(256))));
        assert!(s.written.is_empty());
    }

    #[test]
    fn udp_header_round_trips() {
        for target in [
            TargetAddr::Ip("192.0.2.9:53".parse().unwrap()),
            TargetAddr::Ip("[2001:db8::9]:53".parse().unwrap()),
            TargetAddr::domain("dns.example", 53).unwrap(),
        ] {
            let wrapped = encode_udp(&target, b"payload").unwrap();
            assert_eq!(wrapped.len(), udp_header_len(&target) + 7);
            let (from, at) = decode_udp(&wrapped).unwrap();
            assert_eq!(from, target);
            assert_eq!(&wrapped[at..], b"payload");
        }
    }

    #[test]
    fn udp_fragments_and_garbage_are_dropped() {
        let mut frag = encode_udp(&TargetAddr::Ip("192.0.2.9:53".parse().unwrap()), b"x").unwrap();
        frag[2] = 1;
        assert!(matches!(decode_udp(&frag), Err(SocksError::Fragment(1))));
        // The last one, a NUL name, was found by the udp_header fuzz target: it decoded, and then
        // could not be encoded again.
        for bad in [
            &[0u8, 0, 0][..],
            &[0, 0, 0, 1, 1],
            &[0, 0, 0, 7, 1, 2, 3, 4, 0, 0],
            &[0, 0, 0, 3, 9, b'a'],
            &[0, 0, 0, 3, 1, 0, 0, 0],
        ] {
            assert!(decode_udp(bad).is_err(), "{bad:?}");
        }
    }
}
