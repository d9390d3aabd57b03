//! The TOML configuration: parsed with serde, then checked as a whole. Every error names the
//! file, the line and the key, and says what was expected.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::addr::TargetAddr;
use crate::chain::{Chain, ChainMode, Timeouts};
use crate::proxy::Proxy;
use crate::routes::{NamedChain, Pattern, Rewrite, Route, Via};

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// `socksify: ...` sentences.
    #[default]
    Text,
    /// One JSON object a line per connection decision (and the sentences of everything else).
    Json,
}

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

/// What happens to UDP for destinations outside `direct`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UdpMode {
    /// Through the proxy's UDP relay (SOCKS5 UDP ASSOCIATE).
    #[default]
    Proxy,
    /// Refused.
    Block,
    /// Sent directly, unproxied.
    Direct,
}

/// Which of the program's listening sockets become a SOCKS BIND.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BindMode {
    /// Listens that follow a proxied connection (the FTP active-mode pattern).
    #[default]
    Auto,
    /// Every listen that is not on loopback.
    All,
    /// None.
    Off,
}

/// How `socksify` makes a program's traffic take the proxies.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// The preload library for what it can see, under the kernel guard (seccomp user
    /// notification) for everything else; the guard alone for static and Go programs.
    #[default]
    Auto,
    /// The preload library only: no kernel guard (setuid children keep their privileges, and
    /// programs that skip libc are not covered).
    Preload,
    /// The kernel guard only, without the library.
    Syscall,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Auto => "auto",
            Mode::Preload => "preload",
            Mode::Syscall => "syscall",
        }
    }
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Mode, String> {
        match s {
            "auto" => Ok(Mode::Auto),
            "preload" => Ok(Mode::Preload),
            "syscall" => Ok(Mode::Syscall),
            _ => Err(format!("unknown mode `{s}`: expected auto, preload or syscall")),
        }
    }
}

/// The file as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    mode: Option<Mode>,
    chain: Option<ChainMode>,
    chain_len: Option<Spanned<i64>>,
    dns: Option<DnsMode>,
    udp: Option<UdpMode>,
    bind: Option<BindMode>,
    connect_timeout_ms: Option<Spanned<i64>>,
    read_timeout_ms: Option<Spanned<i64>>,
    dead_hop_s: Option<Spanned<i64>>,
    log_format: Option<LogFormat>,
    isolate: Option<bool>,
    socks5_pipelining: Option<bool>,
    gssapi_service: Option<Spanned<String>>,
    direct: Option<Vec<Spanned<String>>>,
    fake_ipv4_range: Option<Spanned<String>>,
    fake_ipv6_range: Option<Spanned<String>>,
    log_file: Option<Spanned<String>>,
    dns_server: Option<Spanned<String>>,
    quiet: Option<bool>,
    #[serde(default)]
    proxy: Vec<RawProxy>,
    #[serde(default)]
    chains: std::collections::BTreeMap<String, RawChain>,
    #[serde(default)]
    route: Vec<RawRoute>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawChain {
    proxies: Spanned<Vec<Spanned<String>>>,
    chain: Option<ChainMode>,
    chain_len: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    #[serde(rename = "match")]
    patterns: Spanned<Vec<Spanned<String>>>,
    via: Spanned<String>,
    to: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProxy {
    url: Spanned<String>,
}

/// A checked configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub mode: Mode,
    pub chain: ChainMode,
    pub chain_len: usize,
    pub dns: DnsMode,
    pub udp: UdpMode,
    pub bind: BindMode,
    pub timeouts: Timeouts,
    /// How long every process of the session skips a hop found dead (zero: never skipped).
    pub dead_hop: Duration,
    /// `text` or `json` log lines.
    pub log_format: LogFormat,
    /// Each process its own SOCKS5 username/password (Tor then gives it a circuit of its own),
    /// for proxies whose URL has none.
    pub isolate: bool,
    /// SOCKS5 hops get greeting, authentication and request in one write where they take it
    /// (found out once per session); false: every hop step by step.
    pub socks5_pipelining: bool,
    /// The Kerberos service of every `socks5+gssapi://` hop: `rcmd` (Dante's), another service
    /// name, or a whole principal (`rcmd/proxy.example@REALM`).
    pub gssapi_service: String,
    pub direct: Vec<DirectRule>,
    pub fake_ipv4_range: Ipv4Net,
    pub fake_ipv6_range: Ipv6Net,
    pub log_file: Option<PathBuf>,
    /// Remote DNS: where the DNS stub sends, over TCP through the chain, the queries it cannot
    /// answer from the fake table (types other than A, AAAA and PTR of a fake address).
    pub dns_server: TargetAddr,
    /// Log nothing, not even failures (the command line's `-v` still wins).
    pub quiet: bool,
    /// The default chain: what no route sends elsewhere.
    pub proxies: Vec<Proxy>,
    /// `[chains.NAME]`, by name.
    pub chains: Vec<NamedChain>,
    /// `[[route]]`, in order: the first that matches wins.
    pub routes: Vec<Route>,
}

/// A service name (`rcmd`, `sockd`) or a principal (`rcmd/proxy.example@REALM`).
fn check_gssapi_service(s: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.len() <= 255
        && !s.chars().any(|c| c.is_control() || c.is_whitespace())
        && (s.contains('/') || !s.contains('@'));
    match ok {
        true => Ok(s.to_owned()),
        false => Err("expected a service name such as rcmd or sockd, or a principal such as \
                      rcmd/proxy.example@EXAMPLE.ORG"
            .into()),
    }
}

