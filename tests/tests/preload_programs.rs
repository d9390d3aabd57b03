//! Real programs under `socksify`, in a client network namespace of the lab whose every packet is
//! counted: they reach their servers through dante-server, microsocks and `ssh -D`, and nothing —
//! no connection, no DNS query — goes around the proxies.

use std::time::{Duration, Instant};

use socksify_tests::lab::*;

const DANTE: &str = "socks5://10.77.0.2:1080";
const DANTE6: &str = "socks5://[fd77::2]:1080";
const DANTE4: &str = "socks4://10.77.0.2:1080";
const DANTE_AUTH: &str = "socks5://socksuser:socks-pass@10.77.0.2:1081";
const MICROSOCKS: &str = "socks5://10.77.0.2:1082";
const MICROSOCKS6: &str = "socks5://[fd77::2]:1082";
const MICROSOCKS_AUTH: &str = "socks5://mcuser:mc-pass@10.77.0.2:1083";
const SSH_D4A: &str = "socks4a://10.77.0.2:1084";
const SSH_D: &str = "socks5://10.77.0.2:1084";

fn curl(client: &Client, config: &str, url: &str) -> String {
    stdout_ok(&client.socksify(config, &["curl", "-sS", "--max-time", "20", url]))
}

#[test]
fn the_lab_detects_a_direct_connection_and_a_dns_query() {
    // The control experiment: without socksify, both leaks are counted.
    let c = Client::new();
    let out = c.run(&["curl", "-sS", "--max-time", "10", "http://www.socksify.test:8080/hello.txt"]);
    assert_eq!(stdout_ok(&out).trim(), HELLO, "the leak reached a server that answered");
    let counters = c.counters();
    assert!(counters.leaked_dns > 0, "{counters:?}");
    assert!(counters.leaked > 0, "{counters:?}");
}

#[test]
fn curl_by_address_and_by_name_through_each_server() {
    for proxy in [DANTE, DANTE_AUTH, MICROSOCKS, MICROSOCKS_AUTH, SSH_D, SSH_D4A] {
        let c = Client::new();
        let cfg = config_for(proxy);
        assert_eq!(curl(&c, &cfg, "http://10.77.0.2:8080/hello.txt").trim(), HELLO, "{proxy} by address");
        assert_eq!(
            curl(&c, &cfg, "http://www.socksify.test:8080/hello.txt").trim(),
            HELLO,
            "{proxy} by name"
        );
        c.assert_no_leak();
    }
}

