//! Cutting a stream into lines within the line limit: the first of a [`Stream`](super::Stream)'s
//! three parts (framer → [scanner](super::scan) → [inspector](super::inspect)), and the
//! framing of the parallel front end, which cuts an input into blocks of whole lines.
//!
//! Lines are given where they lie: whole lines in the input fed are given as a slice of it
//! (the usual case, no copy); only the start of a line whose end has not arrived is copied,
//! and only up to the limit. A line found to be longer is given on as it streams, never
//! held whole ([`Framed::Oversized`], then [`Framed::Pass`]es, then [`Framed::LongEnd`]).
//! A whole line inside one feed is not measured here: the scanner counts one over the limit
//! as it passes it.

use std::ops::Range;

use crate::scratch::Release;

/// After a line longer than this completed across feeds, the copy it grew is given back.
pub const RELEASE_AFTER_BYTES: usize = 64 << 10;

/// What a buffer keeps when giving memory back: enough for the records of a usual stream.
pub(crate) const KEEP_BYTES: usize = 64 << 10;

/// What the framer found in the bytes fed.
#[derive(Debug, PartialEq, Eq)]
pub enum Framed<'a> {
    /// Whole lines, each ended by `\n` (but for a last one given by [`LineFramer::finish`]):
    /// `input[base..]` of the slice fed when `base` is set, else the framer's own copy of a
    /// line completed across feeds.
    Lines {
        /// The lines.
        bytes: &'a [u8],
        /// Where they start in the input fed, when they lie there.
        base: Option<usize>,
    },
    /// A line is over the limit: `held` is what had been held of it. Its rest follows as
    /// [`Framed::Pass`]es and ends with [`Framed::LongEnd`].
    Oversized {
        /// The start of the line, held until it was found to be too long.
        held: &'a [u8],
    },
    /// The next bytes of the line over the limit: this range of the input fed (its `\n`
    /// included when it ends there).
    Pass(Range<usize>),
    /// The line over the limit has ended (its `\n` was in the last `Pass`, or the input
    /// ended without one).
    LongEnd,
}

/// The framing state of one stream.
#[derive(Debug, Default)]
pub struct LineFramer {
    max: usize,
    /// The start of a line whose end has not arrived.
    pending: Vec<u8>,
    /// Inside a line over the limit: passing it on until its `\n`.
    long: bool,
}

impl LineFramer {
    /// A framer holding at most `max_line_bytes` of a line.
    pub fn new(max_line_bytes: usize) -> LineFramer {
        LineFramer { max: max_line_bytes, pending: Vec::new(), long: false }
    }

    /// True while the bytes fed end inside a line (held, or over the limit and passed on).
    pub fn has_partial_line(&self) -> bool {
        !self.pending.is_empty() || self.long
    }

    /// Bytes held of an unfinished line.
    pub fn pending_bytes(&self) -> usize {
        self.pending.len()
    }

    /// True while a line over the limit is being passed on.
    pub fn in_long_line(&self) -> bool {
        self.long
    }

    /// Bytes of capacity held.
    pub fn capacity_bytes(&self) -> usize {
        self.pending.capacity_bytes()
    }

    /// Gives back the held buffer's capacity above a small size, when nothing is held.
    pub fn release(&mut self) {
        if self.pending.is_empty() {
            self.pending.release(KEEP_BYTES);
        }
    }

    /// Forgets the unfinished line held (a stop that writes whole lines only); returns its
    /// length.
    pub fn discard(&mut self) -> usize {
        let n = self.pending.len();
        self.pending.clear();
        n
    }

