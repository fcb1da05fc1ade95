//! The prefilter: which lines can possibly match which rules, decided over raw bytes.
//!
//! From every rule the loader derives, in conjunctive normal form, literals a matching
//! line must contain: a *clause* is a set of alternatives, and every clause of a rule must
//! be satisfied for the rule to be worth evaluating. The literals are written the way they
//! appear in JSON text (a backslash doubled) and lower-cased; the line is lower-cased
//! (ASCII only) before it is scanned.
//!
//! Two automata do the work. The *trigger* automaton holds one clause per rule, the
//! rarest by a simple estimate; it scans whole chunks of the stream, and most lines never
//! contain any of its literals. On a line where a trigger is found, the *confirm* automaton
//! (all literals, overlapping matches) lists the literals present and every clause of the
//! triggered rules is checked; only then is the line parsed.
//!
//! Soundness: the prefilter may only pass over a line the rules could not match.
//! * Case: literals and line are both ASCII-lower-cased, and field values are folded so
//!   that no non-ASCII character becomes ASCII ([`crate::normalize`]); literals keep only
//!   ASCII text.
//! * JSON escapes: `\u0061ppcmd` or `\/` can hide a literal from a byte scan. A line with
//!   such an escape is always examined, on a canonical copy where those escapes are
//!   decoded (see [`canonicalize`]).
//! * Paths: `/` and `\` are the same separator, so path literals never contain either.
//! * Arguments (quotes removed) and negations contribute no literal.

use aho_corasick::{AhoCorasick, AhoCorasickKind, MatchKind};
use memchr::memmem;
use regex_syntax::hir::{Class, Hir, HirKind};

use crate::fields::FieldCatalog;
use crate::normalize::{fold, fold_char};
use crate::rules::RuleSet;
use crate::rules::expr::{Atom, Expr};
use crate::rules::pattern::RegexFlags;

/// Literals shorter than this are too common to help and are not used.
pub const MIN_LITERAL_BYTES: usize = 3;

/// Literals so frequent in Windows logs that a clause holding one is a poor trigger.
const COMMON: &[&str] = &[
    "cmd.exe",
    "powershell.exe",
    "conhost.exe",
    "svchost.exe",
    "explorer.exe",
    "rundll32.exe",
    "system32",
    "syswow64",
    "windows",
    "program files",
    "programdata",
    "microsoft",
    "appdata",
    "users",
    "temp",
    "microsoft-windows-sysmon/operational",
    "security",
    "system",
    "application",
    "microsoft-windows-powershell/operational",
];

/// A clause: literal ids, at least one of which must be present.
type Clause = Vec<u32>;

/// What a rule needs to be evaluated.
#[derive(Debug, Clone)]
struct Plan {
    clauses: Vec<Clause>,
}

/// The compiled prefilter for a rule set.
#[derive(Debug)]
pub struct Prefilter {
    literals: Vec<String>,
    trigger: Option<AhoCorasick>,
    /// For each trigger pattern, the literal id it is.
    trigger_ids: Vec<u32>,
    confirm: Option<AhoCorasick>,
    plans: Vec<Plan>,
    /// Literal id → rules whose trigger clause holds it.
    triggered_rules: Vec<Vec<u32>>,
    /// Rules with no literal at all: evaluated on every line.
    always: Vec<u32>,
    escape_u: memmem::Finder<'static>,
    escape_slash: memmem::Finder<'static>,
}

/// Per-stream scratch space of the prefilter.
#[derive(Debug, Default)]
pub struct Scratch {
    seen: Vec<u64>,
    touched: Vec<u32>,
    rule_stamp: Vec<u32>,
    stamp: u32,
    rules: Vec<u32>,
    canonical: Vec<u8>,
}

