//! The listener of the filter: the trapped calls arrive here and are answered from here.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use crate::sys::syscall;

/// One trapped system call: which thread made it, which call, its arguments.
#[derive(Clone, Copy, Debug)]
pub struct Notif {
    pub id: u64,
    /// The thread's id (not its process's).
    pub tid: libc::pid_t,
    pub nr: i64,
    pub arch: u32,
    pub args: [u64; 6],
}

/// What the trapped call returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reply {
    /// Let the kernel run the call as the program made it.
    Continue,
    /// Return this value.
    Value(i64),
    /// Fail with this errno.
    Error(i32),
}

pub struct Listener {
    fd: OwnedFd,
    notif_size: usize,
}

/// The kernel's sizes of the notification structures (they may grow in later kernels).
fn notif_size() -> usize {
    let mut sizes = libc::seccomp_notif_sizes { seccomp_notif: 0, seccomp_notif_resp: 0, seccomp_data: 0 };
    // SAFETY: SECCOMP_GET_NOTIF_SIZES fills the struct.
    let r = unsafe { libc::syscall(libc::SYS_seccomp, libc::SECCOMP_GET_NOTIF_SIZES, 0, &mut sizes) };
    let ours = std::mem::size_of::<libc::seccomp_notif>();
    if r == 0 {
        ours.max(sizes.seccomp_notif as usize)
    } else {
        ours
    }
}

/// SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP (6.6): the supervisor thread is woken on the CPU of the
/// trapped thread, which waits for it anyway — a trap costs a few microseconds instead of a
/// cross-CPU wake-up in each direction.
const SYNC_WAKE_UP: u64 = 1;

impl Listener {
    pub fn new(fd: OwnedFd) -> Listener {
        let l = Listener { fd, notif_size: notif_size() };
        let flags = SYNC_WAKE_UP;
        // SAFETY: SET_FLAGS reads one u64 argument by value (older kernels refuse it: fine).
        let _ = unsafe { libc::ioctl(l.fd.as_raw_fd(), libc::SECCOMP_IOCTL_NOTIF_SET_FLAGS as _, flags) };
        l
    }

    pub fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Waits for a notification; false once no process uses the filter any more.
    pub fn wait(&self) -> bool {
        let mut pfd = libc::pollfd { fd: self.raw(), events: libc::POLLIN, revents: 0 };
        loop {
            // SAFETY: one pollfd, no timeout.
            let r = unsafe { libc::poll(&mut pfd, 1, -1) };
            if r < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            if r < 0 || pfd.revents & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0 {
                return false;
            }
            if pfd.revents & libc::POLLIN != 0 {
                return true;
            }
        }
    }

    /// Receives one notification (after `wait` said one is there).
    pub fn recv(&self) -> io::Result<Notif> {
        // The kernel wants a zeroed buffer of its own notification size.
        let mut buf = vec![0u64; self.notif_size.div_ceil(8)];
        // SAFETY: a zeroed buffer at least as large as the kernel's struct seccomp_notif.
        let r = unsafe { libc::ioctl(self.raw(), libc::SECCOMP_IOCTL_NOTIF_RECV as _, buf.as_mut_ptr()) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the kernel filled a struct seccomp_notif at the start of `buf`.
        let n: libc::seccomp_notif = unsafe { std::ptr::read(buf.as_ptr() as *const libc::seccomp_notif) };
        Ok(Notif {
            id: n.id,
            tid: n.pid as libc::pid_t,
            nr: n.data.nr as i64,
            arch: n.data.arch,
            args: n.data.args,
        })
    }

    /// True while the thread behind notification `id` still waits for its answer (so what
    /// was read from its memory was its own).
    pub fn valid(&self, id: u64) -> bool {
        // SAFETY: ID_VALID reads one u64.
        unsafe { libc::ioctl(self.raw(), libc::SECCOMP_IOCTL_NOTIF_ID_VALID as _, &id) == 0 }
    }

    /// True once no process uses the filter any more: no call will ever come again (and
    /// the kernel answers every receive at once, with ENOENT).
    pub fn hung_up(&self) -> bool {
        let mut pfd = libc::pollfd { fd: self.raw(), events: libc::POLLIN, revents: 0 };
        // SAFETY: poll on one local pollfd, without waiting.
        let r = unsafe { libc::poll(&mut pfd, 1, 0) };
        r > 0 && pfd.revents & libc::POLLHUP != 0
    }

    /// Answers notification `id`. An error means the caller is gone (killed meanwhile).
    pub fn respond(&self, id: u64, reply: Reply) -> io::Result<()> {
        let mut resp = libc::seccomp_notif_resp { id, val: 0, error: 0, flags: 0 };
        match reply {
            Reply::Continue => resp.flags = libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32,
            Reply::Value(v) => resp.val = v,
            Reply::Error(e) => resp.error = -e,
        }
        // SAFETY: SEND reads one struct seccomp_notif_resp.
        let r = unsafe { libc::ioctl(self.raw(), libc::SECCOMP_IOCTL_NOTIF_SEND as _, &resp) };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    /// Installs `src` (a descriptor of the supervisor's) in the trapped process: at number
    /// `at` (replacing what is there), or at the lowest free one. With `answer`, the call is
    /// answered at the same moment with the new number. Returns that number.
    pub fn add_fd(
        &self,
        id: u64,
        src: RawFd,
        at: Option<RawFd>,
        cloexec: bool,
        answer: bool,
    ) -> io::Result<i32> {
        let mut flags = 0u32;
        if at.is_some() {
            flags |= libc::SECCOMP_ADDFD_FLAG_SETFD as u32;
        }
        if answer {
            flags |= libc::SECCOMP_ADDFD_FLAG_SEND as u32;
        }
        let addfd = libc::seccomp_notif_addfd {
            id,
            flags,
            srcfd: src as u32,
            newfd: at.unwrap_or(0) as u32,
            newfd_flags: if cloexec { libc::O_CLOEXEC as u32 } else { 0 },
        };
        syscall!(libc::SYS_ioctl, self.raw(), libc::SECCOMP_IOCTL_NOTIF_ADDFD, &addfd).map(|n| n as i32)
    }
}
