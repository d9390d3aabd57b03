//! HTTP CONNECT proxies (tinyproxy from Debian, in the lab) as hops: alone, with Basic
//! authentication, and chained with SOCKS hops; leak-proof.

use socksify_tests::lab::*;

const TINYPROXY: &str = "http://10.77.0.2:1085";
const TINYPROXY_AUTH: &str = "http://httpuser:http-pass@10.77.0.2:1086";

fn curl(c: &Client, cfg: &str, url: &str) -> std::process::Output {
    c.socksify(cfg, &["curl", "-sS", "--max-time", "20", url])
}

#[test]
fn curl_through_an_http_proxy_by_address_and_name_with_and_without_auth() {
    for proxy in [TINYPROXY, TINYPROXY_AUTH] {
        let c = Client::new();
        for url in ["http://10.77.0.2:8080/hello.txt", "http://www.socksify.test:8080/hello.txt"] {
            assert_eq!(stdout_ok(&curl(&c, &config_for(proxy), url)).trim(), HELLO, "{proxy} {url}");
        }
        c.assert_no_leak();
    }
}

#[test]
fn a_wrong_password_or_none_is_refused_with_eacces() {
    let c = Client::new();
    for proxy in ["http://httpuser:wrong@10.77.0.2:1086", "http://10.77.0.2:1086"] {
        let out = curl(&c, &config_for(proxy), "http://10.77.0.2:8080/hello.txt");
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        // tinyproxy answers 407 without credentials and 401 for wrong ones.
        assert!(
            err.contains("the HTTP proxy answered 407") || err.contains("the HTTP proxy answered 401"),
            "{err}"
        );
        assert_eq!(out.status.code(), Some(7), "{err}");
        assert!(!err.contains("wrong"), "no password in logs: {err}");
    }
    c.assert_nothing_leaked();
}

#[test]
fn http_and_socks_hops_chain_both_ways() {
    let c = Client::new();
    for hops in [["socks5://10.77.0.2:1080", TINYPROXY], [TINYPROXY_AUTH, "socks5://10.77.0.2:1082"]] {
        let cfg = hops.iter().map(|h| config_for(h)).collect::<String>();
        let out = curl(&c, &cfg, "http://www.socksify.test:8080/hello.txt");
        assert_eq!(stdout_ok(&out).trim(), HELLO, "{hops:?}");
    }
    c.assert_no_leak();
}

#[test]
fn ssh_banner_right_behind_the_connect_reply_reaches_the_program() {
    // sshd speaks first: its banner may arrive with the proxy's response head.
    let c = Client::new();
    let out = c.socksify(&config_for(TINYPROXY), &ssh_argv("root@www.socksify.test", "echo over-http"));
    assert_eq!(stdout_ok(&out).trim(), "over-http");
    c.assert_no_leak();
}
