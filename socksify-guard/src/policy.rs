//! Where each trapped connection or datagram goes. Pure decisions over the configuration, the
//! proxies' own addresses, the system's nameservers and the session's relays: no system call
//! is made here, so every rule is unit-tested.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::Mutex;

use socksify_core::router::{Route, Router, UdpRoute};
use socksify_core::{BindMode, Host, TargetAddr};

use crate::addr::unmapped;

/// What to do with a TCP connect (or TCP Fast Open send).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TcpPlan {
    /// Connect as asked: loopback, this host, a direct rule, or a proxy of the chain.
    Direct,
    /// A query to the system's nameserver `usize`: to socksify's stub instead.
    Stub(usize),
    /// Through chain `.1` (the supervisor's index), to this target (a name for a fake address).
    Chain(TargetAddr, usize),
    /// Refused with this errno; the reason goes to the log.
    Refuse(i32, String),
}

/// What to do with a UDP connect or datagram.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UdpPlan {
    Direct,
    Stub(usize),
    Refuse(i32, String),
}

pub struct Policy {
    pub router: Router,
    /// Every proxy of the chain (names resolved now), as the library connects to them.
    pub hops: Vec<SocketAddr>,
    /// The system's nameservers (resolv.conf), which programs query themselves.
    pub nameservers: Vec<IpAddr>,
    /// UDP relays of associations the guard opened (for the library): datagrams to them go
    /// through the proxy's relay, so they are let through.
    relays: Mutex<HashSet<SocketAddr>>,
}

impl Policy {
    pub fn new(router: Router, nameservers: Vec<IpAddr>) -> Policy {
        let mut hops = Vec::new();
        for p in router.config().all_proxies() {
            match &p.host {
                Host::Ip(ip) => hops.push(SocketAddr::new(*ip, p.port)),
                Host::Name(name) => {
                    if let Ok(addrs) = (name.as_str(), p.port).to_socket_addrs() {
                        hops.extend(addrs.map(unmapped));
                    }
                }
            }
        }
        Policy { router, hops, nameservers, relays: Mutex::new(HashSet::new()) }
    }

    /// Remembers the relay of a UDP association the guard made.
    pub fn add_relay(&self, relay: SocketAddr) {
        let mut r = self.relays.lock().unwrap_or_else(|p| p.into_inner());
        if r.len() >= 4096 {
            r.clear();
        }
        r.insert(unmapped(relay));
    }

    /// True once the guard has opened a UDP association.
    pub fn any_relays(&self) -> bool {
        !self.relays.lock().unwrap_or_else(|p| p.into_inner()).is_empty()
    }

    pub fn is_relay(&self, addr: SocketAddr) -> bool {
        self.relays.lock().unwrap_or_else(|p| p.into_inner()).contains(&unmapped(addr))
    }

    fn remote_dns(&self) -> bool {
        self.router.remote_dns()
    }

    /// The system nameserver `dest` is a query to, if it is one and remote DNS answers it.
    fn nameserver(&self, dest: SocketAddr) -> Option<usize> {
        if dest.port() != 53 || !self.remote_dns() {
            return None;
        }
        self.nameservers.iter().position(|ns| *ns == dest.ip())
    }

    pub fn tcp(&self, dest: SocketAddr) -> TcpPlan {
        let dest = unmapped(dest);
        if dest.ip().is_unspecified() {
            return TcpPlan::Direct; // "this host", to the kernel
        }
        if let Some(i) = self.nameserver(dest) {
            return TcpPlan::Stub(i);
        }
        if self.hops.contains(&dest) {
            return TcpPlan::Direct;
        }
        match self.router.route(dest) {
            Route::Direct => TcpPlan::Direct,
            Route::Proxy(target, chain) => TcpPlan::Chain(target, chain),
            Route::Block(i) => TcpPlan::Refuse(
                libc::ECONNREFUSED,
                format!("connect to {dest} refused by {}", self.router.describe(i)),
            ),
            Route::DirectFake(name) => TcpPlan::Refuse(
                libc::EHOSTUNREACH,
                format!("connect to {dest} ({name}) failed: a name on a direct route is resolved by the system, not given a fake address"),
            ),
            Route::UnknownFake => TcpPlan::Refuse(
                libc::EHOSTUNREACH,
                format!(
                    "connect to {dest} failed: a fake address that was never handed out (no name to send)"
                ),
            ),
        }
    }

