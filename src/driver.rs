//! The read/tag/write loop every front end runs, without the I/O (ARCHITECTURE §5.1).
//!
//! A front end reads its source, hands each read to [`Driver::feed`] with its sink, writes
//! what the sink collected, and acknowledges what its source needs acknowledged. Everything
//! else is decided here, the same way for stdin and files, `--follow`, each sidecar
//! connection and `--forward`: how records are framed (lines, or RFC 6587 octet-counted
//! frames, [`Framing`]), the line limit, when to stop reading after a stop request (a
//! termination signal: [`Driver::should_stop`]), and what is written when the input ends
//! or is stopped ([`Driver::end`], ARCHITECTURE §1.7):
//!
//! | end | an unfinished record held | a record over the limit, partly written |
//! |---|---|---|
//! | [`End::Eof`] | tagged and written, as it came or ended by `\n` ([`AtEof`]) | ended as it came, or by `\n` |
//! | [`End::Stop`], [`OnStop::WholeRecords`] | not written (its length is returned) | ended by `\n`: never torn |
//! | [`End::Stop`], [`OnStop::Everything`] | as at `Eof` | as at `Eof` |
//! | [`End::Closed`] | nothing can be written | nothing can be written |
//!
//! The parallel front end cuts its input into blocks with the same [`LineFramer`](crate::tagger::LineFramer) and stops
//! with the same [`StopGrace`]; rsyslog's `mmexternal`, whose records are messages with one
//! reply each, frames its lines with the `LineFramer` too.

use crate::framing::{OctetCounted, Piece};
use crate::sink::{Boundary, Sink};
use crate::stats::Stats;
use crate::tagger::{Stream, Tagger};

/// After a stop request, reading goes on only to complete the record in progress, and for at
/// most this many bytes more than were held of it.
pub const STOP_GRACE_BYTES: usize = 2 << 20;

/// How records are delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Framing {
    /// One record per `\n`-terminated line.
    #[default]
    Lines,
    /// RFC 6587 octet counting (`MSG-LEN SP MSG`), each frame one record; bytes that do not
    /// start a frame are read up to `\n` as one record (see [`crate::framing`]).
    OctetCounted,
}

/// What an unfinished record gets when the input ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AtEof {
    /// Written as it came (one input to its own output: the output is the input's copy).
    #[default]
    AsItCame,
    /// Ended by `\n` (an output that other inputs write to next), and counted.
    Terminated,
}

/// What a stop request (a termination signal) writes of the record in progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnStop {
    /// Whole records only: the start of an unfinished one is not written (the source gives
    /// it again, or it is reported as dropped).
    #[default]
    WholeRecords,
    /// Everything read, as at the end of the input (a peer that will not send it again).
    Everything,
}

/// How a [`Driver`] frames and ends its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Settings {
    /// The input's framing.
    pub input: Framing,
    /// The output's framing (octet-counted input only; lines come out as lines).
    pub output: Framing,
    /// See [`AtEof`].
    pub at_eof: AtEof,
    /// See [`OnStop`].
    pub on_stop: OnStop,
}

/// Why the input is ending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The source has no more bytes.
    Eof,
    /// A stop was asked for (and [`Driver::should_stop`] said to stop now).
    Stop,
    /// The output went away: nothing more can be written.
    Closed,
}

/// What [`Driver::end`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Ended {
    /// Bytes of an unfinished record held and not written.
    pub dropped: usize,
    /// The input ended inside a record that was written (counted as
    /// [`Stats::unterminated`]).
    pub unterminated: bool,
}

/// Stopping after a stop request: read on only to finish the record in progress, and not
/// for ever ([`STOP_GRACE_BYTES`]); a second request stops at once.
#[derive(Debug, Default, Clone)]
pub struct StopGrace {
    /// Bytes that may still be read, from the first request on.
    left: Option<usize>,
}

impl StopGrace {
    /// Before each read: `requests` stop requests so far, `held` bytes of a record in
    /// progress (`partial`: the input is inside one). True: stop now.
    pub fn should_stop(&mut self, requests: usize, partial: bool, held: usize) -> bool {
        if requests == 0 {
            return false;
        }
        let left = *self.left.get_or_insert(held + STOP_GRACE_BYTES);
        requests > 1 || !partial || left == 0
    }

