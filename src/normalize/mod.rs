//! How a field value is turned into the forms rules compare against.
//!
//! Matching must see what Windows sees, not the bytes as typed. Every value a rule reads is
//! first put in compatibility form (NFKC, one character at a time: a fullwidth `＼` is a
//! separator, a fullwidth `％` opens a variable), then in the canonical form of its field's
//! kind — a path as Windows resolves it ([`path`]), a command line as the program receives
//! it ([`cmdline`]), other text without surrounding quotes and whitespace — and then folded
//! ([`unicode`]): lower case, one character at a time. Rule values go through the same
//! steps. Nothing here touches the bytes written out.

pub mod cmdline;
mod fold_table;
pub mod path;
pub mod unicode;

pub use cmdline::{for_each_arg, split_args};
pub use unicode::{compat, compat_into, fold, fold_into, folds_to_ascii, lower_into};

/// What kind of value a field holds; decides its canonical forms and how the prefilter
/// may cut a rule's literals for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldKind {
    /// A file-system path (`Image`, `ParentImage`, `TargetFilename`, ...).
    Path,
    /// A command line (`CommandLine`, `ParentCommandLine`): seen as typed and as the
    /// program's arguments.
    CommandLine,
    /// One argument of a command line, as the program received it (quotes removed).
    Argument,
    /// Anything else, compared as text.
    Text,
}

/// The two readings a value is compared in. A rule matches a record when it matches it in
/// either reading, each evaluated whole (every field in the same reading).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reading {
    /// As the log wrote it: the text itself, lower-cased (Unicode simple case only). Rules
    /// about how a value is spelled (quotes in a command line, a trailing space in a
    /// folder name, a compatibility character) are met here.
    Logged,
    /// As Windows reads it: compatibility forms resolved, a path as Windows resolves it, a
    /// command line as its program receives it, then folded.
    Resolved,
}

impl Reading {
    /// Both readings, in the order they are tried.
    pub const BOTH: [Reading; 2] = [Reading::Logged, Reading::Resolved];

    /// Its bit in a reading mask.
    pub fn bit(self) -> u8 {
        match self {
            Reading::Logged => 1,
            Reading::Resolved => 2,
        }
    }
}

/// A reading mask with both bits.
pub const BOTH_READINGS: u8 = 3;

/// The forms (case kept) of a value of `kind` in each reading, passed to `view` with the
/// mask of the readings they are (one call with [`BOTH_READINGS`] when the two agree).
/// `cmd` says the process the value belongs to is cmd.exe (its carets are escapes).
/// False, with no form passed, when the compatibility form of `raw` is longer than `limit`
/// bytes.
///
/// The third argument of `view` is a [`Fold`] to pass to [`fold_for`]. The resolved forms
/// are made of the compatibility form's characters and ASCII (separators, expansions of
/// variables: nothing here writes other characters), so what the compatibility form
/// learnt of how its characters fold holds for them.
pub fn views(
    kind: FieldKind,
    raw: &str,
    cmd: bool,
    limit: usize,
    scratch: &mut Scratch,
    mut view: impl FnMut(u8, &str, Fold),
) -> bool {
    let (compat, stable) = if raw.is_ascii() {
        (raw, true)
    } else {
        scratch.compat.clear();
        let Some(stable) = unicode::compat_into_bounded(raw, &mut scratch.compat, limit) else {
            return false;
        };
        (scratch.compat.as_str(), stable)
    };
    let fold = if stable { Fold::AsciiOnly } else { Fold::Full };
    let resolved: &str = match kind {
        FieldKind::Path => {
            scratch.a.clear();
            scratch.unsettled |= !path::canonical_into(compat, &mut scratch.a);
            &scratch.a
        }
        FieldKind::Text => path::trim_wrapping(compat),
        FieldKind::Argument => compat,
        FieldKind::CommandLine => {
            let line = if cmd && compat.contains('^') {
                scratch.b.clear();
                cmdline::without_carets(compat, &mut scratch.b);
                scratch.b.as_str()
            } else {
                compat
            };
            scratch.a.clear();
            cmdline::arguments_joined(line, &mut scratch.arg, &mut scratch.a);
            &scratch.a
        }
    };
    if resolved == raw {
        view(BOTH_READINGS, raw, fold);
    } else {
        view(Reading::Logged.bit(), raw, fold);
        view(Reading::Resolved.bit(), resolved, fold);
    }
    true
}

/// How the resolved reading of a form from [`views`] is folded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fold {
    /// Character by character ([`fold_into`]).
    Full,
    /// Its non-ASCII characters are known to fold to themselves: only its ASCII is
    /// lower-cased. The compatibility form found this out once per character of the raw
    /// value, so the characters it expanded to are not looked at again.
    AsciiOnly,
}

/// Appends the fold of the text of `reading` to `out` (`how` from [`views`]), unless the
/// fold is the text itself: false then, with nothing appended.
pub fn fold_for(reading: Reading, s: &str, how: Fold, out: &mut String) -> bool {
    let start = out.len();
    match (reading, how) {
        (Reading::Resolved, Fold::AsciiOnly) => {
            if !s.bytes().any(|b| b.is_ascii_uppercase()) {
                return false;
            }
            unicode::fold_ascii_into(s, out);
        }
        (Reading::Logged, _) => lower_into(s, out),
        (Reading::Resolved, Fold::Full) => fold_into(s, out),
    }
    if out[start..] == *s {
        out.truncate(start);
        return false;
    }
    true
}

/// Reusable buffers for [`views`].
#[derive(Debug, Default)]
pub struct Scratch {
    compat: String,
    a: String,
    b: String,
    arg: String,
    /// A path form did not settle ([`path::canonical_into`]) since [`Scratch::unsettled`]
    /// was last asked.
    unsettled: bool,
}

