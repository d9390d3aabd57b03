//! The program's identity: under every mode a server sees the program, never socksify. AF_UNIX
//! connects and sends (streams, datagrams to a path — absolute, relative, private — abstract
//! names, `SCM_CREDENTIALS`, `SCM_RIGHTS`) carry the program's pid, uid and gid, also after the
//! program dropped from root to nobody (the confused deputy a root supervisor would be); and
//! control data the kernel checks the sender's capabilities for (`SO_MARK`) is refused to a
//! program that dropped them (also inside a user namespace of its own), as without socksify. The reference is the same script run bare.

use socksify_tests::lab::*;

const DANTE: &str = "socks5://10.77.0.2:1080";

fn script() -> String {
    repo_root().join("tests/py/identity.py").to_str().unwrap().to_owned()
}

#[test]
fn unix_servers_see_the_programs_pid_uid_and_gid_in_every_mode() {
    let (bare, _) =
        same_as_bare(&config_for(DANTE), &["auto", "syscall", "preload"], true, &["python3", &script()]);
    // The bare run itself, so that a script that printed nothing useful cannot pass.
    assert!(bare.contains("stream dropped peer pid is the child: True uid 65534 gid 65534"), "{bare}");
    assert!(bare.contains("got creds pid is the sender: True uid 0 gid 0"), "{bare}");
    assert!(bare.contains("got plain pid is the sender: True uid 65534 gid 65534"), "{bare}");
    assert!(bare.contains(&format!("dgram to a private path, dropped: errno {}", libc::EACCES)), "{bare}");
    assert!(bare.contains(&format!("SO_MARK dropped: errno {}", libc::EPERM)), "{bare}");
    let own = format!("SO_MARK dropped, in its own user namespace: errno {}", libc::EPERM);
    assert!(bare.contains(&own) || bare.contains("no user namespace"), "{bare}");
    assert!(!bare.contains("False"), "{bare}");
}

/// The library's gate (the page whose calls the guard lets through) is there under the guard
/// only, and a dynamic program's AF_UNIX calls made through it are still its own (above).
#[test]
fn the_gate_is_mapped_under_the_guard_only() {
    let py = "print('5af000000000-' in open('/proc/self/maps').read())";
    let c = Client::new();
    for (mode, expected) in [("auto", "True\n"), ("preload", "False\n"), ("syscall", "False\n")] {
        let out = c.socksify(&config_for(DANTE), &["--mode", mode, "python3", "-c", py]);
        assert_eq!(stdout_ok(&out), expected, "--mode {mode}");
    }
}
