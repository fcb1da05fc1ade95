//! The real public corpus in `../shared/corpus`: for every file, the lines tagged per rule
//! equal the counts in its README, the tagged lines are exactly those the reference
//! reading (`tools/tag_check.py --labels`) names, and every other line is byte-identical.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use iis_tagger::RuleSet;

use crate::needs::{Need, need_all};
use crate::support::{assert_contract, builtin_tagger, detections};

/// `file → [count per rule column 1..8]` from the README table.
fn expected_counts(corpus: &Path) -> BTreeMap<String, Vec<u64>> {
    let readme = std::fs::read_to_string(corpus.join("README.md")).expect("corpus README");
    let mut table = BTreeMap::new();
    for row in readme.lines() {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        // | `file` | events | origin | 1 | ... | 8 |
        if cells.len() != 13 || !cells[1].starts_with('`') {
            continue;
        }
        let file = cells[1].trim_matches('`');
        if !(file.starts_with("evtxdump-json/") || file.starts_with("windows-xml/")) {
            continue;
        }
        let counts: Vec<u64> = cells[4..12].iter().map(|c| c.parse().expect("count")).collect();
        table.insert(file.to_string(), counts);
    }
    table
}

fn reference_labels(corpus: &Path, files: &[String]) -> BTreeSet<(String, usize, String)> {
    let out = Command::new("python3")
        .current_dir(corpus)
        .arg("tools/tag_check.py")
        .arg("--labels")
        .args(files)
        .output()
        .expect("python3 runs tools/tag_check.py");
    assert!(out.status.success(), "tag_check.py failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout)
        .expect("utf8")
        .lines()
        .map(|l| {
            let mut parts = l.split('\t');
            let (file, line, slug) = (parts.next(), parts.next(), parts.next());
            (
                file.expect("file").to_string(),
                line.expect("line").parse().expect("line no"),
                slug.expect("slug").to_string(),
            )
        })
        .collect()
}

#[test]
fn real_corpus_counts_labels_and_bytes() {
    let Some([corpus, _]) = need_all([Need::Corpus, Need::TagCheck]) else { return };
    let expected = expected_counts(&corpus);
    assert!(expected.len() >= 50, "the README table lists every corpus file ({} found)", expected.len());
    let slugs: Vec<String> = RuleSet::builtin().expect("rules").rules().iter().map(|r| r.meta.slug.clone()).collect();
    let tagger = builtin_tagger();
    let files: Vec<String> = expected.keys().cloned().collect();
    let reference = reference_labels(&corpus, &files);
    let mut ours = BTreeSet::new();
    let mut total = 0u64;
    for (file, want) in &expected {
        let input = std::fs::read(corpus.join(file)).expect("corpus file");
        let (output, stats) = tagger.tag_all(&input);
        assert_contract(&input, &output, "iis_tagger");
        assert_eq!(stats.matches, *want, "{file}: matches per rule (README columns 1-8)");
        for (i, found) in detections(&output, "iis_tagger").into_iter().enumerate() {
            for slug in found {
                assert!(slugs.contains(&slug));
                ours.insert((file.clone(), i + 1, slug));
                total += 1;
            }
        }
    }
    assert_eq!(total, 51, "README: 51 hits in all");
    let missing: Vec<_> = reference.difference(&ours).collect();
    let extra: Vec<_> = ours.difference(&reference).collect();
    assert!(missing.is_empty() && extra.is_empty(), "against tag_check.py: missing {missing:?}, extra {extra:?}");
}
