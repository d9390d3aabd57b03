//! UDP under socksify: datagrams go through dante-server's UDP relay (SOCKS5 UDP ASSOCIATE),
//! replies are unwrapped, nothing goes around the relay, and proxies without UDP fail closed.
//! Each test runs in a lab namespace that counts every packet it sends.

use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;

use socksify_tests::lab::*;

const DANTE: &str = "socks5://10.77.0.2:1080";
const DANTE6: &str = "socks5://[fd77::2]:1080";

fn python(client: &Client, config: &str, code: &str) -> String {
    stdout_ok(&client.socksify(config, &["python3", "-c", code]))
}

/// Asserts that datagrams went through the relay and nothing went around it.
fn assert_relayed_only(c: &Client) {
    let counters = c.assert_nothing_leaked();
    assert!(counters.relayed > 0, "no datagram went to the relay: {counters:?}");
}

// 10.77.0.3 / fd77::3 is a DNS server that is not the client's system resolver (10.77.0.2 is:
// queries to that one are answered by socksify's stub, see guard.rs).
#[test]
fn dig_through_the_relay_by_address_and_by_name() {
    let c = Client::with_udp_relay();
    let cfg = config_for(DANTE);
    for server in ["@10.77.0.3", "@www.socksify.test"] {
        let out = c.socksify(&cfg, &["dig", "+short", "+time=5", "+tries=1", server, "anything.example"]);
        assert_eq!(stdout_ok(&out).trim(), "10.77.0.2", "dig {server}");
    }
    let out = c.socksify(
        &config_for(DANTE6),
        &["dig", "+short", "+time=5", "+tries=1", "-6", "@fd77::3", "aaaa.example", "AAAA"],
    );
    assert_eq!(stdout_ok(&out).trim(), "fd77::2");
    assert_relayed_only(&c);
}

#[test]
fn nslookup_through_the_relay() {
    let c = Client::with_udp_relay();
    let out =
        c.socksify(&config_for(DANTE), &["nslookup", "-timeout=5", "-retry=1", "host.example", "10.77.0.3"]);
    let text = stdout_ok(&out);
    assert!(text.contains("Address: 10.77.0.2"), "{text}");
    assert_relayed_only(&c);
}

const PY_UDP: &str = r#"
import socket, sys
fam = socket.AF_INET6 if sys.argv[1] == '6' else socket.AF_INET
host = sys.argv[2]
u = socket.socket(fam, socket.SOCK_DGRAM); u.settimeout(10)
u.sendto(b'one', (host, 7)); d, src = u.recvfrom(100); print(d.decode(), src[1])
u.sendmsg([b't', b'wo'], [], 0, (host, 7)); d, anc, flags, src = u.recvmsg(100); print(d.decode(), src[1])
c = socket.socket(fam, socket.SOCK_DGRAM); c.settimeout(10)
c.connect((host, 7)); c.send(b'three'); print(c.recv(100).decode(), c.getpeername()[1])
c.sendmsg([b'fo', b'ur']); print(c.recvmsg(100)[0].decode())
import os
c.setblocking(True)
os.write(c.fileno(), b'five'); print(os.read(c.fileno(), 100).decode())
"#;

#[test]
fn python_datagrams_over_ipv4_and_ipv6_by_name_and_address() {
    for (proxy, fam, host) in [
        (DANTE, "4", "10.77.0.2"),
        (DANTE, "4", "www.socksify.test"),
        (DANTE6, "6", "fd77::2"),
        (DANTE6, "6", "www6.socksify.test"),
    ] {
        let c = Client::with_udp_relay();
        let out = stdout_ok(&c.socksify(&config_for(proxy), &["python3", "-c", PY_UDP, fam, host]));
        assert_eq!(out, "one 7\ntwo 7\nthree 7\nfour\nfive\n", "{proxy} {host}");
        assert_relayed_only(&c);
    }
}