    /// `n` bytes were read.
    pub fn read(&mut self, n: usize) {
        if let Some(left) = self.left.as_mut() {
            *left = left.saturating_sub(n);
        }
    }
}

/// The framing state of the input.
#[derive(Debug)]
enum Decoder {
    /// Lines: the stream's own framer cuts them.
    Lines,
    /// Octet-counted frames, each tagged as one record (`scratch`: one record's output).
    Frames { frames: OctetCounted, scratch: Vec<u8> },
}

/// One input's read/tag/write state (see the module documentation).
#[derive(Debug)]
pub struct Driver<'t> {
    stream: Stream<'t>,
    decoder: Decoder,
    settings: Settings,
    grace: StopGrace,
}

impl<'t> Driver<'t> {
    /// A driver for one input of `tagger`.
    pub fn new(tagger: &'t Tagger, settings: Settings) -> Driver<'t> {
        let decoder = match settings.input {
            Framing::Lines => Decoder::Lines,
            Framing::OctetCounted => {
                Decoder::Frames { frames: OctetCounted::new(tagger.config().max_line_bytes), scratch: Vec::new() }
            }
        };
        Driver { stream: tagger.stream(), decoder, settings, grace: StopGrace::default() }
    }

    /// The driver held by no rule set, between two (a rule reload), and its counters (in
    /// the old set's rule order: [`Stats::rekey`]). [`Driver::resume`] binds it to the next
    /// set; what is held of an unfinished record is evaluated whole by that set.
    pub fn park(self) -> (Driver<'static>, Stats) {
        let Driver { stream, decoder, settings, grace } = self;
        let (stream, stats) = stream.park();
        (Driver { stream, decoder, settings, grace }, stats)
    }
}

impl Driver<'static> {
    /// A parked driver ([`Driver::park`]) on `tagger`.
    pub fn resume(self, tagger: &Tagger) -> Driver<'_> {
        let Driver { stream, decoder, settings, grace } = self;
        Driver { stream: stream.resume(tagger), decoder, settings, grace }
    }
}

