//! The core: bytes in, bytes out, no I/O.
//!
//! A [`Tagger`] is built once from a rule set and shared (it is `Sync`). Each input
//! stream gets a [`Stream`], which is fed bytes as they arrive, in chunks of any size,
//! and appends the output to a buffer the caller owns and writes. The output does not
//! depend on how the input was cut into chunks.
//!
//! Per chunk: complete lines are lower-cased into a scratch buffer and scanned for
//! trigger literals and for JSON escapes that could hide one; lines with neither are
//! copied out in runs, untouched. A line with either is checked against every clause of
//! the triggered rules; if some rule remains, the JSON part of the line is copied and
//! parsed with simd-json, the fields the rules read are collected, the rules are
//! evaluated, and on a match the annotation is spliced into the untouched original.
//! A partial line is kept until its end arrives, up to the line limit; past it the line
//! is passed through as it streams, never held whole.

use simd_json::{Buffers, Node, Tape};

use crate::annotate::{Annotator, closing_brace};
use crate::event::{EventView, Incomplete};
use crate::fields::{FieldId, PathTrie};
use crate::normalize::Reading;
use crate::prefilter::{self, HidingScan, Prefilter, ScanText};
use crate::repair::repair;
use crate::rules::RuleSet;
use crate::sink::{Out, Sink};
use crate::stats::Stats;
use crate::syslog::json_start;

/// Settings of a [`Tagger`], validated by [`Tagger::new`].
#[derive(Clone, Debug)]
pub struct Config {
    /// The member name of the annotation (default `iis_tagger`).
    pub annotation_key: String,
    /// Lines longer than this (without the `\n`) pass through uninspected.
    pub max_line_bytes: usize,
    /// Use the prefilter (off: every JSON line is parsed and every rule evaluated; for
    /// verification).
    pub prefilter: bool,
    /// Match in the resolved reading too (the default; off: only the text as written, as
    /// other Sigma tools read it — for comparing with them). See [`Reading`].
    pub resolved_reading: bool,
}

/// Default line limit: 1 MiB, far above any Windows event record.
pub const DEFAULT_MAX_LINE_BYTES: usize = 1 << 20;
/// Largest line limit accepted.
pub const MAX_MAX_LINE_BYTES: usize = 1 << 30;
/// Longest annotation key accepted.
pub const MAX_KEY_BYTES: usize = 256;

impl Default for Config {
    fn default() -> Config {
        Config {
            annotation_key: "iis_tagger".into(),
            max_line_bytes: DEFAULT_MAX_LINE_BYTES,
            prefilter: true,
            resolved_reading: true,
        }
    }
}

/// A setting that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The annotation key is empty or too long.
    #[error("the annotation key must be 1 to {MAX_KEY_BYTES} bytes long")]
    AnnotationKey,
    /// The line limit is out of range.
    #[error("the line limit must be from 1 byte to 1 GiB")]
    MaxLineBytes,
}

/// Rules, prefilter and annotation pieces, ready to tag any number of streams.
#[derive(Debug)]
pub struct Tagger {
    rules: RuleSet,
    prefilter: Prefilter,
    annotator: Annotator,
    config: Config,
    /// The fields any rule's log source reads.
    route_fields: Vec<FieldId>,
    /// Where those fields are, alone: a record is first walked for them only.
    route_trie: PathTrie,
    /// Per rule, the fields its detection reads.
    detection_fields: Vec<Vec<FieldId>>,
}

impl Tagger {
    /// Builds the prefilter and the annotation pieces.
    pub fn new(rules: RuleSet, config: Config) -> Result<Tagger, ConfigError> {
        if config.annotation_key.is_empty() || config.annotation_key.len() > MAX_KEY_BYTES {
            return Err(ConfigError::AnnotationKey);
        }
        if config.max_line_bytes == 0 || config.max_line_bytes > MAX_MAX_LINE_BYTES {
            return Err(ConfigError::MaxLineBytes);
        }
        let prefilter = Prefilter::new(&rules);
        let annotator = Annotator::new(&config.annotation_key, rules.rules());
        let mut route_fields = Vec::new();
        for rule in rules.rules() {
            rule.route.fields(&mut route_fields);
        }
        let detection_fields = rules
            .rules()
            .iter()
            .map(|r| {
                let mut f = Vec::new();
                r.detection.fields(&mut f);
                f
            })
            .collect();
        let route_trie = rules.fields().trie_of(&route_fields);
        Ok(Tagger { rules, prefilter, annotator, config, route_fields, route_trie, detection_fields })
    }

