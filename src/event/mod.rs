//! The values of one record that the rules read, gathered from a parsed JSON tape.
//!
//! [`EventView`] is reused from record to record: its vectors and its text arena keep
//! their capacity, so a record costs no allocation once the stream has warmed up. Every
//! occurrence of a field is kept (a duplicate key, an array element, the same field in
//! two shapes), each with its views: the canonical forms of its field's kind, case kept
//! and folded ([`crate::normalize`]).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use simd_json::{Node, StaticNode};

mod walk;

use crate::fields::{Derivation, FieldCatalog, FieldId, PathTrie};
use crate::normalize::{
    self, BOTH_READINGS, FieldKind, Reading, Scratch, cmdline, compat_into, fold_for, for_each_arg,
};
use walk::Walk;
pub use walk::{XmlEvent, fmt_into};

/// The JSON type of an occurrence.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Scalar {
    /// A string.
    Str,
    /// A signed integer.
    Int(i64),
    /// An unsigned integer above `i64::MAX`.
    UInt(u64),
    /// A float.
    Float(f64),
    /// A boolean.
    Bool(bool),
    /// JSON null.
    Null,
}

/// One value of one field in the current record.
#[derive(Clone, Copy, Debug)]
pub struct Occurrence {
    /// Which field.
    pub field: FieldId,
    /// Its JSON type.
    pub scalar: Scalar,
    raw: (u32, u32),
    views: (u32, u32),
    /// The readings it exists in (a mask of [`Reading::bit`]s): an argument derived from
    /// a command line may differ between them.
    only: u8,
    /// Read under a fallback path (an ECS name): dropped when the record holds the field
    /// under another.
    fallback: bool,
}

impl Occurrence {
    /// Whether the occurrence exists in `reading`.
    pub fn in_reading(&self, reading: Reading) -> bool {
        self.only & reading.bit() != 0
    }
}

/// The form of an occurrence in one or both readings: case kept, and folded.
#[derive(Clone, Copy, Debug)]
struct View {
    readings: u8,
    canon: (u32, u32),
    folded: (u32, u32),
}

/// The rule-visible values of the current record.
#[derive(Debug, Default)]
pub struct EventView {
    occurrences: Vec<Occurrence>,
    views: Vec<View>,
    /// Per field, the range of `occurrences` holding it (after [`EventView::finish`]).
    index: Vec<(u32, u32)>,
    text: String,
    /// Where the walk writes a number out (kept between records: no allocation each).
    number: String,
    raw: String,
    fold: String,
    arg: String,
    norm: Scratch,
    has_key: bool,
    /// The record's process is cmd.exe.
    cmd: bool,
    /// Per field, whether its views are made.
    viewed: Vec<bool>,
    /// Some value made so far differs between the two readings.
    readings_differ: bool,
    /// Per field: some value of it differs between the readings.
    differs: Vec<bool>,
    /// Per field, what was pushed of it (see [`EventView::push`]).
    pushed: Vec<Pushed>,
    /// Fields of `pushed` that are not at their zero state.
    touched: Vec<FieldId>,
    /// Hashes of the occurrences of the fields with more than [`EXACT_PUSHES`] of them →
    /// the index of one occurrence with that hash.
    seen: HashMap<u64, u32, BuildHasherDefault<HashIsKey>>,
    /// Occurrences not kept: identical to one kept, or past [`MAX_OCCURRENCES`].
    duplicates: u64,
    excess: u64,
    /// Bytes of view text the record may take ([`EventView::set_view_budget`]).
    view_budget: usize,
    /// Marked while views are made, and by tests while rules are evaluated.
    incomplete: std::cell::Cell<Incomplete>,
    /// Shapes of the table the record was recognised in.
    shapes: Vec<u16>,
    /// String members that may hold a whole event, kept by the walk: (trie node, range
    /// of `embedded_text`).
    embedded: Vec<(u32, (u32, u32))>,
    embedded_text: String,
    /// Some embedded event did not start its string ([`EventView::stash_embedded`]).
    unmarked_embedded: bool,
    /// Positional values kept by the walk: (array, index, scalar, range of
    /// `positional_text`).
    positional: Vec<(u32, u32, Scalar, (u32, u32))>,
    positional_text: String,
    /// Positional arrays seen.
    positional_arrays: u32,
    /// An XML reader's buffers.
    xml: crate::xml::Scratch,
}

/// Distinct occurrences of one field that are kept and evaluated, at most. A record that
/// holds more (a field duplicated or an array with more distinct values than this) has
/// the rest counted and is annotated as not fully evaluated.
pub const MAX_OCCURRENCES: u32 = 1024;

/// Occurrences of a field pushed before identical ones are looked for: real records hold
/// a field once or twice, and need no hashing.
const EXACT_PUSHES: u32 = 4;

