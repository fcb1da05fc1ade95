//! What a stream did: lines, bytes, how many were examined, matches per rule, and the
//! lines that could not be inspected and why. Counted by the core, reported by the
//! front ends (`--stats`, the metrics endpoint).

use std::fmt::Write as _;

use serde::Serialize;

use crate::hunt::{Hunt, HuntReport};
use crate::rules::RuleSet;
use crate::shapes::WINDOWS_XML;

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

/// The plain counters of [`Stats`], declared once: each becomes a field of [`Stats`], an
/// entry of [`COUNTERS`] (which the text summary, the JSON summary and the Prometheus
/// endpoint read) and a term of [`Stats::merge`].
macro_rules! counters {
    ($( $(#[doc = $doc:literal])* $field:ident => $metric:literal, $help:literal; )*) => {
        /// Counters of one stream (or of several, merged).
        #[derive(Clone, Debug, Default, PartialEq, Eq)]
        pub struct Stats {
            $( $(#[doc = $doc])* pub $field: u64, )*
            /// Per rule (by index), the lines it matched.
            pub matches: Vec<u64>,
            /// Per (rule, filter) pair of [`crate::RuleSet::suppressions`] (by index), the
            /// matches the filter suppressed (grown as counted: shorter than the pairs
            /// when the last ones suppressed nothing).
            pub suppressed: Vec<u64>,
            /// Per shape of the shape table (by index), the records read that were
            /// recognised in it (a record in two shapes counts in both).
            pub shapes: Vec<u64>,
            /// Lines not inspected, by reason.
            pub not_inspected: NotInspected,
            /// What the annotated records were, by rule, host and time, when the
            /// configuration asks ([`crate::Config::summary`]).
            pub hunt: Option<Box<Hunt>>,
        }

        /// The plain counters of [`Stats`], in the order the summaries show them (the
        /// labelled ones — per rule, per shape, per reason a record was not inspected — are
        /// [`Stats::matches`], [`Stats::shapes`] and [`NotInspected::reasons`]).
        pub const COUNTERS: &[Counter] = &[
            $( Counter { key: stringify!($field), name: $metric, help: $help, get: |s| s.$field }, )*
        ];

        impl Stats {
            fn merge_counters(&mut self, other: &Stats) {
                $( self.$field += other.$field; )*
            }
        }
    };
}

counters! {
    /// Lines seen (a final line without `\n` counts; a frame or message is one).
    lines => "lines_total", "Records read (lines or frames).";
    /// Bytes seen.
    bytes => "bytes_total", "Bytes read.";
    /// Lines the prefilter passed to the parser.
    candidates => "candidates_total", "Records the prefilter passed to the parser.";
    /// Candidates that parsed (a JSON object or an XML event).
    parsed => "parsed_total", "Records read (a JSON object or an XML event).";
    /// Of those, the ones parsed from a repaired copy (a lone surrogate, a number out of
    /// range; see [`crate::repair`]).
    repaired => "repaired_total", "Records parsed from a repaired copy.";
    /// Lines written with an annotation.
    annotated => "annotated_total", "Records written with an annotation.";
    /// Of those, records annotated as not fully evaluated (a cap was reached; see
    /// [`crate::event::Incomplete`]).
    incomplete => "incomplete_total", "Records annotated as not fully evaluated (a cap was reached).";
    /// Values not evaluated again because an identical value of the same field was.
    duplicate_values => "duplicate_values_total", "Values not evaluated again: identical to one of the same field.";
    /// Values not evaluated because their field had reached
    /// [`crate::event::MAX_OCCURRENCES`] distinct ones.
    capped_values => "capped_values_total", "Values not evaluated: their field had reached the cap of distinct values.";
    /// Windows XML events read (lines).
    windows_xml => "windows_xml_total", "Windows XML events read.";
    /// JSON records read that held an event in a string member (XML or JSON).
    embedded_events => "embedded_events_total", "JSON records read that held a whole event in a string member.";
    /// JSON records read whose event in a string member does not start the string (blanks
    /// first): the prefilter does not mark such lines, so one is inspected only when a
    /// rule's literal shows outside the event's own escaping.
    unmarked_embedded => "unmarked_embedded_events_total",
        "JSON records read whose event in a string member starts after blanks (not marked for the prefilter).";
    /// JSON records read in which no shape was recognised and no event embedded: the
    /// stream may be in a shape the table does not know (see `iis-tagger shapes`).
    unrecognised_json => "unrecognised_records_total",
        "JSON records read in which no shape was recognised (no rule can match them).";
    /// Octet-counted frames read (long ones included; see [`crate::framing`]).
    frames => "frames_total", "Octet-counted frames read.";
    /// Records outside the octet-counted framing (read up to `\n`).
    unframed => "unframed_records_total", "Records outside the octet-counted framing.";
    /// Records the input ended inside of, written (as they came, or ended by `\n`; see
    /// [`crate::driver`]).
    unterminated => "unterminated_records_total",
        "Records an input ended inside of (written as they came, or ended by a newline).";
    /// Parts of frames over the limit written as frames of their own (octet-counted output).
    split_parts => "split_frame_parts_total",
        "Parts of frames over the limit written as frames of their own (octet-counted output).";
    /// EVTX files read (see `crate::evtx`).
    evtx_files => "evtx_files_total", "EVTX files read.";
    /// Records read from EVTX files (each written as one JSON line).
    evtx_records => "evtx_records_total", "Records read from EVTX files.";
    /// Chunks or records of EVTX files that could not be read (skipped, each reported).
    evtx_damaged => "evtx_damaged_total", "Chunks or records of EVTX files that could not be read.";
    /// EVTX files given as a stream (stdin from a pipe): copied to a temporary file, then
    /// read (and counted in `evtx_files`).
    evtx_streams => "evtx_streams_total", "EVTX files given as a stream (a pipe), read through a temporary file.";
    /// Records not written because they matched no rule (`--matches-only`).
    unmatched_dropped => "unmatched_not_written_total", "Records not written because they matched nothing (--matches-only).";
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
        let mut suppressed = std::mem::take(&mut self.suppressed);
        suppressed.iter_mut().for_each(|m| *m = 0);
        let mut hunt = self.hunt.take();
        if let Some(h) = &mut hunt {
            h.clear();
        }
        *self = Stats { matches, shapes, suppressed, hunt, ..Stats::default() };
    }

    /// A line over the limit, passed on uninspected.
    pub fn oversized_line(&mut self) {
        self.lines += 1;
        self.not_inspected.oversized += 1;
    }

    /// Adds another stream's counters.
    pub fn merge(&mut self, other: &Stats) {
        self.merge_counters(other);
        for (mine, theirs) in [
            (&mut self.matches, &other.matches),
            (&mut self.shapes, &other.shapes),
            (&mut self.suppressed, &other.suppressed),
        ] {
            if mine.len() < theirs.len() {
                mine.resize(theirs.len(), 0);
            }
            for (a, b) in mine.iter_mut().zip(theirs) {
                *a += b;
            }
        }
        self.not_inspected.merge(&other.not_inspected);
        if let Some(theirs) = other.hunt.as_deref().filter(|h| !h.is_empty()) {
            self.hunt.get_or_insert_with(Box::default).merge(theirs);
        }
    }

    /// The same counters for another rule set (a reload): per-rule counts follow their
    /// rule by name, per-shape counts their shape by name, suppressions their (rule,
    /// filter) pair by names; the hunt's per-rule findings follow their rule. Counts of
    /// rules, shapes or pairs the new set lacks are left out (the totals keep them).
    pub fn rekey(&mut self, from: &RuleSet, to: &RuleSet) {
        use std::collections::HashMap;
        let slugs: HashMap<&str, usize> =
            to.rules().iter().enumerate().map(|(i, r)| (r.meta.slug.as_str(), i)).collect();
        let mut matches = vec![0; to.rules().len()];
        let mut rule_map = Vec::with_capacity(from.rules().len());
        for (i, rule) in from.rules().iter().enumerate() {
            let new = slugs.get(rule.meta.slug.as_str()).copied();
            if let (Some(n), Some(&count)) = (new, self.matches.get(i)) {
                matches[n] += count;
            }
            rule_map.push(new);
        }
        self.matches = matches;
        let (old_shapes, new_shapes) = (&from.fields().shapes().shapes, &to.fields().shapes().shapes);
        let mut shapes = vec![0; new_shapes.len()];
        for (shape, &count) in old_shapes.iter().zip(&self.shapes) {
            if let Some(n) = new_shapes.iter().position(|s| s.name == shape.name) {
                shapes[n] += count;
            }
        }
        self.shapes = shapes;
        // A set may hold many pairs (`rules: any` filters on a large set): looked up, not
        // searched.
        let pairs: HashMap<(&str, &str), usize> =
            (0..to.suppressions().len()).filter_map(|n| Some((to.suppression_names(n)?, n))).collect();
        let mut suppressed = vec![0; to.suppressions().len()];
        for (i, &count) in self.suppressed.iter().enumerate() {
            if let Some(&n) = from.suppression_names(i).and_then(|names| pairs.get(&names)) {
                suppressed[n] += count;
            }
        }
        self.suppressed = suppressed;
        if let Some(hunt) = self.hunt.as_deref_mut() {
            hunt.rekey(&rule_map);
        }
    }

    /// A report naming the rules, shapes and filters of `set`.
    pub fn report<'a>(&'a self, set: &'a RuleSet) -> Report<'a> {
        let (rules, table) = (set.rules(), set.fields().shapes());
        Report {
            suppressed: self
                .suppressed
                .iter()
                .enumerate()
                .filter(|&(_, &n)| n > 0)
                .filter_map(|(i, &count)| {
                    let (rule, filter) = set.suppression_names(i)?;
                    Some(SuppressedCount { rule, filter, count })
                })
                .collect(),
            stats: self,
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
            skipped_rules: Vec::new(),
            summary: None,
            rule_set: None,
        }
    }
}

/// Matches of one rule one filter suppressed.
#[derive(Debug, Serialize)]
pub struct SuppressedCount<'a> {
    /// The rule's slug.
    pub rule: &'a str,
    /// The filter's `id`, else its title.
    pub filter: &'a str,
    /// Matches suppressed.
    pub count: u64,
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
#[derive(Debug)]
pub struct Report<'a> {
    /// The counters.
    pub stats: &'a Stats,
    /// Matches per rule, in rule order.
    pub matches: Vec<RuleCount<'a>>,
    /// Records read per shape (only shapes some record was in).
    pub shapes: Vec<ShapeCount<'a>>,
    /// Matches suppressed by filters, per (rule, filter) (only pairs that suppressed some).
    pub suppressed: Vec<SuppressedCount<'a>>,
    /// Rule files that could not be loaded and were skipped (`--skip-invalid-rules`), as
    /// `file:line:col: reason`.
    pub skipped_rules: Vec<String>,
    /// What the hunt found, when asked for (`--summary`): `summary` in the JSON object.
    pub summary: Option<HuntReport<'a>>,
    /// The rule set in use and its reloads (`rule_set` in the JSON object).
    pub rule_set: Option<LoadStatus>,
}

/// One JSON object: every counter of [`COUNTERS`] by its field name, then `matches`,
/// `shapes`, `not_inspected` and (when some were) `skipped_rules`.
impl Serialize for Report<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(None)?;
        for c in COUNTERS {
            map.serialize_entry(c.key, &(c.get)(self.stats))?;
        }
        map.serialize_entry("matches", &self.matches)?;
        map.serialize_entry("shapes", &self.shapes)?;
        map.serialize_entry("suppressed", &self.suppressed)?;
        map.serialize_entry("not_inspected", &self.stats.not_inspected)?;
        if !self.skipped_rules.is_empty() {
            map.serialize_entry("skipped_rules", &self.skipped_rules)?;
        }
        if let Some(summary) = &self.summary {
            map.serialize_entry("summary", summary)?;
        }
        if let Some(status) = &self.rule_set {
            map.serialize_entry("rule_set", status)?;
        }
        map.end()
    }
}

