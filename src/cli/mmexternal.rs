//! `iis-tagger mmexternal`: rsyslog's external message-modification interface
//! (rsyslog `plugins/external/INTERFACE.md`), with `interface.input="fulljson"`.
//!
//! rsyslog writes one message per line, its whole message object as JSON; the plugin
//! writes exactly one line per message, in order: the properties to change, as JSON, or
//! `{}` for none. The record inspected is the message's `msg` property; a detection comes
//! back as `{"$!":{"iis_tagger":{...}}}`, so rsyslog templates and filters read it as
//! `$!iis_tagger`. Replies are flushed whenever no further message is waiting (rsyslog
//! waits for each reply). Nothing is read from the environment: rsyslog starts the child
//! with an empty one.

use std::borrow::Cow;
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::ops::Range;

use serde::Deserialize;

use iis_tagger::Sink;

use super::args::{MmexternalArgs, RuleArgs};
use super::common::{Failure, build_tagger};

/// The part of rsyslog's message object read here.
#[derive(Deserialize)]
struct Message<'a> {
    #[serde(borrow, default)]
    msg: Option<Cow<'a, str>>,
}

/// Output discarded: only the annotation is wanted.
struct Discard;

impl Sink for Discard {
    fn input(&mut self, _: &[u8], _: Range<usize>) {}
    fn bytes(&mut self, _: &[u8]) {}
}

/// Messages that could not be read (each got `{}`).
#[derive(Default)]
struct Unread {
    /// Not a JSON object with a string `msg`.
    invalid: u64,
    /// Longer than the line limit.
    oversized: u64,
}

/// Runs the plugin until stdin ends.
pub fn run(args: &MmexternalArgs, rules: &RuleArgs) -> Result<(), Failure> {
    let (tagger, skipped) = build_tagger(rules, args.core.config(true))?;
    // rsyslog's JSON escapes the message, so a record can grow up to 6x (`\u00XX`).
    let limit = args.core.max_line_bytes.saturating_mul(6).saturating_add(64 * 1024);
    let mut input = BufReader::with_capacity(256 * 1024, io::stdin().lock());
    let mut output = BufWriter::with_capacity(64 * 1024, io::stdout().lock());
    let mut stream = tagger.stream();
    let mut line = Vec::new();
    let mut reply = Vec::new();
    let mut unread = Unread::default();
    let mut messages = 0u64;
    loop {
        line.clear();
        let (ended, whole) = match read_line(&mut input, &mut line, limit) {
            Ok(r) => r,
            Err(e) => return Err(Failure::Io(format!("reading stdin: {e}"))),
        };
        if ended && line.is_empty() {
            break;
        }
        messages += 1;
        reply.clear();
        if whole {
            respond(&line, &mut stream, &mut reply, &mut unread);
        } else {
            unread.oversized += 1;
        }
        if reply.is_empty() {
            reply.extend_from_slice(b"{}");
        }
        reply.push(b'\n');
        let written =
            output.write_all(&reply).and_then(|()| if input.buffer().is_empty() { output.flush() } else { Ok(()) });
        match written {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(()),
            Err(e) => return Err(Failure::Io(format!("writing stdout: {e}"))),
        }
        if ended {
            break;
        }
    }
    let _ = output.flush();
    if args.summary.stats || args.summary.stats_format.is_some() {
        args.summary.print(stream.stats(), &tagger, &skipped);
        eprintln!(
            "mmexternal: {messages} messages, {} not a message object, {} over the limit",
            unread.invalid, unread.oversized
        );
    }
    Ok(())
}

/// The reply to one message, or nothing for `{}`.
fn respond(line: &[u8], stream: &mut iis_tagger::Stream<'_>, reply: &mut Vec<u8>, unread: &mut Unread) {
    let parsed = serde_json::from_slice::<Message<'_>>(line);
    // rsyslog passes invalid UTF-8 of a message through, and a sender may put a lone
    // surrogate escape in it: read such a message from a repaired copy rather than not at all.
    let repaired;
    let message = match parsed {
        Ok(m) => m,
        Err(_) => {
            let text = String::from_utf8_lossy(line);
            repaired = iis_tagger::repair::repair(text.as_bytes()).unwrap_or_else(|| text.as_bytes().to_vec());
            match serde_json::from_slice::<Message<'_>>(&repaired) {
                Ok(m) => m,
                Err(_) => {
                    unread.invalid += 1;
                    return;
                }
            }
        }
    };
    let Some(msg) = message.msg else {
        unread.invalid += 1;
        return;
    };
    if stream.record(msg.as_bytes(), &mut Discard) {
        if let Some(member) = stream.annotation() {
            reply.extend_from_slice(b"{\"$!\":{");
            reply.extend_from_slice(member);
            reply.extend_from_slice(b"}}");
        }
    }
}

/// Reads one line into `line` (without its `\n`), keeping at most `limit` bytes and
/// skipping the rest. Returns (input ended, the line is whole).
fn read_line(input: &mut impl BufRead, line: &mut Vec<u8>, limit: usize) -> io::Result<(bool, bool)> {
    let mut whole = true;
    loop {
        let buf = match input.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buf.is_empty() {
            return Ok((true, whole));
        }
        let (take, done) = match memchr::memchr(b'\n', buf) {
            Some(i) => (i, true),
            None => (buf.len(), false),
        };
        if whole && line.len() + take <= limit {
            line.extend_from_slice(&buf[..take]);
        } else {
            whole = false;
            line.clear();
            line.push(b'-');
        }
        input.consume(take + usize::from(done));
        if done {
            return Ok((false, whole));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_read_whole_or_marked() {
        let mut input = BufReader::with_capacity(4, &b"abc\ndefghij\n\nlast"[..]);
        let mut line = Vec::new();
        let mut got = Vec::new();
        loop {
            line.clear();
            let (ended, whole) = read_line(&mut input, &mut line, 5).expect("reads");
            if ended && line.is_empty() {
                break;
            }
            got.push((String::from_utf8_lossy(&line).into_owned(), whole));
            if ended {
                break;
            }
        }
        let want = [("abc", true), ("-", false), ("", true), ("last", true)];
        assert_eq!(got, want.map(|(l, w)| (l.to_string(), w)));
    }
}
