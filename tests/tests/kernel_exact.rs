//! Behaving exactly as the kernel would (issue 12): each test runs one program without socksify
//! and under it (the library alone, and under the kernel guard) in a leak-counting namespace,
//! and the answers must be the same — except that the traffic takes the proxies.

use socksify_tests::build::{c_program, Link};
use socksify_tests::lab::*;

const DANTE: &str = "socks5://10.77.0.2:1080";
const MODES: [&str; 2] = ["preload", "auto"];

/// `tests/c/exact.c CASE` against the lab's TCP echo: the bare run's output, after checking
/// that every socksified run printed the same and sent nothing around the proxies (`proxied`:
/// the case talks to the echo server, so something must have gone through them).
fn exact(case: &str, proxied: bool) -> String {
    let prog = c_program("exact", Link::Dynamic);
    let argv = [prog.to_str().unwrap(), case, NET4, "7"];
    let (bare, counters) = same_as_bare(&config_for(DANTE), &MODES, false, &argv);
    if proxied {
        assert!(counters.iter().all(|c| c.proxied > 0), "nothing went through the proxy: {counters:?}");
    }
    bare
}

#[test]
fn a_second_connect_on_a_connected_socket_is_eisconn_and_the_tunnel_lives_on() {
    let bare = exact("second-connect", true);
    assert_eq!(
        bare,
        "connect: 0 \necho: one\nconnect again: -1 EISCONN\nconnect elsewhere: -1 EISCONN\necho: two\nso_error: 0\n"
    );
}

#[test]
fn a_connect_to_a_proxied_address_on_a_loopback_connection_is_eisconn() {
    let bare = exact("direct-then-proxy", false);
    assert_eq!(bare, "connect loopback: 0 \nconnect proxied: -1 EISCONN\nloopback peer got 10: still here\n");
}

#[test]
fn bad_socket_addresses_are_efault_not_a_crash() {
    let bare = exact("bad-address", true);
    assert!(bare.starts_with("connect 0x10: -1 EFAULT\nconnect at the end of a page: -1 EFAULT\n"), "{bare}");
    assert!(bare.contains("echo: fits\nconnect6 at the end of a page: -1 EFAULT"), "{bare}");
}

#[test]
fn the_unspecified_address_is_this_host_and_stays_local() {
    let bare = exact("unspecified", false);
    for dest in ["0.0.0.0", "::", "::ffff:0.0.0.0"] {
        assert!(bare.contains(&format!("connect {dest}: 0 \naccepted yes: 5 local\n")), "{bare}");
    }
}

#[test]
fn sendmmsg_with_fast_open_on_tcp_goes_through_the_chain() {
    let bare = exact("fastopen-mmsg", true);
    assert!(bare.starts_with("sendmmsg: "), "{bare}");
    assert!(bare.contains("echo: first "), "{bare}");
}

#[test]
fn pthread_cancel_ends_a_thread_blocked_in_recvfrom() {
    let bare = exact("cancel", false);
    assert_eq!(bare, "AF_UNIX recvfrom: cancelled\nsendto loopback: 1 \nUDP recvfrom: cancelled\n");
}

/// A Python program run bare and under socksify (both modes) in namespaces whose UDP to
/// dante's relay counts as relayed: the bare run's output, after checking the others match.
fn python_exact_udp(py: &str) -> String {
    let (bare, counters) = same_as_bare(&config_for(DANTE), &MODES, true, &["python3", "-c", py]);
    assert!(counters.iter().all(|c| c.relayed > 0), "nothing went through the relay: {counters:?}");
    bare
}

#[test]
fn readv_and_writev_on_an_associated_udp_socket_carry_the_datagram_only() {
    let py = r#"
import os, select, socket
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.connect(('10.77.0.2', 7))
print(os.writev(u.fileno(), [b'gathered ', b'from ', b'three']))
select.select([u], [], [], 10)
a, b = bytearray(9), bytearray(30)
n = os.readv(u.fileno(), [a, b])
print(n, bytes(a), bytes(b[:n - 9]))
u.send(b'short')
select.select([u], [], [], 10)
a = bytearray(3)
print(os.readv(u.fileno(), [a]), bytes(a))
"#;
    let bare = python_exact_udp(py);
    assert_eq!(bare, "19\n19 b'gathered ' b'from three'\n3 b'sho'\n");
}

