//! The adversarial benchmark: the cost per byte of crafted records (`benches/crafted.rs`)
//! as a multiple of the cost per byte of a benign corpus, with the built-in rules and with
//! the SigmaHQ Windows rules (when `../shared/sigma` is there), measured in one process and
//! one run, in memory (the rules are loaded once; loading is not part of either cost).
//!
//! ```text
//! cargo bench --bench adversarial [-- --size BYTES] [--benign FILE] [--sigma DIR] [--only NAME]
//! ```
//!
//! The benign corpus is `../shared/tools/gen-sysmon-corpus --size 32MB --seed 1` (flat, 2 %
//! near misses), made once into `bench-data/`. Each crafted line is tagged as often as
//! fits in about 4 MB (at least once). The benign corpus and each case alternate for seven
//! rounds; the figure is the median of the rounds' ratios (with their spread), so that
//! both sides of each ratio are measured a moment apart. The output of every run is
//! checked against the contract (same line count, at most the input plus the annotations).

// A report on stdout is this program's output.
#![allow(clippy::print_stdout)]

#[path = "crafted.rs"]
mod crafted;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use iis_tagger::Tagger;

struct Args {
    size: usize,
    benign: PathBuf,
    sigma: Option<PathBuf>,
    only: Option<String>,
}

fn args() -> Args {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut a = Args {
        size: 1_000_000,
        benign: root.join("bench-data/adversarial-benign-32MB.jsonl"),
        sigma: Some(root.join("../shared/sigma/rules/windows")).filter(|p| p.is_dir()),
        only: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--size" => a.size = it.next().and_then(|s| s.parse().ok()).expect("--size BYTES"),
            "--benign" => a.benign = it.next().expect("--benign FILE").into(),
            "--sigma" => a.sigma = Some(it.next().expect("--sigma DIR").into()),
            "--no-sigma" => a.sigma = None,
            "--only" => a.only = it.next(),
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    a
}

fn benign(path: &Path) -> Vec<u8> {
    if !path.exists() {
        std::fs::create_dir_all(path.parent().expect("folder")).expect("bench-data");
        let generator = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/tools/gen-sysmon-corpus");
        let status = std::process::Command::new("python3")
            .arg(generator)
            .args(["--size", "32MB", "--seed", "1", "--candidate-rate", "0.02", "-o"])
            .arg(path)
            .stderr(std::process::Stdio::null())
            .status()
            .expect("python3 runs the generator (or pass --benign FILE)");
        assert!(status.success());
    }
    std::fs::read(path).expect("benign corpus")
}

/// Median seconds of `runs` taggings of `input`; checks the output contract.
fn time(tagger: &Tagger, input: &[u8], runs: usize) -> (f64, iis_tagger::Stats) {
    let mut times = Vec::new();
    let mut stats = None;
    for _ in 0..runs {
        let start = Instant::now();
        let (out, s) = tagger.tag_all(input);
        times.push(start.elapsed().as_secs_f64());
        let lines_in = input.iter().filter(|&&b| b == b'\n').count();
        assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), lines_in, "every line comes out once");
        assert!(out.len() <= input.len() + s.annotated as usize * 65_536, "output bounded by input and annotations");
        stats = Some(s);
    }
    times.sort_by(f64::total_cmp);
    (times[times.len() / 2], stats.expect("one run"))
}

fn report(label: &str, tagger: &Tagger, benign: &[u8], cases: &[crafted::Case]) {
    let (t, _) = time(tagger, benign, 3);
    let base = t / benign.len() as f64;
    println!(
        "\n{label}: benign {:.1} MB in {:.3} s = {:.2} ns/byte ({:.0} MB/s)",
        benign.len() as f64 / 1e6,
        t,
        base * 1e9,
        benign.len() as f64 / t / 1e6
    );
    println!(
        "{:<26} {:>9} {:>7} {:>11} {:>9} {:>15}  notes",
        "case", "line", "copies", "ns/byte", "x benign", "rounds min-max"
    );
    let mut worst = (0.0f64, "");
    for case in cases {
        let mut one = case.line.clone();
        one.push(b'\n');
        let start = Instant::now();
        let _ = tagger.tag_all(&one);
        let single = start.elapsed();
        let copies = if single > Duration::from_millis(500) { 1 } else { (4_000_000 / one.len()).max(1) };
        let input = one.repeat(copies);
        // The benign corpus and the case alternate, ROUNDS times: each round's ratio compares
        // two runs a moment apart, so the machine's drift (this one is shared) cancels.
        let rounds = if single > Duration::from_secs(2) { 1 } else { ROUNDS };
        let (mut ratios, mut per_bytes, mut stats) = (Vec::new(), Vec::new(), None);
        for _ in 0..rounds {
            let (tb, _) = time(tagger, benign, 1);
            let (tc, s) = time(tagger, &input, 1);
            let per_byte = tc / input.len() as f64;
            ratios.push(per_byte / (tb / benign.len() as f64));
            per_bytes.push(per_byte);
            stats = Some(s);
        }
        ratios.sort_by(f64::total_cmp);
        per_bytes.sort_by(f64::total_cmp);
        let ratio = ratios[ratios.len() / 2];
        if ratio > worst.0 {
            worst = (ratio, case.name);
        }
        let stats = stats.expect("one round");
        let n = &stats.not_inspected;
        let notes = format!("annotated {}, oversized {}, invalid {}", stats.annotated, n.oversized, n.invalid_json);
        let spread = format!("{:.1}-{:.1}", ratios[0], ratios[ratios.len() - 1]);
        println!(
            "{:<26} {:>9} {:>7} {:>11.2} {:>9.1} {:>15}  {notes}",
            case.name,
            one.len(),
            copies,
            per_bytes[per_bytes.len() / 2] * 1e9,
            ratio,
            spread
        );
    }
    println!("{label}: worst {:.1}x benign ({}; median of the rounds)", worst.0, worst.1);
}

/// Rounds of (benign, case) per case.
const ROUNDS: usize = 7;

fn legend(cases: &[crafted::Case]) {
    println!("\ncases:");
    for c in cases {
        println!("  {:<24} {}", c.name, c.what);
    }
}

fn main() {
    let args = args();
    let benign = benign(&args.benign);
    for (label, tagger) in &crafted::rule_sets(args.sigma.as_deref()) {
        let cases = crafted::cases_for(tagger, args.size, args.only.as_deref());
        for c in &cases {
            assert!(c.line.len() <= args.size, "{} is {} bytes", c.name, c.line.len());
        }
        report(label, tagger, &benign, &cases);
    }
    legend(&crafted::cases(args.size, &[]));
}