#[test]
fn socks4_carries_addresses_but_fails_closed_on_names() {
    let c = Client::new();
    let cfg = config_for(DANTE4);
    assert_eq!(curl(&c, &cfg, "http://10.77.0.2:8080/hello.txt").trim(), HELLO);
    let out =
        c.socksify(&cfg, &["curl", "-sS", "--max-time", "10", "http://www.socksify.test:8080/hello.txt"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("socks4a"), "the log says what to use instead");
    c.assert_no_leak();
}

#[test]
fn ipv6_by_address_and_by_name() {
    for proxy in [DANTE6, MICROSOCKS6] {
        let c = Client::new();
        let cfg = config_for(proxy);
        assert_eq!(curl(&c, &cfg, "http://[fd77::2]:8080/hello.txt").trim(), HELLO, "{proxy}");
        assert_eq!(curl(&c, &cfg, "http://www6.socksify.test:8080/hello.txt").trim(), HELLO, "{proxy}");
        // An IPv6-only lookup gets an IPv6 fake address, still carried as a name.
        let out = c.socksify(
            &cfg,
            &["curl", "-6", "-sS", "--max-time", "20", "http://www6.socksify.test:8080/hello.txt"],
        );
        assert_eq!(stdout_ok(&out).trim(), HELLO);
        c.assert_no_leak();
    }
}

#[test]
fn a_chain_of_three_different_servers() {
    let c = Client::new();
    let cfg = format!(
        "[[proxy]]\nurl = \"{DANTE}\"\n[[proxy]]\nurl = \"{MICROSOCKS}\"\n[[proxy]]\nurl = \"{SSH_D4A}\"\n"
    );
    assert_eq!(curl(&c, &cfg, "http://www.socksify.test:8080/hello.txt").trim(), HELLO);
    let out = c.socksify(
        &cfg,
        &[
            "curl",
            "-sS",
            "--max-time",
            "20",
            "-o",
            "/dev/null",
            "-w",
            "%{size_download}",
            "http://10.77.0.2:8080/big.bin",
        ],
    );
    assert_eq!(stdout_ok(&out), "1048576");
    c.assert_no_leak();
}

#[test]
fn wget_by_name() {
    let c = Client::new();
    let out = c.socksify(
        &config_for(MICROSOCKS),
        &["wget", "-q", "-O", "-", "http://www.socksify.test:8080/hello.txt"],
    );
    assert_eq!(stdout_ok(&out).trim(), HELLO);
    c.assert_no_leak();
}

#[test]
fn python_urllib_and_asyncio_by_name() {
    let c = Client::new();
    let cfg = config_for(DANTE);
    let urllib = "import urllib.request; print(urllib.request.urlopen('http://www.socksify.test:8080/hello.txt', timeout=20).read().decode())";
    assert_eq!(stdout_ok(&c.socksify(&cfg, &["python3", "-c", urllib])).trim(), HELLO);
    let asyncio = r#"
import asyncio
async def main():
    r, w = await asyncio.wait_for(asyncio.open_connection('www.socksify.test', 8080), 20)
    w.write(b'GET /hello.txt HTTP/1.0\r\nHost: www.socksify.test\r\n\r\n')
    data = await asyncio.wait_for(r.read(), 20)
    print(data.split(b'\r\n\r\n', 1)[1].decode())
    # many at once on one event loop (non-blocking sockets)
    async def one(i):
        r, w = await asyncio.open_connection('www.socksify.test', 7)
        w.write(b'ping %d\n' % i)
        line = await r.readline()
        w.close()
        return line == b'ping %d\n' % i
    print(all(await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(20))), 30)))
asyncio.run(main())
"#;
    let out = stdout_ok(&c.socksify(&cfg, &["python3", "-c", asyncio]));
    assert_eq!(out.trim(), format!("{HELLO}\nTrue"));
    c.assert_no_leak();
}

#[test]
fn node_http_by_name() {
    if which("node").is_none() {
        panic!("node is not installed: scripts/test-servers deps installs it");
    }
    let c = Client::new();
    let js = "require('http').get('http://www.socksify.test:8080/hello.txt', r => { let d=''; r.on('data', x => d += x); r.on('end', () => console.log(d)); }).on('error', e => { console.error(e); process.exit(1); })";
    assert_eq!(stdout_ok(&c.socksify(&config_for(DANTE), &["node", "-e", js])).trim(), HELLO);
    c.assert_no_leak();
}

#[test]
fn ssh_by_name_through_the_proxy() {
    let c = Client::new();
    let out = c.socksify(&config_for(MICROSOCKS), &ssh_argv("root@www.socksify.test", "echo ssh-ok"));
    assert_eq!(stdout_ok(&out).trim(), "ssh-ok");
    c.assert_no_leak();
}

#[test]
fn git_clone_over_http_by_name() {
    let c = Client::new();
    let dest = std::env::temp_dir().join(format!("socksify-git-{}", c.n));
    let _ = std::fs::remove_dir_all(&dest);
    let out = c.socksify(
        &config_for(DANTE),
        &["git", "clone", "-q", "http://git.socksify.test:8080/repo.git", dest.to_str().unwrap()],
    );
    stdout_ok(&out);
    assert_eq!(std::fs::read_to_string(dest.join("README.txt")).unwrap().trim(), "lab repo");
    let _ = std::fs::remove_dir_all(&dest);
    c.assert_no_leak();
}

