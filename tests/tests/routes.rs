//! Routes, named chains, split DNS, `block`, `explain` and proxies from the environment,
//! against the lab's dante (port 1080) and microsocks (port 1082), whose packets the client
//! namespace counts apart.

use std::process::Command;

use socksify_tests::lab::*;

const CURL: [&str; 4] = ["curl", "-sS", "--max-time", "20"];

/// dante is the default chain, microsocks the chain `micro`.
fn two_chains(routes: &str) -> String {
    format!(
        "[[proxy]]\nurl = \"socks5://{NET4}:1080\"\n[chains.micro]\nproxies = [\"socks5://{NET4}:1082\"]\n{routes}"
    )
}

fn curl(c: &Client, config: &str, mode: &str, url: &str) -> std::process::Output {
    let mut argv = vec!["--mode", mode];
    argv.extend_from_slice(&CURL);
    argv.push(url);
    c.socksify(config, &argv)
}

#[test]
fn each_destination_takes_its_route_by_name_cidr_and_port() {
    let config = two_chains(
        "[[route]]\nmatch = [\"git.socksify.test\"]\nvia = \"micro\"\n\
         [[route]]\nmatch = [\"10.77.0.0/24:8080\"]\nvia = \"micro\"\n\
         [[route]]\nmatch = [\":7\"]\nvia = \"micro\"\n",
    );
    for mode in ["auto", "preload", "syscall"] {
        // No route matches: the default chain (dante).
        let c = Client::new();
        let out = curl(&c, &config, mode, "http://www.socksify.test:8080/hello.txt");
        assert_eq!(stdout_ok(&out).trim(), HELLO, "{mode}");
        let n = c.assert_nothing_leaked();
        assert!(n.dante > 0 && n.microsocks == 0, "{mode}: www by the default chain: {n:?}");

        // By name.
        let c = Client::new();
        let out = curl(&c, &config, mode, "http://git.socksify.test:8080/hello.txt");
        assert_eq!(stdout_ok(&out).trim(), HELLO, "{mode}");
        let n = c.assert_nothing_leaked();
        assert!(n.microsocks > 0 && n.dante == 0, "{mode}: git by name to micro: {n:?}");

        // By address range and port.
        let c = Client::new();
        let out = curl(&c, &config, mode, &format!("http://{NET4}:8080/hello.txt"));
        assert_eq!(stdout_ok(&out).trim(), HELLO, "{mode}");
        let n = c.assert_nothing_leaked();
        assert!(n.microsocks > 0 && n.dante == 0, "{mode}: {NET4}:8080 to micro: {n:?}");
    }
    // By port alone, for a name: the echo service (port 7) through micro.
    let c = Client::new();
    let script = "import socket; s = socket.create_connection(('www.socksify.test', 7), 10); \
                  s.sendall(b'ping'); print(s.recv(4).decode())";
    let out = c.socksify(&config, &["python3", "-c", script]);
    assert_eq!(stdout_ok(&out).trim(), "ping");
    let n = c.assert_nothing_leaked();
    assert!(n.microsocks > 0 && n.dante == 0, "port 7 to micro: {n:?}");
}

#[test]
fn a_name_on_a_direct_route_is_resolved_by_the_system_and_goes_direct() {
    for mode in ["auto", "preload", "syscall"] {
        let name = format!("split-{mode}-{}.socksify.test", std::process::id());
        let config = two_chains(&format!("[[route]]\nmatch = [\"{name}\"]\nvia = \"direct\"\n"));
        let remote_before = dns_queries_for("www.socksify.test");
        let c = Client::new();
        let direct_url = format!("http://{name}:8080/hello.txt");
        let mut argv = vec!["--mode", mode];
        argv.extend_from_slice(&CURL);
        argv.extend_from_slice(&[&direct_url, "http://www.socksify.test:8080/hello.txt"]);
        let out = c.socksify(&config, &argv);
        assert_eq!(stdout_ok(&out).trim(), format!("{HELLO}{HELLO}"), "{mode}");
        let n = c.counters();
        assert!(dns_queries_for(&name) > 0, "{mode}: the lab's resolver never saw {name}");
        assert_eq!(
            dns_queries_for("www.socksify.test"),
            remote_before,
            "{mode}: a remote name reached the resolver"
        );
        assert!(n.leaked_dns > 0, "{mode}: the direct name's query went to the system resolver: {n:?}");
        assert!(n.leaked > 0, "{mode}: the direct route's connection went direct: {n:?}");
        assert!(n.dante > 0 && n.microsocks == 0, "{mode}: www through the default chain: {n:?}");
    }
}

