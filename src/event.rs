//! The values of one record that the rules read, gathered from a parsed JSON tape.
//!
//! [`EventView`] is reused from record to record: its vectors and its text arena keep
//! their capacity, so a record costs no allocation once the stream has warmed up. Every
//! occurrence of a field is kept (a duplicate key, an array element, the same field in
//! two shapes), each with its canonical text (case kept) and its compare form (folded).

use simd_json::{Node, StaticNode};

use crate::fields::{Derivation, FieldCatalog, FieldId, PathTrie};
use crate::normalize::{FieldKind, canonical_into, fold_into, for_each_arg};

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
    canon: (u32, u32),
    folded: (u32, u32),
}

/// The rule-visible values of the current record.
#[derive(Debug, Default)]
pub struct EventView {
    occurrences: Vec<Occurrence>,
    /// Per field, the range of `occurrences` holding it (after [`EventView::finish`]).
    index: Vec<(u32, u32)>,
    text: String,
    scratch: String,
    derive_source: String,
    derive_arg: String,
    has_key: bool,
}

impl EventView {
    /// An empty view.
    pub fn new() -> EventView {
        EventView::default()
    }

    /// Every occurrence of `field` in the current record.
    pub fn occurrences(&self, field: FieldId) -> &[Occurrence] {
        match self.index.get(field as usize) {
            Some(&(start, end)) => &self.occurrences[start as usize..end as usize],
            None => &[],
        }
    }

    /// The canonical text of an occurrence (case kept; numbers in decimal).
    pub fn canonical(&self, occ: &Occurrence) -> &str {
        &self.text[occ.canon.0 as usize..occ.canon.1 as usize]
    }

    /// The compare form of an occurrence (canonical, then case-folded).
    pub fn folded(&self, occ: &Occurrence) -> &str {
        &self.text[occ.folded.0 as usize..occ.folded.1 as usize]
    }

