//! Where each field a rule names is found in each event shape.
//!
//! Rules speak Sysmon field names. A record may be in any of the shapes of the shape
//! table ([`crate::shapes`]: flat, evtx_dump, Winlogbeat, ECS, Vector, Wazuh, Sentinel,
//! Splunk HEC, Fluent Bit, or a user's own), and one stream may mix them. Rather than
//! guessing a record's shape and then looking fields up, every JSON path that can hold a
//! field is put in one trie, and a single walk over the parsed record collects every value
//! found under any of them. A value found twice (a duplicate key, or the same fact in
//! `winlog.event_data` and in ECS) is kept twice: rules see every occurrence. The trie also
//! marks where a record's shape is recognised, the string members that may hold a whole
//! event (read as part of the record) and the arrays of positional EventData values.
//!
//! JSON keys are matched without regard to ASCII case (`commandline` is `CommandLine`).

use std::collections::HashMap;
use std::sync::Arc;

use crate::normalize::FieldKind;
use crate::shapes::ShapeTable;

/// Index of a field in a [`FieldCatalog`].
pub type FieldId = u32;

/// A field computed from another one rather than read from the record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Derivation {
    /// The arguments of a command line, split the way Windows programs receive them.
    Arguments {
        /// The field holding the command line.
        from: FieldId,
    },
}

/// The name of the keyword pseudo-field (not a JSON key: no path leads to it).
pub const KEYWORDS: &str = "|keywords";

/// The derived field holding the arguments of `CommandLine`.
pub const COMMAND_LINE_ARGS: &str = "CommandLineArgs";

/// How the values at a path are read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct PathOf {
    /// Only when the record holds the field under no other path.
    fallback: bool,
    /// With every `\\` and `\"` of the value undone (Wazuh).
    doubled: bool,
}

/// What a trie node marks besides fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mark {
    /// A record with this path is of shape `n` of the table.
    Recognises(u16),
    /// A string here may hold a whole event.
    Embedded,
    /// An array here holds EventData values by position.
    Positional,
}

/// The fields the loaded rules use, and where to find them.
#[derive(Debug)]
pub struct FieldCatalog {
    shapes: Arc<ShapeTable>,
    names: Vec<String>,
    kinds: Vec<FieldKind>,
    derived: Vec<Option<Derivation>>,
    by_name: HashMap<String, FieldId>,
    trie: PathTrie,
    /// Per field, the JSON paths it is read from (and how).
    paths: Vec<Vec<(Vec<String>, PathOf)>>,
    /// The marked paths.
    marks: Vec<(Vec<String>, Mark)>,
    /// The pseudo-field of keyword searches: every string and number of a record.
    keywords: Option<FieldId>,
}

impl Default for FieldCatalog {
    fn default() -> FieldCatalog {
        FieldCatalog::new()
    }
}

impl FieldCatalog {
    /// An empty catalog over the built-in shape table.
    pub fn new() -> FieldCatalog {
        FieldCatalog::with_shapes(ShapeTable::shared_builtin())
    }

    /// An empty catalog over `shapes`.
    pub fn with_shapes(shapes: Arc<ShapeTable>) -> FieldCatalog {
        let mut c = FieldCatalog {
            shapes,
            names: Vec::new(),
            kinds: Vec::new(),
            derived: Vec::new(),
            by_name: HashMap::new(),
            trie: PathTrie::default(),
            paths: Vec::new(),
            marks: Vec::new(),
            keywords: None,
        };
        let shapes = Arc::clone(&c.shapes);
        for (i, shape) in shapes.shapes.iter().enumerate() {
            let shape_id = u16::try_from(i).expect("fewer than 65536 shapes");
            for p in &shape.recognised_by {
                c.mark(&p.0, Mark::Recognises(shape_id));
            }
            for p in &shape.embedded {
                c.mark(&p.0, Mark::Embedded);
            }
            for p in &shape.positional {
                c.mark(&p.array.0, Mark::Positional);
            }
        }
        if shapes.shapes.iter().any(|s| !s.positional.is_empty()) {
            // Positional values are named by their provider and event.
            c.intern("EventID");
            c.intern("Provider_Name");
        }
        c
    }

