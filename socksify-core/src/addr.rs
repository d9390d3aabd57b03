//! Where a SOCKS request points: an IP socket address or a host name with a port.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use crate::error::SocksError;

/// The longest host name SOCKS5 can carry (its length travels in one byte).
pub const MAX_DOMAIN_LEN: usize = 255;

/// The destination of a SOCKS request, or an address a proxy reports back.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum TargetAddr {
    Ip(SocketAddr),
    Domain(String, u16),
}

impl TargetAddr {
    /// A name target, checked to fit the protocol: 1 to 255 bytes and no NUL.
    pub fn domain(name: &str, port: u16) -> Result<Self, SocksError> {
        validate_domain(name)?;
        Ok(TargetAddr::Domain(name.to_owned(), port))
    }

    pub fn port(&self) -> u16 {
        match self {
            TargetAddr::Ip(sa) => sa.port(),
            TargetAddr::Domain(_, port) => *port,
        }
    }

    /// The IP socket address, if this is one.
    pub fn ip(&self) -> Option<SocketAddr> {
        match self {
            TargetAddr::Ip(sa) => Some(*sa),
            TargetAddr::Domain(..) => None,
        }
    }

    /// IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) become plain IPv4, so that a SOCKS4
    /// proxy can carry them and a SOCKS5 proxy sees the address the program meant.
    pub fn unmapped(self) -> Self {
        match self {
            TargetAddr::Ip(SocketAddr::V6(v6)) => match v6.ip().to_ipv4_mapped() {
                Some(v4) => TargetAddr::Ip(SocketAddr::new(IpAddr::V4(v4), v6.port())),
                None => self,
            },
            other => other,
        }
    }
}

impl From<SocketAddr> for TargetAddr {
    fn from(sa: SocketAddr) -> Self {
        TargetAddr::Ip(sa)
    }
}

impl fmt::Display for TargetAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TargetAddr::Ip(sa) => write!(f, "{sa}"),
            TargetAddr::Domain(name, port) => write!(f, "{name}:{port}"),
        }
    }
}

pub(crate) fn validate_domain(name: &str) -> Result<(), SocksError> {
    if name.is_empty() || name.len() > MAX_DOMAIN_LEN {
        return Err(SocksError::BadDomain(name.len()));
    }
    if name.as_bytes().contains(&0) {
        return Err(SocksError::BadDomain(name.len()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapped_ipv6_becomes_ipv4() {
        let t = TargetAddr::Ip("[::ffff:192.0.2.7]:80".parse().unwrap()).unmapped();
        assert_eq!(t, TargetAddr::Ip("192.0.2.7:80".parse().unwrap()));
        let t = TargetAddr::Ip("[2001:db8::1]:80".parse().unwrap()).unmapped();
        assert_eq!(t, TargetAddr::Ip("[2001:db8::1]:80".parse().unwrap()));
    }

    #[test]
    fn domain_length_is_checked() {
        assert!(TargetAddr::domain("", 1).is_err());
        assert!(TargetAddr::domain(&"a".repeat(255), 1).is_ok());
        assert!(TargetAddr::domain(&"a".repeat(256), 1).is_err());
        assert!(TargetAddr::domain("a\0b", 1).is_err());
    }
}
