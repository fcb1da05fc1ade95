//! What text every value a matcher accepts contains: the fragments the prefilter's
//! literals are made of. All of the derivation is here (the rules only compile patterns;
//! `literals` turns these fragments into the literals of each space), so the argument that
//! the prefilter never passes over a line a rule could match is read in this module and
//! its parent: each function says what it may leave out and why that is sound.

use regex_syntax::hir::{Class, Hir, HirKind};

use crate::normalize::{FieldKind, fold, path};
use crate::rules::pattern::{Matcher, RegexFlags, Token};

/// The literal text a matching value must contain, per way of matching: one list of
/// fragments (in compare form) for each alternative, every fragment of which a value
/// matching through that alternative contains. `None` when some alternative requires
/// nothing (the empty string, `*`, `null`).
///
/// How a run of literal text is cut depends on the field ([`split_fragments`]); for
/// command lines and arguments the fragments are only found in the prefilter's
/// *deleted* text, where quotes, backslashes and carets are gone (they may be inserted
/// anywhere and are removed before the program sees the line).
pub fn required(matcher: &Matcher, kind: FieldKind) -> Option<Vec<Vec<String>>> {
    let runs: Vec<String> = match matcher {
        Matcher::Null | Matcher::Exists(_) | Matcher::Compare(..) | Matcher::Cidr(_) | Matcher::FieldRef { .. } => {
            return None;
        }
        Matcher::Any(alternatives) => {
            let per: Option<Vec<Vec<Vec<String>>>> = alternatives.iter().map(|m| required(m, kind)).collect();
            return per.map(|p| p.into_iter().flatten().collect());
        }
        Matcher::Int(n) => vec![n.unsigned_abs().to_string()],
        // Each form is a way of matching: its fragments are one alternative.
        Matcher::Str(p) => {
            let mut alternatives: Vec<Vec<String>> = Vec::new();
            for tokens in p.form_tokens() {
                let runs: Vec<String> = tokens
                    .iter()
                    .filter_map(|t| match t {
                        Token::Lit(l) if p.cased() => Some(fold(l)),
                        Token::Lit(l) => Some(l.clone()),
                        _ => None,
                    })
                    .collect();
                let fragments = fragments_of(&runs, kind);
                if fragments.is_empty() {
                    return None;
                }
                if !alternatives.contains(&fragments) {
                    alternatives.push(fragments);
                }
            }
            return (!alternatives.is_empty()).then_some(alternatives);
        }
        Matcher::Regex(p) => regex_literals(p.re.as_str(), p.flags),
    };
    let fragments = fragments_of(&runs, kind);
    (!fragments.is_empty()).then(|| vec![fragments])
}

/// Literal text every match of a regular expression contains, folded; read with the
/// flags the engine uses (case-insensitive `s` also matches `ſ`, which breaks a run).
pub fn regex_literals(pattern: &str, flags: RegexFlags) -> Vec<String> {
    let parsed = regex_syntax::ParserBuilder::new()
        .case_insensitive(flags.ignore_case)
        .multi_line(flags.multi_line)
        .dot_matches_new_line(flags.dot_all)
        .build()
        .parse(pattern);
    let mut runs = Vec::new();
    if let Ok(hir) = parsed {
        required_runs(&hir, &mut runs, 0);
    }
    runs.into_iter().filter(|r: &String| !r.is_empty()).map(|r| fold(&r)).collect()
}

fn required_runs(hir: &Hir, out: &mut Vec<String>, depth: usize) {
    if depth > 64 {
        return;
    }
    match hir.kind() {
        HirKind::Concat(children) => {
            let mut run = String::new();
            for child in children {
                match literal_text(child) {
                    Some(text) => run.push_str(&text),
                    None => {
                        out.push(std::mem::take(&mut run));
                        required_runs(child, out, depth + 1);
                    }
                }
            }
            out.push(run);
        }
        HirKind::Capture(c) => required_runs(&c.sub, out, depth + 1),
        HirKind::Repetition(r) if r.min >= 1 => required_runs(&r.sub, out, depth + 1),
        _ => out.extend(literal_text(hir)),
    }
}

/// The text of a literal node, or of a class that is one letter in either case.
fn literal_text(hir: &Hir) -> Option<String> {
    match hir.kind() {
        HirKind::Literal(lit) => std::str::from_utf8(&lit.0).ok().map(str::to_string),
        HirKind::Class(Class::Unicode(class)) => {
            let mut chars = Vec::new();
            for range in class.ranges() {
                for c in range.start()..=range.end() {
                    chars.push(c);
                    if chars.len() > 2 {
                        return None;
                    }
                }
            }
            let first = *chars.first()?;
            let folded = |c: char| fold(c.encode_utf8(&mut [0u8; 4]));
            chars.iter().all(|&c| folded(c) == folded(first)).then(|| first.to_string())
        }
        _ => None,
    }
}

