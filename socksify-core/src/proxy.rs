//! One proxy of a chain: what it speaks, where it is, how to log in, parsed from a URL such as
//! `socks5://user:pass@[2001:db8::1]:1080`.

use std::fmt;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use percent_encoding::percent_decode_str;

use crate::addr::TargetAddr;
use crate::error::SocksError;
use crate::wire::Peek;
use crate::{http, v4, v5};

/// A SOCKS command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    Connect = 1,
    Bind = 2,
    UdpAssociate = 3,
}

/// The protocol a proxy speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyKind {
    Socks4,
    Socks4a,
    /// `socks5://` and `socks5h://` alike: names always go to the proxy.
    Socks5,
    /// An HTTP proxy that tunnels with CONNECT.
    Http,
}

/// A username and password (SOCKS5) or a user id (SOCKS4, where the password is empty).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub user: String,
    pub pass: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Credentials {{ user: {:?}, pass: <redacted> }}", self.user)
    }
}

/// Where a proxy is: an address, or a name that the previous hop resolves (or, for the first
/// hop, the local resolver).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Host {
    Ip(IpAddr),
    Name(String),
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
            Host::Ip(ip) => write!(f, "{ip}"),
            Host::Name(name) => f.write_str(name),
        }
    }
}

/// A proxy, parsed from its URL. `Display` never shows the password.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proxy {
    pub kind: ProxyKind,
    pub scheme: &'static str,
    pub host: Host,
    pub port: u16,
    pub creds: Option<Credentials>,
    /// GSSAPI's service name (`socks5+gssapi://`): `rcmd` unless `gssapi_service` says otherwise.
    pub gssapi: Option<String>,
}

/// The service Dante's server (and curl) name a SOCKS proxy's Kerberos principal with.
pub const DEFAULT_GSSAPI_SERVICE: &str = "rcmd";

pub const DEFAULT_PORT: u16 = 1080;
pub const DEFAULT_HTTP_PORT: u16 = 8080;

/// Why a proxy URL was refused; the message never contains the password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UrlError(pub String);

impl FromStr for Proxy {
    type Err = UrlError;

    fn from_str(url: &str) -> Result<Self, UrlError> {
        let err = |what: &str| UrlError(format!("proxy URL `{}`: {what}", redact_url(url)));
        if url.chars().any(char::is_control) {
            return Err(err(
                "contains a control character (a newline, tab or escape); write it percent-encoded",
            ));
        }
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| err("expected scheme://host:port, e.g. socks5://127.0.0.1:1080"))?;
        let (kind, scheme) = match scheme.to_ascii_lowercase().as_str() {
            "socks4" => (ProxyKind::Socks4, "socks4"),
            "socks4a" => (ProxyKind::Socks4a, "socks4a"),
            "socks5" => (ProxyKind::Socks5, "socks5"),
            "socks5h" => (ProxyKind::Socks5, "socks5h"),
            "socks5+gssapi" => (ProxyKind::Socks5, "socks5+gssapi"),
            "socks5h+gssapi" => (ProxyKind::Socks5, "socks5h+gssapi"),
            "http" => (ProxyKind::Http, "http"),
            s if s.ends_with("+gssapi") => {
                return Err(err("GSSAPI is a SOCKS5 method: use socks5+gssapi:// or socks5h+gssapi://"))
            }
            _ => return Err(err(
                "unknown scheme; use socks4, socks4a, socks5, socks5h, http, or socks5+gssapi for Kerberos",
            )),
        };
        let gssapi = scheme.ends_with("+gssapi").then(|| DEFAULT_GSSAPI_SERVICE.to_owned());
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let (userinfo, hostport) = match rest.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, rest),
        };
        let creds = match userinfo {
            None => None,
            Some(info) => {
                let (user, pass) = info.split_once(':').unwrap_or((info, ""));
                let decode = |s: &str, what: &str| {
                    percent_decode_str(s)
                        .decode_utf8()
                        .map(|c| c.into_owned())
                        .map_err(|_| err(&format!("the {what} is not valid UTF-8 once percent-decoded")))
                };
                let (user, pass) = (decode(user, "user name")?, decode(pass, "password")?);
                if user.is_empty() {
                    return Err(err("empty user name before `@`"));
                }
                if user.len() > 255 || pass.len() > 255 {
                    return Err(err("user name and password must be at most 255 bytes each"));
                }
                if user.contains('\0') {
                    return Err(err("the user name contains NUL"));
                }
                if matches!(kind, ProxyKind::Socks4 | ProxyKind::Socks4a) && !pass.is_empty() {
                    return Err(err("SOCKS4 has a user id but no password; drop `:password`"));
                }
                Some(Credentials { user, pass })
            }
        };
        if hostport.contains('/') || hostport.contains('?') || hostport.contains('#') {
            return Err(err("a proxy URL has no path, query or fragment"));
        }
        let (host, port) = split_host_port(hostport).map_err(&err)?;
        let port = match port {
            None if kind == ProxyKind::Http => DEFAULT_HTTP_PORT,
            None => DEFAULT_PORT,
            Some(p) => match p.parse::<u16>() {
                Ok(n) if n != 0 && p.bytes().all(|b| b.is_ascii_digit()) => n,
                _ => return Err(err("the port must be a number from 1 to 65535")),
            },
        };
        Ok(Proxy { kind, scheme, host, port, creds, gssapi })
    }
}

