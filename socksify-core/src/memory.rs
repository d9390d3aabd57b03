//! What every process of a session remembers about its proxies: which hops are dead (skipped
//! until a deadline instead of each process paying the connect timeout again) and where each
//! round-robin chain goes on. One shared page of the session (`hops`), written through atomics
//! only: bounded, lock-free, so a `fork()` at any moment leaves nothing locked, and gone with
//! the session. Nothing in it can widen what goes where: a forged entry only makes a process
//! skip a hop (or try it), never go direct.
//!
//! It also remembers, per SOCKS5 hop, whether the hop takes a handshake sent in one write
//! (`Pipelining`), so that a hop that does not is found out once per session.
//!
//! Layout: a magic at 8; round-robin counters (one `u64` per chain, `RR_COUNTERS` of them) from
//! `RR_AT`; pipelining slots of 16 bytes (a hop's key, then its `Pipelining`) from `PIPE_AT`;
//! dead-hop slots of 16 bytes (a hop's key, never 0, then the `CLOCK_MONOTONIC` millisecond
//! until which it is dead, 0 for alive) from `DEAD_AT` to the end. Both kinds of slot are
//! found by open addressing from the key.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::proxy::Proxy;

pub const MEMORY_LEN: usize = 4096;
pub const MEMORY_MAGIC: &[u8; 8] = b"SFYHOPS2";
const RR_AT: usize = 64;
const RR_COUNTERS: usize = 32;
const PIPE_AT: usize = RR_AT + RR_COUNTERS * 8;
const PIPE_SLOTS: usize = 32;
const DEAD_AT: usize = PIPE_AT + PIPE_SLOTS * 16;
const DEAD_SLOTS: usize = (MEMORY_LEN - DEAD_AT) / 16;
/// How many slots a key may be found in, from its home slot on.
const PROBES: usize = 16;

/// A view of a session's `hops` page (or of any `MEMORY_LEN` bytes of zeroed, 8-aligned memory
/// that outlives it).
pub struct HopMemory {
    base: *mut u8,
    /// Unmapped on drop (a page this value mapped).
    owned: bool,
}

// SAFETY: the page is only accessed through atomics.
unsafe impl Send for HopMemory {}
// SAFETY: as above.
unsafe impl Sync for HopMemory {}

impl std::fmt::Debug for HopMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HopMemory")
    }
}

impl Drop for HopMemory {
    fn drop(&mut self) {
        if self.owned {
            // SAFETY: the mapping of MEMORY_LEN bytes this value was made with, unmapped once.
            unsafe { libc::munmap(self.base.cast(), MEMORY_LEN) };
        }
    }
}

impl HopMemory {
    /// A view of the mapping at `base`, `MEMORY_LEN` bytes long, page-aligned, that this value
    /// unmaps when dropped.
    ///
    /// # Safety
    /// `base` must be such a mapping, used by nothing else of this process but atomics.
    pub unsafe fn from_mapping(base: *mut u8) -> HopMemory {
        HopMemory { base, owned: true }
    }

    /// A memory of this process alone (for tests and for a library preloaded by hand).
    pub fn private() -> HopMemory {
        // SAFETY: an anonymous private mapping, zeroed by the kernel.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                MEMORY_LEN,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert!(base != libc::MAP_FAILED, "an anonymous page of memory");
        HopMemory { base: base.cast(), owned: true }
    }

    /// The start of the page.
    pub fn base(&self) -> *mut u8 {
        self.base
    }

    fn word(&self, at: usize) -> &AtomicU64 {
        debug_assert!(at.is_multiple_of(8) && at + 8 <= MEMORY_LEN);
        // SAFETY: 8-aligned inside the page-aligned mapping, accessed through atomics only.
        unsafe { &*(self.base.add(at) as *const AtomicU64) }
    }

    /// Round-robin: where chain `chain` starts, advancing its shared counter by `step`.
    pub fn next_start(&self, chain: usize, step: usize) -> usize {
        self.word(RR_AT + (chain % RR_COUNTERS) * 8).fetch_add(step as u64, Ordering::Relaxed) as usize
    }

    fn slot(&self, key: u64, k: usize) -> (&AtomicU64, &AtomicU64) {
        let i = (key as usize).wrapping_add(k) % DEAD_SLOTS;
        (self.word(DEAD_AT + i * 16), self.word(DEAD_AT + i * 16 + 8))
    }

    /// The millisecond until which hop `key` is dead, if it is dead at `now`.
    pub fn dead_until(&self, key: u64, now: u64) -> Option<u64> {
        for k in 0..PROBES {
            let (slot_key, until) = self.slot(key, k);
            match slot_key.load(Ordering::Acquire) {
                0 => return None,
                found if found == key => {
                    let until = until.load(Ordering::Acquire);
                    return (until > now).then_some(until);
                }
                _ => {}
            }
        }
        None
    }

