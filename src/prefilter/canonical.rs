//! JSON escapes that could hide a literal from a byte scan, and the canonical scan form
//! of a line that has them.
//!
//! Literals are kept the way JSON writes their characters by default: `"` as `\"`, `\` as
//! `\\`, control characters as short escapes, everything else as itself. A line may spell
//! any character as `\uXXXX`, and `/` as `\/`; such a line is scanned in a canonical copy
//! where those escapes are decoded and re-escaped the default way.

use memchr::memmem;

use crate::normalize::fold_into;
use crate::normalize::folds_to_ascii;

/// Whether the backslash at `at` starts an escape: the run of backslashes ending there
/// has odd length (`\\u00` is an escaped backslash followed by `u00`).
fn is_escape(hay: &[u8], at: usize) -> bool {
    hay[..=at].iter().rev().take_while(|&&b| b == b'\\').count() % 2 == 1
}

/// Whether a character, written raw or as an escape, can turn into literal text once
/// values are decoded and folded: an ASCII character written as `\uXXXX`, or a non-ASCII
/// character whose fold holds ASCII (fullwidth forms, ligatures, the Kelvin sign, ...).
/// Literals hold only ASCII and no `/`, so a `\/` escape hides nothing.
fn hides(c: char) -> bool {
    c.is_ascii() || folds_to_ascii(c)
}

/// The lower-cased copy of a text the trigger scan reads, and which of its 64-byte blocks
/// hold a byte above ASCII (one bit each), made in one pass.
#[derive(Debug, Default)]
pub struct ScanText {
    /// The text, ASCII-lower-cased.
    pub lower: Vec<u8>,
    high_blocks: Vec<u64>,
    /// Its deleted text, when the prefilter reads one (see [`super::Prefilter`]).
    pub deleted: Vec<u8>,
    /// Starts of the lines whose deleted text holds a trigger.
    pub deleted_lines: Vec<usize>,
}

impl ScanText {
    /// Bytes of capacity held.
    pub fn capacity_bytes(&self) -> usize {
        crate::scratch::total(&[&self.lower, &self.high_blocks, &self.deleted, &self.deleted_lines])
    }

    /// Gives back capacity above `keep` bytes a buffer.
    pub fn release(&mut self, keep: usize) {
        use crate::scratch::Release;
        self.lower.release(keep);
        self.high_blocks.release(keep);
        self.deleted.release(keep);
        self.deleted_lines.release(keep);
    }

    /// Fills the copy and the block marks for `text`: the lower-casing and the marking are
    /// separate passes (each is simple enough for the compiler to vectorize; fused, neither
    /// was, measured slower). The blocks are taken as arrays of a known length, so that the
    /// OR of 64 bytes (whose sign bit says whether one is above ASCII) is a few vector ORs.
    pub fn fill(&mut self, text: &[u8]) {
        self.lower.clear();
        self.lower.extend(text.iter().map(u8::to_ascii_lowercase));
        self.high_blocks.clear();
        self.high_blocks.resize(text.len().div_ceil(64 * 64), 0);
        let mut blocks = text.chunks_exact(64);
        for (i, block) in blocks.by_ref().enumerate() {
            let block: &[u8; 64] = block.try_into().expect("64 bytes");
            if block.iter().fold(0u8, |acc, &b| acc | b) & 0x80 != 0 {
                self.high_blocks[i / 64] |= 1 << (i % 64);
            }
        }
        if blocks.remainder().iter().any(|&b| b >= 0x80) {
            let i = text.len() / 64;
            self.high_blocks[i / 64] |= 1 << (i % 64);
        }
    }

    /// The first 64-byte block at or after block `from` holding a high byte.
    fn next_high_block(&self, from: usize) -> Option<usize> {
        let mut word = from / 64;
        let mut bits = self.high_blocks.get(word)? & (u64::MAX << (from % 64));
        loop {
            if bits != 0 {
                return Some(word * 64 + bits.trailing_zeros() as usize);
            }
            word += 1;
            bits = *self.high_blocks.get(word)?;
        }
    }
}

