//! `iis-tagger rules`: what is loaded.

use std::fmt::Write as _;

use iis_tagger::Config;
use iis_tagger::prefilter::Literal;
use iis_tagger::rules::RuleMeta;

use super::args::{RuleArgs, RulesArgs, StatsFormat};
use super::run::{Failure, build_tagger};

/// The listing of the loaded rules.
pub fn list(rules: &RuleArgs, args: &RulesArgs) -> Result<String, Failure> {
    let tagger = build_tagger(rules, Config::default())?;
    let metas: Vec<&RuleMeta> = tagger.rules().rules().iter().map(|r| &r.meta).collect();
    Ok(match args.format {
        StatsFormat::Json => {
            let listed: Vec<Listed<'_>> = metas
                .iter()
                .enumerate()
                .map(|(i, meta)| Listed { meta, trigger: tagger.prefilter().rule_trigger(i).collect() })
                .collect();
            serde_json::to_string_pretty(&listed).expect("metadata serializes") + "\n"
        }
        StatsFormat::Text => table(&metas),
    })
}

/// A rule in the JSON listing: its metadata and the literals that make a line worth
/// evaluating for it (empty: every line is).
#[derive(serde::Serialize)]
struct Listed<'a> {
    #[serde(flatten)]
    meta: &'a RuleMeta,
    trigger: Vec<&'a Literal>,
}

fn table(metas: &[&RuleMeta]) -> String {
    let rows: Vec<[String; 6]> = metas
        .iter()
        .map(|m| {
            [
                m.slug.clone(),
                m.source.clone(),
                m.risk_score.to_string(),
                m.severity.as_str().to_string(),
                m.mitre.join(","),
                m.title.clone(),
            ]
        })
        .collect();
    let header = ["RULE", "SOURCE", "RISK", "SEVERITY", "ATT&CK", "TITLE"].map(String::from);
    let mut widths = header.clone().map(|h| h.len());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut s = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i == 2 {
                let _ = write!(line, "{:>w$}  ", cell, w = widths[i]);
            } else if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{:<w$}  ", cell, w = widths[i]);
            }
        }
        s.push_str(line.trim_end());
        s.push('\n');
    }
    let builtin = metas.iter().filter(|m| m.origin.starts_with("builtin:")).count();
    let _ = writeln!(s, "{} rules ({} built-in, {} from --rules)", metas.len(), builtin, metas.len() - builtin);
    s
}
