//! The DNS stub the guard sends the system's nameservers' queries to: one UDP socket and one TCP
//! listener on loopback per nameserver (IPv4, and IPv6 when the host has `::1`), answered from
//! the fake-address table by `socksify_core::stub` (the library's stub too). Questions the table
//! cannot answer go over TCP through the chain to `dns_server` (a thread each, so that a slow
//! one never holds up the others). One per nameserver, so that a reply's source tells which
//! nameserver the program asked, and the program can be shown that one. An address question
//! for a name on a `direct` route (split DNS) goes to that nameserver itself, and the
//! addresses it answers are learned, so that connections to them go direct.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use socksify_core::stub::Answer;
use socksify_core::Chain;

use crate::addr::unmapped;
use crate::policy::Policy;

struct Server {
    udp: Vec<UdpSocket>,
    tcp: Vec<TcpListener>,
}

#[derive(Clone, Copy, Debug)]
struct Addrs {
    udp4: SocketAddr,
    udp6: Option<SocketAddr>,
    tcp4: SocketAddr,
    tcp6: Option<SocketAddr>,
}

pub struct Stubs {
    addrs: Vec<Addrs>,
}

impl Stubs {
    /// Binds one stub per nameserver and serves them all from one thread (TCP connections get
    /// a thread each).
    pub fn start(count: usize, policy: Arc<Policy>, log: Arc<crate::log::Log>) -> std::io::Result<Stubs> {
        let lo4 = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0);
        let lo6 = SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 0);
        let mut servers = Vec::new();
        let mut addrs = Vec::new();
        for _ in 0..count {
            let udp4 = UdpSocket::bind(lo4)?;
            let tcp4 = TcpListener::bind(lo4)?;
            let udp6 = UdpSocket::bind(lo6).ok();
            let tcp6 = TcpListener::bind(lo6).ok();
            addrs.push(Addrs {
                udp4: udp4.local_addr()?,
                udp6: udp6.as_ref().and_then(|s| s.local_addr().ok()),
                tcp4: tcp4.local_addr()?,
                tcp6: tcp6.as_ref().and_then(|s| s.local_addr().ok()),
            });
            let udp = [Some(udp4), udp6].into_iter().flatten().collect();
            let tcp = [Some(tcp4), tcp6].into_iter().flatten().collect();
            servers.push(Server { udp, tcp });
        }
        if count > 0 {
            let chain = Arc::new(policy.router.config().chain());
            std::thread::Builder::new()
                .name("dns-stub".into())
                .spawn(move || serve(servers, policy, chain, log))?;
        }
        Ok(Stubs { addrs })
    }

    /// Where a socket of `family` sends nameserver `i`'s UDP queries.
    pub fn udp_addr(&self, i: usize, family: libc::c_int) -> SocketAddr {
        let a = self.addrs[i];
        match (family, a.udp6) {
            (libc::AF_INET6, Some(v6)) => v6,
            _ => a.udp4,
        }
    }

    pub fn tcp_addr(&self, i: usize, family: libc::c_int) -> SocketAddr {
        let a = self.addrs[i];
        match (family, a.tcp6) {
            (libc::AF_INET6, Some(v6)) => v6,
            _ => a.tcp4,
        }
    }

    /// The nameserver whose stub sent a datagram from `src`.
    pub fn nameserver_of(&self, src: SocketAddr) -> Option<usize> {
        let src = unmapped(src);
        self.addrs.iter().position(|a| a.udp4 == src || a.udp6 == Some(src))
    }
}

/// A log line for a name refused by a `block` route (the stub cannot tell which process
/// asked: the line carries the guard's pid).
fn say_refusal(log: &crate::log::Log, policy: &Policy, query: &[u8], reply: &[u8]) {
    if let Some(why) = socksify_core::stub::refusal(&policy.router, query, reply) {
        // SAFETY: getpid has no preconditions.
        log.error(unsafe { libc::getpid() }, format_args!("{why}"));
    }
}

