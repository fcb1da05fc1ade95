//! The prefilter: which lines can possibly match which rules, decided over raw bytes.
//!
//! From every rule the loader derives, in conjunctive normal form, literals a matching
//! line must contain: a *clause* is a set of alternatives, and every clause of a rule must
//! be satisfied for the rule to be worth evaluating. The literals are written the way they
//! appear in JSON text (a backslash doubled) and lower-cased; the line is lower-cased
//! (ASCII only) before it is scanned.
//!
//! Literals live in one of two texts ([`Space`]): the lower-cased line, or the *deleted*
//! line — the same without any `\`, `"` or `^` — where command lines are read, since
//! quotes and carets may be inserted anywhere in one and are gone by the time the program
//! sees it (`ins"tall"`, `who^ami`), and backslashes come and go with the quotes.
//!
//! The *trigger* is one clause per rule, the rarest by a simple estimate. For each of its
//! literals the trigger searcher of its space holds the suffix that starts at the
//! literal's rarest three bytes (any substring of a required literal is required too, and a
//! Teddy scan spends its time on candidates sharing a pattern's first bytes), minus anchors
//! that contain another. The searchers scan whole chunks of the stream (the deleted text
//! is made only when some rule's trigger lives there); most lines hold none of the patterns
//! and are never looked at again. On a line where an anchor is found, every clause of the
//! rules that anchor stands for is checked (each distinct clause once per line); only when
//! some rule's clauses all hold is the line parsed.
//!
//! Soundness: the prefilter may only pass over a line the rules could not match.
//! * Case: literals and line are both ASCII-lower-cased, and field values are folded so
//!   that no non-ASCII character becomes ASCII ([`crate::normalize`]); literals keep only
//!   ASCII text.
//! * JSON escapes: `\u0061ppcmd` can hide a literal from a byte scan. A line with such an
//!   escape is always examined, on a canonical copy where escapes are decoded (see
//!   `canonical.rs`). `\/` needs no scan: no raw literal holds `/` (in the deleted text
//!   `\/` is `/`).
//! * Paths: `/` and `\` are the same separator, so path literals contain neither.
//! * Command lines: their literals hold no blank, `\`, `"` or `^` and are looked for in
//!   the deleted text, so no inserted quote, caret or backslash and no run of blanks can
//!   hide one ([`fragments::split_fragments`]).
//! * Negations contribute no literal.

mod canonical;
pub mod fragments;
mod frequencies;
mod literals;

use std::collections::HashMap;

use aho_corasick::{AhoCorasick, AhoCorasickKind, MatchKind};

pub use canonical::{
    HidingScan, INSPECT_MARKERS, ScanText, XML_LINE_MARKER, canonicalize, canonicalize_xml, escape_literal,
    needs_every_rule, xml_markup,
};
pub use literals::{Literal, MIN_LITERAL_BYTES, Space, delete_into, is_deleted};

use crate::event::EventView;
use crate::fields::{Derivation, FieldId};
use crate::normalize::fold_into;
use crate::rules::RuleSet;
use crate::rules::expr::Expr;
use frequencies::TRIGRAM_PPM;
use literals::{LiteralTable, clause_cost, cnf, xml_form};

/// A clause: literal ids, at least one of which must be present.
type Clause = Vec<u32>;

/// A trigger clause estimated to hold in at least this share of lines makes scanning for
/// triggers pointless: every line is examined instead.
const EXAMINE_ALL_ODDS: f64 = 0.5;

/// The trigger searcher of one space and the rules each of its anchors stands for.
#[derive(Debug)]
struct Triggers {
    searcher: Trigger,
    /// Anchor → rules whose trigger clause holds a literal containing it.
    anchor_rules: Vec<Vec<u32>>,
    /// The anchors that stand for rules only (not the marks of embedded events and XML
    /// lines), for the one pass over an XML line ([`Prefilter::may_match_xml`]): the
    /// marks repeat inside it (`<EventID>`, `<EventData>`), and restarting the search at
    /// each cost as much as the scan itself.
    rule_anchors: Option<Trigger>,
}

/// One search for many literals of a space at once.
///
/// Built when it is first searched, not when the rules are loaded: a stream reads only
/// the log sources it holds, and building the search of every group's every field up
/// front was a fifth of loading the SigmaHQ set.
#[derive(Debug)]
struct Presence {
    /// The distinct texts searched for.
    texts: Vec<String>,
    /// Per text, the literal ids with that text.
    ids: Vec<Vec<u32>>,
    built: std::sync::OnceLock<PresenceBuilt>,
    /// Bytes the automaton of `built` searched while it was a contiguous NFA.
    searched: std::sync::atomic::AtomicUsize,
    /// The DFA of the same patterns, built once the NFA has searched [`DFA_AFTER_BYTES`]: a
    /// DFA searches faster but costs milliseconds to build, too much for the many
    /// searches a stream uses on a few values only (building each up front was a fifth of
    /// loading the SigmaHQ set, and on first use still a quarter of a 25,000-line run).
    dfa: std::sync::OnceLock<Option<AhoCorasick>>,
}