    pub fn udp(&self, dest: SocketAddr) -> UdpPlan {
        let dest = unmapped(dest);
        if dest.ip().is_unspecified() {
            return UdpPlan::Direct;
        }
        if let Some(i) = self.nameserver(dest) {
            return UdpPlan::Stub(i);
        }
        if self.is_relay(dest) {
            return UdpPlan::Direct; // datagrams to a proxy's relay (the library's)
        }
        if !self.remote_dns() && dest.port() == 53 && self.nameservers.contains(&dest.ip()) {
            return UdpPlan::Direct; // dns = "local": the system resolver answers
        }
        match self.router.route_udp(dest) {
            UdpRoute::Direct => UdpPlan::Direct,
            UdpRoute::Blocked => {
                UdpPlan::Refuse(libc::ENETUNREACH, format!("UDP to {dest} refused: udp = \"block\""))
            }
            UdpRoute::Route(Route::Block(i)) => UdpPlan::Refuse(
                libc::ECONNREFUSED,
                format!("UDP to {dest} refused by {}", self.router.describe(i)),
            ),
            UdpRoute::Route(Route::UnknownFake | Route::DirectFake(_)) => UdpPlan::Refuse(
                libc::EHOSTUNREACH,
                format!("UDP to {dest} failed: a fake address that was never handed out"),
            ),
            UdpRoute::Route(_) => UdpPlan::Refuse(
                libc::ENETUNREACH,
                format!(
                    "UDP to {dest} refused: only programs that run with socksify's library can use a \
                     proxy's UDP relay (this one makes its own system calls); DNS queries are answered by socksify"
                ),
            ),
        }
    }