impl Prefilter {
    /// Derives the literals of every rule and builds the automata.
    pub fn new(set: &RuleSet) -> Prefilter {
        let mut builder = LiteralTable::default();
        let mut plans = Vec::with_capacity(set.rules().len());
        for rule in set.rules() {
            let cnf = cnf(&rule.expr, set.fields());
            let clauses = cnf.into_iter().map(|c| c.iter().map(|l| builder.id(l)).collect()).collect();
            plans.push(Plan { clauses });
        }
        let literals = builder.literals;
        let mut triggered_rules = vec![Vec::new(); literals.len()];
        let mut always = Vec::new();
        for (r, plan) in plans.iter().enumerate() {
            match plan.clauses.iter().min_by(|a, b| clause_cost(a, &literals).total_cmp(&clause_cost(b, &literals))) {
                Some(best) => best.iter().for_each(|&l| triggered_rules[l as usize].push(r as u32)),
                None => always.push(r as u32),
            }
        }
        let trigger_ids: Vec<u32> =
            (0..literals.len() as u32).filter(|&l| !triggered_rules[l as usize].is_empty()).collect();
        let trigger = automaton(trigger_ids.iter().map(|&l| &literals[l as usize]), MatchKind::LeftmostFirst);
        let confirm = automaton(literals.iter(), MatchKind::Standard);
        Prefilter {
            literals,
            trigger,
            trigger_ids,
            confirm,
            plans,
            triggered_rules,
            always,
            escape_u: memmem::Finder::new(b"\\u").into_owned(),
            escape_slash: memmem::Finder::new(b"\\/").into_owned(),
        }
    }

    /// True when some rule has no literal: then every line must be examined.
    pub fn examines_every_line(&self) -> bool {
        !self.always.is_empty()
    }

    /// Rules with no literal, evaluated on every record.
    pub fn unconstrained_rules(&self) -> &[u32] {
        &self.always
    }

    /// The literals of the trigger automaton (for `rules --explain` and tests).
    pub fn trigger_literals(&self) -> impl Iterator<Item = &str> {
        self.trigger_ids.iter().map(|&l| self.literals[l as usize].as_str())
    }

    /// Start of the first trigger literal in `lower[from..]` (absolute offset).
    pub fn next_trigger(&self, lower: &[u8], from: usize) -> Option<usize> {
        let ac = self.trigger.as_ref()?;
        ac.find(&lower[from..]).map(|m| from + m.start())
    }

    /// Offset of the first JSON escape at or after `from` that could hide a literal
    /// (`\uXXXX` or `\/`, not preceded by an escaping backslash). `hay` is the raw or
    /// lower-cased text (the two agree on backslashes).
    pub fn next_hiding_escape(&self, hay: &[u8], from: usize) -> Option<usize> {
        let u = next_real_escape(&self.escape_u, hay, from);
        let slash = next_real_escape(&self.escape_slash, hay, from);
        match (u, slash) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The rules worth evaluating on one line. `raw` is the line as read, `lower` its
    /// ASCII-lower-cased copy; `has_escape` says the line holds a hiding escape.
    pub fn rules_for_line<'s>(
        &self,
        raw: &[u8],
        lower: &[u8],
        has_escape: bool,
        scratch: &'s mut Scratch,
    ) -> &'s [u32] {
        scratch.begin(self.literals.len(), self.plans.len());
        let text: &[u8] = if has_escape {
            canonicalize(raw, &mut scratch.canonical);
            &scratch.canonical
        } else {
            lower
        };
        if let Some(confirm) = &self.confirm {
            for m in confirm.find_overlapping_iter(text) {
                let id = m.pattern().as_u32();
                let (word, bit) = ((id / 64) as usize, 1u64 << (id % 64));
                if scratch.seen[word] & bit == 0 {
                    scratch.seen[word] |= bit;
                    scratch.touched.push(id);
                }
            }
        }
        let stamp = scratch.stamp;
        for i in 0..scratch.touched.len() {
            let lit = scratch.touched[i];
            for &r in &self.triggered_rules[lit as usize] {
                if scratch.rule_stamp[r as usize] != stamp && self.satisfied(r, &scratch.seen) {
                    scratch.rule_stamp[r as usize] = stamp;
                    scratch.rules.push(r);
                }
            }
        }
        scratch.rules.extend_from_slice(&self.always);
        scratch.rules.sort_unstable();
        &scratch.rules
    }

    fn satisfied(&self, rule: u32, seen: &[u64]) -> bool {
        self.plans[rule as usize]
            .clauses
            .iter()
            .all(|clause| clause.iter().any(|&l| seen[(l / 64) as usize] & (1u64 << (l % 64)) != 0))
    }
}

impl Scratch {
    fn begin(&mut self, literals: usize, rules: usize) {
        let words = literals.div_ceil(64);
        if self.seen.len() != words {
            self.seen = vec![0; words];
        }
        for &id in &self.touched {
            self.seen[(id / 64) as usize] = 0;
        }
        self.touched.clear();
        self.rules.clear();
        if self.rule_stamp.len() != rules {
            self.rule_stamp = vec![0; rules];
        }
        self.stamp = self.stamp.wrapping_add(1);
        if self.stamp == 0 {
            self.rule_stamp.iter_mut().for_each(|s| *s = 0);
            self.stamp = 1;
        }
    }
}

