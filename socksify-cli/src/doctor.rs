//! `socksify check`: tests each hop of the configured chain, in order, through the hops before
//! it, and reports what it accepts; then a CONNECT through the whole chain to `--target`.

use std::io::IsTerminal;
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::time::Instant;

use socket2::{Domain, Socket, Type};
use socksify_core::proxy::Host;
use socksify_core::sys::{self, FdStream};
use socksify_core::{v5, Chain, ChainMode, Command, Config, Proxy, ProxyKind, TargetAddr};

struct Paint {
    on: bool,
}

impl Paint {
    fn ok(&self, s: &str) -> String {
        if self.on {
            format!("\x1b[32m{s}\x1b[0m")
        } else {
            s.to_owned()
        }
    }
    fn bad(&self, s: &str) -> String {
        if self.on {
            format!("\x1b[31m{s}\x1b[0m")
        } else {
            s.to_owned()
        }
    }
}

fn socket_for(proxy: &Proxy) -> Socket {
    let v6 = matches!(proxy.host, Host::Ip(std::net::IpAddr::V6(_)));
    Socket::new(if v6 { Domain::IPV6 } else { Domain::IPV4 }, Type::STREAM, None).expect("socket")
}

/// A socket connected to hop `i`: directly for the first, through the hops before it otherwise.
fn reach(config: &Config, i: usize) -> Result<Socket, String> {
    let socket = socket_for(&config.proxies[0]);
    if i == 0 {
        let p = &config.proxies[0];
        let addr: SocketAddr = match &p.host {
            Host::Ip(ip) => SocketAddr::new(*ip, p.port),
            Host::Name(n) => (n.as_str(), p.port)
                .to_socket_addrs()
                .map_err(|e| e.to_string())?
                .next()
                .ok_or("name without address")?,
        };
        sys::connect_timeout(socket.as_raw_fd(), &addr, config.timeouts.connect)
            .map_err(|e| e.to_string())?;
    } else {
        let before =
            checking(Chain::new(config.proxies[..i].to_vec(), ChainMode::Strict, i, config.timeouts));
        before.connect(socket.as_raw_fd(), &config.proxies[i].target()).map_err(|e| e.to_string())?;
    }
    Ok(socket)
}

/// `chain` sharing what the check has found out about its hops (a hop that drops a handshake in
/// one write is probed once, not on every connection the check makes through it).
fn checking(chain: Chain) -> Chain {
    static MEMORY: std::sync::OnceLock<std::sync::Arc<socksify_core::memory::HopMemory>> =
        std::sync::OnceLock::new();
    let memory = MEMORY.get_or_init(|| std::sync::Arc::new(socksify_core::memory::HopMemory::private()));
    chain.remembering(memory.clone(), 0, std::time::Duration::ZERO)
}

/// Whether hop `i` (reached through the ones before it) accepts `cmd`.
fn accepts(config: &Config, i: usize, cmd: Command) -> Result<(), String> {
    let socket = socket_for(&config.proxies[0]);
    let chain =
        checking(Chain::new(config.proxies[..=i].to_vec(), ChainMode::Strict, i + 1, config.timeouts));
    let any = TargetAddr::Ip("0.0.0.0:0".parse().expect("literal"));
    chain.establish(socket.as_raw_fd(), cmd, &any).map(drop).map_err(|e| e.to_string())
}

/// Whether SOCKS5 hop `i` takes its greeting, authentication and request in one write (one
/// round trip instead of two or three): a UDP ASSOCIATE sent so, which every SOCKS5 server
/// answers at once, with success or a refusal — or by closing the connection (ssh -D): the
/// request reached it too (the hop took the greeting first, in `check_hops`).
fn one_write(config: &Config, i: usize, paint: &Paint) -> String {
    let proxy = &config.proxies[i];
    if !proxy.can_pipeline() {
        return "no (GSSAPI's exchange goes step by step)".to_owned();
    }
    if !config.socks5_pipelining {
        return "not tried (socks5_pipelining = false)".to_owned();
    }
    let socket = match reach(config, i) {
        Ok(s) => s,
        Err(e) => return format!("not known ({e})"),
    };
    let mut stream = FdStream::new(socket.as_raw_fd());
    stream.set_timeout(Some(config.timeouts.read));
    let any = TargetAddr::Ip("0.0.0.0:0".parse().expect("literal"));
    match proxy.request_pipelined(&mut stream, Command::UdpAssociate, &any, true) {
        Ok(_) | Err(socksify_core::SocksError::Socks5(_) | socksify_core::SocksError::Closed) => {
            paint.ok("yes")
        }
        Err(socksify_core::SocksError::NotPipelined) => {
            "no (it reads the greeting alone: each connection asks it step by step, one more round trip)"
                .to_owned()
        }
        Err(e) => format!("not known ({e})"),
    }
}