/// Finds, in order, what can hide a literal from a byte scan of a text: `\uXXXX` escapes of
/// characters that [`hides`] (not themselves escaped backslashes: `\\u` is a backslash and
/// a `u`), and raw non-ASCII characters that fold to ASCII. (XML markup hides literals too,
/// but only in an XML line: the stream checks those one by one, [`xml_markup`], since a
/// JSON stream has none and should not pay a pass for them.)
pub struct HidingScan<'h> {
    hay: &'h [u8],
    text: &'h ScanText,
    escapes: memmem::FindIter<'h, 'static>,
    next_escape: Option<usize>,
    /// Where the search for folding characters resumes.
    fold_from: usize,
    next_fold: Option<usize>,
}

impl<'h> HidingScan<'h> {
    /// A scan over `hay`, whose [`ScanText`] is `text`.
    pub fn new(hay: &'h [u8], text: &'h ScanText) -> HidingScan<'h> {
        let mut scan = HidingScan {
            hay,
            text,
            escapes: memmem::find_iter(hay, b"\\u"),
            next_escape: None,
            fold_from: 0,
            next_fold: None,
        };
        scan.next_escape = scan.escape_from(0);
        scan.next_fold = scan.fold_at_or_after(0);
        scan
    }

    /// The first place at or after `from` where a literal could hide.
    pub fn next_at_or_after(&mut self, from: usize) -> Option<usize> {
        if self.next_escape.is_some_and(|i| i < from) {
            self.next_escape = self.escape_from(from);
        }
        if self.next_fold.is_some_and(|i| i < from) {
            self.next_fold = self.fold_at_or_after(from);
        }
        self.next_escape.into_iter().chain(self.next_fold).min()
    }

    fn escape_from(&mut self, from: usize) -> Option<usize> {
        let hay = self.hay;
        self.escapes.find(|&i| {
            i >= from && is_escape(hay, i) && decode_unicode_escape(&hay[i..]).is_some_and(|(c, _)| hides(c))
        })
    }

    /// The next raw character at or after `from` that folds to ASCII: only the 64-byte
    /// blocks [`ScanText`] marked are looked at, and in them only possible lead bytes.
    fn fold_at_or_after(&mut self, from: usize) -> Option<usize> {
        let hay = self.hay;
        let mut at = from.max(self.fold_from);
        while let Some(block) = self.text.next_high_block(at / 64) {
            let start = (block * 64).max(at);
            let end = ((block + 1) * 64).min(hay.len());
            if let Some(k) = fold_in(hay, start, end) {
                self.fold_from = k + 1;
                return Some(k);
            }
            at = (block + 1) * 64;
        }
        self.fold_from = hay.len();
        None
    }
}

/// Whether an XML event's text holds markup whose text is not its bytes, so that a literal
/// could hide in it from a byte scan: a character reference (`&#`), a CDATA section or a
/// comment (`<!`), a processing instruction or declaration (`<?`). Such a line is scanned
/// on its canonical copy ([`canonicalize_xml`]). Found by the second byte: `&quot;` and
/// `&amp;` are common in command lines, `#`, `!` and `?` rare.
pub fn xml_markup(xml: &[u8]) -> bool {
    memchr::memchr3_iter(b'#', b'!', b'?', xml).any(|i| i > 0 && xml[i - 1] == if xml[i] == b'#' { b'&' } else { b'<' })
}

/// Lead bytes of the UTF-8 encodings of the characters that fold to ASCII (derived from
/// the fold table when first used).
fn fold_leads() -> &'static [bool; 256] {
    static LEADS: std::sync::OnceLock<[bool; 256]> = std::sync::OnceLock::new();
    LEADS.get_or_init(|| {
        let mut leads = [false; 256];
        for &(lo, hi) in crate::normalize::unicode::ascii_folding_ranges() {
            for cp in lo..=hi {
                if let Some(c) = char::from_u32(cp) {
                    leads[usize::from(c.encode_utf8(&mut [0u8; 4]).as_bytes()[0])] = true;
                }
            }
        }
        leads
    })
}