impl Report<'_> {
    /// The report as one JSON object.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a report serializes")
    }

    /// The report as text for people.
    pub fn to_text(&self) -> String {
        let st = self.stats;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "iis-tagger: {} lines, {} bytes; {} candidates, {} parsed ({} repaired), {} annotated",
            st.lines, st.bytes, st.candidates, st.parsed, st.repaired, st.annotated
        );
        if st.incomplete + st.capped_values > 0 {
            let _ = writeln!(
                s,
                "  not fully evaluated: {} records (annotated as such); {} values over the cap of distinct values",
                st.incomplete, st.capped_values
            );
        }
        let width = self.matches.iter().map(|m| m.rule.len()).max().unwrap_or(0);
        for m in &self.matches {
            let _ = writeln!(s, "  {:<width$}  {}", m.rule, m.count);
        }
        if let Some(st) = &self.rule_set {
            let reloads = if st.reloads + st.refused > 0 {
                format!(
                    "; {} reloads, {} refused, the last built at {} (Unix time)",
                    st.reloads, st.refused, st.loaded_at
                )
            } else {
                String::new()
            };
            let _ = writeln!(s, "  rule set {}: {} rules, {} filters{reloads}", st.digest, st.rules, st.filters);
            if let Some(e) = &st.last_error {
                let _ = writeln!(s, "  warning: the last reload was refused: {e}");
            }
        }
        for c in &self.suppressed {
            let _ = writeln!(s, "  suppressed by filter {}: {} matches of {}", c.filter, c.count, c.rule);
        }
        let shapes: Vec<String> = self.shapes.iter().map(|c| format!("{} {}", c.shape, c.count)).collect();
        let embedded = if st.embedded_events > 0 {
            format!(" ({} with an event in a string member)", st.embedded_events)
        } else {
            String::new()
        };
        let _ = writeln!(
            s,
            "  shapes of the records read: {}{embedded}",
            if shapes.is_empty() { "none".into() } else { shapes.join(", ") }
        );
        if st.unmarked_embedded > 0 {
            let _ = writeln!(
                s,
                "  warning: {} records held an event in a string member after blanks: read, but lines like them are \
                 not marked for the prefilter (an event hidden behind a second escaping would be missed)",
                st.unmarked_embedded
            );
        }
        if st.unrecognised_json > 0 {
            let _ = writeln!(
                s,
                "  warning: {} JSON records held no Windows event in a shape iis-tagger knows: no rule can match them \
                 (`iis-tagger shapes` lists the shapes; --shapes FILE adds yours)",
                st.unrecognised_json
            );
        }
        if st.frames + st.unframed + st.split_parts > 0 {
            let _ = writeln!(
                s,
                "  framing: {} octet-counted frames, {} records outside the framing, {} parts of long frames written \
                 as frames",
                st.frames, st.unframed, st.split_parts
            );
        }
        if st.unterminated > 0 {
            let _ = writeln!(s, "  {} records the input ended inside of (no `\\n` after them)", st.unterminated);
        }
        if st.evtx_files > 0 {
            let damaged = if st.evtx_damaged > 0 {
                format!("; {} chunks or records could not be read (skipped, each named above)", st.evtx_damaged)
            } else {
                String::new()
            };
            let streams = if st.evtx_streams > 0 {
                format!(" ({} from a pipe, through a temporary file)", st.evtx_streams)
            } else {
                String::new()
            };
            let _ = writeln!(s, "  EVTX: {} files{streams}, {} records{damaged}", st.evtx_files, st.evtx_records);
        }
        if st.unmatched_dropped > 0 {
            let _ =
                writeln!(s, "  {} records matched nothing and were not written (--matches-only)", st.unmatched_dropped);
        }
        let n = &st.not_inspected;
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

