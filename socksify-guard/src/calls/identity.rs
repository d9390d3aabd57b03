//! The program's identity where the supervisor must make something for it. AF_UNIX and other
//! local-family calls are never made here: the kernel runs them as the program made them, so
//! that servers see the program's pid, uid and gid, not the supervisor's (the README's table
//! of who makes each call). What the supervisor does make for the program — internet sends with
//! control data, the few setsockopts it allows, `socket()` probes, BIND's placeholder listener —
//! it makes with the program's filesystem ids, groups and capabilities.

use std::io;

/// What the kernel checks a call against: filesystem ids, groups, effective capabilities.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Creds {
    fsuid: u32,
    fsgid: u32,
    groups: Vec<libc::gid_t>,
    /// CapEff, bit per capability.
    caps: u64,
}

fn parse_status(status: &str) -> Option<Creds> {
    let field = |name: &str| status.lines().find_map(|l| l.strip_prefix(name)).map(str::split_whitespace);
    Some(Creds {
        fsuid: field("Uid:")?.nth(3)?.parse().ok()?,
        fsgid: field("Gid:")?.nth(3)?.parse().ok()?,
        groups: field("Groups:").map(|f| f.filter_map(|g| g.parse().ok()).collect()).unwrap_or_default(),
        caps: u64::from_str_radix(field("CapEff:")?.next()?, 16).ok()?,
    })
}