#[test]
fn threads_by_name_all_connect() {
    let c = Client::new();
    let py = r#"
import socket, threading
ok = []
def work(t):
    for i in range(20):
        s = socket.create_connection(('www.socksify.test', 7), timeout=30)
        msg = b'%d-%d\n' % (t, i)
        s.sendall(msg)
        ok.append(s.recv(64) == msg)
        s.close()
ts = [threading.Thread(target=work, args=(t,)) for t in range(32)]
[t.start() for t in ts]; [t.join() for t in ts]
print(len(ok), all(ok))
"#;
    assert_eq!(stdout_ok(&c.socksify(&config_for(DANTE), &["python3", "-c", py])).trim(), "640 True");
    c.assert_no_leak();
}

#[test]
fn forked_children_connect_with_names_resolved_before_and_after_fork() {
    let c = Client::new();
    let py = r#"
import os, socket
addr = socket.getaddrinfo('www.socksify.test', 7, socket.AF_INET, socket.SOCK_STREAM)[0][4]
pids = []
for k in range(8):
    pid = os.fork()
    if pid == 0:
        ok = True
        for target in (addr, ('git.socksify.test', 7)):
            s = socket.create_connection(target, timeout=20)
            s.sendall(b'child\n')
            ok = ok and s.recv(16) == b'child\n'
            s.close()
        os._exit(0 if ok else 1)
    pids.append(pid)
codes = [os.waitpid(p, 0)[1] for p in pids]
# a name the children resolved is known to the parent at the same address
print(codes == [0] * 8, socket.gethostbyname('git.socksify.test') == socket.gethostbyname('git.socksify.test'))
"#;
    assert_eq!(stdout_ok(&c.socksify(&config_for(DANTE), &["python3", "-c", py])).trim(), "True True");
    c.assert_no_leak();
}

#[test]
fn a_shell_runs_several_socksified_children() {
    let c = Client::new();
    let script = "curl -sS --max-time 20 http://www.socksify.test:8080/hello.txt; \
                  (curl -sS --max-time 20 http://10.77.0.2:8080/hello.txt &); \
                  wget -q -O - http://git.socksify.test:8080/hello.txt; wait";
    let out = stdout_ok(&c.socksify(&config_for(DANTE), &["sh", "-c", script]));
    assert_eq!(out.matches(HELLO).count(), 3, "{out}");
    c.assert_no_leak();
}

#[test]
fn a_dead_proxy_fails_fast_and_nothing_goes_direct() {
    let c = Client::new();
    let cfg = config_for("socks5://10.77.0.2:1089");
    let start = Instant::now();
    let out =
        c.socksify(&cfg, &["curl", "-sS", "--max-time", "20", "http://www.socksify.test:8080/hello.txt"]);
    assert!(!out.status.success());
    assert!(start.elapsed() < Duration::from_secs(5), "{:?}", start.elapsed());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("hop 1 (socks5://10.77.0.2:1089): cannot connect to the proxy"), "{err}");
    let counters = c.counters();
    assert_eq!((counters.leaked, counters.leaked_dns), (0, 0), "{counters:?}");
}