pub fn split_host_port(s: &str) -> Result<(Host, Option<&str>), &'static str> {
    if let Some(rest) = s.strip_prefix('[') {
        let (ip, after) = rest.split_once(']').ok_or("missing `]` after an IPv6 address")?;
        let ip: std::net::Ipv6Addr = ip.parse().map_err(|_| "bad IPv6 address in brackets")?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or("expected `:port` after `]`")?),
        };
        return Ok((Host::Ip(IpAddr::V6(ip)), port));
    }
    let (host, port) = match s.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (s, None),
    };
    if host.contains(':') {
        return Err("IPv6 addresses go in brackets: socks5://[::1]:1080");
    }
    if host.is_empty() {
        return Err("missing host");
    }
    if let Ok(ip) = host.parse::<std::net::Ipv4Addr>() {
        return Ok((Host::Ip(IpAddr::V4(ip)), port));
    }
    let valid = host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    if !valid {
        return Err("the host is neither an IP address nor a valid host name");
    }
    Ok((Host::Name(host.to_ascii_lowercase()), port))
}

/// A destination written `HOST:PORT` (`[IPv6]:PORT` for IPv6), as `socksify check --target`
/// takes it: the same host rules as a proxy URL's.
pub fn parse_target(s: &str) -> Result<TargetAddr, String> {
    let (host, port) = split_host_port(s).map_err(str::to_owned)?;
    let port = match port.map(str::parse::<u16>) {
        Some(Ok(p)) if p != 0 => p,
        Some(_) => return Err("the port must be a number from 1 to 65535".into()),
        None => return Err("expected HOST:PORT".into()),
    };
    match host {
        Host::Ip(ip) => Ok(TargetAddr::Ip(SocketAddr::new(ip, port))),
        Host::Name(name) => TargetAddr::domain(&name, port).map_err(|e| e.to_string()),
    }
}

/// The URL with any password replaced by `***` — also where the URL is malformed (`user:pass`
/// with no host reads as a host and a port that is not a number) — and control characters
/// escaped, for messages.
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, url),
    };
    let redacted = match rest.rsplit_once('@') {
        Some((info, host)) => match info.split_once(':') {
            Some((user, _)) => format!("{user}:***@{host}"),
            None => rest.to_owned(),
        },
        None => match rest.rsplit_once(':') {
            Some((head, tail))
                if !tail.trim_end_matches('/').bytes().all(|b| b.is_ascii_digit())
                    && !head.ends_with(']') =>
            {
                format!("{head}:***")
            }
            _ => rest.to_owned(),
        },
    };
    let whole = match scheme {
        Some(scheme) => format!("{scheme}://{redacted}"),
        None => redacted,
    };
    whole
        .chars()
        .flat_map(|c| if c.is_control() { c.escape_default().collect::<Vec<_>>() } else { vec![c] })
        .collect()
}

impl fmt::Display for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://", self.scheme)?;
        if let Some(c) = &self.creds {
            write!(f, "{}@", c.user)?;
        }
        write!(f, "{}:{}", self.host, self.port)
    }
}

impl Proxy {
    /// The URL, password included and percent-encoded: for writing configuration files only.
    pub fn to_url(&self) -> String {
        use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
        let mut url = format!("{}://", self.scheme);
        if let Some(c) = &self.creds {
            url.push_str(&utf8_percent_encode(&c.user, NON_ALPHANUMERIC).to_string());
            if !c.pass.is_empty() {
                url.push(':');
                url.push_str(&utf8_percent_encode(&c.pass, NON_ALPHANUMERIC).to_string());
            }
            url.push('@');
        }
        url.push_str(&format!("{}:{}", self.host, self.port));
        url
    }

    /// How the previous hop of a chain names this proxy: an address, or a name for it to resolve.
    pub fn target(&self) -> TargetAddr {
        match &self.host {
            Host::Ip(ip) => TargetAddr::Ip(SocketAddr::new(*ip, self.port)),
            Host::Name(name) => TargetAddr::Domain(name.clone(), self.port),
        }
    }