/// The first character in `hay[from..to]` that folds to ASCII: high bytes are found eight
/// at a time, and only possible lead bytes are decoded.
fn fold_in(hay: &[u8], from: usize, to: usize) -> Option<usize> {
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let leads = fold_leads();
    let mut w = from;
    while w < to {
        let word_end = (w + 8).min(to);
        let mut bytes = [0u8; 8];
        bytes[..word_end - w].copy_from_slice(&hay[w..word_end]);
        let mut high = u64::from_le_bytes(bytes) & HIGH;
        while high != 0 {
            let k = w + (high.trailing_zeros() / 8) as usize;
            if leads[usize::from(hay[k])] && folds_at(&hay[k..]) {
                return Some(k);
            }
            high &= high - 1;
        }
        w = word_end;
    }
    None
}

/// Whether the character starting `bytes` (a UTF-8 lead byte) folds to ASCII. Two-byte
/// characters (U+0080–U+07FF, such as the `®` of every Sysmon process record) are looked up
/// in a bitmap; longer ones are decoded.
fn folds_at(bytes: &[u8]) -> bool {
    static TWO_BYTE: std::sync::OnceLock<[u64; 32]> = std::sync::OnceLock::new();
    if let [lead @ 0xC2..=0xDF, cont @ 0x80..=0xBF, ..] = bytes {
        let cp = (usize::from(lead & 0x1F) << 6) | usize::from(cont & 0x3F);
        let bits = TWO_BYTE.get_or_init(|| {
            let mut bits = [0u64; 32];
            for cp in 0x80..0x800u32 {
                if char::from_u32(cp).is_some_and(folds_to_ascii) {
                    bits[(cp / 64) as usize] |= 1 << (cp % 64);
                }
            }
            bits
        });
        return bits[cp / 64] & (1 << (cp % 64)) != 0;
    }
    utf8_char(bytes).is_some_and(folds_to_ascii)
}

/// The character whose UTF-8 encoding starts `bytes`, if valid.
fn utf8_char(bytes: &[u8]) -> Option<char> {
    let len = match bytes.first()? {
        0xC0..=0xDF => 2,
        0xE0..=0xEF => 3,
        0xF0..=0xF7 => 4,
        _ => return None,
    };
    std::str::from_utf8(bytes.get(..len)?).ok()?.chars().next()
}