/// Fake addresses for remote DNS: 240.0.0.0/4 is reserved (RFC 1112) and 100::/64 is the
/// discard-only prefix (RFC 6666); neither carries real traffic.
pub const DEFAULT_FAKE_IPV4: &str = "240.0.0.0/8";
pub const DEFAULT_FAKE_IPV6: &str = "100::/64";

/// The DNS server behind the proxies for queries the stub does not answer itself.
pub const DEFAULT_DNS_SERVER: &str = "1.1.1.1:53";

pub const DEFAULT_CHAIN_LEN: usize = 2;
pub const DEFAULT_DIRECT: [&str; 2] = ["127.0.0.0/8", "::1/128"];
const MAX_TIMEOUT_MS: i64 = 3_600_000;
pub const DEFAULT_DEAD_HOP: Duration = Duration::from_secs(30);
const MAX_DEAD_HOP_S: i64 = 86_400;

impl Default for Config {
    fn default() -> Self {
        Config {
            mode: Mode::Auto,
            chain: ChainMode::Strict,
            chain_len: DEFAULT_CHAIN_LEN,
            dns: DnsMode::Remote,
            udp: UdpMode::Proxy,
            bind: BindMode::Auto,
            timeouts: Timeouts::default(),
            dead_hop: DEFAULT_DEAD_HOP,
            log_format: LogFormat::Text,
            isolate: false,
            socks5_pipelining: true,
            gssapi_service: crate::proxy::DEFAULT_GSSAPI_SERVICE.to_owned(),
            direct: DEFAULT_DIRECT.iter().map(|s| DirectRule::parse(s).expect("valid default")).collect(),
            fake_ipv4_range: DEFAULT_FAKE_IPV4.parse().expect("valid default"),
            fake_ipv6_range: DEFAULT_FAKE_IPV6.parse().expect("valid default"),
            log_file: None,
            dns_server: crate::proxy::parse_target(DEFAULT_DNS_SERVER).expect("valid default"),
            quiet: false,
            proxies: Vec::new(),
            chains: Vec::new(),
            routes: Vec::new(),
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
        self.text[..offset.min(self.text.len())].bytes().filter(|&b| b == b'\n').count() + 1
    }

    fn at(&self, span: std::ops::Range<usize>, key: &str, message: impl Into<String>) -> ConfigError {
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
        let key = line.and_then(|l| self.text.lines().nth(l - 1)).and_then(|text| {
            let key = text.split('=').next()?.trim();
            (text.contains('=') && !key.is_empty()).then(|| key.trim_matches('"').to_owned())
        });
        ConfigError { origin: self.origin.clone(), line, key, message: e.message().trim().to_owned() }
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
        if crate::proxychains::looks_like(&text) {
            return crate::proxychains::parse(&text, &path.display().to_string());
        }
        Config::parse(&text, &path.display().to_string())
    }

    /// The configuration as TOML that `Config::parse` reads back to the same configuration
    /// (passwords included: this is for writing a configuration file).
    pub fn to_toml(&self) -> String {
        let mode = |m: &dyn fmt::Debug| {
            let name = format!("{m:?}");
            let mut out = String::new();
            for (i, c) in name.chars().enumerate() {
                if c.is_uppercase() && i > 0 {
                    out.push('_');
                }
                out.push(c.to_ascii_lowercase());
            }
            out
        };
        let quote = |s: &str| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""));
        let mut t = String::new();
        t.push_str(&format!("mode = {}\n", quote(self.mode.name())));
        t.push_str(&format!("chain = {}\n", quote(&mode(&self.chain))));
        t.push_str(&format!("chain_len = {}\n", self.chain_len));
        t.push_str(&format!("dns = {}\n", quote(&mode(&self.dns))));
        t.push_str(&format!("udp = {}\n", quote(&mode(&self.udp))));
        t.push_str(&format!("bind = {}\n", quote(&mode(&self.bind))));
        t.push_str(&format!("connect_timeout_ms = {}\n", self.timeouts.connect.as_millis()));
        t.push_str(&format!("read_timeout_ms = {}\n", self.timeouts.read.as_millis()));
        t.push_str(&format!("dead_hop_s = {}\n", self.dead_hop.as_secs()));
        t.push_str(&format!("log_format = {}\n", quote(&mode(&self.log_format))));
        if self.isolate {
            t.push_str("isolate = true\n");
        }
        if !self.socks5_pipelining {
            t.push_str("socks5_pipelining = false\n");
        }
        if self.gssapi_service != crate::proxy::DEFAULT_GSSAPI_SERVICE {
            t.push_str(&format!("gssapi_service = {}\n", quote(&self.gssapi_service)));
        }
        let direct: Vec<String> = self.direct.iter().map(|r| quote(&r.to_string())).collect();
        t.push_str(&format!("direct = [{}]\n", direct.join(", ")));
        t.push_str(&format!("fake_ipv4_range = {}\n", quote(&self.fake_ipv4_range.to_string())));
        t.push_str(&format!("fake_ipv6_range = {}\n", quote(&self.fake_ipv6_range.to_string())));
        if let Some(f) = &self.log_file {
            t.push_str(&format!("log_file = {}\n", quote(&f.display().to_string())));
        }
        t.push_str(&format!("dns_server = {}\n", quote(&self.dns_server.to_string())));
        if self.quiet {
            t.push_str("quiet = true\n");
        }
        for p in &self.proxies {
            t.push_str(&format!("\n[[proxy]]\nurl = {}\n", quote(&p.to_url())));
        }
        for c in &self.chains {
            let urls: Vec<String> = c.proxies.iter().map(|p| quote(&p.to_url())).collect();
            t.push_str(&format!("\n[chains.{}]\nproxies = [{}]\n", quote(&c.name), urls.join(", ")));
            t.push_str(&format!("chain = {}\nchain_len = {}\n", quote(&mode(&c.mode)), c.chain_len));
        }
        for r in &self.routes {
            let patterns: Vec<String> = r.patterns.iter().map(|p| quote(&p.to_string())).collect();
            t.push_str(&format!(
                "\n[[route]]\nmatch = [{}]\nvia = {}\n",
                patterns.join(", "),
                quote(&self.via_name(r.via))
            ));
            if let Some(to) = &r.to {
                t.push_str(&format!("to = {}\n", quote(&to.to_string())));
            }
        }
        t
    }

    /// Parses and checks configuration text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let src = Source { origin: origin.to_owned(), text };
        let raw: RawConfig = toml::from_str(text).map_err(|e| src.toml_error(&e))?;
        let defaults = Config::default();

        let ms = |v: &Option<Spanned<i64>>, key: &str, default: Duration| match v {
            None => Ok(default),
            Some(s) if (1..=MAX_TIMEOUT_MS).contains(s.get_ref()) => {
                Ok(Duration::from_millis(*s.get_ref() as u64))
            }
            Some(s) => {
                Err(src.at(s.span(), key, format!("expected milliseconds from 1 to {MAX_TIMEOUT_MS}")))
            }
        };
        let timeouts = Timeouts {
            connect: ms(&raw.connect_timeout_ms, "connect_timeout_ms", defaults.timeouts.connect)?,
            read: ms(&raw.read_timeout_ms, "read_timeout_ms", defaults.timeouts.read)?,
        };
        let dead_hop = match &raw.dead_hop_s {
            None => defaults.dead_hop,
            Some(s) if (0..=MAX_DEAD_HOP_S).contains(s.get_ref()) => Duration::from_secs(*s.get_ref() as u64),
            Some(s) => {
                return Err(src.at(
                    s.span(),
                    "dead_hop_s",
                    format!("expected seconds from 0 (never skip a dead hop) to {MAX_DEAD_HOP_S}"),
                ))
            }
        };

        let mut proxies = Vec::with_capacity(raw.proxy.len());
        for p in &raw.proxy {
            let proxy =
                p.url.get_ref().parse::<Proxy>().map_err(|e| src.at(p.url.span(), "proxy.url", e.0))?;
            proxies.push(proxy);
        }

        let chain = raw.chain.unwrap_or_default();
        let chain_len = match &raw.chain_len {
            None => DEFAULT_CHAIN_LEN,
            Some(s) if *s.get_ref() >= 1 => *s.get_ref() as usize,
            Some(s) => return Err(src.at(s.span(), "chain_len", "expected a number of hops, 1 or more")),
        };
        let mut chains = Vec::with_capacity(raw.chains.len());
        for (name, c) in &raw.chains {
            let key = format!("chains.{name}.proxies");
            if RESERVED_CHAIN_NAMES.contains(&name.as_str()) {
                return Err(src.at(
                    c.proxies.span(),
                    &format!("chains.{name}"),
                    format!("`{name}` is a word of `via`, not a chain name"),
                ));
            }
            if c.proxies.get_ref().is_empty() {
                return Err(src.at(c.proxies.span(), &key, "expected one proxy URL or more"));
            }
            let proxies = c
                .proxies
                .get_ref()
                .iter()
                .map(|u| u.get_ref().parse::<Proxy>().map_err(|e| src.at(u.span(), &key, e.0)))
                .collect::<Result<Vec<_>, _>>()?;
            let mode = c.chain.unwrap_or(chain);
            let len_key = format!("chains.{name}.chain_len");
            let chain_len = match &c.chain_len {
                None => chain_len.min(proxies.len()),
                Some(s)
                    if *s.get_ref() >= 1
                        && (*s.get_ref() as usize <= proxies.len()
                            || !matches!(mode, ChainMode::Random | ChainMode::RoundRobin)) =>
                {
                    *s.get_ref() as usize
                }
                Some(s) => {
                    return Err(src.at(
                        s.span(),
                        &len_key,
                        format!("expected a number of hops from 1 to {}", proxies.len()),
                    ))
                }
            };
            chains.push(NamedChain { name: name.clone(), proxies, mode, chain_len });
        }
        let mut routes = Vec::with_capacity(raw.route.len());
        for r in &raw.route {
            if r.patterns.get_ref().is_empty() {
                return Err(src.at(r.patterns.span(), "route.match", "expected one pattern or more"));
            }
            let patterns = r
                .patterns
                .get_ref()
                .iter()
                .map(|p| {
                    Pattern::parse(p.get_ref()).ok_or_else(|| {
                        src.at(
                            p.span(),
                            "route.match",
                            format!(
                                "`{}` is not a pattern such as *.corp.example, .corp.example, host.example, \
                                 10.0.0.0/8, fd00::/8, 10.0.0.0/8:22, [fd00::/8]:22, *.corp:8000-8999 or :22",
                                p.get_ref()
                            ),
                        )
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            let name = r.via.get_ref().as_str();
            let via = match name {
                "direct" => Via::Direct,
                "block" => Via::Block,
                "default" => Via::Chain(0),
                _ => match chains.iter().position(|c| c.name == name) {
                    Some(i) => Via::Chain(i + 1),
                    None => {
                        let known: Vec<&str> = chains.iter().map(|c| c.name.as_str()).collect();
                        return Err(src.at(
                            r.via.span(),
                            "route.via",
                            format!(
                                "no chain is named `{name}`: expected direct, block, default{}{}",
                                if known.is_empty() { "" } else { " or one of " },
                                known.join(", ")
                            ),
                        ));
                    }
                },
            };
            if via == Via::Direct {
                if let Some(p) = patterns.iter().find(|p| matches!(p, Pattern::Name(_, Some(_)))) {
                    return Err(src.at(
                        r.via.span(),
                        "route.match",
                        format!("`{p}`: a name on a direct route is resolved by the system before its port is known, so it cannot have a port"),
                    ));
                }
            }
            let to = match &r.to {
                None => None,
                Some(t) if !matches!(via, Via::Chain(_)) => {
                    return Err(src.at(
                        t.span(),
                        "route.to",
                        "`to` rewrites what a chain is asked for: its route's via must be a chain",
                    ))
                }
                Some(t) => Some(Rewrite::parse(t.get_ref()).ok_or_else(|| {
                    src.at(
                        t.span(),
                        "route.to",
                        format!(
                            "`{}` is not HOST or HOST:PORT such as 192.0.2.7, 192.0.2.7:8080, [2001:db8::1]:443 or host.example:443",
                            t.get_ref()
                        ),
                    )
                })?),
            };
            routes.push(Route { patterns, via, to });
        }

        let direct = match &raw.direct {
            None => defaults.direct,
            Some(list) => list
                .iter()
                .map(|s| {
                    DirectRule::parse(s.get_ref()).ok_or_else(|| {
                        src.at(
                            s.span(),
                            "direct",
                            format!(
                                "`{}` is not an address or CIDR range such as 10.0.0.0/8, fd00::/8, \
                                 192.0.2.0/24:80 or [fd00::/8]:80",
                                s.get_ref()
                            ),
                        )
                    })
                })
                .collect::<Result<_, _>>()?,
        };

        let fake_ipv4_range = match &raw.fake_ipv4_range {
            None => defaults.fake_ipv4_range,
            Some(s) => match s.get_ref().parse::<Ipv4Net>() {
                Ok(net) if net.prefix_len() <= 24 => net.trunc(),
                _ => {
                    return Err(src.at(
                        s.span(),
                        "fake_ipv4_range",
                        "expected an IPv4 CIDR range of /24 or larger, e.g. 240.0.0.0/8",
                    ))
                }
            },
        };
        let fake_ipv6_range = match &raw.fake_ipv6_range {
            None => defaults.fake_ipv6_range,
            Some(s) => match s.get_ref().parse::<Ipv6Net>() {
                Ok(net) if net.prefix_len() <= 120 => net.trunc(),
                _ => {
                    return Err(src.at(
                        s.span(),
                        "fake_ipv6_range",
                        "expected an IPv6 CIDR range of /120 or larger, e.g. 100::/64",
                    ))
                }
            },
        };
        let log_file = match &raw.log_file {
            None => None,
            Some(s) if Path::new(s.get_ref()).is_absolute() => Some(PathBuf::from(s.get_ref())),
            Some(s) => return Err(src.at(s.span(), "log_file", "expected an absolute path")),
        };

        let dns_server = match &raw.dns_server {
            None => defaults.dns_server,
            Some(s) => crate::proxy::parse_target(s.get_ref()).map_err(|e| {
                src.at(s.span(), "dns_server", format!("{e}, e.g. 1.1.1.1:53 or [2606:4700::1111]:53"))
            })?,
        };
        let gssapi_service = match &raw.gssapi_service {
            None => defaults.gssapi_service,
            Some(s) => {
                check_gssapi_service(s.get_ref()).map_err(|e| src.at(s.span(), "gssapi_service", e))?
            }
        };
        let mut config = Config {
            mode: raw.mode.unwrap_or_default(),
            chain,
            chain_len,
            dns: raw.dns.unwrap_or_default(),
            udp: raw.udp.unwrap_or_default(),
            bind: raw.bind.unwrap_or_default(),
            timeouts,
            dead_hop,
            log_format: raw.log_format.unwrap_or_default(),
            isolate: raw.isolate.unwrap_or(false),
            socks5_pipelining: raw.socks5_pipelining.unwrap_or(true),
            gssapi_service,
            direct,
            fake_ipv4_range,
            fake_ipv6_range,
            log_file,
            dns_server,
            quiet: raw.quiet.unwrap_or(false),
            proxies,
            chains,
            routes,
        };
        config.check_chain_len().map_err(|message| ConfigError {
            origin: src.origin.clone(),
            line: raw.chain_len.as_ref().map(|s| src.line_of(s.span().start)),
            key: Some("chain_len".to_owned()),
            message,
        })?;
        config.name_gssapi_service();
        Ok(config)
    }

    fn check_chain_len(&self) -> Result<(), String> {
        let n = self.proxies.len();
        if matches!(self.chain, ChainMode::Random | ChainMode::RoundRobin) && n > 0 && self.chain_len > n {
            return Err(format!("chain_len is {} but only {n} proxies are listed", self.chain_len));
        }
        Ok(())
    }

    /// Replaces the proxies with `urls` (the command line's `--proxy`), checked as the file's are.
    pub fn with_proxies<S: AsRef<str>>(mut self, urls: &[S]) -> Result<Config, ConfigError> {
        let err =
            |message: String| ConfigError { origin: "--proxy".to_owned(), line: None, key: None, message };
        self.proxies = urls
            .iter()
            .map(|u| u.as_ref().parse::<Proxy>().map_err(|e| err(e.0)))
            .collect::<Result<_, _>>()?;
        self.check_chain_len().map_err(err)?;
        self.name_gssapi_service();
        Ok(self)
    }

    /// Gives every GSSAPI hop the configured service.
    fn name_gssapi_service(&mut self) {
        let service = &self.gssapi_service;
        let hops = self.proxies.iter_mut().chain(self.chains.iter_mut().flat_map(|c| c.proxies.iter_mut()));
        for p in hops.filter(|p| p.gssapi.is_some()) {
            p.gssapi = Some(service.clone());
        }
    }

    /// The default chain (the top-level `[[proxy]]` list).
    pub fn chain(&self) -> Chain {
        Chain::new(self.proxies.clone(), self.chain, self.chain_len, self.timeouts)
            .isolating(self.isolate)
            .pipelining(self.socks5_pipelining)
    }

    /// Every chain, by `Via::Chain` index: the default one first, then `chains` in order.
    pub fn chains(&self) -> Vec<Chain> {
        let named = self.chains.iter().map(|c| {
            Chain::new(c.proxies.clone(), c.mode, c.chain_len, self.timeouts)
                .isolating(self.isolate)
                .pipelining(self.socks5_pipelining)
        });
        std::iter::once(self.chain()).chain(named).collect()
    }

    /// `chains`, remembering dead hops and round-robin positions in a session's `memory`.
    pub fn chains_remembering(&self, memory: Option<std::sync::Arc<crate::memory::HopMemory>>) -> Vec<Chain> {
        let chains = self.chains();
        match memory {
            None => chains,
            Some(m) => chains
                .into_iter()
                .enumerate()
                .map(|(i, c)| c.remembering(m.clone(), i, self.dead_hop))
                .collect(),
        }
    }

    /// Route `i` (from 0) in words for messages: `[[route]] 2 (match = ["*.ads.example"],
    /// via = "block")`, with its `to` when it has one.
    pub fn describe_route(&self, i: usize) -> String {
        let Some(r) = self.routes.get(i) else { return format!("[[route]] {}", i + 1) };
        let patterns: Vec<String> = r.patterns.iter().map(|p| format!("\"{p}\"")).collect();
        let to = r.to.as_ref().map_or(String::new(), |t| format!(", to = \"{t}\""));
        format!(
            "[[route]] {} (match = [{}], via = \"{}\"{to})",
            i + 1,
            patterns.join(", "),
            self.via_name(r.via)
        )
    }

    /// The name of chain `i` (`Via::Chain(i)`): `default` for the top-level list.
    pub fn chain_name(&self, i: usize) -> &str {
        match i {
            0 => "default",
            i => self.chains.get(i - 1).map_or("?", |c| c.name.as_str()),
        }
    }

    /// How `via` is written in a route.
    pub fn via_name(&self, via: Via) -> String {
        match via {
            Via::Chain(i) => self.chain_name(i).to_owned(),
            Via::Direct => "direct".to_owned(),
            Via::Block => "block".to_owned(),
        }
    }

    /// True when some chain (the default one or a named one) has a proxy.
    pub fn has_proxies(&self) -> bool {
        !self.proxies.is_empty() || !self.chains.is_empty()
    }

    /// Every proxy of every chain.
    pub fn all_proxies(&self) -> impl Iterator<Item = &Proxy> {
        self.proxies.iter().chain(self.chains.iter().flat_map(|c| c.proxies.iter()))
    }

    /// True when connections to `addr` bypass the proxies. A linear scan of the rules, for
    /// one-off checks: what matches per connection is the [`DirectSet`] compiled from them once
    /// (`Router::is_direct`), O(log n), which gives the same answers.
    ///
    /// [`DirectSet`]: crate::directset::DirectSet
    pub fn is_direct(&self, addr: &SocketAddr) -> bool {
        let ip = match addr.ip() {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
            v4 => v4,
        };
        self.direct.iter().any(|rule| rule.net.contains(&ip) && rule.port.is_none_or(|p| p == addr.port()))
    }
}

/// Words a chain cannot be named.
const RESERVED_CHAIN_NAMES: [&str; 3] = crate::routes::RESERVED;

/// The environment variable that names the configuration file.
pub const CONFIG_ENV: &str = "SOCKSIFY_CONFIG";
/// The system-wide configuration file.
pub const SYSTEM_CONFIG: &str = "/etc/socksify/config.toml";

/// The configuration file to use: `explicit` (the command line's `-f`), else `$SOCKSIFY_CONFIG`,
/// else the user's (`$XDG_CONFIG_HOME/socksify/config.toml`, by default
/// `~/.config/socksify/config.toml`), else the system's (`/etc/socksify/config.toml`). A file
/// named explicitly or by the variable must exist; the others are optional.
pub fn locate(explicit: Option<&Path>) -> Result<Option<PathBuf>, ConfigError> {
    locate_ours(explicit)
        .map(|found| found.or_else(|| proxychains_locations().into_iter().find(|p| p.is_file())))
}

/// [`locate`] without proxychains-ng's places: `-f`, `$SOCKSIFY_CONFIG`, the user's file, the
/// system's.
pub fn locate_ours(explicit: Option<&Path>) -> Result<Option<PathBuf>, ConfigError> {
    let named = explicit.map(|p| (p.to_path_buf(), "-f"));
    let named = named.or_else(|| {
        std::env::var_os(CONFIG_ENV).filter(|v| !v.is_empty()).map(|v| (PathBuf::from(v), CONFIG_ENV))
    });
    if let Some((path, how)) = named {
        if !path.is_file() {
            return Err(ConfigError {
                origin: path.display().to_string(),
                line: None,
                key: None,
                message: format!("no such configuration file (named by {how})"),
            });
        }
        return Ok(Some(std::path::absolute(&path).unwrap_or(path)));
    }
    let ours = user_config().into_iter().chain([PathBuf::from(SYSTEM_CONFIG)]);
    Ok(ours.into_iter().find(|p| p.is_file()))
}

/// proxychains-ng's own search order, after socksify's: `$PROXYCHAINS_CONF_FILE`,
/// `./proxychains.conf`, `~/.proxychains/proxychains.conf`, `/etc/proxychains.conf`,
/// `/etc/proxychains4.conf`.
pub fn proxychains_locations() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::env::var_os("PROXYCHAINS_CONF_FILE")
        .filter(|x| !x.is_empty())
        .map(PathBuf::from)
        .into_iter()
        .collect();
    v.push(PathBuf::from("proxychains.conf"));
    if let Some(home) = std::env::var_os("HOME") {
        v.push(PathBuf::from(home).join(".proxychains/proxychains.conf"));
    }
    v.push(PathBuf::from("/etc/proxychains.conf"));
    v.push(PathBuf::from("/etc/proxychains4.conf"));
    v.into_iter().map(|p| std::path::absolute(&p).unwrap_or(p)).collect()
}

/// The user's configuration file, whether or not it exists.
pub fn user_config() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("socksify").join("config.toml"))
}

