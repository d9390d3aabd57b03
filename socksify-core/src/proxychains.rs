//! proxychains-ng's configuration format (proxychains.conf), read into the same `Config`:
//! people arriving from proxychains keep their file. What socksify does not do is refused with
//! one clear line, never ignored in silence.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use ipnet::{IpNet, Ipv4Net};

use crate::chain::ChainMode;
use crate::config::{Config, ConfigError, DirectRule, DnsMode};
use crate::proxy::{Credentials, Host, Proxy, ProxyKind};
use crate::routes::{Pattern, Rewrite, Route, Via};

/// True when `text` is a proxychains.conf rather than TOML: it has a `[ProxyList]` section.
pub fn looks_like(text: &str) -> bool {
    text.lines().any(|l| l.trim().eq_ignore_ascii_case("[proxylist]"))
}

/// Parses a proxychains.conf. Without `proxy_dns` names resolve locally, as in proxychains; the
/// default `direct` list (loopback) is kept and `localnet` lines add to it.
pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
    let mut c = Config { dns: DnsMode::Local, ..Config::default() };
    let mut in_list = false;
    for (n, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let err = |key: &str, message: String| ConfigError {
            origin: origin.to_owned(),
            line: Some(n + 1),
            key: Some(key.to_owned()),
            message,
        };
        if line.eq_ignore_ascii_case("[proxylist]") {
            in_list = true;
            continue;
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        if in_list {
            c.proxies.push(parse_proxy(&words).map_err(|m| err(words[0], m))?);
            continue;
        }
        let (key, value) = match line.split_once('=') {
            Some((k, v)) => (k.trim(), Some(v.trim())),
            None => (words[0], words.get(1).copied()),
        };
        let number = |v: Option<&str>| -> Result<u64, ConfigError> {
            v.and_then(|v| v.parse::<u64>().ok()).ok_or_else(|| err(key, "expected a number".to_owned()))
        };
        match key {
            "strict_chain" => c.chain = ChainMode::Strict,
            "dynamic_chain" => c.chain = ChainMode::Dynamic,
            "random_chain" => c.chain = ChainMode::Random,
            "round_robin_chain" => c.chain = ChainMode::RoundRobin,
            "chain_len" => c.chain_len = number(value)?.max(1) as usize,
            "proxy_dns" | "proxy_dns_old" | "proxy_dns_daemon" => c.dns = DnsMode::Remote,
            "quiet_mode" => c.quiet = true,
            "remote_dns_subnet" => {
                let octet = number(value)?;
                let octet = u8::try_from(octet).map_err(|_| err(key, "expected 0 to 255".to_owned()))?;
                c.fake_ipv4_range = Ipv4Net::new(Ipv4Addr::new(octet, 0, 0, 0), 8).expect("a /8");
            }
            "tcp_read_time_out" => c.timeouts.read = Duration::from_millis(number(value)?.max(1)),
            "tcp_connect_time_out" => c.timeouts.connect = Duration::from_millis(number(value)?.max(1)),
            "localnet" => {
                let rule = value.and_then(parse_localnet).ok_or_else(|| {
                    err(key, "expected ADDRESS[:PORT]/NETMASK or IPv6 ADDRESS/PREFIX, e.g. 192.168.0.0/255.255.0.0".into())
                })?;
                c.direct.push(rule);
            }
            "dnat" => {
                let route = parse_dnat(&words[1..].join(" ")).ok_or_else(|| {
                    err(key, "expected `dnat ADDRESS[:PORT] NEW_ADDRESS[:PORT]`, e.g. dnat 1.1.1.1:53 1.1.1.2:5353".into())
                })?;
                c.routes.push(route);
            }
            other => return Err(err(other, format!("unknown proxychains directive `{other}`"))),
        }
    }
    if c.proxies.is_empty() {
        return Err(ConfigError {
            origin: origin.to_owned(),
            line: None,
            key: Some("[ProxyList]".to_owned()),
            message: "no proxy listed".to_owned(),
        });
    }
    // chain_len only matters to random and round-robin chains; proxychains clamps it.
    c.chain_len = c.chain_len.min(c.proxies.len());
    // proxychains-ng tries the dnat lines with a port before those without, in file order.
    c.routes.sort_by_key(|r| r.patterns.iter().all(|p| p.to_string().parse::<std::net::Ipv4Addr>().is_ok()));
    Ok(c)
}

