//! The seccomp filter: which system calls of the program reach the supervisor. It is small
//! classic BPF, written here rather than through libseccomp (see the README's design section):
//! every call that can send data somewhere is trapped, hot calls are not.
//!
//! Trapped (native architecture):
//! - `connect`, `sendmsg`, `sendmmsg` — always (the destination lives in memory);
//! - `sendto` and `recvfrom` with an address argument (a NULL one cannot name a destination,
//!   and a NULL source needs no rewriting): `send`/`recv` stay untrapped;
//! - `socket` of any family or protocol that is not plain TCP/UDP or local (packet, raw, ICMP,
//!   SCTP, …), to refuse it;
//! - `listen`, `accept`, `accept4`, `getsockname`, `getpeername` (SOCKS BIND, and the
//!   addresses of proxied sockets), `io_uring_setup` (refused, so programs fall back);
//! - `setsockopt` of the options that send packets by themselves or elsewhere: IP options
//!   (source routes), IPv6 routing headers, multicast group joins;
//! - `getsockopt(SOL_SOCKET, SO_ERROR)`, when the program is a Go program (`Filter::go`): its
//!   connects are answered at once and their handshakes finished in the background; this is
//!   where Go waits for one (for other programs `getsockopt` stays out of the filter's way);
//! - `ptrace` attach/seize, `process_vm_writev` and `pidfd_getfd`: reaching into a process
//!   outside the tree (the supervisor included) would be a way around the filter;
//! - x32 system calls: refused with ENOSYS in the filter itself; calls of another architecture
//!   (`int 0x80` on x86_64) that create or use sockets: trapped, and refused.
//!
//! Not trapped: calls made from the library's gate (`session::GATE_IP`), which the library in
//! the process has checked already.

use std::io;
use std::os::fd::OwnedFd;

use libc::{sock_filter, sock_fprog};

/// AUDIT_ARCH_X86_64 / AUDIT_ARCH_AARCH64: the architecture a system call was made for.
#[cfg(target_arch = "x86_64")]
pub const NATIVE_ARCH: u32 = 0xc000_003e;
#[cfg(target_arch = "aarch64")]
pub const NATIVE_ARCH: u32 = 0xc000_00b7;

/// i386 calls a 64-bit x86 process can make with `int 0x80`: the socket ones are trapped.
#[cfg(target_arch = "x86_64")]
pub const COMPAT_TRAPPED: &[u32] = &[
    102, // socketcall
    359, // socket
    362, // connect
    369, // sendto
    370, // sendmsg
    345, // sendmmsg
    425, // io_uring_setup
];
#[cfg(target_arch = "aarch64")]
pub const COMPAT_TRAPPED: &[u32] = &[281, 283, 290, 296, 374, 425];

#[cfg(target_arch = "x86_64")]
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
#[cfg(target_arch = "x86_64")]
const OFF_IP: u32 = 8;
#[cfg(target_arch = "x86_64")]
use socksify_core::session::GATE_IP;
/// The calls the library makes through its gate (any other made from there is trapped).
#[cfg(target_arch = "x86_64")]
const GATED: &[i64] = &[
    libc::SYS_connect,
    libc::SYS_sendto,
    libc::SYS_sendmsg,
    libc::SYS_sendmmsg,
    libc::SYS_recvfrom,
    libc::SYS_listen,
    libc::SYS_getsockname,
    libc::SYS_getpeername,
];
const fn arg_lo(i: u32) -> u32 {
    16 + 8 * i
}
const fn arg_hi(i: u32) -> u32 {
    16 + 8 * i + 4
}

/// Socket families that never reach the network (or need privileges we do not grant).
const LOCAL_FAMILIES: &[u32] = &[
    libc::AF_UNIX as u32,
    libc::AF_NETLINK as u32,
    libc::AF_ALG as u32,
    libc::AF_KEY as u32,
    libc::AF_VSOCK as u32,
];
const IPPROTO_MPTCP: u32 = 262;
const IPPROTO_UDPLITE: u32 = 136;

