//! The `socksify` command line: configuration discovery, checks before anything runs, the
//! environment it prepares, exit statuses, warnings.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use socksify_tests::lab::socksify_bin;

fn socksify(args: &[&str]) -> Command {
    let mut cmd = Command::new(socksify_bin());
    cmd.args(args).env_remove("SOCKSIFY_CONFIG").env_remove("LD_PRELOAD").env("HOME", "/nonexistent");
    cmd.env_remove("XDG_CONFIG_HOME");
    cmd
}

fn text(out: &Output) -> (String, String) {
    (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn tempdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("socksify-cli-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

const GOOD: &str = "[[proxy]]\nurl = \"socks5://127.0.0.1:1080\"\n";

#[test]
fn help_names_the_config_locations_and_version_prints() {
    let (out, _) = text(&socksify(&["--help"]).output().unwrap());
    for needle in [
        "--config",
        "--proxy",
        "--quiet",
        "--verbose",
        "SOCKSIFY_CONFIG",
        "~/.config/socksify/config.toml",
        "/etc/socksify/config.toml",
        "Examples",
    ] {
        assert!(out.contains(needle), "--help lacks {needle}: {out}");
    }
    let (out, _) = text(&socksify(&["--version"]).output().unwrap());
    assert!(out.starts_with("socksify "), "{out}");
}

#[test]
fn the_environment_for_the_library_is_prepared() {
    let dir = tempdir("env");
    let cfg = dir.join("c.toml");
    std::fs::write(&cfg, GOOD).unwrap();
    let out = socksify(&[
        "-f",
        cfg.to_str().unwrap(),
        "sh",
        "-c",
        "echo \"$LD_PRELOAD|$SOCKSIFY_CONFIG|$SOCKSIFY_LOG\"",
    ])
    .env("LD_PRELOAD", "/usr/lib/other.so")
    .output()
    .unwrap();
    let (stdout, _) = text(&out);
    let lib = socksify_bin().with_file_name("libsocksify_preload.so");
    assert_eq!(stdout.trim(), format!("{}:/usr/lib/other.so|{}|normal", lib.display(), cfg.display()));
    assert!(Path::new(stdout.split(':').next().unwrap()).is_absolute());
}

#[test]
fn config_is_found_in_the_documented_order() {
    let dir = tempdir("order");
    let xdg = dir.join("xdg");
    std::fs::create_dir_all(xdg.join("socksify")).unwrap();
    std::fs::write(xdg.join("socksify/config.toml"), GOOD).unwrap();
    let env_cfg = dir.join("env.toml");
    std::fs::write(&env_cfg, GOOD).unwrap();
    let show = ["sh", "-c", "echo $SOCKSIFY_CONFIG"];

    let out = socksify(&show).env("XDG_CONFIG_HOME", &xdg).output().unwrap();
    assert_eq!(text(&out).0.trim(), xdg.join("socksify/config.toml").to_str().unwrap());
    let out = socksify(&show).env("XDG_CONFIG_HOME", &xdg).env("SOCKSIFY_CONFIG", &env_cfg).output().unwrap();
    assert_eq!(text(&out).0.trim(), env_cfg.to_str().unwrap());
    let out = socksify(&show).env("SOCKSIFY_CONFIG", dir.join("missing.toml")).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).1.contains("missing.toml: no such configuration file (named by SOCKSIFY_CONFIG)"));
}

#[test]
fn a_bad_config_says_what_to_fix_and_nothing_runs() {
    let dir = tempdir("bad");
    let marker = dir.join("ran");
    let cases = [
        ("chain = \"strict\"\nproxy_dns = true\n", "line 2, key `proxy_dns`: unknown field"),
        ("[[proxy]]\nurl = \"socks5://127.0.0.1:0\"\n", "line 2, key `proxy.url`"),
        (
            "chain = \"round_robin\"\nchain_len = 4\n[[proxy]]\nurl = \"socks5://h:1\"\n",
            "chain_len is 4 but only 1",
        ),
        ("chain = \"strict\"\n", "no proxy configured"),
    ];
    for (body, needle) in cases {
        let cfg = dir.join("c.toml");
        std::fs::write(&cfg, body).unwrap();
        let out =
            socksify(&["-f", cfg.to_str().unwrap(), "touch", marker.to_str().unwrap()]).output().unwrap();
        let (_, err) = text(&out);
        assert_eq!(out.status.code(), Some(2), "{body}: {err}");
        assert!(err.contains(needle), "{body}: {err}");
        assert!(err.contains(cfg.to_str().unwrap()) || needle == "no proxy configured", "{err}");
        assert!(!marker.exists());
    }
    let out = socksify(&["-p", "socks5://:1", "touch", marker.to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).1.contains("--proxy: proxy URL `socks5://:1`: missing host"));
    assert!(!marker.exists());
}

#[test]
fn the_exit_status_is_the_programs() {
    let out = socksify(&["-p", "socks5://127.0.0.1:1080", "sh", "-c", "exit 7"]).output().unwrap();
    assert_eq!(out.status.code(), Some(7));
    let out = socksify(&["-p", "socks5://127.0.0.1:1080", "no-such-program-xyz"]).output().unwrap();
    assert_eq!(out.status.code(), Some(127));
    assert!(text(&out).1.contains("cannot run no-such-program-xyz"));
}

/// Runs a freshly copied binary. Another test's fork can briefly hold the copy open for writing
/// (ETXTBSY): try again then.
fn run_copy(cmd: &mut Command) -> Output {
    for _ in 0..50 {
        match cmd.output() {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) => {}
            Ok(out) if String::from_utf8_lossy(&out.stderr).contains("Text file busy") => {}
            other => return other.unwrap(),
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    panic!("the copied binary stayed busy");
}

#[test]
fn a_missing_library_is_an_error_before_running() {
    let dir = tempdir("nolib");
    let bin = dir.join("socksify");
    std::fs::copy(socksify_bin(), &bin).unwrap();
    let out = run_copy(Command::new(&bin).args(["-p", "socks5://127.0.0.1:1080", "true"]));
    assert_eq!(out.status.code(), Some(2));
    let (_, err) = text(&out);
    assert!(err.contains("cannot find libsocksify_preload.so in"), "{err}");
    assert!(err.contains("../lib/socksify"), "{err}");
    // ../lib/socksify/ next to the binary is the second place looked at.
    std::fs::create_dir_all(dir.join("lib/socksify")).unwrap();
    let bindir = dir.join("bin");
    std::fs::create_dir_all(&bindir).unwrap();
    std::fs::rename(&bin, bindir.join("socksify")).unwrap();
    std::fs::copy(
        socksify_bin().with_file_name("libsocksify_preload.so"),
        dir.join("lib/socksify/libsocksify_preload.so"),
    )
    .unwrap();
    let out = run_copy(Command::new(bindir.join("socksify")).args([
        "-p",
        "socks5://127.0.0.1:1080",
        "sh",
        "-c",
        "echo $LD_PRELOAD",
    ]));
    assert_eq!(text(&out).0.trim(), dir.join("lib/socksify/libsocksify_preload.so").to_str().unwrap());
}

#[test]
fn setuid_setgid_and_capability_programs_are_warned_about() {
    let dir = tempdir("suid");
    for (mode, word) in [(0o4755, "setuid"), (0o2755, "setgid")] {
        let prog = dir.join(format!("prog-{word}"));
        std::fs::copy("/bin/true", &prog).unwrap();
        std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(mode)).unwrap();
        let out = run_copy(&mut socksify(&[
            "--mode",
            "preload",
            "-p",
            "socks5://127.0.0.1:1080",
            prog.to_str().unwrap(),
        ]));
        let (_, err) = text(&out);
        assert!(err.contains(&format!("is {word}: the loader ignores LD_PRELOAD")), "{err}");
        // Under the kernel guard it runs, without its privileges, and is proxied.
        let out = run_copy(&mut socksify(&["-p", "socks5://127.0.0.1:1080", prog.to_str().unwrap()]));
        let (_, err) = text(&out);
        assert!(
            err.contains(&format!("is {word}: under the kernel guard (no_new_privs) it runs without")),
            "{err}"
        );
        assert!(out.status.success(), "{err}");
    }
    let prog = dir.join("prog-caps");
    std::fs::copy("/bin/true", &prog).unwrap();
    let setcap = Command::new("setcap").args(["cap_net_raw+ep", prog.to_str().unwrap()]).status();
    assert!(
        setcap.map(|s| s.success()).unwrap_or(false),
        "setcap (libcap2-bin) is needed: scripts/test-servers deps installs it"
    );
    let out = run_copy(&mut socksify(&["-p", "socks5://127.0.0.1:1080", prog.to_str().unwrap()]));
    assert!(text(&out).1.contains("has file capabilities"), "{}", text(&out).1);
    // A plain program gets no warning.
    let out = socksify(&["-p", "socks5://127.0.0.1:1080", "true"]).output().unwrap();
    assert!(text(&out).1.is_empty());
}

#[test]
fn the_library_exports_only_its_hooks() {
    let lib = socksify_bin().with_file_name("libsocksify_preload.so");
    let out = Command::new("nm").args(["-D", "--defined-only", "--format=posix"]).arg(&lib).output().unwrap();
    let mut names: Vec<String> =
        text(&out).0.lines().filter_map(|l| l.split_whitespace().next()).map(str::to_owned).collect();
    names.sort();
    let mut want = vec![
        "__res_nquery",
        "__res_nquerydomain",
        "__res_nsearch",
        "__res_nsend",
        "__res_query",
        "__res_querydomain",
        "__res_search",
        "__res_send",
        "accept",
        "accept4",
        "bind",
        "close",
        "close_range",
        "closefrom",
        "connect",
        "dup",
        "dup2",
        "dup3",
        "fcntl",
        "fcntl64",
        "freeaddrinfo",
        "getaddrinfo",
        "getaddrinfo_a",
        "gethostbyaddr",
        "gethostbyaddr_r",
        "gethostbyname",
        "gethostbyname2",
        "gethostbyname2_r",
        "gethostbyname_r",
        "getnameinfo",
        "getpeername",
        "getsockname",
        "listen",
        "read",
        "readv",
        "recv",
        "recvfrom",
        "recvmmsg",
        "recvmsg",
        "res_nquery",
        "res_nquerydomain",
        "res_nsearch",
        "res_nsend",
        "res_query",
        "res_querydomain",
        "res_search",
        "res_send",
        "send",
        "sendmmsg",
        "sendmsg",
        "sendto",
        "setsockopt",
        "socket",
        "syscall",
        "epoll_ctl",
        "getsockopt",
        "poll",
        "ppoll",
        "pselect",
        "select",
        "write",
        "writev",
    ];
    want.sort();
    assert_eq!(names, want);
}

#[test]
fn a_config_with_passwords_readable_by_others_is_warned_about() {
    let dir = tempdir("perm");
    let cfg = dir.join("c.toml");
    std::fs::write(&cfg, "[[proxy]]\nurl = \"socks5://user:s3cret@127.0.0.1:1080\"\n").unwrap();
    let run = || text(&socksify(&["-f", cfg.to_str().unwrap(), "-v", "true"]).output().unwrap()).1;
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = run();
    assert!(err.contains("holds proxy passwords and is readable by others (mode 644)"), "{err}");
    assert!(!err.contains("s3cret"), "the password never shows, even with -v: {err}");
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert!(!run().contains("readable by others"));
}

#[test]
fn passwords_never_reach_the_programs_argv() {
    let out = socksify(&[
        "-p",
        "socks5://user:s3cret@127.0.0.1:1080",
        "sh",
        "-c",
        "cat /proc/$$/cmdline | tr '\\0' ' '",
    ])
    .output()
    .unwrap();
    let (stdout, _) = text(&out);
    assert!(!stdout.contains("s3cret"), "{stdout}");
}

#[test]
fn a_proxychains_conf_is_found_where_proxychains_looks() {
    let dir = tempdir("pcfind");
    let pc = dir.join("pc.conf");
    std::fs::write(&pc, "strict_chain\n[ProxyList]\nsocks5 127.0.0.1 1080\n").unwrap();
    let out =
        socksify(&["sh", "-c", "echo $SOCKSIFY_CONFIG"]).env("PROXYCHAINS_CONF_FILE", &pc).output().unwrap();
    assert_eq!(text(&out).0.trim(), pc.to_str().unwrap());
}
