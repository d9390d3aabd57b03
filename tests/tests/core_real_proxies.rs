//! The core client against real SOCKS servers from Debian packages (dante-server, microsocks,
//! OpenSSH's `ssh -D`), started on loopback by `scripts/test-servers start`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use socksify_core::proxy::fill_unspecified;
use socksify_core::sys::FdStream;
use socksify_core::{v5, ChainError, ChainMode, Command, SocksError, TargetAddr};
use socksify_tests::servers::*;
use socksify_tests::*;

fn ip(addr: &str) -> TargetAddr {
    TargetAddr::Ip(addr.parse().unwrap())
}

fn name(host: &str, port: u16) -> TargetAddr {
    TargetAddr::domain(host, port).unwrap()
}

/// CONNECT through a one-hop chain and check an echo round trip.
fn check_connect(url: &str, target: TargetAddr, ipv6_socket: bool) {
    let chain = chain(&[url], ChainMode::Strict, 1);
    let (mut stream, est) =
        connect_through(&chain, &target, ipv6_socket).unwrap_or_else(|e| panic!("{url} -> {target}: {e}"));
    assert_eq!(est.path, vec![0]);
    assert_echo(&mut stream, format!("hello via {url}").as_bytes());
}

#[test]
fn socks5_connect_through_dante_by_ipv4_ipv6_and_name() {
    let port = echo_server();
    check_connect(&format!("socks5://{DANTE}"), ip(&format!("127.0.0.1:{port}")), false);
    check_connect(&format!("socks5://{DANTE6}"), ip(&format!("[::1]:{port}")), true);
    check_connect(&format!("socks5h://{DANTE}"), name("localhost", port), false);
}

#[test]
fn socks4_connect_through_dante() {
    let port = echo_server();
    check_connect(&format!("socks4://{DANTE}"), ip(&format!("127.0.0.1:{port}")), false);
    check_connect(&format!("socks4://someone@{DANTE}"), ip(&format!("127.0.0.1:{port}")), false);
}

#[test]
fn socks4a_and_socks5_through_ssh_dynamic_forwarding() {
    let port = echo_server();
    check_connect(&format!("socks4a://{SSH_D}"), name("localhost", port), false);
    check_connect(&format!("socks4://{SSH_D}"), ip(&format!("127.0.0.1:{port}")), false);
    check_connect(&format!("socks5://{SSH_D}"), name("localhost", port), false);
    check_connect(&format!("socks5://{SSH_D6}"), ip(&format!("[::1]:{port}")), true);
}

#[test]
fn socks5_connect_through_microsocks_by_ipv4_ipv6_and_name() {
    let port = echo_server();
    check_connect(&format!("socks5://{MICROSOCKS}"), ip(&format!("127.0.0.1:{port}")), false);
    check_connect(&format!("socks5://{MICROSOCKS6}"), ip(&format!("[::1]:{port}")), true);
    check_connect(&format!("socks5://{MICROSOCKS}"), name("localhost", port), false);
    // An IPv6 socket reaches an IPv4 proxy through a v4-mapped address.
    check_connect(&format!("socks5://{MICROSOCKS}"), ip(&format!("127.0.0.1:{port}")), true);
}

#[test]
fn username_and_password_with_dante_and_microsocks() {
    let port = echo_server();
    let target = ip(&format!("127.0.0.1:{port}"));
    check_connect(&format!("socks5://{DANTE_USER}:{DANTE_PASS}@{DANTE_AUTH}"), target.clone(), false);
    check_connect(
        &format!("socks5://{MICROSOCKS_USER}:{MICROSOCKS_PASS}@{MICROSOCKS_AUTH}"),
        target.clone(),
        false,
    );
    // Credentials are offered but not used when the server needs none.
    check_connect(&format!("socks5://{DANTE_USER}:{DANTE_PASS}@{DANTE}"), target, false);
}

fn connect_err(url: &str, target: TargetAddr) -> ChainError {
    let chain = chain(&[url], ChainMode::Strict, 1);
    match connect_through(&chain, &target, false) {
        Ok(_) => panic!("{url} -> {target} should fail"),
        Err(e) => e,
    }
}