    /// The rules.
    pub fn rules(&self) -> &RuleSet {
        &self.rules
    }

    /// The prefilter.
    pub fn prefilter(&self) -> &Prefilter {
        &self.prefilter
    }

    /// The settings.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The readings rules are matched in.
    fn readings(&self) -> &'static [Reading] {
        if self.config.resolved_reading { &Reading::BOTH } else { &[Reading::Logged] }
    }

    /// A new stream.
    pub fn stream(&self) -> Stream<'_> {
        Stream {
            tagger: self,
            pending: Vec::new(),
            skipping: false,
            text: ScanText::default(),
            prefilter: prefilter::Scratch::default(),
            parser: Parser::default(),
            view: EventView::new(),
            candidates: Vec::new(),
            groups: Vec::new(),
            matched: Vec::new(),
            member: Vec::new(),
            incomplete: Incomplete::default(),
            unfiltered: false,
            stats: Stats::new(self.rules.rules().len()),
        }
    }

    /// Tags a whole input at once (convenience for tests and small inputs).
    pub fn tag_all(&self, input: &[u8]) -> (Vec<u8>, Stats) {
        let mut stream = self.stream();
        let mut out = Vec::with_capacity(input.len() + input.len() / 16);
        stream.feed(input, &mut out);
        stream.finish(&mut out);
        (out, stream.stats)
    }
}

/// After inspecting a record longer than this, the buffers it grew are given back.
pub const RELEASE_AFTER_BYTES: usize = 64 << 10;

/// What a buffer keeps when giving memory back: enough for the records of a usual stream.
const KEEP_BYTES: usize = 64 << 10;

/// Bytes of view text one record may take (see [`EventView::set_view_budget`]): its own
/// values, the four forms each is compared in (as logged and resolved, case kept and
/// folded), and room for compatibility characters that expand: a 32,767-character path of
/// a character NFKC makes eighteen (`U+FDFA`) fits. What expands past it is not evaluated,
/// and the record is annotated as such.
fn view_budget(json_len: usize) -> usize {
    8 * json_len + (4 << 20)
}

/// The reusable buffers of the JSON parser.
struct Parser {
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
    fn capacity_bytes(&self) -> usize {
        use crate::scratch::Release;
        self.input.capacity_bytes() + self.tape.0.capacity() * std::mem::size_of::<Node<'_>>() + 4 * self.sized_for
    }

    /// Gives back what a record larger than `keep` bytes made it hold.
    fn release(&mut self, keep: usize) {
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

/// The state of one input stream.
#[derive(Debug)]
pub struct Stream<'t> {
    tagger: &'t Tagger,
    /// The start of a line whose end has not arrived yet.
    pending: Vec<u8>,
    /// Inside a line over the limit, passing it through until its `\n`.
    skipping: bool,
    text: ScanText,
    prefilter: prefilter::Scratch,
    parser: Parser,
    view: EventView,
    candidates: Vec<u32>,
    groups: Vec<u32>,
    matched: Vec<u32>,
    member: Vec<u8>,
    /// Why the record being written was not fully evaluated (see [`Incomplete`]).
    incomplete: Incomplete,
    /// Inspecting a record that holds `\n` ([`Stream::record`]): the byte scan that picks
    /// rules works on lines, so every rule is a candidate.
    unfiltered: bool,
    stats: Stats,
}

/// How a line's inspection ended.
enum Verdict {
    /// Write the line unchanged.
    Unchanged,
    /// Write the line with the annotation before the `}` at this offset.
    Annotate { close: usize, empty: bool },
}

impl Stream<'_> {
    /// The counters so far.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// True while the start of a line is held waiting for its end.
    pub fn has_partial_line(&self) -> bool {
        !self.pending.is_empty() || self.skipping
    }

    /// Bytes of an unfinished line held (it is written by [`Stream::finish`]).
    pub fn pending_bytes(&self) -> usize {
        self.pending.len()
    }

    /// True while a line over the limit is being passed through: the output written so far
    /// ends inside that line (a caller that shares its output with other streams must not
    /// let them write until this is false again).
    pub fn passing_long_line(&self) -> bool {
        self.skipping
    }