    /// Takes the next bytes; gives `f` what they complete, in order.
    pub fn feed(&mut self, input: &[u8], f: &mut impl FnMut(Framed<'_>)) {
        let mut at = 0;
        if self.long {
            match memchr::memchr(b'\n', input) {
                Some(i) => {
                    f(Framed::Pass(0..i + 1));
                    self.long = false;
                    f(Framed::LongEnd);
                    at = i + 1;
                }
                None => {
                    if !input.is_empty() {
                        f(Framed::Pass(0..input.len()));
                    }
                    return;
                }
            }
        }
        if !self.pending.is_empty() {
            let Some(i) = memchr::memchr(b'\n', &input[at..]).map(|i| at + i) else {
                return self.hold(input, at..input.len(), f);
            };
            if self.pending.len() + (i - at) > self.max {
                self.oversized(f);
                f(Framed::Pass(at..i + 1));
                self.long = false;
                f(Framed::LongEnd);
            } else {
                let mut line = std::mem::take(&mut self.pending);
                line.extend_from_slice(&input[at..=i]);
                f(Framed::Lines { bytes: &line, base: None });
                line.clear();
                self.pending = line;
                if self.pending.capacity() > RELEASE_AFTER_BYTES {
                    self.pending.release(KEEP_BYTES);
                }
            }
            at = i + 1;
        }
        match memchr::memrchr(b'\n', &input[at..]) {
            Some(j) => {
                let end = at + j + 1;
                f(Framed::Lines { bytes: &input[at..end], base: Some(at) });
                self.hold(input, end..input.len(), f);
            }
            None => self.hold(input, at..input.len(), f),
        }
    }

    /// Ends the input: a line over the limit being passed on ends; a final line without
    /// `\n` is given.
    pub fn finish(&mut self, f: &mut impl FnMut(Framed<'_>)) {
        if std::mem::take(&mut self.long) {
            f(Framed::LongEnd);
        }
        if !self.pending.is_empty() {
            let line = std::mem::take(&mut self.pending);
            f(Framed::Lines { bytes: &line, base: None });
        }
    }

    /// Keeps the start of an unfinished line, or passes it on once it is over the limit.
    fn hold(&mut self, input: &[u8], range: Range<usize>, f: &mut impl FnMut(Framed<'_>)) {
        if range.is_empty() {
            return;
        }
        if self.pending.len() + range.len() > self.max {
            self.oversized(f);
            f(Framed::Pass(range));
        } else {
            self.pending.extend_from_slice(&input[range]);
        }
    }

    /// Gives what is held of a line found to be over the limit, and passes its rest on.
    fn oversized(&mut self, f: &mut impl FnMut(Framed<'_>)) {
        f(Framed::Oversized { held: &self.pending });
        self.pending.clear();
        self.long = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `f` was given, as text: `L[..]` whole lines (`*` when copied), `O[..]` the held
    /// start of a long line, `P[..]` passed bytes, `E` its end.
    fn frame(max: usize, chunks: &[&str]) -> Vec<String> {
        let mut framer = LineFramer::new(max);
        let mut got = Vec::new();
        for chunk in chunks {
            let input = chunk.as_bytes();
            framer.feed(input, &mut |piece| got.push(describe(&piece, input)));
        }
        framer.finish(&mut |piece| got.push(describe(&piece, &[])));
        got
    }

    fn describe(piece: &Framed<'_>, input: &[u8]) -> String {
        let text = |b: &[u8]| String::from_utf8_lossy(b).replace('\n', "|");
        match piece {
            Framed::Lines { bytes, base: Some(_) } => format!("L[{}]", text(bytes)),
            Framed::Lines { bytes, base: None } => format!("L*[{}]", text(bytes)),
            Framed::Oversized { held } => format!("O[{}]", text(held)),
            Framed::Pass(r) => format!("P[{}]", text(&input[r.clone()])),
            Framed::LongEnd => "E".into(),
        }
    }

    #[test]
    fn whole_lines_are_given_in_place_and_a_line_across_feeds_from_a_copy() {
        assert_eq!(frame(10, &["ab\ncd\ne", "f\ng"]), ["L[ab|cd|]", "L*[ef|]", "L*[g]"]);
    }

    #[test]
    fn a_line_over_the_limit_is_passed_on_as_it_streams() {
        // Held up to the limit, then found too long: its start, its parts, its end.
        assert_eq!(frame(4, &["abc", "defg", "hi\nok\n"]), ["O[abc]", "P[defg]", "P[hi|]", "E", "L[ok|]"]);
        // Found too long when its `\n` arrives.
        assert_eq!(frame(4, &["abc", "de\nx"]), ["O[abc]", "P[de|]", "E", "L*[x]"]);
    }

    #[test]
    fn a_whole_line_in_one_feed_is_not_measured_here() {
        // The scanner counts it; the framer holds nothing of it.
        assert_eq!(frame(2, &["abcdef\n"]), ["L[abcdef|]"]);
    }

    #[test]
    fn the_end_of_input_ends_a_long_line_and_gives_the_last_line() {
        assert_eq!(frame(2, &["abcd"]), ["O[]", "P[abcd]", "E"]);
        let mut framer = LineFramer::new(8);
        framer.feed(b"a\nbc", &mut |_| {});
        assert!(framer.has_partial_line());
        assert_eq!(framer.pending_bytes(), 2);
        assert_eq!(framer.discard(), 2);
        assert!(!framer.has_partial_line());
    }

    #[test]
    fn no_byte_is_lost_however_the_input_is_cut() {
        let input = b"first\na line that is much too long\nmid\n\nlast without end";
        for max in [1, 5, 16, 64] {
            for cut in 1..input.len() {
                let mut framer = LineFramer::new(max);
                let mut out = Vec::new();
                let mut push = |piece: Framed<'_>, fed: &[u8]| match piece {
                    Framed::Lines { bytes, .. } | Framed::Oversized { held: bytes } => out.extend_from_slice(bytes),
                    Framed::Pass(r) => out.extend_from_slice(&fed[r]),
                    Framed::LongEnd => {}
                };
                for chunk in input.chunks(cut) {
                    framer.feed(chunk, &mut |p| push(p, chunk));
                    assert!(framer.pending_bytes() <= max, "held over the limit");
                }
                framer.finish(&mut |p| push(p, &[]));
                assert_eq!(out, input, "max {max}, cut {cut}");
            }
        }
    }
}