fn parse_net(s: &str) -> Option<IpNet> {
    s.parse::<IpNet>().ok().or_else(|| s.parse::<IpAddr>().ok().map(IpNet::from))
}

/// A destination that bypasses the proxies: an address range, and optionally one port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DirectRule {
    pub net: IpNet,
    pub port: Option<u16>,
}

impl DirectRule {
    /// `10.0.0.0/8`, `192.0.2.7`, `192.0.2.0/24:80`, `fd00::/8`, `[fd00::/8]:80`.
    pub fn parse(s: &str) -> Option<DirectRule> {
        if let Some(rest) = s.strip_prefix('[') {
            let (net, port) = rest.split_once("]:")?;
            return Some(DirectRule { net: parse_net(net)?, port: Some(port.parse().ok()?) });
        }
        if let Some(net) = parse_net(s) {
            return Some(DirectRule { net, port: None });
        }
        let (net, port) = s.rsplit_once(':')?;
        let net = parse_net(net).filter(|n| matches!(n, IpNet::V4(_)))?;
        Some(DirectRule { net, port: Some(port.parse().ok()?) })
    }
}

impl fmt::Display for DirectRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.port, self.net) {
            (None, net) => write!(f, "{net}"),
            (Some(p), IpNet::V4(net)) => write!(f, "{net}:{p}"),
            (Some(p), IpNet::V6(net)) => write!(f, "[{net}]:{p}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::ProxyKind;

    #[test]
    fn defaults_are_as_documented() {
        let c = Config::parse("", "t.toml").unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.mode, Mode::Auto);
        assert_eq!(c.chain, ChainMode::Strict);
        assert_eq!(c.chain_len, 2);
        assert_eq!(c.dns, DnsMode::Remote);
        assert_eq!(c.udp, UdpMode::Proxy);
        assert_eq!(c.timeouts.connect, Duration::from_millis(8000));
        assert_eq!(c.timeouts.read, Duration::from_millis(15000));
        assert_eq!(c.dns_server.to_string(), "1.1.1.1:53");
        assert!(c.is_direct(&"127.0.0.1:80".parse().unwrap()));
        assert!(c.is_direct(&"[::1]:80".parse().unwrap()));
        assert!(c.is_direct(&"[::ffff:127.0.0.1]:80".parse().unwrap()));
        assert!(!c.is_direct(&"192.0.2.1:80".parse().unwrap()));
    }