    /// The shape table.
    pub fn shapes(&self) -> &ShapeTable {
        &self.shapes
    }

    fn mark(&mut self, path: &[String], mark: Mark) {
        // A shape is recognised by its own paths only: keys match without regard to case,
        // so under the `event` envelope `EventData` would be evtx_dump's `Event.EventData`.
        let paths = if let Mark::Recognises(_) = mark { vec![path.to_vec()] } else { self.with_envelopes(path) };
        for full in paths {
            if !self.marks.contains(&(full.clone(), mark)) {
                self.trie.mark(&full, mark);
                self.marks.push((full, mark));
            }
        }
    }

    /// `path`, and `path` under every envelope of the table.
    fn with_envelopes(&self, path: &[String]) -> Vec<Vec<String>> {
        let mut all = vec![path.to_vec()];
        for shape in &self.shapes.shapes {
            if let Some(envelope) = &shape.envelope {
                all.push(envelope.0.iter().chain(path).cloned().collect());
            }
        }
        all.retain(|p| !p.is_empty());
        all
    }

    /// The id of the field `name`, adding it (and where to find it) on first use.
    pub fn intern(&mut self, name: &str) -> FieldId {
        if let Some(&id) = self.by_name.get(name) {
            return id;
        }
        if name == COMMAND_LINE_ARGS {
            let from = self.intern("CommandLine");
            return self.push(name, FieldKind::Argument, Some(Derivation::Arguments { from }));
        }
        let id = self.push(name, self.shapes.kind(name), None);
        let shapes = Arc::clone(&self.shapes);
        let names: Vec<&str> = std::iter::once(name)
            .chain(shapes.aliases.iter().filter(|(_, f)| f == name).map(|(a, _)| a.as_str()))
            .collect();
        for shape in &shapes.shapes {
            let how = PathOf { fallback: shape.fallback, doubled: shape.doubled_backslashes };
            for container in &shape.containers {
                for n in &names {
                    let mut path = container.0.clone();
                    path.push(n.to_string());
                    self.add_path(&path, id, how);
                }
            }
            for prefix in &shape.prefixes {
                for n in &names {
                    let mut path = prefix.0.clone();
                    if let Some(last) = path.last_mut() {
                        last.push_str(n);
                    }
                    self.add_path(&path, id, how);
                }
            }
            for (_, paths) in shape.paths.iter().filter(|(f, _)| f == name) {
                for path in paths {
                    self.add_path(&path.0, id, how);
                }
            }
        }
        id
    }

    fn add_path(&mut self, path: &[String], id: FieldId, how: PathOf) {
        for full in self.with_envelopes(path) {
            if self.paths[id as usize].iter().any(|(p, _)| *p == full) {
                continue;
            }
            self.trie.insert(&full, id, how);
            self.paths[id as usize].push((full, how));
        }
    }

    /// A trie of just the paths of `fields`, and the marks (a walk that collects only them).
    pub fn trie_of(&self, fields: &[FieldId]) -> PathTrie {
        let mut trie = PathTrie::default();
        for &f in fields {
            for (path, how) in &self.paths[f as usize] {
                trie.insert(path, f, *how);
            }
        }
        for (path, mark) in &self.marks {
            trie.mark(path, *mark);
        }
        trie
    }

    fn push(&mut self, name: &str, kind: FieldKind, derivation: Option<Derivation>) -> FieldId {
        let id = FieldId::try_from(self.names.len()).expect("fewer than 2^32 fields");
        self.names.push(name.to_string());
        self.kinds.push(kind);
        self.derived.push(derivation);
        self.paths.push(Vec::new());
        self.by_name.insert(name.to_string(), id);
        id
    }

    /// The pseudo-field keyword searches read: every string and number of a record, at
    /// any depth.
    pub fn keywords(&mut self) -> FieldId {
        if let Some(id) = self.keywords {
            return id;
        }
        let id = self.push(KEYWORDS, FieldKind::Text, None);
        self.keywords = Some(id);
        id
    }

