//! Which literals a rule requires: conjunctive normal form over the compiled expression.
//!
//! A *clause* is a set of alternatives one of which every matching line contains; a rule's
//! literals are a list of clauses, all required. An atom gives one clause (the best
//! literal of each of its values); `and` joins clauses; `or` unites the best clause of each
//! branch into one; `not` and anything without a usable literal give no clause.

use std::collections::HashMap;

use regex_syntax::hir::{Class, Hir, HirKind};

use super::canonical::escape_literal;
use crate::fields::FieldCatalog;
use crate::normalize::fold;
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

#[derive(Default)]
pub(super) struct LiteralTable {
    pub(super) literals: Vec<String>,
    index: HashMap<String, u32>,
}

impl LiteralTable {
    pub(super) fn id(&mut self, literal: &str) -> u32 {
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

/// Literals shorter than this make a slow trigger: a Teddy scan fingerprints as many
/// bytes as its shortest pattern has (up to four).
const GOOD_TRIGGER_BYTES: usize = 4;

fn literal_cost(literal: &str) -> f64 {
    let len = literal.len() as f64;
    let common = is_common(literal) || literal.len() < GOOD_TRIGGER_BYTES;
    1.0 / (len * len) + if common { 1.0 } else { 0.0 }
}

pub(super) fn clause_cost(clause: &[u32], literals: &[String]) -> f64 {
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
pub(super) fn cnf(expr: &Expr, fields: &FieldCatalog) -> Vec<Vec<String>> {
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
    // Per value: one literal per way it can match (all of them, or none usable).
    let per_value: Vec<Option<Vec<String>>> = atom
        .matchers
        .iter()
        .map(|m| m.required_fragments(kind).and_then(|alts| alts.iter().map(|f| value_literal(f)).collect()))
        .collect();
    if atom.all {
        return per_value.into_iter().flatten().collect();
    }
    let mut clause: Vec<String> = match per_value.into_iter().collect::<Option<Vec<Vec<String>>>>() {
        Some(lits) => lits.into_iter().flatten().collect(),
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
}
