//! What happens to a connection or a name lookup: the decisions a preload library makes, kept
//! here so that its hooks only translate between C and these answers.

use std::net::{IpAddr, SocketAddr};

use crate::addr::TargetAddr;
use crate::config::{BindMode, Config, DnsMode, UdpMode};
use crate::directset::DirectSet;
use crate::fakedns::{FakeDns, FakeDnsError};
use crate::hosts::Hosts;

/// Where a connection to an address goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// Not proxied: the address is in `direct`.
    Direct,
    /// Through the chain, to this target (a name when the address is a fake one).
    Proxy(TargetAddr),
    /// A fake address that was never handed out: there is no name to send.
    UnknownFake,
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
}

pub struct Router {
    config: Config,
    /// `config.direct`, compiled (the config cannot change under the router).
    direct: DirectSet,
    hosts: Hosts,
    fake: Option<FakeDns>,
    prefer_v6: bool,
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
        Router { config, direct, hosts, fake, prefer_v6 }
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
    /// range inside a direct one still reaches the proxy.
    pub fn route(&self, dest: SocketAddr) -> Route {
        let dest = match TargetAddr::Ip(dest).unmapped() {
            TargetAddr::Ip(sa) => sa,
            TargetAddr::Domain(..) => unreachable!("unmapped keeps an address"),
        };
        if let Some(fake) = &self.fake {
            if fake.is_fake(dest.ip()) {
                return match fake.name_of(dest.ip()) {
                    Some(name) => Route::Proxy(TargetAddr::Domain(name.to_owned(), dest.port())),
                    None => Route::UnknownFake,
                };
            }
        }
        // 0.0.0.0 and :: mean this host to the kernel (as does ::ffff:0.0.0.0, unmapped above):
        // through a proxy they would reach the proxy's own host instead.
        if dest.ip().is_unspecified() || self.direct.contains(&dest) {
            Route::Direct
        } else {
            Route::Proxy(TargetAddr::Ip(dest))
        }
    }

    /// Where a UDP datagram to `dest` goes, under the `udp` policy: `Proxy` means through the
    /// relay, and a refused destination comes back as `Blocked`.
    pub fn route_udp(&self, dest: SocketAddr) -> UdpRoute {
        match (self.route(dest), self.config.udp) {
            (Route::Direct, _) | (_, UdpMode::Direct) => UdpRoute::Direct,
            (Route::UnknownFake, _) => UdpRoute::Route(Route::UnknownFake),
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
        let Some(fake) = &self.fake else { return Resolution::System };
        if !is_host_name(name) {
            // What libc says of `0.1.1.~1` or `::1::2`: neither an address nor a name.
            return Resolution::Fail(FakeDnsError::BadName);
        }
        let local = self.hosts.lookup(name);
        if !local.is_empty() {
            return Resolution::Local(local);
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
            Route::Proxy(TargetAddr::Domain("example.org".into(), 443))
        );
        assert_eq!(
            r.route(SocketAddr::new(v6, 80)),
            Route::Proxy(TargetAddr::Domain("example.org".into(), 80))
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
            Route::Proxy(TargetAddr::Ip("192.0.2.9:80".parse().unwrap()))
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
        assert_eq!(r.route_udp(far), UdpRoute::Route(Route::Proxy(TargetAddr::Ip(far))));
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

    #[test]
    fn local_dns_uses_the_system_resolver() {
        let r = router("local");
        assert_eq!(r.resolve("example.org"), Resolution::System);
        assert!(!r.remote_dns());
        assert_eq!(
            r.route("240.0.0.1:80".parse().unwrap()),
            Route::Proxy(TargetAddr::Ip("240.0.0.1:80".parse().unwrap()))
        );
    }
}