    /// Hop `key` is dead until `until`. A full neighbourhood forgets the entry whose deadline
    /// is nearest (a bounded memory: the worst is one more timeout paid).
    pub fn mark_dead(&self, key: u64, until: u64) {
        let mut oldest: Option<(&AtomicU64, &AtomicU64, u64)> = None;
        for k in 0..PROBES {
            let (slot_key, slot_until) = self.slot(key, k);
            match slot_key.compare_exchange(0, key, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return slot_until.store(until, Ordering::Release),
                Err(found) if found == key => {
                    slot_until.fetch_max(until, Ordering::AcqRel);
                    return;
                }
                Err(_) => {
                    let u = slot_until.load(Ordering::Acquire);
                    if oldest.is_none_or(|(_, _, o)| u < o) {
                        oldest = Some((slot_key, slot_until, u));
                    }
                }
            }
        }
        if let Some((slot_key, slot_until, _)) = oldest {
            // Another key's slot, taken over: its deadline first, so no reader sees our key with
            // the other hop's deadline for longer than a moment.
            slot_until.store(0, Ordering::Release);
            slot_key.store(key, Ordering::Release);
            slot_until.store(until, Ordering::Release);
        }
    }

    /// Hop `key` worked: it is alive again for everyone.
    pub fn mark_alive(&self, key: u64) {
        for k in 0..PROBES {
            let (slot_key, until) = self.slot(key, k);
            match slot_key.load(Ordering::Acquire) {
                0 => return,
                found if found == key => {
                    if until.load(Ordering::Relaxed) != 0 {
                        until.store(0, Ordering::Release);
                    }
                    return;
                }
                _ => {}
            }
        }
    }
}

/// Whether a SOCKS5 hop takes its greeting, authentication and request in one write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pipelining {
    /// Not tried yet: the next handshake sent in one write is a probe.
    Unknown = 0,
    /// It answered one: no probe any more.
    Takes = 1,
    /// It dropped one (or refused the one method offered): step by step.
    Refuses = 2,
    /// A connection is finding out now: the others go step by step meanwhile (a burst of
    /// connections pays one probe, not one each).
    Probing = 3,
}

/// A verdict word: the `Pipelining` in its low byte and, for `Probing`, the `now_ms` until
/// which the probe holds it (a process that died in the middle leaves nothing stuck).
pub mod verdict {
    use super::Pipelining;
    use std::sync::atomic::{AtomicU64, Ordering};

    fn decode(w: u64, now: u64) -> Pipelining {
        match w & 0xff {
            1 => Pipelining::Takes,
            2 => Pipelining::Refuses,
            3 if w >> 8 > now => Pipelining::Probing,
            _ => Pipelining::Unknown,
        }
    }

    /// The verdict in `word` at `now` (milliseconds of `now_ms`).
    pub fn read(word: &AtomicU64, now: u64) -> Pipelining {
        decode(word.load(Ordering::Acquire), now)
    }

    /// Takes the probe for `word` until `until` if nobody knows or is finding out: true for
    /// the one caller that may probe.
    pub fn claim(word: &AtomicU64, now: u64, until: u64) -> bool {
        let mut w = word.load(Ordering::Acquire);
        loop {
            if decode(w, now) != Pipelining::Unknown {
                return false;
            }
            match word.compare_exchange(
                w,
                (until << 8) | Pipelining::Probing as u64,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return true,
                Err(seen) => w = seen,
            }
        }
    }

    /// What a probe found (or `Unknown`, when it found nothing out).
    pub fn set(word: &AtomicU64, v: Pipelining) {
        debug_assert!(v != Pipelining::Probing);
        word.store(v as u64, Ordering::Release);
    }
}

impl HopMemory {
    /// The verdict word of hop `key`, its slot taken if it has none (None: every slot is
    /// another hop's; the home slot is then taken over, the worst being one more probe).
    fn pipe_word(&self, key: u64, insert: bool) -> Option<&AtomicU64> {
        for k in 0..PIPE_SLOTS {
            let i = (key as usize).wrapping_add(k) % PIPE_SLOTS;
            let (slot_key, word) = (self.word(PIPE_AT + i * 16), self.word(PIPE_AT + i * 16 + 8));
            match slot_key.load(Ordering::Acquire) {
                found if found == key => return Some(word),
                0 if !insert => return None,
                0 => match slot_key.compare_exchange(0, key, Ordering::AcqRel, Ordering::Acquire) {
                    Ok(_) => return Some(word),
                    Err(found) if found == key => return Some(word),
                    Err(_) => {}
                },
                _ => {}
            }
        }
        if !insert {
            return None;
        }
        let i = key as usize % PIPE_SLOTS;
        let (slot_key, word) = (self.word(PIPE_AT + i * 16), self.word(PIPE_AT + i * 16 + 8));
        word.store(0, Ordering::Release);
        slot_key.store(key, Ordering::Release);
        Some(word)
    }

    /// What the session knows of hop `key`'s pipelining at `now` (`now_ms`).
    pub fn pipelining(&self, key: u64, now: u64) -> Pipelining {
        self.pipe_word(key, false).map_or(Pipelining::Unknown, |w| verdict::read(w, now))
    }

