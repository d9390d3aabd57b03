//! Socket addresses as a program wrote them (raw `struct sockaddr` bytes), read the way the
//! kernel reads them: which destination, if any, a `connect` or `sendto` would reach. The
//! kernel guard reads every trapped address with these; the library, the datagram addresses
//! it cannot parse otherwise (AF_UNSPEC).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};

/// The largest socket address the kernel accepts (sizeof(struct sockaddr_storage)).
pub const MAX_LEN: usize = 128;
const SIN_LEN: usize = 16;
/// The size of a sockaddr_in6 without sin6_scope_id (RFC 2133), which the kernel accepts.
const SIN6_LEN_RFC2133: usize = 24;

/// The pathname inside an AF_UNIX address, if it names one (not abstract, not unnamed).
pub fn unix_path(bytes: &[u8]) -> Option<&[u8]> {
    if bytes.len() <= 2 || u16::from_ne_bytes([bytes[0], bytes[1]]) != libc::AF_UNIX as u16 || bytes[2] == 0 {
        return None;
    }
    let path = &bytes[2..];
    Some(&path[..path.iter().position(|&b| b == 0).unwrap_or(path.len())])
}

/// An AF_UNIX address of a resolver daemon, which answers lookups with the system's resolver
/// for whoever asks: nscd, and systemd-resolved's varlink socket. Under remote DNS the guard
/// refuses connects to them (glibc then falls back to the hosts file and DNS, which the stub
/// answers), and the library leaves those connects to the guard.
pub fn resolver_daemon(bytes: &[u8]) -> bool {
    const DAEMONS: &[&[u8]] =
        &[b"/var/run/nscd/socket", b"/run/nscd/socket", b"/run/systemd/resolve/io.systemd.Resolve"];
    // The path as the kernel resolves it, as far as text goes: `//` and `/./` are `/`.
    let parts = |p: &[u8]| -> Vec<Vec<u8>> {
        p.split(|&b| b == b'/').filter(|c| !c.is_empty() && *c != b".").map(<[u8]>::to_vec).collect()
    };
    unix_path(bytes).is_some_and(|p| p.first() == Some(&b'/') && DAEMONS.iter().any(|d| parts(d) == parts(p)))
}

/// What a socket address means for a socket of `family` and `ty`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dest {
    /// The kernel would reach this address (IPv4-mapped addresses as IPv4).
    Inet(SocketAddr),
    /// AF_UNSPEC: dissolves a connection; reaches nothing.
    Unspec,
    /// The kernel refuses it (wrong family, too short): reaches nothing.
    Refused,
}

/// The destination `bytes` name for a socket of `family` (AF_INET/AF_INET6) and type `ty`.
pub fn destination(bytes: &[u8], family: libc::c_int, ty: libc::c_int) -> Dest {
    if bytes.len() < 2 {
        return Dest::Refused;
    }
    let sa_family = u16::from_ne_bytes([bytes[0], bytes[1]]) as libc::c_int;
    match (family, sa_family) {
        (_, libc::AF_UNSPEC) => Dest::Unspec,
        (libc::AF_INET, libc::AF_INET) if bytes.len() >= SIN_LEN => Dest::Inet(v4(bytes)),
        (libc::AF_INET6, libc::AF_INET6) if bytes.len() >= SIN6_LEN_RFC2133 => {
            Dest::Inet(unmapped(v6(bytes)))
        }
        // An IPv6 datagram socket takes an IPv4 address (ip6_datagram_connect); a stream one
        // does not (tcp_v6_connect: EAFNOSUPPORT).
        (libc::AF_INET6, libc::AF_INET) if ty == libc::SOCK_DGRAM && bytes.len() >= SIN_LEN => {
            Dest::Inet(v4(bytes))
        }
        _ => Dest::Refused,
    }
}

