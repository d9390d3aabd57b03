//! A session: what every process of one `socksify` run shares, whatever it `exec`s — a
//! directory of the user's own (mode 0700, in `$XDG_RUNTIME_DIR`, else `/dev/shm`, else the
//! temporary directory) named in the environment (`SOCKSIFY_SESSION`), holding
//! - `fake`: the fake-address table (remote DNS), so a fake address handed to one process
//!   connects by name from any other, and the kernel guard maps it back too;
//! - `state`: a small shared page: whether the kernel guard supervises the session;
//! - `hops`: the memory of dead hops and round-robin positions (`memory`), so a dead proxy
//!   costs the first process its timeout and the others nothing, and round-robin goes on
//!   across the processes of a script;
//! - `config`: the configuration the CLI resolved (mode 0600: it may hold passwords), which
//!   every process's library reads instead of looking for one itself — so a child that `cd`s
//!   somewhere else, or a program that dumps its environment, changes or shows nothing.
//!
//! Both files are fixed-size mappings written lock-free, so a `fork()` at any moment leaves
//! nothing locked. The process that created the session removes it when the session ends.
//! Nothing in them can widen what the guard lets through: the program can write them.

use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::config::Config;
use crate::fakedns::{FakeDns, DEFAULT_CAPACITY};
use crate::memory::{HopMemory, MEMORY_LEN, MEMORY_MAGIC};
use std::sync::Arc;

/// The environment variable that names the session directory.
pub const SESSION_ENV: &str = "SOCKSIFY_SESSION";

const STATE_MAGIC: &[u8; 8] = b"SFYSTAT1";
const STATE_LEN: usize = 4096;
const FLAG_GUARDED: u32 = 1;
/// The state page's slots of background handshakes: (socket inode, pid), from offset 64.
const SLOTS_AT: usize = 64;
const SLOTS: usize = (STATE_LEN - SLOTS_AT) / 16;

/// The address of the library's request to the kernel guard for a UDP association:
/// `sendto(control_socket, buf, len, 0, GUARD_ASSOCIATE, 16)` on an unconnected TCP socket. The
/// guard connects it to the proxy, makes the association, remembers the relay (datagrams to it
/// are then let through) and writes the relay's socket address into `buf`, returning its
/// length. Without a guard the call fails (EPIPE/ENOTCONN): the library does it itself. Anyone
/// may ask: the guard only ever opens genuine associations through the chain.
pub const GUARD_ASSOCIATE: [u8; 16] =
    [2, 0, 0, 0, 0, 0, 0, 0, b's', b'f', b'y', b'U', b'D', b'P', b'a', b'1'];

/// The library's gate: one page the library maps at this fixed address in every program it is
/// in, holding `syscall; ret` (x86_64). The kernel guard's filter lets through, untrapped, the
/// system calls made from it (`GATE_IP`): those the library has already checked — AF_UNIX and
/// other local-family calls, datagrams and connects its routes send direct — so that they cost
/// what they cost without socksify instead of a round trip to the supervisor. A program that
/// never loads the library has no gate; one that deliberately jumps into it is hostile code
/// (the README's threat model).
pub const GATE_ADDR: u64 = 0x5af0_0000_0000;
/// The gate's code: `syscall` (0f 05) then `ret` (c3).
#[cfg(target_arch = "x86_64")]
pub const GATE_CODE: [u8; 3] = [0x0f, 0x05, 0xc3];
/// The instruction pointer the kernel reports for a call made from the gate (just past
/// `syscall`).
#[cfg(target_arch = "x86_64")]
pub const GATE_IP: u64 = GATE_ADDR + 2;

pub struct Session {
    dir: PathBuf,
    fake: Option<FakeDns>,
    state: *mut u8,
    hops: Arc<HopMemory>,
    owner: bool,
}

// SAFETY: the state page is accessed through atomics and write-once slots only.
unsafe impl Send for Session {}
// SAFETY: as above.
unsafe impl Sync for Session {}

impl Drop for Session {
    fn drop(&mut self) {
        // SAFETY: the state mapping made in `map_state`, unmapped once.
        unsafe { libc::munmap(self.state.cast(), STATE_LEN) };
    }
}

impl Session {
    /// Makes a new session for `config` (a fake table when DNS is remote), named after this
    /// process, which owns it and calls `remove` at the end.
    pub fn create(config: &Config) -> io::Result<Session> {
        Session::create_at(&new_dir_name(), config)
    }