    /// Runs one handshake on a stream already connected to this proxy: the greeting (and
    /// authentication) where the protocol has one, then `cmd` for `target`. Returns the address
    /// the proxy reports (BND.ADDR:BND.PORT).
    pub fn request<S: Read + Write + Peek>(
        &self,
        stream: &mut S,
        cmd: Command,
        target: &TargetAddr,
    ) -> Result<TargetAddr, SocksError> {
        match self.kind {
            ProxyKind::Http if cmd == Command::Connect => http::connect(stream, target, self.creds.as_ref()),
            ProxyKind::Http => {
                Err(SocksError::Unsupported("an HTTP proxy can only CONNECT (no BIND, no UDP)"))
            }
            ProxyKind::Socks5 => {
                self.negotiate(stream)?;
                v5::request(stream, cmd, target)
            }
            ProxyKind::Socks4 | ProxyKind::Socks4a => {
                let user = self.creds.as_ref().map_or("", |c| c.user.as_str());
                v4::request(stream, cmd, target, user, self.kind == ProxyKind::Socks4a)
            }
        }
    }

    /// True when this hop's whole handshake can go in one write (`request_pipelined`): SOCKS5
    /// with no authentication or a username and password (GSSAPI's exchange depends on what
    /// the proxy answers). SOCKS4, SOCKS4a and HTTP CONNECT send one message anyway.
    pub fn can_pipeline(&self) -> bool {
        self.kind == ProxyKind::Socks5 && self.gssapi.is_none()
    }

    /// `request` with the greeting, authentication and request in one write (see
    /// `v5::request_pipelined`; `probe` while the hop is not known to take it). For a hop that
    /// `can_pipeline`.
    pub fn request_pipelined<S: Read + Write + Peek>(
        &self,
        stream: &mut S,
        cmd: Command,
        target: &TargetAddr,
        probe: bool,
    ) -> Result<TargetAddr, SocksError> {
        debug_assert!(self.can_pipeline());
        v5::request_pipelined(stream, self.creds.as_ref(), cmd, target, probe)
    }

    /// The SOCKS5 greeting and authentication alone; returns the method the proxy chose.
    pub fn negotiate<S: Read + Write>(&self, stream: &mut S) -> Result<u8, SocksError> {
        let Some(principal) = self.gssapi_principal() else {
            return v5::negotiate_with(stream, self.creds.as_ref(), None);
        };
        let mut make = || -> Result<Box<dyn crate::gssapi::Mechanism>, SocksError> {
            Ok(Box::new(crate::krb5::Context::new(&principal)?))
        };
        v5::negotiate_with(stream, self.creds.as_ref(), Some(&mut make))
    }

    /// The principal a GSSAPI hop is asked as: `service@host`, or the service as written when
    /// it is a principal (`rcmd/proxy.example`).
    pub fn gssapi_principal(&self) -> Option<String> {
        let service = self.gssapi.as_ref()?;
        if service.contains('/') {
            return Some(service.clone());
        }
        Some(match &self.host {
            Host::Ip(ip) => format!("{service}@{ip}"),
            Host::Name(name) => format!("{service}@{name}"),
        })
    }

    /// Reads the second reply of a BIND: the address of the peer that connected.
    pub fn read_bind_reply<S: Read>(&self, stream: &mut S) -> Result<TargetAddr, SocksError> {
        match self.kind {
            ProxyKind::Socks5 => v5::read_reply(stream),
            ProxyKind::Socks4 | ProxyKind::Socks4a => v4::read_reply(stream),
            ProxyKind::Http => Err(SocksError::Unsupported("an HTTP proxy has no BIND")),
        }
    }

    /// True when this proxy can be asked to reach a host by name.
    pub fn resolves_names(&self) -> bool {
        self.kind != ProxyKind::Socks4
    }
}