/// What was pushed of one field of the current record.
#[derive(Clone, Copy, Debug, Default)]
struct Pushed {
    /// Occurrences kept.
    kept: u32,
    /// The first [`EXACT_PUSHES`] of them (indices into `occurrences`).
    first: [u32; EXACT_PUSHES as usize],
    /// The last kept (an index into `occurrences`): a run of one value is seen without
    /// hashing.
    last: u32,
    /// Some occurrence was dropped at the cap.
    capped: bool,
}

/// Why a record was not fully evaluated (none of these: it was).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Incomplete(u8);

impl Incomplete {
    /// A field read by a rule had more than [`MAX_OCCURRENCES`] distinct values.
    pub const OCCURRENCES: Incomplete = Incomplete(1);
    /// The forms values are compared in took more than the record's share of memory
    /// (compatibility characters that expand many times over), or a path form did not
    /// settle within its passes (`normalize::path::canonical_into`).
    pub const VIEWS: Incomplete = Incomplete(2);
    /// A `fieldref` test met more distinct values of the other field than it compares.
    pub const FIELDREF: Incomplete = Incomplete(4);

    /// Nothing was left out.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Adds `other`.
    pub fn insert(&mut self, other: Incomplete) {
        self.0 |= other.0;
    }

    /// The names of the reasons, for the annotation.
    pub fn names(self) -> impl Iterator<Item = &'static str> {
        [(Incomplete::OCCURRENCES, "occurrences"), (Incomplete::VIEWS, "views"), (Incomplete::FIELDREF, "fieldref")]
            .into_iter()
            .filter(move |(r, _)| self.0 & r.0 != 0)
            .map(|(_, n)| n)
    }
}

impl EventView {
    /// An empty view.
    pub fn new() -> EventView {
        EventView { view_budget: usize::MAX, ..EventView::default() }
    }

    /// Bytes of capacity held by the buffers that grow with a record.
    pub fn capacity_bytes(&self) -> usize {
        let seen = self.seen.capacity() * std::mem::size_of::<(u64, u32)>();
        seen + self.norm.capacity_bytes()
            + crate::scratch::total(&[
                &self.occurrences,
                &self.views,
                &self.text,
                &self.raw,
                &self.fold,
                &self.arg,
                &self.index,
                &self.viewed,
                &self.differs,
                &self.pushed,
                &self.touched,
            ])
    }

    /// Forgets the current record and gives back capacity above `keep` bytes a buffer.
    pub fn release(&mut self, keep: usize) {
        use crate::scratch::Release;
        self.clear();
        self.occurrences.release(keep);
        self.views.release(keep);
        self.text.release(keep);
        self.raw.release(keep);
        self.fold.release(keep);
        self.arg.release(keep);
        self.norm.release(keep);
        if self.seen.capacity() * std::mem::size_of::<(u64, u32)>() > keep {
            self.seen = HashMap::default();
        }
    }

    /// Every occurrence of `field` in the current record.
    pub fn occurrences(&self, field: FieldId) -> &[Occurrence] {
        match self.index.get(field as usize) {
            Some(&(start, end)) => &self.occurrences[start as usize..end as usize],
            None => &[],
        }
    }

    fn slice(&self, (start, end): (u32, u32)) -> &str {
        &self.text[start as usize..end as usize]
    }