#[test]
fn peek_truncation_and_readiness_behave_as_without_a_proxy() {
    let c = Client::with_udp_relay();
    let py = r#"
import socket, selectors
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.setblocking(False)
sel = selectors.DefaultSelector(); sel.register(u, selectors.EVENT_READ)
u.sendto(b'0123456789', ('www.socksify.test', 7))
print(len(sel.select(timeout=10)) == 1)
print(u.recv(4, socket.MSG_PEEK))              # peek: the datagram stays
t = u.recv(4, socket.MSG_TRUNC)                # MSG_TRUNC: the datagram's real length
print(len(t), t[:4])
try:
    u.recv(100); print('more?')
except BlockingIOError:
    print('empty')                             # the datagram was consumed once
"#;
    let out = python(&c, &config_for(DANTE), py);
    assert_eq!(out, "True\nb'0123'\n10 b'0123'\nempty\n");
    assert_relayed_only(&c);
}

/// A stray datagram on a socket with an association: `mode` runs the program, `first` is what
/// its next receive gets, and `unreachable` is how many ICMP port-unreachable answers the
/// client's kernel sends.
fn stray_datagram(mode: &str, first: &str, unreachable: u64) {
    let c = Client::with_udp_relay();
    let py = r#"
import socket, sys
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.settimeout(10)
u.sendto(b'first', ('10.77.0.2', 7)); print(u.recvfrom(100)[0].decode(), flush=True)
print(u.getsockname()[1], flush=True)
sys.stdin.readline()                           # the test injects a stray datagram meanwhile
u.sendto(b'second', ('10.77.0.2', 7)); print(u.recvfrom(100)[0].decode(), flush=True)
"#;
    let mut child = c
        .socksify_command(&config_for(DANTE), &["--mode", mode, "python3", "-c", py])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "first");
    let port = lines.next().unwrap().unwrap();
    let me = format!("10.77.0.{}", c.n + 10);
    let inject = format!(
        "import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'forged', ('{me}', {port}))"
    );
    let st = std::process::Command::new("ip")
        .args(["netns", "exec", "sfy-net", "python3", "-c", &inject])
        .status()
        .unwrap();
    assert!(st.success());
    std::thread::sleep(std::time::Duration::from_millis(200));
    child.stdin.take().unwrap().write_all(b"go\n").unwrap();
    assert_eq!(lines.next().unwrap().unwrap(), first, "--mode {mode}");
    assert!(child.wait().unwrap().success());
    assert_relayed_only(&c);
    assert_eq!(c.counters().unreachable, unreachable, "ICMP errors for the stray datagram");
}

#[test]
fn a_datagram_from_elsewhere_reaches_the_program_as_without_socksify() {
    // The library alone: the socket stays unconnected, and a datagram that is not the relay's
    // is the program's, from its real source, as the kernel delivers it to an unconnected
    // socket (the program may talk to loopback or `direct` peers on it too).
    stray_datagram("preload", "forged", 0);
}

#[test]
fn under_the_guard_a_socket_on_its_relay_answers_strays_with_port_unreachable() {
    // Under the kernel guard the library connects the socket to its relay (so datagrams go
    // there without a trap each): the kernel itself refuses the stray, with an ICMP error.
    stray_datagram("auto", "second", 1);
}

#[test]
fn the_control_connection_survives_programs_that_close_every_descriptor() {
    let c = Client::with_udp_relay();
    let py = r#"
import os, socket
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.settimeout(10)
u.sendto(b'a', ('10.77.0.2', 7)); u.recvfrom(10)
def sockets():
    out = []
    for f in os.listdir('/proc/self/fd'):
        try:
            if os.readlink('/proc/self/fd/' + f).startswith('socket:'): out.append(int(f))
        except OSError: pass
    return sorted(out)
internal = [f for f in sockets() if f > u.fileno()]
flags = [int(open('/proc/self/fdinfo/%d' % f).read().split('flags:')[1].split()[0], 8) for f in internal]
print(len(internal) == 1 and internal[0] >= 64 and all(fl & 0o2000000 for fl in flags))
# close everything the way ssh does: close_range around our socket, then close() in a loop
os.closerange(3, u.fileno()); os.closerange(u.fileno() + 1, 65536)
for fd in range(3, 1024):
    if fd != u.fileno():
        try: os.close(fd)
        except OSError: pass
u.sendto(b'b', ('10.77.0.2', 7)); print(u.recvfrom(10)[0].decode())
u.close()
print(len(sockets()))
"#;
    assert_eq!(python(&c, &config_for(DANTE), py), "True\nb\n0\n");
    assert_relayed_only(&c);
}