/// What an NFA searches before its DFA is built (the DFA's build costs about what a DFA
/// saves over a few megabytes of search).
const DFA_AFTER_BYTES: usize = 4 << 20;

/// A [`Presence`]'s search, once built.
#[derive(Debug)]
struct PresenceBuilt {
    search: PresenceSearch,
    /// Pattern index → the literal ids it reports.
    literals: Vec<Vec<u32>>,
}

/// How every occurrence of every pattern is found.
#[derive(Debug)]
enum PresenceSearch {
    /// Few patterns: a packed (Teddy) search, restarted one byte after each match.
    Packed(aho_corasick::packed::Searcher),
    /// An automaton, searched for overlapping matches.
    Automaton(AhoCorasick),
}

/// Up to this many patterns, a packed search beats an automaton's overlapping search.
const PACKED_PRESENCE_MAX: usize = 32;

/// The compiled prefilter for a rule set.
#[derive(Debug)]
pub struct Prefilter {
    literals: Vec<Literal>,
    /// The distinct clauses of all rules.
    clauses: Vec<Clause>,
    /// Per rule, its clauses (indices into `clauses`).
    plans: Vec<Vec<u32>>,
    /// Literal ids of the trigger clauses.
    trigger_literals: Vec<u32>,
    /// Per literal, the rules whose trigger clause holds it.
    trigger_rules: Vec<Vec<u32>>,
    raw: Option<Triggers>,
    deleted: Option<Triggers>,
    /// Per distinct clause, its search on a line picked by the triggers.
    checks: Vec<ClauseCheck>,
    /// When every line is examined: the rules grouped by log source, each group with
    /// searches for its own literals only.
    groups: Vec<Group>,
    /// Rules with no literal at all: evaluated on every line.
    always: Vec<u32>,
    /// Some trigger is so common that every line is examined.
    examine_all: bool,
    /// Per rule, the literal ids of its trigger clause (empty: none).
    rule_triggers: Vec<Vec<u32>>,
    /// Every raw trigger literal has an XML form (else XML lines are always scanned on
    /// their canonical copy).
    xml_forms_complete: bool,
}

/// The rules of one log source.
#[derive(Debug)]
struct Group {
    route: Expr,
    /// Per field its rules read literals of: searches over the field's decoded values.
    scans: Vec<FieldScan>,
    /// Its rules with no literal: candidates on every record of the group.
    always: Vec<u32>,
    /// Per rule of the whole set: in this group.
    member: Vec<bool>,
}

/// The literals a group takes from one field, searched in that field's values (folded;
/// and deleted for the deleted space).
#[derive(Debug)]
struct FieldScan {
    /// The field whose values are read (for a derived field, the one it comes from).
    field: FieldId,
    presence: [Option<Presence>; 2],
}

/// Per-stream scratch space of the prefilter.
#[derive(Debug, Default)]
pub struct Scratch {
    /// Per literal, one bit: present in the current line.
    present: Vec<u64>,
    present_list: Vec<u32>,
    /// Per clause, for the current line: 0 not checked yet, 1 holds, 2 does not.
    clause_state: Vec<u8>,
    touched: Vec<u32>,
    rule_stamp: Vec<u32>,
    stamp: u32,
    rules: Vec<u32>,
    canonical: Vec<u8>,
    deleted: Vec<u8>,
    value: String,
    hits: Vec<u32>,
}