/// A spinner on stderr while `f` runs, when stderr is a terminal.
fn spinning<T>(label: &str, f: impl FnOnce() -> T) -> T {
    if !std::io::stderr().is_terminal() {
        return f();
    }
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = done.clone();
    let label = label.to_owned();
    let spinner = std::thread::spawn(move || {
        for frame in ['|', '/', '-', '\\'].iter().cycle() {
            if flag.load(std::sync::atomic::Ordering::Relaxed) {
                break;
            }
            eprint!("\r{frame} {label}");
            std::thread::sleep(std::time::Duration::from_millis(80));
        }
        eprint!("\r\x1b[2K");
    });
    let r = f();
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = spinner.join();
    r
}

/// What the configured mode means on this machine: whether the kernel guard can run here.
pub fn mode_report(mode: socksify_core::Mode) -> String {
    let guard = socksify_guard::bpf::available();
    match (mode, guard) {
        (socksify_core::Mode::Preload, _) => {
            "preload (the library only; programs that skip libc are not covered)".to_owned()
        }
        (m, Ok(())) => format!(
            "{} (the kernel guard is available: seccomp user notification, kernel {})",
            m.name(),
            kernel_release()
        ),
        (socksify_core::Mode::Auto, Err(u)) => format!(
            "auto, but the kernel guard is NOT available here ({}): dynamic programs run with the library only, static and Go programs are refused",
            u.why
        ),
        (socksify_core::Mode::Syscall, Err(u)) => {
            format!("syscall, but the kernel guard is NOT available here ({}): programs are refused", u.why)
        }
    }
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease").map(|s| s.trim().to_owned()).unwrap_or_default()
}

/// The configuration with chain `i` (`Config::chains()`'s index) as its only chain.
fn only_chain(config: &Config, i: usize) -> Config {
    let mut sub = Config { chains: Vec::new(), routes: Vec::new(), ..config.clone() };
    if i > 0 {
        let c = &config.chains[i - 1];
        (sub.proxies, sub.chain, sub.chain_len) = (c.proxies.clone(), c.mode, c.chain_len);
    }
    sub
}

pub fn run(config: &Config, target: Option<&str>) -> i32 {
    let paint = Paint { on: std::io::stdout().is_terminal() };
    let mut healthy = true;
    println!("mode: {}", mode_report(config.mode));
    for i in 0..=config.chains.len() {
        let sub = only_chain(config, i);
        if sub.proxies.is_empty() {
            continue;
        }
        if config.chains.is_empty() {
            println!("chain: {} hop(s), {:?}", sub.proxies.len(), sub.chain);
        } else {
            println!("chain {}: {} hop(s), {:?}", config.chain_name(i), sub.proxies.len(), sub.chain);
        }
        healthy &= check_hops(&sub, &paint);
    }
    if !config.routes.is_empty() {
        println!("routes: {} (see `socksify explain HOST:PORT`)", config.routes.len());
    }
    if let Some(target) = target {
        let parsed = match socksify_core::proxy::parse_target(target) {
            Ok(t) => t,
            Err(e) => {
                println!("target {target}: {}", paint.bad(&e));
                return 2;
            }
        };
        let (_, via) = socksify_core::explain::decide(config, &parsed, Some(parsed.port()));
        match via {
            socksify_core::routes::Via::Chain(i) if !only_chain(config, i).proxies.is_empty() => {
                healthy &= check_target(&only_chain(config, i), &parsed, &paint);
            }
            other => {
                let what = match other {
                    socksify_core::routes::Via::Direct => "goes direct by the configuration; not tried",
                    socksify_core::routes::Via::Block => "is blocked by the configuration",
                    _ => "takes a chain with no proxy",
                };
                println!("target {parsed}: {what}");
            }
        }
    }
    if healthy {
        println!("verdict: {}", paint.ok("OK"));
        0
    } else {
        println!("verdict: {}", paint.bad("PROBLEMS (see above)"));
        1
    }
}