    /// The keyword pseudo-field, if a rule searches keywords.
    pub fn keyword_field(&self) -> Option<FieldId> {
        self.keywords
    }

    /// The id of `name`, if a rule uses it.
    pub fn id(&self, name: &str) -> Option<FieldId> {
        self.by_name.get(name).copied()
    }

    /// Number of fields.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// True when no rule uses any field.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// The Sysmon name of a field.
    pub fn name(&self, id: FieldId) -> &str {
        &self.names[id as usize]
    }

    /// The kind of a field.
    pub fn kind(&self, id: FieldId) -> FieldKind {
        self.kinds[id as usize]
    }

    /// Derived fields, with their ids.
    pub fn derivations(&self) -> impl Iterator<Item = (FieldId, Derivation)> + '_ {
        self.derived.iter().enumerate().filter_map(|(i, d)| d.map(|d| (i as FieldId, d)))
    }

    /// The JSON path trie.
    pub fn trie(&self) -> &PathTrie {
        &self.trie
    }
}

/// A node of the [`PathTrie`].
#[derive(Debug, Default)]
pub struct TrieNode {
    /// Child keys (lower-cased), their hashes ([`key_hash`]) and nodes.
    children: Vec<(Box<[u8]>, u64, u32)>,
    /// An open-addressing index of `children` by hash (a power of two at least twice their
    /// number; an entry is a child's index plus one, 0 empty): a key costs one hash and
    /// usually one comparison however many children there are (the SigmaHQ set's root has
    /// hundreds). Built from the rules' field names only, never from a record's keys.
    index: Vec<u32>,
    /// Bit `n - 1` set when some child key is `n` bytes long: most JSON keys of a record
    /// are rejected by their length and first byte before any hashing.
    key_lengths: u128,
    /// Bit `b` set when some child key starts with the (lower-cased) byte `b`.
    first_bytes: [u64; 4],
    fields: Vec<FieldId>,
    /// Per field of `fields`: this path is a fallback (an ECS name), read only when the
    /// record holds the field under no other path.
    fallback: Vec<bool>,
    /// Its values have every backslash doubled (and quotes escaped).
    doubled: bool,
    /// Shapes a record with this path is of.
    recognises: Vec<u16>,
    /// A string here may hold a whole event.
    embedded: bool,
    /// An array here holds EventData values by position.
    positional: bool,
}

impl TrieNode {
    /// Fields whose value sits at this node's path.
    pub fn fields(&self) -> &[FieldId] {
        &self.fields
    }

    /// Per field of [`TrieNode::fields`]: whether this path is a fallback for it.
    pub fn fallbacks(&self) -> &[bool] {
        &self.fallback
    }

    /// True when some field lies deeper below this node.
    pub fn has_children(&self) -> bool {
        !self.children.is_empty()
    }

    /// The shapes (indices into the shape table) a record holding this path is of.
    pub fn recognises(&self) -> &[u16] {
        &self.recognises
    }

    /// Whether the values here have every backslash doubled and every quote escaped (to be
    /// undone before they are read).
    pub fn doubled(&self) -> bool {
        self.doubled
    }

    /// Whether a string here may hold a whole event (XML or JSON).
    pub fn embedded(&self) -> bool {
        self.embedded
    }

    /// Whether an array here holds EventData values by position.
    pub fn positional(&self) -> bool {
        self.positional
    }
}

/// JSON paths (lower-cased keys) to field ids. Node 0 is the root (the record itself).
#[derive(Debug)]
pub struct PathTrie {
    nodes: Vec<TrieNode>,
}

impl Default for PathTrie {
    fn default() -> PathTrie {
        PathTrie { nodes: vec![TrieNode::default()] }
    }
}