impl Prefilter {
    /// Derives the literals of every rule and builds the searchers.
    pub fn new(set: &RuleSet) -> Prefilter {
        let mut table = LiteralTable::default();
        let mut rule_clauses: Vec<Vec<Clause>> = Vec::with_capacity(set.rules().len());
        for rule in set.rules() {
            // The log source's literals (channel names, event ids) are in nearly every line
            // of that source: marked, so that a detection literal is always preferred.
            let route = cnf(&rule.route, set.fields());
            for clause in &route {
                for l in clause {
                    let id = table.id(l);
                    table.mark_structural(id);
                }
            }
            let mut clauses = route;
            clauses.extend(cnf(&rule.detection, set.fields()));
            rule_clauses.push(clauses.iter().map(|c| c.iter().map(|l| table.id(l)).collect()).collect());
        }
        let structural = table.structural.clone();
        let literals = table.literals;
        // Choosing among a rule's clauses, a log source literal counts as certain (any
        // detection literal is better); whether triggers are worth scanning for at all is
        // judged on the plain estimate (a rare channel is a fine trigger).
        let cost = |c: &Clause| clause_cost(c, &literals, &structural);
        let no_structure = vec![false; literals.len()];
        let odds = |c: &Clause| clause_cost(c, &literals, &no_structure);
        let mut trigger_rules = vec![Vec::new(); literals.len()];
        let mut always = Vec::new();
        let mut examine_all = false;
        let mut rule_triggers = Vec::with_capacity(rule_clauses.len());
        for (r, clauses) in rule_clauses.iter().enumerate() {
            match clauses.iter().min_by(|a, b| cost(a).total_cmp(&cost(b))) {
                Some(best) => {
                    examine_all |= odds(best) >= EXAMINE_ALL_ODDS;
                    best.iter().for_each(|&l| trigger_rules[l as usize].push(r as u32));
                    rule_triggers.push(best.clone());
                }
                None => {
                    always.push(r as u32);
                    rule_triggers.push(Vec::new());
                }
            }
        }
        let trigger_literals: Vec<u32> =
            (0..literals.len() as u32).filter(|&l| !trigger_rules[l as usize].is_empty()).collect();
        // Raw-space literals in XML lines are looked for in the form XML writes them
        // ([`xml_form`]); one without a usable form makes every XML line an event.
        let xml_forms: Vec<Option<String>> =
            literals.iter().map(|l| if l.space == Space::Raw { xml_form(l) } else { Some(l.text.clone()) }).collect();
        let xml_every_line = trigger_literals.iter().any(|&l| xml_forms[l as usize].is_none());
        let xml_forms_complete = !xml_every_line;
        let triggers = |space: Space| {
            let of_space: Vec<u32> =
                trigger_literals.iter().copied().filter(|&l| literals[l as usize].space == space).collect();
            let texts = of_space.iter().flat_map(|&l| {
                let json = literals[l as usize].text.as_str();
                std::iter::once(json).chain(xml_forms[l as usize].as_deref().filter(|x| *x != json))
            });
            let mut anchors = anchors(texts);
            let mut anchor_rules: Vec<Vec<u32>> = anchors
                .iter()
                .map(|a| {
                    let mut rules: Vec<u32> = of_space
                        .iter()
                        .filter(|&&l| {
                            literals[l as usize].text.contains(a.as_str())
                                || xml_forms[l as usize].as_deref().is_some_and(|x| x.contains(a.as_str()))
                        })
                        .flat_map(|&l| trigger_rules[l as usize].iter().copied())
                        .collect();
                    rules.sort_unstable();
                    rules.dedup();
                    rules
                })
                .collect();
            let rule_anchors = if space == Space::Raw { Trigger::new(&anchors) } else { None };
            if space == Space::Raw {
                // The marks of a record that may hold a whole event in a string member: such
                // a line is inspected with every rule, so the scan must stop there. They
                // stand for no rule. When every literal has an XML form, an XML line with
                // no anchor and nothing that hides one ([`HidingScan`]) holds no trigger
                // and is passed over like a JSON line; else every XML line is marked (and
                // checked on its canonical copy).
                let xml_mark = Some(XML_LINE_MARKER).filter(|_| xml_every_line);
                for marker in INSPECT_MARKERS.iter().copied().chain(xml_mark) {
                    anchors.push(marker.to_string());
                    anchor_rules.push(Vec::new());
                }
            }
            Trigger::new(&anchors).map(|searcher| Triggers { searcher, anchor_rules, rule_anchors })
        };
        examine_all |= !always.is_empty();
        let (raw, deleted) = if examine_all { (None, None) } else { (triggers(Space::Raw), triggers(Space::Deleted)) };
        let groups = if examine_all { groups(set, &rule_clauses, &always, &literals) } else { Vec::new() };
        // Looked up by hash: the SigmaHQ set has thousands of clauses, and a linear search
        // for each made loading quadratic.
        let mut distinct: Vec<Clause> = Vec::new();
        let mut index: HashMap<Clause, u32> = HashMap::new();
        let plans = rule_clauses
            .into_iter()
            .map(|clauses| {
                clauses
                    .into_iter()
                    .map(|mut c| {
                        c.sort_unstable();
                        *index.entry(c).or_insert_with_key(|c| {
                            distinct.push(c.clone());
                            (distinct.len() - 1) as u32
                        })
                    })
                    .collect()
            })
            .collect();
        let checks = if examine_all {
            Vec::new()
        } else {
            distinct
                .iter()
                .map(|c| ClauseCheck::new(&c.iter().map(|&l| &literals[l as usize]).collect::<Vec<_>>()))
                .collect()
        };
        Prefilter {
            groups,
            checks,
            literals,
            clauses: distinct,
            plans,
            trigger_literals,
            trigger_rules,
            raw,
            deleted,
            always,
            examine_all,
            rule_triggers,
            xml_forms_complete,
        }
    }

    /// Whether an XML line (`lower`, lower-cased) may hold a trigger, seen from its bytes:
    /// false only when every literal has an XML form, none of the rules' anchors is in the
    /// line in any form (one pass, without the marks of embedded events), and nothing in it
    /// could hide one (`escaped`: an escape or a folding character, [`HidingScan`], or
    /// markup such as `&#`, [`xml_markup`]). A true is checked on the line's canonical copy.
    pub fn may_match_xml(&self, lower: &[u8], escaped: bool) -> bool {
        escaped
            || !self.xml_forms_complete
            || self
                .raw
                .as_ref()
                .and_then(|raw| raw.rule_anchors.as_ref())
                .is_some_and(|r| r.find_from(lower, 0).is_some())
    }

