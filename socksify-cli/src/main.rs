//! `socksify`: checks the configuration, prepares the environment for the preload library and
//! `exec`s the program, so that the exit status is the program's own.
//!
//! It lives for a moment before that `exec`, so it skips std's runtime set-up (`no_main`: no
//! stack-guard probe of /proc/self/maps, SIGPIPE left as the caller had it, which is what the
//! program must inherit) and calls `execvpe` itself.
#![cfg_attr(not(test), no_main)]

use std::ffi::{CString, OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use clap::{Args, Parser};
use socksify_core::config::{self, Config, ConfigError};
use socksify_core::contract::{
    self, LogLevel, CONFIG_ENV, LOG_ENV, OLD_PROXIES_ENV, PRELOAD_ENV, PROXY_ENV, SESSION_ENV, SOURCE_ENV,
};
use socksify_core::session::Session;
use socksify_core::Mode;
use socksify_guard::elf;

mod doctor;

const LIBRARY: &str = "libsocksify_preload.so";

#[derive(Parser, Debug)]
#[command(
    name = "socksify",
    version = concat!(env!("CARGO_PKG_VERSION"), " (the Rust socksifier: LD_PRELOAD library and kernel guard; not Dante's socksify script)"),
    about = "Run a program with its TCP connections, UDP datagrams, incoming connections and DNS lookups sent through SOCKS (or HTTP CONNECT) proxies",
    after_help = concat!(
        "Configuration file, the first that exists:\n",
        "  -f FILE, else $SOCKSIFY_CONFIG, else $XDG_CONFIG_HOME/socksify/config.toml\n",
        "  (~/.config/socksify/config.toml), else /etc/socksify/config.toml.\n",
        "\nExamples:\n",
        "  socksify -p socks5://127.0.0.1:1080 curl https://example.org/\n",
        "  socksify -p socks5://10.0.0.1:1080 -p socks4a://10.0.0.2:9050 ssh host\n",
        "  socksify -f ~/work-proxies.toml git clone https://example.org/repo.git\n",
        "  socksify -f /etc/proxychains4.conf curl https://example.org/\n",
        "  alias ssh='socksify ssh'\n",
        "  eval \"$(socksify on -p socks5://127.0.0.1:1080)\"   # every later command, until: eval \"$(socksify off)\"\n",
        "  socksify --shell -p socks5://127.0.0.1:1080\n",
        "  socksify config --convert /etc/proxychains4.conf > ~/.config/socksify/config.toml\n",
        "  socksify check --target example.org:443           # test each hop, then a CONNECT\n",
        "\nSubcommands (use `socksify -- on` to run a program named on): on, off, show, config, check,\n",
        "generate (man page and bash/zsh/fish completions).\n",
        "A proxychains.conf is read as such (detected by its [ProxyList] section) and is also looked\n",
        "for where proxychains-ng looks, after socksify's own files."
    )
)]
struct Cli {
    #[command(flatten)]
    chain: ChainOpts,
    #[command(flatten)]
    log: LogOpts,
    /// Start a socksified interactive shell ($SHELL, else /bin/sh) instead of a command
    #[arg(long, conflicts_with = "command")]
    shell: bool,
    /// auto (the library, under the kernel guard; the guard alone for static and Go
    /// programs), preload (the library only), syscall (the kernel guard only)
    #[arg(long, value_name = "MODE", value_parser = parse_mode)]
    mode: Option<Mode>,
    /// The program to run, and its arguments
    #[arg(
        required_unless_present = "shell",
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "COMMAND"
    )]
    command: Vec<OsString>,
}

/// Where the chain comes from: shared by running a program, `on` and `check`.
#[derive(Args, Debug)]
struct ChainOpts {
    /// Configuration file (TOML or proxychains.conf)
    #[arg(short = 'f', long = "config", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Proxy URL, repeatable, in chain order; replaces the configuration's proxies
    /// (socks4://, socks4a://, socks5://, socks5h://, http://, with optional user:pass@)
    #[arg(short = 'p', long = "proxy", value_name = "URL")]
    proxy: Vec<String>,
    /// Each process its own SOCKS5 username and password on hops that have none, so Tor
    /// gives it a circuit of its own (torsocks -i)
    #[arg(short = 'i', long)]
    isolate: bool,
}

/// How much the library logs.
#[derive(Args, Debug)]
struct LogOpts {
    /// Log nothing, not even failed connections
    #[arg(short, long, conflicts_with = "verbose")]
    quiet: bool,
    /// Log every proxied connection with its path through the chain
    #[arg(short, long)]
    verbose: bool,
}

