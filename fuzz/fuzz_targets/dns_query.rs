//! The DNS queries the kernel guard's stub resolver answers (any process of the program's tree
//! can send it anything): `dnswire::parse_query`, `response`, `error_response` and
//! `reverse_name` on raw bytes.
//!
//! Properties: no panic; an accepted query's response keeps its id, opcode and RD bit, has the
//! QR bit, one question copied byte for byte and as many answers as given, and is not taken for
//! a query itself; `error_response` answers exactly the messages of at least 4 bytes without
//! the QR bit, with the same id; a name `reverse_name` maps to an address is that address's
//! reverse name (in-addr.arpa or ip6.arpa), written back the same way. `answer_addresses`
//! (the addresses learned from a nameserver's reply for split DNS) never panics on any bytes,
//! returns at most 64, and reads back exactly the A and AAAA records of a response we built.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use libfuzzer_sys::fuzz_target;
use socksify_core::dnswire::{self, DnsError, Record};

fn reverse_of(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.{}.in-addr.arpa", o[3], o[2], o[1], o[0])
        }
        IpAddr::V6(v6) => {
            let mut s = String::new();
            for b in v6.octets().iter().rev() {
                s.push_str(&format!("{:x}.{:x}.", b & 0xf, b >> 4));
            }
            s + "ip6.arpa"
        }
    }
}

fuzz_target!(|data: &[u8]| {
    assert!(dnswire::answer_addresses(data).len() <= 64);
    match dnswire::error_response(data, dnswire::RCODE_FORMERR) {
        Some(err) => {
            assert!(data.len() >= 4 && data[2] & 0x80 == 0, "answered a response: {data:?}");
            assert_eq!(err.len(), 12);
            assert_eq!(&err[..2], &data[..2], "error response id");
            assert!(err[2] & 0x80 != 0, "error response without QR");
        }
        None => assert!(data.len() < 4 || data[2] & 0x80 != 0, "no error response for {data:?}"),
    }
    let q = match dnswire::parse_query(data) {
        Ok(q) => q,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    assert!(q.name.len() <= 253, "name longer than DNS allows: {}", q.name);
    assert!(!q.name.contains(".."), "empty label in {:?}", q.name);
    assert_eq!(q.name, q.name.to_ascii_lowercase());

    let answers = [
        Record::A(Ipv4Addr::new(224, 0, 0, 1)),
        Record::Aaaa(Ipv6Addr::LOCALHOST),
        Record::Ptr(q.name.clone()),
    ];
    for n in 0..=answers.len() {
        let out = dnswire::response(data, &q, dnswire::RCODE_NOERROR, &answers[..n], 60);
        assert_eq!(u16::from_be_bytes([out[0], out[1]]), q.id);
        let flags = u16::from_be_bytes([out[2], out[3]]);
        assert!(flags & 0x8000 != 0, "response without QR");
        assert_eq!(flags & 0x7800, q.flags & 0x7800, "opcode changed");
        assert_eq!(flags & 0x0100, q.flags & 0x0100, "RD changed");
        assert_eq!(u16::from_be_bytes([out[4], out[5]]), 1, "QDCOUNT");
        assert_eq!(u16::from_be_bytes([out[6], out[7]]) as usize, n, "ANCOUNT");
        assert_eq!(dnswire::parse_query(&out), Err(DnsError::NotAQuery));
        let given: Vec<IpAddr> = answers[..n]
            .iter()
            .filter_map(|r| match r {
                Record::A(a) => Some(IpAddr::V4(*a)),
                Record::Aaaa(a) => Some(IpAddr::V6(*a)),
                _ => None,
            })
            .collect();
        assert_eq!(dnswire::answer_addresses(&out), given, "addresses read back");
        // The question is copied: the response's question parses as the query's did.
        let mut as_query = out.clone();
        as_query[2] &= 0x7f;
        let again = dnswire::parse_query(&as_query).expect("the response's question parses");
        assert_eq!((again.name.as_str(), again.qtype, again.qclass), (q.name.as_str(), q.qtype, q.qclass));
    }

    if let Some(ip) = dnswire::reverse_name(&q.name) {
        assert_eq!(reverse_of(ip), q.name, "reverse name of {ip}");
        assert_eq!(dnswire::reverse_name(&reverse_of(ip)), Some(ip));
    }
});