    /// Makes a new session in `dir` (from `new_dir_name`: named after this process).
    pub fn create_at(dir: &Path, config: &Config) -> io::Result<Session> {
        let dir = dir.to_path_buf();
        // Now and then, sessions left by creators that were killed are swept away.
        if fastrand::u8(..16) == 0 {
            if let Some(base) = dir.parent() {
                sweep_stale(base);
            }
        }
        std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
        let made = (|| -> io::Result<Session> {
            write_private(&dir.join(CONFIG_FILE), config.to_toml().as_bytes())?;
            let fake = match config.dns {
                crate::config::DnsMode::Remote => Some(FakeDns::create(
                    &dir.join("fake"),
                    config.fake_ipv4_range,
                    config.fake_ipv6_range,
                    DEFAULT_CAPACITY,
                )?),
                crate::config::DnsMode::Local => None,
            };
            let state = map_state(&dir.join("state"), STATE_LEN, true)?;
            let hops = map_state(&dir.join("hops"), MEMORY_LEN, true).inspect_err(|_| {
                // SAFETY: the state mapping just made, unmapped once.
                unsafe { libc::munmap(state.cast(), STATE_LEN) };
            })?;
            // SAFETY: the mapping just made, MEMORY_LEN bytes, used through atomics only.
            let hops = Arc::new(unsafe { HopMemory::from_mapping(hops) });
            let session = Session { dir: dir.clone(), fake, state, hops, owner: true };
            // SAFETY: the magics at the start of the pages, written before anyone opens them.
            unsafe {
                std::ptr::copy_nonoverlapping(STATE_MAGIC.as_ptr(), state.add(8), 8);
                std::ptr::copy_nonoverlapping(MEMORY_MAGIC.as_ptr(), session.hops_base().add(8), 8);
            }
            Ok(session)
        })();
        if made.is_err() {
            let _ = std::fs::remove_dir_all(&dir);
        }
        made
    }

    /// Opens the session in `dir` (from `SOCKSIFY_SESSION`) and reads its configuration.
    pub fn open(dir: &Path) -> io::Result<(Session, Config)> {
        let path = dir.join(CONFIG_FILE);
        let text = std::fs::read_to_string(&path)?;
        let config = Config::parse(&text, &path.display().to_string())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
        Ok((Session::open_with(dir, &config)?, config))
    }

    /// Opens the session in `dir`, made for `config`, as its owner (who removes it at the end):
    /// for the process a session's maker hands it over to.
    pub fn adopt(dir: &Path, config: &Config) -> io::Result<Session> {
        let mut session = Session::open_with(dir, config)?;
        session.owner = true;
        Ok(session)
    }

    /// Keeps the session from being swept as stale (`sweep_stale`) for as long as the returned
    /// descriptor, or a duplicate of it in any process, is open: for a session that outlives
    /// the process it is named after.
    pub fn hold(&self) -> io::Result<std::os::fd::OwnedFd> {
        let dir = std::fs::File::open(&self.dir)?;
        if !lock_now(&dir) {
            return Err(io::Error::last_os_error());
        }
        Ok(dir.into())
    }

