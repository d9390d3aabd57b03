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
