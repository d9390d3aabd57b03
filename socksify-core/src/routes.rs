//! Routes: which chain a destination takes. A route is a list of patterns and a `via` (a chain's
//! name, `direct` or `block`); the first route with a pattern that matches wins, and a
//! destination no route matches takes the default chain (the top-level `[[proxy]]` list).
//!
//! Patterns:
//! - names: `host.example` (that name), `*.example` (names under it), `.example` (it and the
//!   names under it), `*` (every name);
//! - addresses: `10.0.0.0/8`, `192.0.2.7`, `fd00::/8`, `2001:db8::1`;
//! - any of those with a port or an inclusive port range: `*.corp:22`, `10.0.0.0/8:8000-8999`,
//!   `[fd00::/8]:22`;
//! - a port alone: `:22`, `:6660-6669`.
//!
//! A name pattern matches connections made by name (remote DNS: the fake address stands for
//! the name) and, through what the resolver answered for it, the addresses it resolved to. An
//! address pattern matches connections made to an address. A port pattern matches both.

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;

/// An inclusive range of ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ports {
    pub lo: u16,
    pub hi: u16,
}

impl Ports {
    fn parse(s: &str) -> Option<Ports> {
        let (lo, hi) = match s.split_once('-') {
            Some((lo, hi)) => (lo.parse().ok()?, hi.parse().ok()?),
            None => {
                let p = s.parse().ok()?;
                (p, p)
            }
        };
        (lo <= hi).then_some(Ports { lo, hi })
    }

    pub fn contains(&self, port: u16) -> bool {
        (self.lo..=self.hi).contains(&port)
    }
}

impl fmt::Display for Ports {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.lo == self.hi {
            write!(f, "{}", self.lo)
        } else {
            write!(f, "{}-{}", self.lo, self.hi)
        }
    }
}

/// A pattern over host names (stored in lower case, without a final dot).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NamePattern {
    /// `*`: every name.
    Any,
    /// `host.example`.
    Exact(String),
    /// `*.example`: names under `example`, stored as `.example`.
    Under(String),
    /// `.example`: `example` and the names under it, stored as `example`.
    AtOrUnder(String),
}

impl NamePattern {
    fn parse(s: &str) -> Option<NamePattern> {
        if s == "*." {
            return None;
        }
        let s = s.strip_suffix('.').unwrap_or(s).to_ascii_lowercase();
        if s == "*" {
            return Some(NamePattern::Any);
        }
        let (pattern, base) = if let Some(base) = s.strip_prefix("*.") {
            (NamePattern::Under(format!(".{base}")), base.to_owned())
        } else if let Some(base) = s.strip_prefix('.') {
            (NamePattern::AtOrUnder(base.to_owned()), base.to_owned())
        } else {
            (NamePattern::Exact(s.clone()), s)
        };
        // A base that parses as an address is an address pattern gone wrong (`1.2.3.4.`).
        (crate::router::is_host_name(&base) && base.parse::<IpAddr>().is_err()).then_some(pattern)
    }

    /// True when the pattern matches `name` (any case, with or without a final dot).
    pub fn matches(&self, name: &str) -> bool {
        let name = name.strip_suffix('.').unwrap_or(name);
        let ends_with = |suffix: &str| {
            name.len() >= suffix.len()
                && name.as_bytes()[name.len() - suffix.len()..].eq_ignore_ascii_case(suffix.as_bytes())
        };
        match self {
            NamePattern::Any => true,
            NamePattern::Exact(n) => name.eq_ignore_ascii_case(n),
            NamePattern::Under(suffix) => name.len() > suffix.len() && ends_with(suffix),
            NamePattern::AtOrUnder(base) => {
                name.eq_ignore_ascii_case(base)
                    || (name.len() > base.len() + 1
                        && ends_with(base)
                        && name.as_bytes()[name.len() - base.len() - 1] == b'.')
            }
        }
    }
}

impl fmt::Display for NamePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NamePattern::Any => write!(f, "*"),
            NamePattern::Exact(n) => write!(f, "{n}"),
            NamePattern::Under(suffix) => write!(f, "*{suffix}"),
            NamePattern::AtOrUnder(base) => write!(f, ".{base}"),
        }
    }
}