/// setsockopt(level, optname) pairs that are trapped.
pub const TRAPPED_SOCKOPTS: &[(u32, u32)] = &[
    (0, 4),   // IPPROTO_IP, IP_OPTIONS (source routes)
    (0, 35),  // IP_ADD_MEMBERSHIP
    (0, 39),  // IP_ADD_SOURCE_MEMBERSHIP
    (0, 42),  // MCAST_JOIN_GROUP
    (0, 46),  // MCAST_JOIN_SOURCE_GROUP
    (41, 5),  // IPPROTO_IPV6, IPV6_2292RTHDR
    (41, 20), // IPV6_ADD_MEMBERSHIP
    (41, 42), // MCAST_JOIN_GROUP
    (41, 46), // MCAST_JOIN_SOURCE_GROUP
    (41, 57), // IPV6_RTHDR
];
const PTRACE_ATTACH: u32 = 16;
const PTRACE_SEIZE: u32 = 0x4206;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum L {
    Native,
    NonNative,
    Arg4,
    Sockopt,
    Getsockopt,
    SockoptIp,
    SockoptIpv6,
    Ptrace,
    Socket,
    Inet,
    Stream,
    Dgram,
    Allow,
    Notify,
    #[cfg(target_arch = "x86_64")]
    X32,
    NotifyAlways,
    #[cfg(target_arch = "x86_64")]
    GateAllow,
}

#[derive(Clone, Copy, Debug)]
enum To {
    Next,
    L(L),
}

enum Op {
    Load(u32),
    And(u32),
    Jeq(u32, To, To),
    #[cfg(target_arch = "x86_64")]
    Jge(u32, To, To),
    Ret(u32),
    Label(L),
}

const NOTIFY: u32 = libc::SECCOMP_RET_USER_NOTIF;
const ALLOW: u32 = libc::SECCOMP_RET_ALLOW;

/// What the filter traps beyond the fixed set.
#[derive(Clone, Copy, Default, Debug)]
pub struct Filter {
    /// `getsockopt(SOL_SOCKET, SO_ERROR)` (a Go program's connects finish in the background).
    pub go: bool,
}

