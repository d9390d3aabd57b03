//! What happens to a connection or a name lookup: the decisions a preload library makes, kept
//! here so that its hooks only translate between C and these answers.

use std::net::{IpAddr, SocketAddr};

use crate::addr::TargetAddr;
use crate::config::{BindMode, Config, DnsMode, UdpMode};
use crate::directset::DirectSet;
use crate::fakedns::{FakeDns, FakeDnsError};
use crate::hosts::Hosts;
use crate::learned::Learned;
use crate::routes::{self, Pattern, Via};

/// Where a connection to an address goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// Not proxied: the address is in `direct`, or a route says `direct`.
    Direct,
    /// Through chain `.1` (`Config::chains()`'s index: 0 is the default chain), to this target
    /// (a name when the address is a fake one).
    Proxy(TargetAddr, usize),
    /// Refused by `[[route]]` number `.0` (from 0), whose `via` is `block`.
    Block(usize),
    /// A fake address that was never handed out: there is no name to send.
    UnknownFake,
    /// A fake address whose name a `direct` route matches: names on direct routes are resolved
    /// by the system, so this one was never handed out by this session's rules.
    DirectFake(String),
}

/// Where a UDP datagram goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UdpRoute {
    /// Sent as is: the destination is in `direct`, or `udp = "direct"`.
    Direct,
    /// `udp = "block"`.
    Blocked,
    /// Through the relay (`Route::Proxy`), or nowhere (`Route::UnknownFake`).
    Route(Route),
}

/// How a name resolves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resolution {
    /// Let the system resolver answer (local DNS).
    System,
    /// These addresses, from the hosts file or `localhost`.
    Local(Vec<IpAddr>),
    /// The fake addresses that stand for the name; `unspec` is the one to hand out when the
    /// program asks for any family.
    Fake { v4: IpAddr, v6: IpAddr, unspec: IpAddr },
    /// No answer.
    Fail(FakeDnsError),
    /// No such name: `[[route]]` number `.0` (from 0) blocks it.
    Blocked(usize),
}

pub struct Router {
    config: Config,
    /// `config.direct`, compiled (the config cannot change under the router).
    direct: DirectSet,
    hosts: Hosts,
    fake: Option<FakeDns>,
    prefer_v6: bool,
    /// Addresses the system resolver gave for names a route matches (see [`Learned`]); only
    /// when some route has a name pattern.
    learned: Option<Learned>,
    /// The routes' address patterns, indexed.
    index: routes::AddrIndex,
}

impl Router {
    /// A router for `config`; remote DNS maps a fake-address table of `capacity` names, shared
    /// with this process's forked children.
    pub fn new(config: Config, hosts: Hosts, capacity: u32) -> std::io::Result<Router> {
        let fake = match config.dns {
            DnsMode::Remote => Some(FakeDns::new(config.fake_ipv4_range, config.fake_ipv6_range, capacity)?),
            DnsMode::Local => None,
        };
        Ok(Router::with_fake(config, hosts, fake))
    }

