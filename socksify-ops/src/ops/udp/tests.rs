use super::*;
use crate::ops::testing::{close, recv_from, send_to, state, udp_on_loopback, ONE_PROXY};

#[test]
fn datagrams_go_through_the_relay_unless_a_rule_says_otherwise() {
    let st = state(ONE_PROXY);
    let d: SocketAddr = "192.0.2.1:53".parse().unwrap();
    assert_eq!(plan(&st, d, "send"), Plan::Relay(TargetAddr::Ip(d), 0));
    assert_eq!(plan(&st, "127.0.0.1:53".parse().unwrap(), "send"), Plan::AsIs);
    let blocked = state(&format!("udp = \"block\"\n{ONE_PROXY}"));
    assert_eq!(plan(&blocked, d, "send"), Plan::Refuse(libc::ENETUNREACH));
    let guarded = state(ONE_PROXY).guarded_by(vec!["192.0.2.1".parse().unwrap()]);
    assert_eq!(plan(&guarded, d, "send"), Plan::AsIs, "the guard's stub answers it");
}

/// A program socket with an association whose relay is `relay` (a loopback socket standing in
/// for the proxy's), and a quiet control connection.
fn associated(relay: SocketAddr) -> (c_int, Link) {
    let (fd, _) = udp_on_loopback();
    let mut pair = [0; 2];
    // SAFETY: a socketpair for the test: one end is the control connection, the other is kept
    // open (leaked) so that the control connection stays quiet.
    assert_eq!(
        unsafe {
            libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0, pair.as_mut_ptr())
        },
        0
    );
    let link = table::insert_assoc(fd, Assoc::new(sock::Owned::new(pair[0]), relay, 0)).unwrap();
    (fd, link)
}

fn header(t: &str) -> Header {
    Header::new(&TargetAddr::Ip(t.parse().unwrap())).unwrap()
}

#[test]
fn a_datagram_leaves_the_programs_socket_wrapped_for_the_relay() {
    let (relay, relay_at) = udp_on_loopback();
    let (fd, link) = associated(relay_at);
    let h = header("192.0.2.1:53");
    assert_eq!(
        send_via_relay(fd, &link, &h, &Msg::one(b"hi".as_ptr().cast(), 2, std::ptr::null(), 0), 0),
        Flow::Done(2)
    );
    let (got, from) = recv_from(relay);
    assert_eq!(from, sock::local_addr(fd).unwrap(), "from the program's own socket");
    let (target, at) = v5::decode_udp(&got).unwrap();
    assert_eq!((target, &got[at..]), (TargetAddr::Ip("192.0.2.1:53".parse().unwrap()), &b"hi"[..]));
    close(fd);
    sock::close(relay);
}

#[test]
fn msg_more_and_udp_cork_build_one_datagram_with_one_header() {
    let (relay, relay_at) = udp_on_loopback();
    let (fd, link) = associated(relay_at);
    let h = header("192.0.2.1:7");
    let one = |s: &'static [u8]| Msg::one(s.as_ptr().cast(), s.len(), std::ptr::null(), 0);
    assert_eq!(send_via_relay(fd, &link, &h, &one(b"more"), libc::MSG_MORE), Flow::Done(4));
    let link = table::link(fd).unwrap();
    assert!(link.open);
    assert_eq!(send_via_relay(fd, &link, &h, &one(b"-end"), 0), Flow::Done(4));
    let (got, _) = recv_from(relay);
    let (_, at) = v5::decode_udp(&got).unwrap();
    assert_eq!(&got[at..], b"more-end");
    assert!(!table::link(fd).unwrap().open);
    close(fd);
    sock::close(relay);
}

#[test]
fn a_socket_connected_to_its_relay_sends_without_an_address() {
    let (relay, relay_at) = udp_on_loopback();
    let (fd, mut link) = associated(relay_at);
    sock::connect(fd, &relay_at).unwrap();
    link.on_relay = true;
    let h = header("192.0.2.1:7");
    for (data, flags) in [(&b"writev"[..], 0), (&b"copied"[..], libc::MSG_DONTWAIT)] {
        let m = Msg::one(data.as_ptr().cast(), data.len(), std::ptr::null(), 0);
        assert_eq!(send_via_relay(fd, &link, &h, &m, flags), Flow::Done(data.len() as ssize_t));
        let (got, _) = recv_from(relay);
        let (_, at) = v5::decode_udp(&got).unwrap();
        assert_eq!(&got[at..], data);
    }
    close(fd);
    sock::close(relay);
}

fn receive(
    fd: c_int,
    buf: &mut [u8],
    name: &mut libc::sockaddr_storage,
) -> (Flow<ssize_t>, Option<SocketAddr>) {
    let size = std::mem::size_of::<libc::sockaddr_storage>() as socklen_t;
    let mut r = RecvMsg::new(Msg::one(
        buf.as_mut_ptr().cast(),
        buf.len(),
        (name as *mut libc::sockaddr_storage).cast(),
        size,
    ));
    let flow = recv(fd, &mut r, libc::MSG_DONTWAIT).unwrap();
    (flow, addr::from_storage(name, r.msg.namelen))
}

#[test]
fn replies_are_unwrapped_others_come_as_they_are_and_a_foreign_relays_are_dropped() {
    let (relay, relay_at) = udp_on_loopback();
    let (fd, _) = associated(relay_at);
    let me = sock::local_addr(fd).unwrap();
    let source = TargetAddr::Ip("192.0.2.1:53".parse().unwrap());
    // Another of the proxy's relay ports (same address), with a well-formed datagram: dropped.
    let (foreign, _) = udp_on_loopback();
    send_to(foreign, &v5::encode_udp(&source, b"not ours").unwrap(), me);
    send_to(relay, &v5::encode_udp(&source, b"reply").unwrap(), me);
    std::thread::sleep(std::time::Duration::from_millis(50));
    let mut buf = [0u8; 64];
    // SAFETY: sockaddr_storage is plain old data.
    let mut name: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let (flow, from) = receive(fd, &mut buf, &mut name);
    assert_eq!(flow, Flow::Done(5));
    assert_eq!(&buf[..5], b"reply");
    assert_eq!(from, Some("192.0.2.1:53".parse().unwrap()), "the relay's word for the source");
    // A datagram from a peer of the program's own (not a relayed one): as it came.
    send_to(foreign, b"\x01plain", me);
    std::thread::sleep(std::time::Duration::from_millis(50));
    let (flow, from) = receive(fd, &mut buf, &mut name);
    assert_eq!(flow, Flow::Done(6));
    assert_eq!(&buf[..6], b"\x01plain");
    assert_eq!(from, sock::local_addr(foreign), "from its real source");
    sock::close(foreign);
    close(fd);
    sock::close(relay);
}

#[test]
fn a_reply_into_a_bad_buffer_is_efault() {
    let (relay, relay_at) = udp_on_loopback();
    let (fd, _) = associated(relay_at);
    let me = sock::local_addr(fd).unwrap();
    send_to(relay, &v5::encode_udp(&TargetAddr::Ip("192.0.2.1:53".parse().unwrap()), b"x").unwrap(), me);
    std::thread::sleep(std::time::Duration::from_millis(50));
    let mut r = RecvMsg::new(Msg::one(std::ptr::dangling_mut::<u8>().cast(), 8, std::ptr::null(), 0));
    assert_eq!(recv(fd, &mut r, libc::MSG_DONTWAIT).unwrap(), Flow::Fail(libc::EFAULT));
    close(fd);
    sock::close(relay);
}
