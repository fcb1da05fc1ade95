//! RFC 6587 octet counting: records sent as `MSG-LEN SP MSG`, as rsyslog's `omfwd`
//! (`TCP_Framing="octet-counted"`) and syslog-ng's `syslog()` driver send them, cut
//! across reads anywhere.
//!
//! [`OctetCounted`] turns the bytes of one connection into [`Piece`]s, in order, with no
//! byte lost: a frame's body is a record; bytes that do not start a valid frame are read
//! up to the next `\n` as one record outside the framing (as rsyslog falls back to
//! newline framing); a frame longer than the limit is passed on in parts as it arrives,
//! never held whole. At most `max_record_bytes` plus a header are held.

/// A header is at most ten digits (a length below 10^10) and a space.
const MAX_HEADER: usize = 11;

/// What the decoder found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Piece<'a> {
    /// A whole record: the body of a frame, or a line outside the framing (without its
    /// `\n`).
    Record(&'a [u8]),
    /// A frame whose body (of this many bytes) is over the limit; its body follows in
    /// `LongPart`s, then `LongEnd`.
    LongHead(u64),
    /// The next bytes of the long frame's body.
    LongPart(&'a [u8]),
    /// The long frame is over; `missing` bytes of its body never came (the input ended).
    LongEnd {
        /// Bytes of the announced length that did not arrive.
        missing: u64,
    },
}

/// What the decoder counted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FrameStats {
    /// Frames (long ones included).
    pub frames: u64,
    /// Frames over the limit, passed on in parts.
    pub long_frames: u64,
    /// Records outside the framing (bytes that did not start a valid frame, up to `\n`).
    pub unframed: u64,
    /// Records the input ended in the middle of.
    pub truncated: u64,
}

/// One step of decoding, over the bytes at hand.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    /// A frame: `header` bytes of `MSG-LEN SP`, then `len` bytes, all at hand.
    Frame { header: usize, len: usize },
    /// A frame over the limit: its header is at hand.
    Long { header: usize, len: u64 },
    /// A record outside the framing: `len` bytes, then `skip` more (its `\n`, if any).
    Unframed { len: usize, skip: usize },
    /// More bytes are needed: at least `n`, or, with `line`, up to a `\n`.
    Need { n: usize, line: bool },
}

/// Decodes octet-counted frames (see the module documentation).
#[derive(Debug)]
pub struct OctetCounted {
    max: usize,
    /// The start of an item whose end has not arrived.
    held: Vec<u8>,
    /// Body bytes still to come of a long frame.
    long_left: u64,
    stats: FrameStats,
}

impl OctetCounted {
    /// A decoder holding at most `max_record_bytes` of a record (at least 1).
    pub fn new(max_record_bytes: usize) -> OctetCounted {
        OctetCounted { max: max_record_bytes.max(1), held: Vec::new(), long_left: 0, stats: FrameStats::default() }
    }

    /// The counters so far.
    pub fn stats(&self) -> &FrameStats {
        &self.stats
    }

    /// The counters since the start or the last call, zeroing them.
    pub fn take_stats(&mut self) -> FrameStats {
        std::mem::take(&mut self.stats)
    }

    /// True while the bytes given so far end inside a record.
    pub fn has_partial(&self) -> bool {
        !self.held.is_empty() || self.long_left > 0
    }

    /// True while a long frame is being passed on: the pieces given so far end inside it.
    pub fn in_long(&self) -> bool {
        self.long_left > 0
    }

    /// Bytes held of an unfinished record.
    pub fn held_bytes(&self) -> usize {
        self.held.len()
    }

    /// Forgets the unfinished record held, unwritten, and a long frame being passed on (a
    /// stop that writes whole records only, or an output gone); returns the bytes held.
    pub fn discard(&mut self) -> usize {
        let n = self.held.len();
        self.held.clear();
        self.long_left = 0;
        n
    }