fn source(filter: Filter) -> Vec<Op> {
    use Op::*;
    let n = To::Next;
    let mut p = vec![
        Load(OFF_ARCH),
        Jeq(NATIVE_ARCH, To::L(L::Native), To::L(L::NonNative)),
        Label(L::Native),
        Load(OFF_NR),
    ];
    #[cfg(target_arch = "x86_64")]
    p.push(Jge(X32_SYSCALL_BIT, To::L(L::X32), n));
    for nr in [
        libc::SYS_connect,
        libc::SYS_sendmsg,
        libc::SYS_sendmmsg,
        libc::SYS_listen,
        libc::SYS_accept,
        libc::SYS_accept4,
        libc::SYS_getsockname,
        libc::SYS_getpeername,
        libc::SYS_io_uring_setup,
        libc::SYS_process_vm_writev,
        libc::SYS_pidfd_getfd,
    ] {
        p.push(Jeq(nr as u32, To::L(L::Notify), n));
    }
    p.push(Jeq(libc::SYS_sendto as u32, To::L(L::Arg4), n));
    p.push(Jeq(libc::SYS_recvfrom as u32, To::L(L::Arg4), n));
    p.push(Jeq(libc::SYS_socket as u32, To::L(L::Socket), n));
    p.push(Jeq(libc::SYS_setsockopt as u32, To::L(L::Sockopt), n));
    if filter.go {
        p.push(Jeq(libc::SYS_getsockopt as u32, To::L(L::Getsockopt), n));
    }
    p.push(Jeq(libc::SYS_ptrace as u32, To::L(L::Ptrace), n));
    p.push(Ret(ALLOW));

    // getsockopt(fd, SOL_SOCKET, SO_ERROR, …) only.
    p.extend([
        Label(L::Getsockopt),
        Load(arg_lo(1)),
        Jeq(libc::SOL_SOCKET as u32, n, To::L(L::Allow)),
        Load(arg_lo(2)),
        Jeq(libc::SO_ERROR as u32, To::L(L::Notify), To::L(L::Allow)),
    ]);

    // setsockopt(fd, level, optname, …): the listed pairs.
    p.extend([Label(L::Sockopt), Load(arg_lo(1))]);
    p.push(Jeq(0, To::L(L::SockoptIp), n));
    p.push(Jeq(41, To::L(L::SockoptIpv6), To::L(L::Allow)));
    p.extend([Label(L::SockoptIp), Load(arg_lo(2))]);
    for (_, opt) in TRAPPED_SOCKOPTS.iter().filter(|(l, _)| *l == 0) {
        p.push(Jeq(*opt, To::L(L::Notify), n));
    }
    p.push(Ret(ALLOW));
    p.extend([Label(L::SockoptIpv6), Load(arg_lo(2))]);
    for (_, opt) in TRAPPED_SOCKOPTS.iter().filter(|(l, _)| *l == 41) {
        p.push(Jeq(*opt, To::L(L::Notify), n));
    }
    p.push(Ret(ALLOW));

    // ptrace(request, …): attaching to a process.
    p.extend([
        Label(L::Ptrace),
        Load(arg_lo(0)),
        Jeq(PTRACE_ATTACH, To::L(L::Notify), n),
        Jeq(PTRACE_SEIZE, To::L(L::Notify), To::L(L::Allow)),
    ]);

    // sendto/recvfrom: trapped when the address pointer (argument 4) is not NULL.
    p.extend([
        Label(L::Arg4),
        Load(arg_lo(4)),
        Jeq(0, n, To::L(L::Notify)),
        Load(arg_hi(4)),
        Jeq(0, To::L(L::Allow), To::L(L::Notify)),
    ]);

    // socket(domain, type, protocol): local families and plain TCP/UDP pass.
    p.extend([Label(L::Socket), Load(arg_lo(0))]);
    p.push(Jeq(libc::AF_INET as u32, To::L(L::Inet), n));
    p.push(Jeq(libc::AF_INET6 as u32, To::L(L::Inet), n));
    for family in LOCAL_FAMILIES {
        p.push(Jeq(*family, To::L(L::Allow), n));
    }
    p.push(Ret(NOTIFY));
    p.extend([
        Label(L::Inet),
        Load(arg_lo(1)),
        And(0xf),
        Jeq(libc::SOCK_STREAM as u32, To::L(L::Stream), n),
        Jeq(libc::SOCK_DGRAM as u32, To::L(L::Dgram), To::L(L::Notify)),
        Label(L::Stream),
        Load(arg_lo(2)),
        Jeq(0, To::L(L::Allow), n),
        Jeq(libc::IPPROTO_TCP as u32, To::L(L::Allow), n),
        Jeq(IPPROTO_MPTCP, To::L(L::Allow), To::L(L::Notify)),
        Label(L::Dgram),
        Load(arg_lo(2)),
        Jeq(0, To::L(L::Allow), n),
        Jeq(libc::IPPROTO_UDP as u32, To::L(L::Allow), n),
        Jeq(IPPROTO_UDPLITE, To::L(L::Allow), To::L(L::Notify)),
    ]);
    p.extend([Label(L::NonNative), Load(OFF_NR)]);
    for nr in COMPAT_TRAPPED {
        p.push(Jeq(*nr, To::L(L::NotifyAlways), n));
    }
    p.push(Ret(ALLOW));
    p.extend([Label(L::Allow), Ret(ALLOW), Label(L::Notify)]);
    // A native call that would be trapped, made from the library's gate: the library checked
    // it, let it through — only the calls the library makes there. Tested only here, so that
    // the calls never trapped stay independent of their instruction pointer (the kernel then
    // skips the filter for them altogether).
    #[cfg(target_arch = "x86_64")]
    {
        p.extend([
            Load(OFF_IP + 4),
            Jeq((GATE_IP >> 32) as u32, n, To::L(L::NotifyAlways)),
            Load(OFF_IP),
            Jeq(GATE_IP as u32, n, To::L(L::NotifyAlways)),
            Load(OFF_NR),
        ]);
        for nr in GATED {
            p.push(Jeq(*nr as u32, To::L(L::GateAllow), n));
        }
        p.extend([Ret(NOTIFY), Label(L::GateAllow), Ret(ALLOW)]);
    }
    p.extend([Label(L::NotifyAlways), Ret(NOTIFY)]);
    #[cfg(target_arch = "x86_64")]
    p.extend([Label(L::X32), Ret(libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32)]);
    p
}

