//! The case and compatibility fold every comparison goes through.
//!
//! A character folds to the lower case of its NFKC form, one character at a time: `A` → `a`,
//! fullwidth `Ａ` → `a`, `ﬁ` → `fi`, `²` → `2`, the Kelvin sign → `k`. Folding one character
//! at a time (no composition across characters) is what lets the prefilter stay a byte
//! search: a rule literal found in a folded value is found in the folded JSON text too.
//!
//! Some non-ASCII characters fold to ASCII ([`folds_to_ascii`]); a line holding one (raw or
//! as a `\uXXXX` escape) is scanned by the prefilter on a folded copy. The set is a table
//! generated from the same Unicode data this code folds with, and a test recomputes it.
//!
//! The maps themselves are tables `build.rs` makes from that data ([`CharMap`]): one lookup
//! a character, whatever the text holds.

use unicode_normalization::UnicodeNormalization;

use super::fold_table::ASCII_FOLDING;

/// A per-character map of every code point, tabulated by `build.rs` (which documents the
/// layout) from the Unicode data this module's own functions use, so that each character
/// costs one lookup: computing an NFKC form costs hundreds of nanoseconds, and an attacker
/// can write thousands of distinct characters that need one (a cache of the characters
/// met last cannot hold them all; the adversarial benchmark's `distinct-compat`).
pub(crate) struct CharMap {
    pages: &'static [u16],
    spans: &'static [u32],
    text: &'static str,
}

impl CharMap {
    /// What `c` maps to (`None`: itself), and whether every non-ASCII character of that
    /// folds to itself (compatibility form only; see [`compat_into_bounded`]).
    #[inline]
    fn get(&self, c: char) -> (Option<&'static str>, bool) {
        let cp = c as u32;
        let page = self.pages[(cp >> 8) as usize];
        if page == 0 {
            return (None, true);
        }
        let span = self.spans[(usize::from(page) - 1) * 256 + (cp & 0xFF) as usize];
        let (start, len, stable) = ((span >> 9) as usize, (span & 0xFF) as usize, span & 0x100 != 0);
        ((len > 0).then(|| &self.text[start..start + len]), stable)
    }
}

mod tables {
    use super::CharMap;
    include!(concat!(env!("OUT_DIR"), "/char_maps.rs"));
}
use tables::{COMPAT, FOLD, LOWER};

/// Appends `map(c)` for every character of `s`: ASCII characters as they are (lower-cased
/// when `lower_ascii`), the others through `map`.
fn map_chars(s: &str, out: &mut String, map: &CharMap, lower_ascii: bool) {
    map_chars_bounded(s, out, usize::MAX, map, lower_ascii);
}

/// [`map_chars`], stopping once more than `limit` bytes were appended: `None` then, else
/// whether every non-ASCII character appended folds to itself (read from the compatibility
/// form's table). Runs of characters that map to themselves are copied at once.
fn map_chars_bounded(s: &str, out: &mut String, limit: usize, map: &CharMap, lower_ascii: bool) -> Option<bool> {
    let end = out.len().saturating_add(limit);
    let bytes = s.as_bytes();
    let mut stable = true;
    // `s[run..i]` maps to itself and is not appended yet.
    let (mut run, mut i) = (0, 0);
    while i < bytes.len() {
        if out.len() + (i - run) > end {
            return None;
        }
        let b = bytes[i];
        if b.is_ascii() {
            if lower_ascii && b.is_ascii_uppercase() {
                out.push_str(&s[run..i]);
                out.push(char::from(b.to_ascii_lowercase()));
                run = i + 1;
            }
            i += 1;
            continue;
        }
        let Some(c) = s[i..].chars().next() else { break };
        let (text, c_stable) = map.get(c);
        stable &= c_stable;
        if let Some(text) = text {
            out.push_str(&s[run..i]);
            out.push_str(text);
            run = i + c.len_utf8();
        }
        i += c.len_utf8();
    }
    out.push_str(&s[run..]);
    (out.len() <= end).then_some(stable)
}

#[cfg(test)]
fn nfkc_char(c: char, out: &mut String) {
    out.extend(std::iter::once(c).nfkc());
}

