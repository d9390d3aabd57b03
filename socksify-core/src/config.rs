//! The TOML configuration: parsed with serde, then checked as a whole. Every error names the
//! file, the line and the key, and says what was expected.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::chain::{Chain, ChainMode, Timeouts};
use crate::proxy::Proxy;

/// Where names are resolved.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DnsMode {
    /// Names go to the proxies; the program gets a fake address that stands for the name.
    #[default]
    Remote,
    /// The system resolver answers, as without socksify.
    Local,
}

/// The file as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    chain: Option<ChainMode>,
    chain_len: Option<Spanned<i64>>,
    dns: Option<DnsMode>,
    connect_timeout_ms: Option<Spanned<i64>>,
    read_timeout_ms: Option<Spanned<i64>>,
    direct: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    proxy: Vec<RawProxy>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProxy {
    url: Spanned<String>,
}

/// A checked configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub chain: ChainMode,
    pub chain_len: usize,
    pub dns: DnsMode,
    pub timeouts: Timeouts,
    pub direct: Vec<IpNet>,
    pub proxies: Vec<Proxy>,
}

pub const DEFAULT_CHAIN_LEN: usize = 2;
pub const DEFAULT_DIRECT: [&str; 2] = ["127.0.0.0/8", "::1/128"];
const MAX_TIMEOUT_MS: i64 = 3_600_000;

impl Default for Config {
    fn default() -> Self {
        Config {
            chain: ChainMode::Strict,
            chain_len: DEFAULT_CHAIN_LEN,
            dns: DnsMode::Remote,
            timeouts: Timeouts::default(),
            direct: DEFAULT_DIRECT
                .iter()
                .map(|s| s.parse().expect("valid default"))
                .collect(),
            proxies: Vec::new(),
        }
    }
}

/// A configuration error: where it is and what to fix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub origin: String,
    pub line: Option<usize>,
    pub key: Option<String>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.origin)?;
        if let Some(line) = self.line {
            write!(f, ", line {line}")?;
        }
        if let Some(key) = &self.key {
            write!(f, ", key `{key}`")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Builds errors that point into one text.
struct Source<'a> {
    origin: String,
    text: &'a str,
}

impl Source<'_> {
    fn line_of(&self, offset: usize) -> usize {
        self.text[..offset.min(self.text.len())]
            .bytes()
            .filter(|&b| b == b'\n')
            .count()
            + 1
    }

    fn at(
        &self,
        span: std::ops::Range<usize>,
        key: &str,
        message: impl Into<String>,
    ) -> ConfigError {
        ConfigError {
            origin: self.origin.clone(),
            line: Some(self.line_of(span.start)),
            key: Some(key.to_owned()),
            message: message.into(),
        }
    }

    /// A serde/TOML error: its span gives the line, and the key is what stands before `=` there.
    fn toml_error(&self, e: &toml::de::Error) -> ConfigError {
        let line = e.span().map(|s| self.line_of(s.start));
        let key = line
            .and_then(|l| self.text.lines().nth(l - 1))
            .and_then(|text| {
                let key = text.split('=').next()?.trim();
                (text.contains('=') && !key.is_empty()).then(|| key.trim_matches('"').to_owned())
            });
        ConfigError {
            origin: self.origin.clone(),
            line,
            key,
            message: e.message().trim().to_owned(),
        }
    }
}

