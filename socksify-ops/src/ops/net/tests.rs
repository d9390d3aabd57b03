use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};

use socksify_core::router::Resolution;

use super::*;
use crate::ops::testing::{state, ONE_PROXY};

#[test]
fn connections_go_through_the_chain_unless_a_rule_or_loopback_says_otherwise() {
    let st = state(&format!("direct = [\"10.0.0.0/8\"]\n{ONE_PROXY}"));
    let ip: SocketAddr = "192.0.2.1:80".parse().unwrap();
    assert_eq!(plan(&st, ip), Plan::Chain(TargetAddr::Ip(ip), 0));
    assert_eq!(plan(&st, "10.1.2.3:80".parse().unwrap()), Plan::AsIs, "a direct rule");
    let st = state(ONE_PROXY);
    assert_eq!(plan(&st, "127.0.0.1:80".parse().unwrap()), Plan::AsIs, "loopback stays local");
    assert_eq!(
        plan(&st, "[::ffff:192.0.2.1]:80".parse().unwrap()),
        Plan::Chain(TargetAddr::Ip(ip), 0),
        "v4-mapped is IPv4"
    );
}

#[test]
fn a_fake_address_goes_by_its_name_and_an_unknown_one_is_refused() {
    let st = state(ONE_PROXY);
    let Resolution::Fake { v4, .. } = st.router.resolve("www.example.org") else { panic!("a fake address") };
    assert_eq!(
        plan(&st, SocketAddr::new(v4, 443)),
        Plan::Chain(TargetAddr::Domain("www.example.org".into(), 443), 0)
    );
    let unknown = SocketAddr::new(std::net::Ipv4Addr::new(240, 255, 255, 254).into(), 1);
    if st.router.is_fake(unknown.ip()) {
        assert_eq!(plan(&st, unknown), Plan::Refuse(libc::EHOSTUNREACH));
    }
}

#[test]
fn under_the_guard_queries_to_the_system_resolver_are_left_to_its_stub() {
    let st = state(ONE_PROXY).guarded_by(vec!["192.0.2.53".parse().unwrap()]);
    assert_eq!(plan(&st, "192.0.2.53:53".parse().unwrap()), Plan::AsIs);
    assert_eq!(
        plan(&st, "192.0.2.53:80".parse().unwrap()),
        Plan::Chain(TargetAddr::Ip("192.0.2.53:80".parse().unwrap()), 0)
    );
    let unguarded = state(ONE_PROXY);
    assert!(matches!(plan(&unguarded, "192.0.2.53:53".parse().unwrap()), Plan::Chain(..)));
}

/// A one-shot SOCKS5 server on loopback: no authentication, CONNECT answered with `bound`,
/// then an echo of one line.
fn socks5_once() -> (SocketAddr, std::thread::JoinHandle<Vec<u8>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let at = l.local_addr().unwrap();
    let h = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let mut greet = [0u8; 3];
        s.read_exact(&mut greet).unwrap();
        s.write_all(&[5, 0]).unwrap();
        let mut req = [0u8; 10];
        s.read_exact(&mut req).unwrap();
        s.write_all(&[5, 0, 0, 1, 192, 0, 2, 99, 0x12, 0x34]).unwrap();
        let mut line = [0u8; 5];
        s.read_exact(&mut line).unwrap();
        s.write_all(&line).unwrap();
        req.to_vec()
    });
    (at, h)
}

#[test]
fn a_chain_is_built_on_the_programs_socket_and_remembered_for_getpeername() {
    let (proxy, server) = socks5_once();
    let st: &State = Box::leak(Box::new(state(&format!("[[proxy]]\nurl = \"socks5://{proxy}\"\n"))));
    // SAFETY: a new socket for the test.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
    let dest: SocketAddr = "192.0.2.1:80".parse().unwrap();
    assert_eq!(chain(st, fd, dest, TargetAddr::Ip(dest), 0), Flow::Done(0));
    assert_eq!(
        table::entry(fd, |e| e.peer()).flatten(),
        Some(dest),
        "getpeername answers what the program asked"
    );
    assert_eq!(
        table::entry(fd, |e| e.local).flatten(),
        Some("192.0.2.99:4660".parse().unwrap()),
        "getsockname: the proxy's side"
    );
    // The socket is the program's own, now through the proxy.
    assert_eq!(sock::send(fd, b"ping\n", 0), 5);
    let mut back = [0u8; 5];
    // SAFETY: read into a local buffer.
    assert_eq!(unsafe { libc::read(fd, back.as_mut_ptr().cast(), 5) }, 5);
    assert_eq!(&back, b"ping\n");
    let req = server.join().unwrap();
    assert_eq!(&req[..4], &[5, 1, 0, 1], "CONNECT by IPv4");
    assert_eq!(&req[4..], &[192, 0, 2, 1, 0, 80]);
    crate::ops::testing::close(fd);
}

#[test]
fn a_proxy_that_is_not_there_fails_the_connect_and_leaves_the_socket_unconnected() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = l.local_addr().unwrap();
    drop(l);
    let st: &State = Box::leak(Box::new(state(&format!("[[proxy]]\nurl = \"socks5://{dead}\"\n"))));
    // SAFETY: a new socket for the test.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
    let dest: SocketAddr = "192.0.2.1:80".parse().unwrap();
    assert_eq!(chain(st, fd, dest, TargetAddr::Ip(dest), 0), Flow::Fail(libc::ECONNREFUSED));
    assert_eq!(sock::peer_addr(fd), None);
    assert!(!table::known(fd));
    sock::close(fd);
}
