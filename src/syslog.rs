//! Where the JSON object of a line starts: at once, after a byte-order mark, or after a
//! syslog header (RFC 5424 or RFC 3164) that is kept byte for byte.
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

/// Offset of the `{` that opens the line's JSON object, if the line looks like one.
pub fn json_start(line: &[u8]) -> Option<usize> {
    let i = skip_blanks(line, skip_bom(line, 0));
    match line.get(i)? {
        b'{' => Some(i),
        b'<' => syslog_payload(line, i),
        _ => None,
    }
}

/// After `<PRI>`, the start of a JSON message.
fn syslog_payload(line: &[u8], lt: usize) -> Option<usize> {
    let digits = line[lt + 1..].iter().take(4).take_while(|b| b.is_ascii_digit()).count();
    if !(1..=3).contains(&digits) || line.get(lt + 1 + digits) != Some(&b'>') {
        return None;
    }
    let after_pri = lt + digits + 2;
    let rfc5424 = matches!(line.get(after_pri), Some(b'1'..=b'9'))
        && line.get(after_pri + 1).is_some_and(|b| *b == b' ' || b.is_ascii_digit());
    let start =
        if rfc5424 { rfc5424_message(line, after_pri)? } else { after_pri + memchr::memchr(b'{', &line[after_pri..])? };
    (line.get(start) == Some(&b'{')).then_some(start)
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
}
