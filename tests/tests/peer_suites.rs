//! A peer's own test suite under socksify: CPython's socket, selectors and asyncio tests
//! (Debian's libpython3.11-testsuite) must give the same result as without socksify. Their
//! traffic is loopback, so the chain is never used; what they check is that every socket call
//! answers as the kernel does. The VSOCK cases hang on virtual machines even without socksify.

use std::sync::OnceLock;

use socksify_tests::lab::*;

const SUITE: [&str; 9] = [
    "/usr/bin/python3",
    "-m",
    "test",
    "test_socket",
    "test_selectors",
    "test_asyncio.test_sock_lowlevel",
    "test_asyncio.test_events",
    "-i",
    "*VSOCK*",
];

/// The suite's verdict: its result line and the tests it names as failed or hanging.
fn verdict(out: &std::process::Output) -> String {
    let text = String::from_utf8_lossy(&out.stdout);
    let mut keep: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("== Tests result") || l.starts_with("    test_") || l.contains(" failed"))
        .collect();
    keep.dedup();
    keep.join("\n")
}

fn run(socksify_mode: Option<&str>) -> String {
    let c = Client::new();
    // The suite takes about a minute: a longer limit than Client::command's.
    let netns = c.netns();
    let mut cmd = std::process::Command::new("timeout");
    cmd.args(["-k", "5", "400", "ip", "netns", "exec", &netns]).stdin(std::process::Stdio::null());
    if let Some(mode) = socksify_mode {
        let cfg = c.config(&config_for("socks5://10.77.0.2:1080"));
        cmd.arg(socksify_bin()).arg("-f").arg(cfg).args(["--mode", mode]);
    }
    let out = cmd.args(SUITE).output().unwrap();
    if socksify_mode.is_some() {
        c.assert_nothing_leaked();
    }
    verdict(&out)
}

fn bare() -> &'static str {
    static BARE: OnceLock<String> = OnceLock::new();
    BARE.get_or_init(|| {
        let v = run(None);
        assert!(v.contains("== Tests result: SUCCESS =="), "the suite fails without socksify: {v}");
        v
    })
}

#[test]
fn cpython_socket_and_asyncio_tests_pass_under_the_library_as_without_socksify() {
    assert_eq!(run(Some("preload")), bare());
}

#[test]
fn cpython_socket_and_asyncio_tests_pass_under_the_guard_as_without_socksify() {
    assert_eq!(run(Some("auto")), bare());
}
