//! The library's state, built once from the environment the `socksify` CLI prepared (see
//! `socksify_core::contract`). When it cannot be built, every connection that would have been
//! proxied fails, with one log line saying why.

use std::net::{IpAddr, SocketAddr};
use std::sync::OnceLock;

use socksify_core::config::Config;
use socksify_core::contract::{CONFIG_ENV, SESSION_ENV};
use socksify_core::fakedns::DEFAULT_CAPACITY;
use socksify_core::hosts::Hosts;
use socksify_core::router::Router;
use socksify_core::session::Session;
use socksify_core::Chain;

use super::log::Logger;

pub struct State {
    pub router: Router,
    /// Every chain, by `Route::Proxy`'s index: the default one first.
    pub chains: Vec<Chain>,
    pub log: Logger,
    /// The kernel guard supervises this process: it answers DNS queries to the system's
    /// nameservers (`nameservers`) with its stub, and catches what the hooks do not see.
    pub guarded: bool,
    nameservers: OnceLock<Vec<IpAddr>>,
    /// `SOCKSIFY_TEST_PANIC=1` (with the `test-panic` feature only): proxied connects panic
    /// inside the hook, so that the lab shows a panic fails the call, never reaching `connect`.
    pub test_panic: bool,
    /// The run's session (its state page records the background handshakes), if any.
    pub session: Option<Session>,
}

static STATE: OnceLock<Result<State, (Logger, String)>> = OnceLock::new();

/// The state, or the reason there is none (logged by [`log_broken`]).
pub fn state() -> Result<&'static State, &'static str> {
    match STATE.get_or_init(from_env) {
        Ok(state) => Ok(state),
        Err((_, why)) => Err(why),
    }
}

/// The library's logger, configured or not (`None` before the state is read).
pub fn logger() -> Option<&'static Logger> {
    match STATE.get()? {
        Ok(state) => Some(&state.log),
        Err((log, _)) => Some(log),
    }
}

/// Logs why the library is not working, for a call that therefore failed.
pub fn log_broken(what: std::fmt::Arguments) {
    if let Some(Err((log, why))) = STATE.get() {
        log.error(format_args!("{what} failed: socksify is not configured: {why}"));
    }
}

/// Reports a panic caught in a hook (the panic message itself went to stderr already).
pub fn report_panic() {
    if let Some(Ok(state)) = STATE.get() {
        state.log.error(format_args!("internal error in a hook; the call failed (nothing went direct)"));
    }
}

fn from_env() -> Result<State, (Logger, String)> {
    let fail = |why: String| (Logger::from_env(None, false), why);
    let (config, session) = match std::env::var_os(SESSION_ENV).filter(|d| !d.is_empty()) {
        // Started by `socksify`: the configuration it resolved, with the session's fake table.
        Some(dir) => {
            let dir = std::path::Path::new(&dir);
            let (session, config) = Session::open(dir)
                .map_err(|e| fail(format!("cannot read the session {} that socksify made: {e}", dir.display())))?;
            (config, Some(session))
        }
        // Preloaded by hand: only a configuration file named by its absolute path (never
        // searched for: a program that changes directory would find another one).
        None => match std::env::var_os(CONFIG_ENV).map(std::path::PathBuf::from) {
            Some(path) if path.is_absolute() => (Config::load(&path).map_err(|e| fail(e.to_string()))?, None),
            _ => {
                return Err(fail(format!(
                    "not started by socksify (no {SESSION_ENV}) and no absolute {CONFIG_ENV}: run the program as `socksify PROGRAM`"
                )))
            }
        },
    };
    if !config.has_proxies() {
        return Err(fail("no proxy configured".to_owned()));
    }
    let log = Logger::from_env(config.log_file.as_deref(), config.quiet)
        .with_json(config.log_format == socksify_core::config::LogFormat::Json);
    let test_panic =
        cfg!(feature = "test-panic") && std::env::var_os("SOCKSIFY_TEST_PANIC").is_some_and(|v| v == "1");
    let mut st = State::new(config, session, log).map_err(fail)?;
    st.test_panic = test_panic;
    Ok(st)
}

impl State {
    /// A state for `config`: the fake table of `session` when there is one (the kernel guard
    /// then supervises), else a table of this process's own.
    pub fn new(config: Config, mut session: Option<Session>, log: Logger) -> Result<State, String> {
        let chains = config.chains_remembering(session.as_ref().map(Session::hops));
        let fake = session.as_mut().and_then(Session::take_fake);
        let guarded = session.as_ref().is_some_and(Session::guarded);
        let router = match fake {
            Some(fake) => Router::with_fake(config, Hosts::load_system(), Some(fake)),
            None => Router::new(config, Hosts::load_system(), DEFAULT_CAPACITY)
                .map_err(|e| format!("cannot map the fake address table: {e}"))?,
        };
        Ok(State { router, chains, log, guarded, nameservers: OnceLock::new(), test_panic: false, session })
    }

    /// Chain `i` (`Route::Proxy`'s index); the default chain for one out of range.
    pub fn chain(&self, i: usize) -> &Chain {
        self.chains.get(i).unwrap_or(&self.chains[0])
    }

    /// Words naming chain `via` in log lines: ` (chain corp)`, or nothing with a single chain.
    pub fn chain_words(&self, via: usize) -> String {
        let config = self.router.config();
        match config.chains.is_empty() {
            true => String::new(),
            false => format!(" (chain {})", config.chain_name(via)),
        }
    }

    /// The same, supervised by the kernel guard whose stub answers `nameservers` (for tests).
    pub fn guarded_by(mut self, nameservers: Vec<IpAddr>) -> State {
        self.guarded = true;
        self.nameservers = OnceLock::from(nameservers);
        self
    }

    /// True for a query to the system's nameservers that the kernel guard's stub answers: the
    /// library leaves it alone (its datagrams would otherwise reach the proxy's resolver).
    pub fn for_the_stub(&self, dest: SocketAddr) -> bool {
        self.guarded && self.to_a_nameserver(dest)
    }

    /// True for a query to the system's nameservers that the library's own DNS stub answers
    /// (remote DNS, no kernel guard): it never leaves the process.
    pub fn for_our_stub(&self, dest: SocketAddr) -> bool {
        !self.guarded && self.to_a_nameserver(dest)
    }

    fn to_a_nameserver(&self, dest: SocketAddr) -> bool {
        if !self.router.remote_dns() || dest.port() != 53 {
            return false;
        }
        let ip = crate::sys::addr::unmapped(dest).ip();
        self.nameservers.get_or_init(socksify_core::resolvconf::system_nameservers).contains(&ip)
    }

    /// The same, with `nameservers` as the system's (for tests).
    pub fn with_nameservers(self, nameservers: Vec<IpAddr>) -> State {
        State { nameservers: OnceLock::from(nameservers), ..self }
    }
}
