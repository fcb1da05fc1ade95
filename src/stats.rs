//! What a stream did: lines, bytes, how many were examined, matches per rule, and the
//! lines that could not be inspected and why. Counted by the core, reported by the
//! front ends (`--stats`, the metrics endpoint).

use std::fmt::Write as _;

use serde::Serialize;

use crate::rules::Rule;

/// Lines that passed through without being inspected, by reason.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct NotInspected {
    /// Empty lines (nothing, or only `\r`).
    pub empty: u64,
    /// Lines that are not a JSON object (text, XML, arrays, a syslog header without one).
    pub not_json: u64,
    /// Lines that looked like JSON, held a rule literal, and failed to parse.
    pub invalid_json: u64,
    /// Lines longer than the line limit.
    pub oversized: u64,
    /// Matching records that already carried the annotation key (left as they were).
    pub already_annotated: u64,
}

/// Counters of one stream (or of several, merged).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Lines seen (a final line without `\n` counts).
    pub lines: u64,
    /// Bytes seen.
    pub bytes: u64,
    /// Lines the prefilter passed to the parser.
    pub candidates: u64,
    /// Candidates that parsed as a JSON object.
    pub parsed: u64,
    /// Of those, the ones parsed from a repaired copy (a lone surrogate, a number out of
    /// range; see [`crate::repair`]).
    pub repaired: u64,
    /// Lines written with an annotation.
    pub annotated: u64,
    /// Of those, records annotated as not fully evaluated (a cap was reached; see
    /// [`crate::event::Incomplete`]).
    pub incomplete: u64,
    /// Values not evaluated again because an identical value of the same field was.
    pub duplicate_values: u64,
    /// Values not evaluated because their field had reached
    /// [`crate::event::MAX_OCCURRENCES`] distinct ones.
    pub capped_values: u64,
    /// Per rule (by index), the lines it matched.
    pub matches: Vec<u64>,
    /// Lines not inspected, by reason.
    pub not_inspected: NotInspected,
}

impl Stats {
    /// Zeroed counters for `rules` rules.
    pub fn new(rules: usize) -> Stats {
        Stats { matches: vec![0; rules], ..Stats::default() }
    }

    /// Zeroes every counter, keeping the number of rules.
    pub fn reset(&mut self) {
        let mut matches = std::mem::take(&mut self.matches);
        matches.iter_mut().for_each(|m| *m = 0);
        *self = Stats { matches, ..Stats::default() };
    }

    /// Adds another stream's counters.
    pub fn merge(&mut self, other: &Stats) {
        self.lines += other.lines;
        self.bytes += other.bytes;
        self.candidates += other.candidates;
        self.parsed += other.parsed;
        self.repaired += other.repaired;
        self.annotated += other.annotated;
        self.incomplete += other.incomplete;
        self.duplicate_values += other.duplicate_values;
        self.capped_values += other.capped_values;
        if self.matches.len() < other.matches.len() {
            self.matches.resize(other.matches.len(), 0);
        }
        for (a, b) in self.matches.iter_mut().zip(&other.matches) {
            *a += b;
        }
        let (a, b) = (&mut self.not_inspected, &other.not_inspected);
        a.empty += b.empty;
        a.not_json += b.not_json;
        a.invalid_json += b.invalid_json;
        a.oversized += b.oversized;
        a.already_annotated += b.already_annotated;
    }

    /// A report naming the rules.
    pub fn report<'a>(&'a self, rules: &'a [Rule]) -> Report<'a> {
        Report {
            lines: self.lines,
            bytes: self.bytes,
            candidates: self.candidates,
            parsed: self.parsed,
            repaired: self.repaired,
            annotated: self.annotated,
            incomplete: self.incomplete,
            duplicate_values: self.duplicate_values,
            capped_values: self.capped_values,
            matches: rules
                .iter()
                .zip(&self.matches)
                .map(|(r, &n)| RuleCount { rule: &r.meta.slug, count: n })
                .collect(),
            not_inspected: &self.not_inspected,
            skipped_rules: Vec::new(),
        }
    }
}

/// One rule's match count.
#[derive(Debug, Serialize)]
pub struct RuleCount<'a> {
    /// The rule's slug.
    pub rule: &'a str,
    /// Lines matched.
    pub count: u64,
}

/// Stats with rule names, for printing.
#[derive(Debug, Serialize)]
pub struct Report<'a> {
    /// See [`Stats::lines`].
    pub lines: u64,
    /// See [`Stats::bytes`].
    pub bytes: u64,
    /// See [`Stats::candidates`].
    pub candidates: u64,
    /// See [`Stats::parsed`].
    pub parsed: u64,
    /// See [`Stats::repaired`].
    pub repaired: u64,
    /// See [`Stats::annotated`].
    pub annotated: u64,
    /// See [`Stats::incomplete`].
    pub incomplete: u64,
    /// See [`Stats::duplicate_values`].
    pub duplicate_values: u64,
    /// See [`Stats::capped_values`].
    pub capped_values: u64,
    /// Matches per rule, in rule order.
    pub matches: Vec<RuleCount<'a>>,
    /// See [`Stats::not_inspected`].
    pub not_inspected: &'a NotInspected,
    /// Rule files that could not be loaded and were skipped (`--skip-invalid-rules`), as
    /// `file:line:col: reason`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub skipped_rules: Vec<String>,
}

impl Report<'_> {
    /// The report as one JSON object.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a report serializes")
    }

    /// The report as text for people.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "iis-tagger: {} lines, {} bytes; {} candidates, {} parsed ({} repaired), {} annotated",
            self.lines, self.bytes, self.candidates, self.parsed, self.repaired, self.annotated
        );
        if self.incomplete + self.duplicate_values + self.capped_values > 0 {
            let _ = writeln!(
                s,
                "  not fully evaluated: {} records (annotated as such); values skipped: {} duplicates, {} over the cap",
                self.incomplete, self.duplicate_values, self.capped_values
            );
        }
        let width = self.matches.iter().map(|m| m.rule.len()).max().unwrap_or(0);
        for m in &self.matches {
            let _ = writeln!(s, "  {:<width$}  {}", m.rule, m.count);
        }
        let n = self.not_inspected;
        let _ = writeln!(
            s,
            "  not inspected: {} empty, {} not JSON, {} invalid JSON, {} over the line limit, {} already annotated",
            n.empty, n.not_json, n.invalid_json, n.oversized, n.already_annotated
        );
        if !self.skipped_rules.is_empty() {
            let _ = writeln!(s, "  {} rule files skipped:", self.skipped_rules.len());
            for r in &self.skipped_rules {
                let _ = writeln!(s, "    {r}");
            }
        }
        s
    }
}
