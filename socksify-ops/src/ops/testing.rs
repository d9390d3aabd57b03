//! What the ops tests share: a state from a configuration text, loopback sockets.

use std::net::SocketAddr;

use libc::c_int;
use socksify_core::contract::LogLevel;
use socksify_core::Config;

use crate::runtime::log::Logger;
use crate::runtime::State;
use crate::sys::sock;

/// A state for `toml` (its proxies, rules and DNS mode), logging nothing.
pub fn state(toml: &str) -> State {
    let config = Config::parse(toml, "test").expect("a valid configuration");
    State::new(config, None, Logger::new(LogLevel::Quiet, None)).expect("a fake table")
}

pub const ONE_PROXY: &str = "[[proxy]]\nurl = \"socks5://192.0.2.10:1080\"\n";

/// A UDP socket on loopback (close-on-exec, as most programs' are), and its address.
pub fn udp_on_loopback() -> (c_int, SocketAddr) {
    // SAFETY: a new socket for the test.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    assert!(fd >= 0);
    sock::bind(fd, &"127.0.0.1:0".parse().unwrap()).unwrap();
    let a = sock::local_addr(fd).unwrap();
    (fd, a)
}

/// Receives one datagram on `fd` (waiting at most a second): its bytes and source.
pub fn recv_from(fd: c_int) -> (Vec<u8>, SocketAddr) {
    let mut pfd = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
    // SAFETY: poll on one local pollfd.
    assert_eq!(unsafe { libc::poll(&mut pfd, 1, 1000) }, 1, "a datagram arrives");
    let mut buf = vec![0u8; 70_000];
    // SAFETY: sockaddr_storage is plain old data.
    let mut st: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: recvfrom into local buffers.
    let n = unsafe {
        libc::recvfrom(
            fd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            0,
            (&mut st as *mut libc::sockaddr_storage).cast(),
            &mut len,
        )
    };
    assert!(n >= 0);
    buf.truncate(n as usize);
    (buf, crate::sys::addr::from_storage(&st, len).unwrap())
}

/// Sends `data` from `fd` to `to`.
pub fn send_to(fd: c_int, data: &[u8], to: SocketAddr) {
    let sa = socket2::SockAddr::from(to);
    // SAFETY: sendto from local buffers.
    let n = unsafe { libc::sendto(fd, data.as_ptr().cast(), data.len(), 0, sa.as_ptr(), sa.len()) };
    assert_eq!(n, data.len() as isize);
}

pub fn close(fd: c_int) {
    crate::table::closing(fd);
    sock::close(fd);
}
