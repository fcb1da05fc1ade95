//! Corpora from `../shared/tools/gen-sysmon-corpus`: the (line, rule) pairs tagged equal
//! the truth file's matches exactly, in both schemas and for several seeds.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use iis_tagger::{Config, RuleSet, Tagger};

use crate::support::{assert_contract, builtin_tagger, detections, shared, temp_dir};

/// Generates a corpus; returns its path and the truth file's (line, slug) matches.
pub fn generate(
    dir: &Path,
    schema: &str,
    seed: u32,
    lines: u32,
    match_rate: f64,
    candidate_rate: f64,
) -> (PathBuf, BTreeSet<(usize, String)>) {
    let corpus = dir.join(format!("{schema}-{seed}.jsonl"));
    let truth = dir.join(format!("{schema}-{seed}.truth"));
    let status = Command::new("python3")
        .arg(shared().join("tools/gen-sysmon-corpus"))
        .args(["--schema", schema, "--seed", &seed.to_string(), "--lines", &lines.to_string()])
        .args(["--match-rate", &match_rate.to_string(), "--candidate-rate", &candidate_rate.to_string()])
        .arg("-o")
        .arg(&corpus)
        .arg("--truth")
        .arg(&truth)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("python3 runs gen-sysmon-corpus (CI installs python3)");
    assert!(status.success(), "gen-sysmon-corpus failed");
    let matches = std::fs::read_to_string(&truth)
        .expect("truth")
        .lines()
        .filter_map(|l| {
            let cols: Vec<&str> = l.split('\t').collect();
            (cols[2] != "candidate").then(|| (cols[0].parse().expect("line"), cols[2].to_string()))
        })
        .collect();
    (corpus, matches)
}

fn tagged(output: &[u8]) -> BTreeSet<(usize, String)> {
    detections(output, "iis_tagger")
        .into_iter()
        .enumerate()
        .flat_map(|(i, slugs)| slugs.into_iter().map(move |s| (i + 1, s)))
        .collect()
}

#[test]
fn generated_corpora_equal_their_truth_files() {
    let dir = temp_dir("gen");
    let tagger = builtin_tagger();
    let unfiltered = Tagger::new(RuleSet::builtin().expect("rules"), Config { prefilter: false, ..Config::default() })
        .expect("tagger");
    for schema in ["flat", "ecs"] {
        for seed in [1, 2, 3] {
            let (path, truth) = generate(&dir, schema, seed, 15_000, 0.05, 0.25);
            let input = std::fs::read(&path).expect("corpus");
            let (output, stats) = tagger.tag_all(&input);
            assert_contract(&input, &output, "iis_tagger");
            let got = tagged(&output);
            assert!(truth.len() > 500, "the corpus has matches of every rule");
            let missing: Vec<_> = truth.difference(&got).take(5).collect();
            let extra: Vec<_> = got.difference(&truth).take(5).collect();
            assert!(
                missing.is_empty() && extra.is_empty(),
                "{schema} seed {seed}: missing {missing:?} extra {extra:?}"
            );
            assert_eq!(stats.annotated as usize, truth.len());
            if seed == 1 {
                let (full, _) = unfiltered.tag_all(&input);
                assert_eq!(full, output, "{schema}: the prefilter changes nothing");
            }
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn the_binary_tags_a_generated_corpus_like_the_library() {
    let dir = temp_dir("gen-cli");
    let (path, truth) = generate(&dir, "ecs", 7, 4_000, 0.05, 0.2);
    let out = Command::new(env!("CARGO_BIN_EXE_iis-tagger")).arg(&path).output().expect("runs");
    assert!(out.status.success());
    assert_eq!(tagged(&out.stdout), truth);
    let (lib, _) = builtin_tagger().tag_all(&std::fs::read(&path).expect("corpus"));
    assert_eq!(out.stdout, lib);
    let _ = std::fs::remove_dir_all(dir);
}