impl Config {
    /// Reads and checks a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            origin: path.display().to_string(),
            line: None,
            key: None,
            message: format!("cannot read the file: {e}"),
        })?;
        Config::parse(&text, &path.display().to_string())
    }

    /// Parses and checks configuration text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let src = Source {
            origin: origin.to_owned(),
            text,
        };
        let raw: RawConfig = toml::from_str(text).map_err(|e| src.toml_error(&e))?;
        let defaults = Config::default();

        let ms = |v: &Option<Spanned<i64>>, key: &str, default: Duration| match v {
            None => Ok(default),
            Some(s) if (1..=MAX_TIMEOUT_MS).contains(s.get_ref()) => {
                Ok(Duration::from_millis(*s.get_ref() as u64))
            }
            Some(s) => Err(src.at(
                s.span(),
                key,
                format!("expected milliseconds from 1 to {MAX_TIMEOUT_MS}"),
            )),
        };
        let timeouts = Timeouts {
            connect: ms(
                &raw.connect_timeout_ms,
                "connect_timeout_ms",
                defaults.timeouts.connect,
            )?,
            read: ms(
                &raw.read_timeout_ms,
                "read_timeout_ms",
                defaults.timeouts.read,
            )?,
        };

        let mut proxies = Vec::with_capacity(raw.proxy.len());
        for p in &raw.proxy {
            let proxy = p
                .url
                .get_ref()
                .parse::<Proxy>()
                .map_err(|e| src.at(p.url.span(), "proxy.url", e.0))?;
            proxies.push(proxy);
        }

        let direct = match &raw.direct {
            None => defaults.direct,
            Some(list) => list
                .iter()
                .map(|s| {
                    parse_net(s.get_ref()).ok_or_else(|| {
                        src.at(s.span(), "direct", format!("`{}` is not an address or CIDR range such as 10.0.0.0/8 or fd00::/8", s.get_ref()))
                    })
                })
                .collect::<Result<_, _>>()?,
        };

        let chain = raw.chain.unwrap_or_default();
        let chain_len = match &raw.chain_len {
            None => DEFAULT_CHAIN_LEN,
            Some(s) if *s.get_ref() >= 1 => *s.get_ref() as usize,
            Some(s) => {
                return Err(src.at(
                    s.span(),
                    "chain_len",
                    "expected a number of hops, 1 or more",
                ))
            }
        };
        if matches!(chain, ChainMode::Random | ChainMode::RoundRobin)
            && !proxies.is_empty()
            && chain_len > proxies.len()
        {
            let (line, key) = match &raw.chain_len {
                Some(s) => (Some(src.line_of(s.span().start)), "chain_len"),
                None => (None, "chain_len"),
            };
            return Err(ConfigError {
                origin: src.origin.clone(),
                line,
                key: Some(key.to_owned()),
                message: format!(
                    "chain_len is {chain_len} but only {} proxies are listed",
                    proxies.len()
                ),
            });
        }

        Ok(Config {
            chain,
            chain_len,
            dns: raw.dns.unwrap_or_default(),
            timeouts,
            direct,
            proxies,
        })
    }

    /// The chain this configuration describes.
    pub fn chain(&self) -> Chain {
        Chain::new(
            self.proxies.clone(),
            self.chain,
            self.chain_len,
            self.timeouts,
        )
    }

    /// True when connections to `addr` bypass the proxies.
    pub fn is_direct(&self, addr: &SocketAddr) -> bool {
        let ip = match addr.ip() {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
            v4 => v4,
        };
        self.direct.iter().any(|net| net.contains(&ip))
    }
}

