//! The prefilter: which lines can possibly match which rules, decided over raw bytes.
//!
//! From every rule the loader derives, in conjunctive normal form, literals a matching
//! line must contain: a *clause* is a set of alternatives, and every clause of a rule must
//! be satisfied for the rule to be worth evaluating. The literals are written the way they
//! appear in JSON text (a backslash doubled) and lower-cased; the line is lower-cased
//! (ASCII only) before it is scanned.
//!
//! The *trigger* is one clause per rule, the rarest by a simple estimate. For each of its
//! literals the trigger searcher holds the suffix that starts at the literal's rarest three
//! bytes (any substring of a required literal is required too, and a Teddy scan spends its
//! time on candidates sharing a pattern's first bytes), minus anchors that contain another.
//! It scans whole chunks of the stream; most lines hold none of its patterns and are never
//! looked at again. On a line where an anchor is found, every clause of the rules that
//! anchor stands for is checked (each distinct clause once per line: one packed search for
//! "any of these literals" when it has three or more, substring searches otherwise); only
//! when some rule's clauses all hold is the line parsed.
//!
//! Soundness: the prefilter may only pass over a line the rules could not match.
//! * Case: literals and line are both ASCII-lower-cased, and field values are folded so
//!   that no non-ASCII character becomes ASCII ([`crate::normalize`]); literals keep only
//!   ASCII text.
//! * JSON escapes: `\u0061ppcmd` can hide a literal from a byte scan. A line with such an
//!   escape is always examined, on a canonical copy where escapes are decoded (see
//!   `canonical.rs`). `\/` needs no scan: no literal holds `/`.
//! * Paths: `/` and `\` are the same separator, so path literals contain neither.
//! * Arguments (quotes removed) and negations contribute no literal.

mod canonical;
mod frequencies;
mod literals;

use aho_corasick::{AhoCorasick, AhoCorasickKind, MatchKind};
use memchr::memmem;

pub use canonical::{HidingScan, ScanText, canonicalize, escape_literal};
pub use literals::{MIN_LITERAL_BYTES, regex_literals};

use crate::rules::RuleSet;
use frequencies::TRIGRAM_PPM;
use literals::{LiteralTable, clause_cost, cnf};

/// A clause: literal ids, at least one of which must be present.
type Clause = Vec<u32>;

/// What a rule needs to be evaluated: indices into the distinct clauses.
#[derive(Debug, Clone)]
struct Plan {
    clauses: Vec<u32>,
}

/// The compiled prefilter for a rule set.
#[derive(Debug)]
pub struct Prefilter {
    literals: Vec<String>,
    /// The distinct clauses of all rules, each with its check.
    clauses: Vec<ClauseCheck>,
    plans: Vec<Plan>,
    /// Literal ids of the trigger clauses.
    trigger_literals: Vec<u32>,
    trigger: Option<Trigger>,
    /// Anchor → rules whose trigger clause holds a literal containing it.
    anchor_rules: Vec<Vec<u32>>,
    /// Rules with no literal at all: evaluated on every line.
    always: Vec<u32>,
}

/// Per-stream scratch space of the prefilter.
#[derive(Debug, Default)]
pub struct Scratch {
    /// Per clause, for the current line: 0 not checked yet, 1 holds, 2 does not.
    presence: Vec<u8>,
    touched: Vec<u32>,
    rule_stamp: Vec<u32>,
    stamp: u32,
    rules: Vec<u32>,
    canonical: Vec<u8>,
}

impl Prefilter {
    /// Derives the literals of every rule and builds the searchers.
    pub fn new(set: &RuleSet) -> Prefilter {
        let mut table = LiteralTable::default();
        let mut rule_clauses: Vec<Vec<Clause>> = Vec::with_capacity(set.rules().len());
        for rule in set.rules() {
            let cnf = cnf(&rule.expr, set.fields());
            rule_clauses.push(cnf.into_iter().map(|c| c.iter().map(|l| table.id(l)).collect()).collect());
        }
        let literals = table.literals;
        let mut rules_of_literal = vec![Vec::new(); literals.len()];
        let mut always = Vec::new();
        for (r, clauses) in rule_clauses.iter().enumerate() {
            match clauses.iter().min_by(|a, b| clause_cost(a, &literals).total_cmp(&clause_cost(b, &literals))) {
                Some(best) => best.iter().for_each(|&l| rules_of_literal[l as usize].push(r as u32)),
                None => always.push(r as u32),
            }
        }
        let trigger_literals: Vec<u32> =
            (0..literals.len() as u32).filter(|&l| !rules_of_literal[l as usize].is_empty()).collect();
        let anchors = anchors(trigger_literals.iter().map(|&l| literals[l as usize].as_str()));
        let anchor_rules = anchors
            .iter()
            .map(|a| {
                let mut rules: Vec<u32> = trigger_literals
                    .iter()
                    .filter(|&&l| literals[l as usize].contains(a.as_str()))
                    .flat_map(|&l| rules_of_literal[l as usize].iter().copied())
                    .collect();
                rules.sort_unstable();
                rules.dedup();
                rules
            })
            .collect();
        let mut distinct: Vec<Clause> = Vec::new();
        let plans = rule_clauses
            .into_iter()
            .map(|clauses| {
                let ids = clauses.into_iter().map(|mut c| {
                    c.sort_unstable();
                    match distinct.iter().position(|d| *d == c) {
                        Some(i) => i as u32,
                        None => {
                            distinct.push(c);
                            (distinct.len() - 1) as u32
                        }
                    }
                });
                Plan { clauses: ids.collect() }
            })
            .collect();
        let clauses = distinct
            .iter()
            .map(|c| ClauseCheck::new(&c.iter().map(|&l| &literals[l as usize]).collect::<Vec<_>>()))
            .collect();
        let trigger = Trigger::new(&anchors);
        Prefilter { literals, clauses, plans, trigger_literals, trigger, anchor_rules, always }
    }

