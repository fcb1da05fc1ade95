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

    /// Bytes the stream made.
    pub(crate) fn bytes(&mut self, bytes: &[u8]) {
        self.sink.bytes(bytes);
    }
}
