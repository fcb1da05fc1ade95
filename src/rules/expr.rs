//! A rule's logic, compiled: and / or / not over field tests, and how it is evaluated.
//!
//! A field may occur more than once in a record (a duplicate key, an array, the same
//! fact in two shapes). The attacker may have put one of those occurrences there, so
//! evaluation is *polarity-aware*: a test in a positive position holds when **any**
//! occurrence passes it, and a test under an odd number of `not`s (a filter) holds only
//! when **every** occurrence passes it. A duplicate key can therefore add a detection,
//! never switch one off: `"ParentImage":"C:\\evil.exe","ParentImage":"msiexec.exe"`
//! does not hide behind a `not msiexec` filter.

use crate::event::{EventView, Incomplete, Occurrence, Scalar};
use crate::fields::FieldId;
use crate::normalize::Reading;
use crate::rules::pattern::{Matcher, TextOp};

/// A test on one field: its values are compared with the patterns.
#[derive(Clone, Debug)]
pub struct Atom {
    /// The field tested.
    pub field: FieldId,
    /// The patterns (alternatives, or all required when `all`).
    pub matchers: Vec<Matcher>,
    /// Sigma's `all` modifier: one occurrence must match every pattern.
    pub all: bool,
    /// A keyword search: its occurrences are every value of the record.
    keyword: bool,
    /// The plain `contains` values of `matchers` as one search, when they are several
    /// alternatives (a long list of substrings is one pass over a value, not one each).
    contains: Option<std::sync::Arc<ContainsAny>>,
    /// Some matcher compares with another field (`fieldref`): the other field's values are
    /// gathered for each evaluation (most atoms have none, and skip that).
    refs: bool,
}

/// Several `contains` alternatives, searched at once. The search is built when the atom
/// is first evaluated, not when the rule is loaded: of a large rule set, a stream
/// evaluates only the rules of its log sources whose literals it holds, and building every
/// atom's search up front was a sixth of loading the SigmaHQ set.
#[derive(Debug)]
struct ContainsAny {
    needles: Vec<String>,
    /// `None` once built: the needles could not make one search (then each alternative is
    /// tested on its own, as when there are few).
    search: std::sync::OnceLock<Option<aho_corasick::AhoCorasick>>,
    /// Indices into `matchers` of those the search does not stand for (tested one by one).
    uncovered: Vec<usize>,
}

impl ContainsAny {
    fn search(&self) -> Option<&aho_corasick::AhoCorasick> {
        self.search
            .get_or_init(|| {
                aho_corasick::AhoCorasick::builder()
                    .match_kind(aho_corasick::MatchKind::LeftmostFirst)
                    .build(&self.needles)
                    .ok()
            })
            .as_ref()
    }
}

/// Fewer `contains` alternatives than this are searched one by one.
const CONTAINS_ANY_MIN: usize = 3;

/// A compiled condition.
#[derive(Clone, Debug)]
pub enum Expr {
    /// Every child holds.
    And(Vec<Expr>),
    /// Some child holds.
    Or(Vec<Expr>),
    /// The child does not hold.
    Not(Box<Expr>),
    /// A field test.
    Atom(Atom),
    /// A constant (an empty `and` is true, an empty `or` false).
    Const(bool),
}

impl Atom {
    /// A test of `field` against `matchers` (any of them, or all when `all`).
    pub fn new(field: FieldId, matchers: Vec<Matcher>, all: bool) -> Atom {
        let (mut needles, mut uncovered): (Vec<String>, Vec<usize>) = (Vec::new(), Vec::new());
        for (i, m) in matchers.iter().enumerate() {
            match m.plain_contains() {
                Some(n) => needles.extend(n.into_iter().map(str::to_string)),
                None => uncovered.push(i),
            }
        }
        let contains = (!all && needles.len() >= CONTAINS_ANY_MIN)
            .then(|| std::sync::Arc::new(ContainsAny { needles, search: std::sync::OnceLock::new(), uncovered }));
        let refs = matchers.iter().any(|m| match m {
            Matcher::Any(alternatives) => alternatives.iter().any(|a| matches!(a, Matcher::FieldRef { .. })),
            other => matches!(other, Matcher::FieldRef { .. }),
        });
        Atom { field, matchers, all, keyword: false, contains, refs }
    }

    /// The same test as a keyword search (see the `keyword` field).
    pub fn keyword(mut self) -> Atom {
        self.keyword = true;
        self
    }

