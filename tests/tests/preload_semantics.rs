//! The library's C-level promises, checked by a small C program (`tests/c/probe.c`) under
//! socksify in a lab namespace: errno kept, socket flags kept, resolver semantics as glibc's,
//! `getpeername` answering with the address the program connected to.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use socksify_tests::lab::*;

fn probe() -> &'static str {
    static PROBE: OnceLock<PathBuf> = OnceLock::new();
    PROBE
        .get_or_init(|| {
            let src = repo_root().join("tests/c/probe.c");
            let out = std::env::temp_dir().join(format!("socksify-probe-{}", std::process::id()));
            let status = Command::new("cc")
                .args(["-Wall", "-O1", "-o"])
                .arg(&out)
                .arg(&src)
                .arg("-lresolv")
                .status()
                .expect("cc");
            assert!(status.success(), "cannot compile {}", src.display());
            out
        })
        .to_str()
        .unwrap()
}

fn run_probe(proxy: &str, what: &str, host: &str) -> String {
    let c = Client::new();
    let out = c.socksify(&config_for(proxy), &[probe(), what, host]);
    let text = stdout_ok(&out);
    c.assert_nothing_leaked();
    text.trim().to_owned()
}

#[test]
fn errno_is_preserved() {
    assert_eq!(run_probe("socks5://10.77.0.2:1080", "errno", "www.socksify.test"), "ok");
}

#[test]
fn a_non_blocking_socket_connects_and_keeps_its_flags() {
    assert_eq!(run_probe("socks5://10.77.0.2:1082", "nonblocking", "www.socksify.test"), "ok");
    assert_eq!(run_probe("socks5://10.77.0.2:1082", "nonblocking", "10.77.0.2"), "ok");
}

#[test]
fn getaddrinfo_honours_hints_like_glibc() {
    assert_eq!(run_probe("socks5://10.77.0.2:1080", "hints", "www.socksify.test"), "ok");
}

#[test]
fn hostent_calls_and_reverse_lookups_answer_without_the_resolver() {
    assert_eq!(run_probe("socks5://10.77.0.2:1080", "hostent", "www.socksify.test"), "ok");
}

#[test]
fn raw_resolver_queries_fail_instead_of_leaking() {
    assert_eq!(run_probe("socks5://10.77.0.2:1080", "resquery", "www.socksify.test"), "ok");
}

#[test]
fn getpeername_gives_the_address_the_program_connected_to() {
    assert_eq!(run_probe("socks5://10.77.0.2:1080", "peer", "www.socksify.test"), "ok");
    assert_eq!(run_probe("socks5://10.77.0.2:1080", "peer", "10.77.0.2"), "ok");
}

