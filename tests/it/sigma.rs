//! The SigmaHQ Windows rules of `../shared/sigma` (issue 5): every rule loads, and with all
//! of them (plus the built-ins) the prefilter changes nothing — the output with it equals
//! the output of evaluating every rule on every line, on the real corpus and on generated
//! corpora in both schemas.

use std::path::PathBuf;

use iis_tagger::{Config, RuleSet, RuleSetBuilder, Tagger};

use crate::generated::generate;
use crate::needs::{Need, need_all, shared};
use crate::support::{assert_contract, temp_dir};

fn sigma_windows() -> PathBuf {
    shared().join("sigma/rules/windows")
}

fn sigma_rule_set() -> RuleSet {
    let mut b = RuleSetBuilder::new();
    b.add_builtin().expect("built-ins");
    b.add_path(&sigma_windows()).unwrap_or_else(|e| panic!("the SigmaHQ Windows rules load: {e}"));
    b.build()
}

fn corpus_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    for dir in ["corpus/evtxdump-json", "corpus/windows-xml"] {
        let root = shared().join(dir);
        for entry in walk(&root) {
            if entry.extension().is_some_and(|e| e == "jsonl" || e == "log") {
                files.push(entry);
            }
        }
    }
    files.sort();
    files
}

fn walk(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("corpus folder") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[test]
fn every_sigmahq_windows_rule_loads() {
    if need_all([Need::SigmaRules]).is_none() {
        return;
    }
    let files = walk(&sigma_windows()).into_iter().filter(|p| p.extension().is_some_and(|e| e == "yml")).count();
    let set = sigma_rule_set();
    assert_eq!(set.rules().len(), files + 8, "every rule file of ../shared/sigma/rules/windows and the built-ins");
    assert!(files >= 1589);
    // Authors travel with the rules (Detection Rule License).
    let sigma = &set.rules()[8..];
    assert!(sigma.iter().filter(|r| r.meta.author.is_some()).count() * 100 >= sigma.len() * 99);
}

/// With the whole rule set, the prefilter (which takes its every-line, routed path here)
/// gives the same output as no prefilter at all.
#[test]
fn with_every_sigmahq_rule_the_prefilter_changes_nothing() {
    if need_all([Need::SigmaRules, Need::Corpus, Need::Generator]).is_none() {
        return;
    }
    let with = Tagger::new(sigma_rule_set(), Config::default()).expect("tagger");
    let without = Tagger::new(sigma_rule_set(), Config { prefilter: false, ..Config::default() }).expect("tagger");
    assert!(with.prefilter().examines_every_line(), "the SigmaHQ set takes the routed path");
    let mut inputs: Vec<(String, Vec<u8>)> = corpus_files()
        .into_iter()
        .map(|p| (p.display().to_string(), std::fs::read(&p).expect("corpus file")))
        .collect();
    let dir = temp_dir("sigma");
    for (schema, seed) in [("flat", 21), ("ecs", 22)] {
        let (path, _) = generate(&dir, schema, seed, 4000, 0.01, 0.05).expect("the generator is there");
        inputs.push((path.display().to_string(), std::fs::read(&path).expect("generated")));
    }
    let mut annotated = 0;
    for (name, input) in &inputs {
        let (fast, stats) = with.tag_all(input);
        let (slow, _) = without.tag_all(input);
        assert!(fast == slow, "{name}: the prefilter changed the output");
        assert_contract(input, &fast, "iis_tagger");
        annotated += stats.annotated;
    }
    assert!(annotated > 1000, "the SigmaHQ rules find things in these corpora ({annotated} lines)");
    let _ = std::fs::remove_dir_all(dir);
}