#[test]
fn block_refuses_names_and_addresses_with_a_log_line() {
    let config =
        two_chains("[[route]]\nmatch = [\"*.blocked.socksify.test\", \"10.77.0.2:8080\"]\nvia = \"block\"\n");
    for mode in ["auto", "preload", "syscall"] {
        let c = Client::new();
        let out = curl(&c, &config, mode, "http://ads.blocked.socksify.test:8080/hello.txt");
        assert_eq!(out.status.code(), Some(6), "{mode}: curl could not resolve: {out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        if mode != "syscall" {
            assert!(err.contains("refused by [[route]] 1"), "{mode}: {err}");
        }
        let out = curl(&c, &config, mode, "http://10.77.0.2:8080/hello.txt");
        assert_eq!(out.status.code(), Some(7), "{mode}: curl could not connect: {out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("refused by [[route]] 1"), "{mode}: {err}");
        let n = c.counters();
        assert_eq!((n.proxied, n.leaked, n.leaked_dns), (0, 0, 0), "{mode}: {n:?}");
    }
}

#[test]
fn explain_says_the_route_the_chain_and_the_resolution() {
    let dir = std::env::temp_dir().join(format!("socksify-explain-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("config.toml");
    std::fs::write(
        &file,
        two_chains(
            "[[route]]\nmatch = [\"*.corp.example\", \"10.0.0.0/8:22\"]\nvia = \"micro\"\n\
             [[route]]\nmatch = [\".lan\"]\nvia = \"direct\"\n",
        ),
    )
    .unwrap();
    let explain = |dest: &str| {
        let out =
            Command::new(socksify_bin()).arg("explain").arg("-f").arg(&file).arg(dest).output().unwrap();
        stdout_ok(&out)
    };
    let t = explain("git.corp.example:22");
    assert!(t.contains(&format!("settings: {}", file.display())), "{t}");
    assert!(t.contains("destination: git.corp.example:22 (a name)"), "{t}");
    assert!(t.contains("rule: [[route]] 1 (match = [\"*.corp.example\", \"10.0.0.0/8:22\"], via = \"micro\"), which matches by \"*.corp.example\""), "{t}");
    assert!(
        t.contains(&format!("goes: through chain micro (strict, 1 hop(s)): socks5://{NET4}:1082")),
        "{t}"
    );
    assert!(t.contains("fake address"), "{t}");
    assert!(t.contains(&format!("UDP: possible, through socks5://{NET4}:1082")), "{t}");
    let t = explain("printer.lan:631");
    assert!(t.contains("goes: direct") && t.contains("split DNS"), "{t}");
    let t = explain("192.0.2.1:443");
    assert!(t.contains("none of the 2 routes matches: the default chain"), "{t}");
    assert!(t.contains(&format!("socks5://{NET4}:1080")), "{t}");
    let out = Command::new(socksify_bin()).args(["explain", "-p", "socks5://h:1", "a b"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let _ = std::fs::remove_dir_all(&dir);
}

/// `socksify` in the client with no configuration file of its own: HOME and XDG_CONFIG_HOME
/// point at an empty directory; `vars` are set.
fn bare_env(c: &Client, vars: &[(&str, &str)], argv: &[&str]) -> std::process::Output {
    let home = std::env::temp_dir().join(format!("socksify-envhome-{}-{}", std::process::id(), c.n));
    std::fs::create_dir_all(&home).unwrap();
    let mut full =
        vec!["env".to_owned(), "-u".into(), "SOCKSIFY_CONFIG".into(), "-u".into(), "SOCKSIFY_PROXY".into()];
    full.extend(["-u", "ALL_PROXY", "-u", "all_proxy"].iter().map(|s| s.to_string()));
    full.push(format!("HOME={}", home.display()));
    full.push(format!("XDG_CONFIG_HOME={}", home.display()));
    full.extend(vars.iter().map(|(k, v)| format!("{k}={v}")));
    full.push(socksify_bin().display().to_string());
    full.extend(argv.iter().map(|s| s.to_string()));
    let argv: Vec<&str> = full.iter().map(String::as_str).collect();
    let mut cmd = c.command(&argv);
    cmd.current_dir(&home);
    cmd.output().unwrap()
}

#[test]
fn all_proxy_and_socksify_proxy_are_the_chain_without_a_configuration_file() {
    let micro = format!("socks5h://{NET4}:1082");
    // curl reads ALL_PROXY itself: told not to, it connects where socksify must proxy.
    let mut argv: Vec<&str> = CURL.to_vec();
    argv.extend_from_slice(&["--noproxy", "*", "http://www.socksify.test:8080/hello.txt"]);

    let c = Client::new();
    let out = bare_env(&c, &[("ALL_PROXY", &micro)], &argv);
    assert_eq!(stdout_ok(&out).trim(), HELLO);
    let n = c.assert_nothing_leaked();
    assert!(n.microsocks > 0 && n.dante == 0, "ALL_PROXY's microsocks: {n:?}");
    let out = bare_env(&c, &[("all_proxy", &micro)], &["explain", "www.socksify.test:80"]);
    assert!(stdout_ok(&out).contains("with the proxy of all_proxy (no configuration file)"));

    // SOCKSIFY_PROXY wins over ALL_PROXY, and holds a chain.
    let c = Client::new();
    let chain = format!("socks5://{NET4}:1080, socks5://{NET4}:1082");
    let out = bare_env(&c, &[("SOCKSIFY_PROXY", &chain)], &argv);
    assert_eq!(stdout_ok(&out).trim(), HELLO);
    let n = c.assert_nothing_leaked();
    assert!(n.dante > 0 && n.microsocks == 0, "the chain's first hop is dante: {n:?}");
    let out = bare_env(
        &c,
        &[("ALL_PROXY", "socks5://192.0.2.1:1"), ("SOCKSIFY_PROXY", &chain)],
        &["explain", "www.socksify.test:80"],
    );
    let t = stdout_ok(&out);
    assert!(t.contains("with the proxies of SOCKSIFY_PROXY") && t.contains("2 hop(s)"), "{t}");

    // `socksify on` remembers where the chain came from, and `show` says it.
    let bin = socksify_bin().display().to_string();
    let script = format!("eval \"$({bin} on)\"; {bin} show");
    let out = bare_env(&c, &[("ALL_PROXY", &micro)], &["--mode", "preload", "sh", "-c", &script]);
    let t = stdout_ok(&out);
    assert!(t.contains("the chain comes from socksify's defaults with the proxy of ALL_PROXY"), "{t}");

    // A bad URL in the environment stops socksify before the program runs.
    let out = bare_env(&c, &[("ALL_PROXY", "ftp://x:1")], &["true"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("ALL_PROXY"), "{out:?}");
    let out = bare_env(&c, &[("SOCKSIFY_PROXY", "socks5://h:99999")], &["true"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("SOCKSIFY_PROXY"), "{out:?}");
}

#[test]
fn a_route_with_to_asks_its_chain_for_another_destination_and_dnat_is_one() {
    // 10.77.0.99 and .98 are nobody's: only the rewrite can reach the lab's web server.
    let config =
        two_chains("[[route]]\nmatch = [\"10.77.0.99:8080\"]\nvia = \"micro\"\nto = \"www.socksify.test\"\n");
    let pc = format!("strict_chain\ndnat 10.77.0.98 {NET4}:8080\n[ProxyList]\nsocks5 {NET4} 1080\n");
    for mode in ["auto", "preload", "syscall"] {
        let c = Client::new();
        let mut argv = vec!["--mode", mode];
        argv.extend_from_slice(&CURL);
        argv.extend_from_slice(&["-w", " %{remote_ip}", "http://10.77.0.99:8080/hello.txt"]);
        let out = c.socksify(&config, &argv);
        assert_eq!(stdout_ok(&out).trim(), format!("{HELLO} 10.77.0.99"), "{mode}: the peer it asked for");
        let n = c.assert_nothing_leaked();
        assert!(n.microsocks > 0 && n.dante == 0, "{mode}: {n:?}");

        let c = Client::new();
        let mut argv = vec!["--mode", mode];
        argv.extend_from_slice(&CURL);
        argv.push("http://10.77.0.98:9999/hello.txt");
        let out = c.socksify(&pc, &argv);
        assert_eq!(stdout_ok(&out).trim(), HELLO, "{mode}: proxychains' dnat, port rewritten too");
        let n = c.assert_nothing_leaked();
        assert!(n.dante > 0, "{mode}: {n:?}");
    }
    let c = Client::new();
    let file = c.config(&config);
    let out = c.run(&[
        socksify_bin().to_str().unwrap(),
        "explain",
        "-f",
        file.to_str().unwrap(),
        "10.77.0.99:8080",
    ]);
    let text = stdout_ok(&out);
    assert!(
        text.contains(
            "rewritten: the chain is asked for www.socksify.test:8080 instead (to = \"www.socksify.test\")"
        ),
        "{text}"
    );
}
