//! Everything that can go wrong between the client and a proxy, each with the errno a hooked
//! call hands back and a message a user can act on.

use std::io;

use thiserror::Error;

/// An error from one SOCKS exchange.
#[derive(Debug, Error)]
pub enum SocksError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("the proxy did not answer within the read timeout")]
    Timeout,
    #[error("the proxy closed the connection in the middle of the handshake")]
    Closed,
    #[error("the proxy answered with protocol version {got}, expected {expected}")]
    BadVersion { expected: u8, got: u8 },
    #[error("the proxy sent a malformed reply: {0}")]
    BadReply(&'static str),
    #[error("the proxy accepts none of the offered authentication methods (it answered 0xFF){}",
        if *.offered_auth { "" } else { "; it may want a username and password" })]
    NoAcceptableMethods { offered_auth: bool },
    #[error("the proxy chose authentication method {0:#04x}, which the client did not offer")]
    MethodNotOffered(u8),
    #[error("the proxy rejected the username or password (status {0:#04x})")]
    AuthRejected(u8),
    #[error("{0}")]
    Socks5(Socks5Reply),
    #[error("{0}")]
    Socks4(Socks4Reply),
    #[error("{0}")]
    Unsupported(&'static str),
    #[error("host name of {0} bytes cannot be sent to a proxy (1 to 255 bytes, no NUL)")]
    BadDomain(usize),
    #[error("the HTTP proxy answered {code}: {meaning}", code = .0, meaning = http_meaning(*.0))]
    Http(u16),
    #[error("the UDP datagram is a fragment (FRAG={0}); fragments are dropped")]
    Fragment(u8),
    /// GSSAPI (RFC 1961) could not authenticate: no ticket, an unknown service, no library...
    #[error("GSSAPI: {0}")]
    Gssapi(String),
    #[error("the proxy rejected the GSSAPI authentication (it sent the abort message)")]
    GssapiAborted,
    /// The proxy wants a per-message protection level socksify does not speak (`None`: it
    /// refused "none" without naming one).
    #[error("{}", gssapi_protection(.0))]
    GssapiProtection(Option<crate::gssapi::Protection>),
    /// The proxy answered the greeting of a handshake sent in one write (greeting,
    /// authentication and request) but not its request within the probe: it reads the
    /// greeting alone and drops what follows (microsocks 1.0 does), or it refused the one
    /// method offered. The chain asks it again step by step, and the session remembers.
    #[error("the proxy did not take a handshake sent in one write; asking it step by step")]
    NotPipelined,
}

fn gssapi_protection(level: &Option<crate::gssapi::Protection>) -> String {
    let wants = match level {
        Some(l) => {
            format!("the proxy requires GSSAPI per-message protection level {}: {}", l.byte(), l.name())
        }
        None => {
            "the proxy refused GSSAPI without per-message protection (it wants integrity or confidentiality)"
                .to_owned()
        }
    };
    format!(
        "{wants}; protection level not supported: socksify speaks only \"no protection beyond \
         authentication\" (Dante: gssapi.enctype: clear), so nothing was sent"
    )
}

impl SocksError {
    /// The errno a hooked call reports for this error.
    pub fn errno(&self) -> i32 {
        match self {
            SocksError::Io(e) => io_errno(e),
            SocksError::Timeout => libc::ETIMEDOUT,
            SocksError::Closed => libc::ECONNRESET,
            SocksError::BadVersion { .. } | SocksError::BadReply(_) => libc::EPROTO,
            SocksError::MethodNotOffered(_) => libc::EPROTO,
            SocksError::NoAcceptableMethods { .. } | SocksError::AuthRejected(_) => libc::EACCES,
            SocksError::Socks5(r) => r.errno(),
            SocksError::Socks4(r) => r.errno(),
            SocksError::Unsupported(_) => libc::EAFNOSUPPORT,
            SocksError::BadDomain(_) => libc::EINVAL,
            SocksError::Fragment(_) => libc::EMSGSIZE,
            SocksError::Gssapi(_) | SocksError::GssapiAborted | SocksError::GssapiProtection(_) => {
                libc::EACCES
            }
            SocksError::Http(401 | 403 | 407) => libc::EACCES,
            SocksError::Http(504 | 408) => libc::ETIMEDOUT,
            SocksError::Http(_) => libc::ECONNREFUSED,
            SocksError::NotPipelined => libc::ETIMEDOUT,
        }
    }

    /// True when the proxy itself worked and reported that it could not reach what it was
    /// asked to reach (as opposed to a proxy that is down, broken or refuses us).
    pub fn is_refusal(&self) -> bool {
        matches!(self, SocksError::Socks5(_) | SocksError::Socks4(_))
            || matches!(self, SocksError::Http(code) if !matches!(code, 401 | 403 | 407))
    }
}

