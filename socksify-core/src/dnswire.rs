//! The DNS wire format (RFC 1035), as far as a stub resolver needs it: read one question from a
//! query, write a response with A, AAAA or PTR records. Nothing here trusts the input: every
//! length is checked, and a malformed query is an error, never a panic.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub const TYPE_A: u16 = 1;
pub const TYPE_PTR: u16 = 12;
pub const TYPE_AAAA: u16 = 28;
pub const TYPE_ANY: u16 = 255;
pub const CLASS_IN: u16 = 1;

pub const RCODE_NOERROR: u8 = 0;
pub const RCODE_FORMERR: u8 = 1;
pub const RCODE_SERVFAIL: u8 = 2;
pub const RCODE_NXDOMAIN: u8 = 3;
pub const RCODE_NOTIMP: u8 = 4;
pub const RCODE_REFUSED: u8 = 5;

const HEADER: usize = 12;
const FLAG_QR: u16 = 0x8000;
const FLAG_RD: u16 = 0x0100;
const FLAG_RA: u16 = 0x0080;

/// Why a message could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DnsError {
    #[error("shorter than a DNS header")]
    Short,
    #[error("a response, not a query")]
    NotAQuery,
    #[error("not exactly one question")]
    QuestionCount,
    #[error("malformed question name")]
    BadName,
    #[error("question truncated")]
    Truncated,
}

/// The one question of a query, and where it ends in the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub id: u16,
    pub flags: u16,
    /// The name as written (lower-cased, without the root's trailing dot).
    pub name: String,
    pub qtype: u16,
    pub qclass: u16,
    question_end: usize,
}

impl Query {
    /// The opcode (0 = a standard query).
    pub fn opcode(&self) -> u8 {
        ((self.flags >> 11) & 0xf) as u8
    }
}

/// Reads the header and the question of a query.
pub fn parse_query(msg: &[u8]) -> Result<Query, DnsError> {
    if msg.len() < HEADER {
        return Err(DnsError::Short);
    }
    let id = u16::from_be_bytes([msg[0], msg[1]]);
    let flags = u16::from_be_bytes([msg[2], msg[3]]);
    if flags & FLAG_QR != 0 {
        return Err(DnsError::NotAQuery);
    }
    if u16::from_be_bytes([msg[4], msg[5]]) != 1 {
        return Err(DnsError::QuestionCount);
    }
    let mut at = HEADER;
    let mut name = String::new();
    loop {
        let len = *msg.get(at).ok_or(DnsError::Truncated)? as usize;
        at += 1;
        if len == 0 {
            break;
        }
        // No compression in a question: it is the first name of the message.
        if len > 63 {
            return Err(DnsError::BadName);
        }
        let label = msg.get(at..at + len).ok_or(DnsError::Truncated)?;
        if label.iter().any(|&b| b == b'.' || b == 0 || !b.is_ascii_graphic()) {
            return Err(DnsError::BadName);
        }
        if !name.is_empty() {
            name.push('.');
        }
        name.push_str(&String::from_utf8_lossy(label).to_ascii_lowercase());
        if name.len() > 253 {
            return Err(DnsError::BadName);
        }
        at += len;
    }
    let tail = msg.get(at..at + 4).ok_or(DnsError::Truncated)?;
    let qtype = u16::from_be_bytes([tail[0], tail[1]]);
    let qclass = u16::from_be_bytes([tail[2], tail[3]]);
    Ok(Query { id, flags, name, qtype, qclass, question_end: at + 4 })
}

/// Skips a (possibly compressed) name at `at`; the offset after it.
fn skip_name(msg: &[u8], mut at: usize) -> Option<usize> {
    for _ in 0..128 {
        let len = *msg.get(at)?;
        match len {
            0 => return Some(at + 1),
            l if l & 0xc0 == 0xc0 => return (at + 2 <= msg.len()).then_some(at + 2),
            l if l & 0xc0 == 0 => at += 1 + l as usize,
            _ => return None,
        }
    }
    None
}

