//! Windows paths as Windows resolves them.
//!
//! `"C:/WINDOWS//System32/./cmd.exe. "`, `\\?\C:\Windows\System32\cmd.exe`,
//! `%SystemRoot%\System32\cmd.exe` and `\SystemRoot\System32\cmd.exe` all name
//! `C:\Windows\System32\cmd.exe`; rules compare against that canonical form. The
//! transformations only ever remove or replace whole separators, prefixes, components and
//! variables, so a rule literal found in the canonical form is found in the raw text too,
//! unless it comes from a variable's expansion: [`from_expansion`] tells the prefilter which
//! fragments those can be.

use std::borrow::Cow;

/// Variables with a fixed value on a standard installation, and that value.
const EXPANSIONS: &[(&str, &str)] = &[
    ("systemroot", "C:\\Windows"),
    ("windir", "C:\\Windows"),
    ("systemdrive", "C:"),
    ("programfiles", "C:\\Program Files"),
    ("programw6432", "C:\\Program Files"),
    ("programfiles(x86)", "C:\\Program Files (x86)"),
    ("programdata", "C:\\ProgramData"),
    ("allusersprofile", "C:\\ProgramData"),
    ("commonprogramfiles", "C:\\Program Files\\Common Files"),
    ("commonprogramfiles(x86)", "C:\\Program Files (x86)\\Common Files"),
    ("commonprogramw6432", "C:\\Program Files\\Common Files"),
    ("public", "C:\\Users\\Public"),
];

/// Whether a (folded) fragment of a rule value could come from a variable's expansion,
/// and so may be absent from the raw text of a matching path.
pub fn from_expansion(fragment: &str) -> bool {
    EXPANSIONS.iter().any(|(_, value)| value.to_ascii_lowercase().contains(fragment))
}

/// Strips surrounding whitespace and pairs of surrounding double quotes, as many as there
/// are (`  ""x"" ` → `x`).
pub fn trim_wrapping(s: &str) -> &str {
    let mut t = s.trim();
    while let Some(inner) = t.strip_prefix('"').and_then(|t| t.strip_suffix('"')) {
        t = inner.trim();
    }
    t
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix).then(|| &s[prefix.len()..])
}

/// Replaces `%NAME%` of the known variables (case-insensitive); others are kept.
fn expand_into(s: &str, out: &mut String) {
    let mut rest = s;
    while let Some(open) = memchr::memchr(b'%', rest.as_bytes()) {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        match memchr::memchr(b'%', after.as_bytes()) {
            Some(close) => {
                let name = &after[..close];
                match EXPANSIONS.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)) {
                    Some((_, value)) => out.push_str(value),
                    None => {
                        out.push('%');
                        out.push_str(name);
                        out.push('%');
                    }
                }
                rest = &after[close + 1..];
            }
            None => {
                out.push('%');
                rest = after;
            }
        }
    }
    out.push_str(rest);
}

/// Appends the canonical form of a path to `out` (case kept; see the module docs).
///
/// One pass can uncover what another would resolve (`x%\..\%windir%` leaves `%windir%`;
/// `\\\?\C:` leaves `\\?\C:`), so passes repeat until the form is stable (a few at most;
/// each but the first is a check that nothing changes). False when the form did not
/// settle within [`MAX_PASSES`] (crafted runs of quotes and `..`: each pass costs the
/// path's length, so the passes stop there; the caller says the record was not fully
/// evaluated).
pub fn canonical_into(raw: &str, out: &mut String) -> bool {
    let start = out.len();
    canonical_pass(raw, out);
    let made = &out[start..];
    let blank_ends = made.starts_with(char::is_whitespace) || made.ends_with(char::is_whitespace);
    // A made path that starts with `\` may have uncovered a prefix the pass reads
    // (`\SystemRoot .\` is `\SystemRoot\` once its component is trimmed).
    if !may_need_another_pass(raw) && !blank_ends && !made.starts_with('\\') {
        return true;
    }
    let mut next = String::new();
    for _ in 0..MAX_PASSES {
        next.clear();
        canonical_pass(&out[start..], &mut next);
        if next == out[start..] {
            return true;
        }
        out.truncate(start);
        out.push_str(&next);
    }
    false
}

