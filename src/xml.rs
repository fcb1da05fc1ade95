//! Windows event XML: one `<Event xmlns=…>` per line, as Windows renders it (Splunk
//! `XmlWinEventLog`, Windows Event Forwarding, NXLog, python-evtx, `evtx_dump -o xml`), or an
//! `<EventData>` fragment held in a JSON string (Sentinel `SecurityEvent`).
//!
//! [`read`] checks that the text is one well-formed element and walks it, handing a
//! [`Visitor`] every element, attribute and piece of text with entity and character
//! references and CDATA sections decoded. Names are given without their namespace prefix.
//! It keeps its own stack (nesting costs heap, bounded by the text's length) and never
//! allocates per node beyond the visitor's own buffers. It is not a general XML parser:
//! no DTD (a `<!DOCTYPE` is refused), no entities beyond the five predefined ones.

use std::fmt;

/// What a walk over an event is told, in document order.
pub trait Visitor {
    /// An element opens (its local name).
    fn start(&mut self, name: &str);
    /// An attribute of the element just opened (local name, decoded value).
    fn attribute(&mut self, name: &str, value: &str);
    /// Text inside the current element (decoded; several calls may make up one text).
    fn text(&mut self, text: &str);
    /// The current element closes.
    fn end(&mut self);
}

/// Why a text is not a well-formed event element.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XmlError {
    /// Byte offset of the problem.
    pub at: usize,
    /// What is wrong.
    pub what: &'static str,
}

impl fmt::Display for XmlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at byte {}: {}", self.at, self.what)
    }
}

/// Where a walked element lies in the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Element {
    /// Offset of its end tag `</…>` (where an annotation goes); `None` for an empty
    /// element (`<Event/>`).
    pub close: Option<usize>,
    /// Offset just past the element.
    pub end: usize,
}

fn err(at: usize, what: &'static str) -> XmlError {
    XmlError { at, what }
}

fn is_blank(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':') || b >= 0x80
}

/// Whether `name` is an XML name this reader accepts (ASCII letters, digits, `_`, `-`, `.`,
/// not starting with a digit, `-` or `.`): what an annotation element may be called.
pub fn is_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && (b[0].is_ascii_alphabetic() || b[0] == b'_')
        && b.iter().all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.'))
}

/// The local part of a (possibly prefixed) name.
fn local(name: &str) -> &str {
    name.rsplit(':').next().unwrap_or(name)
}

/// Appends `raw` (text or an attribute value) with its references decoded; invalid UTF-8
/// becomes U+FFFD.
pub fn decode_into(raw: &[u8], out: &mut String) -> Result<(), &'static str> {
    let mut rest = raw;
    while let Some(amp) = memchr::memchr(b'&', rest) {
        push_lossy(&rest[..amp], out);
        let semi = rest[amp..].iter().take(12).position(|&b| b == b';').ok_or("an unterminated reference")?;
        let name = &rest[amp + 1..amp + semi];
        let c = match name {
            b"lt" => '<',
            b"gt" => '>',
            b"amp" => '&',
            b"quot" => '"',
            b"apos" => '\'',
            [b'#', b'x' | b'X', hex @ ..] => char_ref(hex, 16)?,
            [b'#', dec @ ..] => char_ref(dec, 10)?,
            _ => return Err("an unknown entity"),
        };
        out.push(c);
        rest = &rest[amp + semi + 1..];
    }
    push_lossy(rest, out);
    Ok(())
}

fn char_ref(digits: &[u8], radix: u32) -> Result<char, &'static str> {
    let text = std::str::from_utf8(digits).map_err(|_| "a bad character reference")?;
    if text.is_empty() || !text.bytes().all(|b| (b as char).is_digit(radix)) {
        return Err("a bad character reference");
    }
    u32::from_str_radix(text, radix).ok().and_then(char::from_u32).ok_or("a character reference to no character")
}

fn push_lossy(bytes: &[u8], out: &mut String) {
    match std::str::from_utf8(bytes) {
        Ok(s) => out.push_str(s),
        Err(_) => out.push_str(&String::from_utf8_lossy(bytes)),
    }
}

/// Reusable buffers of a walk.
#[derive(Debug, Default)]
pub struct Scratch {
    /// Open elements: their (raw) names' ranges.
    open: Vec<(usize, usize)>,
    value: String,
    name: String,
}

impl Scratch {
    /// Bytes of capacity held.
    pub fn capacity_bytes(&self) -> usize {
        self.open.capacity() * 16 + self.value.capacity() + self.name.capacity()
    }

    /// Gives back capacity above `keep` bytes a buffer.
    pub fn release(&mut self, keep: usize) {
        use crate::scratch::Release;
        self.open.release(keep);
        self.value.release(keep);
        self.name.release(keep);
    }
}

