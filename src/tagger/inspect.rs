//! Inspecting one record: which rules it is worth, reading it (JSON with the events its
//! string members hold, or Windows XML) into the event view, evaluating the rules, and
//! where the annotation goes.
//!
//! A line is worth the rules the prefilter picks from its bytes: a JSON line from its
//! lower-cased text (or its canonical copy, when an escape could hide a literal); an XML
//! line from its canonical copy ([`prefilter::canonicalize_xml`]: references decoded,
//! written the way JSON writes text, so the literals apply unchanged). A JSON line that may
//! hold a whole event in a string member (`<Event`, `<EventData`, `{\"`) is worth every
//! rule: its bytes are escaped twice over. So are the first lines of a stream, when the
//! configuration asks (`shape_sample_lines`), so that the statistics say what shape the
//! stream is in from the start.

use simd_json::{Buffers, Node, Tape};

use super::{LineScan, Stream, view_budget};
use crate::annotate::closing_brace;
use crate::event::EventView;
use crate::fields::{FieldCatalog, PathTrie};
use crate::prefilter;
use crate::repair::repair;
use crate::sink::{Out, Sink};
use crate::syslog::{Payload, payload_start};

/// Lines at the start of every stream the command line parses whatever the prefilter says,
/// to recognise their shape ([`crate::Config::shape_sample_lines`]).
pub const SHAPE_SAMPLE_LINES: u64 = 100;

/// How a line's inspection ended.
pub(super) enum Verdict {
    /// Write the line unchanged.
    Unchanged,
    /// Write the line with the annotation inserted at this offset.
    Annotate { at: usize, form: Form },
}

/// What a record was read as, and so how it is annotated.
#[derive(Clone, Copy, Debug)]
pub(super) enum Form {
    /// A JSON object: a member before its final `}` (with a comma unless it is empty).
    Json { empty: bool },
    /// A Windows XML event: an element before its `</Event>`.
    Xml,
}

/// A record read into the view: its form and, for XML, where the annotation goes.
struct Read {
    form: Form,
    /// XML: offset of the end tag in the record text.
    close: Option<usize>,
}

/// The reusable buffers of the JSON parser.
pub(super) struct Parser {
    input: Vec<u8>,
    buffers: Buffers,
    tape: Tape<'static>,
    /// The longest input parsed since the buffers were made (they grow with it).
    sized_for: usize,
}

impl Default for Parser {
    fn default() -> Parser {
        // simd-json's stage 2 keeps its own stack, so nesting costs heap bounded by the line
        // limit, not call depth: no depth limit, so no record is refused for its nesting.
        let buffers = Buffers::with_max_depth(128, usize::MAX);
        Parser { input: Vec::new(), buffers, tape: Tape::null().reset(), sized_for: 0 }
    }
}

impl std::fmt::Debug for Parser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Parser").finish_non_exhaustive()
    }
}

impl Parser {
    /// Bytes of capacity held (the parser's own buffers are counted by the largest input
    /// they were sized for).
    pub(super) fn capacity_bytes(&self) -> usize {
        use crate::scratch::Release;
        self.input.capacity_bytes() + self.tape.0.capacity() * std::mem::size_of::<Node<'_>>() + 4 * self.sized_for
    }

    /// Gives back what a record larger than `keep` bytes made it hold.
    pub(super) fn release(&mut self, keep: usize) {
        use crate::scratch::Release;
        self.input.release(keep);
        if self.sized_for > keep || self.tape.0.capacity() * std::mem::size_of::<Node<'_>>() > keep {
            *self = Parser::default();
        }
    }

    /// Parses `json` (a copy: simd-json rewrites its input) and hands the tape to `f`.
    fn parse<R>(&mut self, json: &[u8], f: impl FnOnce(&[Node<'_>]) -> R) -> Option<R> {
        self.sized_for = self.sized_for.max(json.len());
        self.input.clear();
        self.input.extend_from_slice(json);
        self.input.resize(json.len() + simd_json::INPUT_PADDING, 0);
        let mut tape = std::mem::replace(&mut self.tape, Tape::null().reset()).reset();
        let result = match simd_json::fill_tape_padded(&mut self.input, json.len(), &mut self.buffers, &mut tape) {
            Ok(()) => Some(f(&tape.0)),
            Err(_) => None,
        };
        self.tape = tape.reset();
        result
    }
}

/// What a record read needs besides the view.
struct Context<'a> {
    catalog: &'a FieldCatalog,
    trie: &'a PathTrie,
    key: &'a str,
    /// A parser for the JSON events string members hold (the record's own is in use).
    inner: &'a mut Parser,
    /// The text of one of those events, copied out of the view while it is read into it.
    doc: &'a mut String,
}