    /// Whether a listen on `bound` becomes a SOCKS BIND, given whether the process has a
    /// connection the guard proxied.
    pub fn binds(&self, bound: SocketAddr, has_proxied: bool) -> bool {
        let bound = unmapped(bound);
        if bound.ip().is_loopback() {
            return false;
        }
        match self.router.config().bind {
            BindMode::Off => false,
            BindMode::All => true,
            BindMode::Auto => has_proxied,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use socksify_core::hosts::Hosts;
    use socksify_core::router::Resolution;
    use socksify_core::Config;

    fn policy(extra: &str) -> Policy {
        let config = Config::parse(
            &format!("{extra}\n[[proxy]]\nurl = \"socks5://192.0.2.1:1080\"\n[[proxy]]\nurl = \"socks5://[2001:db8::7]:1081\"\n"),
            "t",
        )
        .unwrap();
        let router = Router::new(config, Hosts::default(), 64).unwrap();
        Policy::new(router, vec!["10.0.0.53".parse().unwrap(), "127.0.0.53".parse().unwrap()])
    }

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn tcp_to_the_proxies_loopback_and_this_host_goes_as_asked() {
        let p = policy("");
        assert_eq!(p.tcp(sa("192.0.2.1:1080")), TcpPlan::Direct, "a hop");
        assert_eq!(p.tcp(sa("[::ffff:192.0.2.1]:1080")), TcpPlan::Direct, "a hop, v4-mapped");
        assert_eq!(p.tcp(sa("[2001:db8::7]:1081")), TcpPlan::Direct);
        assert_eq!(p.tcp(sa("127.0.0.1:8080")), TcpPlan::Direct);
        assert_eq!(p.tcp(sa("0.0.0.0:8080")), TcpPlan::Direct, "this host");
        assert_eq!(p.tcp(sa("[::]:8080")), TcpPlan::Direct);
        assert_eq!(p.tcp(sa("[::ffff:0.0.0.0]:8080")), TcpPlan::Direct);
    }

    #[test]
    fn tcp_elsewhere_takes_the_chain_and_fake_addresses_go_by_name() {
        let p = policy("");
        assert_eq!(
            p.tcp(sa("192.0.2.1:80")),
            TcpPlan::Chain(TargetAddr::Ip(sa("192.0.2.1:80")), 0),
            "not the hop's port"
        );
        assert_eq!(p.tcp(sa("198.51.100.7:443")), TcpPlan::Chain(TargetAddr::Ip(sa("198.51.100.7:443")), 0));
        let Resolution::Fake { v4, .. } = p.router.resolve("example.org") else { panic!() };
        assert_eq!(
            p.tcp(SocketAddr::new(v4, 443)),
            TcpPlan::Chain(TargetAddr::Domain("example.org".into(), 443), 0)
        );
        assert!(matches!(p.tcp(sa("240.0.0.99:1")), TcpPlan::Refuse(libc::EHOSTUNREACH, _)));
    }

    #[test]
    fn queries_to_the_system_nameservers_go_to_the_stub() {
        let p = policy("");
        assert_eq!(p.tcp(sa("10.0.0.53:53")), TcpPlan::Stub(0));
        assert_eq!(p.udp(sa("10.0.0.53:53")), UdpPlan::Stub(0));
        assert_eq!(p.udp(sa("127.0.0.53:53")), UdpPlan::Stub(1), "a loopback resolver too");
        assert!(matches!(p.udp(sa("10.0.0.53:5353")), UdpPlan::Refuse(libc::ENETUNREACH, _)));
        assert!(matches!(p.udp(sa("8.8.8.8:53")), UdpPlan::Refuse(..)), "not the system's: no answer");
    }

    #[test]
    fn local_dns_lets_queries_reach_the_system_resolver() {
        let p = policy("dns = \"local\"");
        assert_eq!(p.udp(sa("10.0.0.53:53")), UdpPlan::Direct);
        assert_eq!(p.tcp(sa("127.0.0.53:53")), TcpPlan::Direct);
        assert!(
            matches!(p.tcp(sa("10.0.0.53:53")), TcpPlan::Chain(..)),
            "TCP to it is an ordinary connection"
        );
    }

    #[test]
    fn udp_goes_to_registered_relays_and_loopback_only() {
        let config = Config::parse("[[proxy]]\nurl = \"socks5://192.0.2.1:1080\"\n", "t").unwrap();
        let router = Router::new(config, Hosts::default(), 8).unwrap();
        let p = Policy::new(router, vec![]);
        assert!(matches!(p.udp(sa("192.0.2.1:40000")), UdpPlan::Refuse(..)));
        p.add_relay(sa("192.0.2.1:40000"));
        assert_eq!(p.udp(sa("192.0.2.1:40000")), UdpPlan::Direct);
        assert_eq!(p.udp(sa("[::ffff:192.0.2.1]:40000")), UdpPlan::Direct);
        assert!(matches!(p.udp(sa("192.0.2.1:7")), UdpPlan::Refuse(..)), "the proxy's host, not its relay");
        assert_eq!(p.udp(sa("127.0.0.1:7")), UdpPlan::Direct);
        assert_eq!(p.udp(sa("0.0.0.0:7")), UdpPlan::Direct);
        let p = policy("udp = \"block\"");
        assert!(matches!(p.udp(sa("198.51.100.1:9")), UdpPlan::Refuse(libc::ENETUNREACH, _)));
        let p = policy("udp = \"direct\"");
        assert_eq!(p.udp(sa("198.51.100.1:9")), UdpPlan::Direct);
    }

    #[test]
    fn listens_bind_as_the_policy_says() {
        let p = policy("");
        assert!(p.binds(sa("0.0.0.0:0"), true));
        assert!(!p.binds(sa("0.0.0.0:0"), false));
        assert!(!p.binds(sa("127.0.0.1:21"), true));
        assert!(policy("bind = \"all\"").binds(sa("0.0.0.0:0"), false));
        assert!(!policy("bind = \"off\"").binds(sa("0.0.0.0:0"), true));
    }
}