/// Walks the element that starts `text` (after an optional XML declaration, comments and
/// blanks), which must be the whole text but for trailing blanks.
pub fn read(text: &[u8], scratch: &mut Scratch, v: &mut impl Visitor) -> Result<Element, XmlError> {
    let mut i = prolog(text)?;
    scratch.open.clear();
    let mut close = None;
    loop {
        // Text up to the next markup.
        let lt = match memchr::memchr(b'<', &text[i..]) {
            Some(k) => i + k,
            None => return Err(err(text.len(), "the text ends inside an element")),
        };
        if lt > i {
            if scratch.open.is_empty() {
                return Err(err(i, "text outside the element"));
            }
            scratch.value.clear();
            decode_into(&text[i..lt], &mut scratch.value).map_err(|w| err(i, w))?;
            v.text(&scratch.value);
        }
        i = lt;
        let rest = &text[i..];
        if rest.starts_with(b"<![CDATA[") {
            let end = memchr::memmem::find(&rest[9..], b"]]>").ok_or(err(i, "an unterminated CDATA section"))?;
            if scratch.open.is_empty() {
                return Err(err(i, "a CDATA section outside the element"));
            }
            scratch.value.clear();
            push_lossy(&rest[9..9 + end], &mut scratch.value);
            v.text(&scratch.value);
            i += 9 + end + 3;
        } else if rest.starts_with(b"<!--") {
            let end = memchr::memmem::find(&rest[4..], b"-->").ok_or(err(i, "an unterminated comment"))?;
            i += 4 + end + 3;
        } else if rest.starts_with(b"<?") {
            let end = memchr::memmem::find(&rest[2..], b"?>").ok_or(err(i, "an unterminated instruction"))?;
            i += 2 + end + 2;
        } else if rest.starts_with(b"</") {
            let (name, after) = name_at(text, i + 2)?;
            let j = skip_blanks(text, after);
            if text.get(j) != Some(&b'>') {
                return Err(err(j, "a bad end tag"));
            }
            let Some(open) = scratch.open.pop() else { return Err(err(i, "an end tag with no element open")) };
            if text[open.0..open.1] != text[name.0..name.1] {
                return Err(err(i, "an end tag that does not match its start tag"));
            }
            if scratch.open.is_empty() {
                close = Some(i);
            }
            v.end();
            i = j + 1;
            if scratch.open.is_empty() {
                return finish(text, i, close);
            }
        } else if rest.starts_with(b"<!") {
            return Err(err(i, "a declaration inside the element"));
        } else {
            let (name, after) = name_at(text, i + 1)?;
            scratch.name.clear();
            push_lossy(&text[name.0..name.1], &mut scratch.name);
            v.start(local(&scratch.name));
            let (j, empty) = attributes(text, after, scratch, v)?;
            i = j;
            if empty {
                v.end();
                if scratch.open.is_empty() {
                    return finish(text, i, None);
                }
            } else {
                scratch.open.push(name);
            }
        }
    }
}

/// Skips an XML declaration, comments and blanks before the element.
fn prolog(text: &[u8]) -> Result<usize, XmlError> {
    let mut i = 0;
    loop {
        i = skip_blanks(text, i);
        let rest = &text[i..];
        if rest.starts_with(b"<?") {
            i += 2 + memchr::memmem::find(&rest[2..], b"?>").ok_or(err(i, "an unterminated declaration"))? + 2;
        } else if rest.starts_with(b"<!--") {
            i += 4 + memchr::memmem::find(&rest[4..], b"-->").ok_or(err(i, "an unterminated comment"))? + 3;
        } else if rest.starts_with(b"<!") {
            return Err(err(i, "a document type declaration"));
        } else if rest.first() == Some(&b'<') {
            return Ok(i);
        } else {
            return Err(err(i, "not an element"));
        }
    }
}

fn finish(text: &[u8], i: usize, close: Option<usize>) -> Result<Element, XmlError> {
    let j = skip_blanks(text, i);
    if j != text.len() {
        return Err(err(j, "more after the element"));
    }
    Ok(Element { close, end: i })
}

fn skip_blanks(text: &[u8], mut i: usize) -> usize {
    while i < text.len() && is_blank(text[i]) {
        i += 1;
    }
    i
}

/// The name starting at `i`: its range, and the offset after it.
fn name_at(text: &[u8], i: usize) -> Result<((usize, usize), usize), XmlError> {
    let n = text[i.min(text.len())..].iter().take_while(|&&b| is_name_byte(b)).count();
    if n == 0 || text[i].is_ascii_digit() || matches!(text[i], b'-' | b'.') {
        return Err(err(i, "a bad name"));
    }
    Ok(((i, i + n), i + n))
}