/// Whether a second pass could change what the first made from `raw`: only a variable
/// (`%`), a prefix (`?`), a quote or a `..` can leave something for it, besides blanks left
/// at an end of what it made and a prefix at its start (a test checks every short path
/// without them).
fn may_need_another_pass(raw: &str) -> bool {
    memchr::memchr3(b'%', b'?', b'"', raw.as_bytes()).is_some() || memchr::memmem::find(raw.as_bytes(), b"..").is_some()
}

/// Passes of [`canonical_into`] before it gives up on stability: every pass after the first
/// only strips a prefix, expands a variable left bare or removes a component, so in practice
/// the second pass is stable.
const MAX_PASSES: usize = 8;

fn canonical_pass(raw: &str, out: &mut String) {
    // Quotes and blanks around the path go; a quote inside one is kept (no file name holds
    // one, and no Windows component writes one there, so removing it would only let the
    // prefilter, which reads the raw text, miss a literal the rule then finds).
    let trimmed = trim_wrapping(raw);
    // Copies only what changes: a value may be megabytes of an attacker's expanded text.
    let slashed: Cow<str> = if memchr::memchr(b'/', trimmed.as_bytes()).is_some() {
        trimmed.replace('/', "\\").into()
    } else {
        trimmed.into()
    };
    let mut s = &*slashed;
    let mut root = String::new();
    if let Some(rest) = strip_prefix_ignore_case(s, "\\\\?\\UNC\\") {
        root.push_str("\\\\");
        s = rest;
    } else if let Some(rest) = ["\\\\?\\", "\\??\\", "\\\\.\\"].iter().find_map(|p| strip_prefix_ignore_case(s, p)) {
        s = rest;
    } else if let Some(rest) = strip_prefix_ignore_case(s, "\\SystemRoot\\") {
        root.push_str("C:\\Windows\\");
        s = rest;
    } else if let Some(rest) = s.strip_prefix("\\\\") {
        root.push_str("\\\\");
        s = rest;
    }
    let expanded: Cow<str> = if memchr::memchr(b'%', s.as_bytes()).is_some() {
        let mut expanded = String::with_capacity(s.len());
        expand_into(s, &mut expanded);
        expanded.into()
    } else {
        s.into()
    };
    let mut path = &*expanded;
    if root.is_empty() && path.starts_with('\\') {
        root.push('\\');
        path = path.trim_start_matches('\\');
    }
    let trailing = path.ends_with('\\') && path.len() > 1;
    let mut parts: Vec<&str> = Vec::new();
    for part in components(path) {
        // Windows drops trailing dots and spaces; other blanks cannot be in a name (and the
        // path's own ends are trimmed of them), so they go too. What is left of a component
        // of dots and blanks only is `.` (one dot), `..` (more) or nothing.
        let stripped = part.trim_end_matches(|c: char| c == '.' || c.is_whitespace());
        if !stripped.is_empty() {
            parts.push(stripped);
        } else if part.starts_with("..") {
            // Never above a drive or the root.
            if parts.last().is_some_and(|p| !p.ends_with(':')) {
                parts.pop();
            }
        }
    }
    out.push_str(&root);
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            out.push('\\');
        }
        out.push_str(part);
    }
    if trailing && !parts.is_empty() {
        out.push('\\');
    }
}

/// The pieces of `path` between backslashes (what `split('\\')` gives, found by memchr).
fn components(path: &str) -> impl Iterator<Item = &str> {
    let mut from = 0;
    let ends = memchr::memchr_iter(b'\\', path.as_bytes()).chain(std::iter::once(path.len()));
    ends.map(move |to| {
        let part = &path[from..to];
        from = to + 1;
        part
    })
}

/// A piece of a rule value for a path field, between wildcards: separators unified and
/// collapsed, known variables expanded. (Trailing dots, `.` and `..` are only resolved in
/// event values: a piece of a pattern need not end at a component boundary.)
pub fn token_into(token: &str, out: &mut String) {
    let mut expanded = String::with_capacity(token.len());
    expand_into(token, &mut expanded);
    let mut previous_separator = false;
    for (i, c) in expanded.chars().enumerate() {
        let c = if c == '/' { '\\' } else { c };
        // A leading `\\` stays (UNC); other runs of separators collapse.
        if c == '\\' && previous_separator && i > 1 {
            continue;
        }
        previous_separator = c == '\\';
        out.push(c);
    }
}

