//! The kernel guard: programs the preload library never sees — Go (static and cgo), static musl
//! and glibc programs with their own resolvers, inline `syscall` instructions, io_uring, glibc's
//! `__connect`, `dlsym`, ctypes, children that drop the environment, a connect from a signal
//! handler — all go through the proxies or fail, in lab namespaces whose counters must show no
//! packet around the proxies and no DNS query at all. Also: the supervisor is not noticed
//! (signals, exit statuses, job control, interactive ssh), and where the guard cannot be
//! installed, auto mode falls back for dynamic programs and refuses static ones.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use socksify_tests::build::{c_program, go_program, Link};
use socksify_tests::lab::*;

const DANTE: &str = "socks5://10.77.0.2:1080";
const SSH_D: &str = "socks5://10.77.0.2:1084";
const BY_NAME: &str = "http://www.socksify.test:8080/hello.txt";

fn bypass(link: Link) -> String {
    c_program("bypass", link).to_str().unwrap().to_owned()
}

fn goget(cgo: bool) -> String {
    go_program("goget", cgo).to_str().unwrap().to_owned()
}

/// Runs `argv` under socksify in a fresh client and checks that it printed the lab's page and
/// that nothing went around the proxies — no packet, no DNS query.
fn fetches_without_leaks(proxy: &str, argv: &[&str]) {
    let c = Client::new();
    let before = dns_queries();
    let out = c.socksify(&config_for(proxy), argv);
    assert!(stdout_ok(&out).ends_with(HELLO), "{argv:?}: {}", String::from_utf8_lossy(&out.stdout));
    c.assert_no_leak();
    assert_eq!(dns_queries(), before, "{argv:?}: the lab's resolver was asked");
}

#[test]
fn go_http_clients_by_name_static_and_cgo_with_either_resolver() {
    for proxy in [DANTE, SSH_D] {
        fetches_without_leaks(proxy, &[&goget(false), BY_NAME]);
        fetches_without_leaks(proxy, &[&goget(true), BY_NAME]);
        // cgo's resolver asks libc (the library's fake address), Go's own sends queries (the
        // stub answers): either way Go connects by itself and the guard proxies it.
        fetches_without_leaks(proxy, &["env", "GODEBUG=netdns=cgo", &goget(true), BY_NAME]);
        fetches_without_leaks(proxy, &["env", "GODEBUG=netdns=go", &goget(true), BY_NAME]);
    }
}

#[test]
fn static_programs_resolve_with_their_own_resolvers() {
    fetches_without_leaks(
        DANTE,
        &[&bypass(Link::MuslStatic), "libc", "www.socksify.test", "8080", "hello.txt"],
    );
    fetches_without_leaks(
        DANTE,
        &[&bypass(Link::GlibcStatic), "libc", "www.socksify.test", "8080", "hello.txt"],
    );
    fetches_without_leaks(DANTE, &[&bypass(Link::MuslStatic), "raw", "10.77.0.2", "8080", "hello.txt"]);
}

#[test]
fn inline_syscalls_alias_dlsym_and_ctypes_connects_are_proxied() {
    let b = bypass(Link::Dynamic);
    for mode in ["raw", "alias", "dlsym"] {
        fetches_without_leaks(DANTE, &[&b, mode, "www.socksify.test", "8080", "hello.txt"]);
    }
    let py = "import ctypes, socket\nlibc = ctypes.CDLL('libc.so.6')\ns = socket.socket()\nsa = bytes([2, 0, 0x1f, 0x90, 10, 77, 0, 2]) + bytes(8)\nassert libc.connect(s.fileno(), sa, 16) == 0\ns.sendall(b'GET /hello.txt HTTP/1.0\\r\\n\\r\\n')\ndata = b''\nwhile True:\n    d = s.recv(4096)\n    if not d: break\n    data += d\nprint(data.split(b'\\r\\n\\r\\n', 1)[1].decode(), end='')\n";
    fetches_without_leaks(DANTE, &["python3", "-c", py]);
}