/// Reads a parsed JSON record into `view`, with the events its string members hold (one
/// level: theirs are not read).
fn read_json(view: &mut EventView, tape: &[Node<'_>], cx: &mut Context<'_>) -> usize {
    view.clear();
    view.walk_json(tape, cx.catalog, cx.trie, cx.key, PathTrie::ROOT, true);
    let mut read = 0;
    for i in 0..view.embedded_count() {
        let (node, text) = view.embedded(i);
        cx.doc.clear();
        cx.doc.push_str(text);
        let ok = if cx.doc.starts_with('<') {
            // The annotation key in an embedded event is not the record's.
            view.walk_xml(cx.doc.as_bytes(), cx.catalog, cx.trie, "").is_ok_and(|e| e.is_event)
        } else {
            let (catalog, trie) = (cx.catalog, cx.trie);
            cx.inner
                .parse(cx.doc.as_bytes(), |t| match t.first() {
                    Some(Node::Object { .. }) => {
                        view.walk_json(t, catalog, trie, "", node, false);
                        true
                    }
                    _ => false,
                })
                .unwrap_or(false)
        };
        read += usize::from(ok);
    }
    view.finish(cx.catalog);
    read
}

impl Stream<'_> {
    /// Inspects `region[range]`, one line without its `\n`, and writes it, annotated or not.
    pub(super) fn line<S: Sink + ?Sized>(
        &mut self,
        region: &[u8],
        range: std::ops::Range<usize>,
        lower: &[u8],
        scan: LineScan,
        out: &mut Out<'_, S>,
    ) {
        let large = range.len() > super::RELEASE_AFTER_BYTES;
        match self.inspect(&region[range.clone()], lower, scan) {
            Verdict::Unchanged => out.keep(region, range),
            Verdict::Annotate { at, form } => {
                // The annotation goes in at `at`; the line itself is not copied.
                self.member.clear();
                match form {
                    Form::Json { empty } => {
                        if !empty {
                            self.member.push(b',');
                        }
                        self.tagger.annotator.write(&self.matched, self.incomplete, &mut self.member);
                    }
                    Form::Xml => self.tagger.annotator.write_xml(&self.matched, self.incomplete, &mut self.member),
                }
                let at = range.start + at;
                out.keep(region, range.start..at);
                out.annotation(&self.member);
                out.keep(region, at..range.end);
            }
        }
        if large {
            self.release_record_scratch();
        }
    }

    /// Whether the line is one of the first of its stream, parsed to recognise its shape.
    fn sampling(&self) -> bool {
        self.lines_seen() <= self.sample_until && self.sample_until > 0
    }

    pub(super) fn inspect(&mut self, line: &[u8], lower: &[u8], scan: LineScan) -> Verdict {
        let tagger = self.tagger;
        let Some((start, payload)) = payload_start(line) else {
            self.classify(line);
            return Verdict::Unchanged;
        };
        let routed = tagger.config.prefilter && tagger.prefilter.examines_every_line();
        if !routed && !self.pick_rules(line, lower, scan, start, payload) {
            return Verdict::Unchanged;
        }
        self.stats.candidates += 1;
        let text = &line[start..];
        let Some(read) = self.read(text, payload, routed) else { return Verdict::Unchanged };
        self.stats.parsed += 1;
        if routed {
            if self.groups.is_empty() {
                return Verdict::Unchanged;
            }
            let rules = tagger.prefilter.rules_for_routed_line(&self.groups, &self.view, &mut self.prefilter);
            self.candidates.clear();
            self.candidates.extend_from_slice(rules);
        } else {
            // Log sources first: most candidates of a record are rules for other events.
            // Then only the fields the remaining rules read get their views.
            let (rules, catalog) = (tagger.rules.rules(), tagger.rules.fields());
            self.view.make_views(catalog, &tagger.route_fields);
            let view = &self.view;
            let readings = tagger.readings();
            self.candidates.retain(|&r| rules[r as usize].route.eval_in(view, readings));
        }
        self.evaluate(text, start, read)
    }

    /// The rules a line is worth, into `candidates`; false (with the line counted) when
    /// there are none.
    fn pick_rules(&mut self, line: &[u8], lower: &[u8], scan: LineScan, start: usize, payload: Payload) -> bool {
        // XML markup (`&#`, CDATA, comments) hides literals only in an XML line: looked for
        // here, in the lines inspected, and by the stream in those it passes over.
        let escaped = scan.escaped || (payload == Payload::Xml && prefilter::xml_markup(&line[start..]));
        let tagger = self.tagger;
        self.candidates.clear();
        let every = !tagger.config.prefilter
            || self.unfiltered
            || self.sampling()
            || (payload == Payload::Json && self.may_embed(line, lower, escaped));
        if every {
            self.candidates.extend(0..tagger.rules.rules().len() as u32);
            return true;
        }
        let rules = match payload {
            Payload::Json => tagger.prefilter.rules_for_line(line, lower, escaped, &mut self.prefilter),
            Payload::Xml => {
                // Most XML lines hold no trigger even in its XML form: seen from their bytes
                // (a line given without its lower-cased copy is checked on its canonical one).
                let unscanned = lower.is_empty();
                if !(unscanned || scan.deleted_hit || tagger.prefilter.may_match_xml(lower, escaped)) {
                    return false;
                }
                let mut canonical = std::mem::take(&mut self.canonical_xml);
                prefilter::canonicalize_xml(&line[start..], &mut canonical);
                let rules = tagger.prefilter.rules_for_line(&canonical, &canonical, false, &mut self.prefilter);
                self.candidates.extend_from_slice(rules);
                self.canonical_xml = canonical;
                return !self.candidates.is_empty();
            }
        };
        self.candidates.extend_from_slice(rules);
        !self.candidates.is_empty()
    }

    /// Whether a JSON line may hold a whole event in a string member: XML (`<event` in
    /// any case) or a JSON object (`{\"`), in the line or, when an escape could hide them,
    /// in its canonical copy.
    fn may_embed(&mut self, line: &[u8], lower: &[u8], escaped: bool) -> bool {
        let text = if escaped {
            prefilter::canonicalize(line, &mut self.canonical_xml);
            &self.canonical_xml[..]
        } else {
            lower
        };
        prefilter::needs_every_rule(text)
    }

    /// Reads the record text (`text` starts at its `{` or `<`) into the view, counting what
    /// cannot be read. Routed (every line examined): first the log-source fields alone, and
    /// the groups they select; every field only when some group wants the record.
    fn read(&mut self, text: &[u8], payload: Payload, routed: bool) -> Option<Read> {
        self.view.set_view_budget(view_budget(text.len()));
        let read = match payload {
            Payload::Json => self.read_json_text(text, routed),
            Payload::Xml => self.read_xml_text(text, routed),
        };
        match &read {
            None if payload == Payload::Json => self.stats.not_inspected.invalid_json += 1,
            None => self.stats.not_inspected.invalid_xml += 1,
            Some(r) => self.count_shape(r.form),
        }
        read
    }

    fn count_shape(&mut self, form: Form) {
        let shapes = self.view.shapes();
        for &s in shapes {
            if let Some(n) = self.stats.shapes.get_mut(s as usize) {
                *n += 1;
            }
        }
        match form {
            Form::Xml => self.stats.windows_xml += 1,
            Form::Json { .. } if shapes.is_empty() && self.embedded_read == 0 => self.stats.unrecognised_json += 1,
            Form::Json { .. } => {}
        }
        if self.embedded_read > 0 {
            self.stats.embedded_events += 1;
        }
        if self.view.unmarked_embedded() {
            self.stats.unmarked_embedded += 1;
        }
    }

    fn read_json_text(&mut self, json: &[u8], routed: bool) -> Option<Read> {
        let tagger = self.tagger;
        let catalog = tagger.rules.fields();
        let key = tagger.config.annotation_key.as_str();
        let Stream { view, groups, inner, doc, embedded_read, .. } = self;
        let mut fill = |tape: &[Node<'_>]| {
            let Some(Node::Object { len, .. }) = tape.first() else { return None };
            let trie = if routed { &tagger.route_trie } else { catalog.trie() };
            let mut cx = Context { catalog, trie, key, inner, doc };
            *embedded_read = read_json(view, tape, &mut cx);
            if routed {
                tagger.route(view, groups);
                if !groups.is_empty() {
                    let mut cx = Context { catalog, trie: catalog.trie(), key, inner, doc };
                    *embedded_read = read_json(view, tape, &mut cx);
                }
            }
            Some(Read { form: super::inspect::Form::Json { empty: *len == 0 }, close: None })
        };
        match self.parser.parse(json, &mut fill) {
            Some(parsed) => parsed,
            None => {
                let repaired = repair(json)?;
                let parsed = self.parser.parse(&repaired, fill)??;
                self.stats.repaired += 1;
                Some(parsed)
            }
        }
    }

    fn read_xml_text(&mut self, xml: &[u8], routed: bool) -> Option<Read> {
        let tagger = self.tagger;
        let catalog = tagger.rules.fields();
        let key = tagger.config.annotation_key.as_str();
        self.embedded_read = 0;
        let walk = |view: &mut EventView, trie: &PathTrie| {
            view.clear();
            let event = view.walk_xml(xml, catalog, trie, key);
            view.finish(catalog);
            event
        };
        let trie = if routed { &tagger.route_trie } else { catalog.trie() };
        let event = walk(&mut self.view, trie).ok()?;
        if !event.is_event {
            self.stats.not_inspected.not_an_event += 1;
            return None;
        }
        if routed {
            tagger.route(&mut self.view, &mut self.groups);
            if !self.groups.is_empty() {
                walk(&mut self.view, catalog.trie()).ok()?;
            }
        }
        Some(Read { form: Form::Xml, close: event.close })
    }

    /// Evaluates the detections of the candidate rules (whose log sources hold) on the
    /// record read; `text` is its text, at `start` in the line.
    fn evaluate(&mut self, text: &[u8], start: usize, read: Read) -> Verdict {
        let tagger = self.tagger;
        let (rules, catalog) = (tagger.rules.rules(), tagger.rules.fields());
        self.matched.clear();
        for &r in &self.candidates {
            self.view.make_views(catalog, &tagger.detection_fields[r as usize]);
        }
        let view = &self.view;
        let readings = tagger.readings();
        let suppressed = &mut self.stats.suppressed;
        self.matched.extend(self.candidates.iter().copied().filter(|&r| {
            let rule = &rules[r as usize];
            let differ = view.fields_differ(&tagger.detection_fields[r as usize]);
            if !rule.detection.eval_readings(view, readings, differ) {
                return false;
            }
            if rule.filters.is_empty() {
                return true;
            }
            match tagger.rules.suppressed_by(rule, view, readings, differ) {
                None => true,
                Some(pair) => {
                    // Counted, never silent: per (rule, filter) pair.
                    let pair = pair as usize;
                    if suppressed.len() <= pair {
                        suppressed.resize(pair + 1, 0);
                    }
                    suppressed[pair] += 1;
                    false
                }
            }
        }));
        let (duplicates, excess) = self.view.dropped();
        self.stats.duplicate_values += duplicates;
        self.stats.capped_values += excess;
        self.incomplete = self.view.incomplete();
        if self.matched.is_empty() && self.incomplete.is_empty() {
            return Verdict::Unchanged;
        }
        if self.view.has_annotation_key() {
            self.stats.not_inspected.already_annotated += 1;
            return Verdict::Unchanged;
        }
        let at = match read.form {
            Form::Json { .. } => closing_brace(text),
            Form::Xml => read.close,
        };
        let Some(at) = at else { return Verdict::Unchanged };
        for &r in &self.matched {
            self.stats.matches[r as usize] += 1;
        }
        if let (Some(hunt), Some(cx)) = (self.stats.hunt.as_deref_mut(), &tagger.context) {
            let first = |field| self.view.occurrences(field).first().map(|o| self.view.raw(o));
            // The first time field that holds a time: a `TimeCreated` in another form does
            // not hide Sysmon's `UtcTime`.
            let time = cx.times.iter().find_map(|&f| first(f).and_then(crate::hunt::Time::parse));
            hunt.record_at(rules, &self.matched, first(cx.host), time);
        }
        self.stats.annotated += 1;
        if !self.incomplete.is_empty() {
            self.stats.incomplete += 1;
        }
        Verdict::Annotate { at: start + at, form: read.form }
    }
}