/// `socksify on|off|show`: shell code for `eval`, or the state of the current shell.
#[derive(Parser, Debug)]
#[command(
    name = "socksify on",
    about = "Print shell code that socksifies the current shell: eval \"$(socksify on)\""
)]
struct OnCli {
    #[command(flatten)]
    chain: ChainOpts,
    #[command(flatten)]
    log: LogOpts,
}

/// `socksify check`.
#[derive(Parser, Debug)]
#[command(
    name = "socksify check",
    about = "Test each hop of the configured chain, then a CONNECT to --target"
)]
struct CheckCli {
    #[command(flatten)]
    chain: ChainOpts,
    /// HOST:PORT to reach through the whole chain
    #[arg(long, value_name = "HOST:PORT")]
    target: Option<String>,
}

/// `socksify explain`.
#[derive(Parser, Debug)]
#[command(
    name = "socksify explain",
    about = "Say what the configuration does with HOST[:PORT]: the route and why, the chain and its hops, how the name resolves, UDP and BIND"
)]
struct ExplainCli {
    #[command(flatten)]
    chain: ChainOpts,
    /// HOST, HOST:PORT, an address or [IPv6]:PORT
    #[arg(value_name = "HOST[:PORT]")]
    target: String,
}

/// `socksify config --convert FILE`.
#[derive(Parser, Debug)]
#[command(
    name = "socksify config",
    about = "Print a configuration file (TOML or proxychains.conf) as socksify TOML"
)]
struct ConfigCli {
    /// The file to convert
    #[arg(long, value_name = "FILE")]
    convert: PathBuf,
}

#[cfg_attr(not(test), export_name = "main")]
#[cfg_attr(test, allow(dead_code))]
extern "C" fn socksify_main(argc: libc::c_int, argv: *const *const libc::c_char) -> libc::c_int {
    let args: Vec<OsString> = std::env::args_os().collect();
    // Everything is read from `args` now: the process's own argument strings lose their
    // passwords, which `ps` and /proc/PID/cmdline would show for as long as socksify runs (the
    // kernel guard's processes and the session's watcher live as long as the program).
    // SAFETY: argv holds argc NUL-terminated strings that this process owns and may rewrite.
    unsafe { hide_passwords(argc, argv) };
    match args.get(1).and_then(|a| a.to_str()) {
        Some("on") => return shell_on(OnCli::parse_from(&args[1..])),
        Some("off") => return shell_off(),
        Some("show") => return shell_show(),
        Some("config") => return convert(ConfigCli::parse_from(&args[1..])),
        Some("check") | Some("doctor") => return check(CheckCli::parse_from(&args[1..])),
        Some("explain") => return explain(ExplainCli::parse_from(&args[1..])),
        Some("generate") => return generate(args.get(2).and_then(|a| a.to_str())),
        _ => {}
    }
    let mut cli = Cli::parse_from(&args);
    if cli.shell {
        cli.command =
            vec![std::env::var_os("SHELL").filter(|s| !s.is_empty()).unwrap_or_else(|| "/bin/sh".into())];
    }
    match prepare(&cli.chain, &cli.log) {
        Ok(prepared) => run(&cli, prepared),
        Err(message) => {
            eprintln!("socksify: {message}");
            2
        }
    }
}

/// Overwrites with `*` the password of every `scheme://user:password@host` argument, in place.
///
/// # Safety
/// `argv` holds `argc` NUL-terminated strings, writable.
unsafe fn hide_passwords(argc: libc::c_int, argv: *const *const libc::c_char) {
    for i in 1..argc.max(0) as usize {
        // SAFETY: one of the caller's argc strings.
        let p = unsafe { *argv.add(i) } as *mut u8;
        if p.is_null() {
            continue;
        }
        // SAFETY: a NUL-terminated string.
        let len = unsafe { libc::strlen(p as *const libc::c_char) };
        // SAFETY: the string's own bytes, rewritten in place.
        let bytes = unsafe { std::slice::from_raw_parts_mut(p, len) };
        if let Some(range) = password_span(bytes) {
            bytes[range].fill(b'*');
        }
    }
}

/// Where the password of a `scheme://user:password@host…` URL is, if it has one.
fn password_span(url: &[u8]) -> Option<std::ops::Range<usize>> {
    let start = url.windows(3).position(|w| w == b"://")? + 3;
    let end = start + url[start..].iter().position(|&b| b == b'/').unwrap_or(url.len() - start);
    let at = start + url[start..end].iter().rposition(|&b| b == b'@')?;
    let colon = start + url[start..at].iter().position(|&b| b == b':')?;
    (colon + 1 < at).then_some(colon + 1..at)
}

fn parse_mode(s: &str) -> Result<Mode, String> {
    s.parse()
}

/// How the program will be socksified, and why (for -v and `check`).
enum Plan {
    Preload,
    Guarded { preload: bool, fallback: socksify_guard::launch::Fallback },
    Refuse(String),
}