/// The A and AAAA addresses in the answer section of response `msg` (the records of any
/// owner: CNAME chains end in them); nothing for a message that is not a response or does not
/// parse. At most 64.
pub fn answer_addresses(msg: &[u8]) -> Vec<IpAddr> {
    let mut out = Vec::new();
    if msg.len() < HEADER || msg[2] & 0x80 == 0 {
        return out;
    }
    let questions = u16::from_be_bytes([msg[4], msg[5]]);
    let answers = u16::from_be_bytes([msg[6], msg[7]]);
    let mut at = HEADER;
    for _ in 0..questions {
        match skip_name(msg, at) {
            Some(next) if next + 4 <= msg.len() => at = next + 4,
            _ => return out,
        }
    }
    for _ in 0..answers.min(64) {
        let Some(next) = skip_name(msg, at) else { return out };
        let Some(head) = msg.get(next..next + 10) else { return out };
        let (rtype, class) = (u16::from_be_bytes([head[0], head[1]]), u16::from_be_bytes([head[2], head[3]]));
        let len = u16::from_be_bytes([head[8], head[9]]) as usize;
        let Some(data) = msg.get(next + 10..next + 10 + len) else { return out };
        match (rtype, class, len) {
            (TYPE_A, CLASS_IN, 4) => out.push(IpAddr::from(<[u8; 4]>::try_from(data).expect("4 bytes"))),
            (TYPE_AAAA, CLASS_IN, 16) => {
                out.push(IpAddr::from(<[u8; 16]>::try_from(data).expect("16 bytes")))
            }
            _ => {}
        }
        at = next + 10 + len;
    }
    out
}

/// A record of an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    Ptr(String),
}

/// The response to `query` (the bytes `q` was read from): the same id and question, the
/// recursion flags a resolver expects, `rcode`, and `answers` for the question's name.
pub fn response(query: &[u8], q: &Query, rcode: u8, answers: &[Record], ttl: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(q.question_end + answers.len() * 32);
    out.extend_from_slice(&q.id.to_be_bytes());
    let opcode_bits = q.flags & 0x7800;
    let flags = FLAG_QR | opcode_bits | (q.flags & FLAG_RD) | FLAG_RA | rcode as u16;
    out.extend_from_slice(&flags.to_be_bytes());
    out.extend_from_slice(&1u16.to_be_bytes()); // QDCOUNT
    out.extend_from_slice(&(answers.len() as u16).to_be_bytes()); // ANCOUNT
    out.extend_from_slice(&[0, 0, 0, 0]); // NSCOUNT, ARCOUNT
    out.extend_from_slice(&query[HEADER..q.question_end]);
    for record in answers {
        out.extend_from_slice(&[0xc0, HEADER as u8]); // the question's name
        let (ty, data): (u16, Vec<u8>) = match record {
            Record::A(ip) => (TYPE_A, ip.octets().to_vec()),
            Record::Aaaa(ip) => (TYPE_AAAA, ip.octets().to_vec()),
            Record::Ptr(name) => (TYPE_PTR, encode_name(name)),
        };
        out.extend_from_slice(&ty.to_be_bytes());
        out.extend_from_slice(&CLASS_IN.to_be_bytes());
        out.extend_from_slice(&ttl.to_be_bytes());
        out.extend_from_slice(&(data.len() as u16).to_be_bytes());
        out.extend_from_slice(&data);
    }
    out
}

/// An answer to something that is not a well-formed query, when at least the id can be read.
pub fn error_response(query: &[u8], rcode: u8) -> Option<Vec<u8>> {
    if query.len() < 4 {
        return None;
    }
    let flags = u16::from_be_bytes([query[2], query[3]]);
    if flags & FLAG_QR != 0 {
        return None;
    }
    let mut out = vec![0u8; HEADER];
    out[..2].copy_from_slice(&query[..2]);
    let flags = FLAG_QR | (flags & 0x7800) | (flags & FLAG_RD) | FLAG_RA | rcode as u16;
    out[2..4].copy_from_slice(&flags.to_be_bytes());
    Some(out)
}

/// The largest UDP response the asker of `query` takes: its EDNS(0) payload size (an OPT
/// record right after the question), at least 512; 512 without one.
pub fn udp_limit(query: &[u8]) -> usize {
    let Ok(q) = parse_query(query) else { return 512 };
    let arcount = u16::from_be_bytes([query[10], query[11]]);
    let opt = query.get(q.question_end..q.question_end + 5);
    match opt {
        // Root name, TYPE 41 (OPT), CLASS = the payload size.
        Some([0, 0, 41, hi, lo]) if arcount >= 1 => (u16::from_be_bytes([*hi, *lo]) as usize).max(512),
        _ => 512,
    }
}