#[test]
fn io_uring_is_refused_and_the_program_falls_back_to_a_proxied_connect() {
    let b = bypass(Link::Dynamic);
    // The control experiment: without socksify, io_uring connects directly and the lab sees it.
    let bare = Client::new();
    let out = bare.run(&[&b, "uring", "10.77.0.2", "8080", "hello.txt"]);
    assert!(stdout_ok(&out).contains("connected with io_uring"));
    assert!(bare.counters().leaked > 0);
    let c = Client::new();
    let out = c.socksify(&config_for(DANTE), &[&b, "uring", "www.socksify.test", "8080", "hello.txt"]);
    let text = stdout_ok(&out);
    assert!(text.starts_with("uring: fallback (Function not implemented)"), "{text}");
    assert!(text.ends_with(HELLO));
    c.assert_no_leak();
}

#[test]
fn children_that_drop_the_environment_are_still_proxied() {
    fetches_without_leaks(DANTE, &["env", "-i", "/usr/bin/curl", "-sS", "--max-time", "20", BY_NAME]);
    fetches_without_leaks(
        DANTE,
        &[&bypass(Link::Dynamic), "exec-empty-env", "/usr/bin/curl", "-sS", BY_NAME],
    );
    let unset = "import os; os.environ.pop('LD_PRELOAD'); os.execvp('curl', ['curl', '-sS', 'http://www.socksify.test:8080/hello.txt'])";
    fetches_without_leaks(DANTE, &["python3", "-c", unset]);
}

#[test]
fn a_connect_from_a_signal_handler_inside_a_hook_is_proxied() {
    let c = Client::new();
    let out = c.socksify(&config_for(DANTE), &[&bypass(Link::Dynamic), "signal", "10.77.0.2", "8080"]);
    let text = stdout_ok(&out);
    let ok: u32 = text
        .trim()
        .strip_prefix("handler connects: ")
        .and_then(|r| r.strip_suffix(" ok, 0 failed"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("some handler connects failed: {text}"));
    assert!(ok >= 30, "{text}");
    c.assert_no_leak();
}

#[test]
fn bad_socket_address_pointers_give_efault_as_without_socksify() {
    let b = bypass(Link::Dynamic);
    let c = Client::new();
    let bare = stdout_ok(&c.run(&[&b, "efault"]));
    assert_eq!(bare, "low pointer: -1 EFAULT\nend of page: -1 EFAULT\n");
    for mode in ["auto", "syscall", "preload"] {
        let out = c.socksify(&config_for(DANTE), &["--mode", mode, &b, "efault"]);
        assert_eq!(stdout_ok(&out), bare, "--mode {mode}");
    }
    c.assert_nothing_leaked();
}

#[test]
fn queries_to_the_system_resolver_are_answered_by_socksify_and_never_leave() {
    let c = Client::with_udp_relay();
    let before = dns_queries();
    // 10.77.0.2 is the client's resolv.conf nameserver: dig's queries never reach it. One run:
    // the fake addresses are the session's.
    let script = "a=$(dig +short +time=3 +tries=1 @10.77.0.2 www.example.org); echo $a; \
                  dig +short +tcp +time=3 @10.77.0.2 www.example.org; \
                  dig +short +time=3 -x $a @10.77.0.2";
    let out = c.socksify(&config_for(DANTE), &["sh", "-c", script]);
    let text = stdout_ok(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.len() == 3 && lines[0].starts_with("240."), "a fake address: {text}");
    assert_eq!(lines[1], lines[0], "the same name over TCP: the same address");
    assert_eq!(lines[2], "www.example.org.", "the reverse lookup names it");
    let counters = c.assert_nothing_leaked();
    assert_eq!(counters.relayed, 0, "not through the relay either: {counters:?}");
    assert_eq!(dns_queries(), before, "the lab's resolver was asked");
}

#[test]
fn udp_other_than_dns_and_raw_sockets_are_refused_in_syscall_mode() {
    let c = Client::new();
    let py = "import socket\nu = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.settimeout(3)\ntry:\n    u.sendto(b'x', ('10.77.0.2', 7)); print(u.recvfrom(10)[0].decode())\nexcept OSError as e:\n    print('udp', e.errno)\ntry:\n    socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP); print('raw ok')\nexcept OSError as e:\n    print('raw', e.errno)\ntry:\n    socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0); print('packet ok')\nexcept OSError as e:\n    print('packet', e.errno)\n";
    let out = c.socksify(&config_for(DANTE), &["--mode", "syscall", "python3", "-c", py]);
    assert_eq!(
        stdout_ok(&out),
        format!("udp {}\nraw {}\npacket {}\n", libc::ENETUNREACH, libc::EPERM, libc::EPERM)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("UDP to 10.77.0.2:7 refused"), "{err}");
    assert!(err.contains("raw sockets would go around the proxies"), "{err}");
    c.assert_nothing_leaked();
}

#[test]
fn one_slow_handshake_does_not_hold_up_the_others() {
    let c = Client::new();
    // Nothing answers at 10.77.0.99: dante's connect there takes seconds to fail.
    let out = c.socksify(&config_for(DANTE), &[&goget(false), "-race", BY_NAME, "http://10.77.0.99:8080/"]);
    let text = stdout_ok(&out);
    let ms: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("fast: ")?.strip_suffix(" ms")?.parse().ok())
        .unwrap_or_else(|| panic!("{text}"));
    assert!(ms < 1500, "the fast connection waited for the slow one: {ms} ms\n{text}");
    assert!(text.contains("slow: error"), "{text}");
    c.assert_no_leak();
}

