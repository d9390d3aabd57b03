//! Log lines, to stderr or to the configured file; never to stdout. One `write` a line, so
//! lines from threads and processes do not interleave.

use std::ffi::CString;
use std::fmt;

use socksify_core::contract::{LogLevel, LOG_ENV};

use crate::sys::sock;

pub struct Logger {
    level: LogLevel,
    file: Option<CString>,
}

impl Logger {
    /// `quiet` is the configuration's; the environment (the command line's -q/-v) wins.
    pub fn from_env(file: Option<&std::path::Path>, quiet: bool) -> Logger {
        let level = match std::env::var(LOG_ENV).ok().as_deref().and_then(LogLevel::parse) {
            Some(l) => l,
            None if quiet => LogLevel::Quiet,
            None => LogLevel::Normal,
        };
        Logger::new(level, file)
    }

    pub fn new(level: LogLevel, file: Option<&std::path::Path>) -> Logger {
        let file = file.and_then(|p| CString::new(p.as_os_str().as_encoded_bytes()).ok());
        Logger { level, file }
    }

    pub fn verbose(&self) -> bool {
        self.level >= LogLevel::Verbose
    }

    /// A failure the user should see (hidden by `--quiet`).
    pub fn error(&self, args: fmt::Arguments) {
        if self.level >= LogLevel::Normal {
            self.write(args);
        }
    }

    /// A line per proxied connection, with `--verbose`.
    pub fn info(&self, args: fmt::Arguments) {
        if self.level >= LogLevel::Verbose {
            self.write(args);
        }
    }

    fn write(&self, args: fmt::Arguments) {
        let line = format!("socksify[{}]: {args}\n", crate::sys::pid());
        match &self.file {
            Some(path) => {
                if let Some(f) = sock::open_append(path) {
                    let _ = sock::write_all(f.raw(), line.as_bytes());
                }
            }
            None => {
                let _ = sock::write_all(2, line.as_bytes());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_go_to_the_file_at_the_level_asked() {
        let path = std::env::temp_dir().join(format!("socksify-ops-log-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let normal = Logger::new(LogLevel::Normal, Some(&path));
        normal.error(format_args!("one"));
        normal.info(format_args!("hidden"));
        Logger::new(LogLevel::Quiet, Some(&path)).error(format_args!("hidden too"));
        Logger::new(LogLevel::Verbose, Some(&path)).info(format_args!("two"));
        let text = std::fs::read_to_string(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(lines[0].starts_with("socksify[") && lines[0].ends_with("]: one"), "{text}");
        assert!(lines[1].ends_with("]: two"));
    }
}