/// `reply` as a UDP response to `query`: whole when it fits the asker's limit, else its header
/// and question with TC set (the asker retries over TCP).
pub fn fit_udp(query: &[u8], reply: Vec<u8>) -> Vec<u8> {
    if reply.len() <= udp_limit(query) {
        return reply;
    }
    let Ok(q) = parse_query(query) else { return reply };
    let mut out = reply[..HEADER.min(reply.len())].to_vec();
    if out.len() < HEADER {
        return reply;
    }
    out[2] |= 0x02; // TC
    out[4..12].copy_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
    out.extend_from_slice(&query[HEADER..q.question_end]);
    out
}

fn encode_name(name: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(name.len() + 2);
    for label in name.split('.').filter(|l| !l.is_empty()) {
        let label = &label.as_bytes()[..label.len().min(63)];
        out.push(label.len() as u8);
        out.extend_from_slice(label);
    }
    out.push(0);
    out
}

/// The address a reverse-lookup name stands for: `4.3.2.1.in-addr.arpa` or the 32 nibbles of
/// `….ip6.arpa`.
pub fn reverse_name(name: &str) -> Option<IpAddr> {
    let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    if let Some(rest) = name.strip_suffix(".in-addr.arpa") {
        // Digits only: u8's parser would take "+1" too.
        let digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
        let parts: Vec<u8> = rest
            .split('.')
            .map(|p| if digits(p) { p.parse::<u8>().ok() } else { None })
            .collect::<Option<_>>()?;
        if parts.len() != 4 || rest.split('.').any(|p| p.len() > 1 && p.starts_with('0')) {
            return None;
        }
        return Some(IpAddr::V4(Ipv4Addr::new(parts[3], parts[2], parts[1], parts[0])));
    }
    let rest = name.strip_suffix(".ip6.arpa")?;
    let nibbles: Vec<u8> = rest
        .split('.')
        .map(|p| if p.len() == 1 { u8::from_str_radix(p, 16).ok() } else { None })
        .collect::<Option<_>>()?;
    if nibbles.len() != 32 {
        return None;
    }
    let mut octets = [0u8; 16];
    for (i, pair) in nibbles.rchunks(2).enumerate() {
        // Reversed: the last two nibbles written are the first octet.
        octets[i] = (pair[1] << 4) | pair[0];
    }
    Some(IpAddr::V6(Ipv6Addr::from(octets)))
}

