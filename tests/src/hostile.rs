//! A fault-injection SOCKS server: the one hand-written server of the test suite, for the
//! misbehaviour real servers never show. Each connection gets the same fault.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::thread;
use std::time::Duration;

/// What the server does wrong.
#[derive(Clone, Debug)]
pub enum Fault {
    /// Answers the greeting with an HTTP error page.
    Junk,
    /// Answers the greeting as SOCKS4 would (version 4).
    WrongVersion,
    /// Sends the first `n` bytes of a valid greeting-and-CONNECT exchange, then closes.
    Truncate(usize),
    /// A CONNECT reply announcing a 200-byte domain and sending 10 bytes, then silence.
    LongDomain,
    /// A CONNECT reply with ATYP 9.
    UnknownAtyp,
    /// Picks method 0xFF.
    NoMethod,
    /// Picks GSSAPI (0x01), which no client offered.
    UnofferedMethod,
    /// Accepts and never answers.
    Silent,
    /// A valid exchange, one byte per second.
    Slow,
    /// Closes right after reading the greeting.
    CloseAfterGreeting,
    /// Picks username/password and rejects it.
    RejectAuth,
    /// A working UDP ASSOCIATE whose relay first sends a datagram from another socket (a forged
    /// source), then one with FRAG = 1, then the real echo.
    UdpForgedAndFragment,
    /// A BIND whose first reply comes and whose second never does.
    BindNoSecondReply,
    /// A valid exchange with each reply 300 ms late; the connection then stays open.
    Delayed,
}

/// The valid server side of a no-auth CONNECT: method choice, then a reply for 127.0.0.1:80.
pub const VALID_EXCHANGE: [u8; 12] = [5, 0, 5, 0, 0, 1, 127, 0, 0, 1, 0, 80];

pub struct HostileServer {
    pub addr: SocketAddr,
}

impl HostileServer {
    /// Starts the server on 127.0.0.1, in network namespace `netns` if given (the listener is
    /// created there; its connections live there).
    pub fn start(fault: Fault, netns: Option<&str>) -> HostileServer {
        let (tx, rx) = std::sync::mpsc::channel();
        let netns = netns.map(str::to_owned);
        thread::spawn(move || {
            if let Some(ns) = netns {
                enter_netns(&ns);
            }
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            for conn in listener.incoming().flatten() {
                let fault = fault.clone();
                thread::spawn(move || serve(conn, fault));
            }
        });
        HostileServer { addr: rx.recv().unwrap() }
    }

    pub fn url(&self) -> String {
        format!("socks5://{}", self.addr)
    }
}

fn enter_netns(name: &str) {
    let f = std::fs::File::open(format!("/run/netns/{name}")).expect("netns");
    use std::os::fd::AsRawFd;
    // SAFETY: setns on this thread only, with a namespace file descriptor.
    let r = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(r, 0, "setns {name}");
}

fn read_some(conn: &mut TcpStream) -> Vec<u8> {
    let mut buf = [0u8; 600];
    let n = conn.read(&mut buf).unwrap_or(0);
    buf[..n].to_vec()
}

fn serve(mut conn: TcpStream, fault: Fault) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
    let greeting = read_some(&mut conn);
    if greeting.is_empty() {
        return;
    }
    match fault {
        Fault::Junk => {
            let _ = conn.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n");
        }
        Fault::WrongVersion => {
            let _ = conn.write_all(&[4, 0]);
        }
        Fault::Truncate(n) => {
            let _ = conn.write_all(&VALID_EXCHANGE[..n.min(2)]);
            if n > 2 {
                let _ = read_some(&mut conn);
                let _ = conn.write_all(&VALID_EXCHANGE[2..n]);
            }
        }
        Fault::LongDomain => {
            let _ = conn.write_all(&[5, 0]);
            let _ = read_some(&mut conn);
            let _ = conn
                .write_all(&[5, 0, 0, 3, 200, b'a', b'b', b'c', b'd', b'e', b'f', b'g', b'h', b'i', b'j']);
            thread::sleep(Duration::from_secs(30));
        }
        Fault::UnknownAtyp => {
            let _ = conn.write_all(&[5, 0]);
            let _ = read_some(&mut conn);
            let _ = conn.write_all(&[5, 0, 0, 9, 1, 2, 3, 4, 0, 80]);
        }
        Fault::NoMethod => {
            let _ = conn.write_all(&[5, 0xff]);
        }
        Fault::UnofferedMethod => {
            let _ = conn.write_all(&[5, 1]);
        }
        Fault::Silent => thread::sleep(Duration::from_secs(60)),
        Fault::Slow => {
            for b in VALID_EXCHANGE.iter().take(2) {
                thread::sleep(Duration::from_secs(1));
                if conn.write_all(&[*b]).is_err() {
                    return;
                }
            }
            let _ = read_some(&mut conn);
            for b in &VALID_EXCHANGE[2..] {
                thread::sleep(Duration::from_secs(1));
                if conn.write_all(&[*b]).is_err() {
                    return;
                }
            }
        }
        Fault::CloseAfterGreeting => {}
        Fault::RejectAuth => {
            let _ = conn.write_all(&[5, 2]);
            let _ = read_some(&mut conn);
            let _ = conn.write_all(&[1, 1]);
        }
        Fault::UdpForgedAndFragment => udp_relay(conn),
        Fault::Delayed => {
            thread::sleep(Duration::from_millis(300));
            let _ = conn.write_all(&VALID_EXCHANGE[..2]);
            let _ = read_some(&mut conn);
            thread::sleep(Duration::from_millis(300));
            let _ = conn.write_all(&VALID_EXCHANGE[2..]);
            thread::sleep(Duration::from_secs(5));
        }
        Fault::BindNoSecondReply => {
            let _ = conn.write_all(&[5, 0]);
            let _ = read_some(&mut conn);
            let _ = conn.write_all(&[5, 0, 0, 1, 127, 0, 0, 1, 0x30, 0x39]);
            thread::sleep(Duration::from_secs(60));
        }
    }
}

/// UDP ASSOCIATE with a relay that misbehaves before it behaves.
fn udp_relay(mut conn: TcpStream) {
    let _ = conn.write_all(&[5, 0]);
    let _ = read_some(&mut conn);
    let relay = UdpSocket::bind("127.0.0.1:0").unwrap();
    let forger = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = relay.local_addr().unwrap().port().to_be_bytes();
    let _ = conn.write_all(&[5, 0, 0, 1, 0, 0, 0, 0, port[0], port[1]]);
    let mut buf = [0u8; 2048];
    let _ = relay.set_read_timeout(Some(Duration::from_secs(30)));
    while let Ok((n, client)) = relay.recv_from(&mut buf) {
        let datagram = &buf[..n];
        // forged: a well-formed reply, but not from the relay's address
        let _ = forger.send_to(datagram, client);
        // a fragment, from the relay
        let mut frag = datagram.to_vec();
        frag[2] = 1;
        let _ = relay.send_to(&frag, client);
        // the real echo
        let _ = relay.send_to(datagram, client);
    }
}