#[test]
fn proxies_without_udp_fail_closed() {
    for proxy in ["socks5://10.77.0.2:1082", "socks5://10.77.0.2:1084", "socks4://10.77.0.2:1080"] {
        let c = Client::with_udp_relay();
        let py = r#"
import socket
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.settimeout(5)
try:
    u.sendto(b'x', ('10.77.0.2', 7)); print('sent')
except OSError as e:
    print('refused', e.errno)
"#;
        let out = c.socksify(&config_for(proxy), &["python3", "-c", py]);
        let text = stdout_ok(&out);
        assert!(text.starts_with("refused"), "{proxy}: {text}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("UDP association for descriptor"), "{proxy}: {err}");
        let counters = c.counters();
        assert_eq!(
            (counters.leaked, counters.leaked_dns, counters.relayed),
            (0, 0, 0),
            "{proxy}: {counters:?}"
        );
    }
}

#[test]
fn a_chain_of_several_hops_cannot_carry_udp() {
    let c = Client::with_udp_relay();
    let cfg = format!("{}{}", config_for(DANTE), config_for("socks5://10.77.0.2:1082"));
    let out = c.socksify(&cfg, &["dig", "+short", "+time=2", "+tries=1", "@10.77.0.3", "x.example"]);
    assert!(!String::from_utf8_lossy(&out.stdout).lines().any(|l| l.trim() == "10.77.0.2"), "no answer");
    assert!(String::from_utf8_lossy(&out.stderr).contains("UDP cannot go through a chain of 2 hops"));
    let counters = c.counters();
    assert_eq!((counters.leaked, counters.leaked_dns, counters.relayed), (0, 0, 0), "{counters:?}");
}

#[test]
fn udp_policy_block_and_direct() {
    let py = "import socket\nu = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.settimeout(5)\ntry:\n    u.sendto(b'x', ('10.77.0.2', 7)); print(u.recvfrom(10)[0].decode())\nexcept OSError as e:\n    print('refused', e.errno)\n";
    let c = Client::with_udp_relay();
    let out = python(&c, &format!("udp = \"block\"\n{}", config_for(DANTE)), py);
    assert_eq!(out.trim(), format!("refused {}", libc::ENETUNREACH));
    assert_eq!(c.counters().leaked, 0);
    // udp = "direct" sends straight out: the lab counts it (the control experiment).
    let c = Client::with_udp_relay();
    let out = python(&c, &format!("udp = \"direct\"\n{}", config_for(DANTE)), py);
    assert_eq!(out.trim(), "x");
    assert!(c.counters().leaked > 0);
}

/// What an unconnected socket shows after its first datagram: its local address, its peer, a
/// send without an address, one with a bad address pointer, one to an AF_UNSPEC address (which
/// the kernel takes for IPv4 there), a disconnect, and a second round trip.
const PY_UNCONNECTED: &str = r#"
import ctypes, errno, socket, struct
libc = ctypes.CDLL(None, use_errno=True)
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.settimeout(10)
u.sendto(b'one', ('10.77.0.2', 7)); print(u.recvfrom(100)[0].decode())
host, port = u.getsockname(); print('local', host, port > 0)
try:
    print('peer', u.getpeername())
except OSError as e:
    print('peer', errno.errorcode[e.errno])
try:
    print('send', u.send(b'x'))
except OSError as e:
    print('send', errno.errorcode[e.errno])
r = libc.sendto(u.fileno(), b'x', 1, 0, ctypes.c_void_p(8), 16)
print('bad pointer', r, errno.errorcode.get(ctypes.get_errno()))
# AF_UNSPEC on an IPv4 socket: the kernel sends to the IPv4 address in it.
sa = struct.pack('<H', 0) + struct.pack('>H', 7) + socket.inet_aton('10.77.0.2') + bytes(8)
r = libc.sendto(u.fileno(), b'unspec', 6, 0, ctypes.create_string_buffer(sa, 16), 16)
print('unspec', r, u.recvfrom(100)[0].decode())
unspec = (ctypes.c_ubyte * 16)()
r = libc.connect(u.fileno(), unspec, 16)
print('disconnect', r, errno.errorcode.get(ctypes.get_errno(), 0) if r else 0)
print('local again', u.getsockname() == (host, port))
u.sendto(b'two', ('10.77.0.2', 7)); print(u.recvfrom(100)[0].decode())
"#;

/// Runs `py` without socksify (the kernel's answers, straight to the echo), then in `preload`
/// and `auto` mode, each in a fresh client: the output must be the same, and nothing may go
/// around the relay. Returns the bare run's output.
fn as_without_socksify(py: &str) -> String {
    let c = Client::with_udp_relay();
    let bare = stdout_ok(&c.command(&["python3", "-c", py]).output().unwrap());
    for mode in ["preload", "auto"] {
        let c = Client::with_udp_relay();
        let out =
            c.socksify_command(&config_for(DANTE), &["--mode", mode, "python3", "-c", py]).output().unwrap();
        assert_eq!(stdout_ok(&out), bare, "{mode}");
        assert_relayed_only(&c);
    }
    bare
}

#[test]
fn an_associated_socket_answers_as_an_unconnected_one_without_socksify() {
    let bare = as_without_socksify(PY_UNCONNECTED);
    assert!(
        bare.starts_with(
            "one\nlocal 0.0.0.0 True\npeer ENOTCONN\nsend EDESTADDRREQ\nbad pointer -1 EFAULT\nunspec 6 unspec\n"
        ),
        "{bare}"
    );
}

/// One socket used every way at once: a proxied echo, a loopback peer, MSG_MORE, UDP_CORK, a
/// `dup` that outlives the original.
const PY_MIXED: &str = r#"
import socket
E = ('10.77.0.2', 7)
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.settimeout(10)
l = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); l.bind(('127.0.0.1', 0)); l.settimeout(10)
u.sendto(b'one', E); print(u.recvfrom(100)[0].decode())
u.sendto(b'ping', l.getsockname()); d, a = l.recvfrom(100); l.sendto(b'pong', a)
data, src = u.recvfrom(100); print(data.decode(), src[0])
u.sendto(b'two', E); print(u.recvfrom(100)[0].decode())
u.sendto(b'more', socket.MSG_MORE, E); u.sendto(b'-end', E); print(u.recvfrom(100)[0].decode())
UDP_CORK = 1  # linux/udp.h; Python does not name it
u.setsockopt(socket.IPPROTO_UDP, UDP_CORK, 1)
u.sendto(b'c1', E); u.sendto(b'c2', E)
u.setsockopt(socket.IPPROTO_UDP, UDP_CORK, 0); print(u.recvfrom(100)[0].decode())
d = u.dup(); u.close(); d.settimeout(10)
d.sendto(b'dup', E); print(d.recvfrom(100)[0].decode())
"#;

#[test]
fn one_socket_with_loopback_peers_corked_datagrams_and_dups_behaves_as_without_socksify() {
    assert_eq!(as_without_socksify(PY_MIXED), "one\npong 127.0.0.1\ntwo\nmore-end\nc1c2\ndup\n");
}

#[test]
fn bad_pointers_on_an_associated_socket_get_the_kernels_answer() {
    let prog = socksify_tests::build::c_program("badptr", socksify_tests::build::Link::Dynamic);
    let prog = prog.to_str().unwrap();
    let c = Client::with_udp_relay();
    let bare = stdout_ok(&c.command(&[prog, "10.77.0.2", "7"]).output().unwrap());
    assert!(bare.contains("sendmsg, bad iovec list: -1 EFAULT"), "{bare}");
    for mode in ["preload", "auto"] {
        let c = Client::with_udp_relay();
        let out = c
            .socksify_command(&config_for(DANTE), &["--mode", mode, prog, "10.77.0.2", "7"])
            .output()
            .unwrap();
        assert_eq!(stdout_ok(&out), bare, "--mode {mode}: the same answers, and no crash");
        assert_relayed_only(&c);
    }
}