    /// Bytes of capacity the stream's buffers hold (they are kept from record to record,
    /// and given back after a record over [`RELEASE_AFTER_BYTES`]).
    pub fn scratch_bytes(&self) -> usize {
        use crate::scratch::Release;
        self.pending.capacity_bytes()
            + self.text.capacity_bytes()
            + self.prefilter.capacity_bytes()
            + self.parser.capacity_bytes()
            + self.view.capacity_bytes()
            + self.member.capacity_bytes()
    }

    /// Gives back every buffer's capacity above a small working size (a front end calls
    /// this when its input goes quiet). What is held of a partial line is kept.
    pub fn release(&mut self) {
        use crate::scratch::Release;
        self.release_record_scratch();
        self.text.release(KEEP_BYTES);
        if self.pending.is_empty() {
            self.pending.release(KEEP_BYTES);
        }
    }

    /// Gives back what inspecting one large record made the stream hold.
    fn release_record_scratch(&mut self) {
        use crate::scratch::Release;
        self.parser.release(KEEP_BYTES);
        self.view.release(KEEP_BYTES);
        self.prefilter.release(KEEP_BYTES);
        self.member.release(KEEP_BYTES);
    }

    /// Zeroes the counters (for front ends that add them to running totals as they go).
    pub fn reset_stats(&mut self) {
        self.stats.reset();
    }

    /// Tags one whole record, for framings that deliver records rather than lines (a
    /// syslog octet-counted frame, an rsyslog message): `record` is inspected as one line
    /// whatever it holds, `\n` included, and written to `out`, annotated or not. It counts
    /// as one line. Returns whether it was annotated; [`Stream::annotation`] then holds the
    /// member. Not to be mixed with [`Stream::feed`] on a stream holding a partial line.
    pub fn record<S: Sink + ?Sized>(&mut self, record: &[u8], out: &mut S) -> bool {
        debug_assert!(!self.has_partial_line(), "record() inside a fed line");
        self.stats.bytes += record.len() as u64;
        let before = self.stats.annotated;
        self.member.clear();
        let mut out = Out { sink: out, input: record, base: Some(0) };
        if memchr::memchr(b'\n', record).is_none() {
            self.lines(record, &mut out);
        } else {
            self.stats.lines += 1;
            if record.len() > self.tagger.config.max_line_bytes {
                self.stats.not_inspected.oversized += 1;
                out.keep(record, 0..record.len());
            } else {
                self.unfiltered = true;
                self.line(record, 0..record.len(), &[], false, &mut out);
                self.unfiltered = false;
            }
        }
        self.stats.annotated > before
    }

    /// The member (`"<key>":{...}`) added to the last record [`Stream::record`] annotated,
    /// or `None` when it annotated nothing.
    pub fn annotation(&self) -> Option<&[u8]> {
        (!self.member.is_empty()).then(|| self.member.strip_prefix(b",").unwrap_or(&self.member))
    }

    /// Takes the next bytes of the stream; writes to `out` every line it completes.
    pub fn feed<S: Sink + ?Sized>(&mut self, input: &[u8], out: &mut S) {
        self.stats.bytes += input.len() as u64;
        let mut at = 0;
        if self.skipping {
            match memchr::memchr(b'\n', input) {
                Some(i) => {
                    out.input(input, 0..i + 1);
                    self.skipping = false;
                    at = i + 1;
                }
                None => return out.input(input, 0..input.len()),
            }
        }
        if !self.pending.is_empty() {
            let Some(i) = memchr::memchr(b'\n', &input[at..]).map(|i| at + i) else {
                return self.hold(input, at..input.len(), out);
            };
            if self.pending.len() + (i - at) > self.tagger.config.max_line_bytes {
                self.pass_oversized(out);
                out.input(input, at..i + 1);
                self.skipping = false;
            } else {
                let mut line = std::mem::take(&mut self.pending);
                line.extend_from_slice(&input[at..=i]);
                self.lines(&line, &mut Out { sink: out, input, base: None });
                line.clear();
                self.pending = line;
                if self.pending.capacity() > RELEASE_AFTER_BYTES {
                    // A long line completed across reads: its copies go.
                    use crate::scratch::Release;
                    self.pending.release(KEEP_BYTES);
                    self.text.release(KEEP_BYTES);
                }
            }
            at = i + 1;
        }
        match memchr::memrchr(b'\n', &input[at..]) {
            Some(j) => {
                let end = at + j + 1;
                self.lines(&input[at..end], &mut Out { sink: out, input, base: Some(at) });
                self.hold(input, end..input.len(), out);
            }
            None => self.hold(input, at..input.len(), out),
        }
    }

