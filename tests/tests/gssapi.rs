//! GSSAPI authentication (SOCKS5 method 0x01, RFC 1961) against Dante with a real Kerberos
//! realm: the lab's KDC (realm SOCKSIFY.TEST, user alice), dante-gssapi on 10.77.0.2:1092
//! (gssapi.enctype clear) and dante-gssapi-integ on 1093 (integrity only). Dante logs each
//! CONNECT with the Kerberos principal it authenticated: that is how a test knows the hop took
//! GSSAPI rather than no authentication. The KDC's port is counted apart (`kdc`), not as a leak:
//! asking it for the proxy's ticket is the authentication itself.

use std::process::{Command, Output};

use socksify_tests::build::go_program;
use socksify_tests::lab::*;

const GSSAPI: &str = "socks5h+gssapi://10.77.0.2:1092";
const INTEGRITY_ONLY: &str = "socks5h+gssapi://10.77.0.2:1093";
const URL: &str = "http://www.socksify.test:8080/hello.txt";

fn krb_dir() -> String {
    let run = std::env::var("SOCKSIFY_LAB_RUN").unwrap_or_else(|_| "/tmp/socksify-lab".into());
    format!("{run}/krb5")
}

/// The realm's configuration and a ticket cache (`None`: alice's, which the lab made).
fn kerberos(mut cmd: Command, cache: Option<&str>) -> Command {
    let alice = format!("FILE:{}/alice.cc", krb_dir());
    cmd.env("KRB5_CONFIG", format!("{}/krb5.conf", krb_dir())).env("KRB5CCNAME", cache.unwrap_or(&alice));
    cmd
}

fn run(c: &Client, config: &str, argv: &[&str], cache: Option<&str>) -> Output {
    kerberos(c.socksify_command(config, argv), cache).output().unwrap()
}

/// How many CONNECTs dante-gssapi has logged for alice.
fn alice_connects() -> usize {
    service_log("dante-gssapi")
        .lines()
        .filter(|l| l.contains("alice@SOCKSIFY.TEST") && l.contains("pass("))
        .count()
}

#[test]
fn curl_by_name_and_wget_through_the_gssapi_hop_in_both_modes_leak_nothing() {
    for mode in ["preload", "syscall"] {
        let before = alice_connects();
        let c = Client::new();
        let out =
            run(&c, &config_for(GSSAPI), &["--mode", mode, "curl", "-sS", "--max-time", "20", URL], None);
        assert_eq!(stdout_ok(&out).trim(), HELLO, "--mode {mode}");
        c.assert_no_leak();
        let out =
            run(&c, &config_for(GSSAPI), &["--mode", mode, "wget", "-q", "-O", "-", "-T", "20", URL], None);
        assert_eq!(stdout_ok(&out).trim(), HELLO, "wget --mode {mode}");
        c.assert_no_leak();
        assert!(
            alice_connects() >= before + 2,
            "dante did not log alice's CONNECTs:\n{}",
            service_log("dante-gssapi")
        );
    }
}

#[test]
fn a_gssapi_hop_second_in_the_chain() {
    let c = Client::new();
    let config = "[[proxy]]\nurl = \"socks5://10.77.0.2:1082\"\n[[proxy]]\nurl = \"socks5h+gssapi://10.77.0.2:1092\"\n";
    let before = alice_connects();
    let out = run(&c, config, &["curl", "-sS", "--max-time", "20", URL], None);
    assert_eq!(stdout_ok(&out).trim(), HELLO);
    let counters = c.counters();
    c.assert_no_leak();
    assert!(counters.microsocks > 0, "the first hop is microsocks: {counters:?}");
    assert!(alice_connects() > before, "the second hop authenticated alice");
}

/// Runs `argv` with an empty ticket cache: it must fail, say what to do, fetch nothing, and send
/// nothing direct.
fn assert_refused_without_a_ticket(c: &Client, argv: &[&str]) {
    let out = run(c, &config_for(GSSAPI), argv, Some("FILE:/nonexistent/cc"));
    assert!(!out.status.success(), "{argv:?} succeeded without a ticket");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no Kerberos ticket") && err.contains("run kinit"), "{err}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains(HELLO));
    c.assert_nothing_leaked();
}