/// A Go program's non-blocking connect gets `EINPROGRESS` at once, as from the kernel, and
/// its `getsockopt(SO_ERROR)` and `getpeername` the handshake's end: the page is fetched, or
/// a refusing destination gives what Go says bare ("connect: connection refused").
#[test]
fn a_go_programs_connect_is_answered_at_once_and_finished_in_the_background() {
    let c = Client::new();
    let trace = std::env::temp_dir().join(format!("sfy-go-{}.strace", std::process::id()));
    let url = "http://10.77.0.2:8080/hello.txt";
    let cfg = c.config(&config_for(DANTE));
    let strace =
        ["strace", "-f", "-qq", "-e", "trace=connect", "-e", "signal=none", "-o", trace.to_str().unwrap()];
    let (bin, go) = (socksify_bin(), goget(false));
    let sfy = [bin.to_str().unwrap(), "-f", cfg.to_str().unwrap(), go.as_str(), url];
    let argv: Vec<&str> = strace.iter().chain(sfy.iter()).copied().collect();
    let out = c.run(&argv);
    assert!(stdout_ok(&out).ends_with(HELLO));
    let text = std::fs::read_to_string(&trace).unwrap();
    // The program's connect to the destination (the supervisor's go to the proxy, port 1080).
    let lines: Vec<&str> = text.lines().collect();
    let i = lines.iter().position(|l| l.contains("htons(8080)")).unwrap_or_else(|| panic!("{text}"));
    let pid = lines[i].split_whitespace().next().unwrap();
    let result = if lines[i].contains("<unfinished") {
        lines[i + 1..].iter().find(|l| l.starts_with(pid) && l.contains("resumed")).copied().unwrap_or("")
    } else {
        lines[i]
    };
    assert!(result.contains("= -1 EINPROGRESS"), "{text}");
    let _ = std::fs::remove_file(&trace);
    // (A proxy that refuses gives the same: `connect: connection refused`, shown by hand; the
    // lab counts a connection to a port that is not a proxy's as a leak.)
    {
        let out = c.socksify(&config_for(DANTE), &[&goget(false), "http://10.77.0.2:9/"]);
        assert_eq!(out.status.code(), Some(1));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("connect: connection refused"), "{err}");
    }
    c.assert_no_leak();
    // What the same program says bare (its packets count as leaks from here on).
    let bare = c.run(&[&goget(false), "http://10.77.0.2:9/"]);
    assert!(String::from_utf8_lossy(&bare.stderr).contains("connect: connection refused"));
}

