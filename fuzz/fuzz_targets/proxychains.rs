//! proxychains.conf: `proxychains::looks_like` and `proxychains::parse` on arbitrary text (the
//! input, decoded lossily).
//!
//! Properties: no panic, no hang; an error points at a line of the text; a configuration that
//! parses can be used (its chain built, its direct list queried, everything formatted).
#![no_main]

use libfuzzer_sys::fuzz_target;
use socksify_core::proxychains;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = proxychains::looks_like(&text);
    match proxychains::parse(&text, "fuzz") {
        Ok(config) => {
            let _ = format!("{config:?}");
            for p in &config.proxies {
                let _ = (p.to_string(), p.target());
            }
            let chain = config.chain();
            let _ = (chain.hops_per_connection(), chain.proxies().len());
            for addr in ["127.0.0.1:1", "[::1]:1", "[::ffff:10.1.2.3]:1", "192.168.1.1:80"] {
                let _ = config.is_direct(&addr.parse().unwrap());
            }
        }
        Err(e) => {
            let msg = e.to_string();
            assert!(msg.starts_with("fuzz"), "{msg}");
            if let Some(line) = e.line {
                let lines = text.lines().count().max(1);
                assert!((1..=lines).contains(&line), "line {line} of a text of {lines} lines: {msg}");
            }
        }
    }
});
