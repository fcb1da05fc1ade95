//! What a stream did: lines, bytes, how many were examined, matches per rule, and the
//! lines that could not be inspected and why. Counted by the core, reported by the
//! front ends (`--stats`, the metrics endpoint).

use std::fmt::Write as _;

use serde::Serialize;

use crate::rules::Rule;
use crate::shapes::{ShapeTable, WINDOWS_XML};

/// Lines that passed through without being inspected, by reason.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct NotInspected {
    /// Empty lines (nothing, or only `\r`).
    pub empty: u64,
    /// Lines that are neither a JSON object nor Windows XML (text, arrays, a syslog header
    /// without either).
    pub not_json: u64,
    /// Lines that looked like JSON, were inspected, and failed to parse.
    pub invalid_json: u64,
    /// Lines that looked like Windows XML, were inspected, and are not well-formed.
    pub invalid_xml: u64,
    /// Well-formed XML lines whose root is not a Windows event (`<Event>` with `<System>`).
    pub not_an_event: u64,
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
    /// Per shape of the shape table (by index), the records read that were recognised in
    /// it (a record in two shapes counts in both).
    pub shapes: Vec<u64>,
    /// Windows XML events read (lines).
    pub windows_xml: u64,
    /// JSON records read that held an event in a string member (XML or JSON).
    pub embedded_events: u64,
    /// JSON records read whose event in a string member does not start the string (blanks
    /// first): the prefilter does not mark such lines, so one is inspected only when a
    /// rule's literal shows outside the event's own escaping.
    pub unmarked_embedded: u64,
    /// JSON records read in which no shape was recognised and no event embedded: the
    /// stream may be in a shape the table does not know (see `iis-tagger shapes`).
    pub unrecognised_json: u64,
    /// Lines not inspected, by reason.
    pub not_inspected: NotInspected,
}

impl Stats {
    /// Zeroed counters for `rules` rules.
    pub fn new(rules: usize) -> Stats {
        Stats { matches: vec![0; rules], ..Stats::default() }
    }

    /// Zeroed counters for `rules` rules and `shapes` shapes.
    pub fn with_shapes(rules: usize, shapes: usize) -> Stats {
        Stats { matches: vec![0; rules], shapes: vec![0; shapes], ..Stats::default() }
    }

    /// Zeroes every counter, keeping the number of rules and shapes.
    pub fn reset(&mut self) {
        let mut matches = std::mem::take(&mut self.matches);
        matches.iter_mut().for_each(|m| *m = 0);
        let mut shapes = std::mem::take(&mut self.shapes);
        shapes.iter_mut().for_each(|m| *m = 0);
        *self = Stats { matches, shapes, ..Stats::default() };
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
        if self.shapes.len() < other.shapes.len() {
            self.shapes.resize(other.shapes.len(), 0);
        }
        for (a, b) in self.shapes.iter_mut().zip(&other.shapes) {
            *a += b;
        }
        self.windows_xml += other.windows_xml;
        self.embedded_events += other.embedded_events;
        self.unmarked_embedded += other.unmarked_embedded;
        self.unrecognised_json += other.unrecognised_json;
        let (a, b) = (&mut self.not_inspected, &other.not_inspected);
        a.empty += b.empty;
        a.not_json += b.not_json;
        a.invalid_json += b.invalid_json;
        a.invalid_xml += b.invalid_xml;
        a.not_an_event += b.not_an_event;
        a.oversized += b.oversized;
        a.already_annotated += b.already_annotated;
    }

    /// A report naming the rules and shapes.
    pub fn report<'a>(&'a self, rules: &'a [Rule], table: &'a ShapeTable) -> Report<'a> {
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
            shapes: table
                .shapes
                .iter()
                .zip(&self.shapes)
                .filter(|&(_, &n)| n > 0)
                .map(|(shape, &n)| ShapeCount { shape: &shape.name, count: n })
                .chain((self.windows_xml > 0).then_some(ShapeCount { shape: WINDOWS_XML, count: self.windows_xml }))
                .collect(),
            embedded_events: self.embedded_events,
            unmarked_embedded: self.unmarked_embedded,
            unrecognised_json: self.unrecognised_json,
            not_inspected: &self.not_inspected,
            skipped_rules: Vec::new(),
        }
    }
}