    /// True when some rule has no literal: then every line must be examined.
    pub fn examines_every_line(&self) -> bool {
        !self.always.is_empty()
    }

    /// Rules with no literal, evaluated on every record.
    pub fn unconstrained_rules(&self) -> &[u32] {
        &self.always
    }

    /// The literals of the trigger clauses (for tests and diagnostics).
    pub fn trigger_literals(&self) -> impl Iterator<Item = &str> {
        self.trigger_literals.iter().map(|&l| self.literals[l as usize].as_str())
    }

    /// Offset of the next trigger anchor at or after `from` in the ASCII-lower-cased text.
    pub fn next_trigger(&self, lower: &[u8], from: usize) -> Option<usize> {
        self.trigger.as_ref()?.find_from(lower, from).map(|(start, _)| start)
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
        scratch.begin(self.clauses.len(), self.plans.len());
        let text: &[u8] = if has_escape {
            canonicalize(raw, &mut scratch.canonical);
            &scratch.canonical
        } else {
            lower
        };
        let Scratch { presence, touched, rule_stamp, stamp, rules, .. } = scratch;
        if let Some(trigger) = &self.trigger {
            // Every start position is searched: no anchor contains another, so two anchors
            // never start at the same offset and none is hidden by a longer match.
            let mut at = 0;
            while let Some((start, anchor)) = trigger.find_from(text, at) {
                for &r in &self.anchor_rules[anchor] {
                    if rule_stamp[r as usize] != *stamp {
                        rule_stamp[r as usize] = *stamp;
                        if self.satisfied(r, text, presence, touched) {
                            rules.push(r);
                        }
                    }
                }
                at = start + 1;
            }
        }
        rules.extend_from_slice(&self.always);
        rules.sort_unstable();
        rules
    }

    /// Whether every clause of `rule` holds in `text`; clause results are remembered for
    /// the line in `presence`.
    fn satisfied(&self, rule: u32, text: &[u8], presence: &mut [u8], touched: &mut Vec<u32>) -> bool {
        self.plans[rule as usize].clauses.iter().all(|&c| {
            let state = &mut presence[c as usize];
            if *state == 0 {
                *state = if self.clauses[c as usize].holds(text) { 1 } else { 2 };
                touched.push(c);
            }
            *state == 1
        })
    }
}

impl Scratch {
    fn begin(&mut self, clauses: usize, rules: usize) {
        if self.presence.len() != clauses {
            self.presence = vec![0; clauses];
        }
        for &l in &self.touched {
            self.presence[l as usize] = 0;
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

/// One clause, ready to be checked on a line: "does any of these literals occur?"
#[derive(Debug)]
enum ClauseCheck {
    /// A few literals: a substring search each.
    Finders(Vec<memmem::Finder<'static>>),
    /// More: one packed (Teddy) search for any of them.
    Packed(aho_corasick::packed::Searcher),
}

impl ClauseCheck {
    fn new(literals: &[&String]) -> ClauseCheck {
        let finders =
            || ClauseCheck::Finders(literals.iter().map(|l| memmem::Finder::new(l.as_bytes()).into_owned()).collect());
        if literals.len() <= 2 {
            return finders();
        }
        let packed = aho_corasick::packed::Config::new().builder().extend(literals).build();
        packed.map_or_else(finders, ClauseCheck::Packed)
    }

    fn holds(&self, text: &[u8]) -> bool {
        match self {
            ClauseCheck::Finders(fs) => fs.iter().any(|f| f.find(text).is_some()),
            ClauseCheck::Packed(s) => s.find(text).is_some(),
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
        let triggers: Vec<&str> = p.trigger_literals().collect();
        for common in ["cmd.exe", "powershell.exe", "microsoft-windows-sysmon/operational", "security"] {
            assert!(!triggers.contains(&common), "{common} must not be a trigger: {triggers:?}");
        }
        for needed in ["appcmd.exe", "w3wp.exe", "tomcat", "msiexec.exe", ".aspx", "\\\\services\\\\w3svc"] {
            assert!(triggers.contains(&needed), "{needed} missing from {triggers:?}");
        }
    }
}
