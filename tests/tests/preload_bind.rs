//! Incoming connections through SOCKS BIND: active-mode FTP (curl's and Python ftplib's way)
//! against vsftpd in the lab, through dante-server, leak-proof; local servers keep working; a
//! proxy without BIND fails cleanly.

use socksify_tests::lab::*;

const DANTE: &str = "socks5://10.77.0.2:1080";
const DANTE6: &str = "socks5://[fd77::2]:1080";
const DANTE4: &str = "socks4://10.77.0.2:1080";
const FTP_HELLO: &str = "hello from the lab ftp";

fn curl_active(c: &Client, proxy: &str, url: &str) -> String {
    stdout_ok(&c.socksify(&config_for(proxy), &["curl", "-sS", "--max-time", "20", "--ftp-port", "-", url]))
}

#[test]
fn curl_active_ftp_through_socks5_and_socks4_by_address_and_name() {
    for (proxy, url) in [
        (DANTE, "ftp://10.77.0.2/hello.txt"),
        (DANTE, "ftp://ftp.socksify.test/hello.txt"),
        (DANTE4, "ftp://10.77.0.2/hello.txt"),
    ] {
        let c = Client::new();
        assert_eq!(curl_active(&c, proxy, url).trim(), FTP_HELLO, "{proxy} {url}");
        // Replies to a direct data connection would leave the namespace: none did.
        c.assert_no_leak();
    }
}

#[test]
fn curl_active_ftp_over_ipv6() {
    let c = Client::new();
    assert_eq!(curl_active(&c, DANTE6, "ftp://[fd77::2]/hello.txt").trim(), FTP_HELLO);
    c.assert_no_leak();
}

const FTPLIB: &str = r#"
import ftplib, hashlib, sys
ftp = ftplib.FTP(timeout=20)
ftp.connect(sys.argv[1], 21)
ftp.login()
ftp.set_pasv(False)
data = bytearray()
ftp.retrbinary('RETR big.bin', data.extend)
want = bytearray()
ftp.retrbinary('RETR big.sha256', want.extend)
ftp.quit()
print(hashlib.sha256(data).hexdigest() == want.split()[0].decode(), len(data))
"#;

#[test]
fn python_ftplib_active_mode_by_address_and_name() {
    for (proxy, host) in
        [(DANTE, "10.77.0.2"), (DANTE, "ftp.socksify.test"), (DANTE4, "10.77.0.2"), (DANTE6, "fd77::2")]
    {
        let c = Client::new();
        let out = stdout_ok(&c.socksify(&config_for(proxy), &["python3", "-c", FTPLIB, host]));
        assert_eq!(out.trim(), "True 262144", "{proxy} {host}");
        c.assert_no_leak();
    }
}

#[test]
fn a_local_server_keeps_serving() {
    let c = Client::new();
    // A loopback server, and a wildcard one in a process without proxied connections (bind = auto).
    let script = "cd /tmp && python3 -m http.server 18081 --bind 127.0.0.1 >/dev/null 2>&1 & srv=$!; \
                  python3 -c 'import socket; s=socket.create_server((\"\", 18082)); c,_=s.accept(); c.sendall(b\"wild\\n\")' & \
                  sleep 1; curl -s -o /dev/null -w '%{http_code}\\n' http://127.0.0.1:18081/; \
                  python3 -c 'import socket; print(socket.create_connection((\"127.0.0.1\", 18082)).recv(10).decode().strip())'; \
                  kill $srv; wait";
    let out = stdout_ok(&c.socksify(&config_for(DANTE), &["sh", "-c", script]));
    assert_eq!(out.trim(), "200\nwild");
}

#[test]
fn a_proxy_without_bind_fails_the_listen_cleanly() {
    let c = Client::new();
    let py = r#"
import socket
c = socket.create_connection(('10.77.0.2', 7), timeout=10)
try:
    l = socket.create_server(('', 0))
    print('listening', l.getsockname())
except OSError as e:
    print('refused', e.errno)
"#;
    let out = c.socksify(&config_for("socks5://10.77.0.2:1082"), &["python3", "-c", py]);
    let text = stdout_ok(&out);
    assert!(text.starts_with("refused"), "{text}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("failed: BIND for a connection from 10.77.0.2:7"), "{err}");
    c.assert_no_leak();
}

#[test]
fn bind_off_leaves_listens_alone() {
    let c = Client::new();
    let py = r#"
import socket
c = socket.create_connection(('10.77.0.2', 7), timeout=10)
l = socket.create_server(('', 0))
print(l.getsockname()[0])
"#;
    let out =
        stdout_ok(&c.socksify(&format!("bind = \"off\"\n{}", config_for(DANTE)), &["python3", "-c", py]));
    assert_eq!(out.trim(), "0.0.0.0", "a real local listen");
}

#[test]
fn a_non_blocking_listener_says_eagain_until_the_peer_arrives_and_select_wakes() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let c = Client::new();
    let py = r#"
import socket, select, sys
ctl = socket.create_connection(('10.77.0.2', 7), timeout=10)
l = socket.create_server(('', 0)); l.setblocking(False)
try:
    l.accept(); print('accepted too early')
except BlockingIOError:
    print('eagain')
print(l.getsockname()[1], flush=True)
r, _, _ = select.select([l], [], [], 20)
conn, peer = l.accept()
print('ready', r == [l], conn.recv(16).decode(), flush=True)
"#;
    let mut child = c
        .socksify_command(&config_for(DANTE), &["-v", "python3", "-c", py])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    {
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut next = || match lines.next() {
            Some(line) => line.unwrap(),
            None => {
                let mut err = String::new();
                std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
                panic!("the program stopped early: {err}");
            }
        };
        assert_eq!(next(), "eagain");
        let port = next();
        std::thread::sleep(std::time::Duration::from_millis(300));
        let peer = format!(
            "import socket; socket.create_connection(('10.77.0.2', {port}), timeout=5).sendall(b'knock')"
        );
        let st = std::process::Command::new("ip")
            .args(["netns", "exec", "sfy-net", "python3", "-c", &peer])
            .status()
            .unwrap();
        assert!(st.success());
        assert_eq!(next(), "ready True knock");
    }
    assert!(child.wait().unwrap().success());
    c.assert_no_leak();
}