/// `dnat ORIG[:PORT] NEW[:PORT]` (IPv4, as proxychains-ng): connections to ORIG (at PORT, or
/// any port) take the default chain to NEW (at its PORT, or the program's): a route with `to`.
fn parse_dnat(value: &str) -> Option<Route> {
    let words: Vec<&str> = value.split_whitespace().collect();
    let [orig, new] = words[..] else { return None };
    let (ip, port) = match orig.split_once(':') {
        Some((ip, port)) => (ip, Some(port)),
        None => (orig, None),
    };
    let ip: Ipv4Addr = ip.parse().ok()?;
    let pattern = match port {
        Some(p) => Pattern::parse(&format!("{ip}:{}", p.parse::<u16>().ok().filter(|&p| p != 0)?))?,
        None => Pattern::parse(&ip.to_string())?,
    };
    let to = Rewrite::parse(new).filter(|t| matches!(t.host, Host::Ip(IpAddr::V4(_))))?;
    Some(Route { patterns: vec![pattern], via: Via::Chain(0), to: Some(to) })
}

/// `type host port [user pass]`.
fn parse_proxy(words: &[&str]) -> Result<Proxy, String> {
    let (kind, scheme) = match words[0].to_ascii_lowercase().as_str() {
        "socks4" => (ProxyKind::Socks4a, "socks4a"),
        "socks5" => (ProxyKind::Socks5, "socks5"),
        "http" => (ProxyKind::Http, "http"),
        "raw" => return Err("raw proxies are not supported by socksify; use socks4, socks5 or http".into()),
        other => return Err(format!("unknown proxy type `{other}`: use socks4, socks5 or http")),
    };
    if words.len() != 3 && words.len() != 5 {
        return Err("expected `type host port [user pass]`".into());
    }
    let host = match words[1].parse::<IpAddr>() {
        Ok(ip) => Host::Ip(ip),
        Err(_) => Host::Name(words[1].to_ascii_lowercase()),
    };
    let port = words[2]
        .parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .ok_or("the port must be a number from 1 to 65535")?;
    let creds = (words.len() == 5).then(|| Credentials {
        user: words[3].to_owned(),
        pass: if kind == ProxyKind::Socks4a { String::new() } else { words[4].to_owned() },
    });
    Ok(Proxy { kind, scheme, host, port, creds, gssapi: None })
}

