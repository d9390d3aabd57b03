//! The habits of socksifier users: proxychains.conf files, shell mode, a socksified shell.

use socksify_tests::lab::*;

const PROXYCHAINS_CONF: &str = "# a proxychains-ng configuration
strict_chain
proxy_dns
remote_dns_subnet 224
tcp_read_time_out 15000
tcp_connect_time_out 8000
localnet 127.0.0.0/255.0.0.0
[ProxyList]
socks5 10.77.0.2 1080
";

#[test]
fn a_proxychains_conf_works_as_is_with_remote_dns() {
    let c = Client::new();
    let out = c.socksify(
        PROXYCHAINS_CONF,
        &["curl", "-sS", "--max-time", "20", "http://www.socksify.test:8080/hello.txt"],
    );
    assert_eq!(stdout_ok(&out).trim(), HELLO);
    c.assert_no_leak();
}

#[test]
fn config_convert_prints_equivalent_toml() {
    let dir = std::env::temp_dir().join(format!("socksify-convert-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pc = dir.join("proxychains.conf");
    std::fs::write(&pc, PROXYCHAINS_CONF).unwrap();
    let out =
        std::process::Command::new(socksify_bin()).args(["config", "--convert"]).arg(&pc).output().unwrap();
    let toml = stdout_ok(&out);
    assert!(toml.contains("dns = \"remote\""), "{toml}");
    assert!(toml.contains("fake_ipv4_range = \"224.0.0.0/8\""), "{toml}");
    assert!(toml.contains("url = \"socks5://10.77.0.2:1080\""), "{toml}");
    // The converted file is a working socksify configuration.
    let c = Client::new();
    let out =
        c.socksify(&toml, &["curl", "-sS", "--max-time", "20", "http://www.socksify.test:8080/hello.txt"]);
    assert_eq!(stdout_ok(&out).trim(), HELLO);
    c.assert_no_leak();
    // Unknown directives are named, with their line.
    std::fs::write(&pc, format!("fancy_mode\n{PROXYCHAINS_CONF}")).unwrap();
    let out =
        std::process::Command::new(socksify_bin()).args(["config", "--convert"]).arg(&pc).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("line 1, key `fancy_mode`: unknown proxychains directive"));
}

#[test]
fn shell_mode_socksifies_every_later_command_until_off() {
    let c = Client::new();
    let bin = socksify_bin();
    let script = format!(
        "eval \"$({bin} on -p socks5://10.77.0.2:1080)\"; {bin} show; \
         curl -sS --max-time 20 http://www.socksify.test:8080/hello.txt; \
         eval \"$({bin} off)\"; {bin} show; echo \"preload=[$LD_PRELOAD]\"",
        bin = bin.display()
    );
    let out = c.run(&["bash", "-c", &script]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("socksify: on"), "{text}");
    assert!(text.contains(HELLO), "{text}");
    assert!(text.contains("socksify: off\npreload=[]"), "{text}");
    c.assert_no_leak();
}

#[test]
fn a_socksified_interactive_shell() {
    let c = Client::new();
    let mut cmd = c.socksify_command(&config_for("socks5://10.77.0.2:1080"), &["--shell"]);
    cmd.env("SHELL", "/bin/bash").stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"curl -sS --max-time 20 http://www.socksify.test:8080/hello.txt\nexit\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), HELLO);
    c.assert_no_leak();
}

#[test]
fn check_reports_each_hop_and_the_end_to_end_connect() {
    let c = Client::new();
    let bin = socksify_bin();
    let bin = bin.to_str().unwrap();
    let out = c.run(&[
        bin,
        "check",
        "-p",
        "socks5://10.77.0.2:1080",
        "-p",
        "socks5://10.77.0.2:1082",
        "-p",
        "socks4a://10.77.0.2:1084",
        "--target",
        "www.socksify.test:8080",
    ]);
    let text = stdout_ok(&out);
    // After the mode line: the chain, its hops, the target.
    let lines: Vec<&str> = text.lines().skip_while(|l| !l.starts_with("chain:")).collect();
    assert!(lines[1].starts_with("hop 1 socks5://10.77.0.2:1080: reachable in "), "{text}");
    assert!(
        lines[1].ends_with("CONNECT: yes; BIND: yes; UDP ASSOCIATE: yes; one write: yes"),
        "dante: {text}"
    );
    // microsocks 1.0 reads a greeting alone and drops what follows it.
    assert!(
        lines[2].contains(
            "CONNECT: yes; BIND: no; UDP ASSOCIATE: no; one write: no (it reads the greeting alone"
        ),
        "microsocks: {text}"
    );
    assert!(
        lines[3].contains("SOCKS4") && lines[3].ends_with("BIND: no; UDP ASSOCIATE: no"),
        "ssh -D: {text}"
    );
    assert!(lines[4].starts_with("target www.socksify.test:8080: connected in "), "{text}");
    assert_eq!(lines[5], "verdict: OK");
    c.assert_no_leak();

    let out = c.run(&[bin, "check", "-p", "socks5://10.77.0.2:1089"]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("hop 1 socks5://10.77.0.2:1089: unreachable: Connection refused"), "{text}");
    assert!(text.contains("verdict: PROBLEMS"), "{text}");
}
