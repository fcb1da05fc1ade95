//! Walks over a record that fill an [`EventView`]: a parsed JSON tape, or Windows XML
//! (an `<Event>` line, or XML held in a string member of a JSON record).
//!
//! Both walk the field catalog's path trie. XML is walked in the layout `evtx_dump` gives
//! the same event as JSON: the root element is `Event`, `<Data Name="X">` is the key `X`,
//! an element's attributes are under `#attributes` and its text is both the element's
//! value and its `#text`; an empty element is null. So rules, and the shape table, see
//! one layout whichever of the two the event came in.

use simd_json::{Node, StaticNode};

use super::{EventView, Scalar};
use crate::fields::{FieldId, PathTrie};
use crate::normalize::BOTH_READINGS;
use crate::xml::{self, Visitor, XmlError};

/// The number of tape nodes a value occupies, itself included.
fn span(node: &Node<'_>) -> usize {
    match node {
        Node::Object { count, .. } | Node::Array { count, .. } => count + 1,
        _ => 1,
    }
}

/// Writes `value` in decimal into `buf` and returns it.
pub fn fmt_into<T: std::fmt::Display>(buf: &mut String, value: T) -> &str {
    use std::fmt::Write;
    buf.clear();
    let _ = write!(buf, "{value}");
    buf
}

/// A JSON walk.
pub(super) struct Walk<'v, 'c> {
    pub(super) view: &'v mut EventView,
    pub(super) trie: &'c PathTrie,
    pub(super) annotation_key: &'c str,
    /// String members that may hold a whole event are kept for reading after the walk
    /// (not inside an event that was itself embedded: one level only).
    pub(super) expand: bool,
    /// The values being read are under a fallback path.
    pub(super) fallback: bool,
    /// The values being read have their backslashes doubled.
    pub(super) doubled: bool,
}

