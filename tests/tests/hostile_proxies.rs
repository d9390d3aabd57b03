//! Hostile and broken proxies (the fault-injection server of `tests/src/hostile.rs`): every call
//! fails with the right errno within the configured timeout, nothing crashes or hangs, and —
//! under the preload, in a lab namespace — nothing goes direct.

use std::time::{Duration, Instant};

use socksify_core::{Chain, ChainMode, TargetAddr, Timeouts};
use socksify_tests::hostile::{Fault, HostileServer, VALID_EXCHANGE};
use socksify_tests::lab::*;
use socksify_tests::tcp_socket;

const READ_TIMEOUT: Duration = Duration::from_millis(800);

/// CONNECT through a hostile server with the core client; returns the errno and the time taken.
fn core_connect(fault: Fault, creds: bool) -> (i32, Duration) {
    let server = HostileServer::start(fault, None);
    let url = if creds { format!("socks5://u:p@{}", server.addr) } else { server.url() };
    let timeouts = Timeouts { connect: Duration::from_secs(2), read: READ_TIMEOUT };
    let chain = Chain::new(vec![url.parse().unwrap()], ChainMode::Strict, 1, timeouts);
    let socket = tcp_socket(false);
    let start = Instant::now();
    use std::os::fd::AsRawFd;
    let e = chain.connect(socket.as_raw_fd(), &TargetAddr::Ip("192.0.2.1:80".parse().unwrap())).unwrap_err();
    (e.errno(), start.elapsed())
}

#[test]
fn each_fault_fails_with_its_errno_within_the_timeout() {
    let cases = [
        (Fault::Junk, false, libc::EPROTO),
        (Fault::WrongVersion, false, libc::EPROTO),
        (Fault::LongDomain, false, libc::ETIMEDOUT),
        (Fault::UnknownAtyp, false, libc::EPROTO),
        (Fault::NoMethod, false, libc::EACCES),
        (Fault::UnofferedMethod, false, libc::EPROTO),
        (Fault::Silent, false, libc::ETIMEDOUT),
        (Fault::Slow, false, libc::ETIMEDOUT),
        (Fault::CloseAfterGreeting, false, libc::ECONNRESET),
        (Fault::RejectAuth, true, libc::EACCES),
    ];
    for (fault, creds, errno) in cases {
        let (got, took) = core_connect(fault.clone(), creds);
        assert_eq!(got, errno, "{fault:?}");
        assert!(took < READ_TIMEOUT + Duration::from_millis(700), "{fault:?} took {took:?}");
    }
}

#[test]
fn a_reply_truncated_at_every_offset_fails_cleanly() {
    for n in 0..VALID_EXCHANGE.len() {
        let (got, took) = core_connect(Fault::Truncate(n), false);
        assert_eq!(got, libc::ECONNRESET, "cut at {n}");
        assert!(took < READ_TIMEOUT + Duration::from_millis(700), "cut at {n}: {took:?}");
    }
}

/// curl under socksify through a hostile proxy that lives in the client namespace itself.
fn curl_through(fault: Fault) -> (std::process::Output, Duration, Client) {
    let c = Client::new();
    let server = HostileServer::start(fault, Some(&c.netns()));
    let cfg = format!("read_timeout_ms = 800\nconnect_timeout_ms = 2000\n{}", config_for(&server.url()));
    let start = Instant::now();
    let out =
        c.socksify(&cfg, &["curl", "-sS", "--max-time", "30", "http://www.socksify.test:8080/hello.txt"]);
    (out, start.elapsed(), c)
}

#[test]
fn under_the_preload_a_hostile_proxy_fails_the_call_and_nothing_goes_direct() {
    for fault in [Fault::Silent, Fault::Junk, Fault::Slow, Fault::Truncate(7), Fault::NoMethod] {
        let (out, took, c) = curl_through(fault.clone());
        // curl: 7 = could not connect, 28 = timed out (ETIMEDOUT from a silent or slow proxy)
        assert!(matches!(out.status.code(), Some(7) | Some(28)), "{fault:?}: {:?}", out.status);
        assert!(took < Duration::from_secs(5), "{fault:?} took {took:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("connect to www.socksify.test:8080 failed: hop 1"), "{fault:?}: {err}");
        let counters = c.counters();
        assert_eq!((counters.leaked, counters.leaked_dns), (0, 0), "{fault:?}: {counters:?}");
    }
}

#[test]
fn forged_and_fragmented_udp_datagrams_are_dropped() {
    let c = Client::with_udp_relay();
    let server = HostileServer::start(Fault::UdpForgedAndFragment, Some(&c.netns()));
    let py = r#"
import socket
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.settimeout(3)
u.sendto(b'real', ('10.77.0.2', 7))
print(u.recvfrom(100)[0].decode())
try:
    print('extra', u.recvfrom(100))
except socket.timeout:
    print('nothing else')
"#;
    let out = stdout_ok(&c.socksify(&config_for(&server.url()), &["python3", "-c", py]));
    assert_eq!(out, "real\nnothing else\n");
    let counters = c.counters();
    assert_eq!((counters.leaked, counters.leaked_dns), (0, 0), "{counters:?}");
}

#[test]
fn a_bind_second_reply_that_never_comes_fails_accept_within_the_timeout() {
    let c = Client::new();
    let server = HostileServer::start(Fault::BindNoSecondReply, Some(&c.netns()));
    let py = r#"
import socket, time
ctl = socket.create_connection(('10.77.0.2', 21), timeout=10)
l = socket.create_server(('', 0))
t = time.time()
try:
    l.accept(); print('accepted?')
except OSError as e:
    print('failed', e.errno, time.time() - t < 3)
"#;
    let cfg = format!("read_timeout_ms = 800\n{}", config_for(&server.url()));
    let out = stdout_ok(&c.socksify(&cfg, &["python3", "-c", py]));
    assert_eq!(out.trim(), format!("failed {} True", libc::ETIMEDOUT));
    let counters = c.counters();
    assert_eq!((counters.leaked, counters.leaked_dns), (0, 0), "{counters:?}");
}
