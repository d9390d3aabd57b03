//! Event loops stay concurrent (issue 13): a non-blocking connect through the chain returns
//! EINPROGRESS at once and its handshake runs in the background, hidden from the program's
//! waits until the chain is established. Through a proxy whose every reply comes 200 ms late
//! (the lab's slow-socks), 50 connections from one event loop take about one handshake (two
//! replies: 0.4 s), not fifty (20 s); through dante and microsocks as well, without the delay.

use std::time::{Duration, Instant};

use socksify_tests::build::{c_program, Link};
use socksify_tests::lab::*;

const SLOW: &str = "socks5://10.77.0.2:1087";
const DANTE: &str = "socks5://10.77.0.2:1080";
const MICROSOCKS: &str = "socks5://10.77.0.2:1082";
const MODES: [&str; 2] = ["preload", "auto"];

/// Runs `argv` under socksify through `proxy` in `mode`: its stdout and the wall time.
fn timed(proxy: &str, mode: &str, argv: &[&str]) -> (String, Duration) {
    let c = Client::new();
    let mut full = vec!["--mode", mode];
    full.extend_from_slice(argv);
    let started = Instant::now();
    let out = c.socksify_command(&config_for(proxy), &full).output().unwrap();
    let took = started.elapsed();
    let text = stdout_ok(&out);
    c.assert_no_leak();
    (text, took)
}

/// Through the slow proxy, in both modes: all `n` echoed, in about one handshake; then through
/// dante and microsocks.
fn fans_out(argv: &[&str], want: &str) {
    for mode in MODES {
        let (text, took) = timed(SLOW, mode, argv);
        assert!(text.contains(want), "--mode {mode}: {text}");
        // One handshake is 0.4 s; fifty in a row would be 20 s. Room for a busy machine.
        assert!(took < Duration::from_secs(4), "--mode {mode}: {took:?} for {argv:?}: {text}");
    }
    for proxy in [DANTE, MICROSOCKS] {
        let (text, _) = timed(proxy, "auto", argv);
        assert!(text.contains(want), "{proxy}: {text}");
    }
}

const ASYNCIO: &str = r#"
import asyncio, sys
async def one(i):
    r, w = await asyncio.open_connection('www.socksify.test', 7)
    w.write(b'hello %d\n' % i); await w.drain()
    line = await r.readline(); w.close()
    return line == b'hello %d\n' % i
async def main():
    ok = await asyncio.gather(*(one(i) for i in range(50)))
    print('%d/50 echoed' % sum(ok))
asyncio.run(main())
"#;

#[test]
fn python_asyncio_opens_50_connections_at_once_through_a_slow_proxy() {
    fans_out(&["python3", "-c", ASYNCIO], "50/50 echoed");
}

const NODE: &str = r#"
const net = require('net');
let done = 0, ok = 0;
for (let i = 0; i < 50; i++) {
  const s = net.connect(7, 'www.socksify.test', () => s.write('hello ' + i + '\n'));
  let buf = '';
  s.on('data', d => { buf += d; if (buf.endsWith('\n')) { if (buf === 'hello ' + i + '\n') ok++; s.end(); } });
  s.on('error', e => console.error(e.message));
  s.on('close', () => { if (++done === 50) console.log(ok + '/50 echoed'); });
}
"#;

#[test]
fn node_opens_50_connections_at_once_through_a_slow_proxy() {
    fans_out(&["node", "-e", NODE], "50/50 echoed");
}

#[test]
fn curl_parallel_fetches_20_urls_at_once_through_a_slow_proxy() {
    let urls: Vec<String> = (0..20).map(|i| format!("http://www.socksify.test:8080/hello.txt?{i}")).collect();
    let mut argv =
        vec!["curl", "-sS", "--max-time", "20", "-Z", "--parallel-immediate", "--parallel-max", "50"];
    argv.extend(urls.iter().map(String::as_str));
    for mode in MODES {
        let (text, took) = timed(SLOW, mode, &argv);
        assert_eq!(text.matches(HELLO).count(), 20, "--mode {mode}: {text}");
        assert!(took < Duration::from_secs(4), "--mode {mode}: {took:?}");
    }
}

#[test]
fn a_tokio_program_opens_50_connections_at_once_through_a_slow_proxy() {
    let bin = socksify_bin().with_file_name("tokio_fanout");
    fans_out(&[bin.to_str().unwrap(), "50", "www.socksify.test:7"], "50/50 echoed");
}

#[test]
fn edge_triggered_epoll_and_select_see_each_socket_once_its_chain_is_up() {
    let prog = c_program("fanout", Link::Dynamic);
    for how in ["epoll", "select"] {
        let argv = [prog.to_str().unwrap(), how, "50", NET4, "7"];
        fans_out(&argv, "50/50 echoed");
        // No busy waiting: the CPU time of the whole fan-out stays small.
        let (text, _) = timed(SLOW, "preload", &argv);
        let cpu: f64 =
            text.split("cpu ").nth(1).and_then(|t| t.trim().strip_suffix(" s")).unwrap().parse().unwrap();
        assert!(cpu < 0.5, "{how}: {text}");
    }
}

