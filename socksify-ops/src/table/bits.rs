//! One bit per descriptor number, read with one atomic load: what a hook on a hot path
//! (`read`, `write`, `close`…) checks before anything else, so that a descriptor socksify never
//! touched costs nothing more.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Descriptors below this have a bit; above it, one flag says "some are marked" and the table
/// is asked.
const BITS: usize = 65536;

pub struct Bits {
    words: [AtomicU64; BITS / 64],
    high: AtomicBool,
}

impl Bits {
    pub const fn new() -> Bits {
        #[allow(clippy::declare_interior_mutable_const)]
        const ZERO: AtomicU64 = AtomicU64::new(0);
        Bits { words: [ZERO; BITS / 64], high: AtomicBool::new(false) }
    }

    /// True when `fd` may be marked (for descriptors beyond the bitmap: when any is).
    pub fn get(&self, fd: i32) -> bool {
        match usize::try_from(fd) {
            Ok(i) if i < BITS => self.words[i / 64].load(Ordering::Acquire) & (1 << (i % 64)) != 0,
            Ok(_) => self.high.load(Ordering::Acquire),
            Err(_) => false,
        }
    }

    pub fn set(&self, fd: i32) {
        match usize::try_from(fd) {
            Ok(i) if i < BITS => {
                self.words[i / 64].fetch_or(1 << (i % 64), Ordering::AcqRel);
            }
            Ok(_) => self.high.store(true, Ordering::Release),
            Err(_) => {}
        }
    }

    /// Clears `fd`'s bit (the high flag stays: other high descriptors may be marked).
    pub fn clear(&self, fd: i32) {
        if let Ok(i) = usize::try_from(fd) {
            if i < BITS {
                self.words[i / 64].fetch_and(!(1 << (i % 64)), Ordering::AcqRel);
            }
        }
    }
}

impl Bits {
    /// Clears the bits of `first..=last` (the high flag stays).
    pub fn clear_range(&self, first: i32, last: i32) {
        let lo = first.max(0) as usize;
        let hi = (i64::from(last) + 1).clamp(0, BITS as i64) as usize;
        let mut i = lo;
        while i < hi {
            let word = i / 64;
            let end = ((word + 1) * 64).min(hi);
            let mask = if end - i == 64 { u64::MAX } else { ((1u64 << (end - i)) - 1) << (i % 64) };
            self.words[word].fetch_and(!mask, Ordering::AcqRel);
            i = end;
        }
    }
}

impl Default for Bits {
    fn default() -> Self {
        Bits::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_clear_exactly_their_bits() {
        let b = Bits::new();
        for fd in [0, 3, 63, 64, 65, 127, 128, 200, 65535] {
            b.set(fd);
        }
        b.clear_range(3, 127);
        let left: Vec<i32> =
            [0, 3, 63, 64, 65, 127, 128, 200, 65535].into_iter().filter(|&f| b.get(f)).collect();
        assert_eq!(left, vec![0, 128, 200, 65535]);
        b.clear_range(129, i32::MAX);
        assert!(b.get(128) && !b.get(200) && !b.get(65535));
        b.clear_range(5, 4);
        assert!(b.get(0) && b.get(128));
    }

    #[test]
    fn bits_are_set_and_cleared_one_by_one() {
        let b = Bits::new();
        assert!(!b.get(3));
        b.set(3);
        b.set(64);
        assert!(b.get(3) && b.get(64) && !b.get(4) && !b.get(-1));
        b.clear(3);
        assert!(!b.get(3) && b.get(64));
        assert!(!b.get(70_000));
        b.set(70_000);
        assert!(b.get(80_000), "beyond the bitmap, one flag for all");
    }
}