fn automaton<'a>(patterns: impl Iterator<Item = &'a String>, kind: MatchKind) -> Option<AhoCorasick> {
    let patterns: Vec<&String> = patterns.collect();
    if patterns.is_empty() {
        return None;
    }
    let ac = AhoCorasick::builder()
        .match_kind(kind)
        .kind(Some(AhoCorasickKind::DFA))
        .build(&patterns)
        .or_else(|_| AhoCorasick::builder().match_kind(kind).build(&patterns));
    Some(ac.expect("literal automaton builds (literals are short and bounded in number)"))
}

fn next_real_escape(finder: &memmem::Finder<'_>, hay: &[u8], mut from: usize) -> Option<usize> {
    while let Some(i) = finder.find(&hay[from..]).map(|i| from + i) {
        // The backslash at `i` escapes the next byte only if the run of backslashes
        // ending at `i` has odd length.
        let run = hay[..=i].iter().rev().take_while(|&&b| b == b'\\').count();
        if run % 2 == 1 {
            return Some(i);
        }
        from = i + 2;
    }
    None
}

/// Writes the canonical scan form of a raw JSON line: ASCII lower-cased, `\/` decoded,
/// `\uXXXX` decoded (a lone surrogate becomes U+FFFD) and re-escaped the way literals are
/// ([`escape_literal`]): `"` as `\"`, `\` as `\\`, control characters as short escapes.
pub fn canonicalize(raw: &[u8], out: &mut Vec<u8>) {
    out.clear();
    out.reserve(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        if b != b'\\' || i + 1 >= raw.len() {
            out.push(b.to_ascii_lowercase());
            i += 1;
            continue;
        }
        match raw[i + 1] {
            b'/' => {
                out.push(b'/');
                i += 2;
            }
            b'u' => match decode_unicode_escape(&raw[i..]) {
                Some((c, used)) => {
                    let mut buf = [0u8; 4];
                    let mut lit = String::new();
                    escape_char(c.to_ascii_lowercase(), &mut lit, &mut buf);
                    out.extend_from_slice(lit.as_bytes());
                    i += used;
                }
                None => {
                    out.extend_from_slice(b"\\u");
                    i += 2;
                }
            },
            other => {
                out.push(b'\\');
                out.push(other.to_ascii_lowercase());
                i += 2;
            }
        }
    }
}

fn hex4(bytes: &[u8]) -> Option<u32> {
    let s = std::str::from_utf8(bytes.get(..4)?).ok()?;
    u32::from_str_radix(s, 16).ok().filter(|_| s.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Decodes `\uXXXX` (and a following low surrogate) at the start of `s`.
fn decode_unicode_escape(s: &[u8]) -> Option<(char, usize)> {
    let hi = hex4(&s[2..])?;
    if (0xD800..0xDC00).contains(&hi) {
        if s.get(6..8) == Some(b"\\u") {
            if let Some(lo) = hex4(&s[8..]).filter(|lo| (0xDC00..0xE000).contains(lo)) {
                let c = 0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00);
                return Some((char::from_u32(c)?, 12));
            }
        }
        return Some(('\u{FFFD}', 6));
    }
    Some((char::from_u32(hi).unwrap_or('\u{FFFD}'), 6))
}

fn escape_char(c: char, out: &mut String, buf: &mut [u8; 4]) {
    match c {
        '"' => out.push_str("\\\""),
        '\\' => out.push_str("\\\\"),
        '\u{8}' => out.push_str("\\b"),
        '\u{c}' => out.push_str("\\f"),
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
        c => out.push_str(c.encode_utf8(buf)),
    }
}

/// A fragment of text as it appears in JSON (the canonical escaping).
pub fn escape_literal(fragment: &str) -> String {
    let mut out = String::with_capacity(fragment.len() + 2);
    let mut buf = [0u8; 4];
    for c in fragment.chars() {
        escape_char(c, &mut out, &mut buf);
    }
    out
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
            chars.iter().all(|&c| fold_char(c) == fold_char(first)).then(|| first.to_string())
        }
        _ => None,
    }
}

#[derive(Default)]
struct LiteralTable {
    literals: Vec<String>,
    index: std::collections::HashMap<String, u32>,
}

impl LiteralTable {
    fn id(&mut self, literal: &str) -> u32 {
        if let Some(&id) = self.index.get(literal) {
            return id;
        }
        let id = self.literals.len() as u32;
        self.literals.push(literal.to_string());
        self.index.insert(literal.to_string(), id);
        id
    }
}