/// The fragments of runs of literal text (see [`split_fragments`]); in paths, those a
/// variable's expansion could supply are left out.
fn fragments_of(runs: &[String], kind: FieldKind) -> Vec<String> {
    runs.iter()
        .flat_map(|r| split_fragments(r, kind))
        .filter(|f| kind != FieldKind::Path || !path::from_expansion(f))
        .collect()
}

/// Cuts a run of text into the pieces that appear verbatim (modulo ASCII case and JSON
/// escaping) in the prefilter's text: non-ASCII characters are cut out (their case fold is
/// not byte-stable). In paths and other text `/` is cut out (JSON may write it `\/`, so no
/// raw literal holds one and no scan for `\/` is needed), and in paths `\` too (either
/// separator may be written). Command lines and arguments are found in the deleted text
/// (no `\`, `"`, `^`; `\/` there is `/`): they are cut at those and at blanks and control
/// characters (runs of blanks are one blank to the program), and at `&`, `;`, `<`, `>` and
/// `'`, which Windows XML may write as references (the deleted text of an XML line drops
/// `&quot;` too, see [`crate::prefilter::delete_into`]).
pub fn split_fragments(run: &str, kind: FieldKind) -> Vec<String> {
    let cut = |c: char| match kind {
        FieldKind::CommandLine | FieldKind::Argument => {
            !c.is_ascii()
                || c.is_ascii_whitespace()
                || c.is_ascii_control()
                || matches!(c, '\\' | '"' | '^' | '&' | ';' | '<' | '>' | '\'')
        }
        FieldKind::Path => !c.is_ascii() || c == '/' || c == '\\',
        FieldKind::Text => !c.is_ascii() || c == '/',
    };
    run.split(cut).filter(|s| !s.is_empty()).map(str::to_string).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::pattern::tokenize;

    #[test]
    fn regex_runs() {
        let f = RegexFlags::default();
        assert_eq!(regex_literals(r"(?i)(?:^|\\)tomcat[^\\]*$", f), vec!["tomcat"]);
        assert_eq!(regex_literals(r"abc\d+def", f), vec!["abc", "def"]);
        assert_eq!(regex_literals(r"(foo|bar)x", f), vec!["x"]);
        assert_eq!(regex_literals(r"a(?:bc)+d", f), vec!["a", "bc", "d"]);
        let i = RegexFlags { ignore_case: true, ..f };
        assert_eq!(regex_literals("TomCat", i), vec!["tomcat"]);
        // `s` and `k` also match U+017F and U+212A under Unicode case folding: no run.
        assert_eq!(regex_literals("sk", i), Vec::<String>::new());
    }

    #[test]
    fn fragments() {
        let one = |v: &[&str]| Some(vec![v.iter().map(|s| s.to_string()).collect::<Vec<_>>()]);
        let m =
            Matcher::string(vec![Token::Star, Token::Lit(r"\inetpub\".into()), Token::Star], FieldKind::Path, false);
        assert_eq!(required(&m, FieldKind::Path), one(&["inetpub"]));
        let m = Matcher::string(tokenize(r"*\Services\W3SVC*"), FieldKind::Text, false);
        assert_eq!(required(&m, FieldKind::Text), one(&[r"\services\w3svc"]));
        let m = Matcher::string(tokenize("naïve*x"), FieldKind::Text, false);
        assert_eq!(required(&m, FieldKind::Text), one(&["na", "ve", "x"]));
        assert_eq!(required(&Matcher::string(tokenize("*"), FieldKind::Text, false), FieldKind::Text), None);
        assert_eq!(required(&Matcher::Null, FieldKind::Text), None);
        assert_eq!(required(&Matcher::Int(-29), FieldKind::Text), one(&["29"]));
        let m = Matcher::string(tokenize("list"), FieldKind::Argument, false);
        assert_eq!(required(&m, FieldKind::Argument), one(&["list"]));
        let m = Matcher::string(tokenize(r#"*install "x\y^z  /c*"#), FieldKind::CommandLine, false);
        assert_eq!(
            required(&m, FieldKind::CommandLine),
            one(&["install", "x", "y", "z", "/c"]),
            "command lines: cut at blanks, quotes, backslashes, carets"
        );
        let m = Matcher::string(tokenize(r"C:\Windows\System32\\*"), FieldKind::Path, false);
        assert_eq!(required(&m, FieldKind::Path), one(&["system32"]), "`c:` and `windows` may come from %windir%");
        let m = Matcher::string(tokenize(r"*\powershell.exe"), FieldKind::Path, false);
        assert_eq!(
            required(&m, FieldKind::Path),
            Some(vec![vec!["powershell.exe".to_string()], vec!["powers~".to_string(), ".exe".to_string()]])
        );
    }
}