/// A hash of a key that two keys equal but for ASCII case share (never 0): its length and
/// its first and last eight bytes (or four, or each byte of a shorter key), each byte with
/// its `0x20` bit set. That bit lower-cases ASCII letters; the other bytes it changes, and
/// the middle bytes of a long key it leaves out, only make more keys share a hash, and keys
/// are compared in full after. Two loads and a multiply whatever the key.
fn key_hash(key: &[u8]) -> u64 {
    const CASE: u64 = 0x2020_2020_2020_2020;
    let n = key.len();
    let load8 = |b: &[u8]| u64::from_le_bytes(b.try_into().expect("eight bytes"));
    let load4 = |b: &[u8]| u64::from(u32::from_le_bytes(b.try_into().expect("four bytes")));
    let (first, last) = if n >= 8 {
        (load8(&key[..8]), load8(&key[n - 8..]))
    } else if n >= 4 {
        (load4(&key[..4]), load4(&key[n - 4..]))
    } else {
        (key.iter().fold(0u64, |w, &b| w << 8 | u64::from(b)), 0)
    };
    let h = ((first | CASE) ^ (last | CASE).rotate_left(29) ^ (n as u64).rotate_left(58))
        .wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (h ^ h >> 31) | 1
}

pub use crate::shapes::MAX_KEY_BYTES;

impl PathTrie {
    fn insert(&mut self, path: &[String], field: FieldId, how: PathOf) {
        let node = self.node_of(path);
        if !self.nodes[node].fields.contains(&field) {
            self.nodes[node].fields.push(field);
            self.nodes[node].fallback.push(how.fallback);
        }
        self.nodes[node].doubled |= how.doubled;
    }

    fn mark(&mut self, path: &[String], mark: Mark) {
        let at = self.node_of(path);
        let node = &mut self.nodes[at];
        match mark {
            Mark::Recognises(shape) => {
                if !node.recognises.contains(&shape) {
                    node.recognises.push(shape);
                }
            }
            Mark::Embedded => node.embedded = true,
            Mark::Positional => node.positional = true,
        }
    }

    /// The node of `path`, made if it is not there.
    fn node_of(&mut self, path: &[String]) -> usize {
        assert!(
            path.iter().all(|k| !k.is_empty() && k.len() <= MAX_KEY_BYTES),
            "field names and shape paths are checked by their loaders"
        );
        let mut node = 0usize;
        for key in path {
            let key: Box<[u8]> = key.to_ascii_lowercase().into_bytes().into();
            let parent = &mut self.nodes[node];
            parent.key_lengths |= 1u128 << (key.len() - 1);
            parent.first_bytes[usize::from(key[0] >> 6)] |= 1u64 << (key[0] & 63);
            let child = match parent.children.iter().find(|(k, _, _)| *k == key) {
                Some(&(_, _, child)) => child,
                None => {
                    let next = self.nodes.len() as u32;
                    let children = &mut self.nodes[node].children;
                    let hash = key_hash(&key);
                    children.push((key, hash, next));
                    self.nodes[node].index_last_child();
                    self.nodes.push(TrieNode::default());
                    next
                }
            };
            node = child as usize;
        }
        node
    }

    /// The root node's index.
    pub const ROOT: u32 = 0;

    /// The node.
    pub fn node(&self, id: u32) -> &TrieNode {
        &self.nodes[id as usize]
    }

    /// The child of `node` under `key` (compared without regard to ASCII case).
    pub fn child(&self, node: u32, key: &str) -> Option<u32> {
        let node = &self.nodes[node as usize];
        let (len, first) = (key.len(), key.as_bytes().first()?.to_ascii_lowercase());
        if len > MAX_KEY_BYTES
            || node.key_lengths & (1u128 << (len - 1)) == 0
            || node.first_bytes[usize::from(first >> 6)] & (1u64 << (first & 63)) == 0
        {
            return None;
        }
        let key = key.as_bytes();
        let hash = key_hash(key);
        let mask = node.index.len().wrapping_sub(1);
        let mut at = hash as usize & mask;
        loop {
            let (k, h, child) = node.children.get((*node.index.get(at)? as usize).checked_sub(1)?)?;
            if *h == hash && k.eq_ignore_ascii_case(key) {
                return Some(*child);
            }
            at = (at + 1) & mask;
        }
    }
}

