//! Addresses the system resolver answered for names that a route matches (a name on a `direct`
//! route, or any routed name under local DNS): a connection to such an address takes the
//! route of its name. A fixed table of slots, written once each and never freed, read and
//! written with atomics only: no lock, so it is safe in signal handlers and across `fork`.
//! When it is full, new addresses are not learned and take the routes of their address.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

const SLOTS: usize = 4096;
const PROBES: usize = 32;
const EMPTY: u32 = 0;
const WRITING: u32 = 1;
/// A ready slot holds `READY + route index`.
const READY: u32 = 2;

struct Slot {
    hi: AtomicU64,
    lo: AtomicU64,
    state: AtomicU32,
}

pub struct Learned {
    slots: Box<[Slot]>,
}

fn key(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(u128::from(v6), |v4| u128::from(v4.to_ipv6_mapped())),
    }
}

fn start(k: u128) -> usize {
    let h = (k as u64 ^ (k >> 64) as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (h >> 32) as usize % SLOTS
}

impl Default for Learned {
    fn default() -> Self {
        Learned::new()
    }
}

impl Learned {
    pub fn new() -> Learned {
        let slots = (0..SLOTS)
            .map(|_| Slot { hi: AtomicU64::new(0), lo: AtomicU64::new(0), state: AtomicU32::new(EMPTY) })
            .collect();
        Learned { slots }
    }

    /// Remembers that `ip` was resolved from a name of route `route`; false when the table has
    /// no room near its slot. An address learned for two routes keeps the earlier one in the
    /// table (first match wins, whichever name was looked up first).
    pub fn insert(&self, ip: IpAddr, route: usize) -> bool {
        let Ok(route) = u32::try_from(route) else { return false };
        let k = key(ip);
        let (hi, lo) = ((k >> 64) as u64, k as u64);
        let first = start(k);
        for i in 0..PROBES {
            let slot = &self.slots[(first + i) % SLOTS];
            loop {
                let st = slot.state.load(Ordering::Acquire);
                if st >= READY {
                    if slot.hi.load(Ordering::Relaxed) == hi && slot.lo.load(Ordering::Relaxed) == lo {
                        if st - READY > route
                            && slot
                                .state
                                .compare_exchange(st, READY + route, Ordering::AcqRel, Ordering::Relaxed)
                                .is_err()
                        {
                            continue; // changed meanwhile: look again
                        }
                        return true;
                    }
                    break;
                }
                if st == WRITING {
                    break; // another thread's, maybe the same address: a duplicate is harmless
                }
                if slot.state.compare_exchange(EMPTY, WRITING, Ordering::Acquire, Ordering::Relaxed).is_ok() {
                    slot.hi.store(hi, Ordering::Relaxed);
                    slot.lo.store(lo, Ordering::Relaxed);
                    slot.state.store(READY + route, Ordering::Release);
                    return true;
                }
            }
        }
        false
    }

    /// The route `ip` was learned for.
    pub fn get(&self, ip: IpAddr) -> Option<usize> {
        let k = key(ip);
        let (hi, lo) = ((k >> 64) as u64, k as u64);
        let first = start(k);
        for i in 0..PROBES {
            let slot = &self.slots[(first + i) % SLOTS];
            match slot.state.load(Ordering::Acquire) {
                EMPTY => return None,
                WRITING => continue,
                st => {
                    if slot.hi.load(Ordering::Relaxed) == hi && slot.lo.load(Ordering::Relaxed) == lo {
                        return Some((st - READY) as usize);
                    }
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_the_earliest_route_of_each_address_both_families() {
        let t = Learned::new();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        assert_eq!(t.get(a), None);
        assert!(t.insert(a, 3));
        assert!(t.insert(a, 5));
        assert_eq!(t.get(a), Some(3));
        // A later lookup of a name of an earlier route wins, whatever came first.
        assert!(t.insert(a, 1));
        assert_eq!(t.get(a), Some(1));
        assert!(t.insert(a, 3));
        assert_eq!(t.get(a), Some(1));
        assert_eq!(t.get("::ffff:10.0.0.1".parse().unwrap()), Some(1), "v4-mapped is the same address");
        assert!(t.insert("fd00::1".parse().unwrap(), 0));
        assert_eq!(t.get("fd00::1".parse().unwrap()), Some(0));
        assert_eq!(t.get("fd00::2".parse().unwrap()), None);
    }

    #[test]
    fn fills_up_without_losing_what_it_holds() {
        let t = Learned::new();
        let mut kept = Vec::new();
        for i in 0..(SLOTS as u32 + 500) {
            let ip = IpAddr::V4((0x0a00_0000 + i).into());
            if t.insert(ip, (i % 7) as usize) {
                kept.push((ip, (i % 7) as usize));
            }
        }
        assert!(kept.len() > SLOTS / 2, "{}", kept.len());
        assert!(kept.len() <= SLOTS);
        for (ip, r) in kept {
            assert_eq!(t.get(ip), Some(r), "{ip}");
        }
    }

    #[test]
    fn threads_insert_at_once() {
        let t = std::sync::Arc::new(Learned::new());
        let handles: Vec<_> = (0..4u32)
            .map(|n| {
                let t = t.clone();
                std::thread::spawn(move || {
                    for i in 0..500u32 {
                        assert!(t.insert(IpAddr::V4((0xc000_0000 + n * 1000 + i).into()), n as usize));
                    }
                })
            })
            .collect();
        handles.into_iter().for_each(|h| h.join().unwrap());
        for n in 0..4u32 {
            for i in 0..500u32 {
                assert_eq!(t.get(IpAddr::V4((0xc000_0000 + n * 1000 + i).into())), Some(n as usize));
            }
        }
    }
}
