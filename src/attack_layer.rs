//! An ATT&CK Navigator layer of the techniques that fired: the JSON file SOC teams load
//! into MITRE's ATT&CK Navigator to see a hunt as a coloured matrix (layer format 4.5:
//! `name`, `domain`, `versions.layer` and `versions.navigator` are required; each
//! technique by `techniqueID`, scored, with the rules that fired in its comment).
//!
//! A technique's score is the detections of the rules that carry it, or their risk (each
//! detection counting its rule's risk score). Technique ids come from the rules' tags, so
//! from whoever wrote the rules: only ids of ATT&CK's form (`T1234`, `T1234.001`) are
//! written.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::rules::Rule;

/// The layer format version written.
pub const LAYER_VERSION: &str = "4.5";
/// The Navigator version written (format 4.5 wants at least 4.9.0).
pub const NAVIGATOR_VERSION: &str = "5.1.0";

/// What a technique's score counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Score {
    /// Detections of the rules carrying it.
    #[default]
    Count,
    /// The sum of those detections' risk scores.
    Risk,
}

/// A layer (the fields iis-tagger writes; the format has more, all optional).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Layer {
    /// The layer's name.
    pub name: String,
    /// What it shows.
    pub description: String,
    /// `enterprise-attack`.
    pub domain: &'static str,
    /// Format and Navigator versions.
    pub versions: Versions,
    /// Windows only.
    pub filters: Filters,
    /// By score, descending.
    pub sorting: u8,
    /// Show the ids beside the names.
    pub layout: Layout,
    /// Techniques that fired, in id order.
    pub techniques: Vec<Technique>,
    /// White to red, 0 to the highest score.
    pub gradient: Gradient,
    /// Who made the layer.
    pub metadata: Vec<Metadata>,
}

/// `versions`.
#[derive(Debug, Serialize)]
pub struct Versions {
    /// The Navigator version.
    pub navigator: &'static str,
    /// The layer format version.
    pub layer: &'static str,
}

/// `filters`.
#[derive(Debug, Serialize)]
pub struct Filters {
    /// Platforms shown.
    pub platforms: Vec<&'static str>,
}

/// `layout`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Layout {
    /// `side`.
    pub layout: &'static str,
    /// Show technique ids.
    #[serde(rename = "showID")]
    pub show_id: bool,
    /// Show technique names.
    pub show_name: bool,
}

/// One technique.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Technique {
    /// `T1234` or `T1234.001`.
    #[serde(rename = "techniqueID")]
    pub technique_id: String,
    /// Detections, or their risk.
    pub score: u64,
    /// The rules that fired with it and their detections.
    pub comment: String,
    /// Always true.
    pub enabled: bool,
}

/// `gradient`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Gradient {
    /// From the lowest score to the highest.
    pub colors: Vec<&'static str>,
    /// 0.
    pub min_value: u64,
    /// The highest score (at least 1: the format wants it above `min_value`).
    pub max_value: u64,
}

/// One `metadata` entry.
#[derive(Debug, Serialize)]
pub struct Metadata {
    /// Its name.
    pub name: &'static str,
    /// Its value.
    pub value: String,
}

/// Whether `id` is of ATT&CK's technique form: `T` and four digits, then optionally `.`
/// and three.
pub fn is_technique_id(id: &str) -> bool {
    let b = id.as_bytes();
    let digits = |s: &[u8]| s.iter().all(u8::is_ascii_digit);
    match b {
        [b'T', rest @ ..] if rest.len() == 4 => digits(rest),
        [b'T', rest @ ..] if rest.len() == 8 && rest[4] == b'.' => digits(&rest[..4]) && digits(&rest[5..]),
        _ => false,
    }
}

/// A technique's score, and the rules that fired with it and their detections.
type Fired<'a> = (u64, Vec<(&'a str, u64)>);

