//! Which literals a rule requires: conjunctive normal form over the compiled expression.
//!
//! A *clause* is a set of alternatives one of which every matching line contains; a rule's
//! literals are a list of clauses, all required. An atom gives one clause (the best
//! literal of each of its values); `and` joins clauses; `or` unites the best clause of each
//! branch into one; `not` and anything without a usable literal give no clause.
//!
//! Each literal belongs to a [`Space`]: the text it is looked for in. Command lines and
//! their arguments are looked for in the *deleted* text (the line without `\`, `"` and
//! `^`), every other field in the lower-cased line itself. A clause mixing both is moved
//! to the deleted space whole: deleting bytes keeps every substring a substring.

use std::collections::HashMap;

use super::canonical::escape_literal;
use crate::fields::{FieldCatalog, FieldId};
use crate::normalize::FieldKind;
use crate::rules::expr::{Atom, Expr};

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

/// The text a literal is looked for in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Space {
    /// The lower-cased line (or its canonical copy).
    Raw,
    /// The same without any `\\`, `"` or `^` ([`delete_into`]).
    Deleted,
}

/// A literal and where it is looked for (lower-cased; JSON-escaped for [`Space::Raw`]),
/// and the field whose values it comes from.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct Literal {
    /// Where.
    pub space: Space,
    /// The bytes looked for.
    pub text: String,
    /// The field of the rule value it was taken from.
    #[serde(skip)]
    pub field: FieldId,
}

impl Literal {
    /// The same literal in the deleted space; `None` when its text holds an escape other
    /// than `\\` and `\"`, whose bytes the deleted text of a decoded value would not have.
    fn deleted(&self) -> Option<Literal> {
        if self.text.contains(|c: char| c.is_ascii_control()) || has_control_escape(&self.text) {
            return None;
        }
        let mut text = Vec::new();
        delete_into(self.text.as_bytes(), &mut text);
        let text = String::from_utf8(text).expect("deleting ASCII bytes keeps UTF-8");
        Some(Literal { space: Space::Deleted, text: deleted_text(&text)?, field: self.field })
    }

    /// The text as it is in a decoded value: a raw literal without its JSON escaping.
    pub fn decoded(&self) -> String {
        match self.space {
            Space::Deleted => self.text.clone(),
            Space::Raw => unescape(&self.text),
        }
    }
}

/// Whether JSON-escaped text holds an escape other than `\\` or `\"`.
fn has_control_escape(text: &str) -> bool {
    let b = text.as_bytes();
    let mut i = 0;
    while i + 1 < b.len() {
        if b[i] == b'\\' {
            if !matches!(b[i + 1], b'\\' | b'"') {
                return true;
            }
            i += 2;
        } else {
            i += 1;
        }
    }
    false
}

/// Reverses [`escape_literal`].
fn unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('b') => out.push('\u{8}'),
            Some('f') => out.push('\u{c}'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('t') => out.push('\t'),
            Some('u') => {
                let hex: String = chars.by_ref().take(4).collect();
                out.extend(u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32));
            }
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

/// Whether the prefilter deletes a byte of the lower-cased line in the deleted space.
pub fn is_deleted(b: u8) -> bool {
    matches!(b, b'\\' | b'"' | b'^')
}

/// Appends `text` without its `\\`, `"` and `^` bytes and its `&quot;` references (how
/// Windows XML writes a quote) to `out` (cleared first). No deleted-space literal holds
/// `&` or `;`, nor is a part of `quot` ([`deleted_text`]), so dropping the reference can
/// join pieces of a literal, never break one.
pub fn delete_into(text: &[u8], out: &mut Vec<u8>) {
    out.clear();
    out.resize(text.len(), 0);
    let mut n = 0;
    if memchr::memchr(b'&', text).is_none() {
        // Every byte is written, and the write position moves on only past kept ones.
        for &b in text {
            out[n] = b;
            n += usize::from(!is_deleted(b));
        }
        out.truncate(n);
        return;
    }
    let mut i = 0;
    while i < text.len() {
        let b = text[i];
        if b == b'&' && text[i + 1..].starts_with(b"quot;") {
            i += 6;
            continue;
        }
        out[n] = b;
        n += usize::from(!is_deleted(b));
        i += 1;
    }
    out.truncate(n);
}

