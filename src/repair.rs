//! A second chance for records the JSON parser refuses over details an attacker can put
//! in. Windows strings are UTF-16 and may hold a lone surrogate (a file name or command line
//! can), which a shipper writes as `"\ud800"`; RFC 8259 leaves such text to the reader, and
//! simd-json refuses it. A number outside the 64-bit range (`18446744073709551616`, `1e400`)
//! is refused too. Either would let one hostile field hide a whole record from the rules.
//!
//! [`repair`] rewrites a *copy* of the JSON text: each lone surrogate escape becomes
//! `\ufffd` (what Windows' own UTF-16 → UTF-8 conversion gives); an integer beyond 64 bits
//! becomes the float it is to serde_json and most JSON readers (`18446744073709551616.0`);
//! a number beyond the float range (`1e400`), which those readers refuse, becomes the string
//! of its own text. The copy is parsed
//! and evaluated; the record written out is the original, byte for byte (plus the
//! annotation if it matches). Anything else that fails to parse stays "not JSON". The
//! rewrite is one pass, and the copy at most `len + 2 × numbers` bytes long.

/// The repaired copy of `json`, or `None` when there is nothing to repair.
pub fn repair(json: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(json.len() + 16);
    let mut changed = false;
    let mut i = 0;
    while i < json.len() {
        match json[i] {
            b'"' => {
                let end = string_end(json, i + 1, &mut out, &mut changed);
                i = end;
            }
            b'-' | b'0'..=b'9' => {
                let len = number_len(&json[i..]);
                let token = &json[i..i + len];
                if len > 0 && !representable(token) {
                    if is_integer(token)
                        && std::str::from_utf8(token).is_ok_and(|t| t.parse::<f64>().is_ok_and(f64::is_finite))
                    {
                        // As serde_json and most JSON readers take it: a float.
                        out.extend_from_slice(token);
                        out.extend_from_slice(b".0");
                    } else {
                        out.push(b'"');
                        out.extend_from_slice(token);
                        out.push(b'"');
                    }
                    changed = true;
                } else {
                    out.extend_from_slice(&json[i..i + len.max(1)]);
                }
                i += len.max(1);
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    changed.then_some(out)
}

/// Copies the string whose opening quote is just before `from` (closing quote included) to
/// `out`, replacing lone surrogate escapes; returns the index after it.
fn string_end(json: &[u8], from: usize, out: &mut Vec<u8>, changed: &mut bool) -> usize {
    out.push(b'"');
    let mut i = from;
    while i < json.len() {
        match json[i] {
            b'"' => {
                out.push(b'"');
                return i + 1;
            }
            b'\\' if json.get(i + 1) == Some(&b'u') => {
                let (len, lone) = unicode_escape(&json[i..]);
                if lone {
                    out.extend_from_slice(b"\\ufffd");
                    *changed = true;
                } else {
                    out.extend_from_slice(&json[i..i + len]);
                }
                i += len;
            }
            b'\\' => {
                let end = (i + 2).min(json.len());
                out.extend_from_slice(&json[i..end]);
                i = end;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    json.len()
}

fn hex4(bytes: &[u8]) -> Option<u32> {
    let digits = bytes.get(..4)?;
    if !digits.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    digits.iter().try_fold(0u32, |acc, &b| Some(acc * 16 + char::from(b).to_digit(16)?))
}

/// At a `\u` escape: how many bytes it spans (a surrogate pair spans both escapes), and
/// whether it is a lone surrogate. A malformed escape spans its two bytes and is left to
/// the parser to refuse.
fn unicode_escape(s: &[u8]) -> (usize, bool) {
    let Some(unit) = s.get(2..).and_then(hex4) else { return (2, false) };
    match unit {
        0xD800..=0xDBFF => {
            let low = (s.get(6..8) == Some(b"\\u")).then(|| s.get(8..).and_then(hex4)).flatten();
            match low {
                Some(0xDC00..=0xDFFF) => (12, false),
                _ => (6, true),
            }
        }
        0xDC00..=0xDFFF => (6, true),
        _ => (6, false),
    }
}

/// The length of the JSON number token (RFC 8259 grammar) at the start of `s`, or 0 when
/// none starts there.
fn number_len(s: &[u8]) -> usize {
    let digits = |from: usize| s.get(from..).map_or(0, |r| r.iter().take_while(|b| b.is_ascii_digit()).count());
    let mut i = usize::from(s.first() == Some(&b'-'));
    match s.get(i) {
        Some(b'0') => i += 1,
        Some(b'1'..=b'9') => i += digits(i),
        _ => return 0,
    }
    if s.get(i) == Some(&b'.') && digits(i + 1) > 0 {
        i += 1 + digits(i + 1);
    }
    if matches!(s.get(i), Some(b'e' | b'E')) {
        let sign = usize::from(matches!(s.get(i + 1), Some(b'+' | b'-')));
        if digits(i + 1 + sign) > 0 {
            i += 1 + sign + digits(i + 1 + sign);
        }
    }
    i
}

fn is_integer(token: &[u8]) -> bool {
    !token.iter().any(|b| matches!(b, b'.' | b'e' | b'E'))
}

/// Whether the parser represents a number token: an integer within `i64` / `u64`, or a
/// finite float.
fn representable(token: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(token) else { return true };
    if !is_integer(token) {
        text.parse::<f64>().is_ok_and(f64::is_finite)
    } else {
        text.parse::<i64>().is_ok() || text.parse::<u64>().is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixed(json: &str) -> Option<String> {
        repair(json.as_bytes()).map(|v| String::from_utf8(v).expect("utf8"))
    }

    #[test]
    fn lone_surrogates_become_replacement_characters() {
        assert_eq!(fixed(r#"{"a":"x\ud800y"}"#).as_deref(), Some(r#"{"a":"x\ufffdy"}"#));
        assert_eq!(fixed(r#"{"a":"\udc00"}"#).as_deref(), Some(r#"{"a":"\ufffd"}"#));
        assert_eq!(fixed(r#"{"\ud800":1}"#).as_deref(), Some(r#"{"\ufffd":1}"#), "keys too");
        assert_eq!(fixed(r#"{"a":"\ud83d\ude00 \\ud800"}"#), None, "a pair, and an escaped backslash");
        assert_eq!(fixed(r#"{"a":"\ud800\u0041"}"#).as_deref(), Some(r#"{"a":"\ufffd\u0041"}"#));
        assert_eq!(fixed(r#"{"a":"\ud800\ud800\udc00"}"#).as_deref(), Some(r#"{"a":"\ufffd\ud800\udc00"}"#));
        assert_eq!(fixed(r#"{"a":"\u12"}"#), None, "malformed escapes are the parser's to refuse");
    }

    #[test]
    fn out_of_range_numbers_become_floats_or_strings() {
        assert_eq!(
            fixed(r#"{"a":18446744073709551616,"b":1e400,"c":-9223372036854775809}"#).as_deref(),
            Some(r#"{"a":18446744073709551616.0,"b":"1e400","c":-9223372036854775809.0}"#)
        );
        let digits = "9".repeat(400);
        assert_eq!(fixed(&format!("[{digits}]")), Some(format!("[\"{digits}\"]")), "beyond the float range too");
        assert_eq!(fixed(r#"{"a":[1E+999, 2]}"#).as_deref(), Some(r#"{"a":["1E+999", 2]}"#));
        assert_eq!(fixed(r#"{"a":18446744073709551615,"b":-1.5e3,"c":"99999999999999999999","d":0}"#), None);
        assert_eq!(fixed(r#"{"a":-,"b":01}"#), None, "not numbers: left to the parser");
    }

    #[test]
    fn unterminated_text_is_copied_as_is() {
        assert_eq!(fixed(r#"{"a":"\ud800"#).as_deref(), Some(r#"{"a":"\ufffd"#));
        assert_eq!(fixed("{\"a\":\"x\\"), None);
    }
}
