//! HTTP CONNECT proxies (RFC 9110, section 9.3.6), with Basic authentication: a hop like any
//! SOCKS one, for CONNECT only.
//!
//! The response's headers are read without reading past them — the destination's first bytes
//! may follow at once and belong to the program — by peeking, and then consuming only what
//! belongs to the headers.

use std::io::{Read, Write};

use crate::addr::TargetAddr;
use crate::error::SocksError;
use crate::proxy::Credentials;
use crate::wire::{read_exact, Peek};

/// The longest response head accepted.
const MAX_HEAD: usize = 8192;

/// Sends `CONNECT target` and reads the response head; 2xx is success.
pub fn connect<S: Read + Write + Peek>(
    stream: &mut S,
    target: &TargetAddr,
    creds: Option<&Credentials>,
) -> Result<TargetAddr, SocksError> {
    let authority = match target {
        TargetAddr::Ip(std::net::SocketAddr::V6(sa)) => format!("[{}]:{}", sa.ip(), sa.port()),
        other => other.to_string(),
    };
    let mut request = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n");
    if let Some(c) = creds {
        request.push_str("Proxy-Authorization: Basic ");
        request.push_str(&base64(format!("{}:{}", c.user, c.pass).as_bytes()));
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).map_err(SocksError::Io)?;

    let head = read_head(stream)?;
    let status = parse_status(&head)?;
    if (200..300).contains(&status) {
        Ok(TargetAddr::Ip(std::net::SocketAddr::from(([0, 0, 0, 0], 0))))
    } else {
        Err(SocksError::Http(status))
    }
}

/// Reads the response head up to and including the blank line, and not a byte more.
fn read_head<S: Read + Peek>(stream: &mut S) -> Result<Vec<u8>, SocksError> {
    let mut head: Vec<u8> = Vec::with_capacity(256);
    let mut peeked = [0u8; 1024];
    loop {
        let n = stream.peek(&mut peeked).map_err(|e| match e.kind() {
            std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => SocksError::Timeout,
            _ => SocksError::Io(e),
        })?;
        if n == 0 {
            return Err(SocksError::Closed);
        }
        // Search across the boundary with what was consumed before.
        let keep = head.len().min(3);
        let mut window = head[head.len() - keep..].to_vec();
        window.extend_from_slice(&peeked[..n]);
        let take = match window.windows(4).position(|w| w == b"\r\n\r\n") {
            Some(at) => at + 4 - keep,
            None => n,
        };
        let start = head.len();
        head.resize(start + take, 0);
        read_exact(stream, &mut head[start..])?;
        if head.ends_with(b"\r\n\r\n") {
            return Ok(head);
        }
        if head.len() > MAX_HEAD {
            return Err(SocksError::BadReply("HTTP response head too long"));
        }
    }
}

fn parse_status(head: &[u8]) -> Result<u16, SocksError> {
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = std::str::from_utf8(line).map_err(|_| SocksError::BadReply("HTTP status line is not text"))?;
    let mut parts = line.trim_end().splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if version != "HTTP/1.1" && version != "HTTP/1.0" {
        return Err(SocksError::BadReply("not an HTTP/1.x response"));
    }
    // Exactly three digits (RFC 9110, section 15): "+200" or "0200" is not a status.
    parts
        .next()
        .filter(|c| c.len() == 3 && c.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|c| c.parse::<u16>().ok())
        .filter(|c| (100..600).contains(c))
        .ok_or(SocksError::BadReply("HTTP status line without a three-digit status code"))
}

fn base64(data: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ABC[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::testing::Scripted;

    #[test]
    fn base64_matches_rfc_4648() {
        for (plain, coded) in
            [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foobar", "Zm9vYmFy")]
        {
            assert_eq!(base64(plain.as_bytes()), coded);
        }
    }

    #[test]
    fn connect_with_basic_auth_and_data_right_behind_the_head() {
        let mut s = Scripted::new(b"HTTP/1.1 200 Connection established\r\nX: y\r\n\r\nSSH-2.0-banner");
        let creds = Credentials { user: "alice".into(), pass: "s3cret".into() };
        connect(&mut s, &TargetAddr::domain("example.org", 22).unwrap(), Some(&creds)).unwrap();
        let sent = String::from_utf8(s.written.clone()).unwrap();
        assert!(sent.starts_with("CONNECT example.org:22 HTTP/1.1\r\nHost: example.org:22\r\n"));
        assert!(sent.contains("Proxy-Authorization: Basic YWxpY2U6czNjcmV0\r\n"));
        assert_eq!(s.unread(), b"SSH-2.0-banner".len(), "the destination's bytes stay for the program");
    }

    #[test]
    fn ipv6_targets_go_in_brackets() {
        let mut s = Scripted::new(b"HTTP/1.0 200 OK\r\n\r\n");
        connect(&mut s, &TargetAddr::Ip("[2001:db8::1]:443".parse().unwrap()), None).unwrap();
        assert!(String::from_utf8(s.written).unwrap().starts_with("CONNECT [2001:db8::1]:443 HTTP/1.1"));
    }

    #[test]
    fn refusals_map_to_errnos_and_garbage_is_an_error() {
        for (code, errno) in
            [(407, libc::EACCES), (403, libc::EACCES), (502, libc::ECONNREFUSED), (504, libc::ETIMEDOUT)]
        {
            let mut s = Scripted::new(format!("HTTP/1.1 {code} No\r\n\r\n").as_bytes());
            let e = connect(&mut s, &TargetAddr::domain("h", 1).unwrap(), None).unwrap_err();
            assert_eq!(e.errno(), errno, "{code}");
        }
        // "+200" and "0200" were found by the http_reply fuzz target.
        for bad in [
            &b"SSH-2.0-x\r\n\r\n"[..],
            b"HTTP/1.1 abc\r\n\r\n",
            b"HTTP/1.1 200 OK\r\n",
            b"",
            b"HTTP/1.1 +200\r\n\r\n",
            b"HTTP/1. 0200\r\n\r\n",
        ] {
            let mut s = Scripted::new(bad);
            assert!(connect(&mut s, &TargetAddr::domain("h", 1).unwrap(), None).is_err(), "{bad:?}");
        }
    }
}
