//! The program's messages (`msghdr`), copied before the library uses them: a bad pointer
//! anywhere in them is the kernel's EFAULT, never a crash.

use libc::{c_int, c_void, iovec, msghdr, sockaddr, socklen_t};

use crate::sys::mem;

/// How many iovecs a message carries at most (the kernel's UIO_MAXIOV).
pub const MAX_IOV: usize = 1024;
/// Messages with this few iovecs are copied without an allocation.
const FEW: usize = 8;

/// A copy of the program's iovec list (its buffers stay the program's).
pub enum IoVecs {
    Few([iovec; FEW], usize),
    Many(Vec<iovec>),
}

impl IoVecs {
    /// The list at `iov`, `n` long: EMSGSIZE when too long, EFAULT when unreadable.
    pub fn copy(iov: *const iovec, n: usize) -> Result<IoVecs, c_int> {
        if n == 0 {
            return Ok(IoVecs::Few([ZERO; FEW], 0));
        }
        if n > MAX_IOV {
            return Err(libc::EMSGSIZE);
        }
        if n <= FEW {
            let mut few = [ZERO; FEW];
            // SAFETY: the array's first `n` iovecs, filled as bytes.
            let dst = unsafe {
                std::slice::from_raw_parts_mut(
                    few.as_mut_ptr().cast::<u8>(),
                    n * std::mem::size_of::<iovec>(),
                )
            };
            return if mem::copy_in(iov.cast(), dst) { Ok(IoVecs::Few(few, n)) } else { Err(libc::EFAULT) };
        }
        mem::copy_array(iov, n).map(IoVecs::Many).ok_or(libc::EFAULT)
    }

    pub fn as_slice(&self) -> &[iovec] {
        match self {
            IoVecs::Few(a, n) => &a[..*n],
            IoVecs::Many(v) => v,
        }
    }

    /// The bytes they hold in all.
    pub fn len(&self) -> usize {
        self.as_slice().iter().map(|v| v.iov_len).fold(0usize, usize::saturating_add)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Copies `data` into the program's buffers; `Err(EFAULT)` when one is not writable.
    /// Returns how much fit.
    pub fn scatter(&self, mut data: &[u8]) -> Result<usize, c_int> {
        let mut copied = 0;
        for v in self.as_slice() {
            if data.is_empty() {
                break;
            }
            let n = v.iov_len.min(data.len());
            if !mem::copy_out(v.iov_base.cast(), &data[..n]) {
                return Err(libc::EFAULT);
            }
            data = &data[n..];
            copied += n;
        }
        Ok(copied)
    }

    /// Copies the program's data out of its buffers into `out` (after what `out` holds);
    /// `Err(EFAULT)` when one is not readable.
    pub fn gather(&self, out: &mut Vec<u8>) -> Result<(), c_int> {
        for v in self.as_slice() {
            let at = out.len();
            out.resize(at + v.iov_len, 0);
            if !mem::copy_in(v.iov_base.cast(), &mut out[at..]) {
                return Err(libc::EFAULT);
            }
        }
        Ok(())
    }
}

const ZERO: iovec = iovec { iov_base: std::ptr::null_mut(), iov_len: 0 };

/// A message of the program's: its header copied, its iovec list copied, its buffers, address
/// and control data still the program's (read checked, or by the kernel).
pub struct Msg {
    pub name: *mut c_void,
    pub namelen: socklen_t,
    pub iov: IoVecs,
    pub control: *mut c_void,
    pub controllen: usize,
}

impl Msg {
    /// The message at `msg`: EFAULT when its header or iovec list cannot be read.
    pub fn copy(msg: *const msghdr) -> Result<Msg, c_int> {
        let h = mem::copy_value(msg).ok_or(libc::EFAULT)?;
        Msg::from_header(&h)
    }

    /// A message from a header already copied (or built by the library).
    pub fn from_header(h: &msghdr) -> Result<Msg, c_int> {
        Ok(Msg {
            name: h.msg_name,
            namelen: h.msg_namelen,
            iov: IoVecs::copy(h.msg_iov, h.msg_iovlen)?,
            control: h.msg_control,
            controllen: h.msg_controllen,
        })
    }