    #[test]
    fn a_full_file_parses() {
        let text = r#"
mode = "syscall"
chain = "random"
chain_len = 2
dns = "local"
udp = "block"
bind = "all"
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
        assert_eq!(c.mode, Mode::Syscall);
        assert_eq!(c.chain, ChainMode::Random);
        assert_eq!(c.dns, DnsMode::Local);
        assert_eq!(c.udp, UdpMode::Block);
        assert_eq!(c.bind, BindMode::All);
        assert_eq!(c.timeouts.connect, Duration::from_millis(500));
        assert_eq!(c.proxies.len(), 3);
        assert_eq!(c.proxies[0].creds.as_ref().unwrap().pass, "p@ss");
        assert_eq!(c.proxies[1].kind, ProxyKind::Socks4a);
        assert!(c.is_direct(&"10.9.9.9:1".parse().unwrap()));
        assert!(c.is_direct(&"192.0.2.7:1".parse().unwrap()));
        assert!(!c.is_direct(&"127.0.0.1:1".parse().unwrap()), "the list replaces the default");
    }

    fn err(text: &str) -> ConfigError {
        Config::parse(text, "my.toml").unwrap_err()
    }

    #[test]
    fn errors_name_file_line_and_key() {
        let e = err("chain = \"strict\"\nchian_len = 3\n");
        assert_eq!((e.line, e.key.as_deref()), (Some(2), Some("chian_len")));
        assert!(e.message.contains("unknown field"), "{e}");
        assert!(e.to_string().starts_with("my.toml, line 2, key `chian_len`: "), "{e}");

        let e = err("\nchain = \"fastest\"\n");
        assert_eq!((e.line, e.key.as_deref()), (Some(2), Some("chain")));
        assert!(e.message.contains("strict"), "lists what is expected: {e}");

        let e = err("connect_timeout_ms = \"soon\"\n");
        assert_eq!(e.key.as_deref(), Some("connect_timeout_ms"));

        let e = err("read_timeout_ms = 0\n");
        assert_eq!((e.line, e.key.as_deref()), (Some(1), Some("read_timeout_ms")));

        let e = err("[[proxy]]\nurl = \"socks5://a:b@h:99999\"\n");
        assert_eq!((e.line, e.key.as_deref()), (Some(2), Some("proxy.url")));
        assert!(e.message.contains("port") && !e.message.contains(":b@"), "{e}");

        let e = err("[[proxy]]\nurl = \"socks5://h:1\"\nuser = \"x\"\n");
        assert_eq!((e.line, e.key.as_deref()), (Some(3), Some("user")));

        let e = err("direct = [\"10.0.0.0/33\"]");
        assert_eq!(e.key.as_deref(), Some("direct"));

        let e = err("chain = \"round_robin\"\nchain_len = 3\n[[proxy]]\nurl = \"socks5://h:1\"\n");
        assert_eq!((e.line, e.key.as_deref()), (Some(2), Some("chain_len")));

        let e = err("fake_ipv4_range = \"10.0.0.0/30\"");
        assert_eq!(e.key.as_deref(), Some("fake_ipv4_range"));
        let e = err("log_file = \"relative.log\"");
        assert_eq!(e.key.as_deref(), Some("log_file"));
        let e = err("dns_server = \"1.1.1.1\"");
        assert_eq!(e.key.as_deref(), Some("dns_server"));

        let e = err("chain_len = 0");
        assert_eq!(e.key.as_deref(), Some("chain_len"));

        let e = err("chain = [");
        assert_eq!(e.line, Some(1));
    }

