//! `tokio_fanout N HOST:PORT`: N connections at once from one tokio runtime (a current-thread
//! one: a single event loop) to a TCP echo server, each sending a line and reading it back.
//! Prints "N/N echoed in S s". Under socksify through a slow proxy, the time must be about one
//! handshake, not N of them.

use std::time::Instant;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

async fn one(i: usize, addr: String) -> bool {
    let Ok(stream) = TcpStream::connect(&addr).await else { return false };
    let (r, mut w) = stream.into_split();
    let line = format!("hello {i}\n");
    if w.write_all(line.as_bytes()).await.is_err() {
        return false;
    }
    let mut got = String::new();
    BufReader::new(r).read_line(&mut got).await.is_ok() && got == line
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args[1].parse().expect("a count");
    let addr = args[2].clone();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
    let started = Instant::now();
    let ok = rt.block_on(async {
        let tasks: Vec<_> = (0..n).map(|i| tokio::spawn(one(i, addr.clone()))).collect();
        let mut ok = 0;
        for t in tasks {
            ok += usize::from(t.await.unwrap_or(false));
        }
        ok
    });
    println!("{ok}/{n} echoed in {:.2} s", started.elapsed().as_secs_f64());
}