#[test]
fn wrong_password_is_rejected_with_eacces() {
    let target = ip("127.0.0.1:9");
    for url in [
        format!("socks5://{DANTE_USER}:wrong@{DANTE_AUTH}"),
        format!("socks5://{MICROSOCKS_USER}:wrong@{MICROSOCKS_AUTH}"),
    ] {
        let e = connect_err(&url, target.clone());
        assert!(matches!(e, ChainError::Hop { source: SocksError::AuthRejected(_), .. }), "{url}: {e}");
        assert_eq!(e.errno(), libc::EACCES);
        assert!(!e.to_string().contains("wrong"), "the password never shows: {e}");
    }
}

#[test]
fn no_credentials_for_an_auth_only_server_is_a_clear_error() {
    for url in [format!("socks5://{DANTE_AUTH}"), format!("socks5://{MICROSOCKS_AUTH}")] {
        let e = connect_err(&url, ip("127.0.0.1:9"));
        assert!(
            matches!(e, ChainError::Hop { source: SocksError::NoAcceptableMethods { .. }, .. }),
            "{url}: {e}"
        );
        assert!(e.to_string().contains("username and password"), "{e}");
        assert_eq!(e.errno(), libc::EACCES);
    }
}

#[test]
fn a_refused_destination_maps_to_econnrefused() {
    let target = ip(&format!("127.0.0.1:{}", closed_port()));
    let e = connect_err(&format!("socks5://{DANTE}"), target.clone());
    assert_eq!(e.errno(), libc::ECONNREFUSED, "{e}");
    assert!(e.to_string().starts_with("hop 1 (socks5://127.0.0.1:1080): could not reach 127.0.0.1:"), "{e}");
    let e = connect_err(&format!("socks4://{DANTE}"), target);
    assert_eq!(e.errno(), libc::ECONNREFUSED, "{e}");
}

#[test]
fn a_dead_proxy_fails_fast_with_econnrefused() {
    let url = format!("socks5://127.0.0.1:{}", closed_port());
    let chain =
        socksify_core::Chain::new(vec![url.parse().unwrap()], ChainMode::Strict, 1, Default::default());
    let start = Instant::now();
    let e = connect_through(&chain, &ip("127.0.0.1:9"), false).unwrap_err();
    assert!(start.elapsed() < Duration::from_secs(1));
    assert_eq!(e.errno(), libc::ECONNREFUSED);
    assert!(e.to_string().contains("cannot connect to the proxy"), "{e}");
}

#[test]
fn three_hop_chain_through_three_different_servers() {
    let port = echo_server();
    let urls = [format!("socks5://{DANTE}"), format!("socks5://{MICROSOCKS}"), format!("socks4a://{SSH_D}")];
    let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
    let c = chain(&urls, ChainMode::Strict, 3);
    for target in [ip(&format!("127.0.0.1:{port}")), name("localhost", port)] {
        let (mut s, est) = connect_through(&c, &target, false).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(est.path, vec![0, 1, 2]);
        assert_echo(&mut s, b"three hops");
    }
}

#[test]
fn hops_named_by_host_name_are_resolved_by_the_previous_hop() {
    let port = echo_server();
    // The second and third hops are names: dante resolves the first, microsocks the second.
    let c = chain(
        &[&format!("socks5://{DANTE}"), "socks5://localhost:1082", "socks5h://localhost:1084"],
        ChainMode::Strict,
        3,
    );
    let (mut s, _) = connect_through(&c, &name("localhost", port), false).unwrap_or_else(|e| panic!("{e}"));
    assert_echo(&mut s, b"named hops");
    // A first hop given by name is resolved locally.
    check_connect("socks5://localhost:1082", ip(&format!("127.0.0.1:{port}")), false);
}

#[test]
fn strict_chain_fails_at_a_dead_hop_and_names_it() {
    let dead = format!("socks5://127.0.0.1:{}", closed_port());
    let urls = [format!("socks5://{DANTE}"), dead.clone(), format!("socks5://{MICROSOCKS}")];
    let c = socksify_core::Chain::new(
        urls.iter().map(|u| u.parse().unwrap()).collect(),
        ChainMode::Strict,
        3,
        Default::default(),
    );
    let e = connect_through(&c, &ip("127.0.0.1:9"), false).unwrap_err();
    let text = e.to_string();
    assert!(
        text.starts_with("hop 1 (socks5://127.0.0.1:1080): could not reach hop 2: SOCKS5 reply"),
        "{text}"
    );
    assert_eq!(e.errno(), libc::ECONNREFUSED);
}

