//! Where the record of a line starts — a JSON object, or a Windows XML event — at once,
//! after a byte-order mark, or after a syslog header (RFC 5424 or RFC 3164) that is kept
//! byte for byte.
//!
//! RFC 5424: `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID SD MSG`, where SD is `-` or
//! `[...]` elements whose quoted parameter values may hold `]`, `"` and `\` escaped. The
//! message may start with a byte-order mark. RFC 3164 (`<PRI>Mmm dd hh:mm:ss host tag:`)
//! has no fixed structure after the priority, so the object starts at the first `{`.

const BOM: &[u8] = b"\xEF\xBB\xBF";

fn skip_blanks(line: &[u8], mut i: usize) -> usize {
    while i < line.len() && matches!(line[i], b' ' | b'\t') {
        i += 1;
    }
    i
}

fn skip_bom(line: &[u8], i: usize) -> usize {
    if line[i..].starts_with(BOM) { i + BOM.len() } else { i }
}

/// What a line's record is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Payload {
    /// A JSON object.
    Json,
    /// Windows XML (`<Event …>`, possibly after an XML declaration).
    Xml,
}

/// Offset of the `{` that opens the line's JSON object, if the line looks like one.
pub fn json_start(line: &[u8]) -> Option<usize> {
    payload_start(line).and_then(|(i, p)| (p == Payload::Json).then_some(i))
}

/// Where the line's record starts and what it is, if it looks like one.
pub fn payload_start(line: &[u8]) -> Option<(usize, Payload)> {
    let i = skip_blanks(line, skip_bom(line, 0));
    match line.get(i)? {
        b'{' => Some((i, Payload::Json)),
        b'<' if is_xml_start(&line[i..]) => Some((i, Payload::Xml)),
        b'<' => syslog_payload(line, i),
        _ => None,
    }
}

/// Whether `text` starts a Windows XML event: `<Event` (then a blank, `>` or `/`) or an
/// XML declaration.
fn is_xml_start(text: &[u8]) -> bool {
    text.starts_with(b"<?xml")
        || (text.starts_with(b"<Event") && matches!(text.get(6), Some(b' ' | b'\t' | b'>' | b'/' | b'\r' | b'\n')))
}

/// After `<PRI>`, the start of a JSON or XML message.
fn syslog_payload(line: &[u8], lt: usize) -> Option<(usize, Payload)> {
    let digits = line[lt + 1..].iter().take(4).take_while(|b| b.is_ascii_digit()).count();
    if !(1..=3).contains(&digits) || line.get(lt + 1 + digits) != Some(&b'>') {
        return None;
    }
    let after_pri = lt + digits + 2;
    let rfc5424 = matches!(line.get(after_pri), Some(b'1'..=b'9'))
        && line.get(after_pri + 1).is_some_and(|b| *b == b' ' || b.is_ascii_digit());
    let start = if rfc5424 {
        rfc5424_message(line, after_pri)?
    } else {
        // RFC 3164 has no fixed structure: the first `{`, or the first XML event.
        let rest = &line[after_pri..];
        let brace = memchr::memchr(b'{', rest);
        let event = memchr::memmem::find_iter(rest, b"<").find(|&k| is_xml_start(&rest[k..]));
        after_pri + brace.into_iter().chain(event).min()?
    };
    match line.get(start)? {
        b'{' => Some((start, Payload::Json)),
        b'<' if is_xml_start(&line[start..]) => Some((start, Payload::Xml)),
        _ => None,
    }
}

/// Skips VERSION and five header fields, then the structured data.
fn rfc5424_message(line: &[u8], mut i: usize) -> Option<usize> {
    for _ in 0..6 {
        i += memchr::memchr(b' ', &line[i..])? + 1;
    }
    match line.get(i)? {
        b'-' => i += 1,
        b'[' => {
            while line.get(i) == Some(&b'[') {
                i = sd_element_end(line, i)?;
            }
        }
        _ => return None,
    }
    let i = skip_blanks(line, i);
    Some(skip_blanks(line, skip_bom(line, i)))
}

/// The index after the `]` closing the element opened at `open`.
fn sd_element_end(line: &[u8], open: usize) -> Option<usize> {
    let mut i = open + 1;
    let mut quoted = false;
    while i < line.len() {
        match line[i] {
            b'\\' if quoted => i += 1,
            b'"' => quoted = !quoted,
            b']' if !quoted => return Some(i + 1),
            _ => {}
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts() {
        let cases: &[(&[u8], Option<usize>)] = &[
            (b"{\"a\":1}", Some(0)),
            (b"  {}", Some(2)),
            (b"\xEF\xBB\xBF{}", Some(3)),
            (b"<Event xmlns=\"x\">", None),
            (b"plain text", None),
            (b"", None),
            (b"<13>1 2024-03-01T01:00:00Z web01 winlogbeat 42 - - {\"a\":1}", Some(51)),
            (b"<13>1 2024-03-01T01:00:00Z web01 app - ID47 [ex@1 a=\"x]{\\\"y\"][b@2] {\"a\":1}", Some(67)),
            (b"<13>1 - - - - - - \xEF\xBB\xBF{}", Some(21)),
            (b"<13>1 - - - - - - hello {}", None),
            (b"<34>Oct 11 22:14:15 mymachine su: {\"a\":1}", Some(34)),
            (b"<999>x {}", Some(7)),
            (b"<1000>x {}", None),
            (b"<a>x {}", None),
        ];
        for (line, want) in cases {
            assert_eq!(json_start(line), *want, "{}", String::from_utf8_lossy(line));
        }
    }

    #[test]
    fn xml_starts() {
        let cases: &[(&[u8], Option<usize>)] = &[
            (b"<Event xmlns='x'><System/></Event>", Some(0)),
            (b"<?xml version='1.0'?><Event/>", Some(0)),
            (b"<Events></Events>", None),
            (b"<13>1 2024-03-01T01:00:00Z web01 WEF - - - <Event xmlns='x'/>", Some(43)),
            (b"<13>Oct 11 22:14:15 web01 MSWinEventLog: <Event xmlns='x'/>", Some(41)),
            (b"<13>Oct 11 22:14:15 web01 x: <b>text</b>", None),
        ];
        for (line, want) in cases {
            let got = payload_start(line).and_then(|(i, p)| (p == Payload::Xml).then_some(i));
            assert_eq!(got, *want, "{}", String::from_utf8_lossy(line));
        }
    }
}