    #[test]
    fn command_line_proxies_replace_the_files_and_are_checked() {
        let c = Config::parse("chain = \"random\"\nchain_len = 2\n", "t").unwrap();
        let c2 = c.clone().with_proxies(&["socks5://a:1", "socks4://b:2"]).unwrap();
        assert_eq!(c2.proxies.len(), 2);
        let e = c.clone().with_proxies(&["socks5://a:1"]).unwrap_err();
        assert!(e.to_string().starts_with("--proxy: chain_len is 2"), "{e}");
        let e = c.with_proxies(&["socks9://a:1"]).unwrap_err();
        assert!(e.to_string().contains("unknown scheme"), "{e}");
    }

    #[test]
    fn a_route_may_rewrite_what_its_chain_is_asked_for() {
        let ok = "[[proxy]]\nurl = \"socks5://10.0.0.1:1080\"\n[[route]]\nmatch = [\"192.0.2.1:80\"]\nvia = \"default\"\nto = \"[2001:db8::1]:8080\"\n";
        let c = Config::parse(ok, "t").unwrap();
        assert_eq!(c.routes[0].to.as_ref().unwrap().to_string(), "[2001:db8::1]:8080");
        assert_eq!(Config::parse(&c.to_toml(), "t2").unwrap(), c);
        let e = Config::parse(&ok.replace("\"default\"", "\"direct\""), "t").unwrap_err();
        assert_eq!((e.line, e.key.as_deref()), (Some(6), Some("route.to")));
        let e = Config::parse(&ok.replace("[2001:db8::1]:8080", "a b"), "t").unwrap_err();
        assert!(e.message.contains("is not HOST or HOST:PORT"), "{e}");
    }

