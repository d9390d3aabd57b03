//! SOCKS4 and its 4a extension: one request, one eight-byte reply (two for BIND).

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr};

use crate::addr::{validate_domain, TargetAddr};
use crate::error::{Socks4Reply, SocksError};
use crate::proxy::Command;
use crate::wire::{self, read_exact, Msg};

pub const VERSION: u8 = 4;
pub const GRANTED: u8 = 0x5a;

/// Sends a CONNECT or BIND and reads the first reply; returns DSTIP:DSTPORT of that reply.
/// With `socks4a`, a name travels after the user id behind DSTIP 0.0.0.1.
pub fn request<S: Read + Write>(
    stream: &mut S,
    cmd: Command,
    target: &TargetAddr,
    user_id: &str,
    socks4a: bool,
) -> Result<TargetAddr, SocksError> {
    if cmd == Command::UdpAssociate {
        return Err(SocksError::Unsupported("SOCKS4 has no UDP; use a socks5:// proxy"));
    }
    if user_id.len() > 255 || user_id.as_bytes().contains(&0) {
        return Err(SocksError::Unsupported("a SOCKS4 user id must be at most 255 bytes, no NUL"));
    }
    let mut msg = Msg::new();
    msg.push(&[VERSION, cmd as u8]).push(&target.port().to_be_bytes());
    match target {
        TargetAddr::Ip(SocketAddr::V4(sa)) => {
            msg.push(&sa.ip().octets()).push(user_id.as_bytes()).byte(0);
        }
        TargetAddr::Ip(SocketAddr::V6(_)) => {
            return Err(SocksError::Unsupported("SOCKS4 cannot carry IPv6 addresses; use a socks5:// proxy"))
        }
        TargetAddr::Domain(name, _) => {
            if !socks4a {
                return Err(SocksError::Unsupported(
                    "SOCKS4 cannot carry host names; use socks4a:// or socks5://",
                ));
            }
            validate_domain(name)?;
            msg.push(&[0, 0, 0, 1]).push(user_id.as_bytes()).byte(0);
            msg.push(name.as_bytes()).byte(0);
        }
    }
    msg.send(stream)?;
    read_reply(stream)
}

/// Reads one eight-byte reply: the answer to a request, or the second reply of a BIND.
pub fn read_reply<S: Read>(stream: &mut S) -> Result<TargetAddr, SocksError> {
    let mut reply = [0u8; 8];
    read_exact(stream, &mut reply)?;
    // The reply's VN is 0; some servers echo 4. Anything else is not SOCKS4.
    if reply[0] != 0 && reply[0] != VERSION {
        return Err(SocksError::BadVersion { expected: 0, got: reply[0] });
    }
    if reply[1] != GRANTED {
        return Err(SocksError::Socks4(Socks4Reply(reply[1])));
    }
    let ip = IpAddr::V4(wire::ipv4(&reply[4..8]));
    Ok(TargetAddr::Ip(SocketAddr::new(ip, wire::port(&reply[2..4]))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::testing::Scripted;

    const GRANT: [u8; 8] = [0, 0x5a, 0x1f, 0x90, 10, 0, 0, 1];

    #[test]
    fn connect_by_ipv4_with_user_id() {
        let mut s = Scripted::new(&GRANT);
        let t = TargetAddr::Ip("192.0.2.1:80".parse().unwrap());
        let bound = request(&mut s, Command::Connect, &t, "bob", false).unwrap();
        assert_eq!(bound, TargetAddr::Ip("10.0.0.1:8080".parse().unwrap()));
        assert_eq!(s.written, [4, 1, 0, 80, 192, 0, 2, 1, b'b', b'o', b'b', 0]);
        assert_eq!(s.reads, 1, "the reply is read in one call");
    }

    #[test]
    fn socks4a_sends_the_name_after_the_user_id() {
        let mut s = Scripted::new(&GRANT);
        let t = TargetAddr::domain("example.org", 443).unwrap();
        request(&mut s, Command::Bind, &t, "", true).unwrap();
        let mut want = vec![4, 2, 1, 0xbb, 0, 0, 0, 1, 0];
        want.extend(b"example.org\0");
        assert_eq!(s.written, want);
    }

    #[test]
    fn plain_socks4_refuses_names_and_ipv6() {
        let mut s = Scripted::new(&GRANT);
        let t = TargetAddr::domain("example.org", 443).unwrap();
        let e = request(&mut s, Command::Connect, &t, "", false).unwrap_err();
        assert!(e.to_string().contains("socks4a"));
        let t6 = TargetAddr::Ip("[::1]:80".parse().unwrap());
        assert_eq!(request(&mut s, Command::Connect, &t6, "", true).unwrap_err().errno(), libc::EAFNOSUPPORT);
        assert!(s.written.is_empty());
    }

    #[test]
    fn every_reply_code_is_mapped() {
        for (code, errno) in
            [(0x5b, libc::ECONNREFUSED), (0x5c, libc::EACCES), (0x5d, libc::EACCES), (0x00, libc::EPROTO)]
        {
            let mut s = Scripted::new(&[0, code, 0, 0, 0, 0, 0, 0]);
            let e = read_reply(&mut s).unwrap_err();
            assert_eq!(e.errno(), errno, "{code:#x}");
        }
    }

    #[test]
    fn wrong_version_and_truncation_are_errors() {
        let mut s = Scripted::new(&[5, 0x5a, 0, 0, 0, 0, 0, 0]);
        assert!(matches!(read_reply(&mut s), Err(SocksError::BadVersion { .. })));
        for cut in 0..8 {
            let mut s = Scripted::new(&GRANT[..cut]);
            assert!(matches!(read_reply(&mut s), Err(SocksError::Closed)), "cut {cut}");
        }
    }

    #[test]
    fn udp_is_not_socks4() {
        let mut s = Scripted::new(&GRANT);
        let t = TargetAddr::Ip("192.0.2.1:53".parse().unwrap());
        assert!(request(&mut s, Command::UdpAssociate, &t, "", true).is_err());
    }
}