fn fold_char_uncached(c: char, out: &mut String) {
    for d in std::iter::once(c).nfkc() {
        out.extend(d.to_lowercase());
    }
}

#[cfg(test)]
fn lower_char(c: char, out: &mut String) {
    out.extend(c.to_lowercase());
}

/// Appends the compatibility form (NFKC) of `s` to `out`, one character at a time, case
/// kept: what structure (separators, quotes, blanks, `%`) is read from.
pub fn compat_into(s: &str, out: &mut String) {
    if s.is_ascii() {
        out.push_str(s);
        return;
    }
    map_chars(s, out, &COMPAT, false);
}

/// [`compat_into`], giving up (`None`) once more than `limit` bytes were appended: the
/// compatibility form of one character may be eighteen characters long.
///
/// `Some(true)` says every non-ASCII character appended folds to itself, so that the fold of
/// any text made of what was appended and ASCII is that text with its ASCII lower-cased
/// ([`fold_ascii_into`]): the fold then need not look at its other characters again. An
/// attacker's expanding character (U+FDFA is eighteen Arabic letters) is folded once, here,
/// rather than once per character of its expansion.
pub fn compat_into_bounded(s: &str, out: &mut String, limit: usize) -> Option<bool> {
    if s.is_ascii() {
        out.push_str(s);
        return (s.len() <= limit).then_some(true);
    }
    map_chars_bounded(s, out, limit, &COMPAT, false)
}

/// Appends `s` with its ASCII lower-cased: the fold of a text whose non-ASCII characters
/// are known to fold to themselves (see [`compat_into_bounded`]).
pub fn fold_ascii_into(s: &str, out: &mut String) {
    let start = out.len();
    out.push_str(s);
    // Lower-casing ASCII bytes leaves every other byte (and so every other character) as
    // it is.
    out[start..].make_ascii_lowercase();
}

/// Appends `s` lower-cased, Unicode simple case only (no compatibility forms).
pub fn lower_into(s: &str, out: &mut String) {
    if s.is_ascii() {
        let start = out.len();
        out.push_str(s);
        out[start..].make_ascii_lowercase();
        return;
    }
    map_chars(s, out, &LOWER, true);
}

/// The compatibility form of `s` (see [`compat_into`]).
pub fn compat(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    compat_into(s, &mut out);
    out
}

/// Appends the fold of `c` to `out`.
pub fn fold_char_into(c: char, out: &mut String) {
    if c.is_ascii() {
        out.push(c.to_ascii_lowercase());
        return;
    }
    match FOLD.get(c).0 {
        Some(text) => out.push_str(text),
        None => out.push(c),
    }
}

/// Appends the fold of `s` to `out`.
pub fn fold_into(s: &str, out: &mut String) {
    if s.is_ascii() {
        let start = out.len();
        out.push_str(s);
        out[start..].make_ascii_lowercase();
        return;
    }
    map_chars(s, out, &FOLD, true);
}

/// The fold of `s`.
pub fn fold(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    fold_into(s, &mut out);
    out
}

/// The ranges of non-ASCII characters whose fold holds ASCII (inclusive, sorted).
pub fn ascii_folding_ranges() -> &'static [(u32, u32)] {
    ASCII_FOLDING
}

/// Whether a non-ASCII character folds to something holding ASCII.
pub fn folds_to_ascii(c: char) -> bool {
    let cp = c as u32;
    cp >= 0x80
        && ASCII_FOLDING
            .binary_search_by(|&(lo, hi)| {
                if hi < cp {
                    std::cmp::Ordering::Less
                } else if lo > cp {
                    std::cmp::Ordering::Greater
                } else {
                    std::cmp::Ordering::Equal
                }
            })
            .is_ok()
}