fn plan(
    mode: Mode,
    program: &OsStr,
    kind: &elf::Kind,
    guard: &Result<(), socksify_guard::bpf::Unavailable>,
) -> (Plan, String) {
    use socksify_guard::launch::Fallback;
    let name = program.to_string_lossy();
    let static_note = format!("{name} is {}, which the library cannot enter", kind.describe());
    match (mode, guard) {
        (Mode::Preload, _) => {
            if kind.needs_guard() {
                eprintln!("socksify: warning: {static_note}: its traffic will NOT go through the proxies (--mode preload)");
            }
            (Plan::Preload, "preload: the library only, as asked".to_owned())
        }
        (Mode::Syscall, Ok(())) => (
            Plan::Guarded { preload: false, fallback: Fallback::Refuse(format!("refusing to run {name} (--mode syscall)")) },
            "syscall: the kernel guard does everything, as asked".to_owned(),
        ),
        (Mode::Syscall, Err(u)) => (
            Plan::Refuse(format!("the kernel guard is not available ({}); refusing to run {name} (--mode syscall)", u.why)),
            String::new(),
        ),
        (Mode::Auto, Ok(())) if kind.needs_guard() => (
            Plan::Guarded {
                preload: true,
                fallback: Fallback::Refuse(format!("{static_note}; refusing to run it unproxied (--mode preload runs it anyway)")),
            },
            format!("auto: syscall mode ({static_note}: the kernel guard does everything)"),
        ),
        (Mode::Auto, Ok(())) => (
            Plan::Guarded {
                preload: true,
                fallback: Fallback::Warn(
                    "running with the library only: programs that make their own system calls (Go, static binaries, io_uring) and children that drop the environment are NOT covered".to_owned(),
                ),
            },
            format!("auto: the library in {name} ({}), under the kernel guard", kind.describe()),
        ),
        (Mode::Auto, Err(u)) if kind.needs_guard() => (
            Plan::Refuse(format!(
                "{static_note}, and the kernel guard is not available here ({}); refusing to run it unproxied (--mode preload runs it anyway)",
                u.why
            )),
            String::new(),
        ),
        (Mode::Auto, Err(u)) => {
            eprintln!(
                "socksify: warning: the kernel guard is not available ({}); running with the library only: programs that make their own system calls (Go, static binaries, io_uring) and children that drop the environment are NOT covered",
                u.why
            );
            (Plan::Preload, "auto: the library only (no kernel guard here)".to_owned())
        }
    }
}

/// GSSAPI hops' service tickets, fetched before the program starts under the kernel guard: its
/// library then finds them in the ticket cache instead of calling the KDC from inside the
/// program (where the guard would take that traffic for the program's). A failure is only
/// warned about: a connection through that hop fails closed later, with the same words.
fn fetch_service_tickets(config: &config::Config) {
    let hops = config.proxies.iter().chain(config.chains.iter().flat_map(|c| c.proxies.iter()));
    let mut seen = std::collections::BTreeSet::new();
    for principal in hops.filter_map(|p| p.gssapi_principal()) {
        if seen.insert(principal.clone()) {
            if let Err(e) = socksify_core::krb5::fetch_service_ticket(&principal) {
                if !config.quiet {
                    eprintln!("socksify: warning: GSSAPI ({principal}): {e}");
                }
            }
        }
    }
}