    /// Whether the form of an occurrence in `reading` passes the test.
    fn test_form(&self, view: &EventView, occ: &Occurrence, form: (&str, &str), ctx: Ctx, refs: &Refs<'_>) -> bool {
        let one = |m: &Matcher| matcher_matches(m, view, occ, form, ctx, refs);
        if self.all {
            return self.matchers.iter().all(one);
        }
        match self.contains.as_deref().and_then(|any| Some((any.search()?, any))) {
            Some((search, any)) => {
                (occ.scalar != Scalar::Null && search.is_match(form.1))
                    || any.uncovered.iter().any(|&i| one(&self.matchers[i]))
            }
            None => self.matchers.iter().any(one),
        }
    }

    /// A null occurrence has no views; it is tested as null.
    fn test(&self, view: &EventView, occ: &Occurrence, ctx: Ctx, refs: &Refs<'_>) -> bool {
        if occ.scalar == Scalar::Null {
            return self.test_form(view, occ, ("", ""), ctx, refs);
        }
        match view.form(occ, ctx.reading) {
            Some(form) => self.test_form(view, occ, form, ctx, refs),
            // Views not made: only a rule reading a field it did not declare could get
            // here; the test then fails (a positive test does not match, a filter does
            // not apply).
            None => false,
        }
    }

    /// The fields the test reads.
    fn fields(&self, out: &mut Vec<FieldId>) {
        out.push(self.field);
        for m in &self.matchers {
            m.referenced_fields(out);
        }
    }

    /// Whether the test holds on a record where the field is absent.
    fn holds_when_absent(&self) -> bool {
        let null = |m: &Matcher| matches!(m, Matcher::Null | Matcher::Exists(false));
        if self.all { self.matchers.iter().all(null) } else { self.matchers.iter().any(null) }
    }

    fn eval(&self, view: &EventView, ctx: Ctx) -> bool {
        let mut occurrences = view.occurrences(self.field).iter().filter(|o| o.in_reading(ctx.reading)).peekable();
        if occurrences.peek().is_none() {
            return self.holds_when_absent();
        }
        let refs = if self.refs { Refs::gather(&self.matchers, view, ctx.reading) } else { Refs { sets: Vec::new() } };
        // The values of a keyword search are every value of the record, not several of
        // one: "the record holds the keyword" is true when any of them does, under `not`
        // too.
        if ctx.positive || self.keyword {
            let ctx = Ctx { positive: true, ..ctx };
            occurrences.any(|o| self.test(view, o, ctx, &refs))
        } else {
            occurrences.all(|o| self.test(view, o, ctx, &refs))
        }
    }
}

/// A `fieldref` test compares no more distinct values of the other field than this with
/// `contains`, `startswith` or `endswith` (equality looks values up in a set, whatever
/// their number); past it the record is marked as not fully evaluated.
pub const MAX_FIELDREF_VALUES: usize = 64;

/// The values of the other fields of an atom's `fieldref` tests, gathered once per
/// evaluation of the atom rather than once per value tested: `n` values of one field
/// against `m` of the other cost `n + m` for equality, not `n × m`.
struct Refs<'v> {
    sets: Vec<RefValues<'v>>,
}

struct RefValues<'v> {
    field: crate::fields::FieldId,
    /// The distinct folded values of the other field, in this reading.
    set: std::collections::HashSet<&'v str>,
    /// The same, in record order, for `contains` / `startswith` / `endswith`, at most
    /// [`MAX_FIELDREF_VALUES`].
    list: Vec<&'v str>,
    /// More distinct values than `list` holds.
    truncated: bool,
    /// Some occurrence of the other field is null or has no views: no test can hold for
    /// every value.
    unusable: bool,
}

