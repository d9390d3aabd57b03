//! A session that remembers: a dead hop found by one process is skipped by the others, and
//! round-robin goes on from one process to the next — the processes of one `socksify` run
//! (here a shell running curl again and again), against the lab's dante, microsocks and
//! silent-socks (which accepts and never answers: a hop that costs its timeout).

use socksify_tests::lab::*;

const MODES: [&str; 3] = ["auto", "preload", "syscall"];

/// A shell loop: `n` curls one after the other, each printing its milliseconds and the body.
fn timed_curls(n: usize, url: &str) -> String {
    format!(
        "for i in $(seq {n}); do s=$(date +%s%N); b=$(curl -sS --max-time 20 {url}); \
         e=$(date +%s%N); echo \"$(( (e - s) / 1000000 )) $b\"; done"
    )
}

fn times(out: &std::process::Output, n: usize) -> Vec<u64> {
    let text = stdout_ok(out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), n, "{text}");
    lines
        .iter()
        .map(|l| {
            let (ms, body) = l.split_once(' ').unwrap_or((l, ""));
            assert_eq!(body, HELLO, "{text}");
            ms.parse().unwrap()
        })
        .collect()
}

#[test]
fn a_dead_first_hop_is_paid_once_by_the_first_of_ten_processes() {
    let url = format!("http://{NET4}:8080/hello.txt");
    for mode in MODES {
        let config = format!(
            "chain = \"dynamic\"\nread_timeout_ms = 1500\n\
             [[proxy]]\nurl = \"socks5://{NET4}:1088\"\n[[proxy]]\nurl = \"socks5://{NET4}:1080\"\n"
        );
        let c = Client::new();
        let out = c.socksify(&config, &["--mode", mode, "sh", "-c", &timed_curls(10, &url)]);
        let t = times(&out, 10);
        assert!(t[0] >= 1400, "{mode}: the first process waits for the silent hop's timeout: {t:?}");
        for (i, ms) in t.iter().enumerate().skip(1) {
            assert!(*ms < 1000, "{mode}: process {} paid the dead hop again: {t:?}", i + 1);
        }
        let n = c.assert_nothing_leaked();
        assert!(n.dante > 0, "{mode}: {n:?}");

        // With the memory off, every process pays it.
        let off = config.replacen("read_timeout_ms", "dead_hop_s = 0\nread_timeout_ms", 1);
        let c = Client::new();
        let out = c.socksify(&off, &["--mode", mode, "sh", "-c", &timed_curls(2, &url)]);
        let t = times(&out, 2);
        assert!(t.iter().all(|&ms| ms >= 1400), "{mode}: dead_hop_s = 0 remembers nothing: {t:?}");
        c.assert_nothing_leaked();
    }
}

#[test]
fn a_hop_remembered_dead_is_tried_again_when_no_other_is_left() {
    // Dynamic mode with only hops remembered dead left tries
    // them after all (a deadline is advice, never a refusal of its own).
    let url = format!("http://{NET4}:8080/hello.txt");
    let config = format!(
        "chain = \"dynamic\"\nread_timeout_ms = 800\n\
         [[proxy]]\nurl = \"socks5://{NET4}:1088\"\n"
    );
    let c = Client::new();
    let one = "s=$(date +%s%N); curl -sS --max-time 20 URL; rc=$?; echo \"$rc $(( ($(date +%s%N) - s) / 1000000 ))\"";
    let one = one.replace("URL", &url);
    let out = c.socksify(&config, &["sh", "-c", &format!("{one}; {one}")]);
    let text = String::from_utf8_lossy(&out.stdout);
    let runs: Vec<(u32, u64)> = text
        .lines()
        .map(|l| {
            let (rc, ms) = l.split_once(' ').unwrap();
            (rc.parse().unwrap(), ms.parse().unwrap())
        })
        .collect();
    assert_eq!(runs.len(), 2, "{text}");
    for (rc, ms) in runs {
        // 28: curl's word for a connection that timed out, as the kernel's ETIMEDOUT.
        assert_eq!(rc, 28, "it fails (nothing goes direct): {text}");
        assert!(ms >= 700, "the hop was tried again, not refused from memory: {text}");
    }
    c.assert_nothing_leaked();
}

#[test]
fn round_robin_goes_on_across_five_processes() {
    let url = format!("http://{NET4}:8080/hello.txt");
    for mode in MODES {
        let config = format!(
            "chain = \"round_robin\"\nchain_len = 1\n\
             [[proxy]]\nurl = \"socks5://{NET4}:1080\"\n[[proxy]]\nurl = \"socks5://{NET4}:1082\"\n"
        );
        let c = Client::new();
        let out = c.socksify(&config, &["--mode", mode, "sh", "-c", &timed_curls(5, &url)]);
        times(&out, 5);
        let n = c.assert_nothing_leaked();
        assert!(n.dante > 0 && n.microsocks > 0, "{mode}: five processes visit both hops: {n:?}");

        // One process alone starts where the session's counter is: a new run, the first hop.
        let c = Client::new();
        let out = c.socksify(&config, &["--mode", mode, "sh", "-c", &timed_curls(1, &url)]);
        times(&out, 1);
        let n = c.assert_nothing_leaked();
        assert!(n.dante > 0 && n.microsocks == 0, "{mode}: a new session starts at hop 1: {n:?}");
    }
}
