//! Shared pieces of the end-to-end tests: where the real SOCKS servers that
//! `scripts/test-servers start` runs are, and small echo servers to aim them at.
//!
//! A test whose server is not running fails with a message that says how to start it: nothing
//! is skipped in silence.

pub mod build;
pub mod hostile;
pub mod lab;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs, UdpSocket};
use std::os::fd::AsRawFd;
use std::thread;
use std::time::Duration;

use socket2::{Domain, Socket, Type};
use socksify_core::{Chain, ChainMode, Established, Proxy, TargetAddr, Timeouts};

/// The servers started by `scripts/test-servers start`, as proxy URLs.
pub mod servers {
    /// dante-server, no authentication: SOCKS4 and SOCKS5, CONNECT, BIND and UDP ASSOCIATE.
    pub const DANTE: &str = "127.0.0.1:1080";
    pub const DANTE6: &str = "[::1]:1080";
    /// dante-server with username/password (a system user).
    pub const DANTE_AUTH: &str = "127.0.0.1:1081";
    pub const DANTE_USER: &str = "socksuser";
    pub const DANTE_PASS: &str = "socks-pass";
    /// microsocks without and with authentication.
    pub const MICROSOCKS: &str = "127.0.0.1:1082";
    pub const MICROSOCKS6: &str = "[::1]:1082";
    pub const MICROSOCKS_AUTH: &str = "127.0.0.1:1083";
    pub const MICROSOCKS_USER: &str = "mcuser";
    pub const MICROSOCKS_PASS: &str = "mc-pass";
    /// `ssh -D` against a private sshd: SOCKS4, SOCKS4a and SOCKS5 CONNECT.
    pub const SSH_D: &str = "127.0.0.1:1084";
    pub const SSH_D6: &str = "[::1]:1084";
}

/// Fails the test unless a server accepts connections at `addr`.
pub fn require_server(addr: &str) {
    let sa = addr.to_socket_addrs().ok().and_then(|mut a| a.next());
    let sa = sa.unwrap_or_else(|| panic!("cannot resolve {addr}"));
    if let Err(e) = TcpStream::connect_timeout(&sa, Duration::from_secs(2)) {
        panic!("no SOCKS server at {addr} ({e}): run `scripts/test-servers start` first (scripts/test does)");
    }
}

/// Parses a proxy URL after checking that its server is up.
pub fn proxy(url: &str) -> Proxy {
    let p: Proxy = url.parse().expect("proxy URL");
    require_server(&format!("{}:{}", p.host, p.port));
    p
}

/// A chain with test-friendly timeouts.
pub fn chain(urls: &[&str], mode: ChainMode, chain_len: usize) -> Chain {
    let timeouts = Timeouts { connect: Duration::from_secs(3), read: Duration::from_secs(5) };
    Chain::new(urls.iter().map(|u| proxy(u)).collect(), mode, chain_len, timeouts)
}

/// A TCP socket of the family of `like`, not yet connected.
pub fn tcp_socket(ipv6: bool) -> Socket {
    let domain = if ipv6 { Domain::IPV6 } else { Domain::IPV4 };
    Socket::new(domain, Type::STREAM, None).expect("socket")
}

/// Builds `chain` on a fresh socket (IPv6 when `ipv6`) to `target` and returns the stream.
pub fn connect_through(
    chain: &Chain,
    target: &TargetAddr,
    ipv6: bool,
) -> Result<(TcpStream, Established), socksify_core::ChainError> {
    let socket = tcp_socket(ipv6);
    let est = chain.connect(socket.as_raw_fd(), target)?;
    Ok((socket.into(), est))
}

/// Writes `msg` and reads the echo back.
pub fn assert_echo(stream: &mut TcpStream, msg: &[u8]) {
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    stream.write_all(msg).unwrap();
    let mut back = vec![0u8; msg.len()];
    stream.read_exact(&mut back).expect("echo");
    assert_eq!(back, msg);
}

/// A TCP echo server on one port of both 127.0.0.1 and ::1, so that a name such as `localhost`
/// reaches it whichever address the proxy picks. Runs until the test process exits.
pub fn echo_server() -> u16 {
    for _ in 0..50 {
        let v6 = TcpListener::bind("[::1]:0").expect("bind ::1");
        let port = v6.local_addr().unwrap().port();
        if let Ok(v4) = TcpListener::bind(("127.0.0.1", port)) {
            serve_echo(v4);
            serve_echo(v6);
            return port;
        }
    }
    panic!("no port free on both 127.0.0.1 and ::1");
}

fn serve_echo(listener: TcpListener) {
    thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = conn.read(&mut buf) {
                    if n == 0 || conn.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
}

/// A UDP echo server on `bind`; returns its address.
pub fn udp_echo_server(bind: &str) -> SocketAddr {
    let sock = UdpSocket::bind(bind).expect("bind udp");
    let addr = sock.local_addr().unwrap();
    thread::spawn(move || {
        let mut buf = [0u8; 65536];
        while let Ok((n, from)) = sock.recv_from(&mut buf) {
            let _ = sock.send_to(&buf[..n], from);
        }
    });
    addr
}

/// A port on which nothing listens (bound, then released).
pub fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}