#[test]
fn without_a_ticket_the_connection_fails_clearly_and_nothing_goes_direct() {
    assert_refused_without_a_ticket(&Client::new(), &["curl", "-sS", "--max-time", "20", URL]);
}

#[test]
fn a_proxy_that_wants_integrity_is_refused_with_the_level_named() {
    let c = Client::new();
    let out = run(&c, &config_for(INTEGRITY_ONLY), &["curl", "-sS", "--max-time", "20", URL], None);
    assert!(!out.status.success(), "curl succeeded through a proxy that wants integrity");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("protection level not supported"), "{err}");
    c.assert_nothing_leaked();
}

#[test]
fn check_reports_the_ticket_the_method_and_what_the_hop_accepts() {
    let c = Client::new();
    let out = kerberos(c.command(&[socksify_bin().to_str().unwrap(), "check", "-p", GSSAPI]), None)
        .output()
        .unwrap();
    let text = stdout_ok(&out);
    let hop = text.lines().find(|l| l.starts_with("hop 1")).unwrap_or_default();
    assert!(hop.contains("methods: GSSAPI (ticket of alice@SOCKSIFY.TEST"), "{text}");
    assert!(hop.contains("asks for rcmd@10.77.0.2"), "{text}");
    assert!(hop.contains("protection: none beyond authentication"), "{text}");
    // BIND and UDP ASSOCIATE are really asked, each on a hop authenticated anew.
    assert!(hop.contains("CONNECT: yes; BIND: yes; UDP ASSOCIATE: yes; "), "{text}");
    // GSSAPI's exchange depends on the proxy's answers: never in one write.
    assert!(hop.ends_with("one write: no (GSSAPI's exchange goes step by step)"), "{text}");
    // No ticket: the hop is reported unhealthy, with what to do.
    let out = kerberos(
        c.command(&[socksify_bin().to_str().unwrap(), "check", "-p", GSSAPI]),
        Some("FILE:/nonexistent/cc"),
    )
    .output()
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("no Kerberos ticket") && text.contains("run kinit"), "{text}");
    c.assert_nothing_leaked();
}

#[test]
fn udp_through_the_gssapi_hop() {
    // A DNS query to the lab's second resolver address over UDP: the datagrams take dante's
    // relay after the GSSAPI-authenticated UDP ASSOCIATE.
    let c = Client::with_udp_relay();
    let out = run(
        &c,
        &config_for(GSSAPI),
        &["dig", "+short", "+tries=1", "+time=5", "@10.77.0.3", "anything.example"],
        None,
    );
    assert_eq!(stdout_ok(&out).trim(), NET4);
    let counters = c.counters();
    assert_eq!(counters.leaked, 0, "{counters:?}");
    assert!(counters.relayed > 0, "the query went through dante's relay: {counters:?}");
}

#[test]
fn the_library_and_the_cli_do_not_link_kerberos() {
    // Kerberos is opened on first use: a machine without it still loads the library, and a
    // program that never meets a GSSAPI hop never loads it.
    for file in [socksify_bin(), socksify_bin().with_file_name("libsocksify_preload.so")] {
        let out = Command::new("readelf").arg("-d").arg(&file).output().unwrap();
        let text = stdout_ok(&out);
        assert!(text.contains("(NEEDED)"), "{text}");
        assert!(!text.contains("gssapi") && !text.contains("krb5"), "{}: {text}", file.display());
    }
}

#[test]
fn a_static_go_program_takes_the_gssapi_hop_from_the_guard() {
    // No library in the program: the guard's supervisor makes the Kerberos context.
    let go = go_program("goget", false);
    let argv = [go.to_str().unwrap(), URL];
    let c = Client::new();
    let before = alice_connects();
    let out = run(&c, &config_for(GSSAPI), &argv, None);
    assert_eq!(stdout_ok(&out).trim(), HELLO);
    c.assert_no_leak();
    assert!(alice_connects() > before, "dante did not log alice's CONNECT");
    assert_refused_without_a_ticket(&c, &argv);
}