impl Scratch {
    /// Whether a path form made since the last call did not settle (its record was then
    /// not fully evaluated); clears it.
    pub fn unsettled(&mut self) -> bool {
        std::mem::take(&mut self.unsettled)
    }

    /// Bytes of capacity held.
    pub fn capacity_bytes(&self) -> usize {
        crate::scratch::total(&[&self.compat, &self.a, &self.b, &self.arg])
    }

    /// Gives back capacity above `keep` bytes a buffer.
    pub fn release(&mut self, keep: usize) {
        use crate::scratch::Release;
        for s in [&mut self.compat, &mut self.a, &mut self.b, &mut self.arg] {
            s.release(keep);
        }
    }
}

/// The canonical, folded form of a piece of a rule value (text between wildcards) for a
/// field of `kind`, in the resolved reading.
pub fn compare_form(kind: FieldKind, s: &str) -> String {
    let mut out = String::new();
    fold_into(&canonical(kind, s), &mut out);
    out
}

/// The case-kept canonical form of a piece of a rule value (for `cased` and `re`).
pub fn canonical(kind: FieldKind, s: &str) -> String {
    let s = &compat(s);
    match kind {
        FieldKind::Path => {
            let mut out = String::with_capacity(s.len());
            path::token_into(s, &mut out);
            out
        }
        FieldKind::Text | FieldKind::CommandLine | FieldKind::Argument => s.to_string(),
    }
}

/// Whether a piece of a rule value holds characters with a compatibility form (it is
/// about those characters, and is met in the logged reading only).
pub fn has_compatibility_forms(s: &str) -> bool {
    !s.is_ascii() && compat(s) != s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_views(kind: FieldKind, raw: &str, cmd: bool) -> Vec<String> {
        let mut out = Vec::new();
        assert!(views(kind, raw, cmd, usize::MAX, &mut Scratch::default(), |_, v, _| out.push(v.to_string())));
        out
    }

    #[test]
    fn views_by_kind() {
        assert_eq!(all_views(FieldKind::Path, r"C:/X//Y.exe.", false), vec![r"C:/X//Y.exe.", r"C:\X\Y.exe"]);
        assert_eq!(all_views(FieldKind::Path, r"C:\X\Y.exe", false), vec![r"C:\X\Y.exe"], "one view when they agree");
        assert_eq!(all_views(FieldKind::Text, r#" "a b" "#, false), vec![r#" "a b" "#, "a b"]);
        assert_eq!(all_views(FieldKind::CommandLine, "a  b", false), vec!["a  b", "a b"]);
        assert_eq!(all_views(FieldKind::CommandLine, "a b", false), vec!["a b"]);
        assert_eq!(all_views(FieldKind::CommandLine, "who^ami /a^ll", false), vec!["who^ami /a^ll"]);
        assert_eq!(all_views(FieldKind::CommandLine, "who^ami /a^ll", true), vec!["who^ami /a^ll", "whoami /all"]);
        // Compatibility forms are resolved before the structure is read.
        let fullwidth = "Ｃ：＼Ｘ＼＼％ＳｙｓｔｅｍＲｏｏｔ％＼Ｙ．ｅｘｅ．";
        assert_eq!(
            all_views(FieldKind::Path, fullwidth, false),
            vec![fullwidth.to_string(), r"C:\X\C:\Windows\Y.exe".into()]
        );
        assert_eq!(all_views(FieldKind::Text, "\u{3000}＂a.dll＂", false)[1], "a.dll");
        assert_eq!(all_views(FieldKind::CommandLine, "a\u{3000}ｂ", false)[1], "a b");
    }

    /// The fold [`views`] chooses for the resolved forms is the full fold, for every
    /// character (among cased ASCII, and the separators and variables a path form adds).
    #[test]
    fn the_chosen_fold_is_the_fold() {
        let mut scratch = Scratch::default();
        let (mut short, mut full) = (String::new(), String::new());
        let mut ascii_only = 0;
        for cp in (0x80..=0x10FFFFu32).step_by(5).chain(0x80..0x3000) {
            let Some(c) = char::from_u32(cp) else { continue };
            let raw = format!("%SystemRoot%/A{c}b\\{c}{c}.EXE");
            for kind in [FieldKind::Path, FieldKind::CommandLine, FieldKind::Text] {
                views(kind, &raw, false, usize::MAX, &mut scratch, |readings, v, how| {
                    if readings & Reading::Resolved.bit() == 0 {
                        return;
                    }
                    short.clear();
                    full.clear();
                    if !fold_for(Reading::Resolved, v, how, &mut short) {
                        short.push_str(v);
                    }
                    fold_into(v, &mut full);
                    assert_eq!(short, full, "U+{cp:04X} {how:?}");
                    ascii_only += usize::from(how == Fold::AsciiOnly);
                });
            }
        }
        assert!(ascii_only > 100_000, "the short fold is taken ({ascii_only})");
        let mut hows = Vec::new();
        views(FieldKind::Path, "C:\\\u{FDFA}\\Ä", false, usize::MAX, &mut scratch, |_, _, how| hows.push(how));
        assert_eq!(hows, [Fold::Full, Fold::Full], "a character that does not fold to itself");
    }

    #[test]
    fn rule_value_pieces() {
        assert_eq!(compare_form(FieldKind::Path, "C:/Windows//System32/AppCmd.exe"), r"c:\windows\system32\appcmd.exe");
        assert_eq!(compare_form(FieldKind::Path, "%SystemRoot%\\"), r"c:\windows\");
        assert_eq!(compare_form(FieldKind::CommandLine, "Install  Module"), "install  module");
        assert_eq!(compare_form(FieldKind::Text, " ＡｐｐＣｍｄ "), " appcmd ");
    }
}
