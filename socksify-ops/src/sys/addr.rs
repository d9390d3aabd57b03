//! Socket addresses between C and Rust: the program's (read and written with checked copies)
//! and the kernel's (in the library's own buffers), read as the kernel reads them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use libc::{c_int, sockaddr, socklen_t};
use socket2::SockAddr;

use super::mem::{copy_in, copy_out, copy_out_two, copy_value};

const STORAGE: usize = std::mem::size_of::<libc::sockaddr_storage>();

/// An AF_INET or AF_INET6 address the program passed; `None` for other families, lengths the
/// kernel would refuse (shorter than a `sockaddr_in`, say), or memory that cannot be read.
pub fn read(addr: *const sockaddr, len: socklen_t) -> Option<SocketAddr> {
    if addr.is_null() {
        return None;
    }
    let len = (len as usize).min(STORAGE);
    let mut bytes = [0u8; STORAGE];
    if !copy_in(addr.cast(), &mut bytes[..len]) {
        return None;
    }
    socksify_core::sockaddr::decode(&bytes[..len])
}

/// The address family the program's address names (its first two bytes), if readable.
pub fn family_of(addr: *const sockaddr, len: socklen_t) -> Option<c_int> {
    if addr.is_null() || (len as usize) < std::mem::size_of::<libc::sa_family_t>() {
        return None;
    }
    copy_value(addr.cast::<libc::sa_family_t>()).map(|f| f as c_int)
}

/// The raw bytes of the program's address (at most `sockaddr_storage`'s size), if readable.
pub fn read_bytes(addr: *const sockaddr, len: socklen_t) -> Option<([u8; STORAGE], usize)> {
    let len = (len as usize).min(STORAGE);
    let mut bytes = [0u8; STORAGE];
    copy_in(addr.cast(), &mut bytes[..len]).then_some((bytes, len))
}

/// An address in the library's own memory (a buffer the kernel filled).
pub fn from_storage(st: &libc::sockaddr_storage, len: socklen_t) -> Option<SocketAddr> {
    let len = (len as usize).min(STORAGE);
    // SAFETY: the storage's bytes, of which the first `len` are the address.
    let bytes =
        unsafe { std::slice::from_raw_parts((st as *const libc::sockaddr_storage).cast::<u8>(), len) };
    socksify_core::sockaddr::decode(bytes)
}

/// `addr`'s bytes as the kernel writes them.
fn bytes_of(sa: &SockAddr) -> &[u8] {
    // SAFETY: the storage holds sa.len() initialised bytes.
    unsafe { std::slice::from_raw_parts(sa.as_ptr().cast::<u8>(), sa.len() as usize) }
}

/// Writes `addr` to the program's buffer of `*len` bytes, truncated as the kernel does, and
/// sets `*len` to the full size; `false` (EFAULT) when either pointer is unusable.
pub fn write(addr: &SocketAddr, out: *mut sockaddr, len: *mut socklen_t) -> bool {
    let Some(room) = copy_value(len as *const socklen_t) else { return false };
    let sa = SockAddr::from(*addr);
    let bytes = bytes_of(&sa);
    let full = sa.len().to_ne_bytes();
    copy_out_two((out.cast(), &bytes[..bytes.len().min(room as usize)]), (len.cast(), &full))
}

/// Writes `addr` to the program's buffer of `room` bytes, truncated as the kernel does;
/// returns the full size (for a length slot the caller keeps), `None` (EFAULT) when unusable.
pub fn write_into(addr: &SocketAddr, out: *mut sockaddr, room: socklen_t) -> Option<socklen_t> {
    let sa = SockAddr::from(*addr);
    let bytes = bytes_of(&sa);
    copy_out(out.cast(), &bytes[..bytes.len().min(room as usize)]).then_some(sa.len())
}

/// An address as a socket of `family` sees it (IPv4 as v4-mapped on an IPv6 socket); `None`
/// for an IPv6 address on an IPv4 socket.
pub fn in_family(addr: SocketAddr, family: c_int) -> Option<SocketAddr> {
    match (addr, family) {
        (SocketAddr::V4(v4), libc::AF_INET6) => {
            Some(SocketAddr::new(IpAddr::V6(v4.ip().to_ipv6_mapped()), v4.port()))
        }
        (SocketAddr::V6(v6), libc::AF_INET) => {
            v6.ip().to_ipv4_mapped().map(|ip| SocketAddr::new(IpAddr::V4(ip), v6.port()))
        }
        _ => Some(addr),
    }
}

/// IPv4-mapped IPv6 addresses as IPv4 ones.
pub fn unmapped(addr: SocketAddr) -> SocketAddr {
    socksify_core::sockaddr::unmapped(addr)
}

/// `addr` with the wildcard address of its family.
pub fn wildcard(mut addr: SocketAddr) -> SocketAddr {
    addr.set_ip(match addr {
        SocketAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        SocketAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    });
    addr
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c_addr(a: SocketAddr) -> (SockAddr, socklen_t) {
        let sa = SockAddr::from(a);
        let len = sa.len();
        (sa, len)
    }

    #[test]
    fn addresses_are_read_as_the_kernel_reads_them() {
        let a: SocketAddr = "192.0.2.1:80".parse().unwrap();
        let (sa, len) = c_addr(a);
        assert_eq!(read(sa.as_ptr(), len), Some(a));
        assert_eq!(read(sa.as_ptr(), 8), None, "shorter than a sockaddr_in: EINVAL");
        assert_eq!(read(std::ptr::null(), len), None);
        assert_eq!(read(8 as *const sockaddr, len), None, "unreadable: EFAULT");
        assert_eq!(family_of(sa.as_ptr(), len), Some(libc::AF_INET));
        let v6: SocketAddr = "[2001:db8::1]:53".parse().unwrap();
        let (sa6, len6) = c_addr(v6);
        assert_eq!(read(sa6.as_ptr(), len6), Some(v6));
        assert_eq!(read(sa6.as_ptr(), 24), Some(v6), "RFC 2133's sockaddr_in6 without scope");
    }

    #[test]
    fn addresses_are_written_truncated_with_the_full_length() {
        let a: SocketAddr = "10.0.0.1:53".parse().unwrap();
        // SAFETY: sockaddr_storage is plain old data.
        let mut st: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let mut len: socklen_t = 4;
        assert!(write(&a, (&mut st as *mut libc::sockaddr_storage).cast(), &mut len));
        assert_eq!(len, 16, "the full size, as the kernel reports it");
        assert_eq!(st.ss_family as c_int, libc::AF_INET);
        let mut len: socklen_t = 128;
        assert!(write(&a, (&mut st as *mut libc::sockaddr_storage).cast(), &mut len));
        assert_eq!(from_storage(&st, len), Some(a));
        assert!(!write(&a, 8 as *mut sockaddr, &mut len), "EFAULT");
        assert_eq!(in_family(a, libc::AF_INET6), Some("[::ffff:10.0.0.1]:53".parse().unwrap()));
        assert_eq!(in_family("[fd00::1]:1".parse().unwrap(), libc::AF_INET), None);
        assert_eq!(wildcard(a), "0.0.0.0:53".parse().unwrap());
    }
}
