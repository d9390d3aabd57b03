//! The `direct` rules compiled for matching: for each address family, the rules without a port
//! as sorted, merged, disjoint address ranges, and the rules with a port as such ranges for each
//! port. A lookup is at most two binary searches and one more per port table, O(log n) whatever
//! the number of rules, and allocates nothing (signal handlers match too). `Config::direct`
//! stays the source of truth; [`Config::is_direct`] is the linear scan this must agree with.
//!
//! [`Config::is_direct`]: crate::config::Config::is_direct

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;

use crate::config::DirectRule;

/// An address as a number: `u32` for IPv4, `u128` for IPv6.
trait Key: Copy + Ord {
    /// The next number, `None` after the last.
    fn succ(self) -> Option<Self>;
}

impl Key for u32 {
    fn succ(self) -> Option<u32> {
        self.checked_add(1)
    }
}

impl Key for u128 {
    fn succ(self) -> Option<u128> {
        self.checked_add(1)
    }
}

/// Inclusive ranges, sorted, disjoint and not adjacent (touching ones are merged).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Ranges<T>(Box<[(T, T)]>);

impl<T: Key> Ranges<T> {
    fn build(mut v: Vec<(T, T)>) -> Ranges<T> {
        v.sort_unstable();
        let mut out: Vec<(T, T)> = Vec::with_capacity(v.len());
        for (lo, hi) in v {
            if let Some(last) = out.last_mut() {
                // Sorted by start, so `lo >= last.0`: overlapping or touching means it extends `last`.
                if last.1.succ().is_none_or(|next| lo <= next) {
                    last.1 = last.1.max(hi);
                    continue;
                }
            }
            out.push((lo, hi));
        }
        Ranges(out.into_boxed_slice())
    }

    fn contains(&self, x: T) -> bool {
        // The ranges that start at or before `x` come first; only the last of them can hold it.
        let i = self.0.partition_point(|&(lo, _)| lo <= x);
        i > 0 && x <= self.0[i - 1].1
    }

    fn len(&self) -> usize {
        self.0.len()
    }
}

/// One address family's rules.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Family<T> {
    /// Rules without a port.
    any_port: Ranges<T>,
    /// Rules with a port, by port (sorted, one entry per port).
    by_port: Box<[(u16, Ranges<T>)]>,
}

impl<T: Key> Family<T> {
    fn build(any_port: Vec<(T, T)>, mut with_port: Vec<(u16, T, T)>) -> Family<T> {
        with_port.sort_unstable_by_key(|&(port, _, _)| port);
        let by_port = with_port
            .chunk_by(|a, b| a.0 == b.0)
            .map(|group| (group[0].0, Ranges::build(group.iter().map(|&(_, lo, hi)| (lo, hi)).collect())))
            .collect();
        Family { any_port: Ranges::build(any_port), by_port }
    }

    fn contains(&self, x: T, port: u16) -> bool {
        if self.any_port.contains(x) {
            return true;
        }
        match self.by_port.binary_search_by_key(&port, |(p, _)| *p) {
            Ok(i) => self.by_port[i].1.contains(x),
            Err(_) => false,
        }
    }

    fn ranges(&self) -> usize {
        self.any_port.len() + self.by_port.iter().map(|(_, r)| r.len()).sum::<usize>()
    }
}

/// The `direct` rules, ready to match in O(log n).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirectSet {
    v4: Family<u32>,
    v6: Family<u128>,
}

impl DirectSet {
    /// Compiles `rules` (O(n log n)). Host bits in a rule's address do not matter, as in
    /// `IpNet::contains`: `10.1.2.3/8` is 10.0.0.0–10.255.255.255.
    pub fn new(rules: &[DirectRule]) -> DirectSet {
        let (mut v4_any, mut v4_port) = (Vec::new(), Vec::new());
        let (mut v6_any, mut v6_port) = (Vec::new(), Vec::new());
        for rule in rules {
            match (rule.net, rule.port) {
                (IpNet::V4(n), None) => v4_any.push((u32::from(n.network()), u32::from(n.broadcast()))),
                (IpNet::V4(n), Some(p)) => {
                    v4_port.push((p, u32::from(n.network()), u32::from(n.broadcast())))
                }
                (IpNet::V6(n), None) => v6_any.push((u128::from(n.network()), u128::from(n.broadcast()))),
                (IpNet::V6(n), Some(p)) => {
                    v6_port.push((p, u128::from(n.network()), u128::from(n.broadcast())))
                }
            }
        }
        DirectSet { v4: Family::build(v4_any, v4_port), v6: Family::build(v6_any, v6_port) }
    }