/// Assembles the filter: labels become relative jumps.
pub fn program(filter: Filter) -> Vec<sock_filter> {
    let src = source(filter);
    let mut at = Vec::new();
    let mut index = 0usize;
    for op in &src {
        match op {
            Op::Label(l) => at.push((*l, index)),
            _ => index += 1,
        }
    }
    let target = |to: To, here: usize| -> u8 {
        match to {
            To::Next => 0,
            To::L(l) => {
                let dest = at.iter().find(|(x, _)| *x == l).expect("label defined").1;
                let off =
                    dest.checked_sub(here + 1).unwrap_or_else(|| panic!("jump to {l:?} goes backwards"));
                u8::try_from(off).expect("jump within 255 instructions")
            }
        }
    };
    let stmt = |code: u32, k: u32| sock_filter { code: code as u16, jt: 0, jf: 0, k };
    let mut out = Vec::with_capacity(index);
    for op in &src {
        let here = out.len();
        match *op {
            Op::Label(_) => continue,
            Op::Load(off) => out.push(stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, off)),
            Op::And(k) => out.push(stmt(libc::BPF_ALU | libc::BPF_AND | libc::BPF_K, k)),
            Op::Ret(k) => out.push(stmt(libc::BPF_RET | libc::BPF_K, k)),
            Op::Jeq(k, t, f) => out.push(sock_filter {
                code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
                jt: target(t, here),
                jf: target(f, here),
                k,
            }),
            #[cfg(target_arch = "x86_64")]
            Op::Jge(k, t, f) => out.push(sock_filter {
                code: (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16,
                jt: target(t, here),
                jf: target(f, here),
                k,
            }),
        }
    }
    out
}

/// Why the guard cannot be installed.
#[derive(Debug)]
pub struct Unavailable {
    pub errno: i32,
    pub why: String,
}

/// Whether this kernel lets an unprivileged process install a user-notification filter.
pub fn available() -> Result<(), Unavailable> {
    let action: u32 = libc::SECCOMP_RET_USER_NOTIF;
    // SAFETY: SECCOMP_GET_ACTION_AVAIL reads one u32.
    let r =
        unsafe { libc::syscall(libc::SYS_seccomp, libc::SECCOMP_GET_ACTION_AVAIL, 0, &action as *const u32) };
    if r == 0 {
        return Ok(());
    }
    let errno = io::Error::last_os_error().raw_os_error().unwrap_or(libc::ENOSYS);
    let why = match errno {
        libc::ENOSYS => "the kernel has no seccomp".to_owned(),
        libc::EOPNOTSUPP => "the kernel has no seccomp user notification (Linux 5.0 or later has)".to_owned(),
        libc::EPERM | libc::EACCES => "seccomp is forbidden here (a container's profile?)".to_owned(),
        e => format!("seccomp: {}", io::Error::from_raw_os_error(e)),
    };
    Err(Unavailable { errno, why })
}