/// The text a deleted-space literal may be: the longest run of `text` without `&`, `;`,
/// `<`, `>` or `'` (which Windows XML may write as references), unless it is too short or
/// a part of `quot` (which [`delete_into`] drops in `&quot;`).
fn deleted_text(text: &str) -> Option<String> {
    let best = text.split(['&', ';', '<', '>', '\'']).max_by_key(|run| run.len())?;
    (best.len() >= MIN_LITERAL_BYTES && !"quot".contains(best)).then(|| best.to_string())
}

/// The text of a raw-space literal as Windows XML writes it: JSON's escaping undone, and
/// cut to its longest run without `&`, `<`, `>`, `"` or `'` (which XML may write as
/// references). A value's text in an XML line holds it wherever the value holds the
/// literal, unless a character reference, a CDATA section, a comment or a character that
/// folds to ASCII is in the line (those lines are examined whole).
pub fn xml_form(literal: &Literal) -> Option<String> {
    let decoded = literal.decoded();
    let best = decoded.split(['&', '<', '>', '"', '\'']).max_by_key(|run| run.len())?;
    // As long as the trigger scan's anchors are (four bytes, or the whole literal).
    (best.len() >= literal.text.len().min(4)).then(|| best.to_string())
}

#[derive(Default)]
pub(super) struct LiteralTable {
    pub(super) literals: Vec<Literal>,
    index: HashMap<Literal, u32>,
    /// Per literal: found in a log source condition (a channel name, an event id).
    pub(super) structural: Vec<bool>,
}

impl LiteralTable {
    pub(super) fn mark_structural(&mut self, id: u32) {
        self.structural[id as usize] = true;
    }

    pub(super) fn id(&mut self, literal: &Literal) -> u32 {
        if let Some(&id) = self.index.get(literal) {
            return id;
        }
        let id = self.literals.len() as u32;
        self.literals.push(literal.clone());
        self.structural.push(false);
        self.index.insert(literal.clone(), id);
        id
    }
}

fn is_common(literal: &str) -> bool {
    COMMON.iter().any(|c| c.contains(literal))
}

/// Literals shorter than this make a slow trigger: a Teddy scan fingerprints as many
/// bytes as its shortest pattern has (up to four).
const GOOD_TRIGGER_BYTES: usize = 4;

/// Bytes of a typical event record, for turning byte frequencies into per-line odds.
const TYPICAL_LINE_BYTES: f64 = 1200.0;

/// Occurrences per million of a trigram missing from the table (it holds those above 59).
const RARE_TRIGRAM_PPM: f64 = 20.0;

pub(super) fn literal_cost(literal: &Literal) -> f64 {
    text_cost(&literal.text)
}

/// The estimated chance that a line holds `literal`: its rarest trigram's frequency over a
/// typical line, less for every byte beyond three; at least one half for the literals
/// every Windows log is full of, and a third for ones too short to scan fast.
fn text_cost(literal: &str) -> f64 {
    let b = literal.as_bytes();
    let rarest = b
        .windows(3)
        .map(|t| {
            let t = [t[0], t[1], t[2]];
            super::TRIGRAM_PPM
                .binary_search_by_key(&t, |&(k, _)| k)
                .map_or(RARE_TRIGRAM_PPM, |i| f64::from(super::TRIGRAM_PPM[i].1))
        })
        .fold(1e6, f64::min);
    let longer = b.len().saturating_sub(3) as i32;
    let mut p = (TYPICAL_LINE_BYTES * rarest / 1e6 * 0.7f64.powi(longer)).min(1.0);
    if is_common(literal) {
        p = p.max(0.5);
    }
    if b.len() < GOOD_TRIGGER_BYTES {
        p = p.max(0.3);
    }
    p
}

/// The estimated chance that a line satisfies a clause (its literals taken as
/// independent), plus a little per literal: fewer patterns make a faster scan. A literal
/// of a log source condition counts as certain.
pub(super) fn clause_cost(clause: &[u32], literals: &[Literal], structural: &[bool]) -> f64 {
    let odds = clause.iter().map(|&l| if structural[l as usize] { 1.0 } else { literal_cost(&literals[l as usize]) });
    either(odds) + 0.001 * clause.len() as f64
}

fn literal_clause_cost(clause: &[Literal]) -> f64 {
    either(clause.iter().map(literal_cost)) + 0.001 * clause.len() as f64
}

