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
pub use unicode::{compat, compat_into, fold, fold_into, folds_to_ascii};

/// What kind of value a field holds; decides its canonical forms and how the prefilter
/// may cut a rule's literals for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
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

/// The canonical forms (case kept) of a value of `kind`, each passed to `view`. `cmd` says
/// the process the value belongs to is cmd.exe (its carets are escapes).
pub fn views(kind: FieldKind, raw: &str, cmd: bool, scratch: &mut Scratch, mut view: impl FnMut(&str)) {
    let raw = if raw.is_ascii() {
        raw
    } else {
        scratch.compat.clear();
        compat_into(raw, &mut scratch.compat);
        scratch.compat.as_str()
    };
    match kind {
        FieldKind::Path => {
            scratch.a.clear();
            path::canonical_into(raw, &mut scratch.a);
            view(&scratch.a);
        }
        FieldKind::Text => view(path::trim_wrapping(raw)),
        FieldKind::Argument => view(raw),
        FieldKind::CommandLine => {
            view(raw);
            scratch.a.clear();
            cmdline::arguments_joined(raw, &mut scratch.arg, &mut scratch.a);
            if scratch.a != raw {
                view(&scratch.a);
            }
            if cmd && raw.contains('^') {
                scratch.b.clear();
                cmdline::without_carets(raw, &mut scratch.b);
                scratch.a.clear();
                cmdline::arguments_joined(&scratch.b, &mut scratch.arg, &mut scratch.a);
                view(&scratch.a);
            }
        }
    }
}

/// Reusable buffers for [`views`].
#[derive(Debug, Default)]
pub struct Scratch {
    compat: String,
    a: String,
    b: String,
    arg: String,
}

/// The canonical, folded form of a piece of a rule value (text between wildcards) for a
/// field of `kind`.
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

#[cfg(test)]
mod tests {
    use super::*;

    fn all_views(kind: FieldKind, raw: &str, cmd: bool) -> Vec<String> {
        let mut out = Vec::new();
        views(kind, raw, cmd, &mut Scratch::default(), |v| out.push(v.to_string()));
        out
    }

    #[test]
    fn views_by_kind() {
        assert_eq!(all_views(FieldKind::Path, r"C:/X//Y.exe.", false), vec![r"C:\X\Y.exe"]);
        assert_eq!(all_views(FieldKind::Text, r#" "a b" "#, false), vec!["a b"]);
        assert_eq!(all_views(FieldKind::CommandLine, "a  b", false), vec!["a  b", "a b"]);
        assert_eq!(all_views(FieldKind::CommandLine, "a b", false), vec!["a b"]);
        assert_eq!(all_views(FieldKind::CommandLine, "who^ami /a^ll", false), vec!["who^ami /a^ll"]);
        assert_eq!(all_views(FieldKind::CommandLine, "who^ami /a^ll", true), vec!["who^ami /a^ll", "whoami /all"]);
        // Compatibility forms are resolved before the structure is read.
        assert_eq!(
            all_views(FieldKind::Path, "Ｃ：＼Ｘ＼＼％ＳｙｓｔｅｍＲｏｏｔ％＼Ｙ．ｅｘｅ．", false),
            vec![r"C:\X\C:\Windows\Y.exe"]
        );
        assert_eq!(all_views(FieldKind::Text, "\u{3000}＂a.dll＂", false), vec!["a.dll"]);
        assert_eq!(all_views(FieldKind::CommandLine, "a\u{3000}ｂ", false), vec!["a b"]);
    }

    #[test]
    fn rule_value_pieces() {
        assert_eq!(compare_form(FieldKind::Path, "C:/Windows//System32/AppCmd.exe"), r"c:\windows\system32\appcmd.exe");
        assert_eq!(compare_form(FieldKind::Path, "%SystemRoot%\\"), r"c:\windows\");
        assert_eq!(compare_form(FieldKind::CommandLine, "Install  Module"), "install  module");
        assert_eq!(compare_form(FieldKind::Text, " ＡｐｐＣｍｄ "), " appcmd ");
    }
}