    /// Ends the stream: a final line without `\n` is tagged and written without one.
    pub fn finish<S: Sink + ?Sized>(&mut self, out: &mut S) {
        self.skipping = false;
        if !self.pending.is_empty() {
            let line = std::mem::take(&mut self.pending);
            self.lines(&line, &mut Out { sink: out, input: &[], base: None });
        }
    }

    /// Keeps the start of an unfinished line, or passes it through once it is over the limit.
    fn hold<S: Sink + ?Sized>(&mut self, input: &[u8], range: std::ops::Range<usize>, out: &mut S) {
        if range.is_empty() {
            return;
        }
        if self.pending.len() + range.len() > self.tagger.config.max_line_bytes {
            self.pass_oversized(out);
            out.input(input, range);
        } else {
            self.pending.extend_from_slice(&input[range]);
        }
    }

    /// Writes what is held of a line found to be over the limit and skips its rest.
    fn pass_oversized<S: Sink + ?Sized>(&mut self, out: &mut S) {
        out.bytes(&self.pending);
        self.pending.clear();
        self.skipping = true;
        self.stats.lines += 1;
        self.stats.not_inspected.oversized += 1;
    }

    /// Tags a run of lines; every line but possibly the last ends with `\n`.
    fn lines<S: Sink + ?Sized>(&mut self, region: &[u8], out: &mut Out<'_, S>) {
        let tagger = self.tagger;
        if !tagger.config.prefilter {
            return self.every_line(region, out);
        }
        // A rule with no literal makes every line an event; the trigger scan still picks
        // the other rules each line is worth.
        let every = tagger.prefilter.examines_every_line();
        let pf = &tagger.prefilter;
        let mut text = std::mem::take(&mut self.text);
        text.fill(region);
        text.deleted_lines.clear();
        if pf.uses_deleted_text() {
            let ScanText { lower, deleted, deleted_lines, .. } = &mut text;
            pf.deleted_trigger_lines(region, lower, deleted, deleted_lines);
        }
        let lower = &text.lower;
        let mut deleted_lines = text.deleted_lines.iter().copied().peekable();
        let mut escapes = HidingScan::new(region, &text);
        let mut next_trigger = pf.next_trigger(lower, 0);
        let mut next_escape = escapes.next_at_or_after(0);
        let mut run_start = 0;
        let mut pos = 0;
        // Jump from one line with an event (a trigger, or an escape that could hide one) to
        // the next; the lines in between are only counted and passed on.
        while let Some(event) = next_trigger
            .into_iter()
            .chain(next_escape)
            .chain(deleted_lines.peek().copied())
            .chain(Some(pos).filter(|&p| every && p < region.len()))
            .min()
        {
            let start = memchr::memrchr(b'\n', &region[pos..event]).map_or(pos, |i| pos + i + 1);
            let end = memchr::memchr(b'\n', &region[event..]).map_or(region.len(), |i| event + i);
            let next = (end + 1).min(region.len());
            self.skipped(&region[pos..start]);
            self.stats.lines += 1;
            let escaped = next_escape.is_some_and(|e| e < end);
            if end - start > tagger.config.max_line_bytes {
                self.stats.not_inspected.oversized += 1;
            } else {
                out.keep(region, run_start..start);
                self.line(region, start..end, &lower[start..end], escaped, out);
                run_start = end;
            }
            if next_trigger.is_some_and(|t| t < next) {
                next_trigger = pf.next_trigger(lower, next);
            }
            if escaped {
                next_escape = escapes.next_at_or_after(next);
            }
            while deleted_lines.next_if(|&l| l < next).is_some() {}
            pos = next;
        }
        self.skipped(&region[pos..]);
        out.keep(region, run_start..region.len());
        self.text = text;
    }

