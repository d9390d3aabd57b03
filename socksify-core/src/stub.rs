//! A DNS stub resolver for remote DNS: it answers the queries a program sends to the system's
//! nameservers itself, from the fake-address table, and never asks anyone. A name gets the
//! fake address that `connect()` later maps back to it, so the name reaches the proxy in the
//! CONNECT and no query leaves the machine.
//!
//! - A / AAAA: the fake address of the family the proxies are reached from (IPv4 unless every
//!   proxy is an IPv6 address); the other family gets no records. Names in the hosts file and
//!   `localhost` get their own addresses.
//! - PTR of a fake address: its name; of a hosts-file address: the file's name.
//! - Every other type (MX, TXT, SRV, HTTPS…, and PTR of other addresses): [`Answer::Forward`]:
//!   the caller sends the query over TCP through the chain to the configured `dns_server`
//!   ([`forward`]), never to the system's resolver; when that fails, SERVFAIL. Other opcodes:
//!   NOTIMP.
//!
//! The library (in programs it is preloaded into, without the kernel guard) and the guard's
//! supervisor both answer with this module.

use std::io::{Read, Write};
use std::net::IpAddr;
use std::os::fd::RawFd;

use crate::dnswire::{self, Query, Record};
use crate::fakedns::FakeDnsError;
use crate::router::{Resolution, Router};
use crate::sys::FdStream;
use crate::{Chain, Host, TargetAddr};

/// The time to live of every answer: fake addresses never change within a session.
pub const TTL: u32 = 60;

/// What the stub makes of a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The response, from the fake table (or the hosts file).
    Now(Vec<u8>),
    /// A question the fake table cannot answer: to be sent to `dns_server` through the chain
    /// ([`forward`]).
    Forward,
    /// An address question for a name on a `direct` route (split DNS): to be sent to the
    /// system's nameserver that the program asked, and its answers learned
    /// ([`learn_answers`]).
    System,
}

/// The stub's answer to `query`, or `None` for a message that deserves none (a response, or
/// something too short to carry an id).
pub fn answer(router: &Router, query: &[u8]) -> Option<Answer> {
    let q = match dnswire::parse_query(query) {
        Ok(q) => q,
        Err(dnswire::DnsError::NotAQuery) | Err(dnswire::DnsError::Short) => return None,
        Err(_) => return dnswire::error_response(query, dnswire::RCODE_FORMERR).map(Answer::Now),
    };
    match records_for(router, &q) {
        Some((SYSTEM, _)) => Some(Answer::System),
        Some((rcode, records)) => Some(Answer::Now(dnswire::response(query, &q, rcode, &records, TTL))),
        None => Some(Answer::Forward),
    }
}

/// The log line for `reply`, the stub's answer to `query`, when it refused the name by a
/// `block` route ("no such name"): said by whoever sends the reply.
pub fn refusal(router: &Router, query: &[u8], reply: &[u8]) -> Option<String> {
    if reply.len() < 4 || reply[3] & 0x0f != dnswire::RCODE_NXDOMAIN {
        return None;
    }
    let q = dnswire::parse_query(query).ok()?;
    match router.resolve(&q.name) {
        crate::router::Resolution::Blocked(i) => {
            Some(format!("lookup of {:?} refused by {}: no such name", q.name, router.describe(i)))
        }
        _ => None,
    }
}

/// Not an rcode (they have four bits): the system's nameserver answers.
const SYSTEM: u8 = 0xff;

/// Learns the addresses of `reply` (the system's answer to `query`, an address question for a
/// name on a direct route) into `router`, so that connections to them go direct.
pub fn learn_answers(router: &Router, query: &[u8], reply: &[u8]) {
    let Ok(q) = dnswire::parse_query(query) else { return };
    let Some(route) = router.learns(&q.name) else { return };
    for ip in dnswire::answer_addresses(reply) {
        router.learn(ip, route);
    }
}

/// The address family of a socket that reaches the chain's first hop.
pub fn first_hop_family(chain: &Chain) -> libc::c_int {
    match chain.proxies().first().map(|p| &p.host) {
        Some(Host::Ip(IpAddr::V6(_))) => libc::AF_INET6,
        _ => libc::AF_INET,
    }
}