/// One counter of the core: its field name (the key of the JSON summary), its Prometheus
/// name without the `iis_tagger_` prefix, its help text, and how it is read from [`Stats`].
pub struct Counter {
    /// The field's name.
    pub key: &'static str,
    /// The metric's name.
    pub name: &'static str,
    /// What it counts.
    pub help: &'static str,
    /// Its value.
    pub get: fn(&Stats) -> u64,
}

impl NotInspected {
    fn merge(&mut self, b: &NotInspected) {
        self.empty += b.empty;
        self.not_json += b.not_json;
        self.invalid_json += b.invalid_json;
        self.invalid_xml += b.invalid_xml;
        self.not_an_event += b.not_an_event;
        self.oversized += b.oversized;
        self.already_annotated += b.already_annotated;
    }

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

/// What is loaded, since when, and how reloads went (for `--stats` and the metrics).
#[derive(Clone, Debug, Default, Serialize)]
pub struct LoadStatus {
    /// A digest of the rule, filter and shape files and the options the set was built
    /// from (16 hex digits).
    pub digest: String,
    /// When the set was built, in seconds since the Unix epoch.
    pub loaded_at: u64,
    /// Rules in the set.
    pub rules: usize,
    /// Filters in the set.
    pub filters: usize,
    /// Reloads that replaced the set.
    pub reloads: u64,
    /// Reloads refused (the set had an error; the old one kept running).
    pub refused: u64,
    /// The error of the last refused reload, if the last reload was refused.
    pub last_error: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RuleSetBuilder;