#[test]
fn log_lines_never_reach_a_socket_that_took_descriptor_2() {
    // Started with stderr closed: the first socket is descriptor 2. With -v the library logs a
    // line per connection; none may reach the echo server (it would come back in the data).
    let py = r#"
import os, socket, sys
if len(sys.argv) == 1:
    s = socket.create_connection(('10.77.0.2', 7), timeout=10)
    t = socket.create_connection(('10.77.0.2', 7), timeout=10)
    s.sendall(b'data'); t.sendall(b'more')
    print(s.fileno(), s.recv(100), t.recv(100), flush=True)
    # The socket on descriptor 2 survives an exec, into a program that connects again.
    os.set_inheritable(2, True)
    os.execv(sys.executable, [sys.executable, sys.argv[0], 'again'])
old = socket.socket(fileno=2); old.settimeout(10)
new = socket.create_connection(('10.77.0.2', 7), timeout=10)
old.sendall(b'old'); new.sendall(b'new')
print(old.recv(100), new.recv(100))
"#;
    for mode in MODES {
        let c = Client::new();
        let script = c.config(py);
        let shell = format!("exec /usr/bin/python3 {} 2>&-", script.display());
        let out = c
            .socksify_command(&config_for(DANTE), &["-v", "--mode", mode, "sh", "-c", &shell])
            .output()
            .unwrap();
        assert_eq!(stdout_ok(&out), "2 b'data' b'more'\nb'old' b'new'\n", "--mode {mode}");
        c.assert_no_leak();
    }
}

