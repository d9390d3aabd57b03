//! Stress and resource limits under the preload, in lab namespaces: many threads with a fork in
//! the middle, signals during handshakes, descriptor exhaustion, a full fake-address table,
//! names too long to send.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use socksify_tests::hostile::{Fault, HostileServer};
use socksify_tests::lab::*;

const DANTE: &str = "socks5://10.77.0.2:1080";

#[test]
fn sixty_four_threads_times_two_hundred_connections_with_a_fork_in_the_middle() {
    let c = Client::new();
    let py = r#"
import os, socket, threading, time
targets = [('www.socksify.test', 7), ('10.77.0.2', 7), ('git.socksify.test', 7), ('ftp.socksify.test', 7)]
ok = [0] * 64; bad = []
started = time.time()
def work(t):
    for i in range(200):
        try:
            s = socket.create_connection(targets[(t + i) % 4], timeout=30)
            msg = b'%d-%d\n' % (t, i)
            s.sendall(msg)
            got = b''
            while len(got) < len(msg):
                chunk = s.recv(64)
                if not chunk: break
                got += chunk
            s.close()
            if got == msg: ok[t] += 1
            else: bad.append((t, i, got))
        except OSError as e:
            bad.append((t, i, repr(e)))
        if time.time() - started > 240: return
threads = [threading.Thread(target=work, args=(t,)) for t in range(64)]
[t.start() for t in threads]
time.sleep(0.5)
pid = os.fork()                      # in the middle of it all
if pid == 0:
    n = 0
    for i in range(50):
        s = socket.create_connection(targets[i % 4], timeout=30); s.sendall(b'child\n')
        n += s.recv(16) == b'child\n'; s.close()
    os._exit(0 if n == 50 else 1)
[t.join() for t in threads]
_, status = os.waitpid(pid, 0)
print(sum(ok), len(bad), status, bad[:3])
"#;
    let out = stdout_ok(&c.socksify(&config_for(DANTE), &["python3", "-c", py]));
    assert_eq!(out.trim(), "12800 0 0 []");
    c.assert_no_leak();
}

fn probe() -> &'static str {
    static PROBE: OnceLock<PathBuf> = OnceLock::new();
    PROBE
        .get_or_init(|| {
            let out = std::env::temp_dir().join(format!("socksify-stress-probe-{}", std::process::id()));
            let src = repo_root().join("tests/c/probe.c");
            let ok =
                Command::new("cc").args(["-O1", "-o"]).arg(&out).arg(&src).arg("-lresolv").status().unwrap();
            assert!(ok.success());
            out
        })
        .to_str()
        .unwrap()
}

#[test]
fn signals_during_a_handshake_neither_break_nor_leak_it() {
    let c = Client::new();
    let server = HostileServer::start(Fault::Delayed, Some(&c.netns()));
    let out = c.socksify(&config_for(&server.url()), &[probe(), "eintr", "10.77.0.2"]);
    assert_eq!(stdout_ok(&out).trim(), "ok");
    c.assert_nothing_leaked();
}

#[test]
fn descriptor_exhaustion_gives_a_clean_emfile() {
    let c = Client::with_udp_relay();
    let py = r#"
import resource, socket
resource.setrlimit(resource.RLIMIT_NOFILE, (32, 32))
held = []
try:
    while True: held.append(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
except OSError as e:
    print('exhausted', e.errno)
u = held.pop()
try:
    u.sendto(b'x', ('10.77.0.2', 7)); print('sent')
except OSError as e:
    print('send', e.errno)
held.pop().close(); held.pop().close()
u.settimeout(5); u.sendto(b'y', ('10.77.0.2', 7)); print(u.recvfrom(10)[0].decode())
"#;
    let out = c.socksify(&config_for(DANTE), &["python3", "-c", py]);
    assert_eq!(stdout_ok(&out), format!("exhausted {0}\nsend {0}\ny\n", libc::EMFILE));
    assert!(String::from_utf8_lossy(&out.stderr).contains("UDP association for descriptor"));
    c.assert_nothing_leaked();
}

#[test]
fn a_full_fake_address_table_refuses_new_names_and_keeps_old_ones() {
    let c = Client::new();
    let py = r#"
import socket
first = socket.gethostbyname('www.socksify.test')
failed = 0
for i in range(66000):
    try: socket.getaddrinfo('host%d.example' % i, 80, socket.AF_INET, socket.SOCK_STREAM)
    except socket.gaierror as e: failed += 1; code = e.errno
print(failed, code == socket.EAI_MEMORY, socket.gethostbyname('www.socksify.test') == first)
s = socket.create_connection(('www.socksify.test', 7), timeout=10); s.sendall(b'still\n'); print(s.recv(16).decode().strip())
"#;
    let out = c.socksify(&config_for(DANTE), &["python3", "-c", py]);
    // 65,536 names fit; www.socksify.test took one of them.
    assert_eq!(stdout_ok(&out), "465 True True\nstill\n");
    assert!(String::from_utf8_lossy(&out.stderr).contains("the fake address table is full (65536 names)"));
    c.assert_no_leak();
}

#[test]
fn names_too_long_to_send_fail_cleanly() {
    let c = Client::new();
    let py = r#"
import socket
for n in (254, 255, 300, 1000):
    try: socket.getaddrinfo('a' * 60 + '.' + 'b' * (n - 61), 80); print(n, 'resolved')
    except (socket.gaierror, UnicodeError) as e: print(n, 'refused')
name = '.'.join(['c' * 62] * 4)[:253]
try:
    socket.create_connection((name, 80), timeout=10); print(253, 'connected?')
except OSError as e:
    print(253, 'proxy says', e.errno)
"#;
    let out = stdout_ok(&c.socksify(&config_for(DANTE), &["python3", "-c", py]));
    // The 253-byte name reaches the proxy, which cannot resolve it: dante answers "general
    // failure" (ECONNREFUSED) or "host unreachable".
    let refusal = [libc::ECONNREFUSED, libc::EHOSTUNREACH].map(|e| format!("253 proxy says {e}\n"));
    assert!(out.starts_with("254 refused\n255 refused\n300 refused\n1000 refused\n"), "{out}");
    assert!(refusal.iter().any(|r| out.ends_with(r.as_str())), "{out}");
    c.assert_nothing_leaked();
}