impl TrieNode {
    /// Adds the last child to [`TrieNode::index`]: the index doubles (and is rebuilt) when
    /// it would be more than half full, so that adding children costs O(1) each.
    fn index_last_child(&mut self) {
        let n = self.children.len();
        let grow = n * 2 > self.index.len();
        let size = if grow { (n * 2).next_power_of_two().max(4) } else { self.index.len() };
        if grow {
            self.index.clear();
            self.index.resize(size, 0);
        }
        let from = if grow { 0 } else { n - 1 };
        for (i, (_, hash, _)) in self.children.iter().enumerate().skip(from) {
            let mut at = *hash as usize & (size - 1);
            while self.index[at] != 0 {
                at = (at + 1) & (size - 1);
            }
            self.index[at] = i as u32 + 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(catalog: &FieldCatalog, path: &[&str]) -> Vec<FieldId> {
        let trie = catalog.trie();
        let mut node = PathTrie::ROOT;
        for key in path {
            match trie.child(node, key) {
                Some(n) => node = n,
                None => return Vec::new(),
            }
        }
        trie.node(node).fields().to_vec()
    }

    #[test]
    fn every_shape_of_design_table_resolves() {
        let mut c = FieldCatalog::new();
        let image = c.intern("Image");
        let eid = c.intern("EventID");
        let details = c.intern("Details");
        for path in [
            &["Image"][..],
            &["NewProcessName"],
            &["Event", "EventData", "Image"],
            &["winlog", "event_data", "Image"],
            &["process", "executable"],
            &["winlog", "event_data", "NewProcessName"],
        ] {
            assert_eq!(lookup(&c, path), vec![image], "{path:?}");
        }
        for path in [
            &["EventID"][..],
            &["EventCode"],
            &["Event", "System", "EventID"],
            &["Event", "System", "EventID", "#text"],
            &["winlog", "event_id"],
            &["event", "code"],
        ] {
            assert_eq!(lookup(&c, path), vec![eid], "{path:?}");
        }
        assert_eq!(lookup(&c, &["registry", "data", "strings"]), vec![details]);
        assert_eq!(lookup(&c, &["commandline"]), Vec::<FieldId>::new());
        assert_eq!(lookup(&c, &["IMAGE"]), vec![image], "keys fold ASCII case");
    }

    /// A node with thousands of children finds each by its key in any ASCII case, and no
    /// other key: keys of one length, keys of every length up to the longest, keys that
    /// differ only where the hash's case bit is (`@` and `` ` ``), prefixes and extensions.
    #[test]
    fn many_children_are_found_by_their_keys_only() {
        let mut trie = PathTrie::default();
        let mut keys: Vec<String> = (0..3000).map(|i| format!("Field{i}")).collect();
        keys.extend((1..=MAX_KEY_BYTES).map(|n| "k".repeat(n)));
        keys.extend(["a@b".to_string(), "A.b".to_string(), "x[1]".to_string()]);
        let nodes: Vec<usize> = keys.iter().map(|k| trie.node_of(std::slice::from_ref(k))).collect();
        for (key, &node) in keys.iter().zip(&nodes) {
            for spelt in [key.clone(), key.to_ascii_uppercase(), key.to_ascii_lowercase()] {
                assert_eq!(trie.child(PathTrie::ROOT, &spelt), Some(node as u32), "{spelt}");
            }
        }
        for absent in ["Field3000", "Field", "Field12x", "xField1", "a`b", "A\x0eb", "x{1]", "k0", ""] {
            assert_eq!(trie.child(PathTrie::ROOT, absent), None, "{absent}");
        }
        assert_eq!(trie.child(PathTrie::ROOT, &"k".repeat(MAX_KEY_BYTES + 1)), None);
        assert_eq!(trie.child(nodes[0] as u32, "Field1"), None, "a leaf has no children");
    }

    #[test]
    fn derived_arguments_pull_in_their_source() {
        let mut c = FieldCatalog::new();
        let args = c.intern(COMMAND_LINE_ARGS);
        let cmd = c.intern("CommandLine");
        assert_eq!(c.derivations().collect::<Vec<_>>(), vec![(args, Derivation::Arguments { from: cmd })]);
        assert_eq!(c.kind(args), FieldKind::Argument);
        let image = c.intern("Image");
        assert_eq!(c.kind(image), FieldKind::Path);
    }
}