/// Where a datagram sent with address `bytes` goes, for a datagram socket of `family` — the
/// rules of udp_sendmsg/udpv6_sendmsg, which differ from connect's: on an IPv4 socket an
/// AF_UNSPEC address is used as an IPv4 one; on an IPv6 socket it means "no address".
pub fn send_destination(bytes: &[u8], family: libc::c_int) -> SendDest {
    if bytes.len() < 2 {
        return SendDest::Refused;
    }
    let sa_family = u16::from_ne_bytes([bytes[0], bytes[1]]) as libc::c_int;
    let v4_ok = |b: &[u8]| {
        if b.len() < SIN_LEN || u16::from_be_bytes([b[2], b[3]]) == 0 {
            SendDest::Refused // EINVAL: too short, or port 0
        } else {
            SendDest::Inet(v4(b))
        }
    };
    match (family, sa_family) {
        (libc::AF_INET, libc::AF_INET | libc::AF_UNSPEC) => v4_ok(bytes),
        (libc::AF_INET6, libc::AF_INET) => v4_ok(bytes),
        (libc::AF_INET6, libc::AF_UNSPEC) => SendDest::Peer,
        (libc::AF_INET6, libc::AF_INET6) if bytes.len() >= SIN6_LEN_RFC2133 => {
            if u16::from_be_bytes([bytes[2], bytes[3]]) == 0 {
                SendDest::Refused
            } else {
                SendDest::Inet(unmapped(v6(bytes)))
            }
        }
        _ => SendDest::Refused,
    }
}

/// See `send_destination`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendDest {
    Inet(SocketAddr),
    /// No address after all: the connected peer.
    Peer,
    /// The kernel refuses it (EINVAL, EAFNOSUPPORT): nothing is sent.
    Refused,
}

fn v4(b: &[u8]) -> SocketAddr {
    let port = u16::from_be_bytes([b[2], b[3]]);
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(b[4], b[5], b[6], b[7])), port)
}

fn v6(b: &[u8]) -> SocketAddr {
    let port = u16::from_be_bytes([b[2], b[3]]);
    let flow = u32::from_be_bytes([b[4], b[5], b[6], b[7]]);
    let mut octets = [0u8; 16];
    octets.copy_from_slice(&b[8..24]);
    let scope = if b.len() >= 28 { u32::from_ne_bytes([b[24], b[25], b[26], b[27]]) } else { 0 };
    SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::from(octets), port, flow, scope))
}

/// IPv4-mapped IPv6 addresses are IPv4 ones.
pub fn unmapped(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), v6.port()),
            None => addr,
        },
        v4 => v4,
    }
}

/// `addr` as a socket of `family` writes it: IPv4 as IPv4-mapped on an IPv6 socket.
pub fn for_family(addr: SocketAddr, family: libc::c_int) -> SocketAddr {
    match (addr, family) {
        (SocketAddr::V4(v4), libc::AF_INET6) => {
            SocketAddr::new(IpAddr::V6(v4.ip().to_ipv6_mapped()), v4.port())
        }
        (SocketAddr::V6(v6), libc::AF_INET) => unmapped(SocketAddr::V6(v6)),
        (a, _) => a,
    }
}

/// The bytes of a socket address (sockaddr_in or sockaddr_in6).
pub fn encode(addr: SocketAddr) -> Vec<u8> {
    let sa = socket2::SockAddr::from(addr);
    // SAFETY: the storage holds `len` initialised bytes.
    unsafe { std::slice::from_raw_parts(sa.as_ptr().cast::<u8>(), sa.len() as usize) }.to_vec()
}

