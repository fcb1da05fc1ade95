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
use std::io::{self, BufWriter, Read, Write};
use std::ops::Range;
use std::sync::Arc;

use serde::Deserialize;

use iis_tagger::tagger::{Framed, LineFramer};
use iis_tagger::{Sink, Stats};

use super::args::{MmexternalArgs, RuleArgs};
use super::common::Failure;
use super::live::{Live, Totals};

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

/// Messages that could not be read as a message object (each got `{}`); those over the
/// limit are counted with the core's counters ([`Stats::oversized_line`]).
#[derive(Default)]
struct Unread {
    /// Not a JSON object with a string `msg`.
    invalid: u64,
}

/// Bytes read from stdin at a time.
const READ_BYTES: usize = 256 * 1024;

/// Runs the plugin until stdin ends.
pub fn run(args: &MmexternalArgs, rules: &RuleArgs) -> Result<(), Failure> {
    // rsyslog gives the program one pipe for stdout and stderr: a message on stderr would
    // be read as a reply (see `notes`).
    match &args.log_file {
        Some(path) => super::notes::to_file(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| Failure::setup(format!("--log-file {}: {e}", path.display())))?,
        ),
        None if super::notes::stderr_is_stdout() => super::notes::nowhere(),
        None => {}
    }
    let (live, skipped) = Live::load(rules, args.core.config(true))?;
    let live = Arc::new(live);
    // rsyslog sends its external programs SIGHUP when it is itself HUPed: the rules are
    // reloaded, and the stream goes on.
    live.watch()?;
    let current = live.current();
    let mut seen = current.generation();
    let mut on = current.get();
    let mut totals = Totals::new(on.clone());
    // rsyslog's JSON escapes the message, so a record can grow up to 6x (`\u00XX`).
    let limit = args.core.max_line_bytes.saturating_mul(6).saturating_add(64 * 1024);
    // The driver's framer cuts stdin into messages, one per line, within the limit; a
    // message over it is not held, and gets `{}`.
    let mut framer = LineFramer::new(limit);
    let mut input = io::stdin().lock();
    let mut output = BufWriter::with_capacity(64 * 1024, io::stdout().lock());
    let mut replies = Replies { stream: on.stream(), out: Vec::new(), unread: Unread::default(), messages: 0 };
    let mut oversized = Stats::new(0);
    let mut buf = vec![0u8; READ_BYTES];
    loop {
        let n = match input.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Failure::io(format!("reading stdin: {e}"))),
        };
        // A reload: the messages of this read on are tagged by the new set (each message is
        // one record: the stream holds nothing between two).
        if let Some(next) = current.newer(&on, &mut seen) {
            let Replies { stream, out, unread, messages } = replies;
            let (parked, moved) = stream.park();
            totals.add(&moved, &on);
            on = next;
            replies = Replies { stream: parked.resume(&on), out, unread, messages };
        }
        replies.take(&mut framer, (n > 0).then(|| &buf[..n]), &mut oversized);
        // rsyslog waits for each reply: what this read completed is written now.
        let written = output.write_all(&replies.out).and_then(|()| output.flush());
        replies.out.clear();
        match written {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(()),
            Err(e) => return Err(Failure::io(format!("writing stdout: {e}"))),
        }
        if n == 0 {
            break;
        }
    }
    if args.summary.stats || args.summary.stats_format.is_some() {
        totals.add(replies.stream.stats(), &on);
        totals.stats.merge(&oversized);
        args.summary.print(&totals.stats, &on, &skipped, false, Some(live.current().status()));
        super::notes::say(&format!(
            "mmexternal: {} messages, {} not a message object, {} over the limit",
            replies.messages, replies.unread.invalid, oversized.not_inspected.oversized
        ));
    }
    Ok(())
}

/// The replies to the messages of one read.
struct Replies<'t> {
    stream: iis_tagger::Stream<'t>,
    out: Vec<u8>,
    unread: Unread,
    messages: u64,
}

impl Replies<'_> {
    /// The next bytes of stdin (`None`: its end): a reply for each message they complete.
    fn take(&mut self, framer: &mut LineFramer, input: Option<&[u8]>, oversized: &mut Stats) {
        let mut give = |piece: Framed<'_>| match piece {
            Framed::Lines { bytes, .. } => {
                let bytes = bytes.strip_suffix(b"\n").unwrap_or(bytes);
                bytes.split(|&b| b == b'\n').for_each(|message| self.message(Some(message)));
            }
            Framed::Oversized { .. } => {
                oversized.oversized_line();
                self.message(None);
            }
            Framed::Pass(_) | Framed::LongEnd => {}
        };
        match input {
            Some(input) => framer.feed(input, &mut give),
            None => framer.finish(&mut give),
        }
    }

    /// The reply to one message (`None`: over the limit): exactly one line.
    fn message(&mut self, line: Option<&[u8]>) {
        self.messages += 1;
        let start = self.out.len();
        if let Some(line) = line {
            respond(line, &mut self.stream, &mut self.out, &mut self.unread);
        }
        if self.out.len() == start {
            self.out.extend_from_slice(b"{}");
        }
        self.out.push(b'\n');
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The replies to stdin cut into `chunks`, with a limit of `limit` bytes per message.
    fn replies(limit: usize, chunks: &[&[u8]]) -> (String, u64) {
        let tagger = iis_tagger::Tagger::new(iis_tagger::RuleSet::builtin().expect("rules"), Default::default())
            .expect("tagger");
        let mut framer = LineFramer::new(limit);
        let mut replies = Replies { stream: tagger.stream(), out: Vec::new(), unread: Unread::default(), messages: 0 };
        let mut oversized = Stats::new(0);
        for chunk in chunks {
            replies.take(&mut framer, Some(chunk), &mut oversized);
        }
        replies.take(&mut framer, None, &mut oversized);
        (String::from_utf8(replies.out).expect("utf-8"), oversized.not_inspected.oversized)
    }

    #[test]
    fn every_message_gets_one_reply_line_in_order() {
        let hit = r#"{"msg":"{\"EventID\":1,\"Channel\":\"Microsoft-Windows-Sysmon/Operational\",\"Image\":\"C:\\\\Windows\\\\System32\\\\cmd.exe\",\"ParentImage\":\"C:\\\\Windows\\\\System32\\\\inetsrv\\\\w3wp.exe\"}"}"#;
        let input = format!("{{\"msg\":\"hello\"}}\n{hit}\n\nnot json\n{{\"msg\":\"x\"}}");
        // Cut anywhere, the replies are the same.
        let whole = replies(1 << 20, &[input.as_bytes()]);
        for cut in [1, 7, 50] {
            let chunks: Vec<&[u8]> = input.as_bytes().chunks(cut).collect();
            assert_eq!(replies(1 << 20, &chunks), whole, "cut {cut}");
        }
        let lines: Vec<&str> = whole.0.lines().collect();
        assert_eq!(lines.len(), 5, "{}", whole.0);
        assert!(lines[1].starts_with(r#"{"$!":{"iis_tagger":"#), "{}", lines[1]);
        assert!(lines[1].contains("webshell_child_process"));
        assert_eq!([lines[0], lines[2], lines[3], lines[4]], ["{}"; 4]);
    }

    #[test]
    fn a_message_over_the_limit_gets_an_empty_reply_and_is_counted() {
        let (out, oversized) = replies(8, &[b"{\"msg\":", b"\"much too long\"}\nabc\n"]);
        assert_eq!(out, "{}\n{}\n");
        assert_eq!(oversized, 1);
    }
}
