//! Test programs built from source once per test binary, in `target/test-programs`: C probes
//! (dynamic, static with musl, static with glibc) and Go clients (static and cgo).

use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;

use crate::lab::repo_root;

fn out_dir() -> PathBuf {
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| repo_root().join("target"));
    let dir = target.join("test-programs");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

static BUILDING: Mutex<()> = Mutex::new(());

/// How a C program is linked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Link {
    Dynamic,
    MuslStatic,
    GlibcStatic,
}

/// `tests/c/NAME.c` built as `Link`, once; returns the binary.
pub fn c_program(name: &str, link: Link) -> PathBuf {
    let _g = BUILDING.lock().unwrap_or_else(|p| p.into_inner());
    let suffix = match link {
        Link::Dynamic => "",
        Link::MuslStatic => "-musl",
        Link::GlibcStatic => "-static",
    };
    let out = out_dir().join(format!("{name}{suffix}"));
    let src = repo_root().join(format!("tests/c/{name}.c"));
    if is_fresh(&out, std::slice::from_ref(&src)) {
        return out;
    }
    let tmp = out.with_extension("tmp");
    let mut cmd = match link {
        Link::Dynamic => {
            let mut c = Command::new("cc");
            c.args(["-DWITH_URING", "-O1", "-Wall", "-pthread", "-o"])
                .arg(&tmp)
                .arg(&src)
                .args(["-luring", "-ldl"]);
            c
        }
        Link::MuslStatic => {
            let mut c = Command::new("musl-gcc");
            c.args(["-static", "-O1", "-pthread", "-o"]).arg(&tmp).arg(&src);
            c
        }
        Link::GlibcStatic => {
            let mut c = Command::new("cc");
            c.args(["-static", "-O1", "-pthread", "-o"]).arg(&tmp).arg(&src);
            c
        }
    };
    let built = cmd
        .output()
        .expect("a C compiler (scripts/test-servers deps installs gcc, musl-tools, liburing-dev)");
    finish(built, &src, &tmp, out)
}

/// Checks a build's result and moves the new binary into place.
fn finish(
    built: std::process::Output,
    src: &std::path::Path,
    tmp: &std::path::Path,
    out: PathBuf,
) -> PathBuf {
    assert!(
        built.status.success(),
        "cannot build {}: {}",
        src.display(),
        String::from_utf8_lossy(&built.stderr)
    );
    std::fs::rename(tmp, &out).unwrap();
    out
}

/// `tests/go/NAME` built with or without cgo, once; returns the binary.
pub fn go_program(name: &str, cgo: bool) -> PathBuf {
    let _g = BUILDING.lock().unwrap_or_else(|p| p.into_inner());
    let out = out_dir().join(format!("{name}-{}", if cgo { "cgo" } else { "static" }));
    let src = repo_root().join(format!("tests/go/{name}"));
    let sources: Vec<PathBuf> = std::fs::read_dir(&src).unwrap().map(|e| e.unwrap().path()).collect();
    if is_fresh(&out, &sources) {
        return out;
    }
    let tmp = out.with_extension("tmp");
    let dir = out_dir();
    let built = Command::new("go")
        .args(["build", "-o"])
        .arg(&tmp)
        .arg(".")
        .current_dir(&src)
        .env("CGO_ENABLED", if cgo { "1" } else { "0" })
        .env("GOCACHE", dir.join("go-cache"))
        .env("GOPATH", dir.join("go-path"))
        .env("GOFLAGS", "-mod=mod")
        .env("GOTOOLCHAIN", "local")
        .output()
        .expect("go (scripts/test-servers deps installs golang-go)");
    finish(built, &src, &tmp, out)
}

fn is_fresh(out: &std::path::Path, sources: &[PathBuf]) -> bool {
    let Ok(built) = out.metadata().and_then(|m| m.modified()) else { return false };
    sources.iter().all(|s| s.metadata().and_then(|m| m.modified()).is_ok_and(|t| t <= built))
}