/// `192.168.0.0/255.255.0.0`, `192.168.0.0:80/255.255.0.0`, `::1/128`.
fn parse_localnet(v: &str) -> Option<DirectRule> {
    let (addr, mask) = v.split_once('/')?;
    if addr.contains("::") || addr.matches(':').count() > 1 {
        let net: IpNet = format!("{addr}/{mask}").parse().ok()?;
        return Some(DirectRule { net: net.trunc(), port: None });
    }
    let (ip, port) = match addr.split_once(':') {
        Some((ip, port)) => (ip, Some(port.parse::<u16>().ok()?)),
        None => (addr, None),
    };
    let ip: Ipv4Addr = ip.parse().ok()?;
    let prefix = match mask.parse::<Ipv4Addr>() {
        Ok(m) => {
            let bits = u32::from(m);
            if bits.leading_ones() + bits.trailing_zeros() != 32 {
                return None;
            }
            bits.leading_ones() as u8
        }
        Err(_) => mask.parse::<u8>().ok().filter(|p| *p <= 32)?,
    };
    Some(DirectRule { net: IpNet::V4(Ipv4Net::new(ip, prefix).ok()?.trunc()), port })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "# proxychains.conf  VER 4.x
dynamic_chain
#strict_chain
chain_len = 2
quiet_mode
proxy_dns
remote_dns_subnet 224
tcp_read_time_out 15000
tcp_connect_time_out 8000
localnet 127.0.0.0/255.0.0.0
localnet 10.0.0.0:22/255.0.0.0
localnet ::1/128
[ProxyList]
socks5  192.0.2.1 1080 alice s3cret
socks4  relay.example 9050
http    [2001:db8::1] 8080
";

    #[test]
    fn reads_every_supported_directive() {
        let sample = SAMPLE.replace("[2001:db8::1]", "2001:db8::1");
        assert!(looks_like(&sample));
        let c = parse(&sample, "proxychains.conf").unwrap();
        assert_eq!(c.chain, ChainMode::Dynamic);
        assert_eq!(c.chain_len, 2);
        assert!(c.quiet);
        assert_eq!(c.dns, DnsMode::Remote);
        assert_eq!(c.fake_ipv4_range.to_string(), "224.0.0.0/8");
        assert_eq!(c.timeouts.read, Duration::from_millis(15000));
        assert!(c.is_direct(&"10.1.2.3:22".parse().unwrap()));
        assert!(!c.is_direct(&"10.1.2.3:80".parse().unwrap()));
        assert!(c.is_direct(&"[::1]:9".parse().unwrap()));
        assert_eq!(c.proxies.len(), 3);
        assert_eq!(c.proxies[0].creds.as_ref().unwrap().pass, "s3cret");
        assert_eq!(c.proxies[1].kind, ProxyKind::Socks4a);
        assert_eq!(c.proxies[2].kind, ProxyKind::Http);
        // and to TOML and back
        assert_eq!(Config::parse(&c.to_toml(), "t").unwrap(), c);
    }

    #[test]
    fn dnat_lines_are_routes_that_rewrite_the_destination() {
        let c = parse(
            "dnat 1.1.1.1:53 1.1.1.2:5353\ndnat 10.0.0.1 10.0.0.2\n[ProxyList]\nsocks5 192.0.2.1 1080\n",
            "p",
        )
        .unwrap();
        assert_eq!(c.routes.len(), 2);
        let r = crate::router::Router::new(c.clone(), crate::hosts::Hosts::default(), 16).unwrap();
        let to = |a: &str| match r.route(a.parse().unwrap()) {
            crate::router::Route::Proxy(t, 0) => t.to_string(),
            other => format!("{other:?}"),
        };
        assert_eq!(to("1.1.1.1:53"), "1.1.1.2:5353");
        assert_eq!(to("1.1.1.1:80"), "1.1.1.1:80", "another port is not rewritten");
        assert_eq!(to("10.0.0.1:443"), "10.0.0.2:443", "no new port: the program's");
        assert_eq!(Config::parse(&c.to_toml(), "t").unwrap(), c, "to TOML and back");
    }

    #[test]
    fn without_proxy_dns_names_resolve_locally() {
        let c = parse("[ProxyList]\nsocks5 192.0.2.1 1080\n", "p").unwrap();
        assert_eq!(c.dns, DnsMode::Local);
    }

    #[test]
    fn unsupported_things_are_named_with_their_line() {
        for (text, line, needle) in [
            (
                "dnat 1.1.1.1\n[ProxyList]\nsocks5 h 1\n",
                1,
                "expected `dnat ADDRESS[:PORT] NEW_ADDRESS[:PORT]`",
            ),
            ("dnat 1.1.1.1 host.example\n[ProxyList]\nsocks5 h 1\n", 1, "expected `dnat"),
            ("[ProxyList]\nraw 1.2.3.4 80\n", 2, "raw proxies are not supported"),
            (
                "strict_chain\nfancy_mode\n[ProxyList]\nsocks5 h 1\n",
                2,
                "unknown proxychains directive `fancy_mode`",
            ),
            ("localnet 10.0.0.0/255.0.255.0\n[ProxyList]\nsocks5 h 1\n", 1, "NETMASK"),
            ("[ProxyList]\nsocks5 h\n", 2, "type host port"),
            ("[ProxyList]\n", 0, "no proxy listed"),
        ] {
            let e = parse(text, "p.conf").unwrap_err();
            assert!(e.message.contains(needle), "{text:?}: {e}");
            assert_eq!(e.line.unwrap_or(0), line, "{text:?}: {e}");
        }
    }
}
