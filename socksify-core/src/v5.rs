//! SOCKS5 (RFC 1928) with username/password authentication (RFC 1929).
//!
//! A hop whose method is known in advance gets its greeting, authentication and request in one
//! write (`request_pipelined`: one round trip). Some servers read the greeting with a single
//! `recv` and discard whatever follows it (microsocks 1.0): the chain finds out by a probe and
//! asks those step by step (`negotiate`, then `request`), one write and one reply at a time.
//! Each reply is read with at most two reads: the fixed head, then the rest whose length the
//! head announces.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use crate::addr::{validate_domain, TargetAddr};
use crate::error::{Socks5Reply, SocksError};
use crate::gssapi::{self, Mechanism, METHOD_GSSAPI};
use crate::proxy::{Command, Credentials};
use crate::wire::{self, read_exact, Msg, Peek};

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
    let mut msg = Msg::new();
    push_auth(&mut msg, creds)?;
    msg.send(stream)?;
    read_auth_status(stream)
}

/// RFC 1929's sub-negotiation request.
fn push_auth(msg: &mut Msg, creds: &Credentials) -> Result<(), SocksError> {
    let (user, pass) = (creds.user.as_bytes(), creds.pass.as_bytes());
    if user.is_empty() || user.len() > 255 || pass.len() > 255 {
        return Err(SocksError::Unsupported(
            "a SOCKS5 username must be 1 to 255 bytes and a password at most 255",
        ));
    }
    msg.byte(AUTH_VERSION).byte(user.len() as u8).push(user);
    msg.byte(pass.len() as u8).push(pass);
    Ok(())
}