    /// True when every line must be examined: some rule has no literal, or a trigger so
    /// common that scanning for it would pick nearly every line anyway. Then each line is
    /// parsed first, and [`Prefilter::rules_for_routed_line`] picks its rules among those of
    /// the log sources it belongs to.
    pub fn examines_every_line(&self) -> bool {
        self.examine_all
    }

    /// The log sources of the rule groups, when every line is examined (else none).
    pub fn group_routes(&self) -> impl Iterator<Item = &Expr> {
        self.groups.iter().map(|g| &g.route)
    }

    /// The rules worth evaluating on a parsed record that belongs to the log sources
    /// `groups` (indices into [`Prefilter::group_routes`]): each group's literals are
    /// looked for in the decoded, folded values of the fields they come from.
    pub fn rules_for_routed_line<'s>(&self, groups: &[u32], view: &EventView, scratch: &'s mut Scratch) -> &'s [u32] {
        scratch.begin(self.literals.len(), self.clauses.len(), self.plans.len());
        for &g in groups {
            for scan in &self.groups[g as usize].scans {
                for occ in view.occurrences(scan.field) {
                    scratch.value.clear();
                    fold_into(view.raw(occ), &mut scratch.value);
                    let value = scratch.value.as_bytes();
                    if let Some(p) = &scan.presence[0] {
                        p.mark(value, &mut scratch.present, &mut scratch.present_list);
                    }
                    if let Some(p) = &scan.presence[1] {
                        delete_into(value, &mut scratch.deleted);
                        p.mark(&scratch.deleted, &mut scratch.present, &mut scratch.present_list);
                    }
                }
            }
        }
        let member = |r: u32| groups.iter().any(|&g| self.groups[g as usize].member[r as usize]);
        self.collect_rules(scratch, member);
        for &g in groups {
            scratch.rules.extend_from_slice(&self.groups[g as usize].always);
        }
        scratch.rules.sort_unstable();
        scratch.rules.dedup();
        &scratch.rules
    }

    /// Adds to `scratch.rules` each rule `keep` allows whose trigger holds a present
    /// literal and all of whose clauses hold.
    fn collect_rules(&self, scratch: &mut Scratch, keep: impl Fn(u32) -> bool) {
        let Scratch { present, present_list, clause_state, touched, rule_stamp, stamp, rules, .. } = scratch;
        for &l in present_list.iter() {
            for &r in &self.trigger_rules[l as usize] {
                if rule_stamp[r as usize] == *stamp || !keep(r) {
                    continue;
                }
                rule_stamp[r as usize] = *stamp;
                let all = self.plans[r as usize].iter().all(|&c| {
                    let state = &mut clause_state[c as usize];
                    if *state == 0 {
                        let holds =
                            self.clauses[c as usize].iter().any(|&l| present[l as usize / 64] >> (l % 64) & 1 == 1);
                        *state = if holds { 1 } else { 2 };
                        touched.push(c);
                    }
                    *state == 1
                });
                if all {
                    rules.push(r);
                }
            }
        }
    }

    /// Rules with no literal, evaluated on every record.
    pub fn unconstrained_rules(&self) -> &[u32] {
        &self.always
    }

    /// The literals of the trigger clauses (for tests and diagnostics).
    pub fn trigger_literals(&self) -> impl Iterator<Item = &Literal> {
        self.trigger_literals.iter().map(|&l| &self.literals[l as usize])
    }

    /// The trigger clause of rule `r` (empty when it has none and is evaluated on every
    /// line): a line holding none of these literals is never evaluated for it.
    pub fn rule_trigger(&self, r: usize) -> impl Iterator<Item = &Literal> {
        self.rule_triggers[r].iter().map(|&l| &self.literals[l as usize])
    }

    /// True when some rule's trigger lives in the deleted text, which must then be made
    /// for every chunk.
    pub fn uses_deleted_text(&self) -> bool {
        self.deleted.is_some()
    }

    /// Offset of the next raw trigger anchor at or after `from` in the ASCII-lower-cased
    /// text.
    pub fn next_trigger(&self, lower: &[u8], from: usize) -> Option<usize> {
        self.raw.as_ref()?.searcher.find_from(lower, from).map(|(start, _)| start)
    }

    /// The starts (offsets in `region`) of the lines whose deleted text holds a trigger
    /// anchor of that space, in order. `lower` is `region` lower-cased; `deleted` receives
    /// its deleted text (newlines are kept, so line `k` of one is line `k` of the other).
    pub fn deleted_trigger_lines(&self, region: &[u8], lower: &[u8], deleted: &mut Vec<u8>, out: &mut Vec<usize>) {
        out.clear();
        let Some(triggers) = &self.deleted else { return };
        delete_into(lower, deleted);
        let (mut d_cursor, mut line) = (0, 0usize);
        let (mut r_start, mut r_line) = (0, 0usize);
        let mut at = 0;
        while let Some((hit, _)) = triggers.searcher.find_from(deleted, at) {
            let d_start = memchr::memrchr(b'\n', &deleted[d_cursor..hit]).map_or(d_cursor, |i| d_cursor + i + 1);
            line += memchr::memchr_iter(b'\n', &deleted[d_cursor..d_start]).count();
            d_cursor = d_start;
            while r_line < line {
                let Some(nl) = memchr::memchr(b'\n', &region[r_start..]) else { return };
                r_start += nl + 1;
                r_line += 1;
            }
            out.push(r_start);
            // The rest of this line is not searched: it is a candidate already.
            match memchr::memchr(b'\n', &deleted[hit..]) {
                Some(nl) => at = hit + nl + 1,
                None => return,
            }
        }
    }

    /// The rules worth evaluating on one line. `raw` is the line as read, `lower` its
    /// ASCII-lower-cased copy; `has_escape` says the line holds a hiding escape.
    ///
    /// Every literal present in the line is found in one search per space; then each rule
    /// whose trigger holds a present literal is kept if all its clauses hold.
    pub fn rules_for_line<'s>(
        &self,
        raw: &[u8],
        lower: &[u8],
        has_escape: bool,
        scratch: &'s mut Scratch,
    ) -> &'s [u32] {
        scratch.begin(self.literals.len(), self.clauses.len(), self.plans.len());
        let Scratch { clause_state, touched, rule_stamp, stamp, rules, canonical, deleted, hits, .. } = scratch;
        let text = line_text(raw, lower, has_escape, canonical);
        let mut texts = Texts { text, deleted, deleted_made: false };
        for (space, triggers) in [(Space::Raw, &self.raw), (Space::Deleted, &self.deleted)] {
            let Some(triggers) = triggers else { continue };
            hits.clear();
            let hay = texts.get(space);
            // Every start position is searched: no anchor contains another, so two anchors
            // never start at the same offset and none is hidden by a longer match.
            let mut at = 0;
            while let Some((start, anchor)) = triggers.searcher.find_from(hay, at) {
                hits.push(anchor as u32);
                at = start + 1;
            }
            for &anchor in hits.iter() {
                for &r in &triggers.anchor_rules[anchor as usize] {
                    if rule_stamp[r as usize] == *stamp {
                        continue;
                    }
                    rule_stamp[r as usize] = *stamp;
                    let all = self.plans[r as usize].iter().all(|&c| {
                        let state = &mut clause_state[c as usize];
                        if *state == 0 {
                            let check = &self.checks[c as usize];
                            *state = if check.holds(texts.get(check.space)) { 1 } else { 2 };
                            touched.push(c);
                        }
                        *state == 1
                    });
                    if all {
                        rules.push(r);
                    }
                }
            }
        }
        rules.extend_from_slice(&self.always);
        rules.sort_unstable();
        rules.dedup();
        rules
    }
}

