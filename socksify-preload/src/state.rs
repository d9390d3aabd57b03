//! The library's state, built once from the environment that the `socksify` CLI prepared:
//! `SOCKSIFY_CONFIG` (the configuration file), `SOCKSIFY_PROXIES` (proxy URLs, one a line, that
//! replace the file's) and `SOCKSIFY_LOG`. When it cannot be built, every connection that would
//! have been proxied fails, with one log line saying why.

use std::sync::OnceLock;

use socksify_core::config::{self, Config};
use socksify_core::fakedns::DEFAULT_CAPACITY;
use socksify_core::hosts::Hosts;
use socksify_core::router::Router;
use socksify_core::session::{Session, SESSION_ENV};
use socksify_core::Chain;

use crate::log::Logger;

pub const PROXIES_ENV: &str = "SOCKSIFY_PROXIES";

pub struct State {
    pub router: Router,
    pub chain: Chain,
    pub log: Logger,
    /// The kernel guard supervises this process: it answers DNS queries to the system's
    /// nameservers (`nameservers`) with its stub, and catches what the hooks do not see.
    pub guarded: bool,
    nameservers: OnceLock<Vec<std::net::IpAddr>>,
    /// `SOCKSIFY_TEST_PANIC=1`: proxied connects panic inside the hook, so that the test suite
    /// can show that a panic fails the call and never reaches the real `connect`.
    pub test_panic: bool,
}

static STATE: OnceLock<Result<State, (Logger, String)>> = OnceLock::new();

/// The state, or the reason there is none (already logged once).
pub fn get() -> Result<&'static State, &'static str> {
    match STATE.get_or_init(build) {
        Ok(state) => Ok(state),
        Err((_, why)) => Err(why),
    }
}

/// Logs why the library is not working, for a call that therefore failed.
pub fn log_broken(what: std::fmt::Arguments) {
    if let Some(Err((log, why))) = STATE.get() {
        log.error(format_args!("{what} failed: socksify is not configured: {why}"));
    }
}

fn build() -> Result<State, (Logger, String)> {
    let fail = |why: String| (Logger::from_env(None, false), why);
    let config = match config::locate(None).map_err(|e| fail(e.to_string()))? {
        Some(path) => Config::load(&path).map_err(|e| fail(e.to_string()))?,
        None => Config::default(),
    };
    let config = match std::env::var(PROXIES_ENV) {
        Ok(urls) if !urls.trim().is_empty() => {
            let urls: Vec<&str> = urls.lines().map(str::trim).filter(|u| !u.is_empty()).collect();
            config.with_proxies(&urls).map_err(|e| fail(e.to_string()))?
        }
        _ => config,
    };
    if config.proxies.is_empty() {
        return Err(fail(format!(
            "no proxy configured (set {} to a configuration file or run through `socksify -p URL`)",
            config::CONFIG_ENV
        )));
    }
    let log = Logger::from_env(config.log_file.as_deref(), config.quiet);
    let chain = config.chain();
    // The session's table when there is one: every process of the run shares it, and the
    // kernel guard maps its fake addresses back too.
    let mut session = match std::env::var_os(SESSION_ENV).filter(|d| !d.is_empty()) {
        Some(dir) => match Session::open(std::path::Path::new(&dir), &config) {
            Ok(s) => Some(s),
            Err(e) => {
                log.error(format_args!(
                    "cannot open the session {}: {e}; fake addresses stay private to this process",
                    std::path::Path::new(&dir).display()
                ));
                None
            }
        },
        None => None,
    };
    let fake = session.as_mut().and_then(Session::take_fake);
    let guarded = session.as_ref().is_some_and(Session::guarded);
    let router = match fake {
        Some(fake) => Router::with_fake(config, Hosts::load_system(), Some(fake)),
        None => Router::new(config, Hosts::load_system(), DEFAULT_CAPACITY)
            .map_err(|e| fail(format!("cannot map the fake address table: {e}")))?,
    };
    let nameservers = OnceLock::new();
    let test_panic = std::env::var_os("SOCKSIFY_TEST_PANIC").is_some_and(|v| v == "1");
    drop(session); // its fake table lives on in the router
    Ok(State { router, chain, log, guarded, nameservers, test_panic })
}

impl State {
    /// True for a query to the system's nameservers that the kernel guard's stub answers: the
    /// library leaves it alone (its datagrams would otherwise reach the proxy's resolver).
    pub fn for_the_stub(&self, dest: std::net::SocketAddr) -> bool {
        if !self.guarded || !self.router.remote_dns() || dest.port() != 53 {
            return false;
        }
        let ip = match dest.ip() {
            std::net::IpAddr::V6(v6) => {
                v6.to_ipv4_mapped().map_or(std::net::IpAddr::V6(v6), std::net::IpAddr::V4)
            }
            v4 => v4,
        };
        self.nameservers.get_or_init(socksify_core::resolvconf::system_nameservers).contains(&ip)
    }
}