    fn set(extra: &[&str]) -> RuleSet {
        let mut b = RuleSetBuilder::new();
        for name in extra {
            let rule = format!(
                "title: t\nname: {name}\nlogsource:\n  category: process_creation\ndetection:\n  s:\n    Image|endswith: '\\{name}.exe'\n  condition: s\nlevel: low\n"
            );
            b.add_source(&format!("{name}.yml"), name, &rule).expect("rule");
        }
        b.build()
    }

    #[test]
    fn counters_follow_their_rule_by_name_across_sets() {
        let (old, new) = (set(&["a", "b", "c"]), set(&["c", "d", "a"]));
        let mut stats = Stats { matches: vec![1, 2, 3], lines: 9, ..Stats::default() };
        let mut hunt = crate::hunt::Hunt::default();
        hunt.record(old.rules(), &[1, 2], Some("web01"), None);
        stats.hunt = Some(Box::new(hunt));
        stats.rekey(&old, &new);
        assert_eq!(stats.matches, [3, 0, 1], "c, d, a: b is gone, d is new");
        assert_eq!(stats.lines, 9, "plain counters stay");
        let report = stats.hunt.as_deref().expect("hunt").report(new.rules());
        let rules: Vec<&str> = report.rules.iter().map(|r| r.rule).collect();
        assert_eq!(rules, ["c"], "the hunt's findings of c follow it; b's went with b");
    }
}