/// A line's texts: lower-cased (or canonical), and deleted when first asked for.
struct Texts<'a> {
    text: &'a [u8],
    deleted: &'a mut Vec<u8>,
    deleted_made: bool,
}

impl Texts<'_> {
    fn get(&mut self, space: Space) -> &[u8] {
        match space {
            Space::Raw => self.text,
            Space::Deleted => {
                if !self.deleted_made {
                    delete_into(self.text, self.deleted);
                    self.deleted_made = true;
                }
                self.deleted
            }
        }
    }
}

/// One clause, ready to be checked on a line: "does any of these literals occur?" (in
/// the clause's space: all its literals share one).
#[derive(Debug)]
struct ClauseCheck {
    space: Space,
    search: ClauseSearch,
}

#[derive(Debug)]
enum ClauseSearch {
    /// A few literals: a substring search each.
    Finders(Vec<memchr::memmem::Finder<'static>>),
    /// More: one packed (Teddy) search for any of them.
    Packed(aho_corasick::packed::Searcher),
    /// Too many for Teddy: an automaton.
    Automaton(AhoCorasick),
}

impl ClauseCheck {
    fn new(literals: &[&Literal]) -> ClauseCheck {
        let space = literals.first().map_or(Space::Raw, |l| l.space);
        let texts: Vec<&String> = literals.iter().map(|l| &l.text).collect();
        let finders = || {
            ClauseSearch::Finders(
                texts.iter().map(|l| memchr::memmem::Finder::new(l.as_bytes()).into_owned()).collect(),
            )
        };
        let search = if texts.len() <= 2 {
            finders()
        } else {
            match aho_corasick::packed::Config::new().builder().extend(&texts).build() {
                Some(packed) => ClauseSearch::Packed(packed),
                None => automaton(texts.iter().copied(), MatchKind::LeftmostFirst)
                    .map_or_else(finders, ClauseSearch::Automaton),
            }
        };
        ClauseCheck { space, search }
    }

