//! `socksify explain HOST[:PORT]`: what the configuration does with one destination, in words:
//! the rule that decides and why, the chain and its hops, how a name resolves, and whether
//! UDP and BIND can take that chain. By the configuration alone: nothing is connected, and
//! nothing learned at run time (addresses a direct route's names resolved to) is known.

use std::net::{IpAddr, SocketAddr};

use crate::addr::TargetAddr;
use crate::config::{Config, DnsMode, UdpMode};
use crate::hosts::Hosts;
use crate::proxy::{Proxy, ProxyKind};
use crate::routes::{self, Route, Via};

/// What decides a destination's fate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Why {
    /// 0.0.0.0 or `::`: this host.
    ThisHost,
    /// A rule of the `direct` list.
    DirectList(String),
    /// `[[route]]` number `.0` (from 0), by its pattern `.1`.
    Route(usize, String),
    /// No route matches: the default chain.
    Default,
}

/// The decision for `target` (a port of `None`: patterns with a port are not considered).
pub fn decide(config: &Config, target: &TargetAddr, port: Option<u16>) -> (Why, Via) {
    let routes: std::borrow::Cow<'_, [Route]> = match port {
        Some(_) => std::borrow::Cow::Borrowed(&config.routes),
        None => config
            .routes
            .iter()
            .map(|r| Route {
                patterns: r.patterns.iter().filter(|p| p.ports().is_none()).cloned().collect(),
                via: r.via,
                to: r.to.clone(),
            })
            .collect(),
    };
    let p = port.unwrap_or(0);
    let found = match target {
        TargetAddr::Ip(sa) => {
            let ip = match sa.ip() {
                IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
                v4 => v4,
            };
            if ip.is_unspecified() {
                return (Why::ThisHost, Via::Direct);
            }
            if let Some(rule) =
                config.direct.iter().find(|r| r.net.contains(&ip) && r.port.is_none_or(|rp| port == Some(rp)))
            {
                return (Why::DirectList(rule.to_string()), Via::Direct);
            }
            routes::first_for_addr(&routes, ip, p, None)
                .map(|i| (i, routes[i].patterns.iter().find(|pat| pat.matches_addr(ip, p)).cloned()))
        }
        TargetAddr::Domain(name, _) => routes::first_for_name(&routes, name, p)
            .map(|i| (i, routes[i].patterns.iter().find(|pat| pat.matches_name(name, p)).cloned())),
    };
    match found {
        Some((i, pattern)) => {
            (Why::Route(i, pattern.map(|p| p.to_string()).unwrap_or_default()), config.routes[i].via)
        }
        None => (Why::Default, Via::Chain(0)),
    }
}

fn hops(proxies: &[Proxy]) -> String {
    proxies.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(" -> ")
}