const CAP_V3: u32 = 0x2008_0522;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// This thread's capability sets.
fn capget() -> io::Result<[CapData; 2]> {
    let mut h = CapHeader { version: CAP_V3, pid: 0 };
    let mut d = [CapData::default(); 2];
    // SAFETY: capget(2) of the calling thread into a local header and two-element array.
    let r = unsafe { libc::syscall(libc::SYS_capget, &mut h as *mut CapHeader, d.as_mut_ptr()) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(d)
}

/// Sets this thread's (only this thread's: the raw call) effective capabilities to `eff`.
fn set_effective(mut d: [CapData; 2], eff: u64) -> io::Result<()> {
    d[0].effective = eff as u32;
    d[1].effective = (eff >> 32) as u32;
    let mut h = CapHeader { version: CAP_V3, pid: 0 };
    // SAFETY: capset(2) of the calling thread from a local header and two-element array.
    let r = unsafe { libc::syscall(libc::SYS_capset, &mut h as *mut CapHeader, d.as_ptr()) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn effective(d: &[CapData; 2]) -> u64 {
    d[0].effective as u64 | (d[1].effective as u64) << 32
}

/// True when thread `tid` is in the supervisor's user namespace (false when that cannot be
/// told: no capability is lent then).
fn same_user_namespace(tid: libc::pid_t) -> bool {
    use std::os::unix::fs::MetadataExt;
    let ns = |p: String| std::fs::metadata(p).map(|m| (m.dev(), m.ino()));
    match (ns(format!("/proc/{tid}/ns/user")), ns("/proc/self/ns/user".to_owned())) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// This thread's supplementary groups.
fn groups() -> Vec<libc::gid_t> {
    // SAFETY: getgroups(0, NULL) only counts.
    let count = unsafe { libc::syscall(libc::SYS_getgroups, 0, std::ptr::null_mut::<libc::gid_t>()) };
    let mut ours = vec![0 as libc::gid_t; count.max(0) as usize];
    // SAFETY: getgroups into a local array of its stated size.
    let n = unsafe { libc::syscall(libc::SYS_getgroups, ours.len() as libc::c_int, ours.as_mut_ptr()) };
    ours.truncate(n.max(0) as usize);
    ours
}

/// Runs `f` on this thread with the privileges of the program's thread `tid`: its filesystem
/// ids and groups (the owner of a socket made, the permission checks on paths) and its
/// effective capabilities (what the kernel checks for a control message such as `SO_MARK` or
/// an IPv6 hop-by-hop option) — never more than the supervisor's own. Only this thread's
/// credentials change (raw system calls), and only for `f`. Fails (ESRCH, EPERM) when they
/// cannot be read or taken: the caller then fails the call rather than make it with more.
pub fn as_program<T>(tid: libc::pid_t, f: impl FnOnce() -> T) -> io::Result<T> {
    let mine = capget()?;
    let my_caps = effective(&mine);
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root && my_caps == 0 {
        // No privilege to lend: an unprivileged supervisor's ids are the program's (under
        // no_new_privs nothing in the tree can gain others).
        return Ok(f());
    }
    let status = std::fs::read_to_string(format!("/proc/{tid}/status"))?;
    let theirs = parse_status(&status).ok_or_else(|| io::Error::from_raw_os_error(libc::ESRCH))?;
    // Capabilities count in the user namespace they belong to: a program that made one of its
    // own (unshare(CLONE_NEWUSER)) holds them there, not over the sockets of ours.
    let caps = if same_user_namespace(tid) { theirs.caps & my_caps } else { 0 };
    // SAFETY: setfsuid/setfsgid(-1) change nothing and return the current ids.
    let (fsuid, fsgid) = unsafe {
        (
            libc::syscall(libc::SYS_setfsuid, u32::MAX) as u32,
            libc::syscall(libc::SYS_setfsgid, u32::MAX) as u32,
        )
    };
    let ours = Creds { fsuid, fsgid, groups: groups(), caps: my_caps };
    if root
        && theirs.fsuid == ours.fsuid
        && theirs.fsgid == ours.fsgid
        && theirs.groups == ours.groups
        && caps == my_caps
    {
        return Ok(f());
    }
    if !root {
        // Capabilities without root (ambient ones): only those are narrowed.
        set_effective(mine, caps)?;
        let r = f();
        let _ = set_effective(mine, my_caps); // raising within the permitted set cannot fail
        return Ok(r);
    }
    // SAFETY: per-thread credential changes (raw calls), undone by `restore` below — on
    // return and on a panic in `f` alike (the thread goes on serving calls).
    unsafe {
        if libc::syscall(libc::SYS_setgroups, theirs.groups.len(), theirs.groups.as_ptr()) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    let restore = Restore { mine, ours };
    // SAFETY: as above.
    unsafe {
        libc::syscall(libc::SYS_setfsgid, theirs.fsgid);
        libc::syscall(libc::SYS_setfsuid, theirs.fsuid);
    }
    // setfsuid to non-zero already cleared the filesystem capabilities; the rest now.
    set_effective(mine, caps)?;
    let r = f();
    drop(restore);
    Ok(r)
}

/// The supervisor thread's own credentials, put back when dropped.
struct Restore {
    mine: [CapData; 2],
    ours: Creds,
}

impl Drop for Restore {
    fn drop(&mut self) {
        // SAFETY: back to the supervisor's own ids: capabilities first (raising the effective
        // set within the permitted one needs none), then the ids, which need CAP_SETUID and
        // CAP_SETGID; then the capabilities once more (setfsuid(0) raises the filesystem ones
        // from the permitted set, which the supervisor may not have had effective).
        unsafe {
            let _ = set_effective(self.mine, self.ours.caps);
            libc::syscall(libc::SYS_setfsuid, self.ours.fsuid);
            libc::syscall(libc::SYS_setfsgid, self.ours.fsgid);
            libc::syscall(libc::SYS_setgroups, self.ours.groups.len(), self.ours.groups.as_ptr());
            let _ = set_effective(self.mine, self.ours.caps);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_read_from_proc_status() {
        let status = "Name:\tx\nUid:\t0\t1000\t1000\t1001\nGid:\t0\t100\t100\t101\nGroups:\t4 27 \nCapEff:\t0000000000003000\n";
        let c = parse_status(status).unwrap();
        assert_eq!(c, Creds { fsuid: 1001, fsgid: 101, groups: vec![4, 27], caps: 0x3000 });
        assert!(parse_status("Uid:\t0\t0\t0\t0\n").is_none(), "no CapEff: unknown, not root");
    }

    /// A child process that dropped from root to nobody (and, with `own_userns`, made a user
    /// namespace of its own, with a full CapEff there) and waits; it exits when dropped.
    struct DroppedChild {
        pid: libc::pid_t,
        release: i32,
        /// One child at a time: a second one forked meanwhile would inherit this one's write
        /// end, and neither would ever see its pipe close.
        _one: std::sync::MutexGuard<'static, ()>,
    }

    static ONE_CHILD: std::sync::Mutex<()> = std::sync::Mutex::new(());

    impl DroppedChild {
        fn start(own_userns: bool) -> DroppedChild {
            let one = ONE_CHILD.lock().unwrap_or_else(|p| p.into_inner());
            let mut p = [0i32; 2];
            // SAFETY: pipe into a local array.
            assert_eq!(unsafe { libc::pipe(p.as_mut_ptr()) }, 0);
            // SAFETY: the child makes only async-signal-safe raw calls, then exits.
            let pid = unsafe { libc::fork() };
            if pid == 0 {
                // SAFETY: the child drops to nobody and waits for the pipe to close.
                unsafe {
                    libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>());
                    libc::syscall(libc::SYS_setresgid, 65534, 65534, 65534);
                    libc::syscall(libc::SYS_setresuid, 65534, 65534, 65534);
                    if own_userns {
                        libc::syscall(libc::SYS_unshare, libc::CLONE_NEWUSER);
                    }
                    libc::close(p[1]);
                    let mut b = 0u8;
                    libc::read(p[0], &mut b as *mut u8 as *mut libc::c_void, 1);
                    libc::_exit(0);
                }
            }
            // SAFETY: the parent's copy of the read end.
            unsafe { libc::close(p[0]) };
            DroppedChild { pid, release: p[1], _one: one }
        }

        /// Waits (up to a second) until `done` holds for the child.
        fn until(&self, done: impl Fn(libc::pid_t) -> bool) -> bool {
            (0..200).any(|_| {
                std::thread::sleep(std::time::Duration::from_millis(5));
                done(self.pid)
            })
        }
    }

    impl Drop for DroppedChild {
        fn drop(&mut self) {
            // SAFETY: the write end: the child exits; then it is reaped.
            unsafe {
                libc::close(self.release);
                libc::waitpid(self.pid, std::ptr::null_mut(), 0);
            }
        }
    }

    #[test]
    fn a_socket_made_for_a_program_that_dropped_root_is_its_own_and_lends_no_capability() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return; // needs a root supervisor to mean anything
        }
        let child = DroppedChild::start(false);
        let dropped = child.until(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/status"))
                .is_ok_and(|s| parse_status(&s).is_some_and(|c| c.fsuid == 65534))
        });
        assert!(dropped, "the child did not drop to nobody");
        let before = effective(&capget().unwrap());
        let (owner, caps) = as_program(child.pid, || {
            // SAFETY: a socket of this thread's, closed below.
            let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
            // SAFETY: fstat into a local struct.
            let mut st: libc::stat = unsafe { std::mem::zeroed() };
            // SAFETY: fd is ours.
            unsafe { libc::fstat(fd, &mut st) };
            // SAFETY: fd is ours.
            unsafe { libc::close(fd) };
            (st.st_uid, effective(&capget().unwrap()))
        })
        .unwrap();
        drop(child);
        assert_eq!(owner, 65534, "the socket's owner");
        assert_eq!(caps, 0, "no capability lent");
        assert_eq!(effective(&capget().unwrap()), before, "the supervisor's own are back");
        // SAFETY: setfsuid(-1) changes nothing and returns the current fsuid.
        assert_eq!(unsafe { libc::syscall(libc::SYS_setfsuid, -1i32 as u32) }, 0);
    }

    #[test]
    fn a_program_in_a_user_namespace_of_its_own_lends_no_capability() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return;
        }
        let child = DroppedChild::start(true);
        let in_own = child.until(|pid| !same_user_namespace(pid));
        let caps = as_program(child.pid, || effective(&capget().unwrap())).unwrap();
        drop(child);
        if in_own {
            assert_eq!(caps, 0, "capabilities of the child's own namespace lent");
        }
    }

    #[test]
    fn the_calling_threads_own_credentials_change_nothing() {
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() };
        let before = capget().unwrap();
        assert_eq!(as_program(tid, || 7).unwrap(), 7);
        assert_eq!(effective(&capget().unwrap()), effective(&before));
    }
}