    fn holds(&self, text: &[u8]) -> bool {
        match &self.search {
            ClauseSearch::Finders(fs) => fs.iter().any(|f| f.find(text).is_some()),
            ClauseSearch::Packed(s) => s.find(text).is_some(),
            ClauseSearch::Automaton(ac) => ac.is_match(text),
        }
    }
}

/// The text a line's raw-space literals are looked for in: its lower-cased copy, or, when
/// it holds an escape that could hide one, its canonical form.
fn line_text<'a>(raw: &[u8], lower: &'a [u8], has_escape: bool, canonical: &'a mut Vec<u8>) -> &'a [u8] {
    if has_escape {
        canonicalize(raw, canonical);
        canonical
    } else {
        lower
    }
}

/// The rules grouped by log source (rules with the same `route`), each group with
/// searches for its literals in the values of their fields.
fn groups(set: &RuleSet, rule_clauses: &[Vec<Clause>], always: &[u32], literals: &[Literal]) -> Vec<Group> {
    let mut keys: HashMap<String, usize> = HashMap::new();
    let mut members: Vec<Vec<u32>> = Vec::new();
    for (r, rule) in set.rules().iter().enumerate() {
        let g = *keys.entry(format!("{:?}", rule.route)).or_insert_with(|| {
            members.push(Vec::new());
            members.len() - 1
        });
        members[g].push(r as u32);
    }
    // Derived fields are read through the field they come from.
    let source = |f: FieldId| {
        set.fields().derivations().find(|&(d, _)| d == f).map_or(f, |(_, Derivation::Arguments { from })| from)
    };
    members
        .into_iter()
        .map(|rules| {
            let mut lits: Vec<u32> =
                rules.iter().flat_map(|&r| rule_clauses[r as usize].iter().flatten().copied()).collect();
            lits.sort_unstable();
            lits.dedup();
            let mut fields: Vec<FieldId> = lits.iter().map(|&l| source(literals[l as usize].field)).collect();
            fields.sort_unstable();
            fields.dedup();
            let scans = fields
                .into_iter()
                .map(|field| {
                    let of: Vec<u32> =
                        lits.iter().copied().filter(|&l| source(literals[l as usize].field) == field).collect();
                    FieldScan {
                        field,
                        presence: [Space::Raw, Space::Deleted].map(|sp| Presence::new(literals, &of, sp, true)),
                    }
                })
                .collect();
            let mut member = vec![false; set.rules().len()];
            rules.iter().for_each(|&r| member[r as usize] = true);
            Group {
                route: set.rules()[rules[0] as usize].route.clone(),
                scans,
                always: rules.iter().copied().filter(|r| always.contains(r)).collect(),
                member,
            }
        })
        .collect()
}

impl Presence {
    /// A search for the literals `of` (ids) that live in `space`; in their decoded form
    /// (for values) or as written in JSON (for lines).
    fn new(literals: &[Literal], of: &[u32], space: Space, decoded: bool) -> Option<Presence> {
        let mut texts: Vec<String> = Vec::new();
        let mut ids: Vec<Vec<u32>> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        for &l in of.iter().filter(|&&l| literals[l as usize].space == space) {
            let lit = &literals[l as usize];
            let text = if decoded { lit.decoded() } else { lit.text.clone() };
            let i = *index.entry(text).or_insert_with_key(|text| {
                texts.push(text.clone());
                ids.push(Vec::new());
                texts.len() - 1
            });
            ids[i].push(l);
        }
        if texts.is_empty() {
            return None;
        }
        Some(Presence {
            texts,
            ids,
            built: std::sync::OnceLock::new(),
            searched: std::sync::atomic::AtomicUsize::new(0),
            dfa: std::sync::OnceLock::new(),
        })
    }

    fn built(&self) -> &PresenceBuilt {
        self.built.get_or_init(|| self.build())
    }

    fn build(&self) -> PresenceBuilt {
        let texts = &self.texts;
        // Every occurrence is reported: a literal inside another must not be hidden by it.
        let packed = (texts.len() <= PACKED_PRESENCE_MAX)
            .then(|| {
                aho_corasick::packed::Config::new()
                    .match_kind(aho_corasick::packed::MatchKind::LeftmostLongest)
                    .builder()
                    .extend(texts)
                    .build()
            })
            .flatten();
        let search = match packed {
            Some(p) => PresenceSearch::Packed(p),
            None => PresenceSearch::Automaton(
                AhoCorasick::builder()
                    .match_kind(MatchKind::Standard)
                    .kind(Some(AhoCorasickKind::ContiguousNFA))
                    .build(texts)
                    .or_else(|_| AhoCorasick::builder().match_kind(MatchKind::Standard).build(texts))
                    .expect("literal automaton builds (literals are short and bounded in number)"),
            ),
        };
        // A packed search reports the longest pattern at each start; the patterns that are
        // prefixes of it start there too and come with it.
        let mut literals = self.ids.clone();
        if matches!(search, PresenceSearch::Packed(_)) {
            let extra: Vec<Vec<u32>> = texts
                .iter()
                .map(|t| {
                    texts
                        .iter()
                        .zip(&literals)
                        .filter(|(other, _)| other.len() < t.len() && t.starts_with(other.as_str()))
                        .flat_map(|(_, l)| l.iter().copied())
                        .collect()
                })
                .collect();
            literals.iter_mut().zip(extra).for_each(|(l, e)| l.extend(e));
        }
        PresenceBuilt { search, literals }
    }

