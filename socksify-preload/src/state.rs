//! The library's state, built once from the environment that the `socksify` CLI prepared:
//! `SOCKSIFY_CONFIG` (the configuration file), `SOCKSIFY_PROXIES` (proxy URLs, one a line, that
//! replace the file's) and `SOCKSIFY_LOG`. When it cannot be built, every connection that would
//! have been proxied fails, with one log line saying why.

use std::sync::OnceLock;

use socksify_core::config::{self, Config};
use socksify_core::fakedns::DEFAULT_CAPACITY;
use socksify_core::hosts::Hosts;
use socksify_core::router::Router;
use socksify_core::Chain;

use crate::log::Logger;

pub const PROXIES_ENV: &str = "SOCKSIFY_PROXIES";

pub struct State {
    pub router: Router,
    pub chain: Chain,
    pub log: Logger,
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
    let router = Router::new(config, Hosts::load_system(), DEFAULT_CAPACITY)
        .map_err(|e| fail(format!("cannot map the fake address table: {e}")))?;
    let test_panic = std::env::var_os("SOCKSIFY_TEST_PANIC").is_some_and(|v| v == "1");
    Ok(State { router, chain, log, test_panic })
}
