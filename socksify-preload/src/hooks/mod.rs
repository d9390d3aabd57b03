//! The exported hooks, by kind.

mod bind;
mod connect;
mod dns;
mod fds;
mod rawdns;
mod recv;
mod send;
mod syscall;
mod wait;