    /// A router over a fake-address table made elsewhere (a session's); `None` under local DNS.
    pub fn with_fake(config: Config, hosts: Hosts, fake: Option<FakeDns>) -> Router {
        let fake = if config.dns == DnsMode::Remote { fake } else { None };
        // The handshake runs on the program's own socket, so its family must reach the first
        // hop: with only IPv6 proxies, a lookup for any family gets the IPv6 fake address.
        let prefer_v6 = !config.proxies.is_empty()
            && config.proxies.iter().all(|p| matches!(p.host, crate::proxy::Host::Ip(IpAddr::V6(_))));
        let direct = DirectSet::new(&config.direct);
        let names =
            config.routes.iter().flat_map(|r| &r.patterns).any(|p| matches!(p, Pattern::Name(_, None)));
        let learned = names.then(Learned::new);
        let index = routes::AddrIndex::new(&config.routes);
        Router { config, direct, hosts, fake, prefer_v6, learned, index }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// True when connections to `dest` bypass the proxies by a `direct` rule (O(log n) in the
    /// number of rules, allocation-free): `Config::is_direct`'s answer.
    pub fn is_direct(&self, dest: &SocketAddr) -> bool {
        self.direct.contains(dest)
    }

    /// True when every proxy is an IPv6 address: names get IPv6 fake addresses.
    pub fn prefers_v6(&self) -> bool {
        self.prefer_v6
    }

    pub fn remote_dns(&self) -> bool {
        self.fake.is_some()
    }

    /// Where a connection to `dest` goes. Fake addresses are checked before `direct`, so a fake
    /// range inside a direct one still reaches the proxy. Then the `direct` list, then the
    /// routes (first match wins), then the default chain.
    pub fn route(&self, dest: SocketAddr) -> Route {
        let dest = match TargetAddr::Ip(dest).unmapped() {
            TargetAddr::Ip(sa) => sa,
            TargetAddr::Domain(..) => unreachable!("unmapped keeps an address"),
        };
        if let Some(fake) = &self.fake {
            if fake.is_fake(dest.ip()) {
                return match fake.name_of(dest.ip()) {
                    Some(name) => self.route_name(name, dest.port()),
                    None => Route::UnknownFake,
                };
            }
        }
        // 0.0.0.0 and :: mean this host to the kernel (as does ::ffff:0.0.0.0, unmapped above):
        // through a proxy they would reach the proxy's own host instead.
        if dest.ip().is_unspecified() || self.direct.contains(&dest) {
            return Route::Direct;
        }
        let target = TargetAddr::Ip(dest);
        if self.config.routes.is_empty() {
            return Route::Proxy(target, 0);
        }
        let learned = self.learned.as_ref().and_then(|l| l.get(dest.ip()));
        match self.index.first(dest.ip(), dest.port(), learned) {
            None => Route::Proxy(target, 0),
            Some(i) => match self.config.routes[i].via {
                Via::Chain(c) => Route::Proxy(self.rewritten(i, target, dest.port()), c),
                Via::Direct => Route::Direct,
                Via::Block => Route::Block(i),
            },
        }
    }

    /// `target`, or what route `i`'s `to` asks the chain for instead.
    fn rewritten(&self, i: usize, target: TargetAddr, port: u16) -> TargetAddr {
        match &self.config.routes[i].to {
            Some(to) => to.apply(port),
            None => target,
        }
    }

    /// Where a connection to `name`:`port` goes (a fake address's name).
    pub fn route_name(&self, name: &str, port: u16) -> Route {
        let target = TargetAddr::Domain(name.to_owned(), port);
        match routes::first_for_name(&self.config.routes, name, port) {
            None => Route::Proxy(target, 0),
            Some(i) => match self.config.routes[i].via {
                Via::Chain(c) => Route::Proxy(self.rewritten(i, target, port), c),
                // `.onion` names always go remote, whatever the routes say.
                Via::Direct if is_onion(name) => Route::Proxy(target, 0),
                Via::Direct => Route::DirectFake(name.to_owned()),
                Via::Block => Route::Block(i),
            },
        }
    }

    /// The route a lookup of `name` matches whose answers the caller should [`learn`] when
    /// the system resolver gives them: a `direct` route's name (under remote DNS), or any
    /// routed name under local DNS.
    ///
    /// [`learn`]: Router::learn
    pub fn learns(&self, name: &str) -> Option<usize> {
        self.learned.as_ref()?;
        let i = routes::first_for_lookup(&self.config.routes, name)?;
        match self.config.routes[i].via {
            Via::Direct if !is_onion(name) => Some(i),
            Via::Chain(_) if self.fake.is_none() => Some(i),
            _ => None,
        }
    }

    /// Remembers that the system resolver answered `ip` for a name of route `route` (from
    /// [`learns`](Router::learns)); false when the table is full.
    pub fn learn(&self, ip: IpAddr, route: usize) -> bool {
        self.learned.as_ref().is_some_and(|l| l.insert(ip, route))
    }

    /// Words for route number `i` in log lines: `[[route]] 2 (match = "*.ads.example", …)`.
    pub fn describe(&self, i: usize) -> String {
        self.config.describe_route(i)
    }

    /// The chain (its `Config::chains()` index) a BIND or UDP association for `target` takes:
    /// its route's, or the default chain when its route is not a chain.
    pub fn chain_of(&self, target: &TargetAddr) -> usize {
        let route = match target {
            TargetAddr::Ip(sa) => self.route(*sa),
            TargetAddr::Domain(name, port) => self.route_name(name, *port),
        };
        match route {
            Route::Proxy(_, c) => c,
            _ => 0,
        }
    }

    /// Where a UDP datagram to `dest` goes, under the `udp` policy: `Proxy` means through the
    /// relay, and a refused destination comes back as `Blocked`.
    pub fn route_udp(&self, dest: SocketAddr) -> UdpRoute {
        match (self.route(dest), self.config.udp) {
            (Route::Direct, _) | (_, UdpMode::Direct) => UdpRoute::Direct,
            (route @ (Route::UnknownFake | Route::Block(_) | Route::DirectFake(_)), _) => {
                UdpRoute::Route(route)
            }
            (_, UdpMode::Block) => UdpRoute::Blocked,
            (route, UdpMode::Proxy) => UdpRoute::Route(route),
        }
    }

    /// Whether a listen on `bound` becomes a SOCKS BIND, given whether the process has a proxied
    /// connection open. Loopback listens never do.
    pub fn proxies_listen(&self, bound: SocketAddr, has_proxied_connection: bool) -> bool {
        let ip = match TargetAddr::Ip(bound).unmapped() {
            TargetAddr::Ip(sa) => sa.ip(),
            TargetAddr::Domain(..) => return false,
        };
        if ip.is_loopback() {
            return false;
        }
        match self.config.bind {
            BindMode::Off => false,
            BindMode::All => true,
            BindMode::Auto => has_proxied_connection,
        }
    }

    /// How `name` (not a numeric address) resolves.
    pub fn resolve(&self, name: &str) -> Resolution {
        let route = match self.config.routes.is_empty() {
            true => None,
            false => {
                routes::first_for_lookup(&self.config.routes, name).map(|i| (i, self.config.routes[i].via))
            }
        };
        let Some(fake) = &self.fake else {
            return match route {
                Some((i, Via::Block)) if self.hosts.lookup(name).is_empty() => Resolution::Blocked(i),
                _ => Resolution::System,
            };
        };
        if !is_host_name(name) {
            // What libc says of `0.1.1.~1` or `::1::2`: neither an address nor a name.
            return Resolution::Fail(FakeDnsError::BadName);
        }
        let local = self.hosts.lookup(name);
        if !local.is_empty() {
            return Resolution::Local(local);
        }
        match route {
            Some((i, Via::Block)) => return Resolution::Blocked(i),
            // Split DNS: a name on a direct route is the system resolver's (never a `.onion`).
            Some((_, Via::Direct)) if !is_onion(name) => return Resolution::System,
            _ => {}
        }
        match fake.insert(name) {
            Ok(idx) => {
                let (v4, v6) = (IpAddr::V4(fake.ipv4(idx)), IpAddr::V6(fake.ipv6(idx)));
                Resolution::Fake { v4, v6, unspec: if self.prefer_v6 { v6 } else { v4 } }
            }
            Err(e) => Resolution::Fail(e),
        }
    }

    /// The name behind an address for a reverse lookup under remote DNS: a fake address's name,
    /// or the hosts file's; `None` when there is none (the system resolver is never asked).
    /// Under local DNS it is always `None`, and the caller asks libc.
    pub fn reverse(&self, ip: IpAddr) -> Option<String> {
        let fake = self.fake.as_ref()?;
        if let Some(name) = fake.name_of(ip) {
            return Some(name.to_owned());
        }
        self.hosts.name_of(ip).map(str::to_owned)
    }

    /// True when `ip` is one of this process's fake addresses (handed out or not).
    pub fn is_fake(&self, ip: IpAddr) -> bool {
        self.fake.as_ref().is_some_and(|f| f.is_fake(ip))
    }
}

/// True for a Tor onion service's name: it only ever resolves remotely.
pub fn is_onion(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    name.len() > 6 && name[name.len() - 6..].eq_ignore_ascii_case(".onion")
}

/// True for what can be a host name: letters, digits, `-` and `_` in dot-separated labels (an
/// optional final dot). Strings that look like a broken address (`1+.1.1.1`, `::1q`) are not.
pub fn is_host_name(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    !name.is_empty()
        && name.len() <= crate::fakedns::MAX_NAME
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router(dns: &str) -> Router {
        let config =
            Config::parse(&format!("dns = \"{dns}\"\n[[proxy]]\nurl = \"socks5://192.0.2.1:1080\""), "t")
                .unwrap();
        Router::new(config, Hosts::parse("192.0.2.50 build.lan\n"), 64).unwrap()
    }

    #[test]
    fn names_become_fake_addresses_that_route_back_to_the_name() {
        let r = router("remote");
        let Resolution::Fake { v4, v6, unspec } = r.resolve("Example.org") else { panic!() };
        assert_eq!(unspec, v4);
        assert_eq!(
            r.route(SocketAddr::new(v4, 443)),
            Route::Proxy(TargetAddr::Domain("example.org".into(), 443), 0)
        );
        assert_eq!(
            r.route(SocketAddr::new(v6, 80)),
            Route::Proxy(TargetAddr::Domain("example.org".into(), 80), 0)
        );
        assert_eq!(r.reverse(v4).as_deref(), Some("example.org"));
        assert_eq!(r.route("240.0.0.200:80".parse().unwrap()), Route::UnknownFake);
    }

    #[test]
    fn strings_that_are_neither_an_address_nor_a_name_do_not_resolve() {
        let r = router("remote");
        for bad in [
            "0.1.1.~1",
            "1+.1.1.1",
            "::1q",
            "::1::2",
            "1:1:1:1:1:1:1:1:1",
            "a..b",
            "",
            "x y",
            "%lo",
            "-1",
            "a-.b",
        ] {
            assert_eq!(r.resolve(bad), Resolution::Fail(FakeDnsError::BadName), "{bad:?}");
        }
        for good in ["example.org", "example.org.", "_srv.example", "x-1.test", "localhost"] {
            assert!(!matches!(r.resolve(good), Resolution::Fail(_)), "{good:?}");
        }
    }

    #[test]
    fn the_unspecified_address_means_this_host_and_stays_local() {
        let r = router("remote");
        for dest in ["0.0.0.0:80", "[::]:80", "[::ffff:0.0.0.0]:80"] {
            assert_eq!(r.route(dest.parse().unwrap()), Route::Direct, "{dest}");
        }
        assert_eq!(r.route_udp("0.0.0.0:53".parse().unwrap()), UdpRoute::Direct);
    }

    #[test]
    fn ipv6_only_proxies_get_ipv6_fake_addresses_for_any_family() {
        let config = Config::parse("[[proxy]]\nurl = \"socks5://[2001:db8::1]:1080\"", "t").unwrap();
        let r = Router::new(config, Hosts::default(), 8).unwrap();
        let Resolution::Fake { v6, unspec, .. } = r.resolve("example.org") else { panic!() };
        assert_eq!(unspec, v6);
    }

    #[test]
    fn hosts_file_and_localhost_resolve_locally() {
        let r = router("remote");
        assert_eq!(r.resolve("build.lan"), Resolution::Local(vec!["192.0.2.50".parse().unwrap()]));
        assert!(matches!(r.resolve("localhost"), Resolution::Local(_)));
        assert_eq!(r.reverse("192.0.2.50".parse().unwrap()).as_deref(), Some("build.lan"));
        assert_eq!(r.reverse("192.0.2.51".parse().unwrap()), None);
    }

    #[test]
    fn direct_destinations_bypass_and_others_are_proxied() {
        let r = router("remote");
        assert_eq!(r.route("127.0.0.1:80".parse().unwrap()), Route::Direct);
        assert_eq!(r.route("[::ffff:127.0.0.1]:80".parse().unwrap()), Route::Direct);
        assert_eq!(
            r.route("[::ffff:192.0.2.9]:80".parse().unwrap()),
            Route::Proxy(TargetAddr::Ip("192.0.2.9:80".parse().unwrap()), 0)
        );
    }

    #[test]
    fn direct_rules_route_as_the_config_says() {
        let text = "direct = [\"10.0.0.0/8\", \"192.0.2.0/24:22\", \"[fd00::/8]:443\"]\n[[proxy]]\nurl = \"socks5://192.0.2.1:1080\"";
        let config = Config::parse(text, "t").unwrap();
        let r = Router::new(config.clone(), Hosts::default(), 8).unwrap();
        for dest in [
            "10.1.2.3:80",
            "[::ffff:10.1.2.3]:80",
            "192.0.2.9:22",
            "192.0.2.9:23",
            "[fd00::1]:443",
            "[fd00::1]:80",
            "127.0.0.1:80",
        ] {
            let dest: SocketAddr = dest.parse().unwrap();
            assert_eq!(r.is_direct(&dest), config.is_direct(&dest), "{dest}");
            assert_eq!(r.route(dest) == Route::Direct, config.is_direct(&dest), "{dest}");
        }
        assert!(r.is_direct(&"192.0.2.9:22".parse().unwrap()));
        assert!(!r.is_direct(&"127.0.0.1:80".parse().unwrap()), "the list replaces the default");
    }

    #[test]
    fn udp_follows_its_policy() {
        let r = router("remote");
        let far: SocketAddr = "192.0.2.9:53".parse().unwrap();
        assert_eq!(r.route_udp(far), UdpRoute::Route(Route::Proxy(TargetAddr::Ip(far), 0)));
        assert_eq!(r.route_udp("127.0.0.1:53".parse().unwrap()), UdpRoute::Direct);
        for (mode, want) in [("block", UdpRoute::Blocked), ("direct", UdpRoute::Direct)] {
            let config = Config::parse(&format!("udp = \"{mode}\""), "t").unwrap();
            let r = Router::new(config, Hosts::default(), 8).unwrap();
            assert_eq!(r.route_udp(far), want);
        }
    }

    #[test]
    fn listens_follow_the_bind_policy_and_never_loopback() {
        let any: SocketAddr = "0.0.0.0:0".parse().unwrap();
        let lo: SocketAddr = "127.0.0.1:21".parse().unwrap();
        let r = router("remote");
        assert!(r.proxies_listen(any, true));
        assert!(!r.proxies_listen(any, false), "auto needs a proxied connection");
        assert!(!r.proxies_listen(lo, true));
        assert!(!r.proxies_listen("[::ffff:127.0.0.1]:21".parse().unwrap(), true));
        for (mode, with, without) in [("all", true, true), ("off", false, false)] {
            let r =
                Router::new(Config::parse(&format!("bind = \"{mode}\""), "t").unwrap(), Hosts::default(), 8)
                    .unwrap();
            assert_eq!(
                (r.proxies_listen(any, true), r.proxies_listen(any, false)),
                (with, without),
                "{mode}"
            );
            assert!(!r.proxies_listen(lo, true));
        }
    }

    fn routed(dns: &str) -> Router {
        let text = format!(
            r#"dns = "{dns}"
[[proxy]]
url = "socks5://192.0.2.1:1080"
[chains.corp]
proxies = ["socks5://192.0.2.2:1080"]
[[route]]
match = ["*.corp.example", "10.0.0.0/8", ":2222"]
via = "corp"
[[route]]
match = [".lan", "x.onion"]
via = "direct"
[[route]]
match = ["*.ads.example", "203.0.113.0/24", "*.irc.example:6667"]
via = "block"
"#
        );
        Router::new(Config::parse(&text, "t").unwrap(), Hosts::default(), 64).unwrap()
    }

    #[test]
    fn routes_choose_the_chain_by_name_address_and_port() {
        let r = routed("remote");
        let Resolution::Fake { v4, .. } = r.resolve("git.corp.example") else { panic!() };
        assert_eq!(
            r.route(SocketAddr::new(v4, 22)),
            Route::Proxy(TargetAddr::Domain("git.corp.example".into(), 22), 1)
        );
        let ten: SocketAddr = "10.1.2.3:80".parse().unwrap();
        assert_eq!(r.route(ten), Route::Proxy(TargetAddr::Ip(ten), 1));
        let other: SocketAddr = "198.51.100.1:2222".parse().unwrap();
        assert_eq!(r.route(other), Route::Proxy(TargetAddr::Ip(other), 1), "by port");
        let Resolution::Fake { v4, .. } = r.resolve("www.example.org") else { panic!() };
        assert_eq!(
            r.route(SocketAddr::new(v4, 2222)),
            Route::Proxy(TargetAddr::Domain("www.example.org".into(), 2222), 1)
        );
        assert_eq!(
            r.route(SocketAddr::new(v4, 80)),
            Route::Proxy(TargetAddr::Domain("www.example.org".into(), 80), 0)
        );
        assert_eq!(r.route("203.0.113.9:80".parse().unwrap()), Route::Block(2));
        assert_eq!(r.route_udp("203.0.113.9:53".parse().unwrap()), UdpRoute::Route(Route::Block(2)));
        assert_eq!(r.chain_of(&TargetAddr::Ip(ten)), 1);
        assert_eq!(r.chain_of(&TargetAddr::Domain("a.example".into(), 1)), 0);
    }

    #[test]
    fn split_dns_blocks_and_learned_addresses() {
        let r = routed("remote");
        assert_eq!(r.resolve("printer.lan"), Resolution::System);
        assert_eq!(r.resolve("x.ads.example"), Resolution::Blocked(2));
        assert!(
            matches!(r.resolve("chat.irc.example"), Resolution::Fake { .. }),
            "a port pattern blocks at connect"
        );
        assert!(matches!(r.resolve("x.onion"), Resolution::Fake { .. }), ".onion never resolves here");
        let Resolution::Fake { v4, .. } = r.resolve("chat.irc.example") else { panic!() };
        assert_eq!(r.route(SocketAddr::new(v4, 6667)), Route::Block(2));
        let Resolution::Fake { v4, .. } = r.resolve("x.onion") else { panic!() };
        assert_eq!(
            r.route(SocketAddr::new(v4, 80)),
            Route::Proxy(TargetAddr::Domain("x.onion".into(), 80), 0)
        );
        // The system's answer for printer.lan is learned: connections to it go direct.
        let printer: SocketAddr = "198.51.100.7:631".parse().unwrap();
        assert_eq!(r.route(printer), Route::Proxy(TargetAddr::Ip(printer), 0));
        assert_eq!(r.learns("printer.lan"), Some(1));
        assert_eq!(r.learns("www.example.org"), None);
        assert_eq!(r.learns("x.onion"), None);
        assert!(r.learn(printer.ip(), 1));
        assert_eq!(r.route(printer), Route::Direct);
        // An earlier route still wins over a learned one.
        assert!(r.learn("198.51.100.8".parse().unwrap(), 1));
        assert_eq!(
            r.route("198.51.100.8:2222".parse().unwrap()),
            Route::Proxy(TargetAddr::Ip("198.51.100.8:2222".parse().unwrap()), 1)
        );
    }

    #[test]
    fn local_dns_learns_every_routed_name_and_blocks_names() {
        let r = routed("local");
        assert_eq!(r.resolve("git.corp.example"), Resolution::System);
        assert_eq!(r.resolve("x.ads.example"), Resolution::Blocked(2));
        assert_eq!(r.learns("git.corp.example"), Some(0));
        let a: SocketAddr = "198.51.100.9:443".parse().unwrap();
        assert!(r.learn(a.ip(), 0));
        assert_eq!(r.route(a), Route::Proxy(TargetAddr::Ip(a), 1));
    }

    #[test]
    fn local_dns_uses_the_system_resolver() {
        let r = router("local");
        assert_eq!(r.resolve("example.org"), Resolution::System);
        assert!(!r.remote_dns());
        assert_eq!(
            r.route("240.0.0.1:80".parse().unwrap()),
            Route::Proxy(TargetAddr::Ip("240.0.0.1:80".parse().unwrap()), 0)
        );
    }
}