    #[test]
    fn direct_rules_with_ports() {
        let c =
            Config::parse("direct = [\"192.0.2.0/24:80\", \"[fd00::/8]:443\", \"10.0.0.1\"]", "t").unwrap();
        assert!(c.is_direct(&"192.0.2.9:80".parse().unwrap()));
        assert!(!c.is_direct(&"192.0.2.9:81".parse().unwrap()));
        assert!(c.is_direct(&"[fd00::1]:443".parse().unwrap()));
        assert!(!c.is_direct(&"[fd00::1]:80".parse().unwrap()));
        assert!(c.is_direct(&"10.0.0.1:1".parse().unwrap()));
        assert_eq!(c.direct[1].to_string(), "[fd00::/8]:443");
    }

    #[test]
    fn toml_output_reads_back_the_same() {
        let text = "chain = \"round_robin\"\nchain_len = 2\ndns = \"local\"\nudp = \"block\"\nbind = \"off\"\nquiet = true\ndead_hop_s = 5\nlog_format = \"json\"\nisolate = true\nsocks5_pipelining = false\ndirect = [\"10.0.0.0/8:22\"]\n[[proxy]]\nurl = \"socks5://us%40er:p%3Ass@[::1]:1\"\n[[proxy]]\nurl = \"http://h:8\"\n";
        let c = Config::parse(text, "t").unwrap();
        assert_eq!((c.dead_hop.as_secs(), c.log_format, c.isolate), (5, LogFormat::Json, true));
        assert!(!c.socks5_pipelining);
        let again = Config::parse(&c.to_toml(), "t2").unwrap();
        assert_eq!(again, c);
        let e = Config::parse("dead_hop_s = -1\n", "t").unwrap_err();
        assert_eq!((e.line, e.key.as_deref()), (Some(1), Some("dead_hop_s")));
        assert!(Config::parse("log_format = \"xml\"\n", "t").is_err());
        let d = Config::default();
        assert_eq!((d.dead_hop.as_secs(), d.log_format, d.isolate), (30, LogFormat::Text, false));
        assert!(d.socks5_pipelining);
    }

