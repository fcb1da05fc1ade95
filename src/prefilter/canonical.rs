//! JSON escapes that could hide a literal from a byte scan, and the canonical scan form
//! of a line that has them.
//!
//! Literals are kept the way JSON writes their characters by default: `"` as `\"`, `\` as
//! `\\`, control characters as short escapes, everything else as itself. A line may spell
//! any character as `\uXXXX`, and `/` as `\/`; such a line is scanned in a canonical copy
//! where those escapes are decoded and re-escaped the default way.

use memchr::memmem;

/// Whether the backslash at `at` starts an escape: the run of backslashes ending there
/// has odd length (`\\u00` is an escaped backslash followed by `u00`).
fn is_escape(hay: &[u8], at: usize) -> bool {
    hay[..=at].iter().rev().take_while(|&&b| b == b'\\').count() % 2 == 1
}

/// The escape that can hide part of a literal. Literals hold only ASCII and no `/`, and no
/// non-ASCII character folds to ASCII, so only an escaped ASCII character can hide one:
/// `\u00XX`. (A fold that maps non-ASCII to ASCII, such as fullwidth forms, must add its
/// escapes here.)
pub const HIDING_ESCAPE: &[u8] = b"\\u00";

/// Byte ranks for the escape search: a substring search keys on the two rarest bytes of
/// its needle, and in event logs digits and backslashes are everywhere (`\\Users`), while
/// `u0` is rare.
struct LogRanker;

impl memchr::arch::all::packedpair::HeuristicFrequencyRank for LogRanker {
    fn rank(&self, byte: u8) -> u8 {
        match byte {
            b'0'..=b'9' | b'\\' => 255,
            b'u' => 1,
            _ => 128,
        }
    }
}

fn u00() -> &'static memmem::Finder<'static> {
    static FINDER: std::sync::OnceLock<memmem::Finder<'static>> = std::sync::OnceLock::new();
    FINDER.get_or_init(|| memmem::FinderBuilder::new().build_forward_with_ranker(LogRanker, &HIDING_ESCAPE[1..]))
}

/// Finds, in order, the hiding escapes of a text (raw or lower-cased: they agree on
/// backslashes), one pass over it.
pub struct EscapeScan<'h> {
    hay: &'h [u8],
    hits: memmem::FindIter<'h, 'static>,
    next: Option<usize>,
}

impl<'h> EscapeScan<'h> {
    /// A scan over `hay`.
    pub fn new(hay: &'h [u8]) -> EscapeScan<'h> {
        let mut scan = EscapeScan { hay, hits: u00().find_iter(hay), next: None };
        scan.next = scan.real_from(0);
        scan
    }

    /// The first hiding escape at or after `from`.
    pub fn next_at_or_after(&mut self, from: usize) -> Option<usize> {
        if self.next.is_some_and(|i| i < from) {
            self.next = self.real_from(from);
        }
        self.next
    }

    /// `u00` hits preceded by a backslash that starts an escape; the backslash's offset.
    fn real_from(&mut self, from: usize) -> Option<usize> {
        let hay = self.hay;
        self.hits
            .find(|&i| i > from.saturating_sub(1) && i >= 1 && is_escape(hay, i - 1))
            .map(|i| i - 1)
            .filter(|&b| b >= from)
    }
}

/// Writes the canonical scan form of a raw JSON line: ASCII lower-cased, `\/` decoded,
/// `\uXXXX` decoded (a lone surrogate becomes U+FFFD) and re-escaped the way literals are
/// ([`escape_literal`]): `"` as `\"`, `\` as `\\`, control characters as short escapes.
pub fn canonicalize(raw: &[u8], out: &mut Vec<u8>) {
    out.clear();
    out.reserve(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        if b != b'\\' || i + 1 >= raw.len() {
            out.push(b.to_ascii_lowercase());
            i += 1;
            continue;
        }
        match raw[i + 1] {
            b'/' => {
                out.push(b'/');
                i += 2;
            }
            b'u' => match decode_unicode_escape(&raw[i..]) {
                Some((c, used)) => {
                    let mut buf = [0u8; 4];
                    let mut lit = String::new();
                    escape_char(c.to_ascii_lowercase(), &mut lit, &mut buf);
                    out.extend_from_slice(lit.as_bytes());
                    i += used;
                }
                None => {
                    out.extend_from_slice(b"\\u");
                    i += 2;
                }
            },
            other => {
                out.push(b'\\');
                out.push(other.to_ascii_lowercase());
                i += 2;
            }
        }
    }
}

fn hex4(bytes: &[u8]) -> Option<u32> {
    let s = std::str::from_utf8(bytes.get(..4)?).ok()?;
    u32::from_str_radix(s, 16).ok().filter(|_| s.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Decodes `\uXXXX` (and a following low surrogate) at the start of `s`.
fn decode_unicode_escape(s: &[u8]) -> Option<(char, usize)> {
    let hi = hex4(&s[2..])?;
    if (0xD800..0xDC00).contains(&hi) {
        if s.get(6..8) == Some(b"\\u") {
            if let Some(lo) = hex4(&s[8..]).filter(|lo| (0xDC00..0xE000).contains(lo)) {
                let c = 0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00);
                return Some((char::from_u32(c)?, 12));
            }
        }
        return Some(('\u{FFFD}', 6));
    }
    Some((char::from_u32(hi).unwrap_or('\u{FFFD}'), 6))
}

fn escape_char(c: char, out: &mut String, buf: &mut [u8; 4]) {
    match c {
        '"' => out.push_str("\\\""),
        '\\' => out.push_str("\\\\"),
        '\u{8}' => out.push_str("\\b"),
        '\u{c}' => out.push_str("\\f"),
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
        c => out.push_str(c.encode_utf8(buf)),
    }
}

/// A fragment of text as it appears in JSON (the canonical escaping).
pub fn escape_literal(fragment: &str) -> String {
    let mut out = String::with_capacity(fragment.len() + 2);
    let mut buf = [0u8; 4];
    for c in fragment.chars() {
        escape_char(c, &mut out, &mut buf);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_form_decodes_hiding_escapes() {
        let mut out = Vec::new();
        canonicalize(br#"{"Image":"C:\\X\\\u0041ppCmd.exe","c":"a\/b","q":"\u0022\u005c\ud800x"}"#, &mut out);
        assert_eq!(String::from_utf8(out).expect("utf8"), r#"{"image":"c:\\x\\appcmd.exe","c":"a/b","q":"\"\\�x"}"#);
    }

    fn has_hiding_escape(line: &[u8]) -> bool {
        EscapeScan::new(line).next_at_or_after(0).is_some()
    }

    #[test]
    fn escape_parity() {
        assert!(!has_hiding_escape(br#"c:\\users\\u00x"#));
        assert!(has_hiding_escape(br#"c:\\\u0041"#));
        assert!(has_hiding_escape(br#"caf\u00e9"#));
        assert!(!has_hiding_escape(br#"x\/y \u20ac \ud83d\ude00"#), "no literal holds `/` or non-ASCII");
    }
}
