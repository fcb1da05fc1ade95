//! How a field value is turned into the form rules compare against.
//!
//! Every comparison a rule makes is case-insensitive (Windows names are), so both the
//! rule's values and the event's values are *folded* the same way before they meet.
//! The fold is chosen so that the prefilter can stay a plain byte search over the
//! ASCII-lower-cased line: ASCII letters fold to lower case, and a non-ASCII character
//! folds only to another non-ASCII character. A character whose lower case is ASCII (the
//! Kelvin sign `K` → `k`, `İ` → `i̇`) is left as it is; otherwise an event could match a
//! rule through a letter the byte scan never saw.
//!
//! Path fields get a canonical form first: `/` becomes `\`, which is what Windows does
//! with either separator.

/// What kind of value a field holds; decides its canonical form and how the prefilter
/// may cut the rule's literals for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FieldKind {
    /// A file-system path (`Image`, `ParentImage`, `TargetFilename`): `/` and `\` are the
    /// same separator.
    Path,
    /// One argument of a command line, as the program received it (quotes removed).
    Argument,
    /// Anything else, compared as text.
    Text,
}

/// Appends the case fold of `s` to `out`.
pub fn fold_into(s: &str, out: &mut String) {
    if s.is_ascii() {
        out.extend(s.bytes().map(|b| char::from(b.to_ascii_lowercase())));
        return;
    }
    for c in s.chars() {
        out.push(fold_char(c));
    }
}

/// The case fold of `s`.
pub fn fold(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    fold_into(s, &mut out);
    out
}

/// The fold of one character (see the module documentation for why non-ASCII characters
/// never fold to ASCII ones).
pub fn fold_char(c: char) -> char {
    if c.is_ascii() {
        return c.to_ascii_lowercase();
    }
    let mut lower = c.to_lowercase();
    match (lower.next(), lower.next()) {
        (Some(l), None) if !l.is_ascii() => l,
        _ => c,
    }
}

/// Appends the canonical form of a value of `kind` to `out` (case preserved).
pub fn canonical_into(kind: FieldKind, s: &str, out: &mut String) {
    match kind {
        FieldKind::Path => out.extend(s.chars().map(|c| if c == '/' { '\\' } else { c })),
        FieldKind::Argument | FieldKind::Text => out.push_str(s),
    }
}

/// The canonical, folded form of a value of `kind`: what rule values are compared with.
pub fn compare_form(kind: FieldKind, s: &str) -> String {
    let mut canon = String::with_capacity(s.len());
    canonical_into(kind, s, &mut canon);
    fold(&canon)
}

/// Splits a Windows command line into arguments the way `CommandLineToArgvW` and the
/// Microsoft C runtime do: blanks (space, tab) outside double quotes separate; quotes
/// are removed; `2n` backslashes before a quote give `n` backslashes and the quote
/// toggles quoting, `2n+1` give `n` backslashes and a literal quote; `""` inside quotes
/// is a literal quote; backslashes elsewhere are literal.
pub fn split_args(cmd: &str) -> Vec<String> {
    let mut args = Vec::new();
    for_each_arg(cmd, &mut String::new(), |a| args.push(a.to_string()));
    args
}

/// [`split_args`] without allocating: `f` sees each argument, built in `scratch`.
pub fn for_each_arg(cmd: &str, scratch: &mut String, mut f: impl FnMut(&str)) {
    let cur = scratch;
    cur.clear();
    let mut quoted = false;
    let mut have = false;
    let mut chars = cmd.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                let mut n = 1;
                while chars.peek() == Some(&'\\') {
                    chars.next();
                    n += 1;
                }
                if chars.peek() == Some(&'"') {
                    cur.extend(std::iter::repeat_n('\\', n / 2));
                    if n % 2 == 1 {
                        cur.push('"');
                        chars.next();
                    }
                } else {
                    cur.extend(std::iter::repeat_n('\\', n));
                }
                have = true;
            }
            '"' => {
                if quoted && chars.peek() == Some(&'"') {
                    cur.push('"');
                    chars.next();
                } else {
                    quoted = !quoted;
                }
                have = true;
            }
            ' ' | '\t' if !quoted => {
                if have {
                    f(cur);
                    cur.clear();
                    have = false;
                }
            }
            _ => {
                cur.push(c);
                have = true;
            }
        }
    }
    if have {
        f(cur);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fold_is_ascii_lower_and_never_crosses_into_ascii() {
        assert_eq!(fold("AppCmd.EXE"), "appcmd.exe");
        assert_eq!(fold("ÄÖÜ"), "äöü");
        // Kelvin sign lowercases to ASCII 'k' in Unicode: kept, so the byte prefilter stays sound.
        assert_eq!(fold("\u{212A}"), "\u{212A}");
        // Dotted capital I lowercases to two characters: kept.
        assert_eq!(fold("\u{130}"), "\u{130}");
    }

    #[test]
    fn path_canonical_form() {
        assert_eq!(compare_form(FieldKind::Path, "C:/Windows/System32/AppCmd.exe"), r"c:\windows\system32\appcmd.exe");
        assert_eq!(compare_form(FieldKind::Text, "a/B"), "a/b");
    }

    macro_rules! argv_cases {
        ($($cmd:expr => [$($arg:expr),*];)*) => {
            #[test]
            fn argv_like_command_line_to_argv_w() {
                $(
                    let want: Vec<&str> = vec![$($arg),*];
                    assert_eq!(split_args($cmd), want, "command line {:?}", $cmd);
                )*
            }
        };
    }

    argv_cases! {
        "" => [];
        "   " => [];
        "appcmd list apppool /text:*" => ["appcmd", "list", "apppool", "/text:*"];
        r#""C:\Windows\appcmd.exe"  list  "/text:x""# => [r"C:\Windows\appcmd.exe", "list", "/text:x"];
        r#"a l"is"t b"# => ["a", "list", "b"];
        r#"a "" b"# => ["a", "", "b"];
        r#"a\\\"b"# => [r#"a\"b"#];
        r#"a\\"b c" d"# => [r"a\b c", "d"];
        r#"a\b\c"# => [r"a\b\c"];
        r#""a""b" c"# => [r#"a"b"#, "c"];
        "x\ty" => ["x", "y"];
        r#"list apppool "ERROR ( message:Configuration error " /text:processmodel.username"# =>
            ["list", "apppool", "ERROR ( message:Configuration error ", "/text:processmodel.username"];
    }
}
