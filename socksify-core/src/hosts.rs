//! The hosts file, read once: names in it resolve locally, never through a proxy.

use std::net::IpAddr;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Hosts {
    entries: Vec<(IpAddr, String)>,
}

impl Hosts {
    pub fn parse(text: &str) -> Hosts {
        let mut entries = Vec::new();
        for line in text.lines() {
            let line = line.split('#').next().unwrap_or("");
            let mut fields = line.split_whitespace();
            let Some(ip) = fields.next().and_then(|f| f.split('%').next()?.parse::<IpAddr>().ok()) else {
                continue;
            };
            for name in fields {
                entries.push((ip, name.to_ascii_lowercase()));
            }
        }
        Hosts { entries }
    }

    /// Reads `/etc/hosts`; a missing or unreadable file is an empty one.
    pub fn load_system() -> Hosts {
        std::fs::read_to_string("/etc/hosts").map(|t| Hosts::parse(&t)).unwrap_or_default()
    }

    /// The addresses of `name`, in file order. `localhost` and `*.localhost` (RFC 6761) are
    /// loopback even when the file does not say so.
    pub fn lookup(&self, name: &str) -> Vec<IpAddr> {
        let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
        let mut found: Vec<IpAddr> =
            self.entries.iter().filter(|(_, n)| *n == name).map(|(ip, _)| *ip).collect();
        if found.is_empty() && (name == "localhost" || name.ends_with(".localhost")) {
            found = vec!["127.0.0.1".parse().unwrap(), "::1".parse().unwrap()];
        }
        found
    }

    /// The first name of `ip` in the file.
    pub fn name_of(&self, ip: IpAddr) -> Option<&str> {
        self.entries.iter().find(|(a, _)| *a == ip).map(|(_, n)| n.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_aliases_and_comments() {
        let h = Hosts::parse("127.0.0.1 localhost\n# x\n192.0.2.5  build Build.Lan # comment\nfe80::1%eth0 link\nbad line\n::1 localhost ip6-localhost\n");
        assert_eq!(h.lookup("BUILD.lan."), vec!["192.0.2.5".parse::<IpAddr>().unwrap()]);
        assert_eq!(h.lookup("localhost").len(), 2);
        assert_eq!(h.lookup("link"), vec!["fe80::1".parse::<IpAddr>().unwrap()]);
        assert!(h.lookup("example.org").is_empty());
        assert_eq!(h.name_of("192.0.2.5".parse().unwrap()), Some("build"));
    }

    #[test]
    fn localhost_is_loopback_without_a_file() {
        let h = Hosts::default();
        assert_eq!(h.lookup("localhost").len(), 2);
        assert_eq!(h.lookup("app.localhost").len(), 2);
    }
}