impl Driver<'_> {
    /// The settings.
    pub fn settings(&self) -> Settings {
        self.settings
    }

    /// The counters so far.
    pub fn stats(&self) -> &Stats {
        self.stream.stats()
    }

    /// Adds the counters to `total` and zeroes them (for running totals).
    pub fn drain_stats(&mut self, total: &mut Stats) {
        total.merge(self.stream.stats());
        self.stream.reset_stats();
    }

    /// True while the bytes fed end inside a record.
    pub fn has_partial(&self) -> bool {
        match &self.decoder {
            Decoder::Lines => self.stream.has_partial_line(),
            Decoder::Frames { frames, .. } => frames.has_partial(),
        }
    }

    /// Bytes held of an unfinished record (tagged when its end arrives).
    pub fn held_bytes(&self) -> usize {
        match &self.decoder {
            Decoder::Lines => self.stream.pending_bytes(),
            Decoder::Frames { frames, .. } => frames.held_bytes(),
        }
    }

    /// True while the output written so far ends inside a record over the limit.
    pub fn output_open(&self) -> bool {
        match &self.decoder {
            Decoder::Lines => self.stream.passing_long_line(),
            Decoder::Frames { frames, .. } => frames.in_long(),
        }
    }

    /// Bytes of capacity the driver's buffers hold.
    pub fn scratch_bytes(&self) -> usize {
        let frames = match &self.decoder {
            Decoder::Lines => 0,
            Decoder::Frames { frames, scratch } => frames.held_bytes() + scratch.capacity(),
        };
        self.stream.scratch_bytes() + frames
    }

    /// Gives back buffer capacity above a small working size (the input is quiet).
    pub fn release(&mut self) {
        self.stream.release();
        if let Decoder::Frames { scratch, .. } = &mut self.decoder {
            *scratch = Vec::new();
        }
    }

    /// Parses the next `lines` lines whatever the prefilter says ([`Stream::sample_lines`]).
    pub fn sample_lines(&mut self, lines: u64) {
        self.stream.sample_lines(lines);
    }

    /// Before each read: `requests` stop requests received so far. True: stop now, and
    /// [`Driver::end`] with [`End::Stop`].
    pub fn should_stop(&mut self, requests: usize) -> bool {
        let (partial, held) = (self.has_partial(), self.held_bytes());
        self.grace.should_stop(requests, partial, held)
    }

    /// Takes the next bytes read; writes to `sink` every record they complete.
    pub fn feed<S: Sink + ?Sized>(&mut self, input: &[u8], sink: &mut S) {
        self.grace.read(input.len());
        match &mut self.decoder {
            Decoder::Lines => self.stream.feed(input, sink),
            Decoder::Frames { frames, scratch } => {
                let (stream, output) = (&mut self.stream, self.settings.output);
                frames.feed(input, &mut |piece| frame_piece(piece, stream, scratch, sink, output));
                add_frame_stats(stream.stats_mut(), frames);
            }
        }
    }

    /// Ends the input (see the module documentation for what is written).
    pub fn end<S: Sink + ?Sized>(&mut self, end: End, sink: &mut S) -> Ended {
        let partial = self.has_partial();
        let write = match end {
            End::Closed => false,
            End::Eof => true,
            End::Stop => self.settings.on_stop == OnStop::Everything || self.output_open(),
        };
        if !write {
            let dropped = match &mut self.decoder {
                Decoder::Lines => self.stream.discard_partial_line(),
                Decoder::Frames { frames, .. } => frames.discard(),
            };
            return Ended { dropped, unterminated: false };
        }
        // A stop ends a record over the limit with `\n` whatever the input's end would.
        let terminate = self.settings.at_eof == AtEof::Terminated || end == End::Stop;
        match &mut self.decoder {
            Decoder::Lines => {
                if terminate && self.stream.passing_long_line() {
                    sink.bytes(b"\n");
                    self.stream.finish(sink);
                } else {
                    let held = self.stream.pending_bytes() > 0;
                    self.stream.finish(sink);
                    if terminate && held {
                        sink.bytes(b"\n");
                    }
                }
            }
            Decoder::Frames { frames, scratch } => {
                let (stream, output) = (&mut self.stream, self.settings.output);
                frames.finish(&mut |piece| frame_piece(piece, stream, scratch, sink, output));
                add_frame_stats(stream.stats_mut(), frames);
            }
        }
        if partial {
            self.stream.stats_mut().unterminated += 1;
        }
        Ended { dropped: 0, unterminated: partial }
    }
}

/// The frame decoder's counters, moved into the stream's.
fn add_frame_stats(stats: &mut Stats, frames: &mut OctetCounted) {
    let f = frames.take_stats();
    stats.frames += f.frames;
    stats.unframed += f.unframed;
}