/// Sends `query` to `server` over TCP through `chain`, on `fd` (a fresh stream socket of
/// [`first_hop_family`], which the caller closes), and returns the server's response; SERVFAIL
/// (with the reason) when the chain or the server fails. Bounded by the chain's timeouts.
pub fn forward(chain: &Chain, fd: RawFd, server: &TargetAddr, query: &[u8]) -> (Vec<u8>, Option<String>) {
    match exchange(chain, fd, server, query) {
        Ok(r) => (r, None),
        Err(why) => (dnswire::error_response(query, dnswire::RCODE_SERVFAIL).unwrap_or_default(), Some(why)),
    }
}

fn exchange(chain: &Chain, fd: RawFd, server: &TargetAddr, query: &[u8]) -> Result<Vec<u8>, String> {
    let len = u16::try_from(query.len()).map_err(|_| "the query is too long".to_owned())?;
    chain.connect(fd, server).map_err(|e| e.to_string())?;
    let mut s = FdStream::new(fd);
    s.set_timeout(Some(chain.timeouts().read));
    let io = |e: std::io::Error| format!("{server}: {e}");
    let mut out = len.to_be_bytes().to_vec();
    out.extend_from_slice(query);
    s.write_all(&out).map_err(io)?;
    let mut head = [0u8; 2];
    s.read_exact(&mut head).map_err(io)?;
    let mut reply = vec![0u8; u16::from_be_bytes(head) as usize];
    s.read_exact(&mut reply).map_err(io)?;
    if reply.len() < 12 || reply[..2] != query[..2] || reply[2] & 0x80 == 0 {
        return Err(format!("{server} answered with something that is not the response"));
    }
    Ok(reply)
}

/// The records of the answer, or `None` when the question is for `dns_server`.
fn records_for(router: &Router, q: &Query) -> Option<(u8, Vec<Record>)> {
    if q.opcode() != 0 {
        return Some((dnswire::RCODE_NOTIMP, Vec::new()));
    }
    if q.qclass != dnswire::CLASS_IN && q.qclass != 255 {
        return Some((dnswire::RCODE_REFUSED, Vec::new()));
    }
    records_in(router, q)
}