/// The chance that at least one of independent events happens.
fn either(odds: impl Iterator<Item = f64>) -> f64 {
    1.0 - odds.fold(1.0, |none, p| none * (1.0 - p))
}

/// The best literal for one value: its longest required fragment, escaped.
fn value_literal(fragments: &[String], space: Space, field: FieldId) -> Option<Literal> {
    let best = cheapest(fragments.iter().filter(|f| f.len() >= MIN_LITERAL_BYTES), |f| text_cost(f), true)?;
    let text = match space {
        Space::Raw => escape_literal(best),
        // Deleted-space fragments hold no `\`, `"` or control characters: nothing to escape.
        Space::Deleted => deleted_text(best)?,
    };
    Some(Literal { space, text, field })
}

/// The item of least cost — the first of equals, or the last when `last` — with each cost
/// computed once, and none when there is one item (the usual case: costs look trigrams up,
/// and loading the SigmaHQ set asks for tens of thousands).
fn cheapest<T>(items: impl IntoIterator<Item = T>, cost: impl Fn(&T) -> f64, last: bool) -> Option<T> {
    let mut items = items.into_iter();
    let first = items.next()?;
    let Some(second) = items.next() else { return Some(first) };
    let mut best = (cost(&first), first);
    for item in std::iter::once(second).chain(items) {
        let c = cost(&item);
        let order = c.total_cmp(&best.0);
        if order.is_lt() || (last && order.is_eq()) {
            best = (c, item);
        }
    }
    Some(best.1)
}

/// One clause in one space: a mixed one goes to the deleted space whole. Empty when some
/// alternative is too short to look for there.
fn one_space(mut clause: Vec<Literal>) -> Vec<Literal> {
    if clause.iter().any(|l| l.space == Space::Deleted) {
        let moved: Option<Vec<Literal>> =
            clause.iter().map(|l| if l.space == Space::Raw { l.deleted() } else { Some(l.clone()) }).collect();
        match moved {
            Some(m) => clause = m,
            None => return Vec::new(),
        }
    }
    // An alternative is never dropped: a clause missing one would be wrong, not weaker.
    if clause.iter().any(|l| l.text.len() < MIN_LITERAL_BYTES) {
        return Vec::new();
    }
    clause.sort();
    clause.dedup();
    clause
}

/// Conjunctive normal form of the literals an expression requires (no clause: nothing).
pub(super) fn cnf(expr: &Expr, fields: &FieldCatalog) -> Vec<Vec<Literal>> {
    match expr {
        Expr::And(children) => children.iter().flat_map(|c| cnf(c, fields)).collect(),
        Expr::Or(children) => {
            let mut union = Vec::new();
            for child in children {
                let clauses = cnf(child, fields);
                let Some(best) = cheapest(clauses, |c| literal_clause_cost(c), false) else {
                    return Vec::new();
                };
                union.extend(best);
            }
            let union = one_space(union);
            // A literal shortened below the minimum by the move leaves the clause unusable.
            if union.is_empty() { Vec::new() } else { vec![union] }
        }
        Expr::Not(inner) => match inner.as_ref() {
            Expr::Not(x) => cnf(x, fields),
            _ => Vec::new(),
        },
        Expr::Atom(atom) => atom_cnf(atom, fields),
        Expr::Const(_) => Vec::new(),
    }
}

fn atom_cnf(atom: &Atom, fields: &FieldCatalog) -> Vec<Vec<Literal>> {
    let kind = fields.kind(atom.field);
    let space = match kind {
        FieldKind::CommandLine | FieldKind::Argument => Space::Deleted,
        FieldKind::Path | FieldKind::Text => Space::Raw,
    };
    // Per value: one literal per way it can match (all of them, or none usable).
    let per_value: Vec<Option<Vec<Literal>>> = atom
        .matchers
        .iter()
        .map(|m| {
            super::fragments::required(m, kind)
                .and_then(|alts| alts.iter().map(|f| value_literal(f, space, atom.field)).collect())
        })
        .collect();
    if atom.all {
        return per_value.into_iter().flatten().map(one_space).filter(|c| !c.is_empty()).collect();
    }
    let clause: Vec<Literal> = match per_value.into_iter().collect::<Option<Vec<Vec<Literal>>>>() {
        Some(lits) => lits.into_iter().flatten().collect(),
        None => return Vec::new(),
    };
    let clause = one_space(clause);
    if clause.is_empty() { Vec::new() } else { vec![clause] }
}