/// One piece of an octet-counted input, tagged and framed for the output.
fn frame_piece<S: Sink + ?Sized>(
    piece: Piece<'_>,
    stream: &mut Stream<'_>,
    scratch: &mut Vec<u8>,
    sink: &mut S,
    output: Framing,
) {
    match piece {
        Piece::Record(record) => match output {
            Framing::OctetCounted => {
                scratch.clear();
                stream.record(record, scratch);
                sink.bytes(scratch.len().to_string().as_bytes());
                sink.bytes(b" ");
                sink.bytes(scratch);
            }
            Framing::Lines => {
                stream.record(record, sink);
                sink.bytes(b"\n");
            }
        },
        Piece::LongHead(_) => {
            // Nothing is written yet: the announced length may never arrive, and the output
            // must not claim bytes it has not got (it is never padded).
            stream.stats_mut().oversized_line();
            sink.boundary(Boundary::LongStart);
        }
        Piece::LongPart(part) => {
            stream.stats_mut().bytes += part.len() as u64;
            if output == Framing::OctetCounted {
                // Each part as a frame of its own length, as it arrives.
                sink.bytes(part.len().to_string().as_bytes());
                sink.bytes(b" ");
                stream.stats_mut().split_parts += 1;
            }
            sink.input(part, 0..part.len());
        }
        Piece::LongEnd { .. } => {
            if output == Framing::Lines {
                sink.bytes(b"\n");
            }
            sink.boundary(Boundary::LongEnd);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Config, RuleSet};

    const HIT: &str = r#"{"EventID":1,"Channel":"Microsoft-Windows-Sysmon/Operational","Image":"C:\\Windows\\System32\\cmd.exe","ParentImage":"C:\\Windows\\System32\\inetsrv\\w3wp.exe"}"#;

    fn tagger(max_line_bytes: usize) -> Tagger {
        let config = Config { max_line_bytes, ..Config::default() };
        Tagger::new(RuleSet::builtin().expect("built-in rules load"), config).expect("valid config")
    }

    /// Feeds `chunks`, ends with `end`; the output, what `end` said, the counters.
    fn run(tagger: &Tagger, settings: Settings, chunks: &[&[u8]], end: End) -> (Vec<u8>, Ended, Stats) {
        let mut driver = Driver::new(tagger, settings);
        let mut out = Vec::new();
        for chunk in chunks {
            driver.feed(chunk, &mut out);
        }
        let ended = driver.end(end, &mut out);
        (out, ended, driver.stats().clone())
    }

    fn lines(at_eof: AtEof, on_stop: OnStop) -> Settings {
        Settings { input: Framing::Lines, output: Framing::Lines, at_eof, on_stop }
    }

    #[test]
    fn at_the_end_of_input_a_last_line_comes_out_as_it_came_or_ended() {
        let t = tagger(1 << 20);
        let (out, ended, stats) = run(&t, lines(AtEof::AsItCame, OnStop::WholeRecords), &[b"a\nb"], End::Eof);
        assert_eq!(out, b"a\nb");
        assert_eq!(ended, Ended { dropped: 0, unterminated: true });
        assert_eq!((stats.lines, stats.unterminated), (2, 1));
        let (out, _, _) = run(&t, lines(AtEof::Terminated, OnStop::WholeRecords), &[b"a\nb"], End::Eof);
        assert_eq!(out, b"a\nb\n");
        let (out, ended, stats) = run(&t, lines(AtEof::Terminated, OnStop::WholeRecords), &[b"a\n"], End::Eof);
        assert_eq!(out, b"a\n", "nothing added after a whole line");
        assert_eq!((ended.unterminated, stats.unterminated), (false, 0));
    }

    #[test]
    fn the_last_line_is_tagged() {
        let t = tagger(1 << 20);
        let (out, _, stats) = run(&t, lines(AtEof::Terminated, OnStop::WholeRecords), &[HIT.as_bytes()], End::Eof);
        assert_eq!(stats.annotated, 1);
        assert!(out.ends_with(b"}\n") && out.len() > HIT.len() + 1);
    }

    #[test]
    fn a_stop_writes_whole_lines_only_or_everything() {
        let t = tagger(1 << 20);
        let (out, ended, _) = run(&t, lines(AtEof::AsItCame, OnStop::WholeRecords), &[b"a\nbcd"], End::Stop);
        assert_eq!(out, b"a\n");
        assert_eq!(ended, Ended { dropped: 3, unterminated: false });
        let (out, ended, _) = run(&t, lines(AtEof::Terminated, OnStop::Everything), &[b"a\nbcd"], End::Stop);
        assert_eq!(out, b"a\nbcd\n");
        assert_eq!(ended, Ended { dropped: 0, unterminated: true });
    }

    #[test]
    fn a_stop_inside_a_line_over_the_limit_ends_it_so_no_line_is_torn() {
        let t = tagger(4);
        for settings in [lines(AtEof::AsItCame, OnStop::WholeRecords), lines(AtEof::Terminated, OnStop::Everything)] {
            let (out, ended, stats) = run(&t, settings, &[b"ok\nabcdefgh"], End::Stop);
            assert_eq!(out, b"ok\nabcdefgh\n", "{settings:?}");
            assert!(ended.unterminated);
            assert_eq!(stats.not_inspected.oversized, 1);
        }
        // At the end of input, one input to its own output keeps it as it came.
        let (out, _, _) = run(&t, lines(AtEof::AsItCame, OnStop::WholeRecords), &[b"abcdefgh"], End::Eof);
        assert_eq!(out, b"abcdefgh");
    }

    #[test]
    fn a_closed_output_writes_nothing_more() {
        let t = tagger(1 << 20);
        let (out, ended, _) = run(&t, lines(AtEof::Terminated, OnStop::Everything), &[b"a\nbc"], End::Closed);
        assert_eq!(out, b"a\n");
        assert_eq!(ended, Ended { dropped: 2, unterminated: false });
    }

    #[test]
    fn octet_counted_records_are_tagged_whole_and_framed_for_the_output() {
        let t = tagger(1 << 20);
        let frame = format!("{} {HIT}", HIT.len());
        let input = format!("{frame}5 hello");
        for output in [Framing::Lines, Framing::OctetCounted] {
            let settings = Settings { input: Framing::OctetCounted, output, ..Settings::default() };
            let (out, _, stats) = run(&t, settings, &[input.as_bytes()], End::Eof);
            let text = String::from_utf8(out).expect("utf-8");
            assert_eq!((stats.frames, stats.annotated, stats.lines), (2, 1, 2));
            match output {
                Framing::Lines => assert!(text.ends_with("}\nhello\n"), "{text}"),
                Framing::OctetCounted => {
                    let (len, rest) = text.split_once(' ').expect("a header");
                    let len: usize = len.parse().expect("a length");
                    assert!(len > HIT.len());
                    assert_eq!(&rest[len..], "5 hello");
                }
            }
        }
    }

    #[test]
    fn an_octet_counted_frame_over_the_limit_is_passed_on_in_parts() {
        let t = tagger(4);
        let settings = Settings { input: Framing::OctetCounted, output: Framing::OctetCounted, ..Settings::default() };
        let (out, _, stats) = run(&t, settings, &[b"10 abcde", b"fghij3 abc"], End::Eof);
        assert_eq!(out, b"5 abcde5 fghij3 abc");
        assert_eq!((stats.split_parts, stats.not_inspected.oversized, stats.bytes), (2, 1, 13));
    }

    /// The sink sees where a record over the limit starts and ends.
    #[derive(Default)]
    struct Marks(Vec<u8>);

    impl Sink for Marks {
        fn input(&mut self, input: &[u8], range: std::ops::Range<usize>) {
            self.0.extend_from_slice(&input[range]);
        }
        fn bytes(&mut self, bytes: &[u8]) {
            self.0.extend_from_slice(bytes);
        }
        fn boundary(&mut self, b: Boundary) {
            self.0.extend_from_slice(if b == Boundary::LongStart { b"<" } else { b">" });
        }
    }

    #[test]
    fn a_record_over_the_limit_is_marked_in_either_framing() {
        let t = tagger(4);
        let mut driver = Driver::new(&t, lines(AtEof::AsItCame, OnStop::WholeRecords));
        let mut sink = Marks::default();
        for chunk in [&b"ok\nabc"[..], b"defg", b"h\nx\n"] {
            driver.feed(chunk, &mut sink);
        }
        assert_eq!(sink.0, b"ok\n<abcdefgh\n>x\n");
        let settings = Settings { input: Framing::OctetCounted, ..Settings::default() };
        let mut driver = Driver::new(&t, settings);
        let mut sink = Marks::default();
        driver.feed(b"8 abcdefgh2 ok", &mut sink);
        assert_eq!(sink.0, b"<abcdefgh\n>ok\n");
    }

    #[test]
    fn after_a_stop_request_reading_goes_on_only_to_finish_the_record() {
        let t = tagger(1 << 20);
        let mut driver = Driver::new(&t, Settings::default());
        let mut out = Vec::new();
        assert!(!driver.should_stop(0));
        driver.feed(b"a\nb", &mut out);
        assert!(!driver.should_stop(1), "a line is in progress");
        assert!(driver.should_stop(2), "a second request stops at once");
        let mut driver = Driver::new(&t, Settings::default());
        driver.feed(b"a\nb", &mut out);
        assert!(!driver.should_stop(1));
        driver.feed(b"c\n", &mut out);
        assert!(driver.should_stop(1), "the line is complete");
        let mut driver = Driver::new(&t, Settings::default());
        driver.feed(b"b", &mut out);
        assert!(!driver.should_stop(1));
        driver.feed(&vec![b'x'; STOP_GRACE_BYTES + 2], &mut out);
        assert!(driver.should_stop(1), "not for ever");
    }
}
