//! `log_format = "json"`: one JSON object a line. A connection decision is
//! `{"time", "pid", "program", "destination", "route", "chain", "hops", "result", "errno",
//! "ms"}` (plus `"error"` when it failed); every other line is `{"time", "pid", "program",
//! "level", "message"}`. Written by hand (a few fields, no allocation-heavy serializer in the
//! library's hooks); strings are escaped as RFC 8259 asks.

use std::fmt::Write;

use crate::addr::TargetAddr;
use crate::config::Config;
use crate::explain::{self, Why};
use crate::routes::Via;

/// What became of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Through the chain.
    Proxied,
    /// As the program asked (a direct rule or route).
    Direct,
    /// Refused by a `block` route.
    Refused,
    /// It could not go through the chain: the call failed (never direct).
    Failed,
}

impl Outcome {
    pub fn word(self) -> &'static str {
        match self {
            Outcome::Proxied => "proxied",
            Outcome::Direct => "direct",
            Outcome::Refused => "refused",
            Outcome::Failed => "failed",
        }
    }
}

/// One connection decision.
pub struct Decision<'a> {
    pub pid: u32,
    pub program: &'a str,
    /// What the program connected to, as it named it (a fake address's name and port).
    pub destination: &'a TargetAddr,
    pub outcome: Outcome,
    /// The chain's index (`Config::chains`), for a connection that took or tried one.
    pub chain: Option<usize>,
    /// The hops it went through (or tried), without passwords.
    pub hops: &'a [String],
    pub errno: i32,
    pub error: Option<&'a str>,
    pub ms: u64,
}

impl Decision<'_> {
    /// The line, newline included, for `config`'s routes.
    pub fn line(&self, config: &Config) -> String {
        let port = match self.destination {
            TargetAddr::Ip(sa) => sa.port(),
            TargetAddr::Domain(_, p) => *p,
        };
        let (why, via) = explain::decide(config, self.destination, Some(port));
        let route = match &why {
            Why::ThisHost => "this host".to_owned(),
            Why::DirectList(rule) => format!("direct rule {rule}"),
            Why::Route(i, pattern) => format!("[[route]] {} ({pattern})", i + 1),
            Why::Default => "default".to_owned(),
        };
        let chain = match (self.chain, via) {
            (Some(c), _) | (None, Via::Chain(c)) => Some(config.chain_name(c)),
            _ => None,
        };
        let mut o = head(self.pid, self.program);
        let _ = write!(
            o,
            ",\"destination\":{},\"route\":{}",
            quote(&self.destination.to_string()),
            quote(&route)
        );
        match chain {
            Some(c) if self.outcome != Outcome::Direct && self.outcome != Outcome::Refused => {
                let _ = write!(o, ",\"chain\":{}", quote(c));
            }
            _ => o.push_str(",\"chain\":null"),
        }
        o.push_str(",\"hops\":[");
        for (i, h) in self.hops.iter().enumerate() {
            if i > 0 {
                o.push(',');
            }
            o.push_str(&quote(h));
        }
        let _ = write!(o, "],\"result\":\"{}\",\"errno\":", self.outcome.word());
        match self.errno {
            0 => o.push_str("null"),
            e => {
                let _ = write!(o, "{e}");
            }
        }
        if let Some(e) = self.error {
            let _ = write!(o, ",\"error\":{}", quote(e));
        }
        let _ = writeln!(o, ",\"ms\":{}}}", self.ms);
        o
    }
}

/// Any other line: `level` is `error` or `info`.
pub fn message(pid: u32, program: &str, level: &str, text: &str) -> String {
    let mut o = head(pid, program);
    let _ = writeln!(o, ",\"level\":\"{level}\",\"message\":{}}}", quote(text));
    o
}

fn head(pid: u32, program: &str) -> String {
    let mut o = String::with_capacity(256);
    let _ = write!(o, "{{\"time\":\"{}\",\"pid\":{pid},\"program\":{}", now_rfc3339(), quote(program));
    o
}

/// `s` as a JSON string.
pub fn quote(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            '\r' => o.push_str("\\r"),
            '\t' => o.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(o, "\\u{:04x}", c as u32);
            }
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

/// The time now, UTC, to the millisecond: `2026-12-04T03:45:00.123Z`.
pub fn now_rfc3339() -> String {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
    rfc3339(ts.tv_sec, (ts.tv_nsec / 1_000_000) as u32)
}

fn rfc3339(secs: i64, ms: u32) -> String {
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Days to a civil date (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}Z", rem / 3600, rem / 60 % 60, rem % 60)
}

/// The name of process `pid` (its `comm`), or `?`.
pub fn program_of(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/comm"))
        .map_or_else(|_| "?".to_owned(), |b| String::from_utf8_lossy(&b).trim_end().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_civil_and_utc() {
        assert_eq!(rfc3339(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400, 5), "2000-02-29T00:00:00.005Z");
        assert_eq!(rfc3339(1_796_355_900, 123), "2026-12-04T03:45:00.123Z");
    }

    #[test]
    fn strings_are_escaped() {
        assert_eq!(quote("a\"b\\c\n\u{1}é"), "\"a\\\"b\\\\c\\n\\u0001é\"");
    }

    #[test]
    fn a_decision_names_its_route_and_chain() {
        let config = Config::parse(
            "[[proxy]]\nurl = \"socks5://10.0.0.1:1080\"\n[chains.corp]\nproxies = [\"socks5://10.0.0.2:1080\"]\n\
             [[route]]\nmatch = [\"*.corp.example\"]\nvia = \"corp\"\n[[route]]\nmatch = [\"ads.example\"]\nvia = \"block\"\n",
            "t",
        )
        .unwrap();
        let dest = TargetAddr::Domain("git.corp.example".into(), 22);
        let hops = vec!["socks5://10.0.0.2:1080".to_owned()];
        let d = Decision {
            pid: 7,
            program: "ssh \"x\"",
            destination: &dest,
            outcome: Outcome::Proxied,
            chain: Some(1),
            hops: &hops,
            errno: 0,
            error: None,
            ms: 12,
        };
        let line = d.line(&config);
        assert!(line.ends_with("}\n"), "{line}");
        assert!(line.contains(r#""pid":7,"program":"ssh \"x\"","destination":"git.corp.example:22","route":"[[route]] 1 (*.corp.example)","chain":"corp","hops":["socks5://10.0.0.2:1080"],"result":"proxied","errno":null,"ms":12}"#), "{line}");
        let ads = TargetAddr::Domain("ads.example".into(), 443);
        let d = Decision {
            destination: &ads,
            outcome: Outcome::Refused,
            chain: None,
            hops: &[],
            errno: 111,
            ..d
        };
        let line = d.line(&config);
        assert!(
            line.contains(
                r#""route":"[[route]] 2 (ads.example)","chain":null,"hops":[],"result":"refused","errno":111"#
            ),
            "{line}"
        );
    }
}
