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

mod framer;
mod inspect;
mod scan;

use framer::KEEP_BYTES;
pub use framer::{Framed, LineFramer, RELEASE_AFTER_BYTES};
use inspect::Parser;
pub use inspect::SHAPE_SAMPLE_LINES;
use scan::LineScan;

use crate::annotate::Annotator;
use crate::event::{EventView, Incomplete};
use crate::fields::{FieldId, PathTrie};
use crate::normalize::Reading;
use crate::prefilter::{self, Prefilter, ScanText};
use crate::rules::RuleSet;
use crate::sink::{Boundary, Out, Sink};
use crate::stats::Stats;

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
    /// The first this many lines of every stream are parsed whatever the prefilter says, so
    /// that the statistics say what shapes the stream is in from its start (a stream in a
    /// shape the table does not know is then seen at once). The output does not change.
    /// The command line uses [`SHAPE_SAMPLE_LINES`]; the default is 0.
    pub shape_sample_lines: u64,
    /// Collect what the annotated records were — rules, host, event time — into
    /// [`Stats::hunt`] (for `--summary`; see [`crate::hunt`]). Off by default: it reads two
    /// more fields of every record read.
    pub summary: bool,
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
            shape_sample_lines: 0,
            summary: false,
        }
    }
}

/// A setting that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The annotation key is empty, too long, or not an XML name (it names the
    /// annotation element of XML events too).
    #[error(
        "the annotation key must be 1 to {MAX_KEY_BYTES} letters, digits, `_`, `-` or `.`, starting with a letter or \
         `_` (it is also the name of the XML element XML events are annotated with)"
    )]
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
    /// With [`Config::summary`]: where an annotated record's host and time are read from.
    context: Option<Context>,
}

/// The fields the summary reads from each annotated record ([`crate::hunt`]).
#[derive(Debug)]
struct Context {
    /// `Computer`, wherever the record's shape keeps it.
    host: FieldId,
    /// The event's time, the first of these the record has: `TimeCreated` (System time,
    /// or the shipper's time stamp), then Sysmon's `UtcTime`.
    times: [FieldId; 2],
}

impl Tagger {
    /// Builds the prefilter and the annotation pieces.
    pub fn new(mut rules: RuleSet, config: Config) -> Result<Tagger, ConfigError> {
        if config.annotation_key.len() > MAX_KEY_BYTES || !crate::xml::is_name(&config.annotation_key) {
            return Err(ConfigError::AnnotationKey);
        }
        if config.max_line_bytes == 0 || config.max_line_bytes > MAX_MAX_LINE_BYTES {
            return Err(ConfigError::MaxLineBytes);
        }
        let context = config.summary.then(|| {
            let fields = rules.fields_mut();
            Context { host: fields.intern("Computer"), times: [fields.intern("TimeCreated"), fields.intern("UtcTime")] }
        });
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
                // A filter reads the record the rule matched: its fields are made too.
                for &(filter, _) in &r.filters {
                    rules.filters()[filter as usize].condition.fields(&mut f);
                }
                f.sort_unstable();
                f.dedup();
                f
            })
            .collect();
        let route_trie = rules.fields().trie_of(&route_fields);
        Ok(Tagger { rules, prefilter, annotator, config, route_fields, route_trie, detection_fields, context })
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

    /// The rule groups (when every line is examined) whose log sources a record read into
    /// `view` belongs to, into `groups`.
    fn route(&self, view: &mut EventView, groups: &mut Vec<u32>) {
        let catalog = self.rules.fields();
        view.make_views(catalog, &self.route_fields);
        groups.clear();
        let routes = self.prefilter.group_routes().enumerate();
        groups.extend(routes.filter(|(_, route)| route.eval_in(view, self.readings())).map(|(g, _)| g as u32));
    }

    /// The readings rules are matched in.
    fn readings(&self) -> &'static [Reading] {
        if self.config.resolved_reading { &Reading::BOTH } else { &[Reading::Logged] }
    }

    /// A new stream.
    pub fn stream(&self) -> Stream<'_> {
        Stream {
            tagger: self,
            framer: LineFramer::new(self.config.max_line_bytes),
            text: ScanText::default(),
            prefilter: prefilter::Scratch::default(),
            parser: Parser::default(),
            inner: Parser::default(),
            doc: String::new(),
            embedded_read: 0,
            canonical_xml: Vec::new(),
            sample_until: self.config.shape_sample_lines,
            lines_before: 0,
            view: EventView::new(),
            candidates: Vec::new(),
            groups: Vec::new(),
            matched: Vec::new(),
            member: Vec::new(),
            incomplete: Incomplete::default(),
            unfiltered: false,
            stats: Stats {
                hunt: self.config.summary.then(Box::default),
                ..Stats::with_shapes(self.rules.rules().len(), self.rules.fields().shapes().shapes.len())
            },
        }
    }

    /// A tagger with no rules, for a stream between two rule sets ([`Stream::rebind`]).
    fn placeholder() -> &'static Tagger {
        static PLACEHOLDER: std::sync::OnceLock<Tagger> = std::sync::OnceLock::new();
        PLACEHOLDER
            .get_or_init(|| Tagger::new(RuleSet::default(), Config::default()).expect("the default settings are valid"))
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