fn http_meaning(code: u16) -> &'static str {
    match code {
        401 | 407 => "proxy authentication required or rejected",
        403 => "forbidden by the proxy",
        404 => "destination not found",
        408 | 504 => "the destination did not answer the proxy in time",
        502 => "the proxy could not connect to the destination",
        503 => "service unavailable",
        _ => "CONNECT refused",
    }
}

/// The errno of an I/O error, with sensible values for errors that carry none.
pub fn io_errno(e: &io::Error) -> i32 {
    if let Some(code) = e.raw_os_error() {
        return code;
    }
    match e.kind() {
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => libc::ETIMEDOUT,
        io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset => libc::ECONNRESET,
        io::ErrorKind::ConnectionRefused => libc::ECONNREFUSED,
        io::ErrorKind::InvalidInput => libc::EINVAL,
        _ => libc::EIO,
    }
}

/// A SOCKS5 reply code other than success (RFC 1928, section 6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Socks5Reply(pub u8);

impl Socks5Reply {
    pub fn errno(self) -> i32 {
        match self.0 {
            0x01 => libc::ECONNREFUSED,
            0x02 => libc::EACCES,
            0x03 => libc::ENETUNREACH,
            0x04 => libc::EHOSTUNREACH,
            0x05 => libc::ECONNREFUSED,
            0x06 => libc::ETIMEDOUT,
            0x07 => libc::EOPNOTSUPP,
            0x08 => libc::EAFNOSUPPORT,
            _ => libc::EPROTO,
        }
    }

    pub fn message(self) -> &'static str {
        match self.0 {
            0x00 => "succeeded",
            0x01 => "general SOCKS server failure",
            0x02 => "connection not allowed by the proxy's rules",
            0x03 => "network unreachable from the proxy",
            0x04 => "host unreachable from the proxy (or its name did not resolve there)",
            0x05 => "connection refused by the destination",
            0x06 => "TTL expired: the destination did not answer the proxy in time",
            0x07 => "command not supported by the proxy",
            0x08 => "address type not supported by the proxy",
            _ => "unassigned reply code",
        }
    }
}

impl std::fmt::Display for Socks5Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SOCKS5 reply {:#04x}: {}", self.0, self.message())
    }
}

/// A SOCKS4 reply code other than 0x5a "request granted".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Socks4Reply(pub u8);

impl Socks4Reply {
    pub fn errno(self) -> i32 {
        match self.0 {
            0x5b => libc::ECONNREFUSED,
            0x5c | 0x5d => libc::EACCES,
            _ => libc::EPROTO,
        }
    }

    pub fn message(self) -> &'static str {
        match self.0 {
            0x5a => "request granted",
            0x5b => "request rejected or failed",
            0x5c => "request rejected: the proxy cannot reach identd on the client",
            0x5d => "request rejected: identd reports a different user id than the client sent",
            _ => "unknown reply code",
        }
    }
}

impl std::fmt::Display for Socks4Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SOCKS4 reply {:#04x}: {}", self.0, self.message())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_socks5_reply_code_has_errno_and_message() {
        let want = [
            (0x01, libc::ECONNREFUSED),
            (0x02, libc::EACCES),
            (0x03, libc::ENETUNREACH),
            (0x04, libc::EHOSTUNREACH),
            (0x05, libc::ECONNREFUSED),
            (0x06, libc::ETIMEDOUT),
            (0x07, libc::EOPNOTSUPP),
            (0x08, libc::EAFNOSUPPORT),
            (0x09, libc::EPROTO),
            (0xff, libc::EPROTO),
        ];
        for (code, errno) in want {
            let e = SocksError::Socks5(Socks5Reply(code));
            assert_eq!(e.errno(), errno, "code {code:#x}");
            assert!(e.to_string().starts_with(&format!("SOCKS5 reply {code:#04x}: ")));
            assert!(e.is_refusal());
        }
        assert_eq!(Socks5Reply(0).message(), "succeeded");
    }

    #[test]
    fn every_socks4_reply_code_has_errno_and_message() {
        assert_eq!(Socks4Reply(0x5b).errno(), libc::ECONNREFUSED);
        assert_eq!(Socks4Reply(0x5c).errno(), libc::EACCES);
        assert_eq!(Socks4Reply(0x5d).errno(), libc::EACCES);
        assert!(Socks4Reply(0x5c).message().contains("identd"));
        assert!(Socks4Reply(0x5d).message().contains("identd"));
        assert_eq!(Socks4Reply(0x42).errno(), libc::EPROTO);
    }

    #[test]
    fn io_errors_keep_their_errno() {
        let e = SocksError::from(io::Error::from_raw_os_error(libc::ECONNREFUSED));
        assert_eq!(e.errno(), libc::ECONNREFUSED);
        assert_eq!(SocksError::Timeout.errno(), libc::ETIMEDOUT);
        assert_eq!(SocksError::Closed.errno(), libc::ECONNRESET);
    }
}
