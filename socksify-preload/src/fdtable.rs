//! What the library knows about the program's proxied sockets: the address each was connected
//! to, for `getpeername`. Entries carry the socket's inode, so a descriptor number that was
//! closed and reused is never mistaken for the proxied socket.

use std::collections::HashMap;
use std::net::SocketAddr;

use libc::c_int;
use parking_lot::Mutex;

use crate::sock::inode;

static TABLE: Mutex<Option<HashMap<c_int, (u64, SocketAddr)>>> = Mutex::new(None);

pub fn remember(fd: c_int, peer: SocketAddr) {
    if let Some(ino) = inode(fd) {
        TABLE.lock().get_or_insert_with(HashMap::new).insert(fd, (ino, peer));
    }
}

/// The address the program connected `fd` to, if the library proxied it.
pub fn peer(fd: c_int) -> Option<SocketAddr> {
    let mut table = TABLE.lock();
    let map = table.as_mut()?;
    let (ino, peer) = *map.get(&fd)?;
    if inode(fd) == Some(ino) {
        Some(peer)
    } else {
        map.remove(&fd);
        None
    }
}

/// `pthread_atfork` handlers: the lock is taken before `fork()` and released on both sides, so a
/// child never inherits it held by a thread that does not exist there.
pub extern "C" fn before_fork() {
    std::mem::forget(TABLE.lock());
}

pub extern "C" fn after_fork() {
    // SAFETY: `before_fork` locked the table in this thread and leaked the guard.
    unsafe { TABLE.force_unlock() };
}