    /// True when connections to `addr` bypass the proxies. An IPv4-mapped IPv6 address matches
    /// as the IPv4 address it carries (and never an IPv6 rule).
    pub fn contains(&self, addr: &SocketAddr) -> bool {
        match addr.ip() {
            IpAddr::V4(v4) => self.v4.contains(u32::from(v4), addr.port()),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => self.v4.contains(u32::from(v4), addr.port()),
                None => self.v6.contains(u128::from(v6), addr.port()),
            },
        }
    }

    /// How many disjoint ranges the rules became (all families and ports).
    pub fn ranges(&self) -> usize {
        self.v4.ranges() + self.v6.ranges()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn rules(list: &[&str]) -> Vec<DirectRule> {
        list.iter().map(|s| DirectRule::parse(s).unwrap_or_else(|| panic!("{s}"))).collect()
    }

    fn linear(rules: &[DirectRule]) -> Config {
        Config { direct: rules.to_vec(), ..Config::default() }
    }

    /// The set and the linear scan agree on `addr`; returns the answer.
    fn agree(set: &DirectSet, config: &Config, addr: SocketAddr) -> bool {
        let want = config.is_direct(&addr);
        assert_eq!(set.contains(&addr), want, "{addr} with rules {:?}", config.direct);
        want
    }

    fn check(list: &[&str], yes: &[&str], no: &[&str]) {
        let r = rules(list);
        let (set, config) = (DirectSet::new(&r), linear(&r));
        for a in yes {
            assert!(agree(&set, &config, a.parse().unwrap()), "{a} should be direct under {list:?}");
        }
        for a in no {
            assert!(!agree(&set, &config, a.parse().unwrap()), "{a} should not be direct under {list:?}");
        }
    }

    #[test]
    fn no_rules_match_nothing() {
        check(&[], &[], &["0.0.0.0:0", "127.0.0.1:80", "[::1]:80", "[::ffff:127.0.0.1]:80"]);
        assert_eq!(DirectSet::new(&[]).ranges(), 0);
    }

    #[test]
    fn whole_families() {
        check(
            &["0.0.0.0/0"],
            &["0.0.0.0:0", "255.255.255.255:65535", "[::ffff:1.2.3.4]:1"],
            &["[::1]:1", "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:1"],
        );
        check(
            &["::/0"],
            &["[::]:0", "[::1]:1", "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535"],
            &["1.2.3.4:1", "[::ffff:1.2.3.4]:1"],
        );
        check(&["0.0.0.0/0:53", "[::/0]:53"], &["9.9.9.9:53", "[2001:db8::1]:53"], &["[::1]:54"]);
    }

    #[test]
    fn single_addresses_and_the_ends_of_the_space() {
        check(
            &["255.255.255.255/32", "0.0.0.0/32", "192.0.2.7"],
            &["255.255.255.255:1", "0.0.0.0:1", "192.0.2.7:9", "[::ffff:192.0.2.7]:9"],
            &["255.255.255.254:1", "0.0.0.1:1", "192.0.2.6:9", "192.0.2.8:9"],
        );
        check(
            &["ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128", "::/128", "2001:db8::7"],
            &["[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:1", "[::]:1", "[2001:db8::7]:1"],
            &["[ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe]:1", "[::2]:1", "[2001:db8::6]:1", "[2001:db8::8]:1"],
        );
    }

    #[test]
    fn mapped_addresses_match_ipv4_rules_only() {
        check(
            &["127.0.0.0/8", "::ffff:0:0/96"],
            &["127.0.0.1:80", "[::ffff:127.0.0.1]:80"],
            // The IPv6 rule over the mapped range never matches: the address is unmapped first.
            &["[::ffff:10.0.0.1]:80", "10.0.0.1:80"],
        );
    }

    #[test]
    fn port_rules_match_their_port_only() {
        check(
            &["192.0.2.0/24:80", "[fd00::/8]:443", "10.0.0.1", "192.0.2.0/25:81"],
            &["192.0.2.9:80", "[::ffff:192.0.2.9]:80", "[fd00::1]:443", "10.0.0.1:1", "192.0.2.1:81"],
            &["192.0.2.9:82", "192.0.2.200:81", "[fd00::1]:80", "10.0.0.2:1", "[fe00::1]:443"],
        );
    }

    #[test]
    fn overlapping_and_adjacent_ranges_merge() {
        let r = rules(&["10.0.0.0/24", "10.0.1.0/24", "10.0.0.128/25", "10.0.3.0/24", "10.0.0.0/8"]);
        assert_eq!(DirectSet::new(&r).ranges(), 1);
        let r = rules(&["10.0.0.0/24", "10.0.1.0/24", "10.0.3.0/24"]);
        assert_eq!(DirectSet::new(&r).ranges(), 2);
        check(
            &["10.0.0.0/24", "10.0.1.0/24", "10.0.3.0/24", "10.0.1.5/32", "10.0.0.1/8:22"],
            &["10.0.0.0:1", "10.0.1.255:1", "10.0.3.0:1", "10.0.3.255:1", "10.9.9.9:22"],
            &["10.0.2.0:1", "10.0.2.255:1", "10.0.4.0:1", "9.255.255.255:1", "10.9.9.9:23"],
        );
        // Touching at the top of the space, where the next address would overflow.
        check(
            &["255.255.255.0/25", "255.255.255.128/25", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ff00/120"],
            &["255.255.255.255:1", "255.255.255.0:1", "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:1"],
            &["255.255.254.255:1"],
        );
        assert_eq!(DirectSet::new(&rules(&["255.255.255.0/25", "255.255.255.128/25"])).ranges(), 1);
    }

    #[test]
    fn host_bits_in_a_rule_do_not_matter() {
        check(&["10.1.2.3/8", "[fd00::1/8]:80"], &["10.200.0.1:1", "[fdff::1]:80"], &["11.0.0.0:1"]);
    }

    #[test]
    fn the_default_rules() {
        let set = DirectSet::new(&Config::default().direct);
        assert!(set.contains(&"127.0.0.1:80".parse().unwrap()));
        assert!(set.contains(&"[::1]:80".parse().unwrap()));
        assert!(set.contains(&"[::ffff:127.0.0.1]:80".parse().unwrap()));
        assert!(!set.contains(&"192.0.2.1:80".parse().unwrap()));
    }

    /// A random IPv4 address with few distinct high bits, so that random rules overlap and touch.
    fn random_v4(rng: &mut fastrand::Rng) -> u32 {
        rng.u32(0..16) << 28 | rng.u32(0..4) << 24 | rng.u32(..) >> 8
    }

    fn random_rule(rng: &mut fastrand::Rng) -> DirectRule {
        let port = rng.bool().then(|| rng.u16(1..5));
        let net = if rng.u8(..4) == 0 {
            let len = rng.u8(..=128);
            let hi = u128::from(rng.u32(0..8)) << 125 | u128::from(rng.u64(..)) << 40;
            let ip = Ipv6Addr::from(hi | u128::from(rng.u32(..)));
            // Sometimes in the mapped range: such rules must never match.
            let ip = if rng.u8(..8) == 0 { Ipv4Addr::from(rng.u32(..)).to_ipv6_mapped() } else { ip };
            IpNet::new(IpAddr::V6(ip), len).unwrap()
        } else {
            let len = [0, 4, 8, 12, 16, 20, 24, 26, 28, 30, 31, 32][rng.usize(..12)];
            let len = if rng.u8(..16) == 0 { len } else { len.max(12) };
            IpNet::new(IpAddr::V4(Ipv4Addr::from(random_v4(rng))), len).unwrap()
        };
        DirectRule { net, port }
    }

    /// Addresses near the interesting ones (the ends of the rules' ranges and their neighbours,
    /// plain and mapped, on the rule's port and the next) and random ones.
    fn probes(rng: &mut fastrand::Rng, rules: &[DirectRule]) -> Vec<SocketAddr> {
        let mut out = Vec::new();
        for r in rules {
            for ip in [r.net.network(), r.net.broadcast()] {
                let neighbours: Vec<IpAddr> = match ip {
                    IpAddr::V4(v4) => {
                        let n = u32::from(v4);
                        [n.wrapping_sub(1), n, n.wrapping_add(1)].map(|x| IpAddr::V4(x.into())).to_vec()
                    }
                    IpAddr::V6(v6) => {
                        let n = u128::from(v6);
                        [n.wrapping_sub(1), n, n.wrapping_add(1)].map(|x| IpAddr::V6(x.into())).to_vec()
                    }
                };
                for ip in neighbours {
                    let port = r.port.unwrap_or(0).wrapping_add(rng.u16(0..2));
                    out.push(SocketAddr::new(ip, port));
                    if let IpAddr::V4(v4) = ip {
                        out.push(SocketAddr::new(IpAddr::V6(v4.to_ipv6_mapped()), port));
                    }
                }
            }
        }
        for _ in 0..2000 {
            let port = rng.u16(0..6);
            let ip = match rng.u8(..3) {
                0 => IpAddr::V4(random_v4(rng).into()),
                1 => IpAddr::V6(Ipv4Addr::from(random_v4(rng)).to_ipv6_mapped()),
                _ => IpAddr::V6(
                    (u128::from(rng.u32(0..8)) << 125
                        | u128::from(rng.u64(..)) << 40
                        | u128::from(rng.u32(..)))
                    .into(),
                ),
            };
            out.push(SocketAddr::new(ip, port));
        }
        out
    }

    #[test]
    fn agrees_with_the_linear_scan_on_random_rules() {
        let mut rng = fastrand::Rng::with_seed(0x50c5_1f1e);
        let (mut yes, mut no) = (0, 0);
        for round in 0..300 {
            let n = [1, 2, 3, 5, 10, 40, 200][round % 7];
            let rules: Vec<DirectRule> = (0..n).map(|_| random_rule(&mut rng)).collect();
            let (set, config) = (DirectSet::new(&rules), linear(&rules));
            for addr in probes(&mut rng, &rules) {
                if agree(&set, &config, addr) {
                    yes += 1;
                } else {
                    no += 1;
                }
            }
        }
        // Both answers were exercised, plenty of times.
        assert!(yes > 10_000 && no > 10_000, "{yes} direct, {no} not");
    }
}
