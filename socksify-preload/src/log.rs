//! Log lines, to stderr or to the configured file; never to stdout. Written with raw system
//! calls, one `write` a line, so lines from threads and processes do not interleave.

use std::ffi::CString;
use std::fmt;
use std::io;

/// How much is logged: `SOCKSIFY_LOG` = quiet | normal | verbose.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Quiet,
    Normal,
    Verbose,
}

pub const LEVEL_ENV: &str = "SOCKSIFY_LOG";

pub struct Logger {
    level: Level,
    file: Option<CString>,
}

impl Logger {
    /// `quiet` is the configuration's; the environment (the command line's -q/-v) wins.
    pub fn from_env(file: Option<&std::path::Path>, quiet: bool) -> Logger {
        let level = match std::env::var(LEVEL_ENV).as_deref() {
            Ok("quiet") => Level::Quiet,
            Ok("verbose") => Level::Verbose,
            _ if quiet => Level::Quiet,
            _ => Level::Normal,
        };
        let file = file.and_then(|p| CString::new(p.as_os_str().as_encoded_bytes()).ok());
        Logger { level, file }
    }

    pub fn verbose(&self) -> bool {
        self.level >= Level::Verbose
    }

    /// A failure the user should see (hidden by `--quiet`).
    pub fn error(&self, args: fmt::Arguments) {
        if self.level >= Level::Normal {
            self.write(args);
        }
    }

    /// A line per proxied connection, with `--verbose`.
    pub fn info(&self, args: fmt::Arguments) {
        if self.level >= Level::Verbose {
            self.write(args);
        }
    }

    fn write(&self, args: fmt::Arguments) {
        // SAFETY: getpid has no preconditions.
        let line = format!("socksify[{}]: {args}\n", unsafe { libc::getpid() });
        let fd = match &self.file {
            // SAFETY: a NUL-terminated path; the descriptor is closed below.
            Some(path) => unsafe {
                libc::open(
                    path.as_ptr(),
                    libc::O_WRONLY | libc::O_APPEND | libc::O_CREAT | libc::O_CLOEXEC,
                    0o600,
                )
            },
            None => 2,
        };
        if fd < 0 {
            return;
        }
        let _ = write_all(fd, line.as_bytes());
        if fd != 2 {
            // SAFETY: `fd` was opened above and is closed once.
            unsafe { crate::syscall::raw(libc::SYS_close, &[fd as libc::c_long]) };
        }
    }
}

fn write_all(fd: i32, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        // SAFETY: writes from a live slice.
        let n = unsafe {
            crate::syscall::raw(
                libc::SYS_write,
                &[fd as libc::c_long, bytes.as_ptr() as libc::c_long, bytes.len() as libc::c_long],
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        bytes = &bytes[n as usize..];
    }
    Ok(())
}

/// Called when a hook's body panicked (the panic message itself went to stderr already).
pub fn panic_caught() {
    if let Ok(state) = crate::state::get() {
        state.log.error(format_args!("internal error in a hook; the call failed (nothing went direct)"));
    }
}
