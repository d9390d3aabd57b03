//! `direct` rules at scale: how long a configuration with N rules takes to parse and compile,
//! and what one lookup costs with 1 rule and with N, next to the linear scan it replaces.
//!
//!     cargo run --release -p socksify-core --example direct_rules [-- N]
//!
//! The rules are the ones `scripts/bench` writes for its "200,000 direct rules" row: every
//! other address from 100.64.0.0 as a /32 (no two touch, so none merge); the looked-up
//! destination, the bench's echo target, matches none.

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::Instant;

use socksify_core::{Config, DirectSet};

/// `n` rules: every other address from 100.64.0.0, as a /32 (the first is 127.0.0.0/8 when `n`
/// is 1, the default's first rule).
fn config_text(n: u32) -> String {
    let mut t = String::from("direct = [\n");
    if n == 1 {
        t.push_str("\"127.0.0.0/8\",\n");
    } else {
        for i in 0..n {
            let a = 0x6440_0000u32 + 2 * i; // 100.64.0.0 + 2i
            t.push_str(&format!("\"{}/32\",\n", std::net::Ipv4Addr::from(a)));
        }
    }
    t.push_str("]\n[[proxy]]\nurl = \"socks5://10.77.0.2:1080\"\n");
    t
}

/// Nanoseconds per call of `f`, the best of 5 rounds of `iters` calls.
fn per_call(iters: u32, mut f: impl FnMut() -> bool) -> f64 {
    let mut best = f64::MAX;
    for _ in 0..5 {
        let t = Instant::now();
        for _ in 0..iters {
            black_box(f());
        }
        best = best.min(t.elapsed().as_nanos() as f64 / f64::from(iters));
    }
    best
}

fn main() {
    let n: u32 = std::env::args().nth(1).map_or(200_000, |s| s.parse().expect("a number of rules"));
    let dest: SocketAddr = "10.77.0.2:9007".parse().unwrap();
    let mapped: SocketAddr = "[::ffff:10.77.0.2]:9007".parse().unwrap();
    let hit: SocketAddr =
        format!("{}:80", std::net::Ipv4Addr::from(0x6440_0000u32 + 2 * (n / 2))).parse().unwrap();

    for rules in [1, n] {
        let text = config_text(rules);
        // The first parse is what a process pays (it parses once); the best of three more shows
        // how much of it is a cold heap.
        let t = Instant::now();
        let config = Config::parse(&text, "bench").unwrap();
        let parse = t.elapsed();
        let warm = (0..3)
            .map(|_| {
                let t = Instant::now();
                black_box(Config::parse(&text, "bench").unwrap());
                t.elapsed()
            })
            .min()
            .unwrap();
        let t = Instant::now();
        let set = DirectSet::new(&config.direct);
        let build = t.elapsed();
        assert!(!set.contains(&dest) && !config.is_direct(&dest));
        assert_eq!(set.contains(&hit), config.is_direct(&hit));
        let set_ns = per_call(2_000_000, || set.contains(black_box(&dest)));
        let mapped_ns = per_call(2_000_000, || set.contains(black_box(&mapped)));
        let linear_iters = (20_000_000 / config.direct.len() as u32).clamp(10, 2_000_000);
        let linear_ns = per_call(linear_iters, || config.is_direct(black_box(&dest)));
        println!(
            "{:>7} rules ({} KiB of TOML, {} ranges): parse {:.1} ms (warm {:.1} ms), compile {:.2} ms; \
             lookup (miss) {set_ns:.1} ns, mapped {mapped_ns:.1} ns; linear scan {:.1} µs",
            config.direct.len(),
            text.len() / 1024,
            set.ranges(),
            parse.as_secs_f64() * 1e3,
            warm.as_secs_f64() * 1e3,
            build.as_secs_f64() * 1e3,
            linear_ns / 1e3,
        );
    }
}