#[test]
fn active_ftp_through_bind_in_syscall_mode() {
    let c = Client::new();
    let py = "import ftplib, hashlib\nf = ftplib.FTP('10.77.0.2', timeout=20); f.login(); f.set_pasv(False)\nchunks = []\nf.retrbinary('RETR big.bin', chunks.append)\nprint(hashlib.sha256(b''.join(chunks)).hexdigest())\nf.quit()\n";
    let out = c.socksify(&config_for(DANTE), &["--mode", "syscall", "python3", "-c", py]);
    let want = std::fs::read_to_string("/tmp/socksify-lab/ftp/big.sha256").unwrap();
    assert_eq!(stdout_ok(&out).trim(), want.split_whitespace().next().unwrap());
    c.assert_no_leak();
}

#[test]
fn daemons_the_program_leaves_behind_are_still_supervised() {
    let c = Client::new();
    let out_file = std::env::temp_dir().join(format!("sfy-daemon-{}", std::process::id()));
    let _ = std::fs::remove_file(&out_file);
    let script = format!(
        "(sleep 1; {} {BY_NAME} > {}) </dev/null >/dev/null 2>&1 & exit 3",
        goget(false),
        out_file.display()
    );
    let started = Instant::now();
    let out = c.socksify(&config_for(DANTE), &["sh", "-c", &script]);
    assert_eq!(out.status.code(), Some(3), "the program's own status, at once");
    assert!(started.elapsed() < Duration::from_millis(900), "socksify waited for the daemon");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::fs::read_to_string(&out_file).unwrap_or_default() != HELLO && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(std::fs::read_to_string(&out_file).unwrap_or_default(), HELLO);
    let _ = std::fs::remove_file(&out_file);
    c.assert_no_leak();
}

#[test]
fn signals_reach_the_program_and_its_exit_status_is_socksifys() {
    let c = Client::new();
    let cfg = config_for(DANTE);
    // The program is the process socksify was started as; with SOCKSIFY_GUARD_FRONT=1 (where
    // Yama keeps the supervisor an ancestor) a front process stands in for it and passes on.
    for front in [false, true] {
        let socksify = |argv: &[&str]| {
            let mut cmd = c.socksify_command(&cfg, argv);
            if front {
                cmd.env("SOCKSIFY_GUARD_FRONT", "1");
            }
            cmd
        };
        assert_eq!(socksify(&["sh", "-c", "exit 7"]).output().unwrap().status.code(), Some(7));
        let out = socksify(&["sh", "-c", "kill -SEGV $$"]).output().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(out.status.signal(), Some(libc::SIGSEGV), "the program's signal: {:?}", out.status);
        // A signal sent to socksify reaches the program once; SIGTERM then ends it, as it would.
        let script = "trap 'echo usr1' USR1; echo ready $$; while :; do sleep 0.05; done";
        let mut child =
            socksify(&["sh", "-c", script]).stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let ready = lines.next().unwrap().unwrap();
        let pid = child.id() as libc::pid_t;
        let socksify_pid = wait_for_descendant(pid, if front { "socksify" } else { "sh" });
        if !front {
            assert_eq!(ready, format!("ready {socksify_pid}"));
            let stat = std::fs::read_to_string(format!("/proc/{socksify_pid}/stat")).unwrap();
            let ppid = stat.rsplit_once(')').unwrap().1.split_whitespace().nth(1).unwrap().to_owned();
            assert_eq!(ppid, pid.to_string(), "the program is the process socksify was started as");
        }
        // SAFETY: signalling the socksify process of this test.
        unsafe { libc::kill(socksify_pid, libc::SIGUSR1) };
        assert_eq!(lines.next().unwrap().unwrap(), "usr1");
        // SAFETY: as above.
        unsafe { libc::kill(socksify_pid, libc::SIGTERM) };
        let status = child.wait().unwrap();
        assert_eq!(status.signal(), Some(libc::SIGTERM), "{status:?}");
    }
}

