//! Command lines as the programs that receive them see them.
//!
//! `appcmd ins"tall" module` is `appcmd install module` to appcmd: the C runtime removes the
//! quotes when it splits the command line into arguments. `c^m^d` is `cmd` to cmd.exe, which
//! removes carets outside quotes. Rules that read a command line see it as typed, as the
//! program's arguments joined by one space, and, when the process is cmd.exe, with carets
//! removed first; a test on a command line holds if it holds on any of these views.

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

/// The arguments of a command line joined by one space: what the program sees.
pub fn arguments_joined(cmd: &str, scratch: &mut String, out: &mut String) {
    let mut first = true;
    for_each_arg(cmd, scratch, |a| {
        if !first {
            out.push(' ');
        }
        out.push_str(a);
        first = false;
    });
}

/// The command line as cmd.exe reads it: a caret outside double quotes escapes the next
/// character and is removed (`^^` is one caret).
pub fn without_carets(cmd: &str, out: &mut String) {
    let mut quoted = false;
    let mut chars = cmd.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                quoted = !quoted;
                out.push(c);
            }
            '^' if !quoted => out.extend(chars.next()),
            _ => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        "a\u{a0}b" => ["a\u{a0}b"];
        r#"list apppool "ERROR ( message:Configuration error " /text:processmodel.username"# =>
            ["list", "apppool", "ERROR ( message:Configuration error ", "/text:processmodel.username"];
    }
}

#[cfg(test)]
mod view_tests {
    use super::*;

    #[test]
    fn joined_arguments_and_carets() {
        let mut out = String::new();
        arguments_joined(r#""C:\x\appcmd.exe"   ins"tall" "module"  /image:x"#, &mut String::new(), &mut out);
        assert_eq!(out, r"C:\x\appcmd.exe install module /image:x");
        out.clear();
        without_carets(r#"c^m^d /c "a^b" ^^x^"#, &mut out);
        assert_eq!(out, r#"cmd /c "a^b" ^x"#);
    }
}