/// A socket address from its bytes (AF_INET or AF_INET6), as the kernel wrote it.
pub fn decode(bytes: &[u8]) -> Option<SocketAddr> {
    if bytes.len() < 2 {
        return None;
    }
    match u16::from_ne_bytes([bytes[0], bytes[1]]) as libc::c_int {
        libc::AF_INET if bytes.len() >= SIN_LEN => Some(v4(bytes)),
        libc::AF_INET6 if bytes.len() >= SIN6_LEN_RFC2133 => Some(v6(bytes)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_paths_abstract_and_unnamed_addresses_and_resolver_daemons() {
        let mut a = (libc::AF_UNIX as u16).to_ne_bytes().to_vec();
        assert_eq!(unix_path(&a), None, "unnamed");
        a.extend_from_slice(b"\0abstract");
        assert_eq!(unix_path(&a), None);
        let mut p = (libc::AF_UNIX as u16).to_ne_bytes().to_vec();
        p.extend_from_slice(b"/run/x.sock\0junk");
        assert_eq!(unix_path(&p), Some(&b"/run/x.sock"[..]));
        assert!(!resolver_daemon(&p));
        let mut n = (libc::AF_UNIX as u16).to_ne_bytes().to_vec();
        n.extend_from_slice(b"/run/nscd/socket\0");
        assert!(resolver_daemon(&n));
        n[0] ^= 1;
        assert!(!resolver_daemon(&n), "not AF_UNIX");
        let mut odd = (libc::AF_UNIX as u16).to_ne_bytes().to_vec();
        odd.extend_from_slice(b"//run/./nscd//socket\0");
        assert!(resolver_daemon(&odd), "the same path spelt otherwise");
    }

    #[test]
    fn addresses_are_read_as_the_kernel_reads_them() {
        let a: SocketAddr = "192.0.2.1:80".parse().unwrap();
        let b = encode(a);
        assert_eq!(destination(&b, libc::AF_INET, libc::SOCK_STREAM), Dest::Inet(a));
        assert_eq!(destination(&b[..15], libc::AF_INET, libc::SOCK_STREAM), Dest::Refused, "too short");
        assert_eq!(destination(&b, libc::AF_INET6, libc::SOCK_STREAM), Dest::Refused, "EAFNOSUPPORT");
        assert_eq!(destination(&b, libc::AF_INET6, libc::SOCK_DGRAM), Dest::Inet(a), "UDP takes it");
        let mapped = encode("[::ffff:192.0.2.1]:80".parse().unwrap());
        assert_eq!(destination(&mapped, libc::AF_INET6, libc::SOCK_STREAM), Dest::Inet(a));
        assert_eq!(destination(&mapped[..24], libc::AF_INET6, libc::SOCK_STREAM), Dest::Inet(a));
        assert_eq!(destination(&mapped, libc::AF_INET, libc::SOCK_STREAM), Dest::Refused);
        let unspec = [0u8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(destination(&unspec, libc::AF_INET, libc::SOCK_STREAM), Dest::Unspec);
        assert_eq!(destination(&[1], libc::AF_INET, libc::SOCK_STREAM), Dest::Refused);
        let unix = [1u8, 0, b'/', b'x'];
        assert_eq!(destination(&unix, libc::AF_INET, libc::SOCK_STREAM), Dest::Refused);
    }

    #[test]
    fn datagram_destinations_follow_udp_sendmsg() {
        let a: SocketAddr = "192.0.2.1:7".parse().unwrap();
        let mut unspec = encode(a);
        unspec[0] = 0;
        unspec[1] = 0;
        assert_eq!(send_destination(&unspec, libc::AF_INET), SendDest::Inet(a), "AF_UNSPEC is IPv4 there");
        assert_eq!(send_destination(&unspec, libc::AF_INET6), SendDest::Peer, "and nothing on IPv6");
        assert_eq!(send_destination(&encode(a), libc::AF_INET6), SendDest::Inet(a));
        assert_eq!(send_destination(&encode(a)[..12], libc::AF_INET), SendDest::Refused);
        assert_eq!(
            send_destination(&encode("192.0.2.1:0".parse().unwrap()), libc::AF_INET),
            SendDest::Refused
        );
        let v6: SocketAddr = "[2001:db8::1]:53".parse().unwrap();
        assert_eq!(send_destination(&encode(v6), libc::AF_INET6), SendDest::Inet(v6));
        assert_eq!(send_destination(&encode(v6), libc::AF_INET), SendDest::Refused);
    }

    #[test]
    fn encode_and_decode_round_trip() {
        for s in ["10.0.0.1:53", "[fd00::1]:53", "[::ffff:10.0.0.1]:1"] {
            let a: SocketAddr = s.parse().unwrap();
            assert_eq!(decode(&encode(a)), Some(a));
        }
        assert_eq!(
            for_family("10.0.0.1:53".parse().unwrap(), libc::AF_INET6),
            "[::ffff:10.0.0.1]:53".parse().unwrap()
        );
    }
}