fn parse_net(s: &str) -> Option<IpNet> {
    s.parse::<IpNet>()
        .ok()
        .or_else(|| s.parse::<IpAddr>().ok().map(IpNet::from))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::ProxyKind;

    #[test]
    fn defaults_are_as_documented() {
        let c = Config::parse("", "t.toml").unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.chain, ChainMode::Strict);
        assert_eq!(c.chain_len, 2);
        assert_eq!(c.dns, DnsMode::Remote);
        assert_eq!(c.timeouts.connect, Duration::from_millis(8000));
        assert_eq!(c.timeouts.read, Duration::from_millis(15000));
        assert!(c.is_direct(&"127.0.0.1:80".parse().unwrap()));
        assert!(c.is_direct(&"[::1]:80".parse().unwrap()));
        assert!(c.is_direct(&"[::ffff:127.0.0.1]:80".parse().unwrap()));
        assert!(!c.is_direct(&"192.0.2.1:80".parse().unwrap()));
    }

    #[test]
    fn a_full_file_parses() {
        let text = r#"
chain = "random"
chain_len = 2
dns = "local"
connect_timeout_ms = 500
read_timeout_ms = 700
direct = ["10.0.0.0/8", "fd00::/8", "192.0.2.7"]

[[proxy]]
url = "socks5://u:p%40ss@192.0.2.1:1080"
[[proxy]]
url = "socks4a://[2001:db8::1]:1081"
[[proxy]]
url = "socks4://relay.example:9050"
"#;
        let c = Config::parse(text, "t.toml").unwrap();
        assert_eq!(c.chain, ChainMode::Random);
        assert_eq!(c.dns, DnsMode::Local);
        assert_eq!(c.timeouts.connect, Duration::from_millis(500));
        assert_eq!(c.proxies.len(), 3);
        assert_eq!(c.proxies[0].creds.as_ref().unwrap().pass, "p@ss");
        assert_eq!(c.proxies[1].kind, ProxyKind::Socks4a);
        assert!(c.is_direct(&"10.9.9.9:1".parse().unwrap()));
        assert!(c.is_direct(&"192.0.2.7:1".parse().unwrap()));
        assert!(
            !c.is_direct(&"127.0.0.1:1".parse().unwrap()),
            "the list replaces the default"
        );
    }

    fn err(text: &str) -> ConfigError {
        Config::parse(text, "my.toml").unwrap_err()
    }

    #[test]
    fn errors_name_file_line_and_key() {
        let e = err("chain = \"strict\"\nchian_len = 3\n");
        assert_eq!((e.line, e.key.as_deref()), (Some(2), Some("chian_len")));
        assert!(e.message.contains("unknown field"), "{e}");
        assert!(
            e.to_string()
                .starts_with("my.toml, line 2, key `chian_len`: "),
            "{e}"
        );

        let e = err("\nchain = \"fastest\"\n");
        assert_eq!((e.line, e.key.as_deref()), (Some(2), Some("chain")));
        assert!(e.message.contains("strict"), "lists what is expected: {e}");

        let e = err("connect_timeout_ms = \"soon\"\n");
        assert_eq!(e.key.as_deref(), Some("connect_timeout_ms"));

        let e = err("read_timeout_ms = 0\n");
        assert_eq!(
            (e.line, e.key.as_deref()),
            (Some(1), Some("read_timeout_ms"))
        );

        let e = err("[[proxy]]\nurl = \"socks5://a:b@h:99999\"\n");
        assert_eq!((e.line, e.key.as_deref()), (Some(2), Some("proxy.url")));
        assert!(
            e.message.contains("port") && !e.message.contains(":b@"),
            "{e}"
        );

        let e = err("[[proxy]]\nurl = \"socks5://h:1\"\nuser = \"x\"\n");
        assert_eq!((e.line, e.key.as_deref()), (Some(3), Some("user")));

        let e = err("direct = [\"10.0.0.0/33\"]");
        assert_eq!(e.key.as_deref(), Some("direct"));

        let e = err("chain = \"round_robin\"\nchain_len = 3\n[[proxy]]\nurl = \"socks5://h:1\"\n");
        assert_eq!((e.line, e.key.as_deref()), (Some(2), Some("chain_len")));

        let e = err("chain_len = 0");
        assert_eq!(e.key.as_deref(), Some("chain_len"));

        let e = err("chain = [");
        assert_eq!(e.line, Some(1));
    }

    #[test]
    fn a_missing_file_is_an_error() {
        let e = Config::load(Path::new("/nonexistent/socksify.toml")).unwrap_err();
        assert!(
            e.to_string()
                .contains("/nonexistent/socksify.toml: cannot read"),
            "{e}"
        );
    }
}