/// What a shell sees of a job, and what the job sees of its place: the same under the guard
/// as bare (the program keeps socksify's pid, its parent, group and session; it has no extra
/// child; `timeout`, `kill -STOP`, `wait` are exact; the supervisor is in none of its groups).
#[test]
fn the_program_is_the_process_the_shell_started() {
    let c = Client::new();
    let cfg = c.config(&config_for(DANTE));
    let marker = std::env::temp_dir().join(format!("sfy-pid-{}", std::process::id()));
    let script = |prefix: &str| {
        format!(
            r#"M={m}; rm -f $M
{p} sh -c 'echo "$$ $PPID $(ps -o pgid= -p $$) $(ps -o sid= -p $$)" > '$M'; sleep 0.3' & B=$!; wait $B; echo "wait=$?"
read pid ppid pgid sid < $M
[ "$pid" = "$B" ] && echo pid-is-bang; [ "$ppid" = "$$" ] && echo parent-is-shell
[ $pgid = $(ps -o pgid= -p $$) ] && echo group-is-shells; [ $sid = $(ps -o sid= -p $$) ] && echo session-is-shells
{p} python3 -c 'import os
try:
    os.wait(); print("a child")
except ChildProcessError:
    print("no child")
def comm(p):
    try:
        return open(f"/proc/{{p}}/comm").read().strip() if os.getpgid(int(p)) == os.getpgid(0) else ""
    except OSError:
        return ""
print("socksify in my group:", [p for p in os.listdir("/proc") if p.isdigit() and comm(p) == "socksify"])'
timeout 0.5 {p} sleep 5; echo "timeout=$?"
{p} sleep 5 & P=$!; sleep 0.4; kill -STOP $P; sleep 0.2; S=$(ps -o stat= -p $P); kill -CONT $P; kill $P; wait $P; echo "stopped=${{S:0:1}} term=$?"
{p} sh -c 'kill -STOP $$; echo woke' & P=$!; sleep 0.4; S=$(ps -o stat= -p $P); kill -CONT $P; wait $P; echo "self-stop=${{S:0:1}} wait=$?"
"#,
            m = marker.display(),
            p = prefix
        )
    };
    let bare = c.run(&["setsid", "bash", "-c", &script("")]);
    let sfy = format!("{} -f {}", socksify_bin().display(), cfg.display());
    let guarded = c.run(&["setsid", "bash", "-c", &script(&sfy)]);
    let want = "wait=0\npid-is-bang\nparent-is-shell\ngroup-is-shells\nsession-is-shells\nno child\nsocksify in my group: []\ntimeout=124\nstopped=T term=143\nwoke\nself-stop=T wait=0\n";
    assert_eq!(stdout_ok(&bare), want, "bare: {}", String::from_utf8_lossy(&bare.stderr));
    assert_eq!(stdout_ok(&guarded), want, "guarded: {}", String::from_utf8_lossy(&guarded.stderr));
    let _ = std::fs::remove_file(&marker);
}

/// The pid of the process named `comm` among `pid` and its descendants (the first found).
fn wait_for_descendant(pid: libc::pid_t, comm: &str) -> libc::pid_t {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        let mut todo = vec![pid];
        while let Some(p) = todo.pop() {
            if std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == comm) {
                return p;
            }
            let children =
                std::fs::read_to_string(format!("/proc/{p}/task/{p}/children")).unwrap_or_default();
            todo.extend(children.split_whitespace().filter_map(|c| c.parse::<libc::pid_t>().ok()));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("no {comm} under {pid}");
}

/// An interactive shell in a tmux pane inside client `c`'s namespace.
struct Tmux {
    socket: String,
    last: std::cell::RefCell<String>,
}

impl Tmux {
    fn start(c: &Client) -> Tmux {
        let socket = format!("sfy-test-{}-{}", std::process::id(), c.n);
        let shell = format!("ip netns exec {} bash --norc --noprofile", c.netns());
        let ok = Command::new("tmux")
            .args(["-L", &socket, "-f", "/dev/null", "new-session", "-d", "-x", "160", "-y", "40", &shell])
            .env("PS1", "$ ")
            .status()
            .expect("tmux (scripts/test-servers deps installs it)");
        assert!(ok.success());
        let t = Tmux { socket, last: Default::default() };
        t.wait_for("#", 1);
        t
    }