#[test]
fn a_failed_chain_shows_as_so_error_once_the_socket_is_ready() {
    // Port 9 of the lab refuses: dante answers "connection refused", which SO_ERROR reports.
    let prog = c_program("fanout", Link::Dynamic);
    let argv = [prog.to_str().unwrap(), "refused", NET4, "9"];
    let (bare, _) = same_as_bare(&config_for(DANTE), &MODES, false, &argv);
    assert_eq!(bare, "connect: -1 EINPROGRESS\npoll: 1 POLLOUT\nso_error: ECONNREFUSED\nso_error again: 0\n");
}

#[test]
fn a_blocking_connect_honours_so_sndtimeo_and_its_chain_goes_on() {
    // The kernel: EINPROGRESS when SO_SNDTIMEO runs out, the connection going on meanwhile.
    let prog = c_program("fanout", Link::Dynamic);
    let (text, _) = timed(SLOW, "preload", &[prog.to_str().unwrap(), "sndtimeo", "150", NET4, "7"]);
    assert_eq!(text, "connect: -1 EINPROGRESS after the timeout\nso_error: 0\necho: yes\n");
}

#[test]
fn python_timeouts_and_signal_handlers_take_effect_at_once() {
    // create_connection(timeout=…) and a SIGALRM handler that raises, through a slow proxy:
    // each takes effect when it should, not when the handshake would have ended.
    let py = r#"
import signal, socket, time
t = time.time()
try:
    socket.create_connection(('10.77.0.2', 7), timeout=0.1)
    print('connected')
except TimeoutError:
    print('timeout after', round(time.time() - t, 1))
class Alarm(Exception): pass
def alarm(*_): raise Alarm()
signal.signal(signal.SIGALRM, alarm)
signal.setitimer(signal.ITIMER_REAL, 0.1)
s = socket.socket()
t = time.time()
try:
    s.connect(('10.77.0.2', 7))
    print('connected')
except Alarm:
    print('alarm after', round(time.time() - t, 1))
# A handler that does not raise: the connect goes on and succeeds (PEP 475).
signal.signal(signal.SIGALRM, lambda *_: None)
signal.setitimer(signal.ITIMER_REAL, 0.1)
s = socket.socket()
s.connect(('10.77.0.2', 7))
s.sendall(b'after a signal\n')
print(s.recv(100))
"#;
    for mode in MODES {
        let (text, _) = timed(SLOW, mode, &["python3", "-c", py]);
        assert_eq!(text, "timeout after 0.1\nalarm after 0.1\nb'after a signal\\n'\n", "--mode {mode}");
    }
}

#[test]
fn a_silent_proxy_lets_the_programs_own_timeout_fire() {
    // silent-socks accepts and never answers: create_connection(timeout=1) raises at 1 s.
    let py = r#"
import socket, time
t = time.time()
try:
    socket.create_connection(('10.77.0.2', 7), timeout=1)
    print('connected')
except TimeoutError:
    print('timeout', time.time() - t < 1.5)
"#;
    for mode in MODES {
        let (text, _) = timed("socks5://10.77.0.2:1088", mode, &["python3", "-c", py]);
        assert_eq!(text, "timeout True\n", "--mode {mode}");
    }
}

#[test]
fn chains_http_hops_bad_passwords_and_threads_work_in_the_background() {
    // Every kind of hop and failure on the non-blocking path, from asyncio, in threads (junk and
    // truncated replies: hostile_proxies.rs).
    let py = r#"
import asyncio, sys, threading
async def one(i):
    try:
        r, w = await asyncio.open_connection('www.socksify.test', 7)
    except OSError as e:
        return type(e).__name__
    w.write(b'hi %d\n' % i); await w.drain()
    ok = await r.readline() == b'hi %d\n' % i
    w.close()
    return 'ok' if ok else 'bad data'
async def many(n):
    return await asyncio.gather(*(one(i) for i in range(n)))
results = []
def worker():
    results.extend(asyncio.run(many(5)))
threads = [threading.Thread(target=worker) for _ in range(4)]
[t.start() for t in threads]; [t.join() for t in threads]
print(sorted(set(results)), len(results))
"#;
    let cases = [
        // two hops, the first slow
        (format!("[[proxy]]\nurl = \"{SLOW}\"\n[[proxy]]\nurl = \"{DANTE}\"\n"), "['ok'] 20"),
        // an HTTP CONNECT hop (tinyproxy)
        (config_for("http://10.77.0.2:1085"), "['ok'] 20"),
        // an HTTP hop after a SOCKS one
        (format!("[[proxy]]\nurl = \"{DANTE}\"\n[[proxy]]\nurl = \"http://10.77.0.2:1085\"\n"), "['ok'] 20"),
        // a wrong password: EACCES, as SO_ERROR
        (config_for("socks5://mcuser:wrong@10.77.0.2:1083"), "['PermissionError'] 20"),
        // a dead proxy: ECONNREFUSED
        (config_for("socks5://10.77.0.2:1089"), "['ConnectionRefusedError'] 20"),
    ];
    for (cfg, want) in cases {
        for mode in MODES {
            let c = Client::new();
            let out = c.socksify_command(&cfg, &["--mode", mode, "python3", "-c", py]).output().unwrap();
            assert_eq!(stdout_ok(&out).trim(), want, "--mode {mode}, {cfg}");
            c.assert_nothing_leaked();
        }
    }
}

