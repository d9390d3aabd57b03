//! Programs with their own DNS client (Chromium's built-in resolver, Node's `dns.resolve*`
//! through c-ares, `dig @resolver`) under remote DNS: their queries to the system's nameserver
//! (10.77.0.2, the lab's dnsmasq) are answered by socksify's stub — in the library in
//! `--mode preload`, in the kernel guard's supervisor in `--mode auto` — A/AAAA from the fake
//! table (the name then goes to the proxy in the CONNECT), PTR of fake addresses with their
//! names, and every other type over TCP through the chain to `dns_server` (here 10.77.0.3, the
//! same dnsmasq on an address that is not the clients' resolver). Nothing goes to the system's
//! resolver, directly or through the relay; proxies without UDP (`ssh -D`) work as well as
//! dante. Each test runs in a lab namespace that counts every packet it sends, and the
//! resolver's log is read for queries from the client's own addresses.

use std::process::Output;

use socksify_tests::lab::*;

const DANTE: &str = "socks5://10.77.0.2:1080";
const SSH_D: &str = "socks5://10.77.0.2:1084";
const URL: &str = "http://www.socksify.test:8080/hello.txt";

fn config(proxy: &str, dns_server: &str) -> String {
    format!("dns_server = \"{dns_server}\"\n{}", config_for(proxy))
}

fn dns_log() -> std::path::PathBuf {
    let run = std::env::var_os("SOCKSIFY_LAB_RUN").unwrap_or_else(|| "/tmp/socksify-lab".into());
    std::path::PathBuf::from(run).join("dnsmasq.log")
}

/// The resolver's log from now on: `lines()` gives the queries logged since.
struct DnsLog {
    from: usize,
}

impl DnsLog {
    fn mark() -> DnsLog {
        DnsLog { from: std::fs::read_to_string(dns_log()).unwrap_or_default().lines().count() }
    }

    /// Queries logged since the mark, as `query[TYPE] NAME from ADDR`.
    fn queries(&self) -> Vec<String> {
        let text = std::fs::read_to_string(dns_log()).unwrap_or_default();
        text.lines().skip(self.from).filter_map(|l| l.find("query[").map(|at| l[at..].to_owned())).collect()
    }
}