/// Reports each hop of `config`'s (only) chain; false when one is not healthy.
fn check_hops(config: &Config, paint: &Paint) -> bool {
    let mut healthy = true;
    for (i, proxy) in config.proxies.iter().enumerate() {
        let started = Instant::now();
        let reached = spinning(&format!("hop {}: connecting", i + 1), || reach(config, i));
        let rtt = started.elapsed();
        let socket = match reached {
            Ok(s) => s,
            Err(e) => {
                healthy = false;
                println!("hop {} {proxy}: {} {e}", i + 1, paint.bad("unreachable:"));
                continue;
            }
        };
        // Methods: a SOCKS5 greeting on the connection just made.
        let mut greeted = true;
        let methods = match proxy.kind {
            ProxyKind::Socks5 => {
                let mut stream = FdStream::new(socket.as_raw_fd());
                stream.set_timeout(Some(config.timeouts.read));
                let ticket = proxy.gssapi.as_ref().map(|_| gssapi_ticket(proxy));
                if let Some(Err(e)) = &ticket {
                    healthy = false;
                    println!("hop {} {proxy}: {}", i + 1, paint.bad(e));
                }
                match proxy.negotiate(&mut stream) {
                    Ok(m) if m == socksify_core::gssapi::METHOD_GSSAPI => format!(
                        "GSSAPI ({}; protection: {})",
                        ticket.and_then(Result::ok).unwrap_or_default(),
                        socksify_core::gssapi::Protection::None.name()
                    ),
                    Ok(m) if m == v5::METHOD_USER_PASS => "username/password".to_owned(),
                    Ok(_) if proxy.gssapi.is_some() => {
                        "no authentication (GSSAPI offered, not chosen)".to_owned()
                    }
                    Ok(_) if proxy.creds.is_some() => {
                        "no authentication (username/password offered)".to_owned()
                    }
                    Ok(_) => "no authentication".to_owned(),
                    Err(e) => {
                        healthy = false;
                        greeted = false;
                        paint.bad(&format!("greeting failed: {e}"))
                    }
                }
            }
            ProxyKind::Socks4 | ProxyKind::Socks4a => "SOCKS4 (user id)".to_owned(),
            ProxyKind::Http => "HTTP CONNECT".to_owned(),
        };
        let verdict = |cmd| match accepts(config, i, cmd) {
            Ok(()) => paint.ok("yes"),
            Err(_) => "no".to_owned(),
        };
        let (bind, udp) = spinning(&format!("hop {}: trying commands", i + 1), || match proxy.kind {
            ProxyKind::Http => ("no".to_owned(), "no".to_owned()),
            ProxyKind::Socks4 | ProxyKind::Socks4a => (verdict(Command::Bind), "no".to_owned()),
            ProxyKind::Socks5 => (verdict(Command::Bind), verdict(Command::UdpAssociate)),
        });
        let connect = if greeted { paint.ok("yes") } else { "no".to_owned() };
        let one_write = match proxy.kind {
            ProxyKind::Socks5 if greeted => {
                format!(
                    "; one write: {}",
                    spinning(&format!("hop {}: one write", i + 1), || one_write(config, i, paint))
                )
            }
            _ => String::new(),
        };
        println!(
            "hop {} {proxy}: {} in {:.1} ms; methods: {methods}; CONNECT: {connect}; BIND: {bind}; UDP ASSOCIATE: {udp}{one_write}",
            i + 1,
            paint.ok("reachable"),
            rtt.as_secs_f64() * 1000.0
        );
    }
    healthy
}

/// The Kerberos ticket a GSSAPI hop will use, in words ("ticket of alice@EXAMPLE.ORG, 9 h 59 min
/// left; asks for rcmd@proxy"), or what is wrong with it.
fn gssapi_ticket(proxy: &Proxy) -> Result<String, String> {
    let t = socksify_core::krb5::ticket().map_err(|e| e.to_string())?;
    let left = t.lifetime.as_secs();
    Ok(format!(
        "ticket of {}, {} h {} min left; asks for {}",
        t.principal,
        left / 3600,
        left % 3600 / 60,
        proxy.gssapi_principal().unwrap_or_default()
    ))
}

/// A CONNECT to `parsed` through `config`'s (only) chain; false when it fails.
fn check_target(config: &Config, parsed: &TargetAddr, paint: &Paint) -> bool {
    let mut healthy = true;
    {
        let socket = socket_for(&config.proxies[0]);
        let started = Instant::now();
        match spinning("connecting to the target", || {
            checking(config.chain()).connect(socket.as_raw_fd(), parsed)
        }) {
            Ok(est) => {
                let path: Vec<String> = est.path.iter().map(|&i| config.proxies[i].to_string()).collect();
                println!(
                    "target {parsed}: {} in {:.1} ms via {}",
                    paint.ok("connected"),
                    started.elapsed().as_secs_f64() * 1000.0,
                    path.join(" -> ")
                );
            }
            Err(e) => {
                healthy = false;
                println!("target {parsed}: {} {e}", paint.bad("failed:"));
            }
        }
    }
    healthy
}
