use std::net::SocketAddr;

use libc::{c_int, socklen_t};

use super::*;
use crate::ops::testing::{close, state, ONE_PROXY};
use crate::ops::udp::{self, recv, Plan, RecvMsg};

const NS: &str = "192.0.2.53:53";

fn stub_state() -> &'static State {
    let ns: SocketAddr = NS.parse().unwrap();
    Box::leak(Box::new(state(ONE_PROXY).with_nameservers(vec![ns.ip()])))
}

fn query(name: &str, qtype: u16) -> Vec<u8> {
    socksify_core::dnswire::query(0x4217, name, qtype)
}

fn udp_socket() -> c_int {
    // SAFETY: a new socket for the test.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    assert!(fd >= 0);
    fd
}

/// One datagram (waiting at most a second), through the library's receive: bytes and source.
fn receive(fd: c_int) -> (Vec<u8>, Option<SocketAddr>) {
    let mut pfd = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
    // SAFETY: poll on one local pollfd.
    assert_eq!(unsafe { libc::poll(&mut pfd, 1, 1000) }, 1, "the answer is readable");
    let mut buf = vec![0u8; 1024];
    // SAFETY: sockaddr_storage is plain old data.
    let mut name: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let size = std::mem::size_of::<libc::sockaddr_storage>() as socklen_t;
    let mut r = RecvMsg::new(Msg::one(
        buf.as_mut_ptr().cast(),
        buf.len(),
        (&mut name as *mut _ as *mut libc::sockaddr).cast(),
        size,
    ));
    let Some(Flow::Done(n)) = recv(fd, &mut r, libc::MSG_DONTWAIT) else { panic!("no datagram") };
    buf.truncate(n as usize);
    (buf, addr::from_storage(&name, r.msg.namelen))
}

#[test]
fn queries_to_the_nameservers_are_the_stubs_without_the_guard_only() {
    let ns: SocketAddr = NS.parse().unwrap();
    let st = state(ONE_PROXY).with_nameservers(vec![ns.ip()]);
    assert_eq!(udp::plan(&st, ns, "send"), Plan::Stub);
    assert!(matches!(udp::plan(&st, "192.0.2.53:54".parse().unwrap(), "send"), Plan::Relay(..)));
    let guarded = state(ONE_PROXY).guarded_by(vec![ns.ip()]);
    assert_eq!(udp::plan(&guarded, ns, "send"), Plan::AsIs, "the guard's stub answers it");
    let local = state(&format!("dns = \"local\"\n{ONE_PROXY}")).with_nameservers(vec![ns.ip()]);
    assert!(matches!(udp::plan(&local, ns, "send"), Plan::Relay(..)));
}

#[test]
fn an_unconnected_socket_gets_its_answer_from_the_nameserver_asked() {
    let st = stub_state();
    let ns: SocketAddr = NS.parse().unwrap();
    let fd = udp_socket();
    let q = query("www.example.org", 1);
    assert_eq!(
        send(st, fd, ns, &Msg::one(q.as_ptr().cast(), q.len(), std::ptr::null(), 0)),
        Flow::Done(q.len() as isize)
    );
    let (reply, from) = receive(fd);
    assert_eq!(from, Some(ns), "shown as the nameserver's");
    assert_eq!(&reply[..2], &q[..2]);
    let ip = std::net::IpAddr::from(<[u8; 4]>::try_from(&reply[reply.len() - 4..]).unwrap());
    assert!(st.router.is_fake(ip));
    assert!(sock::peer_addr(fd).is_none(), "still unconnected");
    close(fd);
}

#[test]
fn a_socket_connected_to_a_nameserver_is_answered_by_itself() {
    let st = stub_state();
    let ns: SocketAddr = NS.parse().unwrap();
    let fd = udp_socket();
    assert_eq!(connect(fd, ns), Flow::Done(0));
    assert_eq!(connected_to(fd), Some(ns));
    assert_eq!(table::entry(fd, |e| e.peer()).flatten(), Some(ns), "getpeername answers the nameserver");
    let q = query("1.0.0.240.in-addr.arpa", 12);
    send(st, fd, ns, &Msg::one(q.as_ptr().cast(), q.len(), std::ptr::null(), 0));
    let (reply, from) = receive(fd);
    assert_eq!(from, Some(ns));
    assert_eq!(reply[3] & 0xf, 3, "a fake address never handed out: NXDOMAIN");
    forget_peer(fd);
    assert_eq!(connected_to(fd), None);
    close(fd);
}