/// One pattern of a route.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pattern {
    Name(NamePattern, Option<Ports>),
    Net(IpNet, Option<Ports>),
    Port(Ports),
}

fn parse_net(s: &str) -> Option<IpNet> {
    s.parse::<IpNet>().ok().map(|n| n.trunc()).or_else(|| s.parse::<IpAddr>().ok().map(IpNet::from))
}

impl Pattern {
    /// `*.corp.example`, `10.0.0.0/8`, `[fd00::/8]:22`, `host:8000-8999`, `:22`…; `None` when
    /// `s` is none of them.
    pub fn parse(s: &str) -> Option<Pattern> {
        let s = s.trim();
        // `:22` is a port; `::1` and `::/0` are addresses.
        if let Some(ports) = s.strip_prefix(':').filter(|rest| !rest.starts_with(':')) {
            return Ports::parse(ports).map(Pattern::Port);
        }
        if let Some(rest) = s.strip_prefix('[') {
            let (net, ports) = match rest.split_once(']') {
                Some((net, "")) => (net, None),
                Some((net, tail)) => (net, Some(Ports::parse(tail.strip_prefix(':')?)?)),
                None => return None,
            };
            return Some(Pattern::Net(parse_net(net).filter(|n| matches!(n, IpNet::V6(_)))?, ports));
        }
        if let Some(net) = parse_net(s) {
            return Some(Pattern::Net(net, None));
        }
        let (host, ports) = match s.rsplit_once(':') {
            Some((host, ports)) => (host, Some(Ports::parse(ports)?)),
            None => (s, None),
        };
        if let Some(net) = parse_net(host) {
            // IPv6 with a port needs brackets: `fd00::/8:22` is ambiguous.
            return matches!(net, IpNet::V4(_)).then_some(Pattern::Net(net, ports));
        }
        NamePattern::parse(host).map(|n| Pattern::Name(n, ports))
    }

    /// The port or port range the pattern asks for, if any.
    pub fn ports(&self) -> Option<Ports> {
        match self {
            Pattern::Name(_, p) | Pattern::Net(_, p) => *p,
            Pattern::Port(p) => Some(*p),
        }
    }

    fn port_ok(&self, port: u16) -> bool {
        self.ports().is_none_or(|p| p.contains(port))
    }

    /// True when a connection to address `ip` (IPv4-mapped addresses given as IPv4) and `port`
    /// matches.
    pub fn matches_addr(&self, ip: IpAddr, port: u16) -> bool {
        match self {
            Pattern::Net(net, _) => net.contains(&ip) && self.port_ok(port),
            Pattern::Port(p) => p.contains(port),
            Pattern::Name(..) => false,
        }
    }

    /// True when a connection to `name` and `port` matches.
    pub fn matches_name(&self, name: &str, port: u16) -> bool {
        match self {
            Pattern::Name(n, _) => n.matches(name) && self.port_ok(port),
            Pattern::Port(p) => p.contains(port),
            Pattern::Net(..) => false,
        }
    }

    /// True when a lookup of `name` (no port known yet) matches: a name pattern without a port.
    pub fn matches_lookup(&self, name: &str) -> bool {
        matches!(self, Pattern::Name(n, None) if n.matches(name))
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pattern::Name(n, None) => write!(f, "{n}"),
            Pattern::Name(n, Some(p)) => write!(f, "{n}:{p}"),
            Pattern::Net(net, None) => write!(f, "{net}"),
            Pattern::Net(IpNet::V4(net), Some(p)) => write!(f, "{net}:{p}"),
            Pattern::Net(IpNet::V6(net), Some(p)) => write!(f, "[{net}]:{p}"),
            Pattern::Port(p) => write!(f, ":{p}"),
        }
    }
}

/// Where a route sends what it matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    /// A chain: 0 is the default chain (the top-level `[[proxy]]` list), `i` is
    /// `Config::chains[i - 1]`.
    Chain(usize),
    Direct,
    Block,
}

/// One `[[route]]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    pub patterns: Vec<Pattern>,
    pub via: Via,
    /// `to`: the destination the chain is asked for instead (proxychains' `dnat`).
    pub to: Option<Rewrite>,
}