impl Walk<'_, '_> {
    /// Walks the object at `nodes[0]` whose path is trie node `at`.
    pub(super) fn object(&mut self, nodes: &[Node<'_>], at: u32, top: bool) {
        let Some(&Node::Object { len, .. }) = nodes.first() else { return };
        let trie = self.trie;
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
                self.view.recognise(node.recognises());
                self.doubled = node.doubled();
                for (&field, &fallback) in node.fields().iter().zip(node.fallbacks()) {
                    self.fallback = fallback;
                    self.values(field, &nodes[i..i + width]);
                    self.fallback = false;
                }
                self.doubled = false;
                match value {
                    Node::String(s) if node.embedded() && self.expand => self.view.stash_embedded(child, s),
                    Node::Array { .. } if node.positional() => self.positional(&nodes[i..i + width]),
                    _ => {}
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
        let mut buf = std::mem::take(&mut self.view.number);
        if let Some((scalar, text)) = scalar_of(node, &mut buf) {
            if self.doubled && scalar == Scalar::Str && text.contains('\\') {
                let undone = undouble(text);
                self.view.push_as(field, scalar, &undone, BOTH_READINGS, self.fallback);
            } else {
                self.view.push_as(field, scalar, text, BOTH_READINGS, self.fallback);
            }
        }
        self.view.number = buf;
    }

    /// Keeps the scalars of a positional array for [`EventView::finish`] to name.
    fn positional(&mut self, nodes: &[Node<'_>]) {
        let Some(Node::Array { len, .. }) = nodes.first() else { return };
        self.view.positional_arrays += 1;
        let array = self.view.positional_arrays;
        let (mut i, mut index) = (1, 0u32);
        let mut buf = std::mem::take(&mut self.view.number);
        for _ in 0..*len {
            let Some(element) = nodes.get(i) else { break };
            if let Some((scalar, text)) = scalar_of(element, &mut buf) {
                self.view.stash_positional(array, index, scalar, text);
            }
            index += 1;
            i += span(element);
        }
        self.view.number = buf;
    }
}

/// A value written with every `\` doubled and every `"` as `\"`, as it was.
fn undouble(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some(next @ ('\\' | '"')) => out.push(next),
                Some(other) => {
                    out.push(c);
                    out.push(other);
                }
                None => out.push(c),
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn scalar_of<'a>(node: &'a Node<'_>, buf: &'a mut String) -> Option<(Scalar, &'a str)> {
    Some(match node {
        Node::String(s) => (Scalar::Str, s),
        Node::Static(StaticNode::I64(i)) => (Scalar::Int(*i), fmt_into(buf, *i)),
        Node::Static(StaticNode::U64(u)) => match i64::try_from(*u) {
            Ok(i) => (Scalar::Int(i), fmt_into(buf, i)),
            Err(_) => (Scalar::UInt(*u), fmt_into(buf, *u)),
        },
        Node::Static(StaticNode::F64(f)) => (Scalar::Float(*f), fmt_into(buf, *f)),
        Node::Static(StaticNode::Bool(b)) => (Scalar::Bool(*b), if *b { "true" } else { "false" }),
        Node::Static(StaticNode::Null) => (Scalar::Null, ""),
        Node::Object { .. } | Node::Array { .. } => return None,
    })
}

/// What reading an XML event found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XmlEvent {
    /// The root is `Event` with a `System` child (or an `EventData` fragment): a Windows
    /// event, not just some XML.
    pub is_event: bool,
    /// Offset of the root's end tag, where an annotation goes.
    pub close: Option<usize>,
}

/// An open element of an XML walk.
struct Frame {
    /// Its trie node, when its path holds something.
    node: Option<u32>,
    /// A `<Data>` whose node is named by its `Name` attribute, not seen yet.
    data: bool,
    /// It has attributes (so is an object, not null, when it has no text); the `Name` of a
    /// `<Data>` does not count.
    attributes: bool,
    /// It has child elements.
    children: bool,
    /// Where its text starts in the walk's text buffer.
    text: usize,
}

/// An XML walk.
pub(super) struct XmlWalk<'v, 'c> {
    pub(super) view: &'v mut EventView,
    pub(super) trie: &'c PathTrie,
    pub(super) annotation_key: &'c str,
    /// The keyword pseudo-field, when rules search keywords: every text and attribute value.
    pub(super) keywords: Option<FieldId>,
    stack: Vec<Frame>,
    text: String,
    root: Option<&'static str>,
    system: bool,
}

impl<'v, 'c> XmlWalk<'v, 'c> {
    pub(super) fn new(
        view: &'v mut EventView,
        trie: &'c PathTrie,
        annotation_key: &'c str,
        keywords: Option<FieldId>,
    ) -> XmlWalk<'v, 'c> {
        XmlWalk {
            view,
            trie,
            annotation_key,
            keywords,
            stack: Vec::new(),
            text: String::new(),
            root: None,
            system: false,
        }
    }

    /// Reads `text` (one element) into the view.
    pub(super) fn read(mut self, text: &[u8], scratch: &mut xml::Scratch) -> Result<XmlEvent, XmlError> {
        let element = xml::read(text, scratch, &mut self)?;
        let is_event = match self.root {
            Some("Event") => self.system,
            Some("EventData") => true,
            _ => false,
        };
        Ok(XmlEvent { is_event, close: element.close })
    }

    /// `value` for the fields at `node` and at its `#text`.
    fn push(&mut self, node: Option<u32>, scalar: Scalar, value: &str) {
        let Some(node) = node else { return };
        let trie = self.trie;
        for n in std::iter::once(node).chain(trie.child(node, "#text")) {
            for &field in trie.node(n).fields() {
                self.view.push_as(field, scalar, value, BOTH_READINGS, false);
            }
        }
    }

    fn keyword(&mut self, value: &str) {
        if let Some(k) = self.keywords {
            if !value.is_empty() {
                self.view.push_as(k, Scalar::Str, value, BOTH_READINGS, false);
            }
        }
    }
}

impl Visitor for XmlWalk<'_, '_> {
    fn start(&mut self, name: &str) {
        let trie = self.trie;
        let depth = self.stack.len();
        if let Some(parent) = self.stack.last_mut() {
            parent.children = true;
        }
        let (node, data) = if depth == 0 {
            // The root: `Event`, or an `EventData` fragment (read as `Event.EventData`).
            self.root = match name {
                "Event" => Some("Event"),
                "EventData" => Some("EventData"),
                _ => None,
            };
            let event = trie.child(PathTrie::ROOT, "Event");
            let node = match self.root {
                Some("Event") => event,
                Some(_) => event.and_then(|e| trie.child(e, "EventData")),
                None => None,
            };
            (node, false)
        } else {
            if depth == 1 && self.root == Some("Event") {
                if name == "System" {
                    self.system = true;
                }
                if name == self.annotation_key {
                    self.view.has_key = true;
                }
            }
            let parent = self.stack.last().and_then(|f| f.node);
            match parent {
                Some(p) if name == "Data" => (Some(p), true),
                Some(p) => (trie.child(p, name), false),
                None => (None, false),
            }
        };
        self.stack.push(Frame { node, data, attributes: false, children: false, text: self.text.len() });
    }

    fn attribute(&mut self, name: &str, value: &str) {
        let trie = self.trie;
        self.keyword(value);
        let Some(frame) = self.stack.last_mut() else { return };
        if frame.data {
            if name == "Name" {
                frame.data = false;
                frame.node = frame.node.and_then(|p| trie.child(p, value));
            }
            return;
        }
        frame.attributes = true;
        let node = frame.node.and_then(|n| trie.child(n, "#attributes")).and_then(|a| trie.child(a, name));
        if let Some(n) = node {
            for &field in trie.node(n).fields() {
                self.view.push_as(field, Scalar::Str, value, BOTH_READINGS, false);
            }
        }
    }

    fn text(&mut self, text: &str) {
        self.text.push_str(text);
    }

    fn end(&mut self) {
        let Some(frame) = self.stack.pop() else { return };
        let node = if frame.data {
            // An unnamed `<Data>`: its value is `Data`.
            frame.node.and_then(|p| self.trie.child(p, "Data"))
        } else {
            frame.node
        };
        let text = std::mem::take(&mut self.text);
        let own = &text[frame.text..];
        if frame.children && own.bytes().all(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n')) {
            // Blanks between child elements are layout, not a value.
        } else if own.is_empty() && !frame.children {
            // Empty: null, as evtx_dump has it; with attributes, an object (no value).
            if !frame.attributes {
                self.push(node, Scalar::Null, "");
            }
        } else {
            self.keyword(own);
            self.push(node, Scalar::Str, own);
        }
        self.text = text;
        self.text.truncate(frame.text);
    }
}
