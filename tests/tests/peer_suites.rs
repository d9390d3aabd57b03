//! A peer's own test suite under socksify: CPython's socket, selectors and asyncio tests
//! (Debian's libpython3.11-testsuite) must give the same result as without socksify. Their
//! traffic is loopback, so the chain is never used; what they check is that every socket call
//! answers as the kernel does. The VSOCK cases hang on virtual machines even without socksify.

use std::sync::OnceLock;

use socksify_tests::lab::*;

const SUITE: [&str; 10] = [
    "/usr/bin/python3",
    "-m",
    "test",
    "test_socket",
    "test_selectors",
    "test_asyncio.test_sock_lowlevel",
    "test_asyncio.test_events",
    "-i",
    "*VSOCK*",
    "-w",
];

/// The suite's verdict: its final result (a test that failed and passed when re-run, `-w`,
/// counts as passed: the suite has timing-sensitive cases that a loaded machine can upset, bare
/// as well), and the tests it names as failing in the end.
fn verdict(out: &std::process::Output) -> String {
    let text = String::from_utf8_lossy(&out.stdout);
    let result = text
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("== Tests result: ").and_then(|r| r.strip_suffix(" ==")))
        .map(|r| r.rsplit(" then ").next().unwrap_or(r).to_owned())
        .unwrap_or_else(|| format!("no result: {}", text.lines().last().unwrap_or("")));
    let failed_again: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.contains("failed again"))
        .skip(1)
        .take_while(|l| l.starts_with("    "))
        .collect();
    format!("{result} {}", failed_again.join(" ").trim()).trim().to_owned()
}

/// One suite run at a time: they are long and partly timing-sensitive.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn run(socksify_mode: Option<&str>) -> String {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
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
        assert_eq!(v, "SUCCESS", "the suite fails without socksify");
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
