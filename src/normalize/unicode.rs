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

use std::cell::RefCell;

use unicode_normalization::UnicodeNormalization;

use super::fold_table::ASCII_FOLDING;

/// A per-character map of non-ASCII characters, remembered per thread: building an NFKC
/// iterator and looking up case tables costs tens of nanoseconds a character, and an
/// attacker repeats one expensive character. Direct-mapped by code point.
struct CharCache {
    slots: Vec<Slot>,
}

#[derive(Clone, Default)]
struct Slot {
    /// The character plus one (0: an empty slot).
    key: u32,
    /// What it maps to.
    text: String,
    /// It maps to itself.
    identity: bool,
}

const SLOTS: usize = 512;

impl CharCache {
    fn new() -> CharCache {
        CharCache { slots: vec![Slot::default(); SLOTS] }
    }

    /// The slot of `c`, filled with `map(c)`.
    fn slot(&mut self, c: char, map: impl Fn(char, &mut String)) -> &Slot {
        let key = c as u32 + 1;
        let slot = &mut self.slots[(c as usize ^ (c as usize >> 9)) % SLOTS];
        if slot.key != key {
            slot.key = key;
            slot.text.clear();
            map(c, &mut slot.text);
            slot.identity = slot.text.chars().eq(std::iter::once(c));
        }
        slot
    }

    /// Appends `map(c)` to `out`, from the cache when `c` is there.
    fn push(&mut self, c: char, out: &mut String, map: impl Fn(char, &mut String)) {
        out.push_str(&self.slot(c, map).text);
    }
}

thread_local! {
    static COMPAT: RefCell<CharCache> = RefCell::new(CharCache::new());
    static FOLD: RefCell<CharCache> = RefCell::new(CharCache::new());
    static LOWER: RefCell<CharCache> = RefCell::new(CharCache::new());
}

/// Appends `map(c)` for every character of `s`: ASCII characters as they are (lower-cased
/// when `lower_ascii`), the others through `cache`.
fn map_chars(
    s: &str,
    out: &mut String,
    cache: &'static std::thread::LocalKey<RefCell<CharCache>>,
    lower_ascii: bool,
    map: fn(char, &mut String),
) {
    map_chars_bounded(s, out, usize::MAX, cache, lower_ascii, map);
}

/// [`map_chars`], stopping once more than `limit` bytes were appended: false then. Runs of
/// characters that map to themselves are copied at once.
fn map_chars_bounded(
    s: &str,
    out: &mut String,
    limit: usize,
    cache: &'static std::thread::LocalKey<RefCell<CharCache>>,
    lower_ascii: bool,
    map: fn(char, &mut String),
) -> bool {
    let end = out.len().saturating_add(limit);
    cache.with(|cache| {
        let mut cache = cache.borrow_mut();
        let bytes = s.as_bytes();
        // `s[run..i]` maps to itself and is not appended yet.
        let (mut run, mut i) = (0, 0);
        while i < bytes.len() {
            if out.len() + (i - run) > end {
                return false;
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
            let slot = cache.slot(c, map);
            if !slot.identity {
                out.push_str(&s[run..i]);
                out.push_str(&slot.text);
                run = i + c.len_utf8();
            }
            i += c.len_utf8();
        }
        out.push_str(&s[run..]);
        out.len() <= end
    })
}

fn nfkc_char(c: char, out: &mut String) {
    out.extend(std::iter::once(c).nfkc());
}

fn fold_char_uncached(c: char, out: &mut String) {
    for d in std::iter::once(c).nfkc() {
        out.extend(d.to_lowercase());
    }
}

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
    map_chars(s, out, &COMPAT, false, nfkc_char);
}

/// [`compat_into`], giving up (false) once more than `limit` bytes were appended: the
/// compatibility form of one character may be eighteen characters long.
pub fn compat_into_bounded(s: &str, out: &mut String, limit: usize) -> bool {
    if s.is_ascii() {
        out.push_str(s);
        return s.len() <= limit;
    }
    map_chars_bounded(s, out, limit, &COMPAT, false, nfkc_char)
}

/// Appends `s` lower-cased, Unicode simple case only (no compatibility forms).
pub fn lower_into(s: &str, out: &mut String) {
    if s.is_ascii() {
        let start = out.len();
        out.push_str(s);
        out[start..].make_ascii_lowercase();
        return;
    }
    map_chars(s, out, &LOWER, true, lower_char);
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
    FOLD.with(|cache| cache.borrow_mut().push(c, out, fold_char_uncached));
}

/// Appends the fold of `s` to `out`.
pub fn fold_into(s: &str, out: &mut String) {
    if s.is_ascii() {
        let start = out.len();
        out.push_str(s);
        out[start..].make_ascii_lowercase();
        return;
    }
    map_chars(s, out, &FOLD, true, fold_char_uncached);
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

    /// The cached maps give what the uncached ones give, for every character, whatever was
    /// in the cache before (each character twice: the miss, then the hit).
    #[test]
    fn cached_maps_equal_the_unicode_data() {
        let (mut a, mut b) = (String::new(), String::new());
        for cp in (0x80..=0x10FFFFu32).step_by(7).chain(0x80..0x800) {
            let Some(c) = char::from_u32(cp) else { continue };
            for _ in 0..2 {
                for (cached, uncached) in [
                    (compat_into as fn(&str, &mut String), nfkc_char as fn(char, &mut String)),
                    (fold_into, fold_char_uncached),
                    (lower_into, lower_char),
                ] {
                    a.clear();
                    b.clear();
                    cached(c.encode_utf8(&mut [0; 4]), &mut a);
                    uncached(c, &mut b);
                    assert_eq!(a, b, "U+{cp:04X}");
                }
            }
        }
        assert_eq!(fold("x\u{FDFA}y"), format!("x{}y", fold_char_string('\u{FDFA}')));
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
