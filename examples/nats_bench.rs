//! Issue 14's benchmark: records a second through `iis-tagger consume` with 1, 2 and 3
//! instances sharing one durable consumer, against the same pipeline with tagging off
//! (`--relay-only`: consume, publish with the message id, acknowledge — a plain JetStream
//! relay), the configurations alternated, medians of several runs, all in one run on one
//! nats-server.
//!
//! ```sh
//! nats-server -js -a 127.0.0.1 -p 4333 -sd /tmp/nats-bench &
//! cargo build --release && cargo run --release --example nats_bench -- \
//!     --server nats://127.0.0.1:4333 --input bench-data/flat-reload-50MB.jsonl --runs 3
//! ```
//!
//! `--input` is a file of records, one per line (the generator's corpus); each line is
//! one message. The time is from the instances' start to the output stream holding every
//! record.
// A benchmark prints its table.
#![allow(clippy::print_stdout)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use async_nats::jetstream;

fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned()).unwrap_or_else(|| default.to_string())
}

async fn fresh_stream(js: &jetstream::Context, name: &str, subject: &str) {
    let _ = js.delete_stream(name).await;
    js.create_stream(jetstream::stream::Config {
        name: name.into(),
        subjects: vec![subject.into()],
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    })
    .await
    .expect("stream");
}

async fn count(js: &jetstream::Context, name: &str) -> u64 {
    match js.get_stream(name).await {
        Ok(mut s) => s.info().await.map(|i| i.state.messages).unwrap_or(0),
        Err(_) => 0,
    }
}

fn start(bin: &str, server: &str, relay: bool) -> Child {
    let mut c = Command::new(bin);
    c.args(["consume", "--server", server, "--stream", "IN", "--output-subject", "out.{subject}"]);
    if relay {
        c.arg("--relay-only");
    }
    c.stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("iis-tagger consume starts")
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let server = arg("--server", "nats://127.0.0.1:4222");
    let input = arg("--input", "bench-data/flat-reload-50MB.jsonl");
    let runs: usize = arg("--runs", "3").parse().expect("--runs");
    let bin = arg("--bin", "target/release/iis-tagger");
    let text = std::fs::read(&input).expect("--input");
    let records: Vec<&[u8]> = text.split(|&b| b == b'\n').filter(|l| !l.is_empty()).collect();
    let js = jetstream::new(async_nats::connect(&server).await.expect("connects"));
    fresh_stream(&js, "IN", "in.>").await;
    let mut acks = Vec::new();
    for (i, r) in records.iter().enumerate() {
        acks.push(js.publish(format!("in.host{}", i % 10), r.to_vec().into()).await.expect("publish"));
        if acks.len() == 4096 {
            for a in acks.drain(..) {
                a.await.expect("ack");
            }
        }
    }
    for a in acks {
        a.await.expect("ack");
    }
    let n = records.len() as u64;
    let bytes: usize = records.iter().map(|r| r.len()).sum();
    let configs: Vec<(bool, usize)> = vec![(true, 1), (false, 1), (true, 2), (false, 2), (true, 3), (false, 3)];
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); configs.len()];
    for run in 0..runs {
        let order: Vec<usize> =
            if run % 2 == 0 { (0..configs.len()).collect() } else { (0..configs.len()).rev().collect() };
        for i in order {
            let (relay, instances) = configs[i];
            fresh_stream(&js, "OUT", "out.>").await;
            let stream = js.get_stream("IN").await.expect("IN");
            let _ = stream.delete_consumer("iis-tagger").await;
            let started = Instant::now();
            let mut children: Vec<Child> = (0..instances).map(|_| start(&bin, &server, relay)).collect();
            while count(&js, "OUT").await < n {
                tokio::time::sleep(Duration::from_millis(20)).await;
                assert!(started.elapsed() < Duration::from_secs(600), "took too long");
            }
            times[i].push(started.elapsed().as_secs_f64());
            for c in &mut children {
                let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
                let _ = c.wait();
            }
        }
    }
    println!("{n} records ({} MB) from {input}, medians of {runs} alternated runs\n", bytes / 1_000_000);
    println!("| pipeline | instances | seconds | records/s | vs the relay with as many |");
    println!("|---|---:|---:|---:|---:|");
    let median = |v: &Vec<f64>| {
        let mut v = v.clone();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    for (i, &(relay, instances)) in configs.iter().enumerate() {
        let t = median(&times[i]);
        let relay_t = median(&times[configs.iter().position(|&c| c == (true, instances)).expect("relay")]);
        println!(
            "| {} | {instances} | {t:.2} | {:.0} | {:.2}x |",
            if relay { "relay (no tagging)" } else { "iis-tagger consume" },
            n as f64 / t,
            relay_t / t
        );
    }
}