    fn keys(&self, keys: &[&str]) {
        let ok = Command::new("tmux")
            .args(["-L", &self.socket, "send-keys"])
            .args(keys)
            .status()
            .unwrap()
            .success();
        assert!(ok, "tmux send-keys {keys:?} failed; the screen was:\n{}", self.last.borrow());
        *self.last.borrow_mut() = self.screen();
    }

    fn screen(&self) -> String {
        let out = Command::new("tmux")
            .args(["-L", &self.socket, "capture-pane", "-p", "-S", "-200"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits until the screen shows `text` `times` times at least.
    fn wait_for(&self, text: &str, times: usize) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let screen = self.screen();
            if screen.matches(text).count() >= times {
                return screen;
            }
            assert!(Instant::now() < deadline, "never saw {text:?} ({times}x):\n{screen}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux").args(["-L", &self.socket, "kill-server"]).status();
    }
}

#[test]
fn job_control_and_an_interactive_ssh_session_work_through_the_supervisor() {
    let c = Client::new();
    let cfg = c.config(&config_for(DANTE));
    let bin = socksify_bin();
    let t = Tmux::start(&c);
    let run = |cmd: &str| format!("{} -f {} {cmd}", bin.display(), cfg.display());
    t.keys(&[&run("sleep 30"), "Enter"]);
    std::thread::sleep(Duration::from_millis(700));
    t.keys(&["C-z"]);
    t.wait_for("Stopped", 1);
    t.keys(&["jobs -l; echo jobs-listed", "Enter"]);
    t.wait_for("jobs-listed\n", 1);
    t.keys(&["fg", "Enter"]);
    std::thread::sleep(Duration::from_millis(700));
    t.keys(&["C-c"]);
    t.keys(&["echo status=$?", "Enter"]);
    t.wait_for("status=130", 1);
    // An interactive ssh through the proxy, by the terminal.
    let key = "/tmp/socksify-lab/ssh/id_ed25519";
    let ssh = run(&format!("ssh -tt -i {key} -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -F none root@www.socksify.test"));
    t.keys(&[&ssh, "Enter"]);
    std::thread::sleep(Duration::from_millis(1500));
    // Only the ssh session has SSH_CONNECTION, naming the proxy's address as its client.
    t.keys(&["echo remote-$((6*7))-$SSH_CONNECTION", "Enter"]);
    t.wait_for("remote-42-10.77.0.2 ", 1);
    t.keys(&["exit", "Enter"]);
    t.keys(&["echo ssh-status=$?", "Enter"]);
    t.wait_for("ssh-status=0", 1);
    drop(t);
    c.assert_no_leak();
}

fn no_seccomp(argv: &[&str]) -> Vec<String> {
    let mut v =
        vec![bypass(Link::Dynamic), "no-seccomp".to_owned(), socksify_bin().to_str().unwrap().to_owned()];
    v.extend(argv.iter().map(|s| s.to_string()));
    v
}

#[test]
fn without_the_guard_dynamic_programs_fall_back_and_static_ones_are_refused() {
    let c = Client::new();
    let cfg = c.config(&config_for(DANTE));
    let cfg = cfg.to_str().unwrap();
    let argv = no_seccomp(&["-f", cfg, "curl", "-sS", "--max-time", "20", BY_NAME]);
    let out = c.run(&argv.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(stdout_ok(&out), HELLO);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("the kernel guard is not available") && err.contains("NOT covered"), "{err}");
    c.assert_no_leak();
    let goget_static = goget(false);
    for (mode, code) in [("auto", 126), ("syscall", 126)] {
        let argv = no_seccomp(&["-f", cfg, "--mode", mode, &goget_static, BY_NAME]);
        let out = c.run(&argv.iter().map(String::as_str).collect::<Vec<_>>());
        assert_eq!(out.status.code(), Some(code), "--mode {mode}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(out.stdout.is_empty(), "the program never ran");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("refusing to run"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    c.assert_no_leak();
}

#[test]
fn socksify_inside_socksify_stays_under_the_outer_guard() {
    let bin = socksify_bin();
    let c = Client::new();
    let cfg = c.config(&config_for(DANTE));
    let inner = [bin.to_str().unwrap(), "-f", cfg.to_str().unwrap()];
    let mut argv = inner.to_vec();
    argv.extend([bin.to_str().unwrap(), "-f", cfg.to_str().unwrap()]);
    let go = goget(false);
    let mut static_argv = argv.clone();
    static_argv.extend([go.as_str(), BY_NAME]);
    argv.extend(["curl", "-sS", "--max-time", "20", BY_NAME]);
    assert_eq!(stdout_ok(&c.command(&argv).output().unwrap()), HELLO);
    assert_eq!(stdout_ok(&c.command(&static_argv).output().unwrap()), HELLO);
    c.assert_no_leak();
}

#[test]
fn verbose_says_which_mode_runs_and_why() {
    let c = Client::new();
    let out = c.socksify(&config_for(DANTE), &["-v", "curl", "-sS", BY_NAME]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("mode auto: the library in curl (a dynamically linked program), under the kernel guard"),
        "{err}"
    );
    let out = c.socksify(&config_for(DANTE), &["-v", &goget(false), BY_NAME]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "is a static Go program, which the library cannot enter: the kernel guard does everything"
        ),
        "{err}"
    );
    assert!(err.contains("(kernel guard)"), "{err}");
}

#[test]
fn a_datagram_to_an_af_unspec_address_is_checked_like_any_other() {
    // An IPv4 UDP socket sends a datagram addressed AF_UNSPEC to that address: the library
    // relays it (auto, preload); the guard alone refuses it as it refuses any UDP but DNS.
    let c = Client::with_udp_relay();
    for (mode, expected) in
        [("auto", "sent 6, echoed"), ("preload", "sent 6, echoed"), ("syscall", "sendto: ENETUNREACH")]
    {
        let out = c.socksify(
            &config_for(DANTE),
            &["--mode", mode, &bypass(Link::Dynamic), "udp-unspec", "10.77.0.2", "7"],
        );
        assert_eq!(stdout_ok(&out).trim(), expected, "--mode {mode}");
    }
    c.assert_nothing_leaked();
}

/// Between two internet sockets the supervisor acts on the very socket it checked. (Between an
/// AF_UNIX and an internet socket the race is hostile code's: the AF_UNIX call is the program's
/// own, so that its credentials are exact — the README's threat model.)
#[test]
fn swapping_the_socket_behind_a_descriptor_during_a_connect_cannot_go_around() {
    let c = Client::new();
    let out = c.socksify(
        &config_for(DANTE),
        &["--mode", "syscall", &bypass(Link::MuslStatic), "fdswap", "2000", "10.77.0.2", "8080", "udp"],
    );
    assert!(stdout_ok(&out).starts_with("connects that succeeded: "));
    c.assert_nothing_leaked();
}

#[test]
fn the_program_cannot_reach_into_the_supervisor_or_other_processes() {
    let c = Client::new();
    let out = c.socksify(&config_for(DANTE), &[&bypass(Link::Dynamic), "reach"]);
    assert_eq!(stdout_ok(&out), "ptrace: EPERM\npidfd_getfd: EPERM\nprocess_vm_writev: EPERM\n");
    assert!(String::from_utf8_lossy(&out.stderr).contains("outside the program's tree"));
}

#[test]
fn source_routes_and_multicast_joins_are_refused() {
    let c = Client::new();
    let py = "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\nfor name, args in [('lsrr', (socket.IPPROTO_IP, socket.IP_OPTIONS, bytes([0x83, 7, 4, 10, 77, 0, 2, 0]))), ('join', (socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, socket.inet_aton('239.1.2.3') + socket.inet_aton('0.0.0.0'))), ('none', (socket.IPPROTO_IP, socket.IP_OPTIONS, b''))]:\n    try:\n        s.setsockopt(*args); print(name, 'ok')\n    except OSError as e:\n        print(name, e.errno)\n";
    let out = c.socksify(&config_for(DANTE), &["python3", "-c", py]);
    assert_eq!(stdout_ok(&out), format!("lsrr {0}\njoin {0}\nnone ok\n", libc::EPERM));
    c.assert_nothing_leaked();
}

#[test]
fn getpeername_and_so_error_after_a_disconnect_are_the_kernels() {
    let b = bypass(Link::MuslStatic);
    let bare = Client::new();
    let want = stdout_ok(&bare.run(&[&b, "unspec-peer", "10.77.0.2", "8080"]));
    let c = Client::new();
    let got = stdout_ok(
        &c.socksify(&config_for(DANTE), &["--mode", "syscall", &b, "unspec-peer", "10.77.0.2", "8080"]),
    );
    assert_eq!(got, want);
    c.assert_no_leak();
}

#[test]
fn a_blocking_connect_honours_so_sndtimeo() {
    let c = Client::new();
    let server = socksify_tests::hostile::HostileServer::start(
        socksify_tests::hostile::Fault::Silent,
        Some(&c.netns()),
    );
    let out = c.socksify(
        &config_for(&server.url()),
        &["--mode", "syscall", &bypass(Link::MuslStatic), "sndtimeo", "10.77.0.2", "8080", "700"],
    );
    let text = stdout_ok(&out);
    let ms: u64 = text
        .trim()
        .strip_prefix("connect: ETIMEDOUT after ")
        .and_then(|r| r.strip_suffix(" ms"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{text}"));
    assert!((650..2000).contains(&ms), "{text}");
    c.assert_nothing_leaked();
}

#[test]
fn closed_standard_descriptors_signals_from_the_same_group_and_direct_stops() {
    let c = Client::new();
    let cfg = c.config(&config_for(DANTE));
    let s = format!("{} -f {}", socksify_bin().display(), cfg.display());
    let marker = std::env::temp_dir().join(format!("sfy-closed-{}", std::process::id()));
    let script = format!(
        r#"{s} sh -c 'echo ran > {m}' <&-; echo "in=$? $(cat {m})"
{s} sh -c 'echo ran > {m}' >&-; echo "out=$? $(cat {m})"
{s} sh -c '(sleep 0.3; curl -s --max-time 10 {url} > {m}.d) &' 2>&-; sleep 2; echo "daemon without stderr=$(cat {m}.d)"
{s} sleep 5 & sleep 0.3; kill $!; wait $!; echo "term=$?"
{s} python3 -c 'import signal, time; signal.signal(signal.SIGPWR, lambda *a: print("pwr", flush=True)); print("ready", flush=True); time.sleep(1.5)' & sleep 0.8; kill -PWR $!; wait $!; echo "pwr=$?"
{s} sleep 1.5 & F=$!; sleep 0.4; P=$(pgrep -n -x sleep); kill -STOP $P; sleep 0.3; kill -CONT $P; wait $F; echo "cont=$?"
"#,
        m = marker.display(),
        url = BY_NAME
    );
    let started = Instant::now();
    let out = c.run(&["bash", "-c", &script]);
    let text = stdout_ok(&out);
    assert_eq!(
        text,
        format!("in=0 ran\nout=0 ran\ndaemon without stderr={HELLO}\nterm=143\nready\npwr\npwr=0\ncont=0\n")
    );
    assert!(started.elapsed() < Duration::from_secs(10), "something waited too long");
    let _ = std::fs::remove_file(&marker);
    let _ = std::fs::remove_file(marker.with_extension("d"));
}

#[test]
fn show_and_check_say_whether_the_guard_runs() {
    let c = Client::new();
    let cfg = config_for(DANTE);
    let bin = socksify_bin();
    let out = c.socksify(&cfg, &["sh", "-c", &format!("{} show", bin.display())]);
    assert!(stdout_ok(&out).contains("under the kernel guard"));
    let out = c.command(&[bin.to_str().unwrap(), "check", "-p", DANTE]).output().unwrap();
    assert!(
        stdout_ok(&out).starts_with("mode: auto (the kernel guard is available"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let on = c.command(&[bin.to_str().unwrap(), "on", "-p", DANTE]).output().unwrap();
    let script = format!("{}\n{} show", String::from_utf8_lossy(&on.stdout), bin.display());
    let out = c.run(&["bash", "-c", &script]);
    assert!(
        stdout_ok(&out).contains("a running shell cannot be put under the kernel guard"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
