//! Remote DNS: each name a program looks up gets a fake address from a range that is never real
//! traffic, and `connect()` maps the address back to the name, which the proxy then resolves.
//!
//! The table lives in one `MAP_SHARED` mapping, so a process and every child it forks see the
//! same names at the same addresses, whichever of them resolved first. The mapping is anonymous
//! for one process tree, or a file of the session (`FakeDns::create`/`open`) that every process
//! of one `socksify` run maps, whatever it `exec`s, the supervisor included. It is lock-free:
//! an entry is written once, then published; a `fork()` in the middle of an insert can therefore
//! never leave a lock held. Its size is fixed when it is created; when it is full, new names
//! fail to resolve (existing ones keep working).

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicU16, AtomicU32, Ordering};

use ipnet::{Ipv4Net, Ipv6Net};

/// The longest name the table holds (the longest a DNS name can be written).
pub const MAX_NAME: usize = 253;
const ENTRY: usize = 256; // u16 length, then the name
const HEADER: usize = 64;
/// Written at offset 8 of a table file, with the ranges and the capacity after it: a file made
/// for other ranges (or by another version) is refused rather than misread.
const MAGIC: &[u8; 8] = b"SFYFAKE1";
/// How many names a table holds by default.
pub const DEFAULT_CAPACITY: u32 = 65_536;

/// Why a name got no fake address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FakeDnsError {
    #[error("the fake address table is full ({0} names); restart the program to start afresh")]
    Full(u32),
    #[error("not a host name that can be sent to a proxy (1 to 253 bytes, no NUL)")]
    BadName,
}

pub struct FakeDns {
    base: *mut u8,
    len: usize,
    capacity: u32,
    v4: Ipv4Net,
    v6: Ipv6Net,
}

// SAFETY: the mapping is only accessed through atomics and write-once entries (see `insert`).
unsafe impl Send for FakeDns {}
// SAFETY: as above.
unsafe impl Sync for FakeDns {}

impl Drop for FakeDns {
    fn drop(&mut self) {
        // SAFETY: `base`/`len` are the mapping made in `new`, unmapped once.
        unsafe { libc::munmap(self.base.cast(), self.len) };
    }
}

impl FakeDns {
    /// Maps a table for up to `capacity` names (fewer if a range is smaller), shared with the
    /// children this process forks.
    pub fn new(v4: Ipv4Net, v6: Ipv6Net, capacity: u32) -> io::Result<Self> {
        let capacity = fit_capacity(v4, v6, capacity)?;
        let len = table_len(capacity);
        // SAFETY: a fresh anonymous shared mapping; the kernel picks the address.
        let base = unsafe { map(len, libc::MAP_SHARED | libc::MAP_ANONYMOUS, -1)? };
        Ok(FakeDns { base, len, capacity, v4, v6 })
    }

