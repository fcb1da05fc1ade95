//! Corpora from `../shared/tools/gen-sysmon-corpus`: the (line, rule) pairs tagged equal
//! the truth file's matches exactly, in every schema and for several seeds.
//!
//! Small corpora of each schema are kept in `tests/fixtures/generated/` (written by
//! generator 2.1, see the README there), so that a bare clone checks them; with the
//! generator at hand, larger ones are made fresh and the kept ones are checked to be what
//! the generator writes.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use iis_tagger::{Config, RuleSet, Tagger};

use crate::needs::{Need, need};
use crate::support::{assert_contract, builtin_tagger, detections, repo, temp_dir};

/// The (line, slug) matches of a truth file.
fn truth_matches(truth: &Path) -> BTreeSet<(usize, String)> {
    std::fs::read_to_string(truth)
        .expect("truth")
        .lines()
        .filter_map(|l| {
            let cols: Vec<&str> = l.split('\t').collect();
            (cols[2] != "candidate").then(|| (cols[0].parse().expect("line"), cols[2].to_string()))
        })
        .collect()
}

/// Generates a corpus with `generator`; returns its path and the truth file's matches.
pub fn generate_with(
    generator: &Path,
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
        .arg(generator)
        .args(["--schema", schema, "--seed", &seed.to_string(), "--lines", &lines.to_string()])
        .args(["--match-rate", &match_rate.to_string(), "--candidate-rate", &candidate_rate.to_string()])
        .arg("-o")
        .arg(&corpus)
        .arg("--truth")
        .arg(&truth)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("python3 runs gen-sysmon-corpus");
    assert!(status.success(), "gen-sysmon-corpus failed");
    let matches = truth_matches(&truth);
    (corpus, matches)
}

/// [`generate_with`] the shared generator, or `None` when it is missing (the test is
/// skipped; under CI it fails).
pub fn generate(
    dir: &Path,
    schema: &str,
    seed: u32,
    lines: u32,
    match_rate: f64,
    candidate_rate: f64,
) -> Option<(PathBuf, BTreeSet<(usize, String)>)> {
    let generator = need(Need::Generator)?;
    Some(generate_with(&generator, dir, schema, seed, lines, match_rate, candidate_rate))
}

/// The schemas of the generator and the file extension of each.
pub const SCHEMAS: [(&str, &str); 3] = [("flat", "jsonl"), ("ecs", "jsonl"), ("xml", "log")];

/// The kept corpus of `schema` and its truth file's matches.
pub fn kept(schema: &str) -> (PathBuf, BTreeSet<(usize, String)>) {
    let ext = SCHEMAS.iter().find(|(s, _)| *s == schema).expect("a schema").1;
    let path = repo(&format!("tests/fixtures/generated/{schema}-seed11.{ext}"));
    let truth = truth_matches(&repo(&format!("tests/fixtures/generated/{schema}-seed11.truth")));
    (path, truth)
}

fn tagged(output: &[u8]) -> BTreeSet<(usize, String)> {
    detections(output, "iis_tagger")
        .into_iter()
        .enumerate()
        .flat_map(|(i, slugs)| slugs.into_iter().map(move |s| (i + 1, s)))
        .collect()
}

/// Tags a corpus and checks it against its truth, and the prefilter against none.
fn check(label: &str, path: &Path, truth: &BTreeSet<(usize, String)>, tagger: &Tagger, unfiltered: &Tagger) {
    let input = std::fs::read(path).expect("corpus");
    let (output, stats) = tagger.tag_all(&input);
    assert_contract(&input, &output, "iis_tagger");
    let got = tagged(&output);
    assert!(truth.len() > 50, "{label}: the corpus has matches of every rule");
    let missing: Vec<_> = truth.difference(&got).take(5).collect();
    let extra: Vec<_> = got.difference(truth).take(5).collect();
    assert!(missing.is_empty() && extra.is_empty(), "{label}: missing {missing:?} extra {extra:?}");
    assert_eq!(stats.annotated as usize, truth.len(), "{label}");
    let (full, _) = unfiltered.tag_all(&input);
    assert!(full == output, "{label}: the prefilter changes nothing");
}

#[test]
fn generated_corpora_equal_their_truth_files() {
    let tagger = builtin_tagger();
    let unfiltered = Tagger::new(RuleSet::builtin().expect("rules"), Config { prefilter: false, ..Config::default() })
        .expect("tagger");
    for (schema, _) in SCHEMAS {
        let (path, truth) = kept(schema);
        check(&format!("kept {schema}"), &path, &truth, &tagger, &unfiltered);
    }
    let Some(generator) = need(Need::Generator) else { return };
    let dir = temp_dir("gen");
    for (schema, _) in SCHEMAS {
        for seed in [1, 2, 3] {
            let (path, truth) = generate_with(&generator, &dir, schema, seed, 15_000, 0.05, 0.25);
            check(&format!("{schema} seed {seed}"), &path, &truth, &tagger, &unfiltered);
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// The kept corpora are what the generator writes for their seed and settings.
#[test]
fn kept_corpora_are_the_generators_output() {
    let Some(generator) = need(Need::Generator) else { return };
    let dir = temp_dir("gen-kept");
    for (schema, _) in SCHEMAS {
        let (made, _) = generate_with(&generator, &dir, schema, 11, 500, 0.12, 0.25);
        let (path, _) = kept(schema);
        assert!(std::fs::read(made).expect("made") == std::fs::read(path).expect("kept"), "{schema}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn the_binary_tags_a_generated_corpus_like_the_library() {
    for (schema, _) in SCHEMAS {
        let (path, truth) = kept(schema);
        let out = Command::new(env!("CARGO_BIN_EXE_iis-tagger")).arg(&path).output().expect("runs");
        assert!(out.status.success());
        assert_eq!(tagged(&out.stdout), truth, "{schema}");
        let (lib, _) = builtin_tagger().tag_all(&std::fs::read(&path).expect("corpus"));
        assert!(out.stdout == lib, "{schema}");
    }
}