    #[test]
    fn gssapi_hops_take_the_configured_service_everywhere() {
        let text = "gssapi_service = \"sockd\"\n[[proxy]]\nurl = \"socks5+gssapi://p.example\"\n\
                    [[proxy]]\nurl = \"socks5://q.example\"\n[chains.k]\nproxies = [\"socks5h+gssapi://[fd00::1]:1\"]\n";
        let c = Config::parse(text, "t").unwrap();
        assert_eq!(c.proxies[0].gssapi.as_deref(), Some("sockd"));
        assert_eq!(c.proxies[0].gssapi_principal().as_deref(), Some("sockd@p.example"));
        assert_eq!(c.proxies[1].gssapi, None);
        assert_eq!(c.chains[0].proxies[0].gssapi_principal().as_deref(), Some("sockd@fd00::1"));
        assert_eq!(Config::parse(&c.to_toml(), "t2").unwrap(), c);
        // -p keeps the file's service.
        let p = c.with_proxies(&["socks5+gssapi://r.example"]).unwrap();
        assert_eq!(p.proxies[0].gssapi_principal().as_deref(), Some("sockd@r.example"));
        // A whole principal is used as written; the default is Dante's rcmd.
        let c = Config::parse(
            "gssapi_service = \"rcmd/p.example@R\"\n[[proxy]]\nurl = \"socks5+gssapi://p\"\n",
            "t",
        )
        .unwrap();
        assert_eq!(c.proxies[0].gssapi_principal().as_deref(), Some("rcmd/p.example@R"));
        let c = Config::parse("[[proxy]]\nurl = \"socks5+gssapi://10.0.0.1\"\n", "t").unwrap();
        assert_eq!(c.proxies[0].gssapi_principal().as_deref(), Some("rcmd@10.0.0.1"));
        assert!(!c.to_toml().contains("gssapi_service"));
        for bad in ["", "rcmd@host", "a b", "x\\ty"] {
            let e = Config::parse(&format!("gssapi_service = \"{bad}\"\n"), "t").unwrap_err();
            assert_eq!(e.key.as_deref(), Some("gssapi_service"), "{bad:?}");
        }
        for bad in ["socks4+gssapi://h", "http+gssapi://h"] {
            let e = bad.parse::<Proxy>().unwrap_err();
            assert!(e.0.contains("GSSAPI is a SOCKS5 method"), "{e}");
        }
    }