/// Installs the filter on the calling thread (and its future children): `no_new_privs`, then
/// the filter with a new listener. Returns the listener. Async-signal-safe: it runs between
/// `fork` and `exec`.
pub fn install(prog: &[sock_filter]) -> Result<OwnedFd, i32> {
    // SAFETY: prctl with constant arguments.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(last_errno());
    }
    let fprog = sock_fprog { len: prog.len() as u16, filter: prog.as_ptr() as *mut sock_filter };
    let mut flags = libc::SECCOMP_FILTER_FLAG_NEW_LISTENER | libc::SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV;
    loop {
        // SAFETY: seccomp(2) with a filter that outlives the call.
        let r = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                flags,
                &fprog as *const sock_fprog,
            )
        };
        if r >= 0 {
            return Ok(crate::sys::owned(r));
        }
        let e = last_errno();
        // Before 5.19 there is no WAIT_KILLABLE_RECV: go without it.
        if e == libc::EINVAL && flags & libc::SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV != 0 {
            flags &= !libc::SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV;
            continue;
        }
        return Err(e);
    }
}

fn last_errno() -> i32 {
    // SAFETY: this thread's errno.
    unsafe { *libc::__errno_location() }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the filter on one call, as the kernel would.
    fn run(nr: i64, arch: u32, args: [u64; 6]) -> u32 {
        run_at(nr, arch, 0x7f00_1234_5678, args)
    }

    fn run_at(nr: i64, arch: u32, ip: u64, args: [u64; 6]) -> u32 {
        trace(nr, arch, ip, args).0
    }

    /// The filter's answer, and the offsets of seccomp_data it read on the way.
    fn trace(nr: i64, arch: u32, ip: u64, args: [u64; 6]) -> (u32, Vec<u32>) {
        trace_with(Filter::default(), nr, arch, ip, args)
    }

    fn trace_with(filter: Filter, nr: i64, arch: u32, ip: u64, args: [u64; 6]) -> (u32, Vec<u32>) {
        let mut loaded = Vec::new();
        let mut data = [0u8; 64];
        data[0..4].copy_from_slice(&(nr as u32).to_le_bytes());
        data[4..8].copy_from_slice(&arch.to_le_bytes());
        data[8..16].copy_from_slice(&ip.to_le_bytes());
        for (i, a) in args.iter().enumerate() {
            data[16 + 8 * i..24 + 8 * i].copy_from_slice(&a.to_le_bytes());
        }
        let prog = program(filter);
        let (mut pc, mut acc) = (0usize, 0u32);
        loop {
            let ins = prog[pc];
            let code = ins.code as u32;
            pc += 1;
            match code {
                c if c == libc::BPF_LD | libc::BPF_W | libc::BPF_ABS => {
                    loaded.push(ins.k);
                    let k = ins.k as usize;
                    acc = u32::from_le_bytes(data[k..k + 4].try_into().unwrap());
                }
                c if c == libc::BPF_ALU | libc::BPF_AND | libc::BPF_K => acc &= ins.k,
                c if c == libc::BPF_RET | libc::BPF_K => return (ins.k, loaded),
                c if c == libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K => {
                    pc += if acc == ins.k { ins.jt } else { ins.jf } as usize
                }
                c if c == libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K => {
                    pc += if acc >= ins.k { ins.jt } else { ins.jf } as usize
                }
                other => panic!("unexpected opcode {other:#x}"),
            }
        }
    }

    fn native(nr: i64, args: [u64; 6]) -> u32 {
        run(nr, NATIVE_ARCH, args)
    }

    #[test]
    fn connects_and_sends_with_a_destination_are_trapped_hot_calls_are_not() {
        assert_eq!(native(libc::SYS_connect, [3, 0, 0, 0, 0, 0]), NOTIFY);
        assert_eq!(native(libc::SYS_sendmsg, [3, 0, 0, 0, 0, 0]), NOTIFY);
        assert_eq!(native(libc::SYS_sendmmsg, [3, 0, 0, 0, 0, 0]), NOTIFY);
        assert_eq!(native(libc::SYS_sendto, [3, 0x1000, 5, 0, 0, 0]), ALLOW, "send()");
        assert_eq!(native(libc::SYS_sendto, [3, 0x1000, 5, 0, 0x7fff_0000, 16]), NOTIFY);
        assert_eq!(native(libc::SYS_sendto, [3, 0x1000, 5, 0, 1 << 40, 16]), NOTIFY, "high half");
        assert_eq!(native(libc::SYS_recvfrom, [3, 0x1000, 5, 0, 0, 0]), ALLOW, "recv()");
        assert_eq!(native(libc::SYS_recvfrom, [3, 0x1000, 5, 0, 0x1000, 0x2000]), NOTIFY);
        assert_eq!(native(libc::SYS_read, [3, 0, 0, 0, 0, 0]), ALLOW);
        assert_eq!(native(libc::SYS_write, [3, 0, 0, 0, 0, 0]), ALLOW);
        assert_eq!(native(libc::SYS_io_uring_setup, [1, 0, 0, 0, 0, 0]), NOTIFY);
        for nr in [libc::SYS_listen, libc::SYS_accept4, libc::SYS_getpeername] {
            assert_eq!(native(nr, [3, 0, 0, 0, 0, 0]), NOTIFY);
        }
    }

    #[test]
    fn options_that_route_elsewhere_and_reaching_into_processes_are_trapped() {
        let so = |level: u64, opt: u64| native(libc::SYS_setsockopt, [3, level, opt, 0, 0, 0]);
        assert_eq!(so(0, 4), NOTIFY, "IP_OPTIONS");
        assert_eq!(so(0, 35), NOTIFY, "IP_ADD_MEMBERSHIP");
        assert_eq!(so(41, 57), NOTIFY, "IPV6_RTHDR");
        assert_eq!(so(6, 1), ALLOW, "TCP_NODELAY");
        assert_eq!(so(1, 2), ALLOW, "SO_REUSEADDR");
        assert_eq!(so(0, 1), ALLOW, "IP_TOS");
        assert_eq!(native(libc::SYS_ptrace, [16, 1, 0, 0, 0, 0]), NOTIFY, "PTRACE_ATTACH");
        assert_eq!(native(libc::SYS_ptrace, [0x4206, 1, 0, 0, 0, 0]), NOTIFY, "PTRACE_SEIZE");
        assert_eq!(native(libc::SYS_ptrace, [0, 0, 0, 0, 0, 0]), ALLOW, "PTRACE_TRACEME");
        assert_eq!(native(libc::SYS_ptrace, [12, 1, 0, 0, 0, 0]), ALLOW, "PTRACE_GETREGS");
        assert_eq!(native(libc::SYS_process_vm_writev, [1, 0, 0, 0, 0, 0]), NOTIFY);
        assert_eq!(native(libc::SYS_pidfd_getfd, [1, 0, 0, 0, 0, 0]), NOTIFY);
        assert_eq!(native(libc::SYS_process_vm_readv, [1, 0, 0, 0, 0, 0]), ALLOW);
        let get = |go: bool, level: i32, opt: i32| {
            let args = [3, level as u64, opt as u64, 0, 0, 0];
            trace_with(Filter { go }, libc::SYS_getsockopt, NATIVE_ARCH, 0x7f00_0000_1000, args).0
        };
        assert_eq!(
            get(true, libc::SOL_SOCKET, libc::SO_ERROR),
            NOTIFY,
            "SO_ERROR: where Go waits for a connect"
        );
        assert_eq!(get(true, libc::SOL_SOCKET, libc::SO_TYPE), ALLOW);
        assert_eq!(get(true, libc::IPPROTO_TCP, libc::SO_ERROR), ALLOW, "TCP_MAXSEG, not SO_ERROR");
        assert_eq!(get(false, libc::SOL_SOCKET, libc::SO_ERROR), ALLOW, "not a Go program");
    }

    #[test]
    fn sockets_that_bypass_tcp_and_udp_are_trapped() {
        let s = |d: i32, t: i32, p: i32| native(libc::SYS_socket, [d as u64, t as u64, p as u64, 0, 0, 0]);
        assert_eq!(s(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, 0), ALLOW);
        assert_eq!(s(libc::AF_INET6, libc::SOCK_DGRAM, libc::IPPROTO_UDP), ALLOW);
        assert_eq!(s(libc::AF_INET, libc::SOCK_STREAM, libc::IPPROTO_TCP), ALLOW);
        assert_eq!(s(libc::AF_UNIX, libc::SOCK_STREAM, 0), ALLOW);
        assert_eq!(s(libc::AF_NETLINK, libc::SOCK_RAW, 0), ALLOW);
        assert_eq!(s(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP), NOTIFY);
        assert_eq!(s(libc::AF_INET, libc::SOCK_DGRAM, libc::IPPROTO_ICMP), NOTIFY, "ping sockets");
        assert_eq!(s(libc::AF_INET6, libc::SOCK_DGRAM, libc::IPPROTO_ICMPV6), NOTIFY);
        assert_eq!(s(libc::AF_PACKET, libc::SOCK_RAW, 0), NOTIFY);
        assert_eq!(s(libc::AF_INET, libc::SOCK_SEQPACKET, 0), NOTIFY, "SCTP");
        assert_eq!(s(libc::AF_INET, libc::SOCK_STREAM, 132), NOTIFY, "SCTP");
    }

    #[test]
    fn calls_never_trapped_depend_on_their_number_alone() {
        // The kernel skips the filter for calls whose answer depends on nothing but the number
        // and the architecture (its action cache): reading an argument or the instruction
        // pointer on their way would make every read and write pay for the filter.
        for nr in
            [libc::SYS_read, libc::SYS_write, libc::SYS_getsockopt, libc::SYS_close, libc::SYS_epoll_wait]
        {
            let (r, loaded) = trace(nr, NATIVE_ARCH, 0x7f00_0000_1000, [3, 0, 0, 0, 0, 0]);
            assert_eq!(r, ALLOW);
            assert!(loaded.iter().all(|&o| o == OFF_NR || o == OFF_ARCH), "{nr}: {loaded:?}");
        }
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn calls_from_the_gate_alone_are_let_through() {
        let sendto = [3, 0x1000, 5, 0, 0x7fff_0000, 16];
        assert_eq!(run_at(libc::SYS_sendto, NATIVE_ARCH, GATE_IP, sendto), ALLOW);
        assert_eq!(run_at(libc::SYS_connect, NATIVE_ARCH, GATE_IP, [3, 0, 0, 0, 0, 0]), ALLOW);
        for ip in [GATE_IP - 2, GATE_IP + 1, GATE_IP + (1 << 32), GATE_IP ^ (1 << 40), GATE_IP as u32 as u64]
        {
            assert_eq!(run_at(libc::SYS_sendto, NATIVE_ARCH, ip, sendto), NOTIFY, "{ip:#x}");
        }
        const AUDIT_ARCH_I386: u32 = 0x4000_0003;
        assert_eq!(run_at(362, AUDIT_ARCH_I386, GATE_IP, [0; 6]), NOTIFY, "i386 connect from the gate");
        for nr in [libc::SYS_ptrace, libc::SYS_pidfd_getfd, libc::SYS_process_vm_writev, libc::SYS_accept4] {
            assert_eq!(run_at(nr, NATIVE_ARCH, GATE_IP, [16, 1, 0, 0, 0, 0]), NOTIFY, "{nr} from the gate");
        }
        let x32 = libc::SYS_connect | X32_SYSCALL_BIT as i64;
        assert_eq!(
            run_at(x32, NATIVE_ARCH, GATE_IP, [0; 6]),
            libc::SECCOMP_RET_ERRNO | 38,
            "x32 from the gate"
        );
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn other_architectures_cannot_go_around_it() {
        assert_eq!(native(libc::SYS_connect | X32_SYSCALL_BIT as i64, [0; 6]), libc::SECCOMP_RET_ERRNO | 38);
        const AUDIT_ARCH_I386: u32 = 0x4000_0003;
        assert_eq!(run(362, AUDIT_ARCH_I386, [0; 6]), NOTIFY, "i386 connect");
        assert_eq!(run(102, AUDIT_ARCH_I386, [3, 0, 0, 0, 0, 0]), NOTIFY, "socketcall");
        assert_eq!(run(3, AUDIT_ARCH_I386, [0; 6]), ALLOW, "i386 read");
    }
}