    /// The integer an occurrence holds: a JSON integer, or a string holding a decimal
    /// integer (surrounding blanks, a sign and leading zeros allowed).
    pub fn integer(&self, occ: &Occurrence) -> Option<i128> {
        match occ.scalar {
            Scalar::Int(i) => Some(i128::from(i)),
            Scalar::UInt(u) => Some(i128::from(u)),
            Scalar::Str => parse_decimal(self.canonical(occ)),
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
        let mut walk = Walk { view: self, catalog, annotation_key };
        walk.object(tape, PathTrie::ROOT, true);
        self.derive(catalog);
        self.finish(catalog.len());
    }

    fn clear(&mut self) {
        self.occurrences.clear();
        self.text.clear();
        self.has_key = false;
    }

    /// Adds an occurrence; `text` is the JSON string, or the number's decimal text.
    pub fn push(&mut self, field: FieldId, kind: FieldKind, scalar: Scalar, text: &str) {
        let start = self.text.len();
        canonical_into(kind, text, &mut self.text);
        let mid = self.text.len();
        self.scratch.clear();
        fold_into(&self.text[start..mid], &mut self.scratch);
        let folded = if self.scratch.as_str() == &self.text[start..mid] {
            (start, mid)
        } else {
            self.text.push_str(&self.scratch);
            (mid, self.text.len())
        };
        self.occurrences.push(Occurrence {
            field,
            scalar,
            canon: (start as u32, mid as u32),
            folded: (folded.0 as u32, folded.1 as u32),
        });
    }

    fn derive(&mut self, catalog: &FieldCatalog) {
        let mut command_line = std::mem::take(&mut self.derive_source);
        let mut arg = std::mem::take(&mut self.derive_arg);
        for (field, derivation) in catalog.derivations() {
            let Derivation::Arguments { from } = derivation;
            // Occurrences pushed here are of another field, so the sources stay put.
            for i in 0..self.occurrences.len() {
                let o = self.occurrences[i];
                if o.field != from || o.scalar != Scalar::Str {
                    continue;
                }
                command_line.clear();
                command_line.push_str(&self.text[o.canon.0 as usize..o.canon.1 as usize]);
                for_each_arg(&command_line, &mut arg, |a| self.push(field, FieldKind::Argument, Scalar::Str, a));
            }
        }
        self.derive_source = command_line;
        self.derive_arg = arg;
    }

    /// Sorts occurrences by field and builds the per-field index.
    pub fn finish(&mut self, fields: usize) {
        self.occurrences.sort_by_key(|o| o.field);
        self.index.clear();
        self.index.resize(fields, (0, 0));
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
}

fn parse_decimal(text: &str) -> Option<i128> {
    let t = text.trim();
    let digits = t.strip_prefix(['+', '-']).unwrap_or(t);
    if digits.is_empty() || digits.len() > 30 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    t.parse::<i128>().ok()
}

/// The number of tape nodes a value occupies, itself included.
fn span(node: &Node<'_>) -> usize {
    match node {
        Node::Object { count, .. } | Node::Array { count, .. } => count + 1,
        _ => 1,
    }
}

struct Walk<'v, 'c> {
    view: &'v mut EventView,
    catalog: &'c FieldCatalog,
    annotation_key: &'c str,
}

impl Walk<'_, '_> {
    /// Walks the object at `nodes[0]` whose path is trie node `at`.
    fn object(&mut self, nodes: &[Node<'_>], at: u32, top: bool) {
        let Some(&Node::Object { len, .. }) = nodes.first() else { return };
        let trie = self.catalog.trie();
        let mut i = 1;
        for _ in 0..len {
            let (Some(Node::String(key)), Some(value)) = (nodes.get(i), nodes.get(i + 1)) else { return };
            i += 1;
            let width = span(value);
            if top && *key == self.annotation_key {
                self.view.has_key = true;
            }
            if let Some(child) = trie.child(at, key) {
                let node = trie.node(child);
                for &field in node.fields() {
                    self.values(field, &nodes[i..i + width]);
                }
                if node.has_children() {
                    self.object(&nodes[i..i + width], child, false);
                }
            }
            i += width;
        }
    }

    /// Records the scalar at `nodes[0]`, or each scalar element of the array there.
    fn values(&mut self, field: FieldId, nodes: &[Node<'_>]) {
        match nodes.first() {
            Some(Node::Array { len, .. }) => {
                let mut i = 1;
                for _ in 0..*len {
                    let Some(element) = nodes.get(i) else { return };
                    self.scalar(field, element);
                    i += span(element);
                }
            }
            Some(node) => self.scalar(field, node),
            None => {}
        }
    }

    fn scalar(&mut self, field: FieldId, node: &Node<'_>) {
        let kind = self.catalog.kind(field);
        let mut buf = String::new();
        let (scalar, text): (Scalar, &str) = match node {
            Node::String(s) => (Scalar::Str, s),
            Node::Static(StaticNode::I64(i)) => (Scalar::Int(*i), fmt_into(&mut buf, *i)),
            Node::Static(StaticNode::U64(u)) => match i64::try_from(*u) {
                Ok(i) => (Scalar::Int(i), fmt_into(&mut buf, i)),
                Err(_) => (Scalar::UInt(*u), fmt_into(&mut buf, *u)),
            },
            Node::Static(StaticNode::F64(f)) => (Scalar::Float(*f), fmt_into(&mut buf, *f)),
            Node::Static(StaticNode::Bool(b)) => (Scalar::Bool(*b), if *b { "true" } else { "false" }),
            Node::Static(StaticNode::Null) => (Scalar::Null, ""),
            Node::Object { .. } | Node::Array { .. } => return,
        };
        self.view.push(field, kind, scalar, text);
    }
}

fn fmt_into<T: std::fmt::Display>(buf: &mut String, value: T) -> &str {
    use std::fmt::Write;
    buf.clear();
    let _ = write!(buf, "{value}");
    buf
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
        (v, catalog)
    }

    fn texts(v: &EventView, c: &mut FieldCatalog, field: &str) -> Vec<String> {
        let id = c.intern(field);
        v.occurrences(id).iter().map(|o| v.folded(o).to_string()).collect()
    }

    #[test]
    fn duplicate_keys_and_every_shape_are_kept() {
        let json = r#"{"Image":"C:\\A.exe","Image":"C:/B.exe","process":{"executable":"c:\\c.exe"},"winlog":{"event_data":{"Image":"D.exe"}}}"#;
        let (v, mut c) = view(json, &["Image"]);
        let mut got = texts(&v, &mut c, "Image");
        got.sort();
        assert_eq!(got, vec![r"c:\a.exe", r"c:\b.exe", r"c:\c.exe", "d.exe"]);
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
    fn annotation_key_only_at_top_level() {
        let (v, _) = view(r#"{"a":{"iis_tagger":1}}"#, &["Image"]);
        assert!(!v.has_annotation_key());
        let (v, _) = view(r#"{"a":1,"iis_tagger":{}}"#, &["Image"]);
        assert!(v.has_annotation_key());
    }
}