fn serve(servers: Vec<Server>, policy: Arc<Policy>, chain: Arc<Chain>, log: Arc<crate::log::Log>) {
    let udp: Vec<&UdpSocket> = servers.iter().flat_map(|s| s.udp.iter()).collect();
    let udp_ns: Vec<usize> =
        servers.iter().enumerate().flat_map(|(i, s)| s.udp.iter().map(move |_| i)).collect();
    let tcp: Vec<&TcpListener> = servers.iter().flat_map(|s| s.tcp.iter()).collect();
    let tcp_ns: Vec<usize> =
        servers.iter().enumerate().flat_map(|(i, s)| s.tcp.iter().map(move |_| i)).collect();
    let mut fds: Vec<libc::pollfd> = udp
        .iter()
        .map(|s| s.as_raw_fd())
        .chain(tcp.iter().map(|l| l.as_raw_fd()))
        .map(|fd| libc::pollfd { fd, events: libc::POLLIN, revents: 0 })
        .collect();
    let mut buf = vec![0u8; 65536];
    loop {
        // SAFETY: poll over a local array of pollfds.
        let r = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
        if r < 0 {
            continue;
        }
        for (i, pfd) in fds.iter_mut().enumerate() {
            if pfd.revents & libc::POLLIN == 0 {
                continue;
            }
            pfd.revents = 0;
            if i < udp.len() {
                let sock = udp[i];
                if let Ok((n, from)) = sock.recv_from(&mut buf) {
                    let query = &buf[..n];
                    match socksify_core::stub::answer(&policy.router, query) {
                        Some(Answer::Now(reply)) => {
                            say_refusal(&log, &policy, query, &reply);
                            let _ = sock.send_to(&socksify_core::dnswire::fit_udp(query, reply), from);
                        }
                        Some(answer @ (Answer::Forward | Answer::System)) => {
                            let (Ok(sock), chain, query) = (sock.try_clone(), chain.clone(), query.to_vec())
                            else {
                                continue;
                            };
                            let (policy, ns) = (policy.clone(), udp_ns[i]);
                            let _ =
                                std::thread::Builder::new().name("dns-stub-fwd".into()).spawn(move || {
                                    let reply = match answer {
                                        Answer::System => ask_system(&policy, &chain, ns, &query),
                                        _ => forward(&policy, &chain, &query),
                                    };
                                    let _ =
                                        sock.send_to(&socksify_core::dnswire::fit_udp(&query, reply), from);
                                });
                        }
                        None => {}
                    }
                }
            } else if let Ok((conn, _)) = tcp[i - udp.len()].accept() {
                let (policy, chain, ns) = (policy.clone(), chain.clone(), tcp_ns[i - udp.len()]);
                let log = log.clone();
                let _ = std::thread::Builder::new()
                    .name("dns-stub-tcp".into())
                    .spawn(move || serve_tcp(conn, &policy, &chain, ns, &log));
            }
        }
    }
}

/// DNS over TCP: each message behind its two-byte length.
fn serve_tcp(mut conn: TcpStream, policy: &Policy, chain: &Chain, ns: usize, log: &crate::log::Log) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
    let mut len = [0u8; 2];
    while conn.read_exact(&mut len).is_ok() {
        let mut msg = vec![0u8; u16::from_be_bytes(len) as usize];
        if conn.read_exact(&mut msg).is_err() {
            return;
        }
        let reply = match socksify_core::stub::answer(&policy.router, &msg) {
            Some(Answer::Now(reply)) => {
                say_refusal(log, policy, &msg, &reply);
                reply
            }
            Some(Answer::Forward) => forward(policy, chain, &msg),
            Some(Answer::System) => ask_system(policy, chain, ns, &msg),
            None => return,
        };
        let mut out = (reply.len() as u16).to_be_bytes().to_vec();
        out.extend_from_slice(&reply);
        if conn.write_all(&out).is_err() {
            return;
        }
    }
}

/// Split DNS: the answer of system nameserver `ns` itself to an address question for a name on
/// a direct route, over UDP, within the chain's read timeout; its addresses are learned.
/// SERVFAIL when there is none.
fn ask_system(policy: &Policy, chain: &Chain, ns: usize, query: &[u8]) -> Vec<u8> {
    let servfail = || {
        socksify_core::dnswire::error_response(query, socksify_core::dnswire::RCODE_SERVFAIL)
            .unwrap_or_default()
    };
    let Some(&ip) = policy.nameservers.get(ns) else { return servfail() };
    let any = if ip.is_ipv6() { "[::]:0" } else { "0.0.0.0:0" };
    let Ok(sock) = UdpSocket::bind(any) else { return servfail() };
    let _ = sock.set_read_timeout(Some(chain.timeouts().read));
    if sock.connect(SocketAddr::new(ip, 53)).is_err() || sock.send(query).is_err() {
        return servfail();
    }
    let mut buf = vec![0u8; 65536];
    loop {
        match sock.recv(&mut buf) {
            // The response to this query (its id), not a stray datagram.
            Ok(n) if n >= 12 && buf[..2] == query[..2] && buf[2] & 0x80 != 0 => {
                socksify_core::stub::learn_answers(&policy.router, query, &buf[..n]);
                return buf[..n].to_vec();
            }
            Ok(_) => continue,
            Err(_) => return servfail(),
        }
    }
}

/// The answer of `dns_server` (through the chain) to a question the fake table cannot answer;
/// SERVFAIL when it cannot be had.
fn forward(policy: &Policy, chain: &Chain, query: &[u8]) -> Vec<u8> {
    let server = &policy.router.config().dns_server;
    match crate::sys::socket(socksify_core::stub::first_hop_family(chain), libc::SOCK_STREAM) {
        Ok(fd) => socksify_core::stub::forward(chain, fd.as_raw_fd(), server, query).0,
        Err(_) => socksify_core::dnswire::error_response(query, socksify_core::dnswire::RCODE_SERVFAIL)
            .unwrap_or_default(),
    }
}