#[test]
fn fork_dup_and_odd_waits_during_a_background_handshake() {
    // Found by a hostile probe: a child forked while the chain runs, a child closing its copy,
    // EPOLLEXCLUSIVE, a blocking recv with SO_RCVTIMEO — each as the kernel answers.
    let py = r#"
import os, select, socket, struct, sys, time
def nb():
    s = socket.socket(); s.setblocking(False)
    assert s.connect_ex(('10.77.0.2', 7)) == 115  # EINPROGRESS
    return s
def wait_out(s):
    p = select.poll(); p.register(s, select.POLLOUT)
    return bool(p.poll(10000)) and s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
def echo(s, msg):
    s.setblocking(True); s.settimeout(10); s.sendall(msg); return s.recv(100) == msg
# A child forked during the handshake sees it end, and can use the connection.
s = nb()
pid = os.fork()
if pid == 0:
    os._exit(0 if wait_out(s) and echo(s, b'child') else 1)
print('child', os.waitpid(pid, 0)[1] == 0)
# A child that closes its copy at once does not cut the parent's connect short.
s = nb()
pid = os.fork()
if pid == 0:
    s.close(); os._exit(0)
os.waitpid(pid, 0)
print('parent', wait_out(s) and echo(s, b'parent'))
# EPOLLEXCLUSIVE registrations are put back too.
s = nb()
ep = select.epoll(); ep.register(s.fileno(), select.EPOLLOUT | select.EPOLLEXCLUSIVE)
ev = ep.poll(10)
print('exclusive', ev == [(s.fileno(), select.EPOLLOUT)] and s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0)
"#;
    for mode in MODES {
        let (text, _) = timed(SLOW, mode, &["python3", "-c", py]);
        assert_eq!(text, "child True\nparent True\nexclusive True\n", "--mode {mode}");
    }
    // A blocking recv while the chain runs (through a proxy that never answers): its
    // SO_RCVTIMEO ends it with EAGAIN, as on a socket still connecting without socksify.
    let py = r#"
import socket, struct, time
s = socket.socket(); s.setblocking(False)
s.connect_ex(('10.77.0.2', 7))
s.setblocking(True)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack('ll', 0, 300000))
t = time.time()
try:
    s.recv(10); print('data?')
except BlockingIOError:
    print('eagain', round(time.time() - t, 1))
"#;
    for mode in MODES {
        let (text, _) = timed("socks5://10.77.0.2:1088", mode, &["python3", "-c", py]);
        assert_eq!(text, "eagain 0.3\n", "--mode {mode}");
    }
}

#[test]
fn select_with_sets_larger_than_fd_setsize_hides_a_handshaking_socket_too() {
    let prog = c_program("fanout", Link::Dynamic);
    let argv = [prog.to_str().unwrap(), "highselect", NET4, "7"];
    let bare = stdout_ok(&Client::new().command(&argv).output().unwrap());
    assert_eq!(bare, "select: 1, socket writable 1, pipe readable 0, so_error 0\necho: yes\n");
    for mode in MODES {
        let (text, _) = timed(SLOW, mode, &argv);
        assert_eq!(text, bare, "--mode {mode}");
    }
}

#[test]
fn an_exec_during_a_background_handshake_resets_the_socket_never_mixing_streams() {
    // The thread that builds the chain ends at exec: the new program must not write into a
    // half-made chain (a probe read SOCKS reply bytes back). It finds the connection reset, and
    // a log line says why.
    let py = r#"
import os, select, socket, sys
if len(sys.argv) == 1:
    s = socket.socket(); s.setblocking(False)
    s.connect_ex(('10.77.0.2', 7))
    s.set_inheritable(True)
    os.execv(sys.executable, [sys.executable, sys.argv[0], str(s.fileno())])
s = socket.socket(fileno=int(sys.argv[1]))
p = select.poll(); p.register(s, select.POLLOUT); p.poll(5000)
try:
    s.setblocking(True); s.settimeout(5)
    s.sendall(b'ping\n')
    got = s.recv(100)
    print('echo' if got == b'ping\n' else 'reset' if got == b'' else 'MIXED %r' % got)
except OSError as e:
    print('reset')
"#;
    for mode in MODES {
        let c = Client::new();
        let script = c.config(py);
        let out = c
            .socksify_command(&config_for(SLOW), &["--mode", mode, "python3", script.to_str().unwrap()])
            .output()
            .unwrap();
        assert_eq!(stdout_ok(&out), "reset\n", "--mode {mode}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("when the program exec'd; it is reset"),
            "{out:?}"
        );
        c.assert_nothing_leaked();
    }
}