    /// Opens the session in `dir`, made for `config`.
    pub fn open_with(dir: &Path, config: &Config) -> io::Result<Session> {
        let fake = match config.dns {
            crate::config::DnsMode::Remote => {
                Some(FakeDns::open(&dir.join("fake"), config.fake_ipv4_range, config.fake_ipv6_range)?)
            }
            crate::config::DnsMode::Local => None,
        };
        let state = map_state(&dir.join("state"), STATE_LEN, false)?;
        // A session made by an older socksify has no `hops`: this process remembers alone.
        let (hops, shared) = match map_state(&dir.join("hops"), MEMORY_LEN, false) {
            // SAFETY: the mapping just made, MEMORY_LEN bytes, used through atomics only.
            Ok(hops) => (Arc::new(unsafe { HopMemory::from_mapping(hops) }), true),
            Err(_) => (Arc::new(HopMemory::private()), false),
        };
        let session = Session { dir: dir.to_path_buf(), fake, state, hops, owner: false };
        // SAFETY: the magics are inside the mappings.
        let (magic, hops_magic) = unsafe {
            (
                std::slice::from_raw_parts(state.add(8), 8),
                std::slice::from_raw_parts(session.hops_base().add(8), 8),
            )
        };
        if magic != STATE_MAGIC || (shared && hops_magic != MEMORY_MAGIC) {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "not a socksify session"));
        }
        Ok(session)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The session's memory of dead hops and round-robin positions.
    pub fn hops(&self) -> Arc<HopMemory> {
        self.hops.clone()
    }

    fn hops_base(&self) -> *mut u8 {
        self.hops.base()
    }

    /// Takes the fake table out of the session (for a router); `None` under local DNS.
    pub fn take_fake(&mut self) -> Option<FakeDns> {
        self.fake.take()
    }

    /// Records that the kernel guard supervises this session (before the program runs).
    pub fn mark_guarded(&self) {
        self.flags().fetch_or(FLAG_GUARDED, Ordering::Release);
    }

    /// True when the kernel guard supervises this session.
    pub fn guarded(&self) -> bool {
        self.flags().load(Ordering::Acquire) & FLAG_GUARDED != 0
    }

    /// Records that process `pid` runs the handshake of socket `inode` in the background (a
    /// thread of its own, which an `exec` ends): `false` when every slot is taken.
    pub fn handshake_started(&self, inode: u64, pid: u32) -> bool {
        for slot in self.slots() {
            if slot.0.compare_exchange(0, inode, Ordering::AcqRel, Ordering::Acquire).is_ok() {
                slot.1.store(pid, Ordering::Release);
                return true;
            }
        }
        false
    }

    /// The handshake of socket `inode` ended.
    pub fn handshake_ended(&self, inode: u64) {
        for slot in self.slots() {
            if slot.0.load(Ordering::Acquire) == inode {
                slot.1.store(0, Ordering::Release);
                slot.0.store(0, Ordering::Release);
            }
        }
    }

    /// The sockets whose background handshake process `pid` was running when it `exec`ed
    /// (the thread that ran it is gone): taken out of the slots.
    pub fn handshakes_cut_by_exec(&self, pid: u32) -> Vec<u64> {
        let mut cut = Vec::new();
        for slot in self.slots() {
            let ino = slot.0.load(Ordering::Acquire);
            if ino != 0 && slot.1.load(Ordering::Acquire) == pid {
                cut.push(ino);
                slot.1.store(0, Ordering::Release);
                slot.0.store(0, Ordering::Release);
            }
        }
        cut
    }

    fn slots(&self) -> impl Iterator<Item = (&AtomicU64, &AtomicU32)> {
        (0..SLOTS).map(move |i| {
            let at = SLOTS_AT + i * 16;
            // SAFETY: 16-byte slots inside the page-aligned mapping, 8-byte aligned, accessed
            // through atomics only.
            unsafe {
                (&*(self.state.add(at) as *const AtomicU64), &*(self.state.add(at + 8) as *const AtomicU32))
            }
        })
    }

    fn flags(&self) -> &AtomicU32 {
        // SAFETY: offset 0 of the page-aligned mapping.
        unsafe { &*(self.state as *const AtomicU32) }
    }

    /// Hands the session over to a process of its own that deletes it when process `pid` has
    /// ended (for a session whose creator `exec`s the program: the library alone, or a shell's
    /// `socksify on`). That process is nobody's child but init's (or the nearest subreaper's),
    /// in a session of its own, holding no descriptor of anyone's: a program that waits for
    /// any child never sees it, and a Ctrl-C to the job does not reach it.
    pub fn remove_when_gone(mut self, pid: libc::pid_t) -> io::Result<()> {
        self.owner = false;
        // A pidfd taken now names this very process, however late the watcher starts.
        // SAFETY: pidfd_open with no flags.
        let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as libc::c_int;
        let dir = self.dir.clone();
        // SAFETY: fork of a single-threaded process (the CLI); the child only forks again and
        // exits, and the grandchild makes system calls and removes a directory.
        match unsafe { libc::fork() } {
            -1 => Err(io::Error::last_os_error()),
            0 => {
                // SAFETY: as above.
                if unsafe { libc::fork() } == 0 {
                    watch_then_remove(&dir, pid, pidfd);
                }
                // SAFETY: leaving the intermediate process at once.
                unsafe { libc::_exit(0) }
            }
            child => {
                // SAFETY: reaping the intermediate process, which exits at once; closing the
                // pidfd, which the watcher holds now.
                unsafe {
                    libc::waitpid(child, std::ptr::null_mut(), 0);
                    if pidfd >= 0 {
                        libc::close(pidfd);
                    }
                }
                Ok(())
            }
        }
    }

    /// Deletes the session's files (the creator, when the session ends).
    pub fn remove(&self) {
        if self.owner {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

const CONFIG_FILE: &str = "config";

/// A new session directory's path, named after this process (which will create it).
pub fn new_dir_name() -> PathBuf {
    // SAFETY: getpid has no preconditions.
    dir_name_for(unsafe { libc::getpid() })
}

/// A new session directory's path for a session that lasts as long as process `pid` (stale
/// once it is gone: see `sweep_stale`).
pub fn dir_name_for(pid: libc::pid_t) -> PathBuf {
    // SAFETY: getuid has no preconditions.
    let uid = unsafe { libc::getuid() };
    runtime_base().join(format!("socksify-{uid}-{pid}-{:08x}", fastrand::u32(..)))
}

/// Writes a new file that only the user can read.
fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)?
        .write_all(bytes)
}