fn run(cli: &Cli, prepared: Prepared) -> libc::c_int {
    let mode = cli.mode.unwrap_or(prepared.config.mode);
    let path = elf::which(&cli.command[0].to_string_lossy());
    let kind = path.as_deref().map(elf::inspect).unwrap_or(elf::Kind::Unknown);
    let guard = if mode == Mode::Preload { Ok(()) } else { socksify_guard::bpf::available() };
    let (plan, why) = plan(mode, &cli.command[0], &kind, &guard);
    warn_if_privileged(&cli.command[0], matches!(plan, Plan::Guarded { .. }));
    if cli.log.verbose && !why.is_empty() {
        eprintln!("socksify: mode {why}");
    }
    match plan {
        Plan::Refuse(msg) => {
            eprintln!("socksify: {msg}");
            126
        }
        Plan::Preload => {
            // The session outlives this process's exec: a watcher removes it when the program
            // (this very process) has ended.
            let mut env = prepared.env;
            match new_session(&prepared.config, std::process::id() as libc::pid_t) {
                Ok(dir) => {
                    env.retain(|(k, _)| *k != SESSION_ENV);
                    env.push((SESSION_ENV, Some(dir.into())));
                }
                Err(e) => {
                    eprintln!("socksify: {e}");
                    return 2;
                }
            }
            exec(&cli.command, env)
        }
        Plan::Guarded { preload, fallback } => {
            fetch_service_tickets(&prepared.config);
            let mut env = prepared.env;
            if !preload {
                let rest = without_library(std::env::var_os(PRELOAD_ENV));
                env.retain(|(k, _)| *k != PRELOAD_ENV);
                env.push((PRELOAD_ENV, rest));
            }
            let argv: Result<Vec<CString>, String> = cli.command.iter().map(|a| cstring(a)).collect();
            let argv = match argv {
                Ok(a) => a,
                Err(e) => {
                    eprintln!("socksify: {e}");
                    return 2;
                }
            };
            let level = if cli.log.quiet {
                socksify_guard::log::Level::Quiet
            } else if cli.log.verbose {
                socksify_guard::log::Level::Verbose
            } else if prepared.config.quiet {
                socksify_guard::log::Level::Quiet
            } else {
                socksify_guard::log::Level::Normal
            };
            let launch = socksify_guard::launch::Launch {
                argv,
                env: environment(&env),
                config: prepared.config,
                level,
                fallback,
                go: matches!(kind, elf::Kind::Go { .. }),
            };
            // The program keeps this process's pid wherever the supervisor may live outside
            // its tree; else (Yama's ptrace scope 1) a front process stands in for it.
            if socksify_guard::launch::detached_possible() {
                socksify_guard::launch::run_detached(launch)
            } else {
                socksify_guard::launch::run(launch)
            }
        }
    }
}

/// LD_PRELOAD without socksify's library (None when nothing else is left).
fn without_library(existing: Option<OsString>) -> Option<OsString> {
    let existing = existing?;
    let rest: Vec<&[u8]> = existing
        .as_bytes()
        .split(|&b| b == b':' || b == b' ')
        .filter(|e| !e.is_empty() && !e.ends_with(LIBRARY.as_bytes()))
        .collect();
    (!rest.is_empty()).then(|| OsStr::from_bytes(&rest.join(&b':')).to_owned())
}

/// A word for a POSIX shell, single-quoted.
fn shell_quote(s: &OsStr) -> String {
    format!("'{}'", s.to_string_lossy().replace('\'', "'\\''"))
}

fn shell_on(on: OnCli) -> libc::c_int {
    match prepare(&on.chain, &on.log) {
        Ok(prepared) => {
            // The session lasts as long as the shell that evaluates this output.
            // SAFETY: getppid has no preconditions.
            let shell = unsafe { libc::getppid() };
            let dir = match new_session(&prepared.config, shell) {
                Ok(dir) => dir,
                Err(e) => {
                    eprintln!("socksify: {e}");
                    return 2;
                }
            };
            let mut env = prepared.env;
            env.retain(|(k, _)| *k != SESSION_ENV);
            env.push((SESSION_ENV, Some(dir.into())));
            for (name, value) in env {
                match value {
                    Some(v) => println!("export {name}={};", shell_quote(&v)),
                    None => println!("unset {name};"),
                }
            }
            0
        }
        Err(message) => {
            eprintln!("socksify: {message}");
            2
        }
    }
}

/// A session for the program (its configuration, its fake-address table) that is removed once
/// process `pid` has ended; returns its directory.
fn new_session(config: &Config, pid: libc::pid_t) -> Result<PathBuf, String> {
    let dir = socksify_core::session::dir_name_for(pid);
    let session = Session::create_at(&dir, config)
        .map_err(|e| format!("cannot make the session directory {}: {e}", dir.display()))?;
    session.remove_when_gone(pid).map_err(|e| {
        let _ = std::fs::remove_dir_all(&dir);
        format!("cannot start the session's watcher: {e}")
    })?;
    Ok(dir)
}

/// Shell code that undoes `socksify on`: the library leaves LD_PRELOAD, the variables go.
fn shell_off() -> libc::c_int {
    let preload = std::env::var_os(PRELOAD_ENV).unwrap_or_default();
    let rest: Vec<&[u8]> = preload
        .as_bytes()
        .split(|&b| b == b':' || b == b' ')
        .filter(|e| !e.is_empty() && !e.ends_with(LIBRARY.as_bytes()))
        .collect();
    if rest.is_empty() {
        println!("unset {PRELOAD_ENV};");
    } else {
        let joined = rest.join(&b':');
        println!("export {PRELOAD_ENV}={};", shell_quote(OsStr::from_bytes(&joined)));
    }
    for name in contract::SHELL_VARS {
        println!("unset {name};");
    }
    0
}