    /// Creates the table as the file `path` (which must not exist; mode 0600), for every process
    /// of a session to map with `open`.
    pub fn create(path: &Path, v4: Ipv4Net, v6: Ipv6Net, capacity: u32) -> io::Result<Self> {
        let capacity = fit_capacity(v4, v6, capacity)?;
        let len = table_len(capacity);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC)
            .open(path)?;
        file.set_len(len as u64)?;
        // SAFETY: a shared mapping of the whole file, which is `len` bytes long.
        let base = unsafe { map(len, libc::MAP_SHARED, file.as_raw_fd())? };
        let table = FakeDns { base, len, capacity, v4, v6 };
        // SAFETY: the header is inside the mapping, and nobody else has the file yet.
        unsafe {
            std::ptr::copy_nonoverlapping(identity(capacity, v4, v6).as_ptr(), table.base.add(8), IDENTITY);
        }
        Ok(table)
    }

    /// Maps the table file of a session, made by `create` for the same ranges.
    pub fn open(path: &Path, v4: Ipv4Net, v6: Ipv6Net) -> io::Result<Self> {
        let file =
            std::fs::OpenOptions::new().read(true).write(true).custom_flags(libc::O_CLOEXEC).open(path)?;
        let size = file.metadata()?.len() as usize;
        let bad = || io::Error::new(io::ErrorKind::InvalidData, "not a fake address table for these ranges");
        if size < HEADER {
            return Err(bad());
        }
        // SAFETY: a shared mapping of the whole file, which is `size` bytes long.
        let base = unsafe { map(size, libc::MAP_SHARED, file.as_raw_fd())? };
        // SAFETY: the header is inside the mapping.
        let header = unsafe { std::slice::from_raw_parts(base.add(8), IDENTITY) };
        let capacity = u32::from_le_bytes([header[8], header[9], header[10], header[11]]);
        let table = FakeDns { base, len: size, capacity, v4, v6 };
        if capacity == 0 || table_len(capacity) != size || header != identity(capacity, v4, v6) {
            return Err(bad());
        }
        Ok(table)
    }

    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// How many names the table holds.
    pub fn len(&self) -> u32 {
        self.count().load(Ordering::Acquire).min(self.capacity)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn count(&self) -> &AtomicU32 {
        // SAFETY: the header is inside the mapping and 4-byte aligned (mmap is page aligned).
        unsafe { &*(self.base as *const AtomicU32) }
    }

    fn slot(&self, i: usize) -> &AtomicU32 {
        debug_assert!(i < 2 * self.capacity as usize);
        // SAFETY: slot i of 2*capacity, inside the mapping, 4-byte aligned.
        unsafe { &*(self.base.add(HEADER + i * 4) as *const AtomicU32) }
    }

    fn entry(&self, idx: u32) -> (&AtomicU16, *mut u8) {
        debug_assert!(idx < self.capacity);
        let at = HEADER + 2 * self.capacity as usize * 4 + idx as usize * ENTRY;
        // SAFETY: entry idx of capacity, inside the mapping; the length is 2-byte aligned.
        unsafe { (&*(self.base.add(at) as *const AtomicU16), self.base.add(at + 2)) }
    }

    /// The name of entry `idx`, once it is published.
    fn name_at(&self, idx: u32) -> Option<&[u8]> {
        if idx >= self.capacity {
            return None;
        }
        let (len, name) = self.entry(idx);
        match len.load(Ordering::Acquire) as usize {
            0 => None,
            // SAFETY: `n` bytes were written before the length was published with Release.
            n => Some(unsafe { std::slice::from_raw_parts(name, n) }),
        }
    }

    /// The table index of `name`, giving it one if it has none. Names are compared without
    /// regard to case and a trailing dot.
    pub fn insert(&self, name: &str) -> Result<u32, FakeDnsError> {
        let name = normalize(name)?;
        let key = name.as_bytes();
        let slots = 2 * self.capacity as usize;
        let start = (hash(key) % slots as u64) as usize;
        let mut mine: Option<u32> = None;
        for probe in 0..slots {
            let slot = self.slot((start + probe) % slots);
            let mut current = slot.load(Ordering::Acquire);
            loop {
                if current != 0 {
                    if self.name_at(current - 1) == Some(key) {
                        return Ok(current - 1);
                    }
                    break; // another name: probe on
                }
                let idx = match mine {
                    Some(idx) => idx,
                    None => {
                        let idx = self.count().fetch_add(1, Ordering::AcqRel);
                        if idx >= self.capacity {
                            self.count().store(self.capacity, Ordering::Release);
                            return Err(FakeDnsError::Full(self.capacity));
                        }
                        let (len, dst) = self.entry(idx);
                        // SAFETY: entry idx was handed to this call alone by fetch_add.
                        unsafe { std::ptr::copy_nonoverlapping(key.as_ptr(), dst, key.len()) };
                        len.store(key.len() as u16, Ordering::Release);
                        mine = Some(idx);
                        idx
                    }
                };
                match slot.compare_exchange(0, idx + 1, Ordering::AcqRel, Ordering::Acquire) {
                    Ok(_) => return Ok(idx),
                    Err(now) => current = now, // someone got there first: look at theirs
                }
            }
        }
        Err(FakeDnsError::Full(self.capacity))
    }

    pub fn ipv4(&self, idx: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.v4.network()) + 1 + idx)
    }

    pub fn ipv6(&self, idx: u32) -> Ipv6Addr {
        Ipv6Addr::from(u128::from(self.v6.network()) + 1 + idx as u128)
    }

    /// True when `ip` is in one of the fake ranges (whether or not it was handed out).
    pub fn is_fake(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(v4) => self.v4.contains(&v4),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => self.v4.contains(&v4),
                None => self.v6.contains(&v6),
            },
        }
    }

    /// The name behind a fake address, if it was handed out.
    pub fn name_of(&self, ip: IpAddr) -> Option<&str> {
        let offset: u128 = match ip {
            IpAddr::V6(v6) if v6.to_ipv4_mapped().is_none() => {
                if !self.v6.contains(&v6) {
                    return None;
                }
                u128::from(v6) - u128::from(self.v6.network())
            }
            _ => {
                let v4 = match ip {
                    IpAddr::V4(v4) => v4,
                    IpAddr::V6(v6) => v6.to_ipv4_mapped()?,
                };
                if !self.v4.contains(&v4) {
                    return None;
                }
                (u32::from(v4) - u32::from(self.v4.network())) as u128
            }
        };
        let idx = u32::try_from(offset.checked_sub(1)?).ok()?;
        self.name_at(idx).and_then(|b| std::str::from_utf8(b).ok())
    }
}