#[test]
fn a_refused_destination_reports_econnrefused() {
    let c = Client::new();
    // Port 7 of ftp.socksify.test is open; the proxy's errors come from a closed port instead.
    let out = c.socksify(&config_for("socks5://10.77.0.2:1080"), &[probe(), "refused", "10.77.0.99"]);
    let text = stdout_ok(&out);
    // dante answers "host unreachable" or "connection refused" for an address with no host.
    assert!(
        text.trim() == format!("errno={}", libc::EHOSTUNREACH)
            || text.trim() == format!("errno={}", libc::ECONNREFUSED),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    c.assert_nothing_leaked();
}

/// A proxied connection duplicated every way (dup, dup2, F_DUPFD, F_DUPFD_CLOEXEC), the
/// original closed each time: the survivor keeps the connection and its `getpeername`.
const PY_DUPS: &str = r#"
import fcntl, os, socket
s = socket.create_connection(('www.socksify.test', 8080), timeout=10)
peer = s.getpeername()
fd = s.detach()
for how in ('dup', 'dup2', 'F_DUPFD', 'F_DUPFD_CLOEXEC'):
    if how == 'dup': new = os.dup(fd)
    elif how == 'dup2': new = os.dup2(fd, 200)
    else: new = fcntl.fcntl(fd, getattr(fcntl, how), 300)
    os.close(fd)
    fd = new
    print(how, socket.socket(fileno=os.dup(fd)).getpeername() == peer)
s = socket.socket(fileno=fd); s.settimeout(10)
s.sendall(b'GET / HTTP/1.0\r\nHost: www.socksify.test\r\n\r\n')
print(s.recv(12).decode())
"#;

#[test]
fn a_duplicate_keeps_the_connection_and_its_peer_when_the_original_closes() {
    for mode in ["preload", "auto"] {
        let c = Client::new();
        let out =
            c.socksify(&config_for("socks5://10.77.0.2:1080"), &["--mode", mode, "python3", "-c", PY_DUPS]);
        assert_eq!(
            stdout_ok(&out),
            "dup True\ndup2 True\nF_DUPFD True\nF_DUPFD_CLOEXEC True\nHTTP/1.0 200\n",
            "--mode {mode}"
        );
        c.assert_no_leak();
    }
}

/// The system calls of one proxied connect of a blocking socket without a timeout, between the
/// program's `socket` and its `connect`'s return, all processes counted (the kernel guard's
/// supervisor too): strace of a Python program that connects twice (the first pays what a
/// process pays once) and marks the second with writes to stderr. Also: the SOCKS5 greeting
/// and CONNECT leave in one write.
fn connect_syscalls(mode: &str) -> (usize, String) {
    let c = Client::new();
    let trace = std::env::temp_dir().join(format!("sfy-count-{mode}-{}.strace", std::process::id()));
    let py = "import socket, sys\nfor i in range(2):\n    s = socket.socket()\n    sys.stderr.write('MARK-A\\n'); sys.stderr.flush()\n    s.connect(('10.77.0.2', 7))\n    sys.stderr.write('MARK-B\\n'); sys.stderr.flush()\n    s.sendall(b'x'); assert s.recv(1) == b'x'; s.close()\n";
    let cfg = c.config(&config_for("socks5://10.77.0.2:1080"));
    let bin = socksify_bin();
    let argv = [
        "strace",
        "-f",
        "-qq",
        "-e",
        "signal=none",
        "-o",
        trace.to_str().unwrap(),
        bin.to_str().unwrap(),
        "-q",
        "--mode",
        mode,
        "-f",
        cfg.to_str().unwrap(),
        "python3",
        "-c",
        py,
    ];
    let out = c.run(&argv);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    c.assert_nothing_leaked();
    let text = std::fs::read_to_string(&trace).unwrap();
    let _ = std::fs::remove_file(&trace);
    // The second connection's window: after its MARK-A write, before its MARK-B write.
    let lines: Vec<&str> = text.lines().collect();
    let marks: Vec<usize> =
        lines.iter().enumerate().filter(|(_, l)| l.contains("MARK-")).map(|(i, _)| i).collect();
    assert_eq!(marks.len(), 4, "{text}");
    let window = &lines[marks[2] + 1..marks[3]];
    let calls: Vec<&str> = window.iter().copied().filter(|l| !l.contains("resumed>")).collect();
    let one_write = calls.iter().any(|l| l.contains("\"\\5\\1\\0\\5\\1\\0\\1\\nM\\0\\2\\0\\7\""));
    assert!(one_write, "greeting and CONNECT in one write:\n{}", calls.join("\n"));
    (calls.len(), calls.join("\n"))
}

#[test]
fn a_proxied_connect_makes_few_system_calls_in_both_modes() {
    // Issue 23's goals are 10 and 14; what the library makes today, as a ceiling that only
    // goes down.
    let (n, calls) = connect_syscalls("preload");
    assert!(n <= 14, "{n} system calls in preload mode:\n{calls}");
    let (n, calls) = connect_syscalls("auto");
    assert!(n <= 14, "{n} system calls in the default mode:\n{calls}");
}

/// microsocks 1.0 reads a SOCKS5 greeting alone and drops what follows it: the first
/// connection of a session finds out (one probe, about a second) and every later one, in any
/// process of the session, is asked step by step at once.
#[test]
fn a_hop_that_drops_a_handshake_in_one_write_is_probed_once_per_session() {
    let c = Client::new();
    let fetch = "curl -s -o /dev/null -w '%{http_code}\\n' http://10.77.0.2:8080/hello.txt";
    let script = format!("{fetch}; {fetch}; {fetch}");
    for mode in ["preload", "auto"] {
        let started = std::time::Instant::now();
        let out = c.socksify(&config_for("socks5://10.77.0.2:1082"), &["--mode", mode, "sh", "-c", &script]);
        let took = started.elapsed();
        assert_eq!(stdout_ok(&out), "200\n200\n200\n", "{mode}");
        assert!(took < std::time::Duration::from_millis(2500), "{mode}: {took:?} (one probe of 1 s at most)");
        // The session's memory, not a timeout of each connection's.
        assert!(took > std::time::Duration::from_millis(900), "{mode}: {took:?}: was the hop probed at all?");
    }
    // Step by step from the start: no probe.
    let started = std::time::Instant::now();
    let cfg = "socks5_pipelining = false\n[[proxy]]\nurl = \"socks5://10.77.0.2:1082\"\n";
    let out = c.socksify(cfg, &["--mode", "preload", "sh", "-c", &script]);
    assert_eq!(stdout_ok(&out), "200\n200\n200\n");
    assert!(started.elapsed() < std::time::Duration::from_millis(900), "{:?}", started.elapsed());
    c.assert_nothing_leaked();
}

/// A UDP socket's number closed and taken by a TCP socket behind the library's back (raw
/// system calls, `tests/c/reuse.c`): with `udp = "direct"`, what the library remembered of
/// the UDP socket must not send the TCP connection direct. It is proxied, in both modes;
/// nothing leaks.
#[test]
fn a_number_reused_behind_the_librarys_back_never_takes_the_old_sockets_route() {
    let bin = std::env::temp_dir().join(format!("socksify-reuse-{}", std::process::id()));
    let src = repo_root().join("tests/c/reuse.c");
    let status = Command::new("cc").args(["-Wall", "-O1", "-o"]).arg(&bin).arg(&src).status().expect("cc");
    assert!(status.success());
    let cfg = "udp = \"direct\"\n[[proxy]]\nurl = \"socks5://10.77.0.2:1080\"\n";
    for mode in ["preload", "auto"] {
        let c = Client::new();
        let out = c.socksify(cfg, &["--mode", mode, bin.to_str().unwrap(), "10.77.0.2", "7"]);
        assert_eq!(stdout_ok(&out), "echo: ok\n", "{mode}");
        c.assert_nothing_leaked();
    }
}