    /// Without a prefilter: every line is inspected with every rule.
    fn every_line<S: Sink + ?Sized>(&mut self, region: &[u8], out: &mut Out<'_, S>) {
        let mut pos = 0;
        while pos < region.len() {
            let end = memchr::memchr(b'\n', &region[pos..]).map_or(region.len(), |i| pos + i);
            let next = (end + 1).min(region.len());
            self.stats.lines += 1;
            if end - pos > self.tagger.config.max_line_bytes {
                self.stats.not_inspected.oversized += 1;
                out.keep(region, pos..end);
            } else {
                self.line(region, pos..end, &[], false, out);
            }
            out.keep(region, end..next);
            pos = next;
        }
    }

    /// Counts lines the prefilter passed over (written out unchanged by the caller). In the
    /// usual run, every line starts with `{` and none is near the size limit, which one pass
    /// over the newlines shows; otherwise each line is classified.
    fn skipped(&mut self, run: &[u8]) {
        if run.is_empty() {
            return;
        }
        let mut lines = 0u64;
        let mut all_objects = run[0] == b'{';
        for i in memchr::memchr_iter(b'\n', run) {
            lines += 1;
            all_objects &= run.get(i + 1).is_none_or(|&b| b == b'{');
        }
        if !run.ends_with(b"\n") {
            lines += 1;
        }
        self.stats.lines += lines;
        if all_objects && run.len() <= self.tagger.config.max_line_bytes {
            return;
        }
        let body = run.strip_suffix(b"\n").unwrap_or(run);
        for line in body.split(|&b| b == b'\n') {
            if line.len() > self.tagger.config.max_line_bytes {
                self.stats.not_inspected.oversized += 1;
            } else {
                self.classify(line);
            }
        }
    }

    /// Counts a line the prefilter passed over when it is not JSON at all.
    fn classify(&mut self, line: &[u8]) {
        if line.is_empty() || line == b"\r" {
            self.stats.not_inspected.empty += 1;
        } else if json_start(line).is_none() {
            self.stats.not_inspected.not_json += 1;
        }
    }

    /// Inspects `region[range]`, one line without its `\n`, and writes it, annotated or not.
    fn line<S: Sink + ?Sized>(
        &mut self,
        region: &[u8],
        range: std::ops::Range<usize>,
        lower: &[u8],
        escaped: bool,
        out: &mut Out<'_, S>,
    ) {
        let large = range.len() > RELEASE_AFTER_BYTES;
        self.write_line(region, range, lower, escaped, out);
        if large {
            self.release_record_scratch();
        }
    }

    fn write_line<S: Sink + ?Sized>(
        &mut self,
        region: &[u8],
        range: std::ops::Range<usize>,
        lower: &[u8],
        escaped: bool,
        out: &mut Out<'_, S>,
    ) {
        match self.inspect(&region[range.clone()], lower, escaped) {
            Verdict::Unchanged => out.keep(region, range),
            Verdict::Annotate { close, empty } => {
                // The member goes right before the final `}`; the line itself is not copied.
                self.member.clear();
                if !empty {
                    self.member.push(b',');
                }
                self.tagger.annotator.write(&self.matched, self.incomplete, &mut self.member);
                let brace = range.start + close;
                out.keep(region, range.start..brace);
                out.bytes(&self.member);
                out.keep(region, brace..range.end);
            }
        }
    }