/// The most heap a [`Stream`] holds while it takes a line of `line_bytes` (its start held
/// until the end comes, the lower-cased copy, the JSON copy and simd-json's tape, the
/// decoded values and the forms they are compared in): 16 MiB + 64 × the line.
///
/// Measured, not derived: `benches/memory.rs` tags every crafted record of
/// `benches/crafted.rs` (expanding characters, arrays of a million values, deep nesting,
/// every rule literal at once…) with the built-in and the SigmaHQ rules: its worst is
/// 63x a 1 MB line (`expanding-image`, a character NFKC makes eighteen) and 169x a 65 KB
/// one, whose cost is mostly the fixed part (the view budget alone allows 4 MiB above
/// 8 × the line). `tests/memory.rs` checks every case at the default line limit against
/// it. The sidecar's memory budget reserves it for each connection that is reading.
pub const fn stream_memory_bound(line_bytes: usize) -> usize {
    (16 << 20) + 64 * line_bytes
}

/// Bytes of view text one record may take (see [`EventView::set_view_budget`]): its own
/// values, the four forms each is compared in (as logged and resolved, case kept and
/// folded), and room for compatibility characters that expand: a 32,767-character path of
/// a character NFKC makes eighteen (`U+FDFA`) fits. What expands past it is not evaluated,
/// and the record is annotated as such.
fn view_budget(json_len: usize) -> usize {
    8 * json_len + (4 << 20)
}

/// The state of one input stream.
#[derive(Debug)]
pub struct Stream<'t> {
    tagger: &'t Tagger,
    /// Cuts the input into lines ([`framer`]).
    framer: LineFramer,
    text: ScanText,
    prefilter: prefilter::Scratch,
    parser: Parser,
    /// A parser for the JSON events string members hold.
    inner: Parser,
    /// The text of such an event, while it is read.
    doc: String,
    /// Events read from the string members of the record being inspected.
    embedded_read: usize,
    /// The canonical copy of an XML line (or of a JSON line the embedding check reads).
    canonical_xml: Vec<u8>,
    /// Lines up to this many (counted by `stats.lines`) are parsed to recognise their
    /// shape whatever the prefilter says.
    sample_until: u64,
    /// Lines counted before the counters were last reset.
    lines_before: u64,
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

impl<'t> Stream<'t> {
    /// The stream held by no rule set, between two (a rule reload), and its counters (in
    /// the old set's rule order: [`Stats::rekey`] them to add them to the new set's).
    /// [`Stream::resume`] binds it to the next set.
    pub fn park(self) -> (Stream<'static>, Stats) {
        let stats = self.stats.clone();
        (self.rebind(Tagger::placeholder()), stats)
    }

    /// The same stream on another tagger: what is held of an unfinished record, the
    /// buffers and the shape sample carry over, so the record in progress is evaluated whole
    /// by the new rules — a stream switches between records, never inside one. What is
    /// indexed by a set's literals, clauses, rules and fields, and the counters, start
    /// afresh. The settings stay those of the stream's start (the line limit and the
    /// annotation key are not reloaded).
    fn rebind<'u>(self, tagger: &'u Tagger) -> Stream<'u> {
        let mut next = tagger.stream();
        next.framer = self.framer;
        next.text = self.text;
        next.parser = self.parser;
        next.inner = self.inner;
        next.doc = self.doc;
        next.canonical_xml = self.canonical_xml;
        next.member = self.member;
        next.sample_until = self.sample_until;
        next.lines_before = self.lines_before + self.stats.lines;
        next
    }
}

impl Stream<'static> {
    /// A parked stream ([`Stream::park`]) on `tagger`.
    pub fn resume(self, tagger: &Tagger) -> Stream<'_> {
        self.rebind(tagger)
    }
}