impl<'v> Refs<'v> {
    fn gather(matchers: &[Matcher], view: &'v EventView, reading: Reading) -> Refs<'v> {
        let mut sets: Vec<RefValues<'v>> = Vec::new();
        let mut each = |m: &Matcher| {
            if let Matcher::FieldRef { field, .. } = m {
                if sets.iter().any(|r| r.field == *field) {
                    return;
                }
                let mut values = RefValues {
                    field: *field,
                    set: Default::default(),
                    list: Vec::new(),
                    truncated: false,
                    unusable: false,
                };
                for o in view.occurrences(*field).iter().filter(|o| o.in_reading(reading)) {
                    let form = if o.scalar == Scalar::Null { None } else { view.form(o, reading) };
                    let Some((_, folded)) = form else {
                        values.unusable = true;
                        continue;
                    };
                    if values.set.insert(folded) {
                        if values.list.len() < MAX_FIELDREF_VALUES {
                            values.list.push(folded);
                        } else {
                            values.truncated = true;
                        }
                    }
                }
                sets.push(values);
            }
        };
        for m in matchers {
            match m {
                Matcher::Any(alternatives) => alternatives.iter().for_each(&mut each),
                other => each(other),
            }
        }
        Refs { sets }
    }

    fn of(&self, field: crate::fields::FieldId) -> Option<&RefValues<'v>> {
        self.sets.iter().find(|r| r.field == field)
    }
}

/// How a test is evaluated: its polarity (under an even number of `not`s or an odd one)
/// and the reading of the record.
#[derive(Clone, Copy, Debug)]
struct Ctx {
    positive: bool,
    reading: Reading,
}

/// Whether one view (case kept, folded) of an occurrence matches. `positive` is the
/// polarity of the test: a `fieldref` under `not` must hold for every occurrence of the
/// other field (a duplicate of it cannot switch a filter on).
fn matcher_matches(
    matcher: &Matcher,
    view: &EventView,
    occ: &Occurrence,
    (canon, folded): (&str, &str),
    ctx: Ctx,
    refs: &Refs<'_>,
) -> bool {
    match matcher {
        Matcher::Null => occ.scalar == Scalar::Null,
        Matcher::Exists(present) => *present,
        _ if occ.scalar == Scalar::Null => false,
        Matcher::Str(p) => p.matches(if p.cased() { canon } else { folded }, ctx.reading),
        Matcher::Int(n) => view.integer(occ) == Some(i128::from(*n)),
        Matcher::Regex(p) => p.re.is_match(canon),
        Matcher::Any(alternatives) => {
            alternatives.iter().any(|m| matcher_matches(m, view, occ, (canon, folded), ctx, refs))
        }
        Matcher::Compare(op, bound) => view.number(occ).is_some_and(|v| op.holds(v, *bound)),
        Matcher::Cidr(net) => net.contains(canon),
        Matcher::FieldRef { field, op } => {
            let Some(values) = refs.of(*field) else { return false };
            match op {
                // Equal to some value of the other field; under `not`, to every one (so
                // the other field holds this one value only).
                None if ctx.positive => values.set.contains(folded),
                None => !values.unusable && values.set.len() == 1 && values.set.contains(folded),
                Some(_) => {
                    if values.truncated {
                        view.mark_incomplete(Incomplete::FIELDREF);
                        // Under `not`, not every value was compared: the filter does not apply.
                        if !ctx.positive {
                            return false;
                        }
                    }
                    let one = |other: &&str| TextOp::holds(*op, folded, other);
                    if ctx.positive {
                        values.list.iter().any(one)
                    } else {
                        !values.unusable && !values.list.is_empty() && values.list.iter().all(one)
                    }
                }
            }
        }
    }
}

impl Expr {
    /// Evaluates the expression on the record in `view`: true when it holds in either
    /// reading of the record ([`Reading`]), each reading evaluated whole.
    pub fn eval(&self, view: &EventView) -> bool {
        self.eval_in(view, &Reading::BOTH)
    }

    /// [`Expr::eval`] in the given readings only (`[Reading::Logged]`: the text as written,
    /// as other Sigma tools read it).
    pub fn eval_in(&self, view: &EventView, readings: &[Reading]) -> bool {
        self.eval_readings(view, readings, view.readings_differ())
    }

    /// [`Expr::eval_in`], told whether the fields it reads differ between the readings
    /// ([`EventView::fields_differ`]): when they do not, one evaluation stands for both.
    pub fn eval_readings(&self, view: &EventView, readings: &[Reading], differ: bool) -> bool {
        if !differ && readings.len() == 2 {
            return self.eval_with(view, Ctx { positive: true, reading: Reading::Resolved });
        }
        readings.iter().any(|&reading| self.eval_with(view, Ctx { positive: true, reading }))
    }

