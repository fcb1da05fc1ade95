//! The command line's output: ranges of the read buffer and the stream's own bytes,
//! written with vectored writes so that unchanged input is never copied in user space.

use std::io::{self, IoSlice, Write};
use std::ops::Range;

use iis_tagger::{MatchesOnly, Sink};

/// A sink the command line writes out after each feed.
pub trait Emit: Sink {
    /// Writes what the sink holds, `input` being the slice that was fed, and clears it.
    fn emit(&mut self, out: &mut impl Write, input: &[u8]) -> io::Result<()>;

    /// The input's last bytes were fed (its driver has ended).
    fn end_input(&mut self) {}

    /// Records left out of the output since the last call (`--matches-only`).
    fn take_dropped(&mut self) -> u64 {
        0
    }
}

impl Emit for Vectored {
    fn emit(&mut self, out: &mut impl Write, input: &[u8]) -> io::Result<()> {
        self.write_to(out, input)
    }
}

impl Emit for MatchesOnly {
    fn emit(&mut self, out: &mut impl Write, _input: &[u8]) -> io::Result<()> {
        let kept = self.output();
        let written = out.write_all(kept);
        kept.clear();
        written
    }

    fn end_input(&mut self) {
        self.finish();
    }

    fn take_dropped(&mut self) -> u64 {
        MatchesOnly::take_dropped(self)
    }
}

/// Largest number of slices handed to one `writev` (Linux's `IOV_MAX` is 1024).
const MAX_SLICES: usize = 1024;

#[derive(Debug, Clone)]
enum Part {
    /// A range of the input of the current feed.
    Input(Range<usize>),
    /// A range of `made`.
    Made(Range<usize>),
}

/// Collects one feed's output; [`Vectored::write_to`] writes and clears it.
#[derive(Debug, Default)]
pub struct Vectored {
    parts: Vec<Part>,
    made: Vec<u8>,
}

impl Sink for Vectored {
    fn input(&mut self, _input: &[u8], range: Range<usize>) {
        if let Some(Part::Input(last)) = self.parts.last_mut() {
            if last.end == range.start {
                last.end = range.end;
                return;
            }
        }
        self.parts.push(Part::Input(range));
    }

    fn bytes(&mut self, bytes: &[u8]) {
        let start = self.made.len();
        self.made.extend_from_slice(bytes);
        if let Some(Part::Made(last)) = self.parts.last_mut() {
            if last.end == start {
                last.end = self.made.len();
                return;
            }
        }
        self.parts.push(Part::Made(start..self.made.len()));
    }
}

impl Vectored {
    /// Writes everything collected, `input` being the slice that was fed, and clears.
    pub fn write_to(&mut self, out: &mut impl Write, input: &[u8]) -> io::Result<()> {
        let mut slices: Vec<IoSlice<'_>> = self
            .parts
            .iter()
            .map(|p| match p {
                Part::Input(r) => IoSlice::new(&input[r.clone()]),
                Part::Made(r) => IoSlice::new(&self.made[r.clone()]),
            })
            .collect();
        let mut rest = &mut slices[..];
        while !rest.is_empty() {
            let batch = rest.len().min(MAX_SLICES);
            let n = match out.write_vectored(&rest[..batch]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            IoSlice::advance_slices(&mut rest, n);
        }
        self.parts.clear();
        self.made.clear();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer that accepts at most `n` bytes per call, to exercise partial writes.
    struct Trickle(Vec<u8>, usize);

    impl Write for Trickle {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let n = buf.len().min(self.1);
            self.0.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn ranges_and_bytes_come_out_in_order_through_partial_writes() {
        let input = b"abcdefghij";
        let mut v = Vectored::default();
        v.input(input, 0..3);
        v.input(input, 3..5);
        v.bytes(b"XY");
        v.bytes(b"Z");
        v.input(input, 7..10);
        assert_eq!(v.parts.len(), 3, "adjacent pieces merge");
        for step in [1, 2, 3, 100] {
            let mut w = Trickle(Vec::new(), step);
            let mut copy = Vectored { parts: v.parts.clone(), made: v.made.clone() };
            copy.write_to(&mut w, input).expect("writes");
            assert_eq!(w.0, b"abcdeXYZhij");
        }
    }
}