impl Stream<'_> {
    /// The counters so far.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// True while the start of a line is held waiting for its end.
    pub fn has_partial_line(&self) -> bool {
        self.framer.has_partial_line()
    }

    /// Bytes of an unfinished line held (it is written by [`Stream::finish`]).
    pub fn pending_bytes(&self) -> usize {
        self.framer.pending_bytes()
    }

    /// True while a line over the limit is being passed through: the output written so far
    /// ends inside that line (a caller that shares its output with other streams must not
    /// let them write until this is false again).
    pub fn passing_long_line(&self) -> bool {
        self.framer.in_long_line()
    }

    /// Forgets the unfinished line held, unwritten (a stop that writes whole lines only);
    /// returns its length.
    pub fn discard_partial_line(&mut self) -> usize {
        self.framer.discard()
    }

    /// The counters, for the driver to add what it counts around the stream.
    pub(crate) fn stats_mut(&mut self) -> &mut Stats {
        &mut self.stats
    }

    /// Bytes of capacity the stream's buffers hold (they are kept from record to record,
    /// and given back after a record over [`RELEASE_AFTER_BYTES`]).
    pub fn scratch_bytes(&self) -> usize {
        use crate::scratch::Release;
        self.framer.capacity_bytes()
            + self.text.capacity_bytes()
            + self.prefilter.capacity_bytes()
            + self.parser.capacity_bytes()
            + self.inner.capacity_bytes()
            + self.doc.capacity_bytes()
            + self.canonical_xml.capacity_bytes()
            + self.view.capacity_bytes()
            + self.member.capacity_bytes()
    }

    /// Gives back every buffer's capacity above a small working size (a front end calls
    /// this when its input goes quiet). What is held of a partial line is kept.
    pub fn release(&mut self) {
        self.release_record_scratch();
        self.text.release(KEEP_BYTES);
        self.framer.release();
    }

    /// Gives back what inspecting one large record made the stream hold.
    fn release_record_scratch(&mut self) {
        use crate::scratch::Release;
        self.parser.release(KEEP_BYTES);
        self.inner.release(KEEP_BYTES);
        self.doc.release(KEEP_BYTES);
        self.canonical_xml.release(KEEP_BYTES);
        self.view.release(KEEP_BYTES);
        self.prefilter.release(KEEP_BYTES);
        self.member.release(KEEP_BYTES);
    }

    /// Parses the next `lines` lines to recognise their shape whatever the prefilter says
    /// (a stream starts so, for [`SHAPE_SAMPLE_LINES`]; a front end that cuts one input
    /// into blocks for several streams says how many lines of the sample a block holds).
    pub fn sample_lines(&mut self, lines: u64) {
        self.sample_until = self.lines_seen() + lines;
    }

    /// Zeroes the counters (for front ends that add them to running totals as they go).
    pub fn reset_stats(&mut self) {
        self.lines_before += self.stats.lines;
        self.stats.reset();
    }

    /// Lines the stream has seen (not reset with the counters).
    fn lines_seen(&self) -> u64 {
        self.lines_before + self.stats.lines
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
                self.line(record, 0..record.len(), &[], LineScan::default(), &mut out);
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
        let mut framer = std::mem::take(&mut self.framer);
        framer.feed(input, &mut |piece| self.framed(piece, input, out));
        self.framer = framer;
    }

    /// Ends the stream: a final line without `\n` is tagged and written without one.
    pub fn finish<S: Sink + ?Sized>(&mut self, out: &mut S) {
        let mut framer = std::mem::take(&mut self.framer);
        framer.finish(&mut |piece| self.framed(piece, &[], out));
        self.framer = framer;
    }

    /// Writes what the framer gave: lines are scanned ([`scan`]), a line over the limit is
    /// passed on, counted, between the sink's [`Boundary`] marks.
    fn framed<S: Sink + ?Sized>(&mut self, piece: Framed<'_>, input: &[u8], out: &mut S) {
        match piece {
            Framed::Lines { bytes, base } => {
                self.lines(bytes, &mut Out { sink: out, input, base });
                if base.is_none() && bytes.len() > RELEASE_AFTER_BYTES {
                    // A long line completed across reads: its lower-cased copy goes.
                    self.text.release(KEEP_BYTES);
                }
            }
            Framed::Oversized { held } => {
                out.boundary(Boundary::LongStart);
                out.bytes(held);
                self.stats.oversized_line();
            }
            Framed::Pass(range) => out.input(input, range),
            Framed::LongEnd => out.boundary(Boundary::LongEnd),
        }
    }
}