    /// Parses a record's JSON text into the event view; `Some(empty object?)`, or `None` when
    /// it is not a JSON object. A text the parser refuses over a lone surrogate or an
    /// out-of-range number is evaluated on a repaired copy ([`repair`]).
    fn load(&mut self, json: &[u8]) -> Option<bool> {
        self.view.set_view_budget(view_budget(json.len()));
        let (view, catalog, key) =
            (&mut self.view, self.tagger.rules.fields(), self.tagger.config.annotation_key.as_str());
        let mut fill = |tape: &[Node<'_>]| match tape.first() {
            Some(Node::Object { len, .. }) => {
                view.load(tape, catalog, key);
                Some(*len == 0)
            }
            _ => None,
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

    fn inspect(&mut self, line: &[u8], lower: &[u8], escaped: bool) -> Verdict {
        let tagger = self.tagger;
        if tagger.config.prefilter && tagger.prefilter.examines_every_line() {
            return self.inspect_routed(line);
        }
        self.candidates.clear();
        if tagger.config.prefilter && !self.unfiltered {
            let rules = tagger.prefilter.rules_for_line(line, lower, escaped, &mut self.prefilter);
            self.candidates.extend_from_slice(rules);
        } else {
            self.candidates.extend(0..tagger.rules.rules().len() as u32);
        }
        if self.candidates.is_empty() {
            self.classify(line);
            return Verdict::Unchanged;
        }
        self.stats.candidates += 1;
        let Some(start) = json_start(line) else {
            self.classify(line);
            return Verdict::Unchanged;
        };
        let json = &line[start..];
        let Some(empty) = self.load(json) else {
            self.stats.not_inspected.invalid_json += 1;
            return Verdict::Unchanged;
        };
        self.stats.parsed += 1;
        let (rules, catalog) = (tagger.rules.rules(), tagger.rules.fields());
        // Log sources first: most candidates of a record are rules for other events. Then
        // only the fields the remaining rules read get their views.
        self.view.make_views(catalog, &tagger.route_fields);
        let view = &self.view;
        let readings = tagger.readings();
        self.candidates.retain(|&r| rules[r as usize].route.eval_in(view, readings));
        self.evaluate(json, start, empty)
    }

    /// When every line is examined: the record is parsed first, its log sources decide
    /// which rule groups it is worth (read from a walk for the log source fields alone, so
    /// that a record no group wants costs no more), and the prefilter picks among their
    /// rules.
    fn inspect_routed(&mut self, line: &[u8]) -> Verdict {
        let tagger = self.tagger;
        let Some(start) = json_start(line) else {
            self.classify(line);
            return Verdict::Unchanged;
        };
        self.stats.candidates += 1;
        let json = &line[start..];
        let Some(empty) = self.load_routed(json) else {
            self.stats.not_inspected.invalid_json += 1;
            return Verdict::Unchanged;
        };
        self.stats.parsed += 1;
        if self.groups.is_empty() {
            return Verdict::Unchanged;
        }
        let rules = tagger.prefilter.rules_for_routed_line(&self.groups, &self.view, &mut self.prefilter);
        self.candidates.clear();
        self.candidates.extend_from_slice(rules);
        self.evaluate(json, start, empty)
    }

    /// Parses a record, finds the rule groups its log sources belong to (in `groups`) and,
    /// when there are any, loads every field the rules read.
    fn load_routed(&mut self, json: &[u8]) -> Option<bool> {
        self.view.set_view_budget(view_budget(json.len()));
        let tagger = self.tagger;
        let (view, groups, catalog, key) =
            (&mut self.view, &mut self.groups, tagger.rules.fields(), tagger.config.annotation_key.as_str());
        let mut fill = |tape: &[Node<'_>]| match tape.first() {
            Some(Node::Object { len, .. }) => {
                view.load_from(tape, catalog, &tagger.route_trie, key);
                view.make_views(catalog, &tagger.route_fields);
                groups.clear();
                let routes = tagger.prefilter.group_routes().enumerate();
                groups
                    .extend(routes.filter(|(_, route)| route.eval_in(view, tagger.readings())).map(|(g, _)| g as u32));
                if !groups.is_empty() {
                    view.load(tape, catalog, key);
                }
                Some(*len == 0)
            }
            _ => None,
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

    /// Evaluates the detections of the candidate rules (whose log sources hold) on the
    /// parsed record.
    fn evaluate(&mut self, json: &[u8], start: usize, empty: bool) -> Verdict {
        let tagger = self.tagger;
        let (rules, catalog) = (tagger.rules.rules(), tagger.rules.fields());
        self.matched.clear();
        for &r in &self.candidates {
            self.view.make_views(catalog, &tagger.detection_fields[r as usize]);
        }
        let view = &self.view;
        let readings = tagger.readings();
        self.matched.extend(self.candidates.iter().copied().filter(|&r| {
            let differ = view.fields_differ(&tagger.detection_fields[r as usize]);
            rules[r as usize].detection.eval_readings(view, readings, differ)
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
        let Some(close) = closing_brace(json) else { return Verdict::Unchanged };
        for &r in &self.matched {
            self.stats.matches[r as usize] += 1;
        }
        self.stats.annotated += 1;
        if !self.incomplete.is_empty() {
            self.stats.incomplete += 1;
        }
        Verdict::Annotate { close: start + close, empty }
    }
}