/// The watcher of `remove_when_gone`: waits for `pid` to end, then removes `dir`.
fn watch_then_remove(dir: &Path, pid: libc::pid_t, pidfd: libc::c_int) -> ! {
    // SAFETY: a new session and process group of its own, its standard descriptors on
    // /dev/null and every other descriptor but the pidfd closed: it holds nothing of the
    // program's (a pipe's reader would otherwise wait for it to end).
    unsafe {
        libc::setsid();
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        for fd in 0..3 {
            libc::dup2(null, fd);
        }
        let keep = pidfd.max(2) as libc::c_uint;
        if pidfd > 3 {
            libc::syscall(libc::SYS_close_range, 3, pidfd - 1, 0);
        }
        libc::syscall(libc::SYS_close_range, keep + 1, libc::c_uint::MAX, 0);
        if pidfd >= 0 {
            let mut p = libc::pollfd { fd: pidfd, events: libc::POLLIN, revents: 0 };
            while libc::poll(&mut p, 1, -1) < 0 {}
        } else {
            // No pidfds (Linux before 5.3): look once a second.
            while libc::kill(pid, 0) == 0 || *libc::__errno_location() == libc::EPERM {
                libc::sleep(1);
            }
        }
    }
    let _ = std::fs::remove_dir_all(dir);
    // SAFETY: the watcher's end.
    unsafe { libc::_exit(0) }
}

fn map_state(path: &Path, len: usize, create: bool) -> io::Result<*mut u8> {
    let mut opts = std::fs::OpenOptions::new();
    opts.read(true).write(true).custom_flags(libc::O_CLOEXEC);
    if create {
        opts.create_new(true).mode(0o600);
    }
    let file = opts.open(path)?;
    if create {
        file.set_len(len as u64)?;
    } else if file.metadata()?.len() != len as u64 {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "not a socksify session"));
    }
    // SAFETY: a shared mapping of the whole file, `len` bytes long.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            0,
        )
    };
    if base == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    Ok(base.cast())
}

/// Where sessions live: `$XDG_RUNTIME_DIR` when it is a directory of ours, else `/dev/shm`
/// (memory, like the runtime directory), else the temporary directory.
pub fn runtime_base() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()).map(PathBuf::from) {
        if is_writable_dir(&dir) {
            return dir;
        }
    }
    let shm = PathBuf::from("/dev/shm");
    if is_writable_dir(&shm) {
        return shm;
    }
    std::env::temp_dir()
}

fn is_writable_dir(dir: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()) else { return false };
    // SAFETY: access(2) with a NUL-terminated path.
    dir.is_dir() && unsafe { libc::access(c.as_ptr(), libc::W_OK | libc::X_OK) } == 0
}