fn is_common(literal: &str) -> bool {
    COMMON.iter().any(|c| c.contains(literal))
}

fn literal_cost(literal: &str) -> f64 {
    let len = literal.len() as f64;
    1.0 / (len * len) + if is_common(literal) { 1.0 } else { 0.0 }
}

fn clause_cost(clause: &[u32], literals: &[String]) -> f64 {
    clause.iter().map(|&l| literal_cost(&literals[l as usize])).sum()
}

fn string_clause_cost(clause: &[String]) -> f64 {
    clause.iter().map(|l| literal_cost(l)).sum()
}

/// The best literal for one value: its longest required fragment, escaped.
fn value_literal(fragments: &[String]) -> Option<String> {
    fragments
        .iter()
        .filter(|f| f.len() >= MIN_LITERAL_BYTES)
        .max_by(|a, b| literal_cost(b).total_cmp(&literal_cost(a)))
        .map(|f| escape_literal(f))
}

/// Conjunctive normal form of the literals an expression requires (no clause: nothing).
fn cnf(expr: &Expr, fields: &FieldCatalog) -> Vec<Vec<String>> {
    match expr {
        Expr::And(children) => children.iter().flat_map(|c| cnf(c, fields)).collect(),
        Expr::Or(children) => {
            let mut union = Vec::new();
            for child in children {
                let clauses = cnf(child, fields);
                let Some(best) =
                    clauses.into_iter().min_by(|a, b| string_clause_cost(a).total_cmp(&string_clause_cost(b)))
                else {
                    return Vec::new();
                };
                union.extend(best);
            }
            union.sort();
            union.dedup();
            vec![union]
        }
        Expr::Not(inner) => match inner.as_ref() {
            Expr::Not(x) => cnf(x, fields),
            _ => Vec::new(),
        },
        Expr::Atom(atom) => atom_cnf(atom, fields),
        Expr::Const(_) => Vec::new(),
    }
}

fn atom_cnf(atom: &Atom, fields: &FieldCatalog) -> Vec<Vec<String>> {
    let kind = fields.kind(atom.field);
    let per_value: Vec<Option<String>> =
        atom.matchers.iter().map(|m| m.required_fragments(kind).and_then(|f| value_literal(&f))).collect();
    if atom.all {
        return per_value.into_iter().flatten().map(|l| vec![l]).collect();
    }
    let mut clause: Vec<String> = match per_value.into_iter().collect::<Option<Vec<_>>>() {
        Some(lits) => lits,
        None => return Vec::new(),
    };
    clause.sort();
    clause.dedup();
    if clause.is_empty() { Vec::new() } else { vec![clause] }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_form_decodes_hiding_escapes() {
        let mut out = Vec::new();
        canonicalize(br#"{"Image":"C:\\X\\\u0041ppCmd.exe","c":"a\/b","q":"\u0022\u005c\ud800x"}"#, &mut out);
        assert_eq!(String::from_utf8(out).expect("utf8"), r#"{"image":"c:\\x\\appcmd.exe","c":"a/b","q":"\"\\�x"}"#);
    }

    #[test]
    fn escape_parity() {
        let p = Prefilter::new(&RuleSet::default());
        assert_eq!(p.next_hiding_escape(br#"c:\\users"#, 0), None);
        assert_eq!(p.next_hiding_escape(br#"c:\\\u0041"#, 0), Some(4));
        assert_eq!(p.next_hiding_escape(br#"x\/y"#, 0), Some(1));
        assert_eq!(p.next_hiding_escape(br#"x\\/y"#, 0), None);
    }

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
    fn builtins_have_selective_triggers() {
        let set = RuleSet::builtin().expect("built-ins load");
        let p = Prefilter::new(&set);
        assert!(!p.examines_every_line(), "every built-in rule has a literal");
        let triggers: Vec<&str> = p.trigger_literals().collect();
        for common in ["cmd.exe", "powershell.exe", "microsoft-windows-sysmon/operational", "security"] {
            assert!(!triggers.contains(&common), "{common} must not be a trigger: {triggers:?}");
        }
        for needed in ["appcmd.exe", "w3wp.exe", "tomcat", "msiexec.exe", "inetpub", "\\\\services\\\\w3svc"] {
            assert!(triggers.contains(&needed), "{needed} missing from {triggers:?}");
        }
    }
}
