//! Refusals: sockets and options that go around the proxies, io_uring, calls of another
//! architecture, and reaching into processes outside the program's tree.

use std::os::fd::AsRawFd;

use crate::notif::{Notif, Reply};
use crate::supervisor::{errno_reply, reply, Call, Outcome, Supervisor};
use crate::sys;

/// A system call of another architecture (`int 0x80` on x86_64): socket calls are refused.
pub fn compat(sup: &Supervisor, n: Notif) -> Outcome {
    sup.log.error(
        n.tid,
        format_args!(
            "a 32-bit network system call (number {}) was refused: the guard handles 64-bit calls only",
            n.nr
        ),
    );
    errno_reply(libc::EPERM)
}

/// socket() of a kind that cannot be proxied. Arguments the kernel itself refuses get its own
/// errno (the supervisor asks it); the rest EPERM, with a log line.
pub fn socket(call: &mut Call) -> Outcome {
    let (domain, ty, proto) = (call.arg(0) as i32, call.arg(1) as i32, call.arg(2) as i32);
    // The kernel's own answer, asked with the program's privileges (an unprivileged program's
    // raw socket is its EPERM, an ICMP socket outside ping_group_range its EACCES).
    let probe = super::identity::as_program(call.n.tid, || {
        // SAFETY: socket(2) with the program's arguments; a socket made is closed at once.
        let fd = unsafe { libc::socket(domain, ty | libc::SOCK_CLOEXEC, proto) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EINVAL));
        }
        drop(sys::owned(fd as libc::c_long));
        Ok(())
    });
    match probe {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return errno_reply(e),
        Err(_) => return errno_reply(libc::EPERM),
    }
    let kind = ty & 0xf;
    let what = match domain {
        libc::AF_PACKET => "packet sockets".to_owned(),
        libc::AF_INET | libc::AF_INET6 if kind == libc::SOCK_RAW => "raw sockets".to_owned(),
        libc::AF_INET | libc::AF_INET6 if proto == libc::IPPROTO_ICMP || proto == libc::IPPROTO_ICMPV6 => {
            "ICMP sockets".to_owned()
        }
        libc::AF_INET | libc::AF_INET6 => format!("sockets of type {kind}, protocol {proto}"),
        other => format!("sockets of family {other}"),
    };
    call.sup.log.error(
        call.tgid(),
        format_args!(
            "socket() refused: {what} would go around the proxies (only TCP and UDP can be proxied)"
        ),
    );
    errno_reply(libc::EPERM)
}

/// setsockopt of IP options (source routes), IPv6 routing headers and multicast joins: the
/// first two send packets elsewhere than their address says, the last sends IGMP/MLD reports.
/// Allowed as made (on a copy of the value) when harmless: empty options, or joins under
/// `udp = "direct"`.
pub fn setsockopt(call: &mut Call) -> Outcome {
    let (fd, level, name, val, len) = (
        call.arg(0) as i32,
        call.arg(1) as i32,
        call.arg(2) as i32,
        call.arg(3),
        call.arg(4) as u32 as usize,
    );
    let sock = match call.take_fd(fd) {
        Ok(s) => s,
        Err(e) => return errno_reply(e),
    };
    if len > 65_536 {
        return errno_reply(libc::EINVAL);
    }
    let value = match call.read(val, len) {
        Ok(v) => v,
        Err(e) => return errno_reply(e),
    };
    if !call.valid() {
        return Outcome::Done;
    }
    let routing = (level == libc::IPPROTO_IP && name == libc::IP_OPTIONS)
        || level == libc::IPPROTO_IPV6 && (name == libc::IPV6_RTHDR || name == 5);
    let allowed = if routing {
        value.is_empty()
    } else {
        call.sup.policy.router.config().udp == socksify_core::UdpMode::Direct
    };
    if !allowed {
        let what = if routing { "IP options and routing headers" } else { "multicast group joins" };
        call.sup
            .log
            .error(call.tgid(), format_args!("setsockopt refused: {what} would go around the proxies"));
        return errno_reply(libc::EPERM);
    }
    // With the program's privileges, as its own call would have been made.
    let r = super::identity::as_program(call.n.tid, || {
        sys::syscall!(
            libc::SYS_setsockopt,
            sock.as_raw_fd(),
            level,
            name,
            if value.is_empty() { std::ptr::null() } else { value.as_ptr() },
            value.len() as libc::socklen_t
        )
    });
    reply(match r {
        Ok(Ok(_)) => Reply::Value(0),
        Ok(Err(e)) => Reply::Error(sys::errno(&e)),
        Err(_) => Reply::Error(libc::EPERM),
    })
}

/// ptrace attach, process_vm_writev, pidfd_getfd: fine within the program's tree (its
/// processes are all under the filter), refused for any other process — the supervisor, the
/// user's shell — which could be made to connect for the program.
pub fn reach(call: &mut Call) -> Outcome {
    let target = match call.n.nr {
        libc::SYS_ptrace => call.arg(1) as libc::pid_t,
        libc::SYS_process_vm_writev => call.arg(0) as libc::pid_t,
        _ => {
            // pidfd_getfd(pidfd, …): the process behind the program's pidfd.
            let Ok(pidfd) = call.take_fd(call.arg(0) as i32) else { return reply(Reply::Continue) };
            match pid_of_pidfd(pidfd.as_raw_fd()) {
                Some(p) => p,
                None => return reply(Reply::Continue), // not a pidfd: the kernel says EBADF
            }
        }
    };
    // Its own process (the library's checked copies use process_vm_writev on itself): the
    // cached thread group answers that without reading /proc.
    if target <= 0
        || target == call.tgid()
        || in_tree(call.sup.tree_root.load(std::sync::atomic::Ordering::Acquire), target)
    {
        return reply(Reply::Continue);
    }
    let what = match call.n.nr {
        libc::SYS_ptrace => "ptrace",
        libc::SYS_process_vm_writev => "process_vm_writev",
        _ => "pidfd_getfd",
    };
    call.sup.log.error(
        call.tgid(),
        format_args!(
            "{what} of process {target} refused: it is outside the program's tree, which the guard confines"
        ),
    );
    errno_reply(libc::EPERM)
}

fn pid_of_pidfd(fd: i32) -> Option<libc::pid_t> {
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).ok()?;
    info.lines().find_map(|l| l.strip_prefix("Pid:")).and_then(|v| v.trim().parse().ok())
}

/// True when `pid` is in the program's tree: it descends from this supervisor, the subreaper
/// every orphan comes back to (`root` 0; the supervisor itself is not in the tree), or from
/// `root`, the program's first process, when the supervisor lives outside the tree (`root`
/// -1 once that process has ended: nothing is recognised then). An orphan of the tree,
/// reparented above the program, is not recognised there: refused, never lent.
fn in_tree(root: libc::pid_t, pid: libc::pid_t) -> bool {
    // SAFETY: getpid has no preconditions.
    let me = unsafe { libc::getpid() };
    // A thread's /proc entry names its process's parent: walk from the process.
    let Ok(tgid) = sys::tgid_of(pid) else { return false };
    if tgid == me || root < 0 {
        return false;
    }
    sys::descends_from(tgid, &[if root > 0 { root } else { me }])
}