    /// One buffer, with or without an address (send, sendto, write, recv…).
    pub fn one(buf: *const c_void, n: usize, name: *const sockaddr, namelen: socklen_t) -> Msg {
        let mut few = [ZERO; FEW];
        few[0] = iovec { iov_base: buf as *mut c_void, iov_len: n };
        Msg {
            name: name as *mut c_void,
            namelen: if name.is_null() { 0 } else { namelen },
            iov: IoVecs::Few(few, 1),
            control: std::ptr::null_mut(),
            controllen: 0,
        }
    }

    /// Several buffers, without an address (writev, readv): EFAULT or EMSGSIZE as the kernel.
    pub fn vector(iov: *const iovec, n: c_int) -> Result<Msg, c_int> {
        Ok(Msg {
            name: std::ptr::null_mut(),
            namelen: 0,
            iov: IoVecs::copy(iov, usize::try_from(n).map_err(|_| libc::EINVAL)?)?,
            control: std::ptr::null_mut(),
            controllen: 0,
        })
    }

    /// True when the message names a destination (sendmsg: an address of some length).
    pub fn named(&self) -> bool {
        !self.name.is_null() && self.namelen != 0
    }
}

/// sendmmsg/recvmmsg as the library makes them: one message at a time through `each` (the
/// first with `first_flags`, the others with `flags`), each result written to its `msg_len`.
/// Returns how many went, or -1 (with `each`'s errno) when the first failed.
pub fn one_by_one(
    msgs: *mut libc::mmsghdr,
    count: libc::c_uint,
    mut each: impl FnMut(*mut msghdr, bool) -> isize,
) -> c_int {
    let mut done = 0;
    for i in 0..count as usize {
        // The program's array of `count` headers: each is read and written checked.
        let entry = msgs.wrapping_add(i) as *mut u8;
        let hdr = entry.wrapping_add(std::mem::offset_of!(libc::mmsghdr, msg_hdr)) as *mut msghdr;
        let len = entry.wrapping_add(std::mem::offset_of!(libc::mmsghdr, msg_len));
        let r = each(hdr, i == 0);
        if r < 0 || !mem::copy_out(len, &(r as libc::c_uint).to_ne_bytes()) {
            return if done == 0 { -1 } else { done };
        }
        done += 1;
    }
    done
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_pointers_are_efault_and_long_lists_emsgsize() {
        assert_eq!(IoVecs::copy(std::ptr::dangling::<iovec>(), 1).err(), Some(libc::EFAULT));
        assert_eq!(IoVecs::copy(std::ptr::dangling::<iovec>(), MAX_IOV + 1).err(), Some(libc::EMSGSIZE));
        assert_eq!(Msg::copy(std::ptr::dangling::<msghdr>()).err(), Some(libc::EFAULT));
        let mut a = [0u8; 3];
        let mut b = [0u8; 2];
        let list = [
            iovec { iov_base: a.as_mut_ptr().cast(), iov_len: 3 },
            iovec { iov_base: b.as_mut_ptr().cast(), iov_len: 2 },
        ];
        let v = IoVecs::copy(list.as_ptr(), 2).unwrap();
        assert_eq!(v.len(), 5);
        assert_eq!(v.scatter(b"hello!"), Ok(5));
        assert_eq!((&a, &b), (b"hel", b"lo"));
        let mut out = vec![1u8];
        v.gather(&mut out).unwrap();
        assert_eq!(out, b"\x01hello");
        let bad = [iovec { iov_base: 8 as *mut c_void, iov_len: 4 }];
        let v = IoVecs::copy(bad.as_ptr(), 1).unwrap();
        assert_eq!(v.scatter(b"data"), Err(libc::EFAULT));
        let many: Vec<iovec> =
            (0..20).map(|_| iovec { iov_base: a.as_mut_ptr().cast(), iov_len: 1 }).collect();
        assert_eq!(IoVecs::copy(many.as_ptr(), 20).unwrap().len(), 20);
    }
}