    fn eval_with(&self, view: &EventView, ctx: Ctx) -> bool {
        match self {
            Expr::And(children) => children.iter().all(|c| c.eval_with(view, ctx)),
            Expr::Or(children) => children.iter().any(|c| c.eval_with(view, ctx)),
            Expr::Not(child) => !child.eval_with(view, Ctx { positive: !ctx.positive, ..ctx }),
            Expr::Atom(atom) => atom.eval(view, ctx),
            Expr::Const(b) => *b,
        }
    }

    /// Adds every field the expression reads to `out` (sorted, without duplicates).
    pub fn fields(&self, out: &mut Vec<FieldId>) {
        fn walk(e: &Expr, out: &mut Vec<FieldId>) {
            match e {
                Expr::And(children) | Expr::Or(children) => children.iter().for_each(|c| walk(c, out)),
                Expr::Not(child) => walk(child, out),
                Expr::Atom(atom) => atom.fields(out),
                Expr::Const(_) => {}
            }
        }
        walk(self, out);
        out.sort_unstable();
        out.dedup();
    }

    /// `a and b`, flattening nested `and`s.
    pub fn and(parts: Vec<Expr>) -> Expr {
        let mut flat = Vec::with_capacity(parts.len());
        for p in parts {
            match p {
                Expr::And(inner) => flat.extend(inner),
                Expr::Const(true) => {}
                other => flat.push(other),
            }
        }
        match flat.len() {
            0 => Expr::Const(true),
            1 => flat.pop().expect("one"),
            _ => Expr::And(flat),
        }
    }

    /// `a or b`, flattening nested `or`s.
    pub fn or(parts: Vec<Expr>) -> Expr {
        let mut flat = Vec::with_capacity(parts.len());
        for p in parts {
            match p {
                Expr::Or(inner) => flat.extend(inner),
                Expr::Const(false) => {}
                other => flat.push(other),
            }
        }
        match flat.len() {
            0 => Expr::Const(false),
            1 => flat.pop().expect("one"),
            _ => Expr::Or(flat),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fields::FieldCatalog;
    use crate::normalize::FieldKind;
    use crate::rules::pattern::tokenize;

    fn atom(field: FieldId, value: &str) -> Expr {
        let m = Matcher::string(tokenize(value), FieldKind::Path, false);
        Expr::Atom(Atom::new(field, vec![m], false))
    }

    fn view_of(values: &[(FieldId, &str)], catalog: &FieldCatalog) -> EventView {
        let mut v = EventView::new();
        for &(f, text) in values {
            v.push(f, Scalar::Str, text);
        }
        v.finish(catalog);
        v.make_all_views(catalog);
        v
    }

    #[test]
    fn a_duplicate_key_cannot_switch_a_filter_on() {
        let mut c = FieldCatalog::new();
        let image = c.intern("Image");
        let parent = c.intern("ParentImage");
        let rule = Expr::and(vec![atom(image, r"*\cmd.exe"), Expr::Not(Box::new(atom(parent, r"*\msiexec.exe")))]);
        let benign = view_of(&[(image, r"C:\cmd.exe"), (parent, r"C:\Windows\msiexec.exe")], &c);
        assert!(!rule.eval(&benign));
        let evasive =
            view_of(&[(image, r"C:\cmd.exe"), (parent, r"C:\w3wp.exe"), (parent, r"C:\Windows\msiexec.exe")], &c);
        assert!(rule.eval(&evasive), "one occurrence outside the filter must keep the detection");
        let no_parent = view_of(&[(image, r"C:\cmd.exe")], &c);
        assert!(rule.eval(&no_parent), "an absent field is not excluded by a filter on it");
    }

    #[test]
    fn double_negation_restores_any_semantics() {
        let mut c = FieldCatalog::new();
        let image = c.intern("Image");
        let rule = Expr::Not(Box::new(Expr::Not(Box::new(atom(image, r"*\cmd.exe")))));
        let v = view_of(&[(image, r"C:\a.exe"), (image, r"C:\cmd.exe")], &c);
        assert!(rule.eval(&v));
    }

    #[test]
    fn null_means_absent_or_null() {
        let mut c = FieldCatalog::new();
        let f = c.intern("Image");
        let rule = Expr::Atom(Atom::new(f, vec![Matcher::Null], false));
        assert!(rule.eval(&view_of(&[], &c)));
        assert!(!rule.eval(&view_of(&[(f, "x")], &c)));
        let mut v = EventView::new();
        v.push(f, Scalar::Null, "");
        v.finish(&c);
        v.make_all_views(&c);
        assert!(rule.eval(&v));
    }
}
