//! The contract between the `socksify` CLI and the library it preloads into the program: the
//! environment variables the CLI sets and the library reads, defined once for both. The
//! configuration itself is not among them: the CLI resolves it once and writes it into the
//! session (`socksify_core::session`), which `SOCKSIFY_SESSION` names.

pub use crate::config::CONFIG_ENV;
pub use crate::session::SESSION_ENV;

/// The dynamic loader's variable: the CLI puts the library's absolute path first in it.
pub const PRELOAD_ENV: &str = "LD_PRELOAD";
/// What earlier versions passed the command line's proxies in (passwords included): removed
/// from every program's environment.
pub const OLD_PROXIES_ENV: &str = "SOCKSIFY_PROXIES";
/// How much the library logs (`-q`, `-v`): see [`LogLevel`].
pub const LOG_ENV: &str = "SOCKSIFY_LOG";

/// Where the chain came from, in words (for `socksify show`): the configuration file, `-p`,
/// `SOCKSIFY_PROXY` or `ALL_PROXY`.
pub const SOURCE_ENV: &str = "SOCKSIFY_CHAIN_SOURCE";
/// One or more proxy URLs (separated by spaces or commas), as `-p` gives them.
pub const PROXY_ENV: &str = "SOCKSIFY_PROXY";

/// The variables that `socksify on` sets in a shell (and `socksify off` unsets). None holds a
/// secret: the resolved configuration is a file of the session (mode 0600).
pub const SHELL_VARS: [&str; 5] = [SESSION_ENV, CONFIG_ENV, LOG_ENV, OLD_PROXIES_ENV, SOURCE_ENV];

/// How much is logged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Quiet,
    Normal,
    Verbose,
}

impl LogLevel {
    /// The value of [`LOG_ENV`].
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Quiet => "quiet",
            LogLevel::Normal => "normal",
            LogLevel::Verbose => "verbose",
        }
    }

    /// [`LOG_ENV`]'s value; `None` when unset or unknown.
    pub fn parse(value: &str) -> Option<LogLevel> {
        match value {
            "quiet" => Some(LogLevel::Quiet),
            "normal" => Some(LogLevel::Normal),
            "verbose" => Some(LogLevel::Verbose),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_round_trip() {
        for l in [LogLevel::Quiet, LogLevel::Normal, LogLevel::Verbose] {
            assert_eq!(LogLevel::parse(l.as_str()), Some(l));
        }
        assert_eq!(LogLevel::parse("loud"), None);
    }
}
