//! `iis-tagger rules`: what is loaded; `iis-tagger rules check`: what would load.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Instant;

use iis_tagger::prefilter::Literal;
use iis_tagger::rules::RuleMeta;
use iis_tagger::{Config, RuleSetBuilder, Tagger};
use serde::Serialize;

use super::args::{CheckArgs, RuleArgs, RulesAction, RulesArgs, StatsFormat};
use super::common::{Failure, build_tagger};

/// What `iis-tagger rules ...` prints, and whether it failed (`check --strict`).
pub fn run(rules: &RuleArgs, args: &RulesArgs) -> Result<(String, bool), Failure> {
    match &args.action {
        None => list(rules, args).map(|text| (text, false)),
        Some(RulesAction::Check(check_args)) => Ok(check(rules, check_args)),
    }
}

/// The report of `rules check`.
#[derive(Serialize)]
struct CheckReport {
    loaded: usize,
    /// Filters of --filters loaded (refused ones are in `refused`).
    filters: usize,
    refused: Vec<Refusal>,
    /// --disable-rule and --rule-risk names no loaded rule has.
    option_errors: Vec<String>,
    /// Reason (the wording of the refusal, its placeholders elided) → how many rules.
    by_reason: BTreeMap<String, usize>,
    /// Category (unsupported, invalid, yaml, duplicate, unreadable) → how many rules.
    by_category: BTreeMap<&'static str, usize>,
    /// Loaded rules the prefilter gets no literal from (evaluated on every record of
    /// their log source).
    without_literal: Vec<String>,
    load_seconds: f64,
}

#[derive(Serialize)]
struct Refusal {
    file: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    line: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    column: Option<usize>,
    category: &'static str,
    reason: String,
}

/// Loads every rule under the paths (each on its own: one refusal does not stop the rest)
/// and reports.
fn check(rules: &RuleArgs, args: &CheckArgs) -> (String, bool) {
    let started = Instant::now();
    let mut builder = match rules.shape_table() {
        Ok(shapes) => RuleSetBuilder::with_shapes(shapes),
        Err(_) => RuleSetBuilder::new(),
    };
    if !rules.no_builtin {
        // The built-ins always load; they are here so that clashes with them show.
        let _ = builder.add_builtin();
    }
    let mut errors = Vec::new();
    for path in &args.paths {
        if let Err(e) = builder.add_path_skipping(path, &mut errors) {
            errors.push(e);
        }
    }
    // The filters of --filters, against the rules loaded so far: a filter that names no
    // loaded rule, or one its log source does not cover, is refused here as at start-up.
    let mut filters = 0;
    // File by file, as the rules are: one refused filter does not hide the others'.
    for path in &rules.filters {
        match iis_tagger::rules::rule_files(path) {
            Ok(files) => {
                for file in files {
                    match builder.add_filter_path(&file) {
                        Ok(n) => filters += n,
                        Err(e) => errors.push(e),
                    }
                }
            }
            Err(e) => errors.push(e),
        }
    }
    let mut option_errors = Vec::new();
    for name in &rules.disable_rule {
        if let Err(e) = builder.disable(name) {
            option_errors.push(format!("--disable-rule: {e}"));
        }
    }
    for (name, risk) in &rules.rule_risk {
        if let Err(e) = builder.set_risk(name, *risk) {
            option_errors.push(format!("--rule-risk: {e}"));
        }
    }
    let set = builder.build();
    let loaded = set.rules().len();
    let tagger = Tagger::new(set, Config::default()).expect("the default configuration is valid");
    let load_seconds = started.elapsed().as_secs_f64();
    let without_literal = (0..loaded)
        .filter(|&r| tagger.prefilter().rule_trigger(r).next().is_none())
        .map(|r| tagger.rules().rules()[r].meta.origin.clone())
        .collect();
    let mut by_reason = BTreeMap::new();
    let mut by_category = BTreeMap::new();
    let refused: Vec<Refusal> = errors
        .iter()
        .map(|e| {
            *by_reason.entry(e.reason()).or_insert(0) += 1;
            *by_category.entry(e.category()).or_insert(0) += 1;
            Refusal {
                file: e.origin().to_string(),
                line: e.pos().map(|p| p.line),
                column: e.pos().map(|p| p.col),
                category: e.category(),
                reason: e.message(),
            }
        })
        .collect();
    let failed = args.strict && !(refused.is_empty() && option_errors.is_empty());
    let report =
        CheckReport { loaded, filters, refused, option_errors, by_reason, by_category, without_literal, load_seconds };
    let text = match args.format {
        StatsFormat::Json => serde_json::to_string_pretty(&report).expect("the report serializes") + "\n",
        StatsFormat::Text => check_text(&report, &errors),
    };
    (text, failed)
}

fn check_text(report: &CheckReport, errors: &[iis_tagger::RuleError]) -> String {
    let mut s = String::new();
    for e in errors {
        let _ = writeln!(s, "refused: {e}");
    }
    for e in &report.option_errors {
        let _ = writeln!(s, "refused: {e}");
    }
    let _ = writeln!(
        s,
        "{} rules loaded, {} filters, {} refused, in {:.3} s",
        report.loaded,
        report.filters,
        report.refused.len() + report.option_errors.len(),
        report.load_seconds
    );
    if !report.by_category.is_empty() {
        let counts: Vec<String> = report.by_category.iter().map(|(c, n)| format!("{n} {c}")).collect();
        let _ = writeln!(s, "  refused: {}", counts.join(", "));
    }
    for (reason, n) in &report.by_reason {
        let _ = writeln!(s, "  {n:>5}  {reason}");
    }
    if !report.without_literal.is_empty() {
        let _ = writeln!(
            s,
            "{} loaded rules give the prefilter no literal (evaluated on every record of their log source):",
            report.without_literal.len()
        );
        for origin in &report.without_literal {
            let _ = writeln!(s, "  {origin}");
        }
    }
    s
}

/// The listing of the loaded rules.
fn list(rules: &RuleArgs, args: &RulesArgs) -> Result<String, Failure> {
    let (tagger, _) = build_tagger(rules, Config::default())?;
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

/// `iis-tagger shapes`: the shape table, with the `--shapes` files added.
pub fn shapes(rules: &RuleArgs, args: &super::args::ShapesArgs) -> Result<String, Failure> {
    let table = rules.shape_table().map_err(Failure::setup)?;
    Ok(match args.format {
        StatsFormat::Text => table.to_text(),
        StatsFormat::Json => serde_json::to_string_pretty(table.as_ref()).map_err(Failure::io)? + "\n",
    })
}