#[test]
fn dynamic_chain_skips_dead_hops() {
    let port = echo_server();
    let dead = format!("socks5://127.0.0.1:{}", closed_port());
    let urls = [dead.clone(), format!("socks5://{DANTE}"), dead, format!("socks5://{MICROSOCKS}")];
    let c = socksify_core::Chain::new(
        urls.iter().map(|u| u.parse().unwrap()).collect(),
        ChainMode::Dynamic,
        2,
        Default::default(),
    );
    let (mut s, est) =
        connect_through(&c, &ip(&format!("127.0.0.1:{port}")), false).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(est.path, vec![1, 3]);
    assert_echo(&mut s, b"dynamic");

    let all_dead = [format!("socks5://127.0.0.1:{}", closed_port())];
    let c = socksify_core::Chain::new(
        all_dead.iter().map(|u| u.parse().unwrap()).collect(),
        ChainMode::Dynamic,
        2,
        Default::default(),
    );
    let e = connect_through(&c, &ip("127.0.0.1:9"), false).unwrap_err();
    assert!(matches!(e, ChainError::NotEnoughAlive { alive: 0, .. }), "{e}");
    assert_eq!(e.errno(), libc::ECONNREFUSED);
}

#[test]
fn random_and_round_robin_chains_use_chain_len_hops() {
    let port = echo_server();
    let urls = [format!("socks5://{DANTE}"), format!("socks5://{MICROSOCKS}"), format!("socks5://{SSH_D}")];
    let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
    for mode in [ChainMode::Random, ChainMode::RoundRobin] {
        let c = chain(&urls, mode, 2);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..12 {
            let (mut s, est) = connect_through(&c, &ip(&format!("127.0.0.1:{port}")), false)
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(est.path.len(), 2);
            seen.insert(est.path.clone());
            assert_echo(&mut s, b"rr");
        }
        assert!(seen.len() > 1, "{mode:?} always took the same path");
    }
}

#[test]
fn non_blocking_socket_works_and_keeps_its_flags() {
    let port = echo_server();
    let c = chain(&[&format!("socks5://{DANTE}")], ChainMode::Strict, 1);
    let socket = tcp_socket(false);
    socket.set_nonblocking(true).unwrap();
    // SAFETY: fcntl on a descriptor this test owns.
    let before = unsafe { libc::fcntl(socket.as_raw_fd(), libc::F_GETFL) };
    c.connect(socket.as_raw_fd(), &ip(&format!("127.0.0.1:{port}"))).unwrap();
    // SAFETY: as above.
    let after = unsafe { libc::fcntl(socket.as_raw_fd(), libc::F_GETFL) };
    assert_eq!(before, after);
    socket.set_nonblocking(false).unwrap();
    let mut s: TcpStream = socket.into();
    assert_echo(&mut s, b"nonblocking");

    // A blocking socket stays blocking.
    let socket = tcp_socket(false);
    // SAFETY: as above.
    let before = unsafe { libc::fcntl(socket.as_raw_fd(), libc::F_GETFL) };
    c.connect(socket.as_raw_fd(), &ip(&format!("127.0.0.1:{port}"))).unwrap();
    // SAFETY: as above.
    assert_eq!(before, unsafe { libc::fcntl(socket.as_raw_fd(), libc::F_GETFL) });
}