/// Bytes 8.. of the header: magic, capacity, the two ranges.
const IDENTITY: usize = 8 + 4 + 5 + 17;

fn identity(capacity: u32, v4: Ipv4Net, v6: Ipv6Net) -> [u8; IDENTITY] {
    let mut out = [0u8; IDENTITY];
    out[..8].copy_from_slice(MAGIC);
    out[8..12].copy_from_slice(&capacity.to_le_bytes());
    out[12..16].copy_from_slice(&v4.network().octets());
    out[16] = v4.prefix_len();
    out[17..33].copy_from_slice(&v6.network().octets());
    out[33] = v6.prefix_len();
    out
}

fn fit_capacity(v4: Ipv4Net, v6: Ipv6Net, capacity: u32) -> io::Result<u32> {
    let v4_room = (1u64 << (32 - v4.prefix_len())).saturating_sub(2);
    let v6_room = 1u64.checked_shl(128 - v6.prefix_len() as u32).unwrap_or(u64::MAX).saturating_sub(2);
    let capacity = (capacity as u64).min(v4_room).min(v6_room) as u32;
    if capacity == 0 {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "fake address range too small"));
    }
    Ok(capacity)
}

fn table_len(capacity: u32) -> usize {
    HEADER + 2 * capacity as usize * 4 + capacity as usize * ENTRY
}

/// # Safety
/// `fd` is -1 with MAP_ANONYMOUS, or a file of at least `len` bytes.
unsafe fn map(len: usize, flags: libc::c_int, fd: libc::c_int) -> io::Result<*mut u8> {
    // SAFETY: the caller vouches for `fd` and `len`; the kernel picks the address.
    let base =
        unsafe { libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, flags, fd, 0) };
    if base == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    Ok(base.cast())
}

fn normalize(name: &str) -> Result<String, FakeDnsError> {
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() || name.len() > MAX_NAME || name.contains('\0') {
        return Err(FakeDnsError::BadName);
    }
    Ok(name.to_ascii_lowercase())
}

