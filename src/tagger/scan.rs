//! Scanning a run of whole lines: the second of a [`Stream`]'s three parts (framer →
//! scanner → [inspector](super::inspect)).
//!
//! The run is lower-cased into a scratch copy and scanned for the prefilter's trigger
//! literals and for what could hide one from a byte scan ([`HidingScan`]); the scan jumps
//! from one line with such an event to the next, and the lines in between are only counted
//! (classified when they do not start with `{`) and passed on as one range of the input.
//! Each line with an event goes to the inspector ([`Stream::line`]).

use super::Stream;
use crate::prefilter::{self, HidingScan, ScanText};
use crate::sink::{Out, Sink};
use crate::syslog::{Payload, payload_start};

/// What the scan of a chunk found on one of its lines, for [`Stream::line`] (a line given
/// without its lower-cased copy was not scanned: it is inspected with every rule).
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct LineScan {
    /// Something that could hide a literal from a byte scan is in the line: a JSON escape,
    /// a character that folds to ASCII, XML markup ([`HidingScan`]).
    pub(super) escaped: bool,
    /// A trigger of the deleted text (command lines without quotes and carets) is in it.
    pub(super) deleted_hit: bool,
}

impl Stream<'_> {
    /// Tags a run of lines; every line but possibly the last ends with `\n`.
    pub(super) fn lines<S: Sink + ?Sized>(&mut self, region: &[u8], out: &mut Out<'_, S>) {
        let tagger = self.tagger;
        if !tagger.config.prefilter {
            return self.every_line(region, out);
        }
        // A rule with no literal makes every line an event; the trigger scan still picks
        // the other rules each line is worth.
        let every_line = tagger.prefilter.examines_every_line();
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
        // the next; the lines in between are only counted and passed on — but for an XML
        // line among them with markup that could hide a trigger, which is an event too.
        loop {
            let event = next_trigger
                .into_iter()
                .chain(next_escape)
                .chain(deleted_lines.peek().copied())
                .chain(Some(pos).filter(|&p| (every_line || self.lines_seen() < self.sample_until) && p < region.len()))
                .min();
            let limit =
                event.map_or(region.len(), |e| memchr::memrchr(b'\n', &region[pos..e]).map_or(pos, |i| pos + i + 1));
            let (start, markup) = match self.skipped(&region[pos..limit]) {
                Some(k) => (pos + k, true),
                None if event.is_some() => (limit, false),
                None => break,
            };
            let end = memchr::memchr(b'\n', &region[start..]).map_or(region.len(), |i| start + i);
            let next = (end + 1).min(region.len());
            self.stats.lines += 1;
            let escaped = markup || next_escape.is_some_and(|e| e < end);
            let scan = LineScan { escaped, deleted_hit: deleted_lines.peek() == Some(&start) };
            if end - start > tagger.config.max_line_bytes {
                self.stats.not_inspected.oversized += 1;
            } else {
                out.keep(region, run_start..start);
                self.line(region, start..end, &lower[start..end], scan, out);
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
                self.line(region, pos..end, &[], LineScan::default(), out);
            }
            out.keep(region, end..next);
            pos = next;
        }
    }

    /// Counts lines the prefilter passed over (written out unchanged by the caller), up to
    /// the first XML line whose markup could hide a trigger ([`prefilter::xml_markup`]):
    /// its offset is returned, and it is the caller's to inspect, and to call this again for
    /// the rest — so every byte of a run is looked at once, however many such lines it holds.
    /// A line that starts with `{` and is within the limit is only counted (the usual run);
    /// any other is classified.
    fn skipped(&mut self, run: &[u8]) -> Option<usize> {
        let max = self.tagger.config.max_line_bytes;
        let mut from = 0;
        while from < run.len() {
            let end = memchr::memchr(b'\n', &run[from..]).map_or(run.len(), |i| from + i);
            let line = &run[from..end];
            if line.len() > max {
                self.stats.not_inspected.oversized += 1;
            } else if line.first() != Some(&b'{') && self.classify(line) {
                return Some(from);
            }
            self.stats.lines += 1;
            from = end + 1;
        }
        None
    }

    /// Counts a line the prefilter passed over when it is not JSON or XML at all; true for
    /// an XML line whose markup could hide a trigger (to be inspected, not counted here).
    pub(super) fn classify(&mut self, line: &[u8]) -> bool {
        if line.is_empty() || line == b"\r" {
            self.stats.not_inspected.empty += 1;
        } else {
            match payload_start(line) {
                None => self.stats.not_inspected.not_json += 1,
                Some((start, Payload::Xml)) => return prefilter::xml_markup(&line[start..]),
                Some((_, Payload::Json)) => {}
            }
        }
        false
    }
}