fn records_in(router: &Router, q: &Query) -> Option<(u8, Vec<Record>)> {
    Some(match q.qtype {
        dnswire::TYPE_PTR => match dnswire::reverse_name(&q.name) {
            Some(ip) => match router.reverse(ip) {
                Some(name) => (dnswire::RCODE_NOERROR, vec![Record::Ptr(name)]),
                // A fake address this session never handed out has no name anywhere.
                None if router.is_fake(ip) => (dnswire::RCODE_NXDOMAIN, Vec::new()),
                None => return None,
            },
            None => return None,
        },
        dnswire::TYPE_A | dnswire::TYPE_AAAA | dnswire::TYPE_ANY => {
            let want_v6 = q.qtype == dnswire::TYPE_AAAA;
            let fit = |ip: &IpAddr| match (ip, q.qtype) {
                (IpAddr::V4(v4), dnswire::TYPE_A | dnswire::TYPE_ANY) => Some(Record::A(*v4)),
                (IpAddr::V6(v6), dnswire::TYPE_AAAA | dnswire::TYPE_ANY) => Some(Record::Aaaa(*v6)),
                _ => None,
            };
            match router.resolve(&q.name) {
                Resolution::Local(addrs) => (dnswire::RCODE_NOERROR, addrs.iter().filter_map(fit).collect()),
                Resolution::Fake { v4, v6, .. } => {
                    let records = match (router.prefers_v6(), want_v6, q.qtype == dnswire::TYPE_ANY) {
                        (false, _, true) | (false, false, _) => fit(&v4).into_iter().collect(),
                        (true, _, true) | (true, true, _) => fit(&v6).into_iter().collect(),
                        _ => Vec::new(),
                    };
                    (dnswire::RCODE_NOERROR, records)
                }
                Resolution::Fail(FakeDnsError::Full(_)) => (dnswire::RCODE_SERVFAIL, Vec::new()),
                Resolution::Fail(FakeDnsError::BadName) | Resolution::Blocked(_) => {
                    (dnswire::RCODE_NXDOMAIN, Vec::new())
                }
                // A name on a direct route (local DNS has no stub).
                Resolution::System => (SYSTEM, Vec::new()),
            }
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::dnswire::{parse_query, TYPE_A, TYPE_AAAA, TYPE_PTR};
    use crate::hosts::Hosts;

    fn router(proxy: &str) -> Router {
        let config = Config::parse(&format!("[[proxy]]\nurl = \"{proxy}\""), "t").unwrap();
        Router::new(config, Hosts::parse("192.0.2.50 build.lan\n"), 64).unwrap()
    }

    fn query(name: &str, qtype: u16) -> Vec<u8> {
        crate::dnswire::query(0xabcd, name, qtype)
    }

    fn now(a: Option<Answer>) -> Vec<u8> {
        match a {
            Some(Answer::Now(r)) => r,
            other => panic!("not answered: {other:?}"),
        }
    }

    fn ancount(r: &[u8]) -> u16 {
        u16::from_be_bytes([r[6], r[7]])
    }

    fn rcode(r: &[u8]) -> u8 {
        r[3] & 0xf
    }

    #[test]
    fn a_names_get_their_fake_address_and_ptr_gives_the_name_back() {
        let r = router("socks5://192.0.2.1:1080");
        let resp = now(answer(&r, &query("www.example.org", TYPE_A)));
        assert_eq!((rcode(&resp), ancount(&resp)), (0, 1));
        let ip = IpAddr::from(<[u8; 4]>::try_from(&resp[resp.len() - 4..]).unwrap());
        assert!(r.is_fake(ip));
        assert_eq!(r.reverse(ip).as_deref(), Some("www.example.org"));
        let IpAddr::V4(v4) = ip else { panic!() };
        let o = v4.octets();
        let ptr =
            now(answer(&r, &query(&format!("{}.{}.{}.{}.in-addr.arpa", o[3], o[2], o[1], o[0]), TYPE_PTR)));
        assert!(ptr.ends_with(b"\x03www\x07example\x03org\x00"));
        // The other family has no record: the proxies are reached over IPv4.
        let aaaa = now(answer(&r, &query("www.example.org", TYPE_AAAA)));
        assert_eq!((rcode(&aaaa), ancount(&aaaa)), (0, 0));
    }

    #[test]
    fn ipv6_proxies_get_aaaa_answers() {
        let r = router("socks5://[2001:db8::1]:1080");
        let aaaa = now(answer(&r, &query("www.example.org", TYPE_AAAA)));
        assert_eq!(ancount(&aaaa), 1);
        let a = now(answer(&r, &query("www.example.org", TYPE_A)));
        assert_eq!(ancount(&a), 0);
    }

    #[test]
    fn hosts_file_names_and_unknown_reverse_lookups() {
        let r = router("socks5://192.0.2.1:1080");
        let resp = now(answer(&r, &query("build.lan", TYPE_A)));
        assert!(resp.ends_with(&[192, 0, 2, 50]));
        let resp = now(answer(&r, &query("50.2.0.192.in-addr.arpa", TYPE_PTR)));
        assert!(resp.ends_with(b"\x05build\x03lan\x00"));
        // Not the stub's to answer: for dns_server, through the chain.
        assert_eq!(answer(&r, &query("9.9.9.9.in-addr.arpa", TYPE_PTR)), Some(Answer::Forward));
        assert_eq!(answer(&r, &query("example.org", 15)), Some(Answer::Forward));
        assert_eq!(answer(&r, &query("example.org", 65)), Some(Answer::Forward));
        // A fake address never handed out has no name anywhere.
        let resp = now(answer(&r, &query("99.0.0.240.in-addr.arpa", TYPE_PTR)));
        assert_eq!(rcode(&resp), 3);
    }

    #[test]
    fn junk_gets_formerr_or_nothing() {
        let r = router("socks5://192.0.2.1:1080");
        assert_eq!(answer(&r, &[1, 2, 3]), None);
        let mut bad = query("a.b", TYPE_A);
        bad.truncate(14);
        assert_eq!(rcode(&now(answer(&r, &bad))), 1);
        let resp = now(answer(&r, &query("a.b", TYPE_A)));
        assert!(parse_query(&resp).is_err(), "a response is not read as a query");
        assert_eq!(answer(&r, &resp), None);
    }
}