    #[test]
    fn chains_and_routes_parse_check_and_read_back() {
        let text = r#"
chain = "round_robin"
chain_len = 1
[[proxy]]
url = "socks5://10.9.0.1:1080"
[chains.corp]
proxies = ["socks5://10.0.0.1:1080", "socks4a://10.0.0.2:1080"]
chain = "strict"
[chains.tor]
proxies = ["socks5h://127.0.0.1:9050"]
[[route]]
match = ["*.corp.example", "10.0.0.0/8", "[fd00::/8]:22"]
via = "corp"
[[route]]
match = [".onion"]
via = "tor"
[[route]]
match = [":25", "*.ads.example"]
via = "block"
[[route]]
match = ["printer.lan"]
via = "direct"
[[route]]
match = ["*"]
via = "default"
"#;
        let c = Config::parse(text, "t").unwrap();
        assert_eq!(c.chains.len(), 2);
        assert_eq!(
            (c.chains[0].name.as_str(), c.chains[0].mode, c.chains[0].chain_len),
            ("corp", ChainMode::Strict, 1)
        );
        assert_eq!(c.chains[1].mode, ChainMode::RoundRobin, "the top-level mode is the default");
        assert_eq!(c.routes.len(), 5);
        assert_eq!(c.routes[0].via, Via::Chain(1));
        assert_eq!(c.routes[1].via, Via::Chain(2));
        assert_eq!(c.routes[2].via, Via::Block);
        assert_eq!(c.routes[3].via, Via::Direct);
        assert_eq!(c.routes[4].via, Via::Chain(0));
        assert_eq!(c.chains().len(), 3);
        assert_eq!(c.chain_name(2), "tor");
        assert_eq!(c.all_proxies().count(), 4);
        assert_eq!(Config::parse(&c.to_toml(), "again").unwrap(), c);
    }

    #[test]
    fn route_errors_name_the_line_and_key() {
        let base = "[chains.corp]\nproxies = [\"socks5://h:1\"]\n";
        let e = err(&format!("{base}[[route]]\nmatch = [\"*.x\"]\nvia = \"crop\"\n"));
        assert_eq!((e.line, e.key.as_deref()), (Some(5), Some("route.via")));
        assert!(e.message.contains("no chain is named `crop`") && e.message.contains("corp"), "{e}");
        let e = err(&format!("{base}[[route]]\nmatch = [\"10.0.0.0/33\"]\nvia = \"corp\"\n"));
        assert_eq!((e.line, e.key.as_deref()), (Some(4), Some("route.match")));
        let e = err(&format!("{base}[[route]]\nmatch = []\nvia = \"corp\"\n"));
        assert_eq!(e.key.as_deref(), Some("route.match"));
        let e = err("[[route]]\nmatch = [\"*.lan:22\"]\nvia = \"direct\"\n");
        assert!(e.message.contains("cannot have a port"), "{e}");
        let e = err("[chains.direct]\nproxies = [\"socks5://h:1\"]\n");
        assert!(e.message.contains("word of `via`"), "{e}");
        let e = err("[chains.x]\nproxies = []\n");
        assert_eq!(e.key.as_deref(), Some("chains.x.proxies"));
        let e = err("[chains.x]\nproxies = [\"socks9://h:1\"]\n");
        assert_eq!((e.line, e.key.as_deref()), (Some(2), Some("chains.x.proxies")));
        let e = err("[chains.x]\nproxies = [\"socks5://h:1\"]\nchain = \"random\"\nchain_len = 2\n");
        assert_eq!((e.line, e.key.as_deref()), (Some(4), Some("chains.x.chain_len")));
        let e = err("[[route]]\nmatch = [\"*.x\"]\nvia = \"corp\"\nextra = 1\n");
        assert_eq!(e.key.as_deref(), Some("extra"));
    }

    #[test]
    fn a_missing_file_is_an_error() {
        let e = Config::load(Path::new("/nonexistent/socksify.toml")).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/socksify.toml: cannot read"), "{e}");
    }
}
