//! The network-namespace lab of `scripts/netns-lab`: each test gets a client namespace of its
//! own whose every outgoing packet is counted, so a connection or a DNS query that goes around
//! the proxies is seen, not assumed away.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// The lab's server side (namespace sfy-net).
pub const NET4: &str = "10.77.0.2";
pub const NET6: &str = "fd77::2";
pub const HELLO: &str = "hello from the lab";

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn lab_script() -> PathBuf {
    repo_root().join("scripts/netns-lab")
}

/// The built `socksify` binary (its library sits beside it); `scripts/test` builds both first.
pub fn socksify_bin() -> PathBuf {
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| repo_root().join("target"));
    let profile = if cfg!(debug_assertions) { "debug" } else { "release" };
    let bin = target.join(profile).join("socksify");
    assert!(
        bin.is_file() && bin.with_file_name("libsocksify_preload.so").is_file(),
        "{} and its library are missing: run `cargo build --workspace` (scripts/test does)",
        bin.display()
    );
    bin
}

/// Packets a client namespace sent, by kind.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counters {
    pub proxied: u64,
    pub leaked: u64,
    pub leaked_dns: u64,
    pub relayed: u64,
    /// ICMP destination-unreachable errors the client's kernel sent (not counted as leaks).
    pub unreachable: u64,
    /// The part of `proxied` to dante (port 1080) and to microsocks (10.77.0.2:1082).
    pub dante: u64,
    pub microsocks: u64,
}

/// One client namespace, claimed for one test and handed back on drop.
pub struct Client {
    pub n: u32,
    dir: PathBuf,
}

static NEXT: AtomicU32 = AtomicU32::new(0);
const POOL: u32 = 40;

impl Client {
    /// A fresh client namespace. Fails the test when the lab is not up.
    pub fn new() -> Client {
        Client::with_args(&[])
    }

    /// A client whose UDP to dante's relay ports counts as `relayed`, not `leaked`.
    pub fn with_udp_relay() -> Client {
        Client::with_args(&["--udp-relay"])
    }

    fn with_args(extra: &[&str]) -> Client {
        let status = Command::new(lab_script()).arg("status").stdout(Stdio::null()).status().unwrap();
        assert!(status.success(), "the lab is not up: run `scripts/netns-lab up` (scripts/test does)");
        // Claim a number atomically with a directory: test binaries may run side by side.
        let base = std::env::temp_dir().join("socksify-lab-clients");
        std::fs::create_dir_all(&base).unwrap();
        // Tests share a pool of 1-40, reused from test to test (scripts/netns-lab keeps a
        // namespace and only renews its rules and counters); 181-200 are scripts/bench's and
        // scripts/demo's.
        let start = NEXT.fetch_add(1, Ordering::Relaxed);
        for k in 0..POOL {
            let n = (start + k) % POOL + 1;
            let dir = base.join(n.to_string());
            if std::fs::create_dir(&dir).is_err() {
                continue;
            }
            let out =
                Command::new(lab_script()).arg("client").arg(n.to_string()).args(extra).output().unwrap();
            assert!(out.status.success(), "netns-lab client {n}: {}", String::from_utf8_lossy(&out.stderr));
            return Client { n, dir };
        }
        panic!("no free client namespace number");
    }

    pub fn netns(&self) -> String {
        format!("sfyc-{}", self.n)
    }

    /// Runs `argv` inside the namespace (no socksify).
    pub fn run(&self, argv: &[&str]) -> Output {
        self.command(argv).output().unwrap()
    }

    /// A command inside the namespace, with a time limit so no test can hang.
    pub fn command(&self, argv: &[&str]) -> Command {
        let mut cmd = Command::new("timeout");
        cmd.args(["-k", "5", "60", "ip", "netns", "exec", &self.netns()]);
        if let Ok(dir) = std::env::var("SOCKSIFY_TEST_STRACE") {
            cmd.args(["strace", "-f", "-tt", "-e", "trace=network,poll,ppoll", "-o"])
                .arg(format!("{dir}/strace.{}", self.n));
        }
        cmd.args(argv);
        cmd.stdin(Stdio::null());
        cmd
    }

    /// Writes a configuration file for this client and returns its path.
    pub fn config(&self, text: &str) -> PathBuf {
        let path = self.dir.join(format!("config-{}.toml", NEXT.fetch_add(1, Ordering::Relaxed)));
        std::fs::write(&path, text).unwrap();
        // Configurations with passwords should be private (socksify warns otherwise).
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        path
    }

    /// `socksify -f CONFIG ARGV…` inside the namespace.
    pub fn socksify(&self, config: &str, argv: &[&str]) -> Output {
        self.socksify_command(config, argv).output().unwrap()
    }