/// The ranges of non-ASCII characters whose fold holds ASCII, computed from the Unicode
/// data in use (what `fold_table.rs` must equal).
pub fn compute_ascii_folding() -> Vec<(u32, u32)> {
    let mut ranges: Vec<(u32, u32)> = Vec::new();
    let mut buf = String::new();
    for cp in 0x80..=0x10FFFFu32 {
        let Some(c) = char::from_u32(cp) else { continue };
        buf.clear();
        fold_char_uncached(c, &mut buf);
        if buf.bytes().any(|b| b.is_ascii()) {
            match ranges.last_mut() {
                Some(last) if last.1 + 1 == cp => last.1 = cp,
                _ => ranges.push((cp, cp)),
            }
        }
    }
    ranges
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tables give what the Unicode data gives, for every character, alone and between
    /// ASCII; and the compatibility form says it is fold-stable exactly when it is.
    #[test]
    fn the_tables_equal_the_unicode_data() {
        let (mut a, mut b) = (String::new(), String::new());
        for cp in 0x80..=0x10FFFFu32 {
            let Some(c) = char::from_u32(cp) else { continue };
            for (tabled, computed) in [
                (compat_into as fn(&str, &mut String), nfkc_char as fn(char, &mut String)),
                (fold_into, fold_char_uncached),
                (lower_into, lower_char),
            ] {
                a.clear();
                b.clear();
                tabled(c.encode_utf8(&mut [0; 4]), &mut a);
                computed(c, &mut b);
                assert_eq!(a, b, "U+{cp:04X}");
            }
            a.clear();
            let stable = compat_into_bounded(c.encode_utf8(&mut [0; 4]), &mut a, usize::MAX).expect("no limit");
            let folds_to_itself = a.chars().filter(|d| !d.is_ascii()).all(|d| fold_char_string(d) == d.to_string());
            assert_eq!(stable, folds_to_itself, "U+{cp:04X}");
        }
        assert_eq!(fold("x\u{FDFA}y"), format!("x{}y", fold_char_string('\u{FDFA}')));
        assert_eq!(fold("Ab\u{212A}c"), "abkc");
    }

    fn fold_char_string(c: char) -> String {
        let mut s = String::new();
        fold_char_uncached(c, &mut s);
        s
    }

    #[test]
    fn folds() {
        assert_eq!(fold("AppCmd.EXE"), "appcmd.exe");
        assert_eq!(fold("ＡＰＰＣＭＤ．ｅｘｅ"), "appcmd.exe");
        assert_eq!(fold("ﬁle²"), "file2");
        assert_eq!(fold("\u{212A}"), "k", "Kelvin sign");
        assert_eq!(fold("ÄÖÜ"), "äöü");
        assert_eq!(fold("раураl"), "раураl", "Cyrillic look-alikes are not folded (a documented limit)");
        assert!(folds_to_ascii('Ａ') && folds_to_ascii('\u{212A}') && folds_to_ascii('\u{A0}'));
        assert!(!folds_to_ascii('®') && !folds_to_ascii('é') && !folds_to_ascii('а'));
    }

    /// The generated table must equal what the Unicode data in use gives, or the prefilter
    /// could pass over a line that folds into a match. `UPDATE_FOLD_TABLE=1` rewrites it.
    #[test]
    fn the_generated_table_matches_the_unicode_data_in_use() {
        let computed = compute_ascii_folding();
        if std::env::var_os("UPDATE_FOLD_TABLE").is_some() {
            let mut text = String::from(
                "//! Non-ASCII characters whose fold (lower-cased NFKC) holds ASCII, as inclusive\n\
                 //! ranges. Generated by `UPDATE_FOLD_TABLE=1 cargo test fold_table`; the test\n\
                 //! `the_generated_table_matches_the_unicode_data_in_use` checks it.\n\n\
                 /// Inclusive code point ranges, sorted.\n\
                 pub const ASCII_FOLDING: &[(u32, u32)] = &[\n",
            );
            for (lo, hi) in &computed {
                text.push_str(&format!("    (0x{lo:04X}, 0x{hi:04X}),\n"));
            }
            text.push_str("];\n");
            let path = concat!(env!("CARGO_MANIFEST_DIR"), "/src/normalize/fold_table.rs");
            std::fs::write(path, text).expect("write fold table");
            return;
        }
        assert_eq!(computed, ASCII_FOLDING, "regenerate with UPDATE_FOLD_TABLE=1 cargo test fold_table");
    }
}