/// The explanation of `dest` (`HOST`, `HOST:PORT`, `[v6]:PORT`, an address) as lines.
pub fn explain(config: &Config, hosts: &Hosts, dest: &str) -> Result<Vec<String>, String> {
    let (target, port) = match crate::proxy::parse_target(dest) {
        Ok(t) => {
            let port = t.port();
            (t, Some(port))
        }
        Err(_) => match dest.parse::<IpAddr>() {
            Ok(ip) => (TargetAddr::Ip(SocketAddr::new(ip, 0)), None),
            Err(_) if crate::router::is_host_name(dest) => (TargetAddr::Domain(dest.to_owned(), 0), None),
            Err(_) => return Err(format!("`{dest}` is not HOST, HOST:PORT, an address or [IPv6]:PORT")),
        },
    };
    let mut out = Vec::new();
    let shown = match (&target, port) {
        (TargetAddr::Domain(n, _), None) => {
            format!("{n} (a name; any port: routes with a port are not considered)")
        }
        (TargetAddr::Ip(sa), None) => {
            format!("{} (an address; any port: routes with a port are not considered)", sa.ip())
        }
        (TargetAddr::Domain(..), Some(_)) => format!("{target} (a name)"),
        (TargetAddr::Ip(_), Some(_)) => format!("{target} (an address)"),
    };
    out.push(format!("destination: {shown}"));
    let (why, via) = decide(config, &target, port);
    let describe = |i: usize| config.describe_route(i);
    out.push(match &why {
        Why::ThisHost => "rule: 0.0.0.0 and :: are this host to the kernel".to_owned(),
        Why::DirectList(rule) => format!("rule: the direct list's {rule} (checked before the routes)"),
        Why::Route(i, pattern) => format!("rule: {}, which matches by \"{pattern}\"", describe(*i)),
        Why::Default if config.routes.is_empty() => {
            "rule: no routes are configured: the default chain".to_owned()
        }
        Why::Default => {
            format!("rule: none of the {} routes matches: the default chain", config.routes.len())
        }
    });
    let chain = match via {
        Via::Direct => {
            out.push("goes: direct, not through any proxy".to_owned());
            None
        }
        Via::Block => {
            out.push("goes: nowhere: connections fail with ECONNREFUSED (and a log line)".to_owned());
            None
        }
        Via::Chain(c) => {
            let (proxies, mode, len) = match c {
                0 => (&config.proxies, config.chain, config.chain_len),
                c => {
                    let n = &config.chains[c - 1];
                    (&n.proxies, n.mode, n.chain_len)
                }
            };
            let mode = format!("{mode:?}").to_lowercase();
            if proxies.is_empty() {
                out.push(format!(
                    "goes: through chain {}, which has no proxy: connections fail (nothing goes direct)",
                    config.chain_name(c)
                ));
                None
            } else {
                let uses = match mode.as_str() {
                    "random" | "roundrobin" => format!(", {len} of them per connection"),
                    _ => String::new(),
                };
                out.push(format!(
                    "goes: through chain {} ({mode}, {} hop(s){uses}): {}",
                    config.chain_name(c),
                    proxies.len(),
                    hops(proxies)
                ));
                Some(proxies)
            }
        }
    };
    if let Why::Route(i, _) = &why {
        if let Some(to) = &config.routes[*i].to {
            out.push(format!(
                "rewritten: the chain is asked for {} instead (to = \"{to}\")",
                to.apply(port.unwrap_or(0))
            ));
        }
    }
    if let TargetAddr::Domain(name, _) = &target {
        let local = hosts.lookup(name);
        let lookup = routes::first_for_lookup(&config.routes, name).map(|i| (i, config.routes[i].via));
        out.push(match (config.dns, lookup) {
            (_, _) if !local.is_empty() => {
                let list: Vec<String> = local.iter().map(|a| a.to_string()).collect();
                format!("name: from the hosts file: {}", list.join(", "))
            }
            (_, Some((i, Via::Block))) => format!("name: no such name (blocked by [[route]] {})", i + 1),
            (DnsMode::Remote, Some((i, Via::Direct))) if !crate::router::is_onion(name) => format!(
                "name: resolved by the system resolver (split DNS: [[route]] {} is direct); connections to its addresses go direct",
                i + 1
            ),
            (DnsMode::Remote, _) => format!(
                "name: never resolved here: the program gets a fake address (from {}) and the name goes to the proxy",
                config.fake_ipv4_range
            ),
            (DnsMode::Local, Some((i, _))) => format!(
                "name: resolved by the system resolver (dns = \"local\"); connections to its addresses take [[route]] {}",
                i + 1
            ),
            (DnsMode::Local, None) => {
                "name: resolved by the system resolver (dns = \"local\"); connections go by the address".to_owned()
            }
        });
    }
    let last = chain.and_then(|p| p.last());
    out.push(match (via, config.udp, last) {
        (Via::Block, _, _) => "UDP: refused (blocked)".to_owned(),
        (Via::Direct, _, _) | (_, UdpMode::Direct, _) => "UDP: direct".to_owned(),
        (_, UdpMode::Block, _) => "UDP: refused (udp = \"block\")".to_owned(),
        (_, _, Some(p)) if p.kind == ProxyKind::Socks5 => {
            format!("UDP: possible, through {p}'s UDP ASSOCIATE (the last hop)")
        }
        (_, _, Some(p)) => format!("UDP: not possible: the last hop {p} is not SOCKS5"),
        (_, _, None) => "UDP: not possible: no proxy".to_owned(),
    });
    out.push(match (via, last) {
        (Via::Chain(_), Some(p)) if p.kind == ProxyKind::Http => {
            format!("BIND: not possible: the last hop {p} is an HTTP proxy")
        }
        (Via::Chain(_), Some(p)) => format!("BIND: possible, on {p} (the last hop)"),
        (Via::Chain(_), None) => "BIND: not possible: no proxy".to_owned(),
        _ => "BIND: not used (listens stay local)".to_owned(),
    });
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"
direct = ["127.0.0.0/8", "192.0.2.0/24:22"]
[[proxy]]
url = "socks5://10.9.0.1:1080"
[chains.corp]
proxies = ["socks4a://10.0.0.1:1080", "http://10.0.0.2:3128"]
[[route]]
match = ["*.corp.example", "10.0.0.0/8:22"]
via = "corp"
[[route]]
match = [".lan"]
via = "direct"
[[route]]
match = ["*.ads.example", ":6667"]
via = "block"
"#;

    fn explain_text(dest: &str) -> String {
        let c = Config::parse(CONFIG, "t").unwrap();
        explain(&c, &Hosts::parse("192.0.2.50 build.lan\n"), dest).unwrap().join("\n")
    }

    #[test]
    fn names_addresses_and_ports_are_explained() {
        let t = explain_text("git.corp.example:22");
        assert!(t.contains("[[route]] 1 (match = [\"*.corp.example\", \"10.0.0.0/8:22\"], via = \"corp\"), which matches by \"*.corp.example\""), "{t}");
        assert!(t.contains("through chain corp (strict, 2 hop(s))"), "{t}");
        assert!(t.contains("fake address"), "{t}");
        assert!(t.contains("UDP: not possible: the last hop"), "{t}");
        assert!(t.contains("BIND: not possible"), "{t}");

        let t = explain_text("10.1.1.1:22");
        assert!(t.contains("matches by \"10.0.0.0/8:22\""), "{t}");
        let t = explain_text("10.1.1.1:80");
        assert!(t.contains("none of the 3 routes matches: the default chain"), "{t}");
        assert!(t.contains("UDP: possible"), "{t}");
        let t = explain_text("10.1.1.1");
        assert!(t.contains("any port") && t.contains("default chain"), "{t}");

        let t = explain_text("printer.lan:631");
        assert!(t.contains("goes: direct") && t.contains("split DNS"), "{t}");
        let t = explain_text("build.lan");
        assert!(t.contains("hosts file: 192.0.2.50"), "{t}");
        let t = explain_text("x.ads.example:443");
        assert!(t.contains("ECONNREFUSED") && t.contains("no such name"), "{t}");
        let t = explain_text("192.0.2.9:22");
        assert!(t.contains("the direct list's 192.0.2.0/24:22"), "{t}");
        let t = explain_text("irc.example:6667");
        assert!(
            t.contains("[[route]] 3") && t.contains("fake address"),
            "port blocks at connect, not lookup: {t}"
        );
        let t = explain_text("0.0.0.0:80");
        assert!(t.contains("this host"), "{t}");
        let c = Config::parse(CONFIG, "t").unwrap();
        assert!(explain(&c, &Hosts::default(), "a b").is_err());
    }
}
