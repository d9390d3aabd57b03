//! Log lines, to stderr or to the configured file; never to stdout. One `write` a line, so
//! lines from threads and processes do not interleave.

use std::ffi::CString;
use std::fmt;
use std::sync::atomic::{AtomicI32, Ordering};

use libc::c_int;
use socksify_core::contract::{LogLevel, LOG_ENV};

use crate::sys::sock;

pub struct Logger {
    level: LogLevel,
    sink: Sink,
    /// `log_format = "json"`: every line a JSON object (`socksify_core::logjson`).
    json: bool,
}

/// Where lines go: the stderr the program was started with, or the log file opened when the
/// library was loaded (a descriptor of the library's own) — checked before each line to be
/// still that very file. It is never "whatever descriptor 2 is now": a program started with
/// stderr closed may have a socket there, and one that sent its stderr elsewhere (a daemon,
/// to /dev/null) gets no lines there. Stderr is not duplicated: a copy would keep the pipe of
/// whoever reads it open after the program let go of it.
struct Sink {
    fd: AtomicI32,
    /// The file's (device, inode) when the library was loaded.
    id: (u64, u64),
    /// The descriptor is the library's own (the log file's), closed with the sink.
    own: bool,
}

impl Sink {
    fn none() -> Sink {
        Sink { fd: AtomicI32::new(-1), id: (0, 0), own: false }
    }

    /// Descriptor 2 as it is now, unless there is none, or it is an internet socket (stderr was
    /// closed, and a program's connection took its number before an exec).
    fn stderr() -> Sink {
        let is_inet_socket = matches!(sock::family(2), Some(libc::AF_INET | libc::AF_INET6));
        match sock::identity(2) {
            Some(id) if !is_inet_socket => Sink { fd: AtomicI32::new(2), id, own: false },
            _ => Sink::none(),
        }
    }

    /// The log file, opened now without ever blocking (a FIFO without a reader is refused, one
    /// with a reader never makes a line wait), or stderr when it cannot be opened.
    fn file(path: &std::ffi::CStr) -> Sink {
        let Some(f) = sock::open_log(path) else { return Sink::stderr() };
        match sock::identity(f.raw()) {
            Some(id) => Sink::adopt(sock::dup_high(f.raw()), id),
            None => Sink::none(),
        }
    }

    fn adopt(fd: Option<c_int>, id: (u64, u64)) -> Sink {
        Sink { fd: AtomicI32::new(fd.unwrap_or(-1)), id, own: true }
    }

    fn write(&self, line: &[u8]) {
        let fd = self.fd.load(Ordering::Acquire);
        if fd >= 0 && sock::identity(fd) == Some(self.id) {
            let _ = sock::write_all(fd, line);
        }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        let fd = *self.fd.get_mut();
        if fd >= 0 && self.own {
            sock::close(fd);
        }
    }
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
        let sink = if level == LogLevel::Quiet {
            Sink::none()
        } else {
            match file.and_then(|p| CString::new(p.as_os_str().as_encoded_bytes()).ok()) {
                Some(path) => Sink::file(&path),
                None => Sink::stderr(),
            }
        };
        Logger { level, sink, json: false }
    }

    /// The same logger, writing JSON lines when `json` is set.
    pub fn with_json(self, json: bool) -> Logger {
        Logger { json, ..self }
    }

    /// True when lines are JSON: connection decisions are then logged, one line each.
    pub fn json(&self) -> bool {
        self.json && self.level >= LogLevel::Normal
    }

    /// A connection decision, as a JSON line (with `log_format = "json"` only).
    pub fn decision(&self, config: &socksify_core::config::Config, d: socksify_core::logjson::Decision) {
        if self.json() {
            self.sink.write(d.line(config).as_bytes());
        }
    }

    pub fn verbose(&self) -> bool {
        self.level >= LogLevel::Verbose
    }

    /// The library's own descriptor that lines go to (the log file's), if any.
    pub fn descriptor(&self) -> Option<c_int> {
        Some(self.sink.fd.load(Ordering::Acquire)).filter(|&fd| fd >= 0 && self.sink.own)
    }

    /// Moves the descriptor to another number (the program wants `fd`); returns the new one.
    pub fn relocate(&self, fd: c_int) -> Option<c_int> {
        if self.descriptor() != Some(fd) {
            return None;
        }
        let new = sock::dup_high(fd)?;
        self.sink.fd.store(new, Ordering::Release);
        sock::close(fd);
        Some(new)
    }

    /// A failure the user should see (hidden by `--quiet`).
    pub fn error(&self, args: fmt::Arguments) {
        if self.level >= LogLevel::Normal {
            self.write("error", args);
        }
    }

    /// A line per proxied connection, with `--verbose`.
    pub fn info(&self, args: fmt::Arguments) {
        if self.level >= LogLevel::Verbose {
            self.write("info", args);
        }
    }

    /// A line that must not allocate (from a signal handler).
    pub fn raw(&self, line: &[u8]) {
        if self.level >= LogLevel::Normal {
            self.sink.write(line);
        }
    }

    fn write(&self, level: &str, args: fmt::Arguments) {
        let line = match self.json {
            true => socksify_core::logjson::message(
                crate::sys::pid() as u32,
                &program(),
                level,
                &args.to_string(),
            ),
            false => format!("socksify[{}]: {args}\n", crate::sys::pid()),
        };
        self.sink.write(line.as_bytes());
    }
}

/// This process's name (its main thread's `comm`, as `ps` shows it; not the calling thread's,
/// which may be the library's own worker), read once: a fork's child has the same, and an
/// exec loads the library anew.
pub fn program() -> String {
    static NAME: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    NAME.get_or_init(|| {
        std::fs::read_to_string("/proc/self/comm")
            .map_or_else(|_| "?".to_owned(), |s| s.trim_end().to_owned())
    })
    .clone()
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

    #[test]
    fn lines_go_to_the_file_opened_at_start_and_nowhere_else() {
        let path = std::env::temp_dir().join(format!("socksify-ops-log2-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let log = Logger::new(LogLevel::Normal, Some(&path));
        let fd = log.descriptor().unwrap();
        assert!(fd >= 10, "a number of the library's own, high in the table");
        // The program replaces the number with another file: nothing goes there.
        let other = std::env::temp_dir().join(format!("socksify-ops-log3-{}", std::process::id()));
        let f = std::fs::File::create(&other).unwrap();
        use std::os::fd::AsRawFd;
        assert_eq!(unsafe { libc::dup2(f.as_raw_fd(), fd) }, fd); // SAFETY: onto our own number
        log.error(format_args!("lost"));
        assert_eq!(std::fs::read_to_string(&other).unwrap(), "");
        let _ = std::fs::remove_file(&other);
        // Moved away first, it keeps working.
        let log = Logger::new(LogLevel::Normal, Some(&path));
        let fd = log.descriptor().unwrap();
        let moved = log.relocate(fd).unwrap();
        assert_ne!(moved, fd);
        log.error(format_args!("kept"));
        let text = std::fs::read_to_string(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        assert!(text.ends_with("]: kept\n"), "{text}");
    }

    #[test]
    fn a_fifo_without_a_reader_never_blocks_and_lines_fall_back_to_stderr() {
        let path = std::env::temp_dir().join(format!("socksify-ops-fifo-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let c = CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0); // SAFETY: a NUL-terminated path
        let log = Logger::new(LogLevel::Normal, Some(&path));
        log.error(format_args!("does not hang"));
        let _ = std::fs::remove_file(&path);
    }
}