/// Takes the exclusive lock of an open session directory without waiting: false (errno set)
/// when another open file description has it. The lock goes with the description.
fn lock_now(dir: &std::fs::File) -> bool {
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a descriptor the caller owns.
    unsafe { libc::flock(dir.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
}

/// True when a process holds the session in `dir` (`Session::hold`).
fn held(dir: &Path) -> bool {
    std::fs::File::open(dir).is_ok_and(|d| !lock_now(&d))
}

/// Removes sessions of this user whose creator is gone (killed before it could clean up) and
/// that nobody holds.
fn sweep_stale(base: &Path) {
    // SAFETY: getuid has no preconditions.
    let prefix = format!("socksify-{}-", unsafe { libc::getuid() });
    let Ok(entries) = std::fs::read_dir(base) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(&prefix)) else { continue };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<libc::pid_t>().ok()) else { continue };
        // SAFETY: kill with signal 0 only checks that the process exists.
        let gone = unsafe { libc::kill(pid, 0) } != 0
            && io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
        if gone && !held(&entry.path()) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_session_outlives_the_process_it_is_named_after() {
        // A process that has ended: its pid names the session, as a launcher's pid does once
        // the program is gone and only its daemons (and the supervisor) are left.
        let dead = std::process::Command::new("true").spawn().unwrap();
        let pid = dead.id() as libc::pid_t;
        let _ = { dead }.wait();
        let base = std::env::temp_dir().join(format!("sfy-sweep-{}", std::process::id()));
        std::fs::create_dir_all(&base).unwrap();
        // SAFETY: getuid has no preconditions.
        let uid = unsafe { libc::getuid() };
        let dir = base.join(format!("socksify-{uid}-{pid}-00000000"));
        let made = Session::create_at(&dir, &Config::default()).unwrap();
        let hold = made.hold().unwrap();
        sweep_stale(&base);
        assert!(dir.is_dir(), "a held session is not stale");
        drop(hold);
        sweep_stale(&base);
        assert!(!dir.exists(), "nobody holds it and its process is gone: swept");
        let _ = std::fs::remove_dir_all(&base);
    }

    #[test]
    fn a_session_is_shared_by_whoever_opens_it_and_removed_by_its_creator() {
        let config = Config::default();
        let mut made = Session::create(&config).unwrap();
        made.mark_guarded();
        let dir = made.dir().to_path_buf();
        let mode = std::fs::metadata(&dir).unwrap().permissions();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(mode.mode() & 0o777, 0o700);
        let (mut opened, read) = Session::open(&dir).unwrap();
        assert_eq!(read, config, "the configuration is the session's");
        let file = std::fs::metadata(dir.join(CONFIG_FILE)).unwrap().permissions();
        assert_eq!(file.mode() & 0o777, 0o600);
        assert!(opened.guarded());
        made.hops().mark_dead(42, u64::MAX);
        assert_eq!(opened.hops().dead_until(42, 0), Some(u64::MAX), "one memory of dead hops");
        assert_eq!(made.hops().next_start(3, 1), 0);
        assert_eq!(opened.hops().next_start(3, 1), 1, "round-robin goes on in another process");
        let fake = made.take_fake().unwrap();
        let idx = fake.insert("shared.example").unwrap();
        let other = opened.take_fake().unwrap();
        assert_eq!(other.name_of(std::net::IpAddr::V4(other.ipv4(idx))), Some("shared.example"));

        opened.remove();
        assert!(dir.exists(), "only the creator removes it");
        made.remove();
        assert!(!dir.exists());
    }

    #[test]
    fn background_handshakes_cut_by_an_exec_are_found_by_pid() {
        let made =
            Session::create(&Config { dns: crate::config::DnsMode::Local, ..Config::default() }).unwrap();
        assert!(made.handshake_started(11, 100));
        assert!(made.handshake_started(12, 200));
        assert!(made.handshake_started(13, 100));
        made.handshake_ended(13);
        assert_eq!(made.handshakes_cut_by_exec(100), vec![11]);
        assert_eq!(made.handshakes_cut_by_exec(100), Vec::<u64>::new());
        assert_eq!(made.handshakes_cut_by_exec(200), vec![12]);
        made.remove();
    }

    #[test]
    fn a_session_handed_over_is_removed_when_its_process_ends() {
        let mut child = std::process::Command::new("sleep").arg("0.3").spawn().unwrap();
        let config = Config::default()
            .with_proxies(&["socks5://alice:pa%20ss@192.0.2.1:1080", "http://bob:x@proxy.example:3128"])
            .unwrap();
        let made = Session::create_at(&dir_name_for(child.id() as libc::pid_t), &config).unwrap();
        let dir = made.dir().to_path_buf();
        assert_eq!(Session::open(&dir).unwrap().1, config, "passwords and all, read back");
        made.remove_when_gone(child.id() as libc::pid_t).unwrap();
        assert!(dir.exists());
        child.wait().unwrap();
        for _ in 0..50 {
            if !dir.exists() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        panic!("{} is still there", dir.display());
    }

    #[test]
    fn a_directory_that_is_not_a_session_is_refused() {
        let dir = std::env::temp_dir().join(format!("sfy-not-a-session-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert!(Session::open(&dir).is_err());
        assert!(Session::open_with(&dir, &Config::default()).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