#[test]
fn a_bad_config_stops_before_the_program_runs() {
    let c = Client::new();
    let marker = std::env::temp_dir().join(format!("socksify-marker-{}", c.n));
    let _ = std::fs::remove_file(&marker);
    for bad in [
        "chain = \"sideways\"\n[[proxy]]\nurl = \"socks5://10.77.0.2:1080\"\n",
        "[[proxy]]\nurl = \"socks5://10.77.0.2:99999\"\n",
        "",
    ] {
        let out = c.socksify(bad, &["touch", marker.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(2), "{bad:?}");
        assert!(!marker.exists(), "the program ran with {bad:?}");
        assert!(String::from_utf8_lossy(&out.stderr).starts_with("socksify: "));
    }
    let out = c.socksify("", &["-p", "socks7://x", "touch", marker.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(!marker.exists());
}

#[test]
fn local_dns_mode_uses_the_system_resolver() {
    // The lab's resolver answers every name with 10.77.0.2: with dns = "local" the lookup is
    // made in the namespace (counted), the connection still goes through the proxy.
    let c = Client::new();
    let cfg = format!("dns = \"local\"\n{}", config_for(DANTE));
    assert_eq!(curl(&c, &cfg, "http://www.socksify.test:8080/hello.txt").trim(), HELLO);
    let counters = c.counters();
    assert!(counters.leaked_dns > 0, "{counters:?}");
    assert_eq!(counters.leaked, 0, "{counters:?}");
}

#[test]
fn verbose_logs_the_path_and_quiet_logs_nothing() {
    let c = Client::new();
    let cfg = format!("[[proxy]]\nurl = \"{DANTE_AUTH}\"\n[[proxy]]\nurl = \"{MICROSOCKS}\"\n");
    let out = c.socksify(&cfg, &["-v", "curl", "-sS", "http://www.socksify.test:8080/hello.txt"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "www.socksify.test:8080 via socks5://socksuser@10.77.0.2:1081 -> socks5://10.77.0.2:1082"
        ),
        "{err}"
    );
    assert!(!err.contains("socks-pass"), "passwords never appear: {err}");
    let out =
        c.socksify(&config_for("socks5://10.77.0.2:1089"), &["-q", "curl", "-s", "http://10.77.0.2:8080/"]);
    assert!(!String::from_utf8_lossy(&out.stderr).contains("socksify"), "quiet");
    c.assert_no_leak();
}

fn which(program: &str) -> Option<std::path::PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?).map(|d| d.join(program)).find(|p| p.is_file())
}

#[test]
fn a_panic_inside_a_hook_fails_the_call_and_nothing_goes_direct() {
    let c = Client::new();
    let out = c
        .socksify_command(
            &config_for(DANTE),
            &["curl", "-sS", "--max-time", "10", "http://10.77.0.2:8080/hello.txt"],
        )
        .env("SOCKSIFY_TEST_PANIC", "1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(7), "curl: could not connect");
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("internal error in a hook; the call failed (nothing went direct)"), "{err}");
    let counters = c.counters();
    assert_eq!((counters.leaked, counters.leaked_dns), (0, 0), "{counters:?}");
}

#[test]
fn ipv4_mapped_destinations_and_localhost() {
    let c = Client::new();
    let py = r#"
import socket
s = socket.socket(socket.AF_INET6)
s.connect(('::ffff:10.77.0.2', 7))
s.sendall(b'mapped\n'); print(s.recv(16) == b'mapped\n')
print(sorted({a[4][0] for a in socket.getaddrinfo('localhost', 80)}))
"#;
    let out = stdout_ok(&c.socksify(&config_for(DANTE), &["python3", "-c", py]));
    assert_eq!(out.trim(), "True\n['127.0.0.1', '::1']");
    c.assert_no_leak();
}

#[test]
fn failures_go_to_the_configured_log_file() {
    let c = Client::new();
    let log = std::env::temp_dir().join(format!("socksify-log-{}.log", c.n));
    let _ = std::fs::remove_file(&log);
    let cfg = format!("log_file = \"{}\"\n{}", log.display(), config_for("socks5://10.77.0.2:1089"));
    let out = c.socksify(&cfg, &["curl", "-s", "http://10.77.0.2:8080/hello.txt"]);
    assert!(!out.status.success());
    assert!(!String::from_utf8_lossy(&out.stderr).contains("socksify["), "nothing on stderr");
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("connect to 10.77.0.2:8080 failed: hop 1 (socks5://10.77.0.2:1089)"), "{logged}");
    let _ = std::fs::remove_file(&log);
}
