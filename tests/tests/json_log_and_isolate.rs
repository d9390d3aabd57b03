//! `log_format = "json"` (one JSON object a line per connection decision, parsed here by
//! Python's json module) and `--isolate` (each process its own SOCKS5 username and password,
//! as Tor wants them for a circuit each), checked in the log of the lab's dante-isolate, which
//! lets any name and password in and logs each CONNECT with its username.

use std::collections::BTreeSet;

use socksify_tests::lab::*;

const MODES: [&str; 3] = ["auto", "preload", "syscall"];

/// Every line of `text` parsed as JSON, each decision as `destination result route chain
/// hops errno ms` (tab-separated); a line that is not a JSON object fails the test.
fn decisions(text: &str) -> Vec<String> {
    let script = r#"
import json, sys
for line in sys.stdin:
    o = json.loads(line)
    assert isinstance(o, dict), line
    for k in ("time", "pid", "program"):
        assert k in o, (k, line)
    assert o["time"].endswith("Z") and "T" in o["time"], line
    if "result" in o:
        for k in ("destination", "route", "chain", "hops", "errno", "ms"):
            assert k in o, (k, line)
        print("\t".join(str(o[k]) for k in ("destination", "result", "route", "chain", "hops", "errno", "program")))
    else:
        assert o["level"] in ("error", "info") and o["message"], line
"#;
    let mut child = std::process::Command::new("python3")
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "not JSON lines: {}\n{text}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).collect()
}

#[test]
fn json_log_lines_are_one_object_per_connection_decision() {
    for mode in MODES {
        let dir = std::env::temp_dir().join(format!("sfy-json-{mode}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("log.json");
        let config = format!(
            "log_format = \"json\"\nlog_file = \"{}\"\n[[proxy]]\nurl = \"socks5://{NET4}:1080\"\n\
             [chains.micro]\nproxies = [\"socks5://{NET4}:1082\"]\n\
             [[route]]\nmatch = [\"git.socksify.test\"]\nvia = \"micro\"\n\
             [[route]]\nmatch = [\"ads.socksify.test\"]\nvia = \"block\"\n",
            log.display()
        );
        let c = Client::new();
        let script = "curl -sS --max-time 20 http://www.socksify.test:8080/hello.txt; \
                      curl -sS --max-time 20 http://git.socksify.test:8080/hello.txt; \
                      curl -sS --max-time 20 http://ads.socksify.test:8080/hello.txt 2>/dev/null; \
                      curl -sS --max-time 20 --noproxy '*' http://{NET4}:1089/ 2>/dev/null; true";
        let script = script.replace("{NET4}", NET4);
        let out = c.socksify(&config, &["--mode", mode, "sh", "-c", &script]);
        assert_eq!(stdout_ok(&out).matches(HELLO).count(), 2, "{mode}");
        c.assert_nothing_leaked();
        let text = std::fs::read_to_string(&log).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        let d = decisions(&text);
        let find = |dest: &str| {
            d.iter()
                .find(|l| l.starts_with(&format!("{dest}\t")))
                .unwrap_or_else(|| panic!("{mode}: no decision for {dest}:\n{text}"))
        };
        let www = find("www.socksify.test:8080");
        assert!(
            www.contains("\tproxied\tdefault\tdefault\t['socks5://10.77.0.2:1080']\tNone\tcurl"),
            "{mode}: {www}"
        );
        let git = find("git.socksify.test:8080");
        assert!(
            git.contains(
                "\tproxied\t[[route]] 1 (git.socksify.test)\tmicro\t['socks5://10.77.0.2:1082']\tNone"
            ),
            "{mode}: {git}"
        );
        // The blocked name never gets an address: a lookup refusal, logged as a message.
        assert!(text.contains("ads.socksify.test") && text.contains("\"level\":\"error\""), "{mode}: {text}");
        let dead = find("10.77.0.2:1089");
        assert!(
            dead.contains("\tfailed\tdefault\tdefault\t['socks5://10.77.0.2:1080']\t111"),
            "{mode}: {dead}"
        );
    }
}

fn isolate_usernames(log: &str) -> BTreeSet<String> {
    log.split("username%")
        .skip(1)
        .filter_map(|rest| rest.split('@').next())
        .filter(|u| u.starts_with("socksify-"))
        .map(str::to_owned)
        .collect()
}

#[test]
fn isolate_gives_every_process_its_own_socks5_credentials() {
    let url = format!("http://{NET4}:8080/hello.txt");
    let config = format!("[[proxy]]\nurl = \"socks5://{NET4}:1091\"\n");
    // Without --isolate, no credentials: dante-isolate wants a username, and the call fails
    // (nothing goes direct).
    let c = Client::new();
    let out = c.socksify(&config, &["curl", "-sS", "--max-time", "20", &url]);
    assert!(!out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    c.assert_nothing_leaked();

    // A fork's child is a process of its own too.
    let forking = format!(
        "import os, urllib.request\n\
         def get():\n    print(urllib.request.urlopen('{url}', timeout=20).read().decode().strip(), flush=True)\n\
         get()\n\
         pid = os.fork()\n\
         if pid == 0:\n    get(); os._exit(0)\n\
         os.waitpid(pid, 0)\n"
    );
    for mode in MODES {
        let before = isolate_usernames(&service_log("dante-isolate"));
        let c = Client::new();
        let script = format!("curl -sS --max-time 20 {url}; curl -sS --max-time 20 {url}; python3 -c \"$0\"");
        let out = c.socksify(&config, &["--mode", mode, "--isolate", "sh", "-c", &script, &forking]);
        assert_eq!(stdout_ok(&out).matches(HELLO).count(), 4, "{mode}");
        c.assert_nothing_leaked();
        std::thread::sleep(std::time::Duration::from_millis(200));
        let after = isolate_usernames(&service_log("dante-isolate"));
        let new: Vec<&String> = after.difference(&before).collect();
        assert_eq!(new.len(), 4, "{mode}: four processes, four usernames in dante's log: {new:?}");
    }
}
