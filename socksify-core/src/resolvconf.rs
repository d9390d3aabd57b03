//! The system's nameservers, from `/etc/resolv.conf`: where programs that resolve names
//! themselves (Go, musl, static glibc, c-ares) send their queries.

use std::net::IpAddr;

/// The `nameserver` addresses of a resolv.conf text, in order (scope ids dropped).
pub fn nameservers(text: &str) -> Vec<IpAddr> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.split(['#', ';']).next().unwrap_or("");
        let mut fields = line.split_whitespace();
        if fields.next() != Some("nameserver") {
            continue;
        }
        let Some(addr) = fields.next() else { continue };
        let addr = addr.split('%').next().unwrap_or(addr);
        if let Ok(ip) = addr.parse::<IpAddr>() {
            if !out.contains(&ip) {
                out.push(ip);
            }
        }
    }
    out
}

/// The nameservers of `/etc/resolv.conf`; without a usable file, resolvers fall back to the
/// local host (glibc, musl and Go all do), so that is what they would query.
pub fn system_nameservers() -> Vec<IpAddr> {
    let found = std::fs::read_to_string("/etc/resolv.conf").map(|t| nameservers(&t)).unwrap_or_default();
    if found.is_empty() {
        vec![IpAddr::from([127, 0, 0, 1]), IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1])]
    } else {
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nameserver_lines_are_read() {
        let text = "# generated\nsearch lan\nnameserver 10.0.0.1\nnameserver fe80::1%eth0 # link\n; x\nnameserver bogus\nnameserver 10.0.0.1\noptions ndots:2\n";
        assert_eq!(
            nameservers(text),
            vec!["10.0.0.1".parse::<IpAddr>().unwrap(), "fe80::1".parse().unwrap()]
        );
        assert!(nameservers("").is_empty());
    }
}