/// A query for `name` (dot-separated labels, at most 63 bytes each) of type `qtype`, class IN,
/// recursion desired, with id `id`: what a resolver sends (tests, `socksify check`).
pub fn query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
    let mut q = id.to_be_bytes().to_vec();
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.').filter(|l| !l.is_empty()) {
        q.push(label.len().min(63) as u8);
        q.extend_from_slice(&label.as_bytes()[..label.len().min(63)]);
    }
    q.push(0);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&1u16.to_be_bytes());
    q
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A query as a resolver writes it: id 0x1234, RD, one question.
    pub fn query(name: &str, qtype: u16) -> Vec<u8> {
        let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        q.extend_from_slice(&encode_name(name));
        q.extend_from_slice(&qtype.to_be_bytes());
        q.extend_from_slice(&CLASS_IN.to_be_bytes());
        q
    }

    #[test]
    fn a_query_is_read_and_answered() {
        let bytes = query("WWW.Example.org", TYPE_A);
        let q = parse_query(&bytes).unwrap();
        assert_eq!((q.id, q.name.as_str(), q.qtype, q.qclass), (0x1234, "www.example.org", TYPE_A, 1));
        let r = response(&bytes, &q, RCODE_NOERROR, &[Record::A(Ipv4Addr::new(240, 0, 0, 1))], 60);
        assert_eq!(&r[..2], &[0x12, 0x34]);
        assert_eq!(u16::from_be_bytes([r[2], r[3]]), 0x8180, "QR RD RA, NOERROR");
        assert_eq!(u16::from_be_bytes([r[6], r[7]]), 1, "one answer");
        assert_eq!(&r[12..bytes.len()], &bytes[12..], "the question is echoed");
        assert_eq!(&r[r.len() - 4..], &[240, 0, 0, 1]);
    }

    #[test]
    fn ptr_answers_carry_the_name() {
        let bytes = query("1.0.0.240.in-addr.arpa", TYPE_PTR);
        let q = parse_query(&bytes).unwrap();
        assert_eq!(reverse_name(&q.name), Some("240.0.0.1".parse().unwrap()));
        let r = response(&bytes, &q, RCODE_NOERROR, &[Record::Ptr("example.org".into())], 60);
        assert!(r.ends_with(b"\x07example\x03org\x00"));
    }

    #[test]
    fn ipv6_reverse_names_are_read() {
        let v6: Ipv6Addr = "100::2a".parse().unwrap();
        let nibbles: String =
            v6.octets().iter().rev().flat_map(|b| [b & 0xf, b >> 4]).map(|n| format!("{n:x}.")).collect();
        assert_eq!(reverse_name(&format!("{nibbles}ip6.arpa")), Some(IpAddr::V6(v6)));
        assert_eq!(reverse_name("1.2.3.in-addr.arpa"), None);
        assert_eq!(reverse_name("01.2.3.4.in-addr.arpa"), None);
        assert_eq!(reverse_name("+1.2.3.4.in-addr.arpa"), None, "a sign is not a digit");
        assert_eq!(reverse_name("example.org"), None);
    }

    #[test]
    fn malformed_queries_are_errors() {
        assert_eq!(parse_query(&[0; 5]), Err(DnsError::Short));
        let mut resp = query("a.b", TYPE_A);
        resp[2] |= 0x80;
        assert_eq!(parse_query(&resp), Err(DnsError::NotAQuery));
        let mut two = query("a.b", TYPE_A);
        two[5] = 2;
        assert_eq!(parse_query(&two), Err(DnsError::QuestionCount));
        let good = query("example.org", TYPE_A);
        for cut in 12..good.len() {
            assert!(parse_query(&good[..cut]).is_err(), "truncated at {cut}");
        }
        let mut pointer = query("a.b", TYPE_A);
        pointer[12] = 0xc0;
        assert_eq!(parse_query(&pointer), Err(DnsError::BadName));
        let mut dot = query("ab.c", TYPE_A);
        dot[13] = b'.';
        assert_eq!(parse_query(&dot), Err(DnsError::BadName));
        assert_eq!(error_response(&good, RCODE_FORMERR).unwrap()[3] & 0xf, RCODE_FORMERR);
    }

    #[test]
    fn big_replies_are_truncated_to_the_askers_limit() {
        let plain = query("example.org", 16);
        assert_eq!(udp_limit(&plain), 512);
        let mut edns = plain.clone();
        edns[11] = 1;
        edns.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(udp_limit(&edns), 1232);
        let q = parse_query(&plain).unwrap();
        let mut big = response(&plain, &q, RCODE_NOERROR, &[], 60);
        big.resize(700, 0);
        assert_eq!(fit_udp(&edns, big.clone()).len(), 700, "it fits 1232");
        let cut = fit_udp(&plain, big);
        assert_eq!(cut.len(), plain.len());
        assert_eq!(cut[2] & 0x02, 0x02, "TC");
        assert_eq!(&cut[12..], &plain[12..]);
    }
}

#[cfg(test)]
mod answer_tests {
    use super::*;

    #[test]
    fn addresses_of_a_response_behind_a_cname() {
        let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        q.extend_from_slice(&encode_name("git.corp"));
        q.extend_from_slice(&TYPE_A.to_be_bytes());
        q.extend_from_slice(&CLASS_IN.to_be_bytes());
        let q = parse_query(&q).map(|parsed| (q, parsed)).unwrap();
        let records = [Record::A("10.1.2.3".parse().unwrap()), Record::Aaaa("fd00::5".parse().unwrap())];
        let mut reply = response(&q.0, &q.1, RCODE_NOERROR, &records, 60);
        assert_eq!(
            answer_addresses(&reply),
            vec!["10.1.2.3".parse::<IpAddr>().unwrap(), "fd00::5".parse().unwrap()]
        );
        assert!(answer_addresses(&q.0).is_empty(), "a query has no answers");
        for cut in 0..reply.len() {
            let _ = answer_addresses(&reply[..cut]);
        }
        reply[7] = 200; // more answers than there are
        assert_eq!(answer_addresses(&reply).len(), 2);
    }
}