    /// Sets the bit of every literal present in `text`, listing each once.
    fn mark(&self, text: &[u8], present: &mut [u64], list: &mut Vec<u32>) {
        let built = self.built();
        let mut found = |pattern: usize| {
            for &l in &built.literals[pattern] {
                let (word, bit) = (l as usize / 64, 1u64 << (l % 64));
                if present[word] & bit == 0 {
                    present[word] |= bit;
                    list.push(l);
                }
            }
        };
        match &built.search {
            PresenceSearch::Automaton(nfa) => {
                let ac = self.dfa.get().and_then(Option::as_ref).unwrap_or_else(|| {
                    use std::sync::atomic::Ordering::Relaxed;
                    if self.searched.fetch_add(text.len(), Relaxed) + text.len() < DFA_AFTER_BYTES {
                        return nfa;
                    }
                    let dfa = self.dfa.get_or_init(|| {
                        AhoCorasick::builder()
                            .match_kind(MatchKind::Standard)
                            .kind(Some(AhoCorasickKind::DFA))
                            .build(&self.texts)
                            .ok()
                    });
                    dfa.as_ref().unwrap_or(nfa)
                });
                ac.find_overlapping_iter(text).for_each(|m| found(m.pattern().as_usize()))
            }
            PresenceSearch::Packed(p) => {
                let mut at = 0;
                while let Some(m) = p.find_in(text, aho_corasick::Span::from(at..text.len())) {
                    found(m.pattern().as_usize());
                    at = m.start() + 1;
                }
            }
        }
    }
}

impl Scratch {
    /// Bytes of capacity held by the buffers that grow with a line.
    pub fn capacity_bytes(&self) -> usize {
        crate::scratch::total(&[&self.canonical, &self.deleted, &self.value])
    }

    /// Gives back capacity above `keep` bytes a buffer (those that grow with a line).
    pub fn release(&mut self, keep: usize) {
        use crate::scratch::Release;
        self.canonical.release(keep);
        self.deleted.release(keep);
        self.value.release(keep);
    }