/// The layer of what fired: `matches[r]` detections of `rules[r]`.
pub fn layer(rules: &[Rule], matches: &[u64], score: Score) -> Layer {
    // Per technique: its score and the rules that fired with it.
    let mut techniques: BTreeMap<String, Fired<'_>> = BTreeMap::new();
    for (rule, &n) in rules.iter().zip(matches).filter(|&(_, &n)| n > 0) {
        let add = match score {
            Score::Count => n,
            Score::Risk => n.saturating_mul(u64::from(rule.meta.risk_score)),
        };
        for id in rule.meta.mitre.iter().map(|m| m.trim().to_ascii_uppercase()).filter(|m| is_technique_id(m)) {
            let entry = techniques.entry(id).or_default();
            entry.0 = entry.0.saturating_add(add);
            if !entry.1.iter().any(|(slug, _)| *slug == rule.meta.slug) {
                entry.1.push((&rule.meta.slug, n));
            }
        }
    }
    let max = techniques.values().map(|(s, _)| *s).max().unwrap_or(0).max(1);
    let detections: u64 = matches.iter().sum();
    let what = match score {
        Score::Count => "detections",
        Score::Risk => "risk (detections times the rule's risk score)",
    };
    Layer {
        name: "iis-tagger detections".into(),
        description: format!(
            "ATT&CK techniques of the rules that fired ({detections} detections, {} techniques), scored by {what}",
            techniques.len()
        ),
        domain: "enterprise-attack",
        versions: Versions { navigator: NAVIGATOR_VERSION, layer: LAYER_VERSION },
        filters: Filters { platforms: vec!["Windows"] },
        sorting: 3,
        layout: Layout { layout: "side", show_id: true, show_name: true },
        techniques: techniques
            .into_iter()
            .map(|(technique_id, (score, fired))| Technique {
                technique_id,
                score,
                comment: fired.iter().map(|(slug, n)| format!("{slug}: {n}")).collect::<Vec<_>>().join("; "),
                enabled: true,
            })
            .collect(),
        gradient: Gradient { colors: vec!["#ffffff", "#ffb000", "#e00000"], min_value: 0, max_value: max },
        metadata: vec![
            Metadata { name: "generated by", value: format!("iis-tagger {}", env!("CARGO_PKG_VERSION")) },
            Metadata { name: "score", value: what.into() },
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn technique_ids() {
        for ok in ["T1505", "T1505.004", "T0001"] {
            assert!(is_technique_id(ok), "{ok}");
        }
        for bad in ["", "T150", "T15050", "T1505.04", "T1505.0044", "t1505", "TA0003", "T1505.", "T１５０５"] {
            assert!(!is_technique_id(bad), "{bad}");
        }
    }

    #[test]
    fn scores_by_count_and_risk() {
        let rules = crate::RuleSet::builtin().expect("built-ins").rules().to_vec();
        let mut matches = vec![0; rules.len()];
        matches[3] = 5;
        matches[4] = 2;
        let by_count = layer(&rules, &matches, Score::Count);
        let by_risk = layer(&rules, &matches, Score::Risk);
        let ids: Vec<&str> = by_count.techniques.iter().map(|t| t.technique_id.as_str()).collect();
        let mut expected: Vec<String> = [3, 4].iter().flat_map(|&r| rules[r].meta.mitre.clone()).collect();
        expected.sort();
        expected.dedup();
        assert_eq!(ids, expected);
        for (c, r) in by_count.techniques.iter().zip(&by_risk.techniques) {
            let carriers = |n: usize| rules[n].meta.mitre.contains(&c.technique_id);
            let count: u64 = [3, 4].iter().filter(|&&n| carriers(n)).map(|&n| matches[n]).sum();
            let risk: u64 = [3, 4]
                .iter()
                .filter(|&&n| carriers(n))
                .map(|&n| matches[n] * u64::from(rules[n].meta.risk_score))
                .sum();
            assert_eq!((c.score, r.score), (count, risk), "{}", c.technique_id);
        }
        assert_eq!(by_count.gradient.max_value, by_count.techniques.iter().map(|t| t.score).max().unwrap_or(1));
        let empty = layer(&rules, &vec![0; rules.len()], Score::Count);
        assert!(empty.techniques.is_empty());
        assert!(empty.gradient.max_value > empty.gradient.min_value);
    }
}