/// A route's `to = "HOST[:PORT]"`: the last hop is asked for HOST (an address or a name) and
/// PORT, or the program's port when there is none.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rewrite {
    pub host: crate::proxy::Host,
    pub port: Option<u16>,
}

impl Rewrite {
    pub fn parse(s: &str) -> Option<Rewrite> {
        let (host, port) = crate::proxy::split_host_port(s.trim()).ok()?;
        let port = match port {
            None => None,
            Some(p) => Some(p.parse::<u16>().ok().filter(|&p| p != 0)?),
        };
        Some(Rewrite { host, port })
    }

    /// What the chain is asked for instead of a connection to port `port`.
    pub fn apply(&self, port: u16) -> crate::addr::TargetAddr {
        let port = self.port.unwrap_or(port);
        match &self.host {
            crate::proxy::Host::Ip(ip) => crate::addr::TargetAddr::Ip(std::net::SocketAddr::new(*ip, port)),
            crate::proxy::Host::Name(n) => crate::addr::TargetAddr::Domain(n.clone(), port),
        }
    }
}

impl fmt::Display for Rewrite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.port {
            Some(p) => write!(f, "{}:{p}", self.host),
            None => write!(f, "{}", self.host),
        }
    }
}

/// A named chain: `[chains.NAME]`.
#[derive(Clone, Debug, PartialEq)]
pub struct NamedChain {
    pub name: String,
    pub proxies: Vec<crate::proxy::Proxy>,
    pub mode: crate::chain::ChainMode,
    pub chain_len: usize,
}

/// Words a chain cannot be named: they are `via`'s own.
pub const RESERVED: [&str; 3] = ["default", "direct", "block"];

/// The first route a connection to address `ip`:`port` matches, as its index; `learned` is the
/// index of the route of the name `ip` was resolved from, if any (it counts as a match of that
/// route's name pattern).
pub fn first_for_addr(routes: &[Route], ip: IpAddr, port: u16, learned: Option<usize>) -> Option<usize> {
    let by_addr = routes.iter().position(|r| r.patterns.iter().any(|p| p.matches_addr(ip, port)));
    match (by_addr, learned) {
        (Some(a), Some(l)) => Some(a.min(l)),
        (a, l) => a.or(l),
    }
}

/// The routes' address patterns, indexed: what [`first_for_addr`] answers, in O(log n) for
/// patterns without a port (disjoint ranges, each holding the first route that covers it) and
/// by a scan of the patterns with a port of the address's family and of the port patterns.
#[derive(Clone, Debug, Default)]
pub struct AddrIndex {
    v4: std::collections::BTreeMap<u128, (u128, usize)>,
    v6: std::collections::BTreeMap<u128, (u128, usize)>,
    /// (route, pattern) with a port, in route order: IPv4 nets and port patterns.
    ported_v4: Vec<(usize, Pattern)>,
    /// The same for IPv6.
    ported_v6: Vec<(usize, Pattern)>,
}

fn bounds(net: &IpNet) -> (u128, u128) {
    match net {
        IpNet::V4(n) => (u32::from(n.network()) as u128, u32::from(n.broadcast()) as u128),
        IpNet::V6(n) => (u128::from(n.network()), u128::from(n.broadcast())),
    }
}