/// The client namespace's own addresses (10.77.0.N, fd77::N).
fn addresses(c: &Client) -> Vec<String> {
    let out = c.run(&["ip", "-o", "addr", "show", "scope", "global"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().nth(3)?.split('/').next().map(str::to_owned))
        .collect()
}

/// Asserts that nothing left the client but to the proxy (no UDP through the relay either) and
/// that the resolver saw no query from the client.
fn assert_resolver_never_asked(c: &Client, log: &DnsLog) -> Vec<String> {
    c.assert_no_leak();
    let counters = c.counters();
    assert_eq!(counters.relayed, 0, "not through the relay either: {counters:?}");
    let mine = addresses(c);
    assert!(!mine.is_empty());
    let queries = log.queries();
    for q in &queries {
        assert!(
            !mine.iter().any(|a| q.ends_with(&format!(" from {a}"))),
            "the system's resolver was asked by the client itself: {q}"
        );
    }
    queries
}

fn text(out: &Output) -> String {
    format!(
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn dig_at_the_system_resolver_is_answered_by_the_stub_in_both_modes() {
    let c = Client::new();
    let log = DnsLog::mark();
    // One run: the fake addresses are the session's (and, in preload mode, the process
    // tree's, through the shared table).
    let script = "a=$(dig +short +time=3 +tries=1 @10.77.0.2 www.example.org); echo $a; \
                  dig +short +tcp +time=3 @10.77.0.2 www.example.org; \
                  dig +short +time=3 -x $a @10.77.0.2; \
                  dig +time=5 +tries=1 @10.77.0.2 mx.example MX | grep -o 'status: [A-Z]*'; \
                  dig +tcp +time=5 +tries=1 @10.77.0.2 txt.example TXT | grep -o 'status: [A-Z]*'";
    for mode in ["preload", "auto"] {
        let out = c.socksify(&config(DANTE, "10.77.0.3:53"), &["--mode", mode, "sh", "-c", script]);
        let stdout = stdout_ok(&out);
        let lines: Vec<&str> = stdout.lines().collect();
        assert!(lines.len() == 5 && lines[0].starts_with("240."), "{mode}: a fake address: {}", text(&out));
        assert_eq!(lines[1], lines[0], "{mode}: the same name over TCP, the same address");
        assert_eq!(lines[2], "www.example.org.", "{mode}: the reverse lookup names it");
        // The lab's dnsmasq refuses MX and TXT (it has none): its own answer, through the chain.
        assert_eq!(&lines[3..], &["status: REFUSED", "status: REFUSED"], "{mode}: {}", text(&out));
    }
    let queries = assert_resolver_never_asked(&c, &log);
    // MX and TXT went to dns_server through dante (from the proxy's side), twice each.
    for ty in ["MX] mx.example", "TXT] txt.example"] {
        let n = queries.iter().filter(|q| q.starts_with(&format!("query[{ty} from 10.77.0."))).count();
        assert!(n >= 2, "{ty} forwarded through the chain: {queries:?}");
    }
    assert!(
        !queries.iter().any(|q| q.contains("www.example.org")),
        "A and PTR came from the fake table: {queries:?}"
    );
}

#[test]
fn a_dns_server_the_chain_cannot_reach_gives_servfail() {
    let c = Client::new();
    let log = DnsLog::mark();
    // Nothing listens on 10.77.0.2:5353/tcp: dante's CONNECT is refused.
    for mode in ["preload", "auto"] {
        let out = c.socksify(
            &config(DANTE, "10.77.0.2:5353"),
            &[
                "--mode",
                mode,
                "sh",
                "-c",
                "dig +time=5 +tries=1 @10.77.0.2 example.org MX | grep -o 'status: [A-Z]*'",
            ],
        );
        assert_eq!(stdout_ok(&out).trim(), "status: SERVFAIL", "{mode}: {}", text(&out));
        if mode == "preload" {
            assert!(String::from_utf8_lossy(&out.stderr).contains("answered SERVFAIL"), "{}", text(&out));
        }
    }
    assert_resolver_never_asked(&c, &log);
}

const NODE: &str = r#"
const dns = require('dns'), http = require('http');
dns.resolve4('www.socksify.test', (err, addrs) => {
  if (err) { console.log('resolve4', err.code); process.exit(1); }
  console.log(addrs.join(','));
  dns.reverse(addrs[0], (err, names) => {
    console.log(err ? 'reverse ' + err.code : names.join(','));
    http.get({ host: addrs[0], port: 8080, path: '/hello.txt' }, res => {
      let body = ''; res.on('data', d => body += d); res.on('end', () => console.log(body));
    }).on('error', e => { console.log('http', e.code); process.exit(1); });
  });
});
"#;

#[test]
fn node_dns_resolve4_then_http_get_through_dante_and_ssh_d() {
    for proxy in [DANTE, SSH_D] {
        for mode in ["preload", "auto"] {
            let c = Client::new();
            let log = DnsLog::mark();
            let out = c.socksify(&config(proxy, "10.77.0.3:53"), &["--mode", mode, "node", "-e", NODE]);
            let stdout = stdout_ok(&out);
            let lines: Vec<&str> = stdout.lines().collect();
            assert!(lines.len() == 3 && lines[0].starts_with("240."), "{proxy} {mode}: {}", text(&out));
            assert_eq!(lines[1], "www.socksify.test", "{proxy} {mode}: PTR of the fake address");
            assert_eq!(lines[2], HELLO, "{proxy} {mode}");
            assert_resolver_never_asked(&c, &log);
        }
    }
}

/// Headless Chromium (`--dump-dom`), with a profile of its own. Its built-in resolver (AsyncDns,
/// on by default on Linux) sends A, AAAA and HTTPS queries to the nameserver itself.
fn chromium(c: &Client, proxy: &str, mode: &str) -> Output {
    let profile = tempdir();
    let profile_arg = format!("--user-data-dir={}", profile.display());
    let mut argv = vec![
        "--mode",
        mode,
        "chromium",
        "--no-sandbox",
        "--headless",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--enable-features=AsyncDns",
        &profile_arg,
    ];
    // The zygote learns its children's pids from SCM_CREDENTIALS: under the guard too, since
    // AF_UNIX sends are the program's own (it hung when the supervisor made them).
    argv.extend(["--dump-dom", URL]);
    let out = c.socksify(&config(proxy, "10.77.0.3:53"), &argv);
    let _ = std::fs::remove_dir_all(&profile);
    out
}

fn tempdir() -> std::path::PathBuf {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("socksify-chromium-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn chromium_fetches_a_page_by_name_through_dante_and_ssh_d_without_asking_the_resolver() {
    for proxy in [DANTE, SSH_D] {
        for mode in ["preload", "auto"] {
            let c = Client::new();
            let log = DnsLog::mark();
            let out = chromium(&c, proxy, mode);
            assert!(stdout_ok(&out).contains(HELLO), "{proxy} {mode}: {}", text(&out));
            let queries = assert_resolver_never_asked(&c, &log);
            // Chromium's own resolver asked for the page's HTTPS record (getaddrinfo cannot):
            // the stub forwarded it through the chain to dns_server.
            assert!(
                queries
                    .iter()
                    .any(|q| q.starts_with("query[HTTPS] _8080._https.www.socksify.test from 10.77.0.")),
                "{proxy} {mode}: Chromium's resolver was not used? {queries:?}"
            );
        }
    }
}

/// A resolver socket's reply is shown as the nameserver's however the program reaches it: on a
/// `dup` of the socket (Python's `socket.fromfd`), and on a socket that sent direct (to
/// loopback) before it asked the nameserver — the library's gate never takes such a
/// `recvfrom` from the guard, which rewrites its source.
#[test]
fn replies_come_from_the_nameserver_on_a_dup_and_after_a_direct_datagram() {
    let py = "import socket, struct\nq = struct.pack('>HHHHHH', 7, 0x100, 1, 0, 0, 0) + b'\\x03www\\x08socksify\\x04test\\x00\\x00\\x01\\x00\\x01'\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\ns.sendto(q, ('10.77.0.2', 53))\nd = socket.fromfd(s.fileno(), socket.AF_INET, socket.SOCK_DGRAM)\nd.settimeout(3)\nprint('dup: reply from', d.recvfrom(512)[1])\nt = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\nt.settimeout(3)\nt.sendto(b'x', ('127.0.0.1', 9))\nt.sendto(q, ('10.77.0.2', 53))\nprint('after a direct datagram: reply from', t.recvfrom(512)[1])\na = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\na.sendto(b'x', ('127.0.0.1', 9))\nn = a.fileno()\nu = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\nu.sendto(q, ('10.77.0.2', 53))\na.close()\nd2 = socket.fromfd(u.fileno(), socket.AF_INET, socket.SOCK_DGRAM)\nd2.settimeout(3)\nprint('dup onto a closed direct socket number', d2.fileno() == n, ': reply from', d2.recvfrom(512)[1])\n";
    let (bare, _) =
        same_as_bare(&config(DANTE, "10.77.0.3:53"), &["auto", "preload"], false, &["python3", "-c", py]);
    assert_eq!(
        bare,
        "dup: reply from ('10.77.0.2', 53)\nafter a direct datagram: reply from ('10.77.0.2', 53)\ndup onto a closed direct socket number True : reply from ('10.77.0.2', 53)\n"
    );
}