    /// Takes hop `key`'s probe until `until` (see `verdict::claim`).
    pub fn claim_probe(&self, key: u64, now: u64, until: u64) -> bool {
        self.pipe_word(key, true).is_some_and(|w| verdict::claim(w, now, until))
    }

    /// Hop `key` was found to take (or not) a handshake in one write; `Unknown` gives the probe
    /// back.
    pub fn set_pipelining(&self, key: u64, v: Pipelining) {
        if let Some(w) = self.pipe_word(key, true) {
            verdict::set(w, v);
        }
    }
}

/// A hop's key in the memory: FNV-1a of what names it (scheme, user, host, port), never 0.
pub fn hop_key(proxy: &Proxy) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in proxy.to_string().bytes() {
        h = (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3);
    }
    h.max(1)
}

/// `CLOCK_MONOTONIC` in milliseconds: one clock for every process of the machine.
pub fn now_ms() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}

/// The deadline of a hop found dead now, for `dead_hop` (`None` when the memory is off).
pub fn dead_deadline(dead_hop: Duration) -> Option<u64> {
    (!dead_hop.is_zero()).then(|| now_ms() + dead_hop.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dead_hop_is_dead_until_its_deadline_or_until_it_works() {
        let m = HopMemory::private();
        assert_eq!(m.dead_until(7, 100), None);
        m.mark_dead(7, 200);
        assert_eq!(m.dead_until(7, 100), Some(200));
        assert_eq!(m.dead_until(7, 200), None, "past its deadline");
        m.mark_dead(7, 150);
        assert_eq!(m.dead_until(7, 100), Some(200), "the later deadline stands");
        m.mark_alive(7);
        assert_eq!(m.dead_until(7, 100), None);
        m.mark_dead(7, 300);
        assert_eq!(m.dead_until(7, 100), Some(300), "the same slot, used again");
    }

    #[test]
    fn colliding_keys_share_the_page_and_a_full_neighbourhood_forgets_the_nearest_deadline() {
        let m = HopMemory::private();
        let keys: Vec<u64> = (0..PROBES as u64).map(|i| 5 + i * DEAD_SLOTS as u64).collect();
        for (i, &k) in keys.iter().enumerate() {
            m.mark_dead(k, 1000 + i as u64);
        }
        for (i, &k) in keys.iter().enumerate() {
            assert_eq!(m.dead_until(k, 0), Some(1000 + i as u64));
        }
        let newcomer = 5 + PROBES as u64 * DEAD_SLOTS as u64;
        m.mark_dead(newcomer, 5000);
        assert_eq!(m.dead_until(newcomer, 0), Some(5000));
        assert_eq!(m.dead_until(keys[0], 0), None, "the nearest deadline was forgotten");
        assert_eq!(m.dead_until(keys[1], 0), Some(1001));
    }

    #[test]
    fn pipelining_verdicts_are_per_hop_and_one_probe_at_a_time() {
        let m = HopMemory::private();
        assert_eq!(m.pipelining(9, 0), Pipelining::Unknown);
        assert!(m.claim_probe(9, 0, 100));
        assert!(!m.claim_probe(9, 50, 150), "one probe at a time");
        assert_eq!(m.pipelining(9, 50), Pipelining::Probing);
        assert_eq!(m.pipelining(9, 100), Pipelining::Unknown, "a probe that never ended");
        assert!(m.claim_probe(9, 100, 200));
        m.set_pipelining(9, Pipelining::Refuses);
        m.set_pipelining(10, Pipelining::Takes);
        assert_eq!((m.pipelining(9, 0), m.pipelining(10, 0)), (Pipelining::Refuses, Pipelining::Takes));
        assert!(!m.claim_probe(9, 0, 100), "known");
        for k in 100..100 + PIPE_SLOTS as u64 {
            m.set_pipelining(k, Pipelining::Refuses);
        }
        let known =
            (100..100 + PIPE_SLOTS as u64).filter(|&k| m.pipelining(k, 0) == Pipelining::Refuses).count();
        assert!(known >= PIPE_SLOTS - 2, "{known}");
        // The dead-hop slots are elsewhere in the page.
        m.mark_dead(9, 500);
        assert_eq!(m.dead_until(9, 0), Some(500));
    }

    #[test]
    fn round_robin_counters_are_per_chain() {
        let m = HopMemory::private();
        assert_eq!(m.next_start(0, 1), 0);
        assert_eq!(m.next_start(0, 1), 1);
        assert_eq!(m.next_start(1, 2), 0);
        assert_eq!(m.next_start(1, 2), 2);
        assert_eq!(m.next_start(0, 1), 2);
    }

    #[test]
    fn keys_name_the_hop_not_its_password() {
        let a: Proxy = "socks5://u:one@10.0.0.1:1080".parse().unwrap();
        let b: Proxy = "socks5://u:two@10.0.0.1:1080".parse().unwrap();
        let c: Proxy = "socks5://10.0.0.1:1081".parse().unwrap();
        assert_eq!(hop_key(&a), hop_key(&b));
        assert_ne!(hop_key(&a), hop_key(&c));
    }
}
