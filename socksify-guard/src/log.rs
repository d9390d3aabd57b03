//! The supervisor's log lines: one `write` each, to the descriptor it was given at start (its
//! own duplicate of stderr) or to the configured file, named after the process that made the
//! call.

use std::fmt;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Quiet,
    Normal,
    Verbose,
}

pub struct Log {
    level: Level,
    out: std::sync::RwLock<Option<OwnedFd>>,
    to_file: bool,
    /// `log_format = "json"`: every line a JSON object (`socksify_core::logjson`).
    json: bool,
}

impl Log {
    /// Logs at `level` to `file` (appended), else to a duplicate of this process's stderr.
    pub fn new(level: Level, file: Option<&Path>) -> Log {
        let out = match file {
            Some(path) => {
                std::fs::OpenOptions::new().append(true).create(true).open(path).ok().map(OwnedFd::from)
            }
            None => {
                // SAFETY: F_DUPFD_CLOEXEC of stderr, high, owned from here on.
                let fd = unsafe { libc::fcntl(2, libc::F_DUPFD_CLOEXEC, 100) };
                // SAFETY: a descriptor just created for us.
                (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
            }
        };
        Log { level, out: std::sync::RwLock::new(out), to_file: file.is_some(), json: false }
    }

    /// The same log, writing JSON lines when `json` is set.
    pub fn with_json(self, json: bool) -> Log {
        Log { json, ..self }
    }

    /// True when lines are JSON: connection decisions are then logged, one line each.
    pub fn json(&self) -> bool {
        self.json && self.level >= Level::Normal
    }

    /// A connection decision, as a JSON line (with `log_format = "json"` only).
    pub fn decision(&self, config: &socksify_core::config::Config, d: socksify_core::logjson::Decision) {
        if self.json() {
            self.write_line(d.line(config).as_bytes());
        }
    }

    /// Lets go of the stderr it was given (the program has ended; what it left running logs to
    /// `log_file` only): a pipe the program's stderr was must end when the program does.
    pub fn detach_stderr(&self) {
        if !self.to_file {
            *self.out.write().unwrap_or_else(|p| p.into_inner()) = None;
        }
    }

    pub fn verbose(&self) -> bool {
        self.level >= Level::Verbose
    }

    /// A failure the user should see (hidden by `--quiet`).
    pub fn error(&self, pid: libc::pid_t, args: fmt::Arguments) {
        if self.level >= Level::Normal {
            self.write(pid, "error", args);
        }
    }

    /// A line per proxied connection and per decision, with `--verbose`.
    pub fn info(&self, pid: libc::pid_t, args: fmt::Arguments) {
        if self.level >= Level::Verbose {
            self.write(pid, "info", args);
        }
    }

    fn write(&self, pid: libc::pid_t, level: &str, args: fmt::Arguments) {
        let line = match self.json {
            true => {
                let program = socksify_core::logjson::program_of(pid as u32);
                socksify_core::logjson::message(pid as u32, &program, level, &args.to_string())
            }
            false => format!("socksify[{pid}]: {args}\n"),
        };
        self.write_line(line.as_bytes());
    }

    fn write_line(&self, line: &[u8]) {
        let out = self.out.read().unwrap_or_else(|p| p.into_inner());
        let Some(fd) = out.as_ref() else { return };
        // SAFETY: borrowing our own descriptor for one write; ManuallyDrop keeps it open.
        let mut f = std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(fd.as_raw_fd()) });
        let _ = f.write_all(line);
    }
}