    /// Takes the next bytes; gives `f` every piece they complete.
    pub fn feed(&mut self, mut input: &[u8], f: &mut impl FnMut(Piece<'_>)) {
        loop {
            if self.long_left > 0 {
                input = self.long_body(input, f);
            }
            if input.is_empty() {
                return;
            }
            if !self.held.is_empty() {
                input = self.complete_held(input, f);
                if !self.held.is_empty() || self.long_left > 0 {
                    continue;
                }
            }
            // Nothing held: decode straight from the input.
            let mut at = 0;
            while at < input.len() {
                match self.step(&input[at..]) {
                    Step::Need { .. } => {
                        self.held.extend_from_slice(&input[at..]);
                        return;
                    }
                    Step::Long { header, len } => {
                        self.start_long(len, f);
                        at += header;
                        break;
                    }
                    step => at += self.emit(&input[at..], step, f),
                }
            }
            input = &input[at..];
            if input.is_empty() {
                return;
            }
        }
    }

    /// Ends the input: a record cut short is given as it is (counted as truncated).
    pub fn finish(&mut self, f: &mut impl FnMut(Piece<'_>)) {
        if self.long_left > 0 {
            let missing = std::mem::take(&mut self.long_left);
            self.stats.truncated += 1;
            f(Piece::LongEnd { missing });
        }
        if self.held.is_empty() {
            return;
        }
        let held = std::mem::take(&mut self.held);
        match header(&held) {
            Some(Ok((header, _))) => {
                self.stats.frames += 1;
                self.stats.truncated += 1;
                f(Piece::Record(&held[header..]));
            }
            _ => {
                self.stats.unframed += 1;
                self.stats.truncated += 1;
                let body = held.strip_suffix(b"\r").unwrap_or(&held);
                if !body.is_empty() {
                    f(Piece::Record(body));
                }
            }
        }
    }

    /// Passes on body bytes of the long frame; returns the rest of the input.
    fn long_body<'i>(&mut self, input: &'i [u8], f: &mut impl FnMut(Piece<'_>)) -> &'i [u8] {
        let take = usize::try_from(self.long_left).map_or(input.len(), |left| left.min(input.len()));
        if take > 0 {
            f(Piece::LongPart(&input[..take]));
        }
        self.long_left -= take as u64;
        if self.long_left == 0 {
            f(Piece::LongEnd { missing: 0 });
        }
        &input[take..]
    }

    fn start_long(&mut self, len: u64, f: &mut impl FnMut(Piece<'_>)) {
        self.stats.frames += 1;
        self.stats.long_frames += 1;
        self.long_left = len;
        f(Piece::LongHead(len));
    }

    /// Adds to the held item just the bytes it needs, and gives it once it is whole;
    /// returns the rest of the input. Returns with `held` empty, or with the input used up.
    fn complete_held<'i>(&mut self, mut input: &'i [u8], f: &mut impl FnMut(Piece<'_>)) -> &'i [u8] {
        while !self.held.is_empty() {
            let take = match self.step(&self.held) {
                Step::Need { .. } if input.is_empty() => return input,
                Step::Need { n, line: false } => n.min(input.len()),
                Step::Need { line: true, .. } => {
                    // Up to the `\n`, which may come right after `max` bytes of line.
                    let room = (self.max + 1).saturating_sub(self.held.len()).max(1);
                    memchr::memchr(b'\n', input).map_or(input.len(), |i| i + 1).min(room)
                }
                Step::Long { header, len } => {
                    let body = self.held.split_off(header);
                    self.held.clear();
                    self.start_long(len, f);
                    return self.long_body_held(&body, input, f);
                }
                step => {
                    let mut held = std::mem::take(&mut self.held);
                    let used = self.emit(&held, step, f);
                    held.drain(..used);
                    self.held = held;
                    continue;
                }
            };
            self.held.extend_from_slice(&input[..take]);
            input = &input[take..];
        }
        input
    }

    /// The body bytes of a long frame that were held with its header, then the input.
    fn long_body_held<'i>(&mut self, body: &[u8], input: &'i [u8], f: &mut impl FnMut(Piece<'_>)) -> &'i [u8] {
        let rest = self.long_body(body, f);
        debug_assert!(rest.is_empty(), "a long frame's held body is within its length");
        if self.long_left > 0 { self.long_body(input, f) } else { input }
    }

    /// Gives the piece of a complete step at the start of `data`; returns the bytes used.
    fn emit(&mut self, data: &[u8], step: Step, f: &mut impl FnMut(Piece<'_>)) -> usize {
        match step {
            Step::Frame { header, len } => {
                self.stats.frames += 1;
                f(Piece::Record(&data[header..header + len]));
                header + len
            }
            Step::Unframed { len, skip } => {
                let body = &data[..len];
                let body = if skip > 0 { body.strip_suffix(b"\r").unwrap_or(body) } else { body };
                // A stray line end between frames is not a record.
                if !body.is_empty() {
                    self.stats.unframed += 1;
                    f(Piece::Record(body));
                }
                len + skip
            }
            Step::Long { .. } | Step::Need { .. } => unreachable!("not a complete step"),
        }
    }

    /// What the bytes at the start of `data` are.
    fn step(&self, data: &[u8]) -> Step {
        match header(data) {
            None => Step::Need { n: 1, line: false },
            Some(Ok((header, len))) => match usize::try_from(len) {
                Ok(len) if len <= self.max => {
                    let have = data.len() - header;
                    if have >= len { Step::Frame { header, len } } else { Step::Need { n: len - have, line: false } }
                }
                _ => Step::Long { header, len },
            },
            Some(Err(())) => match memchr::memchr(b'\n', data) {
                Some(i) if i <= self.max => Step::Unframed { len: i, skip: 1 },
                // Cut only when the byte after the limit is known not to be the `\n`.
                _ if data.len() > self.max => Step::Unframed { len: self.max, skip: 0 },
                _ => Step::Need { n: 1, line: true },
            },
        }
    }
}

/// Parses `MSG-LEN SP` at the start of `data`: `None` if more bytes could still make it
/// one, `Err` if it is not one, else the header's length and MSG-LEN.
fn header(data: &[u8]) -> Option<Result<(usize, u64), ()>> {
    let digits = data.iter().take(MAX_HEADER).take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 {
        return if data.is_empty() { None } else { Some(Err(())) };
    }
    // NONZERO-DIGIT *DIGIT (RFC 6587 §3.4.1): no leading zero, so no zero length.
    if data[0] == b'0' || digits == MAX_HEADER {
        return Some(Err(()));
    }
    match data.get(digits) {
        None => None,
        Some(b' ') => {
            let len = data[..digits].iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
            Some(Ok((digits + 1, len)))
        }
        Some(_) => Some(Err(())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `input` cut into pieces of `step` bytes; pieces rendered as strings.
    fn decode(input: &[u8], max: usize, step: usize) -> (Vec<String>, FrameStats) {
        let mut d = OctetCounted::new(max);
        let mut got = Vec::new();
        let mut f = |p: Piece<'_>| {
            got.push(match p {
                Piece::Record(r) => format!("R:{}", String::from_utf8_lossy(r)),
                Piece::LongHead(n) => format!("H:{n}"),
                Piece::LongPart(b) => format!("P:{}", String::from_utf8_lossy(b)),
                Piece::LongEnd { missing } => format!("E:{missing}"),
            })
        };
        for chunk in input.chunks(step.max(1)) {
            d.feed(chunk, &mut f);
        }
        d.finish(&mut f);
        let stats = d.stats().clone();
        (merge_parts(got), stats)
    }

    /// Joins consecutive long parts, which depend on the cutting.
    fn merge_parts(pieces: Vec<String>) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for p in pieces {
            match (out.last_mut(), p.strip_prefix("P:")) {
                (Some(last), Some(rest)) if last.starts_with("P:") => last.push_str(rest),
                _ => out.push(p),
            }
        }
        out
    }

    fn every_cut(input: &[u8], max: usize) -> Vec<String> {
        let (whole, _) = decode(input, max, input.len());
        for step in 1..=input.len() {
            assert_eq!(decode(input, max, step).0, whole, "cut every {step} bytes");
        }
        whole
    }

    #[test]
    fn frames_across_any_cut() {
        let got = every_cut(b"5 hello3 abc11 {\"a\":\"b c\"}", 64);
        assert_eq!(got, ["R:hello", "R:abc", "R:{\"a\":\"b c\"}"]);
    }

    #[test]
    fn bodies_may_hold_newlines_and_frame_like_bytes() {
        let got = every_cut(b"7 a\nb\n3 x4 5 5 ", 64);
        assert_eq!(got, ["R:a\nb\n3 x", "R:5 5 "]);
    }

    #[test]
    fn long_frames_pass_in_parts() {
        let got = every_cut(b"10 01234567892 ok", 4);
        assert_eq!(got, ["H:10", "P:0123456789", "E:0", "R:ok"]);
        let (_, stats) = decode(b"10 01234567892 ok", 4, 3);
        assert_eq!(stats, FrameStats { frames: 2, long_frames: 1, unframed: 0, truncated: 0 });
    }

    #[test]
    fn bytes_outside_the_framing_are_lines() {
        let got = every_cut(b"<13>hello\n5 world\n\r\n0 zero\n12x3\n2 ok", 64);
        assert_eq!(got, ["R:<13>hello", "R:world", "R:0 zero", "R:12x3", "R:ok"]);
        let (_, stats) = decode(b"<13>hello\n5 world\n\r\n0 zero\n12x3\n2 ok", 64, 5);
        assert_eq!(stats.unframed, 3);
        assert_eq!(stats.frames, 2);
    }

    #[test]
    fn a_line_outside_the_framing_is_cut_at_the_limit() {
        let got = every_cut(b"abcdefghij\n2 ok", 4);
        assert_eq!(got, ["R:abcd", "R:efgh", "R:ij", "R:ok"]);
    }

    #[test]
    fn a_line_of_exactly_the_limit_ending_in_cr_lf() {
        // Found by the fuzz target: `\r\n` right after the limit, cut between reads.
        let got = every_cut(b"abc\r\n2 ok", 4);
        assert_eq!(got, ["R:abc", "R:ok"]);
        let got = every_cut(b"abcd\r\n2 ok", 4);
        assert_eq!(got, ["R:abcd", "R:ok"]);
    }

    #[test]
    fn eleven_digits_are_not_a_length() {
        let got = every_cut(b"12345678901 x\n1 y", 64);
        assert_eq!(got, ["R:12345678901 x", "R:y"]);
        // Ten digits are, and such a frame is long.
        let (got, _) = decode(b"1234567890 abc", 64, 3);
        assert_eq!(got, ["H:1234567890", "P:abc", "E:1234567887"]);
    }

    #[test]
    fn input_ending_inside_a_record() {
        let (got, stats) = decode(b"5 hel", 64, 2);
        assert_eq!(got, ["R:hel"]);
        assert_eq!(stats.truncated, 1);
        let (got, _) = decode(b"2 ok12", 64, 1);
        assert_eq!(got, ["R:ok", "R:12"]);
        let (got, _) = decode(b"2 ok3", 64, 1);
        assert_eq!(got, ["R:ok", "R:3"]);
        let (got, stats) = decode(b"2 okplain", 64, 4);
        assert_eq!(got, ["R:ok", "R:plain"]);
        assert_eq!((stats.unframed, stats.truncated), (1, 1));
    }

    #[test]
    fn held_bytes_stay_within_the_limit() {
        let mut d = OctetCounted::new(16);
        let mut n = 0;
        let mut f = |_: Piece<'_>| n += 1;
        for _ in 0..1000 {
            d.feed(b"x", &mut f);
            assert!(d.held_bytes() <= 16 + MAX_HEADER);
        }
        d.feed(b"99999 ", &mut f);
        for _ in 0..1000 {
            d.feed(b"yyyyyyyyyy", &mut f);
            assert!(d.held_bytes() <= 16 + MAX_HEADER);
        }
        assert!(n > 60);
    }
}