/// Writes the canonical scan form of a raw JSON line: `\/` and `\uXXXX` decoded (a lone
/// surrogate becomes U+FFFD), every character folded the way values are
/// ([`fold_into`]), and re-escaped the way literals are ([`escape_literal`]): `"` as
/// `\"`, `\` as `\\`, control characters as short escapes.
pub fn canonicalize(raw: &[u8], out: &mut Vec<u8>) {
    out.clear();
    out.reserve(raw.len());
    let mut folded = String::new();
    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        if b >= 0x80 {
            // A run of non-ASCII characters, folded at once.
            let run = raw[i..].iter().position(|&b| b < 0x80).unwrap_or(raw.len() - i);
            push_folded_run(&raw[i..i + run], &mut folded, out);
            i += run;
            continue;
        }
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
                    folded.clear();
                    fold_into(c.encode_utf8(&mut [0; 4]), &mut folded);
                    escape_into(&folded, out);
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

/// The fold of a run of bytes above ASCII, escaped; bytes that are not UTF-8 are kept.
fn push_folded_run(run: &[u8], folded: &mut String, out: &mut Vec<u8>) {
    for chunk in run.utf8_chunks() {
        folded.clear();
        fold_into(chunk.valid(), folded);
        escape_into(folded, out);
        out.extend_from_slice(chunk.invalid());
    }
}

/// `text` escaped the way literals are ([`escape_literal`]).
fn escape_into(text: &str, out: &mut Vec<u8>) {
    let mut rest = text.as_bytes();
    while let Some(k) = rest.iter().position(|&b| b == b'"' || b == b'\\' || b < 0x20) {
        out.extend_from_slice(&rest[..k]);
        let mut escaped = String::new();
        escape_char(char::from(rest[k]), &mut escaped, &mut [0; 4]);
        out.extend_from_slice(escaped.as_bytes());
        rest = &rest[k + 1..];
    }
    out.extend_from_slice(rest);
}

/// What a lower-cased (or canonical) JSON line holds when its bytes may hide a literal
/// behind a second layer of escaping, so that it is inspected with every rule: a string
/// member holding a whole event, which must start the string (see
/// [`crate::event::EventView`]): Windows XML (`"<event`, which `"<eventdata` starts with
/// too, or `"<?xml`), or a JSON object written compactly or pretty-printed (`"{` and then
/// an escaped quote, or a newline);
/// or Wazuh's `data.win` (whose values have their backslashes doubled). Each is at least
/// four bytes long, as the rules' anchors are, so that the trigger scan keeps its
/// four-byte fingerprints.
pub const INSPECT_MARKERS: &[&str] = &["\"<event", "\"<?xml", "\"{\\\"", "\"{\\n", "\"data\":{\"win\":"];

/// What every Windows XML event line holds (`<event`, lower-cased). It is a mark of the
/// trigger scan only when some literal has no XML form ([`super::Prefilter::may_match_xml`]).
pub const XML_LINE_MARKER: &str = "<event";

/// Whether `text` (a lower-cased or canonical JSON line) holds an [`INSPECT_MARKERS`] mark.
/// One pass: every mark holds a `<` or a `{`, rare in a JSON line but for its braces, and
/// each of those is checked against the marks that could hold it there.
pub fn needs_every_rule(text: &[u8]) -> bool {
    memchr::memchr2_iter(b'<', b'{', text).any(|i| {
        INSPECT_MARKERS.iter().any(|m| {
            let m = m.as_bytes();
            // Where the mark's first `<` or `{` is: the mark must start that far before `i`.
            let at = m.iter().position(|&b| b == b'<' || b == b'{').unwrap_or(0);
            m[at] == text[i] && i >= at && text[i - at..].starts_with(m)
        })
    })
}

/// Writes the canonical scan form of a Windows XML line: the text the way JSON would write
/// it, so that the literals (kept as JSON writes them) apply unchanged — entity and
/// character references decoded, CDATA sections' text kept and their marks removed,
/// comments and processing instructions removed (the reader skips them, so they could
/// split a value), every character folded, `"` as `\"`, `\` as `\\`, control characters
/// as escapes. Markup stays: it only adds text. Every value the XML reader gives
/// ([`crate::xml`]) is a substring of this form, folded and escaped.
pub fn canonicalize_xml(raw: &[u8], out: &mut Vec<u8>) {
    out.clear();
    out.reserve(raw.len() + raw.len() / 8);
    let mut folded = String::new();
    // `raw[plain..i]` is text with no reference and no `<!` / `<?`, not written yet.
    let (mut plain, mut i) = (0, 0);
    while let Some(k) = memchr::memchr2(b'<', b'&', &raw[i..]) {
        let at = i + k;
        let rest = &raw[at..];
        let skip = matches!(rest, [b'<', b'!', ..] | [b'<', b'?', ..] | [b'&', ..]);
        if !skip {
            i = at + 1;
            continue;
        }
        push_plain(&raw[plain..at], &mut folded, out);
        i = at + markup(rest, &mut folded, out);
        plain = i;
    }
    push_plain(&raw[plain..], &mut folded, out);
}

/// Writes the canonical form of the `<!`, `<?` or `&` that starts `rest`; returns the bytes
/// it took (one for a `&` that starts no reference).
fn markup(rest: &[u8], folded: &mut String, out: &mut Vec<u8>) -> usize {
    if rest.starts_with(b"<![CDATA[") {
        let end = memmem::find(&rest[9..], b"]]>").map_or(rest.len(), |k| 9 + k);
        push_plain(&rest[9..end], folded, out);
        return (end + 3).min(rest.len());
    }
    if rest.starts_with(b"<!--") {
        if let Some(k) = memmem::find(&rest[4..], b"-->") {
            return 4 + k + 3;
        }
    } else if rest.starts_with(b"<?") {
        if let Some(k) = memmem::find(&rest[2..], b"?>") {
            return 2 + k + 2;
        }
    } else if rest[0] == b'&' {
        let mut one = String::new();
        let semi = rest.iter().take(12).position(|&b| b == b';');
        if let Some(k) = semi.filter(|&k| crate::xml::decode_into(&rest[..=k], &mut one).is_ok()) {
            folded.clear();
            fold_into(&one, folded);
            escape_into(folded, out);
            return k + 1;
        }
    }
    push_plain(&rest[..1], folded, out);
    1
}

/// Bytes of a word that are `"`, `\`, below 0x20 or at or above 0x80 (their high bits).
fn special_bytes(word: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let zero = |w: u64| w.wrapping_sub(ONES) & !w & HIGH;
    let control = word.wrapping_sub(0x20 * ONES) & !word & HIGH;
    zero(word ^ (u64::from(b'"') * ONES)) | zero(word ^ (u64::from(b'\\') * ONES)) | control | (word & HIGH)
}

/// Text without references: ASCII lower-cased and escaped, the rest folded and escaped.
/// Runs of plain ASCII are found eight bytes at a time.
fn push_plain(text: &[u8], folded: &mut String, out: &mut Vec<u8>) {
    let mut i = 0;
    while i < text.len() {
        let start = i;
        while i + 8 <= text.len() {
            let word = u64::from_le_bytes(text[i..i + 8].try_into().expect("8 bytes"));
            let special = special_bytes(word);
            if special != 0 {
                i += (special.trailing_zeros() / 8) as usize;
                break;
            }
            i += 8;
        }
        if i + 8 > text.len() {
            while i < text.len() && !matches!(text[i], b'"' | b'\\' | 0..0x20 | 0x80..) {
                i += 1;
            }
        }
        out.extend(text[start..i].iter().map(u8::to_ascii_lowercase));
        let Some(&b) = text.get(i) else { break };
        if b >= 0x80 {
            let run = text[i..].iter().position(|&b| b < 0x80).unwrap_or(text.len() - i);
            push_folded_run(&text[i..i + run], folded, out);
            i += run;
        } else {
            let mut escaped = String::new();
            escape_char(char::from(b), &mut escaped, &mut [0; 4]);
            out.extend_from_slice(escaped.as_bytes());
            i += 1;
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
        assert_eq!(
            String::from_utf8(out.clone()).expect("utf8"),
            r#"{"image":"c:\\x\\appcmd.exe","c":"a/b","q":"\"\\�x"}"#
        );
        canonicalize("{\"a\":\"ＡＰＰＣＭＤ．ＥＸＥ ＂ \\uFF3C ﬁ\"}".as_bytes(), &mut out);
        assert_eq!(String::from_utf8(out).expect("utf8"), r#"{"a":"appcmd.exe \" \\ fi"}"#);
    }

    #[test]
    fn canonical_xml_is_the_json_text_of_its_values() {
        let mut out = Vec::new();
        canonicalize_xml(
            br#"<Data Name='CommandLine'>&quot;C:\X\AppCmd.exe&quot; l&#x69;st<![CDATA[ <&amp;>]]><!-- c -->&bogus;</Data>"#,
            &mut out,
        );
        assert_eq!(
            String::from_utf8(out.clone()).expect("utf8"),
            r#"<data name='commandline'>\"c:\\x\\appcmd.exe\" list <&amp;>&bogus;</data>"#
        );
        canonicalize_xml("<D>ＣＭＤ\u{1}</D>".as_bytes(), &mut out);
        assert_eq!(String::from_utf8(out).expect("utf8"), r#"<d>cmd\u0001</d>"#);
        assert!(needs_every_rule(br#"{"event":{"original":"<event xmlns=\"x\">"}}"#));
        assert!(needs_every_rule(br#"{"eventdata":"{\"image\":\"x\"}"}"#));
        assert!(!needs_every_rule(br#"{"processguid":"{17362f25-244c}","image":"c:\\x"}"#));
    }

    /// The one-pass check agrees with looking for each mark on its own, over texts made of
    /// pieces of the marks (every prefix and suffix of each) and of the bytes around them.
    #[test]
    fn the_mark_check_is_a_search_for_each_mark() {
        let mut pieces: Vec<Vec<u8>> = vec![b"x".to_vec(), b"\"".to_vec(), b"{".to_vec(), b"<".to_vec(), b":".to_vec()];
        for m in INSPECT_MARKERS {
            let m = m.as_bytes();
            for k in 0..=m.len() {
                pieces.push(m[..k].to_vec());
                pieces.push(m[k..].to_vec());
            }
        }
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let (mut with, mut without) = (0, 0);
        for _ in 0..20_000 {
            let mut text = Vec::new();
            for _ in 0..(next() % 6) {
                text.extend_from_slice(&pieces[(next() % pieces.len() as u64) as usize]);
            }
            let naive = INSPECT_MARKERS.iter().any(|m| memmem::find(&text, m.as_bytes()).is_some());
            assert_eq!(needs_every_rule(&text), naive, "{:?}", String::from_utf8_lossy(&text));
            if naive { with += 1 } else { without += 1 }
        }
        assert!(with > 1000 && without > 1000, "both kinds of text were tried: {with} / {without}");
    }

    fn scan(line: &[u8]) -> Option<usize> {
        let mut text = ScanText::default();
        text.fill(line);
        HidingScan::new(line, &text).next_at_or_after(0)
    }

    fn hides_something(line: &[u8]) -> bool {
        scan(line).is_some()
    }

    #[test]
    fn what_can_hide_a_literal() {
        assert!(!hides_something(br#"c:\\users\\u00x"#), "an escaped backslash before u");
        assert!(hides_something(br#"c:\\\u0041"#));
        assert!(hides_something(br#"caf\u0065"#));
        assert!(!hides_something(br#"caf\u00e9 \u20ac \ud83d\ude00 x\/y"#), "é, €, an emoji and / hide no literal");
        assert!(hides_something(r#"\uff41ppcmd"#.as_bytes()), "fullwidth a, escaped");
        assert!(hides_something("ａppcmd".as_bytes()), "fullwidth a, raw");
        assert!(!hides_something("Microsoft® Windows® Operating System élan".as_bytes()));
        assert!(hides_something(r#"\ud835\udc1a"#.as_bytes()), "mathematical bold a, as a surrogate pair");
        let far = format!("{}ａ", "x".repeat(200));
        assert_eq!(scan(far.as_bytes()), Some(200));
        // Across block boundaries, and after a non-folding character in the same block.
        for at in [0, 1, 62, 63, 64, 65, 127, 128, 4095, 4096, 4097] {
            let line = format!("{}®{}ａ", "x".repeat(at), "y".repeat(at % 7));
            assert_eq!(scan(line.as_bytes()), Some(at + 2 + at % 7), "at {at}");
            let mut text = ScanText::default();
            text.fill(line.as_bytes());
            assert_eq!(text.lower, line.to_ascii_lowercase().as_bytes());
        }
    }
}