/// A reply's BND.ADDR of 0.0.0.0 or :: means "the address you reached me at": put the proxy's
/// own address in its place (UDP relays and SOCKS4 BIND replies do this).
pub fn fill_unspecified(bound: TargetAddr, proxy: SocketAddr) -> TargetAddr {
    match bound {
        TargetAddr::Ip(sa) if sa.ip().is_unspecified() => {
            let ip = match proxy.ip() {
                IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
                v4 => v4,
            };
            TargetAddr::Ip(SocketAddr::new(ip, sa.port()))
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn targets_are_host_and_port() {
        assert_eq!(parse_target("10.0.0.1:80"), Ok(TargetAddr::Ip("10.0.0.1:80".parse().unwrap())));
        assert_eq!(parse_target("[fd00::1]:53"), Ok(TargetAddr::Ip("[fd00::1]:53".parse().unwrap())));
        assert_eq!(parse_target("Example.org:443"), Ok(TargetAddr::Domain("example.org".into(), 443)));
        assert_eq!(parse_target("example.org"), Err("expected HOST:PORT".into()));
        assert!(parse_target("example.org:0").is_err());
        assert!(parse_target("::1:80").is_err(), "IPv6 goes in brackets");
    }

    use super::*;

    fn parse(s: &str) -> Result<Proxy, UrlError> {
        s.parse()
    }

    #[test]
    fn parses_each_scheme() {
        let p = parse("socks5://127.0.0.1:1080").unwrap();
        assert_eq!(
            (p.kind, p.host, p.port, p.creds),
            (ProxyKind::Socks5, Host::Ip("127.0.0.1".parse().unwrap()), 1080, None)
        );
        assert_eq!(parse("socks5h://h:1").unwrap().kind, ProxyKind::Socks5);
        assert_eq!(parse("socks4://h:1").unwrap().kind, ProxyKind::Socks4);
        assert_eq!(parse("SOCKS4A://h:1").unwrap().kind, ProxyKind::Socks4a);
        assert_eq!(parse("socks5://proxy.example").unwrap().port, 1080);
        let h = parse("http://u:p%40ss@[::1]").unwrap();
        assert_eq!((h.kind, h.port, h.creds.unwrap().pass.as_str()), (ProxyKind::Http, 8080, "p@ss"));
    }

    #[test]
    fn credentials_are_percent_decoded() {
        let p = parse("socks5://us%40er:p%3Ass%40w@[2001:db8::1]:9050/").unwrap();
        let c = p.creds.clone().unwrap();
        assert_eq!((c.user.as_str(), c.pass.as_str()), ("us@er", "p:ss@w"));
        assert_eq!(p.host, Host::Ip("2001:db8::1".parse().unwrap()));
        assert_eq!(p.to_string(), "socks5://us@er@[2001:db8::1]:9050");
        assert!(!format!("{p:?}").contains("p:ss@w"));
    }

    #[test]
    fn no_error_shows_a_password_or_a_control_character() {
        for url in [
            "socks5://alice:S3cr3t",
            "socks5://alice:S3cr3t@",
            "alice:S3cr3t@host:1080",
            "socks5://alice:S3cr3t@host:99999",
            "socks5://alice:S3cr3t@bad host:1080",
            "socks5://alice:S3cr3t@host:1080\nsocks5://evil:1",
            "socks5://alice:S3cr3t@host:1080\x1b[2J",
        ] {
            let e = url.parse::<Proxy>().unwrap_err().0;
            assert!(!e.contains("S3cr3t"), "{e}");
            assert!(!e.chars().any(char::is_control), "{e}");
        }
        let e = "socks5://h:1080\n".parse::<Proxy>().unwrap_err().0;
        assert!(e.contains("control character"), "{e}");
        assert_eq!(redact_url("socks5://[::1]:1080"), "socks5://[::1]:1080");
        assert_eq!(redact_url("socks5://host:1080/"), "socks5://host:1080/");
    }

    #[test]
    fn bad_urls_say_what_is_wrong_without_the_password() {
        for (url, needle) in [
            ("127.0.0.1:1080", "scheme://"),
            ("ftp://h:1", "unknown scheme"),
            ("socks5://::1:1080", "brackets"),
            ("socks5://[::1:1080", "`]`"),
            ("socks5://h:0", "port"),
            ("socks5://h:70000", "port"),
            ("socks5://h:x", "port"),
            ("socks5://h:+80", "port"),
            ("socks5://:1080", "missing host"),
            ("socks5://bad_host!:1", "host"),
            ("socks5://h:1/path", "path"),
            ("socks4://u:secret@h:1", "no password"),
            ("socks5://:secret@h:1", "empty user"),
        ] {
            let e = parse(url).unwrap_err().to_string();
            assert!(e.contains(needle), "{url}: {e}");
            assert!(!e.contains("secret"), "{url}: {e}");
        }
    }

    #[test]
    fn unspecified_bound_address_becomes_the_proxys() {
        let proxy: SocketAddr = "192.0.2.5:1080".parse().unwrap();
        let b = fill_unspecified(TargetAddr::Ip("0.0.0.0:4000".parse().unwrap()), proxy);
        assert_eq!(b, TargetAddr::Ip("192.0.2.5:4000".parse().unwrap()));
        let b = fill_unspecified(TargetAddr::Ip("[::]:4000".parse().unwrap()), "[::1]:1080".parse().unwrap());
        assert_eq!(b, TargetAddr::Ip("[::1]:4000".parse().unwrap()));
        let b = fill_unspecified(
            TargetAddr::Ip("[::]:4000".parse().unwrap()),
            "[::ffff:10.1.1.1]:1080".parse().unwrap(),
        );
        assert_eq!(b, TargetAddr::Ip("10.1.1.1:4000".parse().unwrap()));
        let keep = TargetAddr::Ip("198.51.100.1:4000".parse().unwrap());
        assert_eq!(fill_unspecified(keep.clone(), proxy), keep);
    }
}