#[test]
fn a_log_file_that_is_a_fifo_or_in_a_missing_directory_stops_the_cli() {
    let dir = std::env::temp_dir().join(format!("sfy-logfifo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let fifo = dir.join("fifo");
    let _ = std::fs::remove_file(&fifo);
    assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let c = Client::new();
    for (file, why) in [(fifo.clone(), "not a regular file"), (dir.join("missing/log"), "directory")] {
        let cfg = format!("log_file = \"{}\"\n{}", file.display(), config_for(DANTE));
        let out = c.socksify(&cfg, &["true"]);
        assert_eq!(out.status.code(), Some(2), "{file:?}: {out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("log_file") && err.contains(why), "{err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

const WEB: &str = "www.socksify.test";

#[test]
fn a_fake_address_from_one_process_connects_by_name_from_another_after_exec() {
    // getent resolves and exits; curl, another process, connects to the address it printed.
    let shell = format!(
        "ip=$(getent ahostsv4 {WEB} | head -n1 | cut -d' ' -f1); echo $ip | cut -d. -f1; curl -sS --max-time 20 http://$ip:8080/hello.txt"
    );
    let py = format!(
        "import socket, subprocess; ip = socket.gethostbyname('{WEB}'); subprocess.run(['curl', '-sS', '--max-time', '20', 'http://%s:8080/hello.txt' % ip], check=True)"
    );
    for mode in MODES {
        let c = Client::new();
        let out =
            c.socksify_command(&config_for(DANTE), &["--mode", mode, "sh", "-c", &shell]).output().unwrap();
        assert_eq!(stdout_ok(&out), format!("240\n{HELLO}"), "--mode {mode}: shell");
        let out =
            c.socksify_command(&config_for(DANTE), &["--mode", mode, "python3", "-c", &py]).output().unwrap();
        assert_eq!(stdout_ok(&out), HELLO, "--mode {mode}: python then curl");
        c.assert_no_leak();
    }
}

#[test]
fn a_shell_under_socksify_on_shares_one_session_and_it_ends_with_the_shell() {
    let bin = socksify_bin();
    let script = format!(
        "eval \"$({} on -p {DANTE})\"; ip=$(getent ahostsv4 {WEB} | head -n1 | cut -d' ' -f1); \
         curl -sS --max-time 20 http://$ip:8080/hello.txt; echo; echo \"$SOCKSIFY_SESSION\"",
        bin.display()
    );
    let c = Client::new();
    let out = stdout_ok(&c.command(&["bash", "-c", &script]).output().unwrap());
    let (hello, dir) = out.split_once('\n').unwrap();
    assert_eq!(hello, HELLO);
    let dir = std::path::PathBuf::from(dir.trim());
    assert!(dir.is_absolute(), "{out}");
    for _ in 0..100 {
        if !dir.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(!dir.exists(), "{} outlived its shell", dir.display());
    c.assert_no_leak();
}

#[test]
fn a_child_that_changes_directory_keeps_the_configuration_it_was_started_with() {
    // A proxychains.conf that sends everything direct, where proxychains-ng looks first (./).
    let c = Client::new();
    let dir = std::env::temp_dir().join(format!("sfy-cwd-{}", c.n));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("proxychains.conf"),
        "strict_chain\nlocalnet 0.0.0.0/0.0.0.0\n[ProxyList]\nsocks5 10.77.0.2 1080\n",
    )
    .unwrap();
    let shell = format!("cd {} && curl -sS --max-time 20 http://10.77.0.2:8080/hello.txt", dir.display());
    for mode in MODES {
        let c = Client::new();
        let out = c
            .command(&[socksify_bin().to_str().unwrap(), "--mode", mode, "-p", DANTE, "sh", "-c", &shell])
            .output()
            .unwrap();
        assert_eq!(stdout_ok(&out), HELLO, "--mode {mode}");
        c.assert_no_leak();
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn proxy_urls_on_the_command_line_use_socksify_defaults_and_no_file() {
    // A proxychains.conf that proxychains-ng would find: -p alone must not read it.
    let c = Client::new();
    let pc = c.config("strict_chain\nremote_dns_subnet 224\n[ProxyList]\nsocks5 10.77.0.2 1080\n");
    let out = c
        .command(&[socksify_bin().to_str().unwrap(), "-v", "-p", DANTE, "getent", "ahostsv4", WEB])
        .env("PROXYCHAINS_CONF_FILE", &pc)
        .output()
        .unwrap();
    let text = stdout_ok(&out);
    assert!(text.starts_with("240."), "the default fake range, not 224/8: {text}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("settings socksify's defaults with the proxies of -p"), "{err}");
}

#[test]
fn no_password_is_ever_in_an_environment_or_a_message() {
    let url = "socks5://mcuser:mc-pass@10.77.0.2:1083";
    for mode in MODES {
        let c = Client::new();
        let out = c
            .command(&[
                socksify_bin().to_str().unwrap(),
                "--mode",
                mode,
                "-v",
                "-p",
                url,
                "sh",
                "-c",
                "cat /proc/self/environ | tr '\\0' '\\n'; env; \
                 for p in /proc/[0-9]*/cmdline; do case $(tr '\\0' ' ' < $p 2>/dev/null) in /*socksify\\ *) tr '\\0' ' ' < $p; echo;; esac; done; \
                 curl -sS --max-time 20 http://10.77.0.2:8080/hello.txt",
            ])
            .output()
            .unwrap();
        let text = stdout_ok(&out);
        assert!(text.ends_with(&HELLO), "{text}");
        assert!(!text.contains("mc-pass"), "--mode {mode}: the password is in the environment:\n{text}");
        assert!(!String::from_utf8_lossy(&out.stderr).contains("mc-pass"), "--mode {mode}: {out:?}");
        c.assert_no_leak();
    }
    // Bad URLs: refused with a message that shows neither the password nor a control character.
    let c = Client::new();
    for bad in ["socks5://alice:S3cr3t", "socks5://alice:S3cr3t@10.77.0.2:1080\nsocks5://10.77.0.2:1"] {
        let out = c.command(&[socksify_bin().to_str().unwrap(), "-p", bad, "true"]).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("proxy URL") && !err.contains("S3cr3t"), "{err}");
        assert_eq!(err.matches('\n').count(), 1, "one line: {err}");
    }
}

#[test]
fn sockets_closed_with_fclose_leave_nothing_behind() {
    let prog = c_program("fclose", Link::Dynamic);
    for (kind, n) in [("tcp", "5000"), ("udp", "1000")] {
        let argv = [prog.to_str().unwrap(), kind, n, NET4, "7"];
        let c = if kind == "udp" { Client::with_udp_relay() } else { Client::new() };
        let out = stdout_ok(
            &c.socksify_command(
                &config_for(DANTE),
                &["--mode", "preload", argv[0], argv[1], argv[2], argv[3], argv[4]],
            )
            .output()
            .unwrap(),
        );
        // "rss after 500: A kB, after N: B kB, sockets open: K"
        let nums: Vec<i64> = out
            .split(|ch: char| !ch.is_ascii_digit())
            .filter(|w| !w.is_empty())
            .map(|w| w.parse().unwrap())
            .collect();
        let (first, last, open) = (nums[1], nums[3], nums[4]);
        assert!(last - first < 1024, "{kind}: the resident set grew by {} kB: {out}", last - first);
        assert_eq!(open, 0, "{kind}: sockets left open: {out}");
        c.assert_no_leak();
    }
}

#[test]
fn a_server_listening_on_the_wildcard_address_keeps_its_local_clients() {
    // A program with a proxied connection that then serves on 0.0.0.0 at a port of its own
    // choosing (a development server, say): local clients connect as without socksify. (A
    // wildcard listen at a port the kernel picks is the one-connection-back pattern of active
    // FTP: a SOCKS BIND, see preload_bind.rs.)
    let py = r#"
import socket, threading
up = socket.create_connection(('10.77.0.2', 7), timeout=10)
up.sendall(b'x'); up.recv(1)
srv = socket.create_server(('', 18093), reuse_port=False)
print(srv.getsockname())
def client():
    c = socket.create_connection(('127.0.0.1', 18093), timeout=10)
    print(c.recv(10))
t = threading.Thread(target=client); t.start()
conn, peer = srv.accept()
conn.sendall(b'served')
t.join()
print(peer[0])
"#;
    let bare = python_exact_tcp(py);
    assert_eq!(bare, "('0.0.0.0', 18093)\nb'served'\n127.0.0.1\n");
}

/// `python_exact_udp` for TCP programs: bare, then both modes, the same output.
fn python_exact_tcp(py: &str) -> String {
    let (bare, counters) = same_as_bare(&config_for(DANTE), &MODES, false, &["python3", "-c", py]);
    assert!(counters.iter().all(|c| c.proxied > 0), "nothing went through the proxy: {counters:?}");
    bare
}