/// BIND: the first reply names where the proxy listens, a peer connects there, the second reply
/// names the peer, and data then flows over the control connection.
fn check_bind(url: &str) {
    let c = chain(&[url], ChainMode::Strict, 1);
    let socket = tcp_socket(false);
    let est = c
        .establish(socket.as_raw_fd(), Command::Bind, &ip("127.0.0.1:0"))
        .unwrap_or_else(|e| panic!("{url}: {e}"));
    let listen_at = est.bound.ip().expect("BIND reply is an address");
    assert_ne!(listen_at.port(), 0, "{url}");
    assert!(!listen_at.ip().is_unspecified(), "0.0.0.0 is replaced by the proxy's address");

    let mut peer = TcpStream::connect_timeout(&listen_at, Duration::from_secs(3)).expect("peer connects");
    let mut control = FdStream::new(socket.as_raw_fd());
    control.set_timeout(Some(Duration::from_secs(5)));
    let peer_seen = c.proxies()[0].read_bind_reply(&mut control).expect("second reply");
    assert_eq!(peer_seen.ip().unwrap().port(), peer.local_addr().unwrap().port(), "{url}");

    let mut s: TcpStream = socket.into();
    peer.write_all(b"from peer").unwrap();
    let mut buf = [0u8; 9];
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"from peer");
    s.write_all(b"to peer").unwrap();
    let mut buf = [0u8; 7];
    peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    peer.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"to peer");
}

#[test]
fn bind_through_dante_with_socks5_and_socks4() {
    check_bind(&format!("socks5://{DANTE}"));
    check_bind(&format!("socks4://{DANTE}"));
}

/// UDP ASSOCIATE on dante: datagrams wrapped in the RFC 1928 header go through its relay.
#[test]
fn udp_associate_through_dante_relays_datagrams() {
    for (proxy_addr, echo_bind, client_bind, ipv6) in
        [(DANTE, "127.0.0.1:0", "127.0.0.1:0", false), (DANTE6, "[::1]:0", "[::1]:0", true)]
    {
        let echo = udp_echo_server(echo_bind);
        let c = chain(&[&format!("socks5://{proxy_addr}")], ChainMode::Strict, 1);
        let udp = UdpSocket::bind(client_bind).unwrap();
        let control = tcp_socket(ipv6);
        let est = c
            .establish(control.as_raw_fd(), Command::UdpAssociate, &TargetAddr::Ip(udp.local_addr().unwrap()))
            .unwrap_or_else(|e| panic!("{proxy_addr}: {e}"));
        let relay: SocketAddr = fill_unspecified(est.bound, est.first_hop).ip().unwrap();
        udp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        for (i, target) in [TargetAddr::Ip(echo), name("localhost", echo.port())].into_iter().enumerate() {
            if ipv6 && i == 1 {
                continue; // dante resolves localhost to 127.0.0.1; the IPv6 echo would not hear it
            }
            let payload = format!("datagram {i}");
            udp.send_to(&v5::encode_udp(&target, payload.as_bytes()).unwrap(), relay).unwrap();
            let mut buf = [0u8; 1500];
            let (n, from) = udp.recv_from(&mut buf).expect("relayed reply");
            assert_eq!(from.port(), relay.port());
            let (src, at) = v5::decode_udp(&buf[..n]).unwrap();
            assert_eq!(src.port(), echo.port());
            assert_eq!(&buf[at..n], payload.as_bytes());
        }
    }
}

#[test]
fn udp_associate_is_refused_cleanly_by_servers_without_udp() {
    for url in [format!("socks5://{MICROSOCKS}"), format!("socks5://{SSH_D}")] {
        let c = chain(&[&url], ChainMode::Strict, 1);
        let control = tcp_socket(false);
        let start = Instant::now();
        let e = c.establish(control.as_raw_fd(), Command::UdpAssociate, &ip("0.0.0.0:0")).unwrap_err();
        assert!(start.elapsed() < Duration::from_secs(6), "{url}: no hang");
        eprintln!("{url}: {e} (errno {})", e.errno());
        assert_ne!(e.errno(), 0);
    }
}

#[test]
fn a_proxy_that_never_answers_times_out() {
    // A hand-written server is right here: it accepts and then says nothing.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("socks5://{}", silent.local_addr().unwrap());
    let timeouts =
        socksify_core::Timeouts { connect: Duration::from_secs(2), read: Duration::from_millis(300) };
    let c = socksify_core::Chain::new(vec![url.parse().unwrap()], ChainMode::Strict, 1, timeouts);
    let start = Instant::now();
    let e = connect_through(&c, &ip("127.0.0.1:9"), false).unwrap_err();
    assert!(start.elapsed() < Duration::from_secs(2), "{:?}", start.elapsed());
    assert_eq!(e.errno(), libc::ETIMEDOUT, "{e}");
    drop(silent);
}