    fn begin(&mut self, literals: usize, clauses: usize, rules: usize) {
        // A table made anew is all zeros; one kept is cleared where the last line set it
        // (ids of another rule set, after a reload, may lie past a smaller new table).
        let words = literals.div_ceil(64);
        if self.present.len() != words {
            self.present = vec![0; words];
        } else {
            for &l in &self.present_list {
                self.present[l as usize / 64] = 0;
            }
        }
        self.present_list.clear();
        if self.clause_state.len() != clauses {
            self.clause_state = vec![0; clauses];
        } else {
            for &c in &self.touched {
                self.clause_state[c as usize] = 0;
            }
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

/// The trigger search: a packed (Teddy) searcher when the patterns allow one, since a
/// DFA walks every byte; an Aho-Corasick automaton otherwise.
#[derive(Debug)]
enum Trigger {
    Packed(aho_corasick::packed::Searcher),
    Automaton(AhoCorasick),
}

impl Trigger {
    fn new(anchors: &[String]) -> Option<Trigger> {
        if anchors.is_empty() {
            return None;
        }
        let patterns: Vec<&String> = anchors.iter().collect();
        // Slim Teddy has 8 buckets; past 8 patterns they share buckets and false candidates
        // double its time, while fat Teddy (16 buckets) stays flat up to 24 and beyond.
        // Measured on a generated Sysmon corpus: slim 20 ms (8 patterns) / 39 ms (24), fat
        // 31 ms / 33 ms per 200 MB.
        let packed = aho_corasick::packed::Config::new()
            .match_kind(aho_corasick::packed::MatchKind::LeftmostFirst)
            .only_teddy_fat(Some(patterns.len() > 8))
            .builder()
            .extend(&patterns)
            .build();
        match packed {
            Some(searcher) => Some(Trigger::Packed(searcher)),
            None => automaton(patterns.into_iter(), MatchKind::LeftmostFirst).map(Trigger::Automaton),
        }
    }

    /// The leftmost anchor at or after `at`: its start and index.
    fn find_from(&self, hay: &[u8], at: usize) -> Option<(usize, usize)> {
        match self {
            Trigger::Packed(s) => {
                s.find_in(hay, aho_corasick::Span::from(at..hay.len())).map(|m| (m.start(), m.pattern().as_usize()))
            }
            Trigger::Automaton(ac) => {
                ac.find(aho_corasick::Input::new(hay).span(at..hay.len())).map(|m| (m.start(), m.pattern().as_usize()))
            }
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

/// For each trigger literal, its suffix starting at the rarest three bytes (at least
/// four bytes long when the literal is); anchors that contain another anchor are dropped,
/// since every line holding them holds the shorter one.
fn anchors<'a>(literals: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut anchors: Vec<String> = literals.map(|l| rarest_suffix(l).to_string()).collect();
    anchors.sort_by_key(|a| (a.len(), a.clone()));
    anchors.dedup();
    let mut kept: Vec<String> = Vec::with_capacity(anchors.len());
    for a in anchors {
        if !kept.iter().any(|k| a.contains(k.as_str())) {
            kept.push(a);
        }
    }
    kept
}

fn rarest_suffix(literal: &str) -> &str {
    const MIN_ANCHOR: usize = 4;
    let b = literal.as_bytes();
    if b.len() <= MIN_ANCHOR || !literal.is_ascii() {
        return literal;
    }
    let score = |i: usize| {
        let trigram = [b[i], b[i + 1], b[i + 2]];
        TRIGRAM_PPM.binary_search_by_key(&trigram, |&(t, _)| t).map_or(0, |k| TRIGRAM_PPM[k].1)
    };
    let best = (0..=b.len() - MIN_ANCHOR).min_by_key(|&i| (score(i), i)).unwrap_or(0);
    &literal[best..]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A presence search past its packed size finds the same literals, every occurrence
    /// and every literal inside another, as its NFA and then as its DFA.
    #[test]
    fn a_presence_search_finds_the_same_before_and_after_its_dfa() {
        let mut texts: Vec<String> = (0..40).map(|i| format!("lit{i}")).collect();
        texts.extend(["cmd".to_string(), "cmd.exe".to_string(), "d.e".to_string()]);
        let ids: Vec<Vec<u32>> = (0..texts.len() as u32).map(|i| vec![i]).collect();
        let presence = Presence {
            texts,
            ids,
            built: std::sync::OnceLock::new(),
            searched: std::sync::atomic::AtomicUsize::new(0),
            dfa: std::sync::OnceLock::new(),
        };
        let text = b"x lit3 lit39 lit1 cmd.exe lit399 y ".repeat(64 << 10 >> 5);
        let found = |presence: &Presence| {
            let (mut present, mut list) = (vec![0u64; 1], Vec::new());
            presence.mark(&text, &mut present, &mut list);
            list.sort_unstable();
            list
        };
        let by_nfa = found(&presence);
        assert!(presence.dfa.get().is_none(), "the NFA searches first");
        assert_eq!(by_nfa, [1, 3, 39, 40, 41, 42]);
        // The DFA comes once DFA_AFTER_BYTES were searched: no sooner, and no later.
        for _ in 0..DFA_AFTER_BYTES.div_ceil(text.len()) - 1 {
            assert!(presence.dfa.get().is_none(), "the DFA before {DFA_AFTER_BYTES} bytes");
            assert_eq!(found(&presence), by_nfa);
        }
        assert!(presence.dfa.get().is_some_and(Option::is_some), "the DFA is built");
        assert_eq!(found(&presence), by_nfa);
    }

    #[test]
    fn anchors_start_at_rare_bytes_and_are_minimal() {
        let got =
            anchors(["microsoft-iis-configuration/operational", "nginx.exe", "nginx", "www", "w3wp.exe"].into_iter());
        assert!(got.contains(&"nginx".to_string()) && !got.iter().any(|a| a == "nginx.exe"), "{got:?}");
        assert!(got.contains(&"www".to_string()));
        let iis =
            got.iter().find(|a| "microsoft-iis-configuration/operational".ends_with(a.as_str())).expect("iis anchor");
        assert!(!iis.starts_with("mic"), "{iis}");
    }

    #[test]
    fn builtins_have_selective_triggers() {
        let set = RuleSet::builtin().expect("built-ins load");
        let p = Prefilter::new(&set);
        assert!(!p.examines_every_line(), "every built-in rule has a literal");
        let triggers: Vec<&str> = p.trigger_literals().map(|l| l.text.as_str()).collect();
        for common in ["cmd.exe", "powershell.exe", "microsoft-windows-sysmon/operational", "security"] {
            assert!(!triggers.contains(&common), "{common} must not be a trigger: {triggers:?}");
        }
        for needed in ["appcmd.exe", "w3wp.exe", "tomcat", "msiexec.exe", ".aspx", "\\\\services\\\\w3svc"] {
            assert!(triggers.contains(&needed), "{needed} missing from {triggers:?}");
        }
    }
}