/// The canonical form of a path.
pub fn canonical(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    canonical_into(raw, &mut out);
    out
}

/// The 8.3 short-name pattern of a (folded) file or directory name that has one distinct
/// from itself, with `?` for the generation digit: `powershell.exe` → `powers~?.exe`,
/// `program files` → `progra~?`. Only the first nine short names of a folder (`~1`–`~9`)
/// are covered.
pub fn short_name(name: &str) -> Option<String> {
    if !name.is_ascii() || name.is_empty() || name == "." || name == ".." {
        return None;
    }
    let (stem, ext) = match name.rfind('.') {
        Some(dot) if dot > 0 => (&name[..dot], &name[dot + 1..]),
        _ => (name, ""),
    };
    let valid = |c: char| !matches!(c, '+' | ',' | ';' | '=' | '[' | ']' | ' ' | '.');
    let fits = stem.len() <= 8 && ext.len() <= 3 && stem.chars().all(valid) && ext.chars().all(valid);
    if fits {
        return None;
    }
    let clean = |s: &str| -> String {
        s.chars().filter(|c| *c != ' ' && *c != '.').map(|c| if valid(c) { c } else { '_' }).collect()
    };
    let base: String = clean(stem).chars().take(6).collect();
    let ext: String = clean(ext).chars().take(3).collect();
    if base.is_empty() {
        return None;
    }
    Some(if ext.is_empty() { format!("{base}~?") } else { format!("{base}~?.{ext}") })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Quotes that a `..` uncovers one layer a pass: nested past the passes, the form does
    /// not settle and `canonical_into` says so (its record is then annotated incomplete).
    #[test]
    fn a_form_nested_past_the_passes_is_said_not_to_settle() {
        let nested = |levels: usize| (0..levels).fold("a".to_string(), |p, _| format!("\"{p}\"\\y\\.."));
        let mut out = String::new();
        assert!(canonical_into(&nested(MAX_PASSES - 1), &mut out));
        assert_eq!(out, "a");
        out.clear();
        assert!(!canonical_into(&nested(MAX_PASSES + 2), &mut out));
    }

    /// Without `%`, `?`, `"` or `..`, and unless it starts with `\\`, one pass is stable:
    /// every path of up to seven pieces of an alphabet that holds every other character the
    /// passes read, and `SystemRoot` (the prefix a trimmed component can uncover).
    #[test]
    fn one_pass_is_enough_without_variables_prefixes_quotes_or_dot_dots() {
        let alphabet = ["a", " ", ".", "\\", "/", ":", "C", "\t", "SystemRoot"];
        let mut checked = 0;
        for n in 0..=7u32 {
            for mut code in 0..(alphabet.len() as u64).pow(n) {
                let mut raw = String::new();
                for _ in 0..n {
                    raw.push_str(alphabet[(code % alphabet.len() as u64) as usize]);
                    code /= alphabet.len() as u64;
                }
                if may_need_another_pass(&raw) {
                    continue;
                }
                let mut once = String::new();
                canonical_pass(&raw, &mut once);
                if once.starts_with(char::is_whitespace) || once.ends_with(char::is_whitespace) {
                    continue;
                }
                let stable = !once.starts_with('\\');
                let mut fixpoint = once.clone();
                loop {
                    let mut next = String::new();
                    canonical_pass(&fixpoint, &mut next);
                    if next == fixpoint {
                        break;
                    }
                    fixpoint = next;
                }
                if stable {
                    assert_eq!(once, fixpoint, "{raw:?}");
                    checked += 1;
                }
                assert_eq!(canonical(&raw), fixpoint, "{raw:?}");
            }
        }
        assert!(checked > 500_000);
    }

    macro_rules! canonical_cases {
        ($($raw:expr => $want:expr;)*) => {
            #[test]
            fn canonical_forms() {
                $(assert_eq!(canonical($raw), $want, "raw {:?}", $raw);)*
            }
        };
    }

    canonical_cases! {
        r"C:\Windows\System32\cmd.exe" => r"C:\Windows\System32\cmd.exe";
        r"\SystemRoot .\System32\cmd.exe" => r"C:\Windows\System32\cmd.exe";
        "/SystemRoot ./ " => r"C:\Windows\";
        "C:/Windows/System32/cmd.exe" => r"C:\Windows\System32\cmd.exe";
        r"C:\\Windows\\\System32\cmd.exe" => r"C:\Windows\System32\cmd.exe";
        r#" "C:\Windows\System32\cmd.exe" "# => r"C:\Windows\System32\cmd.exe";
        r#" ""C:\x.exe"" "# => r"C:\x.exe";
        r"\\?\C:\Windows\System32\cmd.exe" => r"C:\Windows\System32\cmd.exe";
        r"\??\C:\Windows\System32\conhost.exe" => r"C:\Windows\System32\conhost.exe";
        r"\\.\C:\x.exe" => r"C:\x.exe";
        r"\\?\UNC\server\share\x.exe" => r"\\server\share\x.exe";
        r"\\server\share\x.exe" => r"\\server\share\x.exe";
        r"%SystemRoot%\System32\cmd.exe" => r"C:\Windows\System32\cmd.exe";
        r"%windir%\system32\inetsrv\x.dll" => r"C:\Windows\system32\inetsrv\x.dll";
        r"%ProgramFiles(x86)%\x" => r"C:\Program Files (x86)\x";
        r"%TEMP%\x.exe" => r"%TEMP%\x.exe";
        r"50% off\x" => r"50% off\x";
        r"\SystemRoot\System32\drivers\x.sys" => r"C:\Windows\System32\drivers\x.sys";
        r"C:\Windows\System32\cmd.exe." => r"C:\Windows\System32\cmd.exe";
        r"C:\Windows. \System32 \cmd.exe . ." => r"C:\Windows\System32\cmd.exe";
        r"C:\Windows\Temp\..\System32\.\cmd.exe" => r"C:\Windows\System32\cmd.exe";
        r"C:\..\..\cmd.exe" => r"C:\cmd.exe";
        r"C:\Windows\system32\" => r"C:\Windows\system32\";
        "appcmd.exe" => "appcmd.exe";
        r"\inetpub\wwwroot" => r"\inetpub\wwwroot";
        "/var/www/html/x.php" => r"\var\www\html\x.php";
        "" => "";
        "..." => "";
        r"C:\a\. \.. \b\ \c" => r"C:\b\c";
        r"x%\..\%windir%\x" => r"C:\Windows\x";
        r"\\\?\C:\x" => r"C:\x";
    }

    #[test]
    fn short_names() {
        assert_eq!(short_name("powershell.exe").as_deref(), Some("powers~?.exe"));
        assert_eq!(short_name("program files").as_deref(), Some("progra~?"));
        assert_eq!(short_name("public_html").as_deref(), Some("public~?"));
        assert_eq!(short_name("trustedinstaller.exe").as_deref(), Some("truste~?.exe"));
        assert_eq!(short_name("shell.phtml").as_deref(), Some("shell~?.pht"));
        assert_eq!(short_name("cmd.exe"), None);
        assert_eq!(short_name("w3wp.exe"), None);
        assert_eq!(short_name("iissetup.exe"), None);
    }

    #[test]
    fn rule_tokens() {
        let token = |t: &str| {
            let mut out = String::new();
            token_into(t, &mut out);
            out
        };
        assert_eq!(token("/var//www/"), r"\var\www\");
        assert_eq!(token(r"\\server\\share"), r"\\server\share");
        assert_eq!(token("%windir%\\x"), r"C:\Windows\x");
        assert_eq!(token("cmd.exe. "), "cmd.exe. ");
    }

    #[test]
    fn expansion_fragments() {
        assert!(from_expansion("windows") && from_expansion("c:") && from_expansion("program files"));
        assert!(!from_expansion("system32") && !from_expansion("inetpub"));
    }
}