/// Records read in one shape.
#[derive(Debug, Serialize)]
pub struct ShapeCount<'a> {
    /// The shape's name.
    pub shape: &'a str,
    /// Records recognised in it.
    pub count: u64,
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
    /// Records read per shape (only shapes some record was in).
    pub shapes: Vec<ShapeCount<'a>>,
    /// See [`Stats::embedded_events`].
    pub embedded_events: u64,
    /// See [`Stats::unmarked_embedded`].
    pub unmarked_embedded: u64,
    /// See [`Stats::unrecognised_json`].
    pub unrecognised_json: u64,
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
        if self.incomplete + self.capped_values > 0 {
            let _ = writeln!(
                s,
                "  not fully evaluated: {} records (annotated as such); {} values over the cap of distinct values",
                self.incomplete, self.capped_values
            );
        }
        let width = self.matches.iter().map(|m| m.rule.len()).max().unwrap_or(0);
        for m in &self.matches {
            let _ = writeln!(s, "  {:<width$}  {}", m.rule, m.count);
        }
        let shapes: Vec<String> = self.shapes.iter().map(|c| format!("{} {}", c.shape, c.count)).collect();
        let embedded = if self.embedded_events > 0 {
            format!(" ({} with an event in a string member)", self.embedded_events)
        } else {
            String::new()
        };
        let _ = writeln!(
            s,
            "  shapes of the records read: {}{embedded}",
            if shapes.is_empty() { "none".into() } else { shapes.join(", ") }
        );
        if self.unmarked_embedded > 0 {
            let _ = writeln!(
                s,
                "  warning: {} records held an event in a string member after blanks: read, but lines like them are \
                 not marked for the prefilter (an event hidden behind a second escaping would be missed)",
                self.unmarked_embedded
            );
        }
        if self.unrecognised_json > 0 {
            let _ = writeln!(
                s,
                "  warning: {} JSON records held no Windows event in a shape iis-tagger knows: no rule can match them \
                 (`iis-tagger shapes` lists the shapes; --shapes FILE adds yours)",
                self.unrecognised_json
            );
        }
        let n = self.not_inspected;
        let _ = writeln!(
            s,
            "  not inspected: {} empty, {} neither JSON nor XML, {} invalid JSON, {} invalid XML, {} XML but no event, \
             {} over the line limit, {} already annotated",
            n.empty, n.not_json, n.invalid_json, n.invalid_xml, n.not_an_event, n.oversized, n.already_annotated
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

/// One counter of the core, as the metrics endpoint shows it (Prometheus name without the
/// `iis_tagger_` prefix, help text, and how it is read from [`Stats`]). The text and JSON
/// summaries show the same counters.
pub struct Counter {
    /// The metric's name.
    pub name: &'static str,
    /// What it counts.
    pub help: &'static str,
    /// Its value.
    pub get: fn(&Stats) -> u64,
}

/// The core's plain counters (the labelled ones — per rule, per shape, per reason a record
/// was not inspected — are [`Stats::matches`], [`Stats::shapes`] and
/// [`NotInspected::reasons`]).
pub const COUNTERS: &[Counter] = &[
    Counter { name: "lines_total", help: "Records read (lines or frames).", get: |s| s.lines },
    Counter { name: "bytes_total", help: "Bytes read.", get: |s| s.bytes },
    Counter { name: "candidates_total", help: "Records the prefilter passed to the parser.", get: |s| s.candidates },
    Counter { name: "parsed_total", help: "Records read (a JSON object or an XML event).", get: |s| s.parsed },
    Counter { name: "repaired_total", help: "Records parsed from a repaired copy.", get: |s| s.repaired },
    Counter { name: "annotated_total", help: "Records written with an annotation.", get: |s| s.annotated },
    Counter {
        name: "incomplete_total",
        help: "Records annotated as not fully evaluated (a cap was reached).",
        get: |s| s.incomplete,
    },
    Counter {
        name: "duplicate_values_total",
        help: "Values not evaluated again: identical to one of the same field.",
        get: |s| s.duplicate_values,
    },
    Counter {
        name: "capped_values_total",
        help: "Values not evaluated: their field had reached the cap of distinct values.",
        get: |s| s.capped_values,
    },
    Counter { name: "windows_xml_total", help: "Windows XML events read.", get: |s| s.windows_xml },
    Counter {
        name: "embedded_events_total",
        help: "JSON records read that held a whole event in a string member.",
        get: |s| s.embedded_events,
    },
    Counter {
        name: "unmarked_embedded_events_total",
        help: "JSON records read whose event in a string member starts after blanks (not marked for the prefilter).",
        get: |s| s.unmarked_embedded,
    },
    Counter {
        name: "unrecognised_records_total",
        help: "JSON records read in which no shape was recognised (no rule can match them).",
        get: |s| s.unrecognised_json,
    },
];

impl NotInspected {
    /// Each reason and its count.
    pub fn reasons(&self) -> [(&'static str, u64); 7] {
        [
            ("empty", self.empty),
            ("not_json", self.not_json),
            ("invalid_json", self.invalid_json),
            ("invalid_xml", self.invalid_xml),
            ("not_an_event", self.not_an_event),
            ("oversized", self.oversized),
            ("already_annotated", self.already_annotated),
        ]
    }
}
