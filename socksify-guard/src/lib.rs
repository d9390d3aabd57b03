//! socksify's kernel guard. A seccomp filter with a user-notification listener, installed in
//! the program before it `exec`s and inherited by every thread, fork and exec of its process
//! tree, sends its network system calls to a supervisor process, which proxies them through the
//! chain, lets them through, or refuses them — whatever the program is: Go, static binaries,
//! inline `syscall` instructions, io_uring, children that drop the environment.
//!
//! - `bpf`: the filter; `notif`: its listener; `sys`: the system calls behind both.
//! - `policy`: where each connection or datagram goes (pure, unit-tested).
//! - `calls`: each trapped call, carried out on the program's behalf; `supervisor`: receives,
//!   dispatches and answers; `stub`: the DNS stub for queries to the system's nameservers.
//! - `launch`: the processes — the program, the supervisor, and the `socksify` process the
//!   shell waits for; `elf`: which programs the preload library cannot enter.

/// Raw socket addresses, read as the kernel reads them (in the core: the library uses them too).
pub use socksify_core::sockaddr as addr;
pub mod bpf;
mod calls;
pub mod elf;
pub mod launch;
pub mod log;
pub mod notif;
pub mod policy;
pub mod stub;
pub mod supervisor;
pub mod sys;
