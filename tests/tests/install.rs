//! scripts/install: the binary, the library where the CLI finds it, the man page and the shell
//! completions under PREFIX; --uninstall removes them.

use std::process::Command;

use socksify_tests::lab::repo_root;

#[test]
fn install_and_uninstall_under_a_prefix() {
    let prefix = std::env::temp_dir().join(format!("socksify-prefix-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&prefix);
    let script = repo_root().join("scripts/install");
    let out = Command::new(&script).env("PREFIX", &prefix).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    // Debian's dante-client (installed for the tests) has its own /usr/bin/socksify: the install
    // says which one a plain `socksify` runs.
    let said = String::from_utf8_lossy(&out.stdout);
    let dante = std::fs::read("/usr/bin/socksify").is_ok_and(|b| b.windows(9).any(|w| w == b"libdsocks"));
    if dante {
        assert!(
            said.contains("Dante's socksify (Debian package dante-client) is /usr/bin/socksify"),
            "{said}"
        );
    }
    let version = Command::new(prefix.join("bin/socksify")).arg("--version").output().unwrap();
    assert!(String::from_utf8_lossy(&version.stdout).contains("not Dante's socksify"), "{version:?}");
    let files = [
        "bin/socksify",
        "lib/socksify/libsocksify_preload.so",
        "share/man/man1/socksify.1",
        "share/bash-completion/completions/socksify",
        "share/zsh/site-functions/_socksify",
        "share/fish/vendor_completions.d/socksify.fish",
    ];
    for f in files {
        assert!(prefix.join(f).is_file(), "{f} missing");
    }
    // The installed CLI finds the installed library (../lib/socksify/).
    let out = Command::new(prefix.join("bin/socksify"))
        .args(["-p", "socks5://127.0.0.1:1080", "sh", "-c", "echo $LD_PRELOAD"])
        .output()
        .unwrap();
    let want = prefix.join("lib/socksify/libsocksify_preload.so").canonicalize().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), want.to_str().unwrap());
    let man = std::fs::read_to_string(prefix.join("share/man/man1/socksify.1")).unwrap();
    assert!(man.contains(".TH socksify 1") && man.contains("\\-\\-proxy"), "man page");
    let bash = Command::new("bash")
        .arg("-n")
        .arg(prefix.join("share/bash-completion/completions/socksify"))
        .status();
    assert!(bash.unwrap().success(), "the bash completion parses");
    let st = Command::new(&script).arg("--uninstall").env("PREFIX", &prefix).status().unwrap();
    assert!(st.success());
    for f in files {
        assert!(!prefix.join(f).exists(), "{f} left behind");
    }
    let _ = std::fs::remove_dir_all(&prefix);
}