/// The attributes of a start tag from `i`, to its `>` or `/>`: the offset after it, and
/// whether the element is empty.
fn attributes(
    text: &[u8],
    mut i: usize,
    scratch: &mut Scratch,
    v: &mut impl Visitor,
) -> Result<(usize, bool), XmlError> {
    loop {
        let j = skip_blanks(text, i);
        match text.get(j) {
            Some(b'>') => return Ok((j + 1, false)),
            Some(b'/') if text.get(j + 1) == Some(&b'>') => return Ok((j + 2, true)),
            Some(_) if j > i => {}
            Some(_) => return Err(err(j, "a bad start tag")),
            None => return Err(err(j, "the text ends inside a start tag")),
        }
        let (name, after) = name_at(text, j)?;
        let eq = skip_blanks(text, after);
        if text.get(eq) != Some(&b'=') {
            return Err(err(eq, "an attribute without a value"));
        }
        let q = skip_blanks(text, eq + 1);
        let quote = match text.get(q) {
            Some(&c @ (b'"' | b'\'')) => c,
            _ => return Err(err(q, "an unquoted attribute value")),
        };
        let end = memchr::memchr(quote, &text[q + 1..]).ok_or(err(q, "an unterminated attribute value"))? + q + 1;
        let raw = &text[q + 1..end];
        if memchr::memchr(b'<', raw).is_some() {
            return Err(err(q, "a `<` in an attribute value"));
        }
        scratch.value.clear();
        decode_into(raw, &mut scratch.value).map_err(|w| err(q, w))?;
        scratch.name.clear();
        push_lossy(&text[name.0..name.1], &mut scratch.name);
        v.attribute(local(&scratch.name), &scratch.value);
        i = end + 1;
    }
}

/// Appends the XML-escaped form of `s` (for attribute values and text alike).
pub fn escape_into(s: &str, out: &mut Vec<u8>) {
    for c in s.chars() {
        match c {
            '&' => out.extend_from_slice(b"&amp;"),
            '<' => out.extend_from_slice(b"&lt;"),
            '>' => out.extend_from_slice(b"&gt;"),
            '"' => out.extend_from_slice(b"&quot;"),
            '\'' => out.extend_from_slice(b"&apos;"),
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => {
                out.extend_from_slice(format!("&#x{:X};", c as u32).as_bytes())
            }
            c => out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Log(Vec<String>);

    impl Visitor for Log {
        fn start(&mut self, name: &str) {
            self.0.push(format!("<{name}"));
        }
        fn attribute(&mut self, name: &str, value: &str) {
            self.0.push(format!("@{name}={value}"));
        }
        fn text(&mut self, text: &str) {
            self.0.push(format!("'{text}'"));
        }
        fn end(&mut self) {
            self.0.push(">".into());
        }
    }

    fn walk(text: &str) -> Result<(Vec<String>, Element), XmlError> {
        let mut log = Log::default();
        let e = read(text.as_bytes(), &mut Scratch::default(), &mut log)?;
        Ok((log.0, e))
    }

    #[test]
    fn elements_attributes_text_references_and_cdata() {
        let text = r#"<?xml version="1.0"?><e:Event xmlns:e='x'><System><EventID Qualifiers="16384">7040</EventID></System><Data Name='C&amp;L'>a &quot;b&quot; &#x63;&#100;<![CDATA[<x>]]></Data><Empty/></e:Event>  "#;
        let (log, e) = walk(text).expect("well-formed");
        assert_eq!(
            log,
            [
                "<Event",
                "@e=x",
                "<System",
                "<EventID",
                "@Qualifiers=16384",
                "'7040'",
                ">",
                ">",
                "<Data",
                "@Name=C&L",
                "'a \"b\" cd'",
                "'<x>'",
                ">",
                "<Empty",
                ">",
                ">"
            ]
        );
        assert_eq!(e.close, Some(text.find("</e:Event>").expect("close")));
    }

    #[test]
    fn broken_xml_is_refused() {
        for bad in [
            "<Event><System></Event>",
            "<Event>",
            "<Event a=1></Event>",
            "<Event a='1></Event>",
            "<Event>&bogus;</Event>",
            "<Event>&#xZZ;</Event>",
            "<Event></Event><Event></Event>",
            "text",
            "<!DOCTYPE x><Event></Event>",
            "<Event><![CDATA[x</Event>",
            "<1Event></1Event>",
            "<Event>x</Event>y",
        ] {
            assert!(walk(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn names_and_escapes() {
        assert!(is_name("iis_tagger") && is_name("x.y-z") && !is_name("1x") && !is_name("a b") && !is_name(""));
        let mut out = Vec::new();
        escape_into("a<b>&\"c'\u{1}", &mut out);
        assert_eq!(out, b"a&lt;b&gt;&amp;&quot;c&apos;&#x1;");
    }
}
