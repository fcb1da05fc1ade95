//! Where a [`Stream`](crate::Stream) writes: the caller owns the output.
//!
//! Almost every byte a stream writes is a byte of its input, unchanged. A sink is told
//! those as ranges of the slice given to the current [`feed`](crate::Stream::feed), and is
//! handed only the bytes the stream made (an annotation, a line completed across reads).
//! A `Vec<u8>` copies both; the command line keeps the ranges and writes them from its
//! read buffer with one vectored write, so unchanged bytes are never copied in user space.

use std::ops::Range;

/// The output of a stream.
pub trait Sink {
    /// `input[range]` is the next output, unchanged; `input` is the slice given to the
    /// current `feed` (the same slice on every call until `feed` returns).
    fn input(&mut self, input: &[u8], range: Range<usize>);

    /// `bytes` are the next output.
    fn bytes(&mut self, bytes: &[u8]);

    /// `bytes` are the next output: the annotation of the record being written (the member
    /// or element inserted into it). Most sinks write it as any other bytes.
    fn annotation(&mut self, bytes: &[u8]) {
        self.bytes(bytes);
    }

    /// The output reaches a boundary of a record over the line limit, which is passed on as
    /// it streams: the bytes written between its `LongStart` and its `LongEnd` are one record
    /// that spans feeds. A sink that shares its output with other streams must let none of
    /// them write in between. Most sinks ignore it.
    fn boundary(&mut self, _boundary: Boundary) {}
}

/// See [`Sink::boundary`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Boundary {
    /// A record over the limit starts: what is written from here on is its, up to `LongEnd`.
    LongStart,
    /// That record has ended (its `\n`, if it had one, is written).
    LongEnd,
}

impl Sink for Vec<u8> {
    fn input(&mut self, input: &[u8], range: Range<usize>) {
        self.extend_from_slice(&input[range]);
    }

    fn bytes(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

/// A sink that keeps only the records that got an annotation (`--matches-only`), copied
/// into [`MatchesOnly::output`]; the others are counted and dropped. Records are the lines
/// of the output (a record over the line limit is never annotated, and is dropped too).
#[derive(Debug, Default)]
pub struct MatchesOnly {
    /// The start of the record being written, when it may still be kept.
    line: Vec<u8>,
    /// The record being written got an annotation.
    annotated: bool,
    output: Vec<u8>,
    dropped: u64,
}

impl MatchesOnly {
    fn take(&mut self, mut s: &[u8]) {
        while !s.is_empty() {
            if self.annotated {
                let Some(i) = memchr::memchr(b'\n', s) else {
                    self.line.extend_from_slice(s);
                    return;
                };
                self.line.extend_from_slice(&s[..=i]);
                self.output.append(&mut self.line);
                self.annotated = false;
                s = &s[i + 1..];
            } else {
                // Every record that ends in `s` ended without an annotation.
                let Some(j) = memchr::memrchr(b'\n', s) else {
                    self.line.extend_from_slice(s);
                    return;
                };
                self.dropped += memchr::memchr_iter(b'\n', &s[..=j]).count() as u64;
                self.line.clear();
                s = &s[j + 1..];
            }
        }
    }

    /// Ends an input: a last record without `\n` is kept if it was annotated, ended by
    /// `\n` (so that it is not run into the next input's first record kept).
    pub fn finish(&mut self) {
        if self.annotated {
            self.line.push(b'\n');
            self.output.append(&mut self.line);
        } else if !self.line.is_empty() {
            self.dropped += 1;
        }
        self.line.clear();
        self.annotated = false;
    }

    /// The records kept so far (the caller writes and clears it).
    pub fn output(&mut self) -> &mut Vec<u8> {
        &mut self.output
    }

    /// How many records were dropped since the last call.
    pub fn take_dropped(&mut self) -> u64 {
        std::mem::take(&mut self.dropped)
    }
}

impl Sink for MatchesOnly {
    fn input(&mut self, input: &[u8], range: Range<usize>) {
        self.take(&input[range]);
    }

    fn bytes(&mut self, bytes: &[u8]) {
        self.take(bytes);
    }

    fn annotation(&mut self, bytes: &[u8]) {
        self.annotated = true;
        self.take(bytes);
    }
}

/// A sink, and where the lines being tagged lie: in the fed input (at `base`), or in a
/// buffer of the stream's own (a line completed across reads), whose bytes must be copied.
pub(crate) struct Out<'a, S: ?Sized> {
    pub(crate) sink: &'a mut S,
    pub(crate) input: &'a [u8],
    pub(crate) base: Option<usize>,
}

impl<S: Sink + ?Sized> Out<'_, S> {
    /// `region[range]` unchanged, where `region` is the text being tagged.
    pub(crate) fn keep(&mut self, region: &[u8], range: Range<usize>) {
        if range.is_empty() {
            return;
        }
        match self.base {
            Some(base) => self.sink.input(self.input, base + range.start..base + range.end),
            None => self.sink.bytes(&region[range]),
        }
    }

    /// The annotation of the line being written.
    pub(crate) fn annotation(&mut self, bytes: &[u8]) {
        self.sink.annotation(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_annotated_records_are_kept_wherever_the_pieces_are_cut() {
        // The output of a stream: ranges of the input and, for the second and fourth records,
        // an annotation spliced in; then the same output cut again at every byte (as reads
        // and feeds cut it), each cut splitting a piece in two of the same kind.
        let pieces: [(&[u8], bool); 7] = [
            (b"one\ntw", false),
            (b"o", false),
            (b"+", true),
            (b"\nthree\nfou", false),
            (b"r", false),
            (b"+", true),
            (b"\nfive", false),
        ];
        let whole: usize = pieces.iter().map(|(p, _)| p.len()).sum();
        for cut in 0..=whole {
            let mut sink = MatchesOnly::default();
            let mut at = 0;
            for &(piece, annotation) in &pieces {
                let split = cut.clamp(at, at + piece.len()) - at;
                for part in [&piece[..split], &piece[split..]] {
                    if annotation {
                        sink.annotation(part);
                    } else {
                        sink.input(part, 0..part.len());
                    }
                }
                at += piece.len();
            }
            sink.finish();
            assert_eq!(sink.output(), b"two+\nfour+\n", "cut at {cut}");
            assert_eq!(sink.take_dropped(), 3, "cut at {cut}: one, three, five");
        }
    }

    #[test]
    fn an_annotated_last_record_without_a_newline_is_kept() {
        let mut sink = MatchesOnly::default();
        sink.input(b"a\nb", 0..3);
        sink.annotation(b"+");
        sink.finish();
        assert_eq!(sink.output(), b"b+\n");
        assert_eq!(sink.take_dropped(), 1);
    }
}
