//! The other ends of the sidecar benchmarks (`benches/serve.py`): a sender, a sink, and the
//! baseline, a plain TCP relay with the same framing.
//!
//! ```text
//! tcp_bench send ADDR FILE CONNS          send FILE over CONNS connections (split at lines)
//! tcp_bench sink LISTEN LINES [PACE_MS]   take one connection at a time until LINES lines came;
//!                                         print seconds from the first byte; with PACE_MS,
//!                                         read 4 KiB per PACE_MS (a slow downstream)
//! tcp_bench relay LISTEN FORWARD          whole lines of every connection to FORWARD, as they
//!                                         come, one connection's write at a time: the sidecar's
//!                                         job without the tagging
//! tcp_bench flaky LISTEN LINES DIE_AFTER  a sink that dies (reset) after DIE_AFTER bytes and
//!                                         listens again 0.5 s later; prints the lines lost
//! ```
#![allow(clippy::print_stdout)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| args.get(i).map(String::as_str).unwrap_or_else(|| usage());
    match arg(0) {
        "send" => send(arg(1), arg(2), arg(3).parse().unwrap_or_else(|_| usage())),
        "sink" => sink(arg(1), arg(2).parse().unwrap_or_else(|_| usage()), args.get(3).and_then(|p| p.parse().ok())),
        "relay" => relay(arg(1), arg(2)),
        "flaky" => {
            flaky(arg(1), arg(2).parse().unwrap_or_else(|_| usage()), arg(3).parse().unwrap_or_else(|_| usage()))
        }
        _ => usage(),
    }
}

fn usage() -> ! {
    eprintln!(
        "usage: tcp_bench send ADDR FILE CONNS | sink LISTEN LINES [PACE_MS] | relay LISTEN FORWARD | flaky LISTEN LINES DIE_AFTER"
    );
    std::process::exit(2)
}

fn send(addr: &str, file: &str, conns: usize) {
    let data = std::fs::read(file).expect("input file");
    // CONNS parts, each ending at a line end.
    let mut parts = Vec::new();
    let mut start = 0;
    for i in 1..=conns {
        let mut end = (data.len() * i / conns).max(start);
        while end < data.len() && data[end - 1] != b'\n' {
            end += 1;
        }
        parts.push(&data[start..end]);
        start = end;
    }
    let streams: Vec<TcpStream> = parts.iter().map(|_| TcpStream::connect(addr).expect("connect")).collect();
    let started = Instant::now();
    std::thread::scope(|s| {
        for (mut conn, part) in streams.into_iter().zip(parts) {
            s.spawn(move || {
                for piece in part.chunks(256 * 1024) {
                    conn.write_all(piece).expect("send");
                }
            });
        }
    });
    println!("sent {} bytes in {:.3} s", data.len(), started.elapsed().as_secs_f64());
}

fn sink(listen: &str, lines: u64, pace_ms: Option<u64>) {
    let listener = TcpListener::bind(listen).expect("bind");
    println!("ready");
    let _ = std::io::stdout().flush();
    let mut seen = 0u64;
    let mut first: Option<Instant> = None;
    let mut buf = vec![0u8; 256 * 1024];
    while seen < lines {
        let (mut conn, _) = listener.accept().expect("accept");
        loop {
            let want = if pace_ms.is_some() { 4096 } else { buf.len() };
            let n = match conn.read(&mut buf[..want]) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            first.get_or_insert_with(Instant::now);
            seen += memchr::memchr_iter(b'\n', &buf[..n]).count() as u64;
            if seen >= lines {
                break;
            }
            if let Some(ms) = pace_ms {
                std::thread::sleep(Duration::from_millis(ms));
            }
        }
    }
    println!("received {seen} lines in {:.3} s", first.map_or(0.0, |f| f.elapsed().as_secs_f64()));
}

fn relay(listen: &str, forward: &str) {
    let listener = TcpListener::bind(listen).expect("bind");
    let out = Arc::new(Mutex::new(TcpStream::connect(forward).expect("forward")));
    println!("ready");
    let _ = std::io::stdout().flush();
    for conn in listener.incoming() {
        let Ok(mut conn) = conn else { continue };
        let out = out.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            let mut carry: Vec<u8> = Vec::new();
            loop {
                let n = match conn.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                // Whole lines only, so that connections do not interleave inside a line.
                let Some(last) = memchr::memrchr(b'\n', &buf[..n]) else {
                    carry.extend_from_slice(&buf[..n]);
                    continue;
                };
                let mut out = out.lock().expect("lock");
                if !carry.is_empty() {
                    out.write_all(&carry).expect("forward");
                    carry.clear();
                }
                out.write_all(&buf[..=last]).expect("forward");
                drop(out);
                carry.extend_from_slice(&buf[last + 1..n]);
            }
            if !carry.is_empty() {
                carry.push(b'\n');
                out.lock().expect("lock").write_all(&carry).expect("forward");
            }
        });
    }
}

fn flaky(listen: &str, lines: u64, die_after: usize) {
    let listener = TcpListener::bind(listen).expect("bind");
    println!("ready");
    let _ = std::io::stdout().flush();
    let (mut conn, _) = listener.accept().expect("accept");
    let mut first = Vec::new();
    let mut buf = vec![0u8; 256 * 1024];
    while first.len() < die_after {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => first.extend_from_slice(&buf[..n]),
        }
    }
    // A crash: unread data is dropped and the peer gets a reset.
    socket2::SockRef::from(&conn).set_linger(Some(Duration::ZERO)).expect("linger");
    drop(conn);
    drop(listener);
    std::thread::sleep(Duration::from_millis(500));
    let listener = TcpListener::bind(listen).expect("bind again");
    let (mut conn, _) = listener.accept().expect("accept again");
    let mut second = Vec::new();
    let complete = |b: &[u8]| memchr::memchr_iter(b'\n', b).count() as u64;
    while complete(&first) + complete(&second) < lines {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => second.extend_from_slice(&buf[..n]),
        }
        // Stop once nothing more comes for a second (the lost lines never will).
        conn.set_read_timeout(Some(Duration::from_secs(1))).expect("timeout");
    }
    let whole_first = complete(&first);
    let got = whole_first + complete(&second);
    println!(
        "first connection {} bytes ({whole_first} whole lines), second {} bytes; {} of {lines} lines lost",
        first.len(),
        second.len(),
        lines.saturating_sub(got)
    );
}
