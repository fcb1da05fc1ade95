//! Throughput of the core on generated corpora, measured in one run against a plain
//! copy and a naive baseline.
//!
//! `cargo bench --bench throughput`. The corpora come from
//! `../shared/tools/gen-sysmon-corpus` (fixed seeds, cached in `bench-data/`): 32 MB of
//! flat records with 2 % and 20 % prefilter candidates, and 32 MB of ECS records with 2 %.
//! Every iteration asserts that the number of annotated lines equals the generator's truth
//! file, so a fast wrong answer cannot pass as a result.
//!
//! - `copy`: the input in 256 KiB pieces copied to an output buffer (what a pass-through
//!   stage costs in memory);
//! - `iis-tagger`: a [`Stream`](iis_tagger::Stream) fed the same pieces, output buffer
//!   cleared after each, as the CLI does;
//! - `naive`: `examples/naive.rs` — each line parsed into a `serde_json::Value`, the same
//!   eight rules, matches re-serialized.

use std::path::{Path, PathBuf};
use std::process::Command;

use criterion::{Criterion, Throughput, criterion_main};
use iis_tagger::{Config, RuleSet, Tagger};

#[allow(dead_code)]
#[path = "../examples/naive.rs"]
mod naive;

const PIECE: usize = 256 * 1024;

struct Corpus {
    name: &'static str,
    bytes: Vec<u8>,
    matches: u64,
}

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("bench-data")
}

/// Generates (once) and loads a corpus; `matches` is the truth file's count of matches.
fn corpus(name: &'static str, schema: &str, candidate_rate: &str, seed: &str) -> Corpus {
    let dir = data_dir();
    std::fs::create_dir_all(&dir).expect("bench-data");
    let path = dir.join(format!("criterion-{name}.jsonl"));
    let truth = dir.join(format!("criterion-{name}.truth"));
    if !path.exists() || !truth.exists() {
        let generator = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/tools/gen-sysmon-corpus");
        let status = Command::new("python3")
            .arg(generator)
            .args(["--size", "32MB", "--schema", schema, "--candidate-rate", candidate_rate, "--seed", seed])
            .arg("-o")
            .arg(&path)
            .arg("--truth")
            .arg(&truth)
            .status()
            .expect("python3 runs gen-sysmon-corpus");
        assert!(status.success());
    }
    let matches =
        std::fs::read_to_string(&truth).expect("truth").lines().filter(|l| !l.ends_with("\tcandidate")).count();
    Corpus { name, bytes: std::fs::read(&path).expect("corpus"), matches: matches as u64 }
}

fn copy(input: &[u8], out: &mut Vec<u8>) -> usize {
    let mut n = 0;
    for piece in input.chunks(PIECE) {
        out.clear();
        out.extend_from_slice(piece);
        n += out.len();
    }
    n
}

fn tag(tagger: &Tagger, input: &[u8], out: &mut Vec<u8>) -> u64 {
    let mut stream = tagger.stream();
    for piece in input.chunks(PIECE) {
        stream.feed(piece, out);
        out.clear();
    }
    stream.finish(out);
    out.clear();
    stream.stats().annotated
}

fn naive(input: &[u8]) -> u64 {
    let mut n = 0;
    for line in input.split(|&b| b == b'\n') {
        if std::str::from_utf8(line).ok().and_then(naive::tag_line).is_some() {
            n += 1;
        }
    }
    n
}

fn throughput(c: &mut Criterion) {
    let tagger = Tagger::new(RuleSet::builtin().expect("rules"), Config::default()).expect("tagger");
    let corpora = [
        corpus("flat-2pct", "flat", "0.02", "11"),
        corpus("flat-20pct", "flat", "0.20", "12"),
        corpus("ecs-2pct", "ecs", "0.02", "13"),
    ];
    for corpus in &corpora {
        let mut group = c.benchmark_group(corpus.name);
        group.throughput(Throughput::Bytes(corpus.bytes.len() as u64));
        group.sample_size(10);
        let mut out = Vec::with_capacity(PIECE * 2);
        group.bench_function("copy", |b| b.iter(|| assert_eq!(copy(&corpus.bytes, &mut out), corpus.bytes.len())));
        group.bench_function("iis-tagger", |b| {
            b.iter(|| assert_eq!(tag(&tagger, &corpus.bytes, &mut out), corpus.matches))
        });
        if corpus.name == "flat-2pct" {
            group.bench_function("naive", |b| b.iter(|| assert_eq!(naive(&corpus.bytes), corpus.matches)));
        }
        group.finish();
    }
}

// The macros generate undocumented items.
#[allow(missing_docs)]
mod entry {
    use super::throughput;
    criterion::criterion_group!(benches, throughput);
}
criterion_main!(entry::benches);