fn as_number(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u32::from(v4) as u128,
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// Adds [lo, hi] for `route` where no earlier route covers it (routes come in order).
fn fill(map: &mut std::collections::BTreeMap<u128, (u128, usize)>, lo: u128, hi: u128, route: usize) {
    let before = map.range(..lo).next_back().map(|(&l, &(h, _))| (l, h)).filter(|&(_, h)| h >= lo);
    let inside: Vec<(u128, u128)> = map.range(lo..=hi).map(|(&l, &(h, _))| (l, h)).collect();
    let mut at = Some(lo);
    for (l, h) in before.into_iter().chain(inside) {
        let Some(cur) = at else { return };
        if l > cur {
            map.insert(cur, (l - 1, route));
        }
        at = at.max(h.checked_add(1)).filter(|_| h < u128::MAX);
    }
    if let Some(cur) = at.filter(|&c| c <= hi) {
        map.insert(cur, (hi, route));
    }
}

impl AddrIndex {
    pub fn new(routes: &[Route]) -> AddrIndex {
        let mut ix = AddrIndex::default();
        for (i, r) in routes.iter().enumerate() {
            for p in &r.patterns {
                match p {
                    Pattern::Net(net, None) => {
                        let (lo, hi) = bounds(net);
                        let map = if matches!(net, IpNet::V4(_)) { &mut ix.v4 } else { &mut ix.v6 };
                        fill(map, lo, hi, i);
                    }
                    Pattern::Net(IpNet::V4(_), Some(_)) => ix.ported_v4.push((i, p.clone())),
                    Pattern::Net(IpNet::V6(_), Some(_)) => ix.ported_v6.push((i, p.clone())),
                    Pattern::Port(_) => {
                        ix.ported_v4.push((i, p.clone()));
                        ix.ported_v6.push((i, p.clone()));
                    }
                    Pattern::Name(..) => {}
                }
            }
        }
        ix
    }

    /// [`first_for_addr`], from the index.
    pub fn first(&self, ip: IpAddr, port: u16, learned: Option<usize>) -> Option<usize> {
        let (map, ported) = match ip {
            IpAddr::V4(_) => (&self.v4, &self.ported_v4),
            IpAddr::V6(_) => (&self.v6, &self.ported_v6),
        };
        let n = as_number(ip);
        let by_net = map.range(..=n).next_back().filter(|(_, &(hi, _))| n <= hi).map(|(_, &(_, r))| r);
        let limit = by_net.unwrap_or(usize::MAX);
        let by_port = ported
            .iter()
            .take_while(|(r, _)| *r < limit)
            .find(|(_, p)| p.matches_addr(ip, port))
            .map(|(r, _)| *r);
        [by_net, by_port, learned].into_iter().flatten().min()
    }
}

/// The first route a connection to `name`:`port` matches. Port patterns of `direct` routes are
/// skipped: a name on a direct route is resolved by the system before its port is known, so a
/// connection by name never goes direct by port alone.
pub fn first_for_name(routes: &[Route], name: &str, port: u16) -> Option<usize> {
    routes.iter().position(|r| {
        r.patterns.iter().any(|p| match p {
            Pattern::Port(_) if r.via == Via::Direct => false,
            p => p.matches_name(name, port),
        })
    })
}

/// The first route a lookup of `name` matches (name patterns without a port).
pub fn first_for_lookup(routes: &[Route], name: &str) -> Option<usize> {
    routes.iter().position(|r| r.patterns.iter().any(|p| p.matches_lookup(name)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_address_index_answers_as_the_scan_does() {
        let pats = [
            "10.0.0.0/8",
            "10.1.0.0/16",
            "10.1.2.3",
            "10.0.0.0/8:22",
            ":80",
            "0.0.0.0/0",
            "fd00::/8",
            "[fd00::/16]:443",
            "::/0",
            "192.168.0.0/24:1000-2000",
            "host.example",
            "255.255.255.255",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
        ];
        for seed in 0..200u64 {
            let mut rng = fastrand::Rng::with_seed(seed);
            let n = rng.usize(1..8);
            let routes: Vec<Route> = (0..n)
                .map(|_| Route {
                    patterns: (0..rng.usize(1..3)).map(|_| p(pats[rng.usize(..pats.len())])).collect(),
                    via: Via::Chain(0),
                    to: None,
                })
                .collect();
            let ix = AddrIndex::new(&routes);
            let ips = [
                "10.1.2.3",
                "10.1.2.4",
                "10.2.0.1",
                "11.0.0.1",
                "192.168.0.9",
                "255.255.255.255",
                "0.0.0.0",
                "fd00::1",
                "fd12::1",
                "2001:db8::1",
                "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            ];
            for ip in ips {
                let ip: IpAddr = ip.parse().unwrap();
                for port in [22, 80, 443, 1500, 9] {
                    for learned in [None, Some(0), Some(5)] {
                        assert_eq!(
                            ix.first(ip, port, learned),
                            first_for_addr(&routes, ip, port, learned),
                            "{ip}:{port} {learned:?} in {routes:?}"
                        );
                    }
                }
            }
        }
    }

    fn p(s: &str) -> Pattern {
        Pattern::parse(s).unwrap_or_else(|| panic!("{s} parses"))
    }

    #[test]
    fn patterns_parse_and_print_back() {
        for s in [
            "*",
            "host.example",
            "*.corp.example",
            ".corp.example",
            "10.0.0.0/8",
            "192.0.2.7/32",
            "fd00::/8",
            "::/0",
            "::1/128",
            "10.0.0.0/8:22",
            "[fd00::/8]:22",
            "[fd00::/8]:8000-8999",
            "*.corp:22",
            "git.example:9418",
            ":22",
            ":6660-6669",
        ] {
            assert_eq!(p(s).to_string(), s, "{s}");
        }
        assert_eq!(p("Host.Example.").to_string(), "host.example");
        assert_eq!(p("[fd00::/8]").to_string(), "fd00::/8");
        assert_eq!(p("10.1.2.3/8").to_string(), "10.0.0.0/8");
        for bad in [
            "",
            ":",
            ":0-",
            ":9-1",
            ":70000",
            "10.0.0.0/33",
            "fd00::/8:22",
            "[10.0.0.0/8]:1",
            "a..b",
            "*.",
            "-a.b",
            "x:y",
            "[fd00::",
            "*x.example",
            "1.2.3.4.",
        ] {
            assert_eq!(Pattern::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn name_patterns_match_as_documented() {
        let under = p("*.corp.example");
        assert!(under.matches_name("git.corp.example", 1));
        assert!(under.matches_name("A.B.CORP.example.", 1));
        assert!(!under.matches_name("corp.example", 1));
        assert!(!under.matches_name("xcorp.example", 1));
        let at = p(".corp.example");
        assert!(at.matches_name("corp.example", 1) && at.matches_name("a.corp.example", 1));
        assert!(!at.matches_name("xcorp.example", 1));
        let exact = p("git.example:22");
        assert!(exact.matches_name("GIT.example", 22) && !exact.matches_name("git.example", 23));
        assert!(!exact.matches_lookup("git.example"), "a lookup has no port");
        assert!(p("*").matches_lookup("anything"));
        assert!(!under.matches_addr("10.0.0.1".parse().unwrap(), 1));
    }

    #[test]
    fn address_and_port_patterns() {
        let v4 = p("10.0.0.0/8:8000-8999");
        assert!(v4.matches_addr("10.9.9.9".parse().unwrap(), 8000));
        assert!(v4.matches_addr("10.9.9.9".parse().unwrap(), 8999));
        assert!(!v4.matches_addr("10.9.9.9".parse().unwrap(), 9000));
        assert!(!v4.matches_addr("11.0.0.1".parse().unwrap(), 8000));
        assert!(!v4.matches_name("ten.example", 8000));
        let port = p(":22");
        assert!(port.matches_addr("192.0.2.1".parse().unwrap(), 22));
        assert!(port.matches_name("x.example", 22) && !port.matches_name("x.example", 23));
    }

    #[test]
    fn first_match_wins_and_learned_names_count_in_order() {
        let routes = vec![
            Route { patterns: vec![p(":443")], via: Via::Chain(1), to: None },
            Route { patterns: vec![p("*.lan")], via: Via::Direct, to: None },
            Route { patterns: vec![p(":22")], via: Via::Direct, to: None },
            Route { patterns: vec![p("10.0.0.0/8")], via: Via::Block, to: None },
        ];
        let ip = "10.1.1.1".parse().unwrap();
        assert_eq!(first_for_addr(&routes, ip, 80, None), Some(3));
        assert_eq!(first_for_addr(&routes, ip, 80, Some(1)), Some(1), "resolved from a *.lan name");
        assert_eq!(first_for_addr(&routes, ip, 443, Some(1)), Some(0), "an earlier route still wins");
        assert_eq!(first_for_name(&routes, "a.lan", 443), Some(0));
        assert_eq!(first_for_name(&routes, "a.lan", 80), Some(1));
        assert_eq!(first_for_name(&routes, "a.example", 22), None, "no direct by port for names");
        assert_eq!(first_for_lookup(&routes, "a.lan"), Some(1));
        assert_eq!(first_for_lookup(&routes, "a.example"), None);
    }
}
