//! socksify's library, below the hooks it exports from `socksify-preload`. One layering, each
//! layer using only those below it (a test checks the imports):
//!
//! ```text
//!   hooks    socksify-preload: the exported C functions, a few lines each (one macro)
//!     │
//!   ops      what each call means: net, udp, bind, dns, fds — a Flow for the hook
//!     │
//!   table    the program's descriptors: entries by inode, followed through dup/close;
//!     │      one atomic load for a descriptor socksify never touched
//!   runtime  the hook guard and errno, log lines, the real libc functions, the state
//!     │
//!   sys      every system call, typed, straight to the kernel; checked copies of the
//!            program's memory
//! ```
//!
//! The crate is an ordinary library: its unit tests need neither root nor a network (loopback
//! sockets and socketpairs stand in for what needs the kernel).

pub mod ops;
pub mod runtime;
pub mod sys;
pub mod table;

#[cfg(test)]
mod layering;