    pub fn socksify_command(&self, config: &str, argv: &[&str]) -> Command {
        let cfg = self.config(config);
        let bin = socksify_bin();
        let mut full = vec![bin.to_str().unwrap(), "-f", cfg.to_str().unwrap()];
        full.extend_from_slice(argv);
        self.command(&full)
    }

    pub fn counters(&self) -> Counters {
        let out = Command::new(lab_script()).args(["counters", &self.n.to_string()]).output().unwrap();
        assert!(out.status.success(), "counters: {}", String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8_lossy(&out.stdout);
        let mut c = Counters::default();
        for field in text.split_whitespace() {
            let (k, v) = field.split_once('=').expect("key=value");
            let v: u64 = v.parse().expect("a count");
            match k {
                "proxied" => c.proxied = v,
                "leaked" => c.leaked = v,
                "leaked_dns" => c.leaked_dns = v,
                "relayed" => c.relayed = v,
                "unreachable" => c.unreachable = v,
                "dante" => c.dante = v,
                "microsocks" => c.microsocks = v,
                _ => {}
            }
        }
        c
    }

    /// Asserts that nothing left the namespace except to the proxies (and that something did).
    pub fn assert_no_leak(&self) {
        let c = self.assert_nothing_leaked();
        assert!(c.proxied > 0 || c.relayed > 0, "nothing went through the proxies at all: {c:?}");
    }

    /// Asserts that nothing left the namespace except to the proxies.
    pub fn assert_nothing_leaked(&self) -> Counters {
        // Late packets (FIN/ACK of a closing connection) are still the proxy's; give them a moment.
        std::thread::sleep(Duration::from_millis(100));
        let c = self.counters();
        assert_eq!((c.leaked, c.leaked_dns), (0, 0), "packets went around the proxies: {c:?}");
        c
    }
}

impl Default for Client {
    fn default() -> Self {
        Client::new()
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        // The namespace stays for the next test (`scripts/netns-lab down` removes them all).
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// How many queries the lab's resolver (dnsmasq, 10.77.0.2 / fd77::2 and 10.77.0.3 / fd77::3)
/// has answered so far.
pub fn dns_queries() -> u64 {
    let out = Command::new(lab_script()).arg("dns-queries").output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().expect("a count")
}

/// How many queries the lab's resolver has logged for `name` (its dnsmasq.log).
pub fn dns_queries_for(name: &str) -> usize {
    let run = std::env::var("SOCKSIFY_LAB_RUN").unwrap_or_else(|_| "/tmp/socksify-lab".into());
    let log = std::fs::read_to_string(format!("{run}/dnsmasq.log")).unwrap_or_default();
    let needle = format!("] {name} from ");
    log.lines().filter(|l| l.contains("query[") && l.contains(&needle)).count()
}

/// ssh to the lab's sshd as root with the lab's key, running `command`.
pub fn ssh_argv<'a>(host: &'a str, command: &'a str) -> Vec<&'a str> {
    vec![
        "ssh",
        "-i",
        "/tmp/socksify-lab/ssh/id_ed25519",
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "BatchMode=yes",
        "-o",
        "ConnectTimeout=20",
        "-F",
        "none",
        host,
        command,
    ]
}

/// A one-proxy configuration.
pub fn config_for(url: &str) -> String {
    format!("[[proxy]]\nurl = \"{url}\"\n")
}

/// Stdout of a successful run, or a panic that shows everything.
pub fn stdout_ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `argv` without socksify, then under it (`-f config --mode M` for each of `modes`),
/// each in a fresh namespace (`udp_relay`: dante's relay counts as relayed): the bare run's
/// stdout, after checking that every socksified run printed the same — the kernel's answers
/// are the reference — and sent nothing around the proxies. Returns each run's counters too.
pub fn same_as_bare(config: &str, modes: &[&str], udp_relay: bool, argv: &[&str]) -> (String, Vec<Counters>) {
    let client = || if udp_relay { Client::with_udp_relay() } else { Client::new() };
    let bare = stdout_ok(&client().command(argv).output().unwrap());
    let mut counters = Vec::new();
    for mode in modes {
        let c = client();
        let mut full = vec!["--mode", mode];
        full.extend_from_slice(argv);
        let out = c.socksify_command(config, &full).output().unwrap();
        assert_eq!(stdout_ok(&out), bare, "--mode {mode}: not what the kernel answers without socksify");
        counters.push(c.assert_nothing_leaked());
    }
    (bare, counters)
}

/// The log of the lab's service `name` (e.g. `dante-isolate`), as it is now.
pub fn service_log(name: &str) -> String {
    let run = std::env::var("SOCKSIFY_LAB_RUN").unwrap_or_else(|_| "/tmp/socksify-lab".into());
    std::fs::read_to_string(format!("{run}/{name}.log")).unwrap_or_default()
}