fn shell_show() -> libc::c_int {
    let preload = std::env::var_os(PRELOAD_ENV).unwrap_or_default();
    let on = preload.as_bytes().split(|&b| b == b':' || b == b' ').any(|e| e.ends_with(LIBRARY.as_bytes()));
    if !on {
        println!("socksify: off");
        return 1;
    }
    let session = std::env::var_os(SESSION_ENV).filter(|d| !d.is_empty()).map(PathBuf::from);
    match session.as_deref().map(|d| (d, Session::open(d))) {
        Some((dir, Ok((_, config)))) => {
            let hops: Vec<String> = config.proxies.iter().map(|p| p.to_string()).collect();
            println!(
                "socksify: on (session {}; configuration {}; proxies {})",
                dir.display(),
                std::env::var(CONFIG_ENV).unwrap_or_else(|_| "none: socksify's defaults".into()),
                hops.join(" -> ")
            );
            if let Ok(source) = std::env::var(SOURCE_ENV) {
                println!("socksify: the chain comes from {source}");
            }
            for c in &config.chains {
                let hops: Vec<String> = c.proxies.iter().map(|p| p.to_string()).collect();
                println!("socksify: chain {}: {}", c.name, hops.join(" -> "));
            }
            if !config.routes.is_empty() {
                println!(
                    "socksify: {} route(s); `socksify explain HOST:PORT` says where one goes",
                    config.routes.len()
                );
            }
        }
        Some((dir, Err(e))) => {
            println!(
                "socksify: on, but its session {} cannot be read ({e}): connections fail",
                dir.display()
            );
        }
        None => println!(
            "socksify: on, but without a session: connections fail (run `eval \"$(socksify on)\"` again)"
        ),
    }
    let guarded = std::env::var_os(SESSION_ENV).is_some_and(|d| guarded_session(Path::new(&d)));
    if guarded {
        println!("socksify: under the kernel guard (started by `socksify --shell` or `socksify PROGRAM`)");
    } else {
        println!(
            "socksify: the library only: a running shell cannot be put under the kernel guard, so programs that skip libc (Go, static binaries) are NOT covered here; `socksify --shell` starts a shell under the guard"
        );
    }
    0
}

/// True when the session in `dir` is supervised by the kernel guard (read without knowing its
/// configuration: only the state page).
fn guarded_session(dir: &Path) -> bool {
    let config = Config { dns: config::DnsMode::Local, ..Config::default() };
    Session::open_with(dir, &config).is_ok_and(|s| s.guarded())
}

/// `socksify generate man|bash|zsh|fish`: the man page or shell completions, from the CLI's own
/// definition (scripts/install writes them where man and the shells look).
fn generate(what: Option<&str>) -> libc::c_int {
    use clap::CommandFactory;
    let mut cmd = Cli::command();
    let mut out = std::io::stdout();
    let shell = match what {
        Some("man") => {
            return match clap_mangen::Man::new(cmd).render(&mut out) {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("socksify: {e}");
                    1
                }
            }
        }
        Some("bash") => clap_complete::Shell::Bash,
        Some("zsh") => clap_complete::Shell::Zsh,
        Some("fish") => clap_complete::Shell::Fish,
        _ => {
            eprintln!("usage: socksify generate man|bash|zsh|fish");
            return 2;
        }
    };
    clap_complete::generate(shell, &mut cmd, "socksify", &mut out);
    0
}

fn explain(cmd: ExplainCli) -> libc::c_int {
    let (config, source) = match load(&cmd.chain) {
        Ok((_, config, source)) => (config, source),
        Err(e) => {
            eprintln!("socksify: {e}");
            return 2;
        }
    };
    match socksify_core::explain::explain(&config, &socksify_core::hosts::Hosts::load_system(), &cmd.target) {
        Ok(lines) => {
            println!("settings: {source}");
            for line in lines {
                println!("{line}");
            }
            0
        }
        Err(e) => {
            eprintln!("socksify: {e}");
            2
        }
    }
}

fn check(cmd: CheckCli) -> libc::c_int {
    match load(&cmd.chain) {
        Ok((_, config, _)) => doctor::run(&config, cmd.target.as_deref()),
        Err(e) => {
            eprintln!("socksify: {e}");
            2
        }
    }
}

fn convert(cmd: ConfigCli) -> libc::c_int {
    match Config::load(&cmd.convert) {
        Ok(c) => {
            print!("# converted from {}\n{}", cmd.convert.display(), c.to_toml());
            0
        }
        Err(e) => {
            eprintln!("socksify: {e}");
            2
        }
    }
}