fn read_auth_status<S: Read>(stream: &mut S) -> Result<(), SocksError> {
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

/// The shortest wait for the request's reply, once the greeting's has come, before a handshake
/// sent in one write is taken for one the proxy dropped (see `request_pipelined`).
pub const PIPELINE_PROBE_MIN: Duration = Duration::from_millis(1000);

/// How many greeting round trips a probed request's reply may take beyond that minimum.
const PIPELINE_PROBE_RTTS: u32 = 4;

/// The whole handshake in one write — the greeting offering the one method that will be used
/// (username/password when `creds` are given, else none), RFC 1929's request with the
/// credentials, and the request for `cmd` — then the replies in order: one round trip instead
/// of two (three with authentication).
///
/// With `probe`, the proxy is not known to take it yet: once the greeting's reply has come,
/// the request's reply must come within `PIPELINE_PROBE_MIN` or four times the greeting's round
/// trip, whichever is longer, else the proxy is taken to have read the greeting alone and
/// dropped the rest (microsocks 1.0 does), and `NotPipelined` says to ask it again step by
/// step on a new connection. A refusal of the one method offered with credentials (0xFF) says
/// the same: step by step, the proxy may pick "no authentication" instead. Without `probe` the
/// request's reply is waited for as any other.
pub fn request_pipelined<S: Read + Write + Peek>(
    stream: &mut S,
    creds: Option<&Credentials>,
    cmd: Command,
    target: &TargetAddr,
    probe: bool,
) -> Result<TargetAddr, SocksError> {
    let method = if creds.is_some() { METHOD_USER_PASS } else { METHOD_NO_AUTH };
    let mut msg = Msg::new();
    msg.push(&[VERSION, 1, method]);
    if let Some(creds) = creds {
        push_auth(&mut msg, creds)?;
    }
    push_request(&mut msg, cmd, target)?;
    let sent = Instant::now();
    msg.send(stream)?;

    // One wait, then the answer (not a read that finds nothing first). The greeting's answer
    // comes alone from servers that answer it before they read the request (Dante does).
    stream.readable().map_err(wire::transport)?;
    let mut choice = [0u8; 2];
    read_exact(stream, &mut choice)?;
    let rtt = sent.elapsed();
    check_version(choice[0])?;
    check_choice(choice[1], method, creds.is_some())?;
    // What follows the greeting's answer, once for the authentication's and once for the
    // request's: a proxy that dropped them says nothing more (microsocks 1.0 waits for them).
    let wait = PIPELINE_PROBE_MIN.max(rtt.saturating_mul(PIPELINE_PROBE_RTTS));
    let mut probe = probe;
    let next = |stream: &mut S, probe: bool| -> Result<(), SocksError> {
        if !probe {
            return stream.readable().map_err(wire::transport);
        }
        match stream.ready_within(wait) {
            Ok(true) => Ok(()),
            Ok(false) => Err(SocksError::NotPipelined),
            Err(e) => Err(wire::transport(e)),
        }
    };
    if creds.is_some() {
        next(stream, probe)?;
        read_auth_status(stream)?;
        // The login's answer came: the proxy read past the greeting, so it takes the whole
        // write; its request's answer may take as long as reaching the destination does.
        probe = false;
    }
    next(stream, probe)?;
    read_reply(stream)
}

/// Sends a request and reads its (first) reply; returns BND.ADDR:BND.PORT.
pub fn request<S: Read + Write>(
    stream: &mut S,
    cmd: Command,
    target: &TargetAddr,
) -> Result<TargetAddr, SocksError> {
    let mut msg = Msg::new();
    push_request(&mut msg, cmd, target)?;
    msg.send(stream)?;
    read_reply(stream)
}

fn push_request(msg: &mut Msg, cmd: Command, target: &TargetAddr) -> Result<(), SocksError> {
    msg.push(&[VERSION, cmd as u8, 0]);
    push_addr(msg, target)
}

/// Reads one reply: the answer to a request, or the second reply of a BIND.
pub fn read_reply<S: Read>(stream: &mut S) -> Result<TargetAddr, SocksError> {
    // VER REP RSV ATYP and the first byte of the address: enough to know the rest's length.
    let mut reply = [0u8; MAX_REPLY];
    read_exact(stream, &mut reply[..5])?;
    let len = reply_len(&reply[..5])?;
    read_exact(stream, &mut reply[5..len])?;
    parse_reply(&reply[..len])
}

/// The longest reply: a 255-byte name.
const MAX_REPLY: usize = 4 + 1 + 255 + 2;

/// The whole length of the reply whose first five bytes are `head`, or the error it carries.
fn reply_len(head: &[u8]) -> Result<usize, SocksError> {
    check_version(head[0])?;
    if head[1] != 0 {
        return Err(SocksError::Socks5(Socks5Reply(head[1])));
    }
    match head[3] {
        ATYP_IPV4 => Ok(10),
        ATYP_IPV6 => Ok(22),
        ATYP_DOMAIN if head[4] == 0 => Err(SocksError::BadReply("domain name of length 0")),
        ATYP_DOMAIN => Ok(4 + 1 + head[4] as usize + 2),
        _ => Err(SocksError::BadReply("unknown address type (ATYP)")),
    }
}

/// BND.ADDR:BND.PORT of a whole reply (`reply_len` bytes, checked by it).
fn parse_reply(reply: &[u8]) -> Result<TargetAddr, SocksError> {
    let n = reply.len();
    let port = wire::port(&reply[n - 2..]);
    match reply[3] {
        ATYP_IPV4 => Ok(TargetAddr::Ip(SocketAddr::new(IpAddr::V4(wire::ipv4(&reply[4..8])), port))),
        ATYP_IPV6 => Ok(TargetAddr::Ip(SocketAddr::new(IpAddr::V6(wire::ipv6(&reply[4..20])), port))),
        _ => {
            let name = std::str::from_utf8(&reply[5..n - 2])
                .map_err(|_| SocksError::BadReply("domain name is not UTF-8"))?;
            validate_domain(name).map_err(|_| SocksError::BadReply("domain name contains NUL"))?;
            Ok(TargetAddr::Domain(name.to_owned(), port))
        }
    }
}

/// The method a proxy chose in answer to a greeting that offered only `method`.
fn check_choice(chosen: u8, method: u8, with_creds: bool) -> Result<(), SocksError> {
    match chosen {
        m if m == method => Ok(()),
        METHOD_NONE_ACCEPTABLE if with_creds => Err(SocksError::NotPipelined),
        METHOD_NONE_ACCEPTABLE => Err(SocksError::NoAcceptableMethods { offered_auth: false }),
        other => Err(SocksError::MethodNotOffered(other)),
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
    fn a_pipelined_handshake_is_one_write_and_its_replies_in_order() {
        let target = TargetAddr::Ip("192.0.2.1:80".parse().unwrap());
        let mut input = vec![5, 0];
        input.extend(ok_v4_reply());
        let mut s = Scripted::new(&input);
        let bound = request_pipelined(&mut s, None, Command::Connect, &target, true).unwrap();
        assert_eq!(bound, TargetAddr::Ip("10.0.0.1:8080".parse().unwrap()));
        assert_eq!(s.written, [5, 1, 0, 5, 1, 0, 1, 192, 0, 2, 1, 0, 80]);
        assert_eq!(s.unread(), 0);

        // Credentials dropped with the request: the probe ends at the authentication's answer.
        let mut s = Scripted::new(&[5, 2]);
        let e = request_pipelined(&mut s, Some(&creds()), Command::Connect, &target, true).unwrap_err();
        assert!(matches!(e, SocksError::NotPipelined), "{e:?}");

        // With credentials: only username/password is offered, and sent at once.
        let mut input = vec![5, 2, 1, 0];
        input.extend(ok_v4_reply());
        input.extend(b"data");
        let mut s = Scripted::new(&input);
        request_pipelined(&mut s, Some(&creds()), Command::UdpAssociate, &target, false).unwrap();
        let mut want = vec![5, 1, 2, 1, 5];
        want.extend(b"alice");
        want.push(6);
        want.extend(b"s3cret");
        want.extend([5, 3, 0, 1, 192, 0, 2, 1, 0, 80]);
        assert_eq!(s.written, want);
        assert_eq!(s.unread(), 4, "not a byte past the reply");
    }

    #[test]
    fn a_pipelined_handshake_says_when_the_proxy_dropped_it() {
        let target = TargetAddr::Domain("example.org".into(), 443);
        // The greeting's reply, then nothing: the request was dropped (microsocks 1.0).
        let mut s = Scripted::new(&[5, 0]);
        let e = request_pipelined(&mut s, None, Command::Connect, &target, true).unwrap_err();
        assert!(matches!(e, SocksError::NotPipelined), "{e:?}");
        // The one method offered with credentials refused: step by step may still work.
        let mut s = Scripted::new(&[5, 0xff]);
        let e = request_pipelined(&mut s, Some(&creds()), Command::Connect, &target, true).unwrap_err();
        assert!(matches!(e, SocksError::NotPipelined), "{e:?}");
        // Without credentials 0xFF is the answer itself.
        let mut s = Scripted::new(&[5, 0xff]);
        let e = request_pipelined(&mut s, None, Command::Connect, &target, true).unwrap_err();
        assert!(matches!(e, SocksError::NoAcceptableMethods { .. }), "{e:?}");
        // Refusals are replies: the proxy took the handshake.
        let mut s = Scripted::new(&[5, 2, 1, 1, 5, 0, 0, 1]);
        let e = request_pipelined(&mut s, Some(&creds()), Command::Connect, &target, true).unwrap_err();
        assert!(matches!(e, SocksError::AuthRejected(1)), "{e:?}");
        let mut s = Scripted::new(&[5, 0, 5, 5, 0, 1, 0, 0, 0, 0, 0, 0]);
        let e = request_pipelined(&mut s, None, Command::Connect, &target, true).unwrap_err();
        assert!(matches!(e, SocksError::Socks5(_)), "{e:?}");
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
