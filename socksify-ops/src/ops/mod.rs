//! Layer 4 — what each call means: connections (`net`), UDP through the relay (`udp`), BIND
//! (`bind`), names (`dns`), the DNS stub for queries to the system's nameservers (`stub`) and descriptors (`fds`), over the program's messages copied safely
//! (`msg`). Each answers a hook with a `Flow`: the real call, a value, or an errno (with its
//! reason logged). Uses `table`, `runtime` and `sys`.

pub mod bind;
pub mod dns;
pub mod fds;
pub mod gated;
pub mod msg;
pub mod net;
pub mod pending;
pub mod stub;
pub mod udp;

#[cfg(test)]
mod testing;