/// The program's environment: the caller's, with these variables set (`Some`) or removed.
type EnvChanges = Vec<(&'static str, Option<OsString>)>;

/// The proxy URLs of `SOCKSIFY_PROXY`, split at spaces and commas.
fn env_proxies() -> Option<Vec<String>> {
    let v = std::env::var(PROXY_ENV).ok()?;
    let urls: Vec<String> = v
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    (!urls.is_empty()).then_some(urls)
}

/// `ALL_PROXY`, else `all_proxy` (what curl and git read), with the variable's name; a URL
/// without a scheme is an HTTP proxy's, as curl takes it.
fn all_proxy() -> Option<(&'static str, String)> {
    ["ALL_PROXY", "all_proxy"].into_iter().find_map(|name| {
        let v = std::env::var(name).ok().filter(|v| !v.trim().is_empty())?;
        let v = v.trim();
        Some((name, if v.contains("://") { v.to_owned() } else { format!("http://{v}") }))
    })
}

/// The configuration file, if any, the checked configuration with the command line's (or the
/// environment's) proxies in place, and where the chain came from, in words; an error says
/// what to fix. The chain is, first of: `-p`; `SOCKSIFY_PROXY`; socksify's configuration
/// file's (`-f`, `$SOCKSIFY_CONFIG`, the user's, the system's); `ALL_PROXY` / `all_proxy`; a
/// proxychains.conf where proxychains-ng looks (Debian's `/etc/proxychains4.conf` comes with
/// the package, so it must not hide a proxy the user put in the environment).
fn load(opts: &ChainOpts) -> Result<(Option<PathBuf>, Config, String), String> {
    let from_env = if opts.proxy.is_empty() { env_proxies() } else { None };
    let given: Option<(&[String], &str)> = if !opts.proxy.is_empty() {
        Some((&opts.proxy, "--proxy"))
    } else {
        from_env.as_deref().map(|urls| (urls, PROXY_ENV))
    };
    // `-p` without `-f`: socksify's defaults, never whatever configuration file is lying around
    // (a proxychains.conf's remote_dns_subnet or localnet would change the run silently).
    let path = if given.is_none() || opts.config.is_some() {
        config::locate_ours(opts.config.as_deref()).map_err(|e| e.to_string())?
    } else {
        None
    };
    let env_all = if given.is_none() && path.is_none() { all_proxy() } else { None };
    let path = match (&path, &env_all, &given) {
        (None, None, None) => config::proxychains_locations().into_iter().find(|p| p.is_file()),
        _ => path,
    };
    let mut config = match &path {
        Some(p) => Config::load(p).map_err(|e| e.to_string())?,
        None => Config::default(),
    };
    if let Some(p) = &path {
        warn_if_secrets_exposed(p, &config);
    }
    if let Some(file) = &config.log_file {
        check_log_file(file)?;
    }
    let with = |config: Config, urls: &[String], origin: &str| {
        config.with_proxies(urls).map_err(|e| ConfigError { origin: origin.to_owned(), ..e }.to_string())
    };
    let source = match (given, &path) {
        (Some((urls, origin)), _) => {
            config = with(config, urls, origin)?;
            let what = if origin == PROXY_ENV { PROXY_ENV } else { "-p" };
            match &path {
                Some(p) => format!("{} with the proxies of {what}", p.display()),
                None => format!("socksify's defaults with the proxies of {what}"),
            }
        }
        (None, Some(p)) => p.display().to_string(),
        (None, None) => match env_all {
            Some((name, url)) => {
                config = with(config, &[url], name)?;
                format!("socksify's defaults with the proxy of {name} (no configuration file)")
            }
            None => "socksify's defaults".to_owned(),
        },
    };
    config.isolate |= opts.isolate;
    if !config.has_proxies() {
        let origin = path.as_ref().map_or("no configuration file was found".to_owned(), |p| {
            format!("{} lists no [[proxy]]", p.display())
        });
        return Err(format!(
            "no proxy configured: {origin}; add a [[proxy]] url = \"socks5://host:port\", pass -p URL, or set {PROXY_ENV} or ALL_PROXY"
        ));
    }
    Ok((path, config, source))
}

/// A `log_file` the library can append to without ever blocking: a regular file (made now if
/// missing) or a character device such as /dev/null, in a directory that exists.
fn check_log_file(file: &Path) -> Result<(), String> {
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let bad = |why: String| Err(format!("log_file {}: {why}", file.display()));
    match std::fs::metadata(file) {
        Ok(m) if m.is_file() || m.file_type().is_char_device() => {}
        Ok(_) => {
            return bad("not a regular file (a FIFO, socket or directory would block or lose the log)".into())
        }
        Err(_) if !file.parent().is_some_and(Path::is_dir) => {
            return bad("its directory does not exist".into());
        }
        Err(_) => {}
    }
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(file)
        .map(drop)
        .or_else(|e| bad(format!("cannot open it to append: {e}")))
}

/// What `prepare` found: the checked configuration and the program's environment changes.
struct Prepared {
    config: Config,
    env: EnvChanges,
}

/// Everything checked before the program runs, and the environment it gets; any error stops
/// here with exit status 2.
fn prepare(opts: &ChainOpts, log: &LogOpts) -> Result<Prepared, String> {
    let (path, config, source) = load(opts)?;
    let library = find_library()?;
    if log.verbose {
        let hops: Vec<String> = config.proxies.iter().map(|p| p.to_string()).collect();
        eprintln!(
            "socksify: settings {source}; {} chain: {}; DNS {}; library {}",
            format!("{:?}", config.chain).to_lowercase(),
            if hops.is_empty() { "(none)".to_owned() } else { hops.join(" -> ") },
            if config.dns == config::DnsMode::Remote { "through the proxies" } else { "local" },
            library.display()
        );
        for c in &config.chains {
            let hops: Vec<String> = c.proxies.iter().map(|p| p.to_string()).collect();
            eprintln!(
                "socksify: chain {} ({}): {}",
                c.name,
                format!("{:?}", c.mode).to_lowercase(),
                hops.join(" -> ")
            );
        }
        for i in 0..config.routes.len() {
            eprintln!("socksify: {}", config.describe_route(i));
        }
        if config.isolate {
            eprintln!(
                "socksify: isolate: each process its own SOCKS5 username and password on hops that have none"
            );
        }
        if config.dead_hop.is_zero() {
            eprintln!("socksify: dead_hop_s = 0: a dead hop is tried again by every connection");
        } else {
            eprintln!(
                "socksify: a dead hop is skipped by every process of the session for {} s (dead_hop_s)",
                config.dead_hop.as_secs()
            );
        }
    }
    let level = if log.quiet {
        LogLevel::Quiet
    } else if log.verbose {
        LogLevel::Verbose
    } else {
        LogLevel::Normal
    };
    let env = vec![
        (PRELOAD_ENV, Some(preload_value(&library, std::env::var_os(PRELOAD_ENV)))),
        (CONFIG_ENV, path.map(OsString::from)),
        (OLD_PROXIES_ENV, None),
        (LOG_ENV, Some(level.as_str().into())),
        (SESSION_ENV, None),
        (SOURCE_ENV, Some(source.into())),
    ];
    Ok(Prepared { config, env })
}

/// This process's environment with `changes` applied.
fn environment(changes: &EnvChanges) -> Vec<CString> {
    let names: Vec<&str> = changes.iter().map(|(name, _)| *name).collect();
    let entry = |k: &OsStr, v: &OsStr| {
        let mut kv = Vec::with_capacity(k.len() + v.len() + 2);
        kv.extend_from_slice(k.as_bytes());
        kv.push(b'=');
        kv.extend_from_slice(v.as_bytes());
        CString::new(kv).ok()
    };
    std::env::vars_os()
        .filter(|(k, _)| !names.iter().any(|name| k == name))
        .filter_map(|(k, v)| entry(&k, &v))
        .chain(changes.iter().filter_map(|(k, v)| entry(OsStr::new(k), v.as_deref()?)))
        .collect()
}

fn cstring(s: &OsStr) -> Result<CString, String> {
    CString::new(s.as_bytes()).map_err(|_| format!("{} contains a NUL byte", s.to_string_lossy()))
}

/// Replaces this process with the program (searched in PATH); returns only on failure, with the
/// shell's exit statuses (127: not found, 126: not runnable).
fn exec(command: &[OsString], changes: EnvChanges) -> libc::c_int {
    let env = environment(&changes);
    let argv: Result<Vec<CString>, String> = command.iter().map(|a| cstring(a)).collect();
    let argv = match argv {
        Ok(a) => a,
        Err(e) => {
            eprintln!("socksify: {e}");
            return 2;
        }
    };
    let ptrs = |v: &[CString]| v.iter().map(|c| c.as_ptr()).chain([std::ptr::null()]).collect::<Vec<_>>();
    let (argv_p, env_p) = (ptrs(&argv), ptrs(&env));
    // SAFETY: NUL-terminated argument and environment arrays that outlive the call.
    unsafe { libc::execvpe(argv_p[0], argv_p.as_ptr(), env_p.as_ptr()) };
    let err = std::io::Error::last_os_error();
    eprintln!("socksify: cannot run {}: {err}", command[0].to_string_lossy());
    if err.kind() == std::io::ErrorKind::NotFound {
        127
    } else {
        126
    }
}

/// The library next to this executable, else in `../lib/socksify/`; always an absolute path,
/// never searched for in the current directory.
fn find_library() -> Result<PathBuf, String> {
    // /proc/self/exe: absolute, links resolved.
    let exe = std::env::current_exe().map_err(|e| format!("cannot locate the socksify executable: {e}"))?;
    let dir = exe.parent().ok_or("the socksify executable has no directory")?;
    let candidates = [dir.join(LIBRARY), dir.join("../lib/socksify").join(LIBRARY)];
    candidates
        .iter()
        .enumerate()
        .find(|(_, p)| p.is_file())
        .map(|(i, p)| if i == 0 { p.clone() } else { p.canonicalize().unwrap_or_else(|_| p.clone()) })
        .ok_or_else(|| {
            format!("cannot find {LIBRARY} in {} or {}", candidates[0].display(), candidates[1].display())
        })
}

/// The library first, then whatever was preloaded already (once).
fn preload_value(library: &Path, existing: Option<OsString>) -> OsString {
    let mut value = OsString::from(library);
    if let Some(existing) = existing {
        for entry in existing.as_bytes().split(|&b| b == b':' || b == b' ').filter(|e| !e.is_empty()) {
            if entry != library.as_os_str().as_bytes() {
                value.push(":");
                value.push(OsStr::from_bytes(entry));
            }
        }
    }
    value
}

/// Like ssh with a private key: a configuration file that holds proxy passwords should be
/// readable by its owner only.
fn warn_if_secrets_exposed(path: &Path, config: &Config) {
    let has_password = config.proxies.iter().any(|p| p.creds.as_ref().is_some_and(|c| !c.pass.is_empty()));
    let Ok(meta) = path.metadata() else { return };
    let mode = meta.permissions().mode() & 0o777;
    if has_password && mode & 0o077 != 0 {
        eprintln!(
            "socksify: warning: {} holds proxy passwords and is readable by others (mode {mode:o}); run: chmod 600 {}",
            path.display(),
            path.display()
        );
    }
}

/// Setuid, setgid and file-capability programs: the loader ignores LD_PRELOAD for them, and
/// under the kernel guard (no_new_privs) they run without their privileges. Say which.
fn warn_if_privileged(program: &OsStr, guarded: bool) {
    let Some(path) = which(program) else { return };
    let Ok(meta) = path.metadata() else { return };
    let mode = meta.permissions().mode();
    let why = if mode & 0o4000 != 0 {
        Some("setuid")
    } else if mode & 0o2000 != 0 {
        Some("setgid")
    } else if has_file_capabilities(&path) {
        Some("has file capabilities")
    } else {
        None
    };
    match (why, guarded) {
        (Some(why), false) => eprintln!(
            "socksify: warning: {} is {why}: the loader ignores LD_PRELOAD for it, so its traffic will NOT go through the proxies",
            path.display()
        ),
        (Some(why), true) => eprintln!(
            "socksify: warning: {} is {why}: under the kernel guard (no_new_privs) it runs without those privileges; its traffic is proxied",
            path.display()
        ),
        (None, _) => {}
    }
}

fn which(program: &OsStr) -> Option<PathBuf> {
    elf::which(&program.to_string_lossy())
}

fn has_file_capabilities(path: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else { return false };
    // SAFETY: getxattr with a NUL-terminated path and name, asking only for the size.
    let n = unsafe { libc::getxattr(c.as_ptr(), c"security.capability".as_ptr(), std::ptr::null_mut(), 0) };
    n > 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_found_in_urls() {
        let span = |u: &str| password_span(u.as_bytes()).map(|r| u[r].to_owned());
        assert_eq!(span("socks5://alice:S3cr3t@10.0.0.1:1080").as_deref(), Some("S3cr3t"));
        assert_eq!(span("http://bob:p@ss@proxy:3128/").as_deref(), Some("p@ss"));
        assert_eq!(span("socks5://alice@10.0.0.1:1080"), None);
        assert_eq!(span("socks5://10.0.0.1:1080"), None);
        assert_eq!(span("--verbose"), None);
    }

    #[test]
    fn preload_is_prepended_once() {
        let lib = Path::new("/opt/s/libsocksify_preload.so");
        assert_eq!(preload_value(lib, None), OsString::from("/opt/s/libsocksify_preload.so"));
        assert_eq!(
            preload_value(lib, Some("/a.so /opt/s/libsocksify_preload.so:/b.so".into())),
            OsString::from("/opt/s/libsocksify_preload.so:/a.so:/b.so")
        );
    }

    #[test]
    fn options_stop_at_the_command() {
        let cli = Cli::try_parse_from(["socksify", "-p", "socks5://h:1", "curl", "-v", "-p", "x"]).unwrap();
        assert_eq!(cli.chain.proxy, vec!["socks5://h:1"]);
        assert_eq!(cli.command, vec!["curl", "-v", "-p", "x"]);
        assert!(!cli.log.verbose);
        let cli = Cli::try_parse_from(["socksify", "-v", "--", "-weird"]).unwrap();
        assert_eq!(cli.command, vec!["-weird"]);
    }
}