fn hash(bytes: &[u8]) -> u64 {
    // FNV-1a: short keys, no allocation, no seed to share between processes.
    bytes.iter().fold(0xcbf29ce484222325u64, |h, &b| (h ^ b as u64).wrapping_mul(0x100000001b3))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(cap: u32) -> FakeDns {
        FakeDns::new("240.0.0.0/8".parse().unwrap(), "100::/64".parse().unwrap(), cap).unwrap()
    }

    #[test]
    fn names_get_stable_addresses_in_both_families() {
        let t = table(16);
        let a = t.insert("example.org").unwrap();
        assert_eq!(t.insert("EXAMPLE.org.").unwrap(), a);
        let b = t.insert("other.example").unwrap();
        assert_ne!(a, b);
        assert_eq!(t.ipv4(a), Ipv4Addr::new(240, 0, 0, 1));
        assert_eq!(t.name_of(IpAddr::V4(t.ipv4(a))), Some("example.org"));
        assert_eq!(t.name_of(IpAddr::V6(t.ipv6(b))), Some("other.example"));
        assert_eq!(t.name_of(IpAddr::V6(t.ipv4(b).to_ipv6_mapped())), Some("other.example"));
        assert_eq!(t.name_of("240.0.0.99".parse().unwrap()), None);
        assert!(t.is_fake("240.0.0.99".parse().unwrap()));
        assert!(!t.is_fake("192.0.2.1".parse().unwrap()));
        assert_eq!(t.name_of("192.0.2.1".parse().unwrap()), None);
    }

    #[test]
    fn a_full_table_refuses_new_names_and_keeps_old_ones() {
        let t = table(8);
        for i in 0..8 {
            t.insert(&format!("host{i}.example")).unwrap();
        }
        assert_eq!(t.insert("one-more.example"), Err(FakeDnsError::Full(8)));
        assert_eq!(t.insert("host3.example").unwrap(), 3);
        assert_eq!(t.len(), 8);
    }

    #[test]
    fn bad_names_are_refused() {
        let t = table(8);
        assert_eq!(t.insert(""), Err(FakeDnsError::BadName));
        assert_eq!(t.insert(&"a".repeat(254)), Err(FakeDnsError::BadName));
        assert!(t.insert(&"a".repeat(253)).is_ok());
        assert_eq!(t.insert("a\0b"), Err(FakeDnsError::BadName));
    }

    #[test]
    fn concurrent_inserts_agree() {
        let t = std::sync::Arc::new(table(4096));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let t = t.clone();
                std::thread::spawn(move || {
                    (0..500).map(|i| t.insert(&format!("h{i}")).unwrap()).collect::<Vec<_>>()
                })
            })
            .collect();
        let results: Vec<Vec<u32>> = threads.into_iter().map(|h| h.join().unwrap()).collect();
        for r in &results[1..] {
            assert_eq!(r, &results[0]);
        }
        for (i, idx) in results[0].iter().enumerate() {
            assert_eq!(t.name_of(IpAddr::V4(t.ipv4(*idx))), Some(format!("h{i}").as_str()));
        }
    }

    #[test]
    fn a_table_file_is_shared_by_whoever_opens_it() {
        let dir = std::env::temp_dir().join(format!("sfy-fake-{}", std::process::id()));
        let _ = std::fs::remove_file(&dir);
        let (v4, v6) = ("240.0.0.0/8".parse().unwrap(), "100::/64".parse().unwrap());
        let made = FakeDns::create(&dir, v4, v6, 32).unwrap();
        let idx = made.insert("made.example").unwrap();
        let opened = FakeDns::open(&dir, v4, v6).unwrap();
        assert_eq!(opened.capacity(), 32);
        assert_eq!(opened.name_of(IpAddr::V4(opened.ipv4(idx))), Some("made.example"));
        let other = opened.insert("other.example").unwrap();
        assert_eq!(made.insert("other.example").unwrap(), other);
        assert!(FakeDns::open(&dir, "241.0.0.0/8".parse().unwrap(), v6).is_err(), "other ranges");
        assert!(FakeDns::create(&dir, v4, v6, 32).is_err(), "never overwritten");
        std::fs::remove_file(&dir).unwrap();
    }

    #[test]
    fn a_forked_child_shares_the_table() {
        let t = table(64);
        let before = t.insert("before.example").unwrap();
        // SAFETY: the child only touches the table and then _exits.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let ok = t.name_of(IpAddr::V4(t.ipv4(before))) == Some("before.example")
                && t.insert("child.example").is_ok();
            // SAFETY: leave the child without running the test harness's destructors.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        let mut status = 0;
        // SAFETY: waiting for the child forked above.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert_eq!(status, 0);
        // What the child resolved is known to the parent, at the same address.
        let idx = t.insert("child.example").unwrap();
        assert_eq!(idx, 1);
    }
}
