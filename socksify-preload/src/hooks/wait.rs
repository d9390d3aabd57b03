//! poll, ppoll, select, pselect, epoll_ctl, getsockopt: a socket whose chain runs in the
//! background is hidden from the program's waits until it is established, then reports
//! `SO_ERROR` as the kernel would. With no handshake running, the waits cost one atomic load.

use std::time::Duration;

use libc::{c_int, c_void, epoll_event, fd_set, nfds_t, pollfd, sigset_t, socklen_t, timespec, timeval};
use socksify_ops::ops::pending;
use socksify_ops::runtime::Flow;
use socksify_ops::sys::mem;
use socksify_ops::table;

fn from_timespec(ts: *const timespec) -> Result<Option<Duration>, ()> {
    if ts.is_null() {
        return Ok(None);
    }
    let t = mem::copy_value(ts).ok_or(())?;
    Ok(Some(Duration::new(t.tv_sec.max(0) as u64, t.tv_nsec.clamp(0, 999_999_999) as u32)))
}

hook! {
    fn poll(fds: *mut pollfd, n: nfds_t, timeout: c_int) -> c_int {
        gate: table::any_running(), fail: -1, panic: libc::ENOMEM,
        body: {
            let t = (timeout >= 0).then(|| Duration::from_millis(timeout as u64));
            pending::poll(fds, n as usize, t, std::ptr::null())
        },
    }
}

hook! {
    fn ppoll(fds: *mut pollfd, n: nfds_t, timeout: *const timespec, mask: *const sigset_t) -> c_int {
        gate: table::any_running(), fail: -1, panic: libc::ENOMEM,
        body: match from_timespec(timeout) {
            Ok(t) => pending::poll(fds, n as usize, t, mask),
            Err(()) => Flow::Bypass, // the kernel's EFAULT
        },
    }
}

hook! {
    fn select(n: c_int, r: *mut fd_set, w: *mut fd_set, e: *mut fd_set, timeout: *mut timeval) -> c_int {
        gate: table::any_running(), fail: -1, panic: libc::ENOMEM,
        body: {
            let t = if timeout.is_null() {
                Ok(None)
            } else {
                mem::copy_value(timeout as *const timeval)
                    .map(|t| Some(Duration::new(t.tv_sec.max(0) as u64, (t.tv_usec.clamp(0, 999_999) as u32) * 1000)))
                    .ok_or(())
            };
            match t {
                Ok(t) => pending::select(n, [r, w, e], t, std::ptr::null()).unwrap_or(Flow::Bypass),
                Err(()) => Flow::Bypass,
            }
        },
    }
}

hook! {
    fn pselect(n: c_int, r: *mut fd_set, w: *mut fd_set, e: *mut fd_set, timeout: *const timespec, mask: *const sigset_t) -> c_int {
        gate: table::any_running(), fail: -1, panic: libc::ENOMEM,
        body: match from_timespec(timeout) {
            Ok(t) => pending::select(n, [r, w, e], t, mask).unwrap_or(Flow::Bypass),
            Err(()) => Flow::Bypass,
        },
    }
}

hook! {
    fn epoll_ctl(epfd: c_int, op: c_int, fd: c_int, event: *mut epoll_event) -> c_int {
        gate: true, fail: -1, panic: libc::ENOMEM, body: pending::epoll_ctl(epfd, op, fd, event),
    }
}

hook! {
    fn getsockopt(fd: c_int, level: c_int, name: c_int, value: *mut c_void, len: *mut socklen_t) -> c_int {
        gate: level == libc::SOL_SOCKET && name == libc::SO_ERROR && table::known(fd),
        fail: -1, panic: libc::ENOMEM,
        body: match pending::so_error(fd) {
            Some(errno) => {
                let room = mem::copy_value(len as *const socklen_t);
                match room {
                    Some(room) if room as usize >= std::mem::size_of::<c_int>() => {
                        if mem::copy_out_two(
                            (value as *mut u8, &errno.to_ne_bytes()),
                            (len as *mut u8, &(std::mem::size_of::<c_int>() as socklen_t).to_ne_bytes()),
                        ) {
                            Flow::Done(0)
                        } else {
                            Flow::Fail(libc::EFAULT)
                        }
                    }
                    Some(_) => Flow::Bypass,
                    None => Flow::Fail(libc::EFAULT),
                }
            }
            None => Flow::Bypass,
        },
    }
}