    /// The forms of an occurrence rules compare against, as (case kept, folded), in every
    /// reading.
    pub fn views(&self, occ: &Occurrence) -> impl Iterator<Item = (&str, &str)> + '_ {
        self.views[occ.views.0 as usize..occ.views.1 as usize]
            .iter()
            .map(|v| (self.slice(v.canon), self.slice(v.folded)))
    }

    /// The form of an occurrence in `reading`, as (case kept, folded); `None` when its
    /// views are not made (or it is null).
    pub fn form(&self, occ: &Occurrence, reading: Reading) -> Option<(&str, &str)> {
        self.views[occ.views.0 as usize..occ.views.1 as usize]
            .iter()
            .find(|v| v.readings & reading.bit() != 0)
            .map(|v| (self.slice(v.canon), self.slice(v.folded)))
    }

    /// Whether some value whose views are made, or some derived value, differs between
    /// the two readings (when none does, a rule needs evaluating once).
    pub fn readings_differ(&self) -> bool {
        self.readings_differ
    }

    /// Whether some value of one of `fields` differs between the two readings.
    pub fn fields_differ(&self, fields: &[FieldId]) -> bool {
        self.readings_differ && fields.iter().any(|&f| self.differs.get(f as usize).copied().unwrap_or(false))
    }

    /// The value as it was in the record (strings decoded; numbers in decimal).
    pub fn raw(&self, occ: &Occurrence) -> &str {
        self.slice(occ.raw)
    }

    /// The integer an occurrence holds: a JSON integer, or a string holding a decimal
    /// integer (surrounding blanks, a sign and leading zeros allowed).
    pub fn integer(&self, occ: &Occurrence) -> Option<i128> {
        match occ.scalar {
            Scalar::Int(i) => Some(i128::from(i)),
            Scalar::UInt(u) => Some(i128::from(u)),
            Scalar::Str => parse_decimal(self.raw(occ)),
            _ => None,
        }
    }

    /// The number an occurrence holds: a JSON number, or a string holding a decimal
    /// number (surrounding blanks allowed).
    pub fn number(&self, occ: &Occurrence) -> Option<f64> {
        match occ.scalar {
            Scalar::Int(i) => Some(i as f64),
            Scalar::UInt(u) => Some(u as f64),
            Scalar::Float(f) => Some(f),
            Scalar::Str => self.raw(occ).trim().parse::<f64>().ok().filter(|f| f.is_finite()),
            _ => None,
        }
    }

    /// Whether the record's top-level object has the annotation key.
    pub fn has_annotation_key(&self) -> bool {
        self.has_key
    }

    /// Fills the view from the tape of a record whose root is an object.
    pub fn load(&mut self, tape: &[Node<'_>], catalog: &FieldCatalog, annotation_key: &str) {
        self.clear();
        self.walk_json(tape, catalog, catalog.trie(), annotation_key, PathTrie::ROOT, true);
        self.finish(catalog);
    }

    /// [`EventView::load`], collecting only the fields `trie` holds (a sub-trie of the
    /// catalog's, [`FieldCatalog::trie_of`]).
    pub fn load_from(&mut self, tape: &[Node<'_>], catalog: &FieldCatalog, trie: &PathTrie, annotation_key: &str) {
        self.clear();
        self.walk_json(tape, catalog, trie, annotation_key, PathTrie::ROOT, true);
        self.finish(catalog);
    }

    /// Adds the values of a JSON tape: the record (`at` the root, `top`), or an event a
    /// string member held (`at` that member's node; its own members that may hold events
    /// are not read: one level only). A record is read by [`EventView::clear`], walks,
    /// the events its members hold ([`EventView::embedded_count`]), then
    /// [`EventView::finish`].
    pub fn walk_json(
        &mut self,
        tape: &[Node<'_>],
        catalog: &FieldCatalog,
        trie: &PathTrie,
        annotation_key: &str,
        at: u32,
        top: bool,
    ) {
        let mut walk = Walk { view: self, trie, annotation_key, expand: top, fallback: false, doubled: false };
        walk.object(tape, at, top);
        if let Some(keywords) = catalog.keyword_field() {
            self.every_scalar(tape, keywords);
        }
    }

    /// Adds the values of a Windows XML event (an `<Event>` or an `<EventData>`), read in
    /// the layout of evtx_dump (see [`walk`]).
    pub fn walk_xml(
        &mut self,
        text: &[u8],
        catalog: &FieldCatalog,
        trie: &PathTrie,
        annotation_key: &str,
    ) -> Result<XmlEvent, crate::xml::XmlError> {
        let mut scratch = std::mem::take(&mut self.xml);
        let walk = walk::XmlWalk::new(self, trie, annotation_key, catalog.keyword_field());
        let read = walk.read(text, &mut scratch);
        self.xml = scratch;
        read
    }

    /// How many string members that may hold an event the walks kept.
    pub fn embedded_count(&self) -> usize {
        self.embedded.len()
    }

    /// The `i`th of them: its trie node and its text.
    pub fn embedded(&self, i: usize) -> (u32, &str) {
        let (node, (start, end)) = self.embedded[i];
        (node, &self.embedded_text[start as usize..end as usize])
    }

    /// The shapes of the table the record was recognised in (indices).
    pub fn shapes(&self) -> &[u16] {
        &self.shapes
    }

    /// Notes that the record is of these shapes.
    pub fn recognise(&mut self, shapes: &[u16]) {
        for &s in shapes {
            if !self.shapes.contains(&s) {
                self.shapes.push(s);
            }
        }
    }

    /// Keeps a string member that may hold a whole event: XML, or a JSON object (blanks
    /// may come first). The prefilter marks a line holding one
    /// ([`crate::prefilter::INSPECT_MARKERS`]) only when the event starts the string, as
    /// serializers write it: XML, `{"` or `{` and a newline; one that does not is counted
    /// ([`EventView::unmarked_embedded`]).
    fn stash_embedded(&mut self, node: u32, text: &str) {
        let trimmed = text.trim_start();
        if !(trimmed.starts_with('<') || trimmed.starts_with('{')) {
            return;
        }
        if !(text.starts_with('<') || text.starts_with("{\"") || text.starts_with("{\n")) {
            self.unmarked_embedded = true;
        }
        let start = self.embedded_text.len() as u32;
        self.embedded_text.push_str(trimmed);
        self.embedded.push((node, (start, self.embedded_text.len() as u32)));
    }

    fn stash_positional(&mut self, array: u32, index: u32, scalar: Scalar, text: &str) {
        let start = self.positional_text.len() as u32;
        self.positional_text.push_str(text);
        self.positional.push((array, index, scalar, (start, self.positional_text.len() as u32)));
    }

    /// Names the positional values: the layout of the shape table for the record's
    /// provider, event id and number of values; each value is then read as the member of
    /// that name at the top of the record.
    fn name_positional(&mut self, catalog: &FieldCatalog) {
        if self.positional.is_empty() {
            return;
        }
        let provider = catalog.id("Provider_Name");
        let event = catalog.id("EventID");
        let providers: Vec<String> =
            self.occurrences.iter().filter(|o| Some(o.field) == provider).map(|o| self.raw(o).to_string()).collect();
        let events: Vec<i128> =
            self.occurrences.iter().filter(|o| Some(o.field) == event).filter_map(|o| self.integer(o)).collect();
        let values = std::mem::take(&mut self.positional);
        let text = std::mem::take(&mut self.positional_text);
        let trie = catalog.trie();
        for array in 1..=self.positional_arrays {
            let of: Vec<&(u32, u32, Scalar, (u32, u32))> = values.iter().filter(|v| v.0 == array).collect();
            let len = of.last().map_or(0, |v| v.1 as usize + 1);
            let layout = catalog.shapes().shapes.iter().flat_map(|s| &s.positional).find(|p| {
                p.fields.len() == len
                    && events.contains(&i128::from(p.event_id))
                    && providers.iter().any(|n| n.eq_ignore_ascii_case(&p.provider))
            });
            let Some(layout) = layout else { continue };
            for &&(_, index, scalar, (start, end)) in &of {
                let name = &layout.fields[index as usize];
                let Some(node) = trie.child(PathTrie::ROOT, name) else { continue };
                for &field in trie.node(node).fields() {
                    self.push_as(field, scalar, &text[start as usize..end as usize], BOTH_READINGS, false);
                }
            }
        }
        self.positional_text = text;
        self.positional = values;
    }

    /// Adds every string and number of the record, at any depth (keys excepted), as an
    /// occurrence of `field`. The walk keeps its own stack: nesting costs heap, not calls.
    fn every_scalar(&mut self, tape: &[Node<'_>], field: FieldId) {
        // Per open container: (is an object, items left; an object's items are its keys
        // and values in turn).
        let mut open: Vec<(bool, usize)> = Vec::new();
        let mut buf = String::new();
        for node in tape {
            let is_key = matches!(open.last(), Some(&(true, left)) if left % 2 == 0);
            if let Some((_, left)) = open.last_mut() {
                *left -= 1;
            }
            match node {
                Node::Object { len, .. } => open.push((true, 2 * len)),
                Node::Array { len, .. } => open.push((false, *len)),
                Node::String(s) if !is_key => self.push(field, Scalar::Str, s),
                Node::Static(StaticNode::I64(i)) => self.push(field, Scalar::Int(*i), fmt_into(&mut buf, *i)),
                Node::Static(StaticNode::U64(u)) => self.push(field, Scalar::UInt(*u), fmt_into(&mut buf, *u)),
                Node::Static(StaticNode::F64(f)) => self.push(field, Scalar::Float(*f), fmt_into(&mut buf, *f)),
                _ => {}
            }
            while open.last().is_some_and(|&(_, left)| left == 0) {
                open.pop();
            }
        }
    }

    /// Forgets the current record.
    pub fn clear(&mut self) {
        self.readings_differ = false;
        self.occurrences.clear();
        self.views.clear();
        self.text.clear();
        self.has_key = false;
        for &f in &self.touched {
            self.pushed[f as usize] = Pushed::default();
        }
        self.touched.clear();
        self.seen.clear();
        self.duplicates = 0;
        self.excess = 0;
        self.incomplete.set(Incomplete::default());
        self.shapes.clear();
        self.embedded.clear();
        self.embedded_text.clear();
        self.unmarked_embedded = false;
        self.positional.clear();
        self.positional_text.clear();
        self.positional_arrays = 0;
    }

    /// Bytes of view text (the forms values are compared in, [`crate::normalize`]) one
    /// record may take; past it, the remaining values get no views and the record is
    /// marked [`Incomplete::VIEWS`]. Compatibility characters can expand eighteen times.
    pub fn set_view_budget(&mut self, bytes: usize) {
        self.view_budget = bytes;
    }

    /// Whether the record holds an event in a string member that does not start the
    /// string (blanks first, `{ "`): read, but a line like it is found by the prefilter
    /// only through a rule's literal outside the event's own escaping, not by its marks.
    pub fn unmarked_embedded(&self) -> bool {
        self.unmarked_embedded
    }

    /// Why the current record was not fully evaluated, so far.
    pub fn incomplete(&self) -> Incomplete {
        self.incomplete.get()
    }

    /// Marks the record as not fully evaluated (also while rules are evaluated on it).
    pub fn mark_incomplete(&self, why: Incomplete) {
        let mut now = self.incomplete.get();
        now.insert(why);
        self.incomplete.set(now);
    }

    /// Occurrences not kept because an identical one was, and because their field was
    /// at [`MAX_OCCURRENCES`].
    pub fn dropped(&self) -> (u64, u64) {
        (self.duplicates, self.excess)
    }

    /// Adds an occurrence; `text` is the decoded JSON string, or the number's decimal text.
    /// Its views are made by [`EventView::finish`].
    pub fn push(&mut self, field: FieldId, scalar: Scalar, text: &str) {
        self.push_as(field, scalar, text, BOTH_READINGS, false);
    }

    /// [`EventView::push`] for the readings `only` and from a fallback path or not. An
    /// occurrence identical to one kept is not kept again (it cannot change any test), nor
    /// one past [`MAX_OCCURRENCES`] distinct ones of its field.
    fn push_as(&mut self, field: FieldId, scalar: Scalar, text: &str, only: u8, fallback: bool) {
        let f = field as usize;
        if f >= self.pushed.len() {
            self.pushed.resize(f + 1, Pushed::default());
        }
        let state = self.pushed[f];
        if state.kept == 0 && !state.capped {
            self.touched.push(field);
        }
        let index = self.occurrences.len() as u32;
        let mut hash = None;
        if state.kept > 0 && self.is_occurrence(state.last as usize, field, scalar, text, only, fallback) {
            self.duplicates += 1;
            return;
        }
        if state.kept >= EXACT_PUSHES {
            if state.kept == EXACT_PUSHES {
                // From now on this field's occurrences are looked up: enter the first ones.
                for &i in &state.first {
                    let h = self.occurrence_hash(i as usize);
                    self.seen.entry(h).or_insert(i);
                }
            }
            let h = occurrence_hash(field, scalar, text, only, fallback);
            if let Some(&i) = self.seen.get(&h) {
                if self.is_occurrence(i as usize, field, scalar, text, only, fallback) {
                    self.duplicates += 1;
                    return;
                }
            }
            if state.kept >= MAX_OCCURRENCES {
                self.excess += 1;
                self.pushed[f].capped = true;
                return;
            }
            hash = Some(h);
        }
        let start = self.text.len() as u32;
        self.text.push_str(text);
        let raw = (start, self.text.len() as u32);
        self.occurrences.push(Occurrence { field, scalar, raw, views: (0, 0), only, fallback });
        let state = &mut self.pushed[f];
        if state.kept < EXACT_PUSHES {
            state.first[state.kept as usize] = index;
        }
        state.kept += 1;
        state.last = index;
        if let Some(h) = hash {
            self.seen.entry(h).or_insert(index);
        }
    }

    /// Whether occurrence `i` is this one.
    fn is_occurrence(&self, i: usize, field: FieldId, scalar: Scalar, text: &str, only: u8, fallback: bool) -> bool {
        let o = &self.occurrences[i];
        o.field == field && o.scalar == scalar && o.only == only && o.fallback == fallback && self.raw(o) == text
    }

    fn occurrence_hash(&self, i: usize) -> u64 {
        let o = self.occurrences[i];
        occurrence_hash(o.field, o.scalar, self.raw(&o), o.only, o.fallback)
    }

    /// Once every occurrence is in: derives fields and indexes by field. Views are made
    /// per field when first asked for ([`EventView::make_views`]).
    pub fn finish(&mut self, catalog: &FieldCatalog) {
        self.name_positional(catalog);
        self.drop_fallbacks(catalog);
        self.index_fields(catalog);
        self.viewed.clear();
        self.viewed.resize(catalog.len(), false);
        self.differs.clear();
        self.differs.resize(catalog.len(), false);
        self.cmd = self.process_is_cmd(catalog);
        let before = self.occurrences.len();
        self.derive(catalog, self.cmd);
        if self.occurrences.len() > before {
            // The views made so far stay with their occurrences (a stable sort).
            self.index_fields(catalog);
        }
        for o in self.occurrences.iter().filter(|o| o.only != BOTH_READINGS) {
            if let Some(d) = self.differs.get_mut(o.field as usize) {
                *d = true;
            }
        }
    }

    /// Sorts the occurrences by field and indexes them.
    fn index_fields(&mut self, catalog: &FieldCatalog) {
        self.occurrences.sort_by_key(|o| o.field);
        self.index.clear();
        self.index.resize(catalog.len(), (0, 0));
        let mut i = 0;
        while i < self.occurrences.len() {
            let field = self.occurrences[i].field;
            let start = i;
            while i < self.occurrences.len() && self.occurrences[i].field == field {
                i += 1;
            }
            if let Some(slot) = self.index.get_mut(field as usize) {
                *slot = (start as u32, i as u32);
            }
        }
    }

    /// Makes the views of every occurrence of `fields` that has none yet. Rules may only
    /// read the views of fields made here ([`EventView::views`] of another is empty).
    pub fn make_views(&mut self, catalog: &FieldCatalog, fields: &[FieldId]) {
        for &field in fields {
            let Some(done) = self.viewed.get_mut(field as usize) else { continue };
            if std::mem::replace(done, true) {
                continue;
            }
            if self.pushed.get(field as usize).is_some_and(|p| p.capped) {
                self.mark_incomplete(Incomplete::OCCURRENCES);
            }
            let (from, to) = self.index[field as usize];
            for i in from as usize..to as usize {
                self.make_occurrence_views(catalog, i);
            }
        }
    }

    /// Makes the views of every occurrence (for tests and tools).
    pub fn make_all_views(&mut self, catalog: &FieldCatalog) {
        let all: Vec<FieldId> = (0..catalog.len() as FieldId).collect();
        self.make_views(catalog, &all);
    }

    fn make_occurrence_views(&mut self, catalog: &FieldCatalog, i: usize) {
        let occ = self.occurrences[i];
        let start = self.views.len() as u32;
        if occ.scalar == Scalar::Null {
            self.occurrences[i].views = (start, start);
            return;
        }
        if self.text.len() > self.view_budget {
            // No views: no positive test holds for it, no filter excludes on it.
            self.occurrences[i].views = (start, start);
            self.mark_incomplete(Incomplete::VIEWS);
            return;
        }
        self.raw.clear();
        self.raw.push_str(&self.text[occ.raw.0 as usize..occ.raw.1 as usize]);
        let kind = if occ.scalar == Scalar::Str { catalog.kind(occ.field) } else { FieldKind::Argument };
        let cmd = self.cmd;
        let field = occ.field as usize;
        let EventView { views, text, fold, norm, raw, readings_differ, differs, view_budget, .. } = self;
        let view_budget = *view_budget;
        let mut differ = |readings_differ: &mut bool| {
            *readings_differ = true;
            if let Some(d) = differs.get_mut(field) {
                *d = true;
            }
        };
        // The compatibility form, and what is made of it: the resolved views and a fold.
        let limit = view_budget.saturating_sub(text.len()) / 3;
        let made = normalize::views(kind, raw, cmd, limit, norm, |readings, v, how| {
            if readings != BOTH_READINGS {
                differ(readings_differ);
            }
            let canon_start = text.len();
            text.push_str(v);
            let canon = (canon_start as u32, text.len() as u32);
            // Both readings of one text: their folds may still differ (the logged one
            // keeps compatibility forms).
            let mut push_fold = |readings: u8, reading: Reading| {
                fold.clear();
                let folded = if !fold_for(reading, v, how, fold) {
                    canon
                } else {
                    let folded_start = text.len();
                    text.push_str(fold);
                    (folded_start as u32, text.len() as u32)
                };
                views.push(View { readings, canon, folded });
            };
            if readings == BOTH_READINGS && !v.is_ascii() {
                differ(readings_differ);
                push_fold(Reading::Logged.bit(), Reading::Logged);
                push_fold(Reading::Resolved.bit(), Reading::Resolved);
            } else {
                push_fold(
                    readings,
                    if readings & Reading::Resolved.bit() != 0 { Reading::Resolved } else { Reading::Logged },
                );
            }
        });
        if !made {
            self.views.truncate(start as usize);
            self.mark_incomplete(Incomplete::VIEWS);
        }
        if self.norm.unsettled() {
            self.mark_incomplete(Incomplete::VIEWS);
        }
        self.occurrences[i].views = (start, self.views.len() as u32);
    }

    /// Drops the occurrences read under a fallback path of fields the record also holds
    /// under a primary one.
    fn drop_fallbacks(&mut self, catalog: &FieldCatalog) {
        if !self.occurrences.iter().any(|o| o.fallback) {
            return;
        }
        self.viewed.clear();
        self.viewed.resize(catalog.len(), false);
        for o in self.occurrences.iter().filter(|o| !o.fallback) {
            if let Some(primary) = self.viewed.get_mut(o.field as usize) {
                *primary = true;
            }
        }
        let primary = std::mem::take(&mut self.viewed);
        self.occurrences.retain(|o| !o.fallback || !primary.get(o.field as usize).copied().unwrap_or(false));
        self.viewed = primary;
    }

    /// Whether the record's process (`Image`) is cmd.exe, whose carets are escapes: read from
    /// the resolved views of `Image` (made here; rules reading `Image` use them too).
    fn process_is_cmd(&mut self, catalog: &FieldCatalog) -> bool {
        let Some(image) = catalog.id("Image") else { return false };
        self.make_views(catalog, &[image]);
        self.occurrences(image).iter().filter(|o| o.scalar == Scalar::Str).any(|o| {
            self.form(o, Reading::Resolved)
                .is_some_and(|(_, folded)| folded == "cmd.exe" || folded.ends_with("\\cmd.exe"))
        })
    }

    /// Adds a string occurrence that exists in one reading only.
    fn push_only(&mut self, field: FieldId, text: &str, reading: Reading) {
        self.push_as(field, Scalar::Str, text, reading.bit(), false);
    }

    /// Adds the derived fields (command-line arguments) as occurrences.
    fn derive(&mut self, catalog: &FieldCatalog, cmd: bool) {
        let mut source = std::mem::take(&mut self.raw);
        let mut arg = std::mem::take(&mut self.arg);
        for (field, derivation) in catalog.derivations() {
            let Derivation::Arguments { from } = derivation;
            // Occurrences pushed here are of another field, so the sources stay put.
            for i in 0..self.occurrences.len() {
                let o = self.occurrences[i];
                if o.field != from || o.scalar != Scalar::Str {
                    continue;
                }
                // Logged: the arguments of the line as written; resolved: of its
                // compatibility form, without cmd's carets when cmd is the process.
                let written = &self.text[o.raw.0 as usize..o.raw.1 as usize];
                source.clear();
                compat_into(written, &mut source);
                if cmd && source.contains('^') {
                    let mut uncareted = String::new();
                    cmdline::without_carets(&source, &mut uncareted);
                    source = uncareted;
                }
                if source == written {
                    for_each_arg(&source, &mut arg, |a| self.push(field, Scalar::Str, a));
                } else {
                    let written = written.to_string();
                    self.readings_differ = true;
                    for_each_arg(&written, &mut arg, |a| self.push_only(field, a, Reading::Logged));
                    for_each_arg(&source, &mut arg, |a| self.push_only(field, a, Reading::Resolved));
                }
            }
        }
        self.raw = source;
        self.arg = arg;
    }
}

/// The hasher of a map whose keys are hashes already.
#[derive(Default)]
struct HashIsKey(u64);

impl Hasher for HashIsKey {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// FNV-1a over what makes two occurrences identical. Collisions cost only a comparison
/// (and, if many, an occurrence kept twice), never a value lost.
fn occurrence_hash(field: FieldId, scalar: Scalar, text: &str, only: u8, fallback: bool) -> u64 {
    let tag: u64 = match scalar {
        Scalar::Str => 1,
        Scalar::Int(_) => 2,
        Scalar::UInt(_) => 3,
        Scalar::Float(_) => 4,
        Scalar::Bool(_) => 5,
        Scalar::Null => 6,
    };
    let seed = (u64::from(field) << 16) | (tag << 8) | (u64::from(only) << 1) | u64::from(fallback);
    let fnv = |h: u64, b: u8| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    let h = seed.to_le_bytes().iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| fnv(h, b));
    text.bytes().fold(h, fnv)
}

fn parse_decimal(text: &str) -> Option<i128> {
    let t = text.trim();
    let digits = t.strip_prefix(['+', '-']).unwrap_or(t);
    if digits.is_empty() || digits.len() > 30 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    t.parse::<i128>().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(json: &str, fields: &[&str]) -> (EventView, FieldCatalog) {
        let mut catalog = FieldCatalog::new();
        for f in fields {
            catalog.intern(f);
        }
        let mut bytes = json.as_bytes().to_vec();
        let tape = simd_json::to_tape(&mut bytes).expect("valid json");
        let mut v = EventView::new();
        v.load(&tape.0, &catalog, "iis_tagger");
        v.make_all_views(&catalog);
        (v, catalog)
    }

    /// The folded forms of a field in the resolved reading.
    fn texts(v: &EventView, c: &mut FieldCatalog, field: &str) -> Vec<String> {
        readings(v, c, field, Reading::Resolved)
    }

    fn readings(v: &EventView, c: &mut FieldCatalog, field: &str, reading: Reading) -> Vec<String> {
        let id = c.intern(field);
        v.occurrences(id)
            .iter()
            .filter(|o| o.in_reading(reading))
            .filter_map(|o| v.form(o, reading).map(|(_, folded)| folded.to_string()))
            .collect()
    }

    #[test]
    fn duplicate_keys_and_every_shape_are_kept() {
        let json = r#"{"Image":"C:\\A.exe","Image":"C:/B.exe","process":{"executable":"c:\\c.exe"},"winlog":{"event_data":{"Image":"D.exe"}}}"#;
        let (v, mut c) = view(json, &["Image"]);
        let mut got = texts(&v, &mut c, "Image");
        got.sort();
        // The ECS name is a fallback: read only when no other path holds the field.
        assert_eq!(got, vec![r"c:\a.exe", r"c:\b.exe", "d.exe"]);
        let (v, mut c) = view(r#"{"process":{"executable":"c:\\c.exe"},"user":{"name":"bob"}}"#, &["Image", "User"]);
        assert_eq!(texts(&v, &mut c, "Image"), vec![r"c:\c.exe"]);
        assert_eq!(texts(&v, &mut c, "User"), vec!["bob"]);
    }

    #[test]
    fn numbers_and_number_strings() {
        let (v, mut c) = view(
            r##"{"Event":{"System":{"EventID":{"#attributes":{"Qualifiers":16384},"#text":7040}}},"EventCode":" 029"}"##,
            &["EventID"],
        );
        let id = c.intern("EventID");
        let mut ints: Vec<_> = v.occurrences(id).iter().filter_map(|o| v.integer(o)).collect();
        ints.sort();
        assert_eq!(ints, vec![29, 7040]);
    }

    #[test]
    fn arrays_give_one_occurrence_per_element() {
        let (v, mut c) = view(r#"{"registry":{"data":{"strings":["a.DLL",7,{"x":1}]}}}"#, &["Details"]);
        assert_eq!(texts(&v, &mut c, "Details"), vec!["a.dll", "7"]);
    }

    #[test]
    fn arguments_are_derived_from_every_command_line() {
        let (v, mut c) = view(r#"{"CommandLine":"appcmd l\"is\"t /TEXT:x"}"#, &["CommandLineArgs"]);
        assert_eq!(texts(&v, &mut c, "CommandLineArgs"), vec!["appcmd", "list", "/text:x"]);
    }

    #[test]
    fn command_lines_are_seen_as_typed_and_as_arguments() {
        let (v, mut c) = view(r#"{"CommandLine":"appcmd  ins\"tall\" module"}"#, &["CommandLine"]);
        assert_eq!(readings(&v, &mut c, "CommandLine", Reading::Logged), vec![r#"appcmd  ins"tall" module"#]);
        assert_eq!(texts(&v, &mut c, "CommandLine"), vec!["appcmd install module"]);
        assert!(v.readings_differ());
        let json = r#"{"CommandLine":"c^m^d /c who^ami","Image":"C:\\Windows\\System32\\CMD.EXE"}"#;
        let (v, mut c) = view(json, &["CommandLine", "Image", "CommandLineArgs"]);
        assert_eq!(readings(&v, &mut c, "CommandLine", Reading::Logged), vec!["c^m^d /c who^ami"]);
        assert_eq!(texts(&v, &mut c, "CommandLine"), vec!["cmd /c whoami"]);
        assert!(texts(&v, &mut c, "CommandLineArgs").contains(&"whoami".to_string()));
        assert!(readings(&v, &mut c, "CommandLineArgs", Reading::Logged).contains(&"who^ami".to_string()));
    }

    #[test]
    fn paths_are_canonical_and_text_is_trimmed() {
        let (v, mut c) = view(
            r#"{"Image":" \"\\\\?\\C:/Windows//System32/Cmd.exe. \" ","Details":" \"x.DLL\""}"#,
            &["Image", "Details"],
        );
        assert_eq!(texts(&v, &mut c, "Image"), vec![r"c:\windows\system32\cmd.exe"]);
        assert_eq!(texts(&v, &mut c, "Details"), vec!["x.dll"]);
        assert_eq!(readings(&v, &mut c, "Details", Reading::Logged), vec![r#" "x.dll""#], "logged: as written");
    }

    #[test]
    fn annotation_key_only_at_top_level() {
        let (v, _) = view(r#"{"a":{"iis_tagger":1}}"#, &["Image"]);
        assert!(!v.has_annotation_key());
        let (v, _) = view(r#"{"a":1,"iis_tagger":{}}"#, &["Image"]);
        assert!(v.has_annotation_key());
    }
}
