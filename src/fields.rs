//! Where each field a rule names is found in each event shape (DESIGN §4).
//!
//! Rules speak Sysmon field names. A record may be flat (NXLog, OTRF, Splunk TA),
//! evtx_dump JSON (`Event.System.*`, `Event.EventData.*`), Winlogbeat raw
//! (`winlog.event_data.*`), ECS-normalised (`process.executable`, ...) or Security 4688
//! (`NewProcessName`), and one stream may mix them. Rather than guessing a record's
//! shape and then looking fields up, every JSON path that can hold a field is put in one
//! trie, and a single walk over the parsed record collects every value found under any
//! of them. A value found twice (a duplicate key, or the same fact in `winlog.event_data`
//! and in ECS) is kept twice: rules see every occurrence.
//!
//! JSON keys are matched without regard to ASCII case (`commandline` is `CommandLine`).

use std::collections::HashMap;

use crate::normalize::FieldKind;

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

/// Fields with more places than the three generic containers, and their kinds.
struct Known {
    name: &'static str,
    kind: FieldKind,
    extra_paths: &'static [&'static [&'static str]],
}

const KNOWN: &[Known] = &[
    Known {
        name: "EventID",
        kind: FieldKind::Text,
        extra_paths: &[
            &["EventCode"],
            &["Event", "System", "EventID"],
            &["Event", "System", "EventID", "#text"],
            &["winlog", "event_id"],
            &["event", "code"],
        ],
    },
    Known {
        name: "Channel",
        kind: FieldKind::Text,
        extra_paths: &[&["Event", "System", "Channel"], &["winlog", "channel"]],
    },
    Known {
        name: "Provider_Name",
        kind: FieldKind::Text,
        extra_paths: &[
            &["SourceName"],
            &["ProviderName"],
            &["Event", "System", "Provider", "#attributes", "Name"],
            &["winlog", "provider_name"],
            &["event", "provider"],
        ],
    },
    Known {
        name: "Image",
        kind: FieldKind::Path,
        extra_paths: &[
            &["NewProcessName"],
            &["Event", "EventData", "NewProcessName"],
            &["winlog", "event_data", "NewProcessName"],
            &["process", "executable"],
        ],
    },
    Known {
        name: "ParentImage",
        kind: FieldKind::Path,
        extra_paths: &[
            &["ParentProcessName"],
            &["Event", "EventData", "ParentProcessName"],
            &["winlog", "event_data", "ParentProcessName"],
            &["process", "parent", "executable"],
        ],
    },
    Known { name: "CommandLine", kind: FieldKind::CommandLine, extra_paths: &[&["process", "command_line"]] },
    Known {
        name: "ParentCommandLine",
        kind: FieldKind::CommandLine,
        extra_paths: &[&["process", "parent", "command_line"]],
    },
    Known { name: "OriginalFileName", kind: FieldKind::Text, extra_paths: &[&["process", "pe", "original_file_name"]] },
    Known { name: "TargetFilename", kind: FieldKind::Path, extra_paths: &[&["file", "path"]] },
    Known { name: "ImageLoaded", kind: FieldKind::Path, extra_paths: &[&["file", "path"]] },
    Known { name: "CurrentDirectory", kind: FieldKind::Path, extra_paths: &[&["process", "working_directory"]] },
    Known { name: "SourceImage", kind: FieldKind::Path, extra_paths: &[&["process", "executable"]] },
    Known { name: "TargetImage", kind: FieldKind::Path, extra_paths: &[] },
    Known { name: "TargetObject", kind: FieldKind::Text, extra_paths: &[&["registry", "path"]] },
    Known { name: "Details", kind: FieldKind::Text, extra_paths: &[&["registry", "data", "strings"]] },
    // The rest of pySigma's `ecs_windows` mapping (Winlogbeat 7+ and Elastic Agent).
    Known { name: "User", kind: FieldKind::Text, extra_paths: &[&["user", "name"]] },
    Known { name: "ProcessId", kind: FieldKind::Text, extra_paths: &[&["process", "pid"]] },
    Known { name: "ProcessGuid", kind: FieldKind::Text, extra_paths: &[&["process", "entity_id"]] },
    Known { name: "ParentProcessId", kind: FieldKind::Text, extra_paths: &[&["process", "parent", "pid"]] },
    Known { name: "ParentProcessGuid", kind: FieldKind::Text, extra_paths: &[&["process", "parent", "entity_id"]] },
    Known {
        name: "Description",
        kind: FieldKind::Text,
        extra_paths: &[&["process", "pe", "description"], &["file", "pe", "description"]],
    },
    Known {
        name: "Product",
        kind: FieldKind::Text,
        extra_paths: &[&["process", "pe", "product"], &["file", "pe", "product"]],
    },
    Known {
        name: "Company",
        kind: FieldKind::Text,
        extra_paths: &[&["process", "pe", "company"], &["file", "pe", "company"]],
    },
    Known {
        name: "FileVersion",
        kind: FieldKind::Text,
        extra_paths: &[&["process", "pe", "file_version"], &["file", "pe", "file_version"]],
    },
    Known { name: "Imphash", kind: FieldKind::Text, extra_paths: &[&["file", "pe", "imphash"]] },
    Known { name: "Signed", kind: FieldKind::Text, extra_paths: &[&["file", "code_signature", "signed"]] },
    Known { name: "SignatureStatus", kind: FieldKind::Text, extra_paths: &[&["file", "code_signature", "status"]] },
    Known { name: "PipeName", kind: FieldKind::Text, extra_paths: &[&["file", "name"]] },
    Known { name: "QueryName", kind: FieldKind::Text, extra_paths: &[&["dns", "question", "name"]] },
    Known { name: "QueryStatus", kind: FieldKind::Text, extra_paths: &[&["sysmon", "dns", "status"]] },
    Known { name: "SourceIp", kind: FieldKind::Text, extra_paths: &[&["source", "ip"]] },
    Known { name: "SourcePort", kind: FieldKind::Text, extra_paths: &[&["source", "port"]] },
    Known { name: "SourceHostname", kind: FieldKind::Text, extra_paths: &[&["source", "domain"]] },
    Known { name: "DestinationIp", kind: FieldKind::Text, extra_paths: &[&["destination", "ip"]] },
    Known { name: "DestinationPort", kind: FieldKind::Text, extra_paths: &[&["destination", "port"]] },
    Known { name: "DestinationHostname", kind: FieldKind::Text, extra_paths: &[&["destination", "domain"]] },
    Known { name: "DestinationPortName", kind: FieldKind::Text, extra_paths: &[&["network", "protocol"]] },
    Known { name: "Protocol", kind: FieldKind::Text, extra_paths: &[&["network", "transport"]] },
    Known { name: "Initiated", kind: FieldKind::Text, extra_paths: &[&["network", "direction"]] },
    Known { name: "ComputerName", kind: FieldKind::Text, extra_paths: &[&["winlog", "computer_name"]] },
    Known {
        name: "ScriptBlockText",
        kind: FieldKind::Text,
        extra_paths: &[&["powershell", "file", "script_block_text"]],
    },
    Known { name: "Payload", kind: FieldKind::Text, extra_paths: &[&["powershell", "file", "script_block_text"]] },
    Known { name: "CommandName", kind: FieldKind::Text, extra_paths: &[&["powershell", "command", "name"]] },
    Known { name: "CommandPath", kind: FieldKind::Text, extra_paths: &[&["powershell", "command", "path"]] },
    Known { name: "HostApplication", kind: FieldKind::CommandLine, extra_paths: &[&["process", "command_line"]] },
    Known { name: "SubjectUserName", kind: FieldKind::Text, extra_paths: &[&["user", "name"]] },
    Known { name: "SubjectDomainName", kind: FieldKind::Text, extra_paths: &[&["user", "domain"]] },
    Known { name: "SubjectUserSid", kind: FieldKind::Text, extra_paths: &[&["user", "id"]] },
    Known { name: "SubjectLogonId", kind: FieldKind::Text, extra_paths: &[&["winlog", "logon", "id"]] },
    Known { name: "ServiceName", kind: FieldKind::Text, extra_paths: &[&["service", "name"]] },
    Known { name: "IpAddress", kind: FieldKind::Text, extra_paths: &[&["source", "ip"]] },
    Known { name: "IpPort", kind: FieldKind::Text, extra_paths: &[&["source", "port"]] },
    Known { name: "WorkstationName", kind: FieldKind::Text, extra_paths: &[&["source", "domain"]] },
];

/// The name of the keyword pseudo-field (not a JSON key: no path leads to it).
pub const KEYWORDS: &str = "|keywords";

/// The derived field holding the arguments of `CommandLine`.
pub const COMMAND_LINE_ARGS: &str = "CommandLineArgs";

/// Containers in which every Sysmon field name may appear, besides the top level.
const CONTAINERS: &[&[&str]] = &[&["Event", "EventData"], &["winlog", "event_data"]];

/// The fields the loaded rules use, and where to find them.
#[derive(Debug, Default)]
pub struct FieldCatalog {
    names: Vec<String>,
    kinds: Vec<FieldKind>,
    derived: Vec<Option<Derivation>>,
    by_name: HashMap<String, FieldId>,
    trie: PathTrie,
    /// Per field, the JSON paths it is read from.
    paths: Vec<Vec<Vec<String>>>,
    /// The pseudo-field of keyword searches: every string and number of a record.
    keywords: Option<FieldId>,
}

impl FieldCatalog {
    /// An empty catalog.
    pub fn new() -> FieldCatalog {
        FieldCatalog::default()
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
        let known = KNOWN.iter().find(|k| k.name == name);
        let id = self.push(name, known.map_or(FieldKind::Text, |k| k.kind), None);
        self.add_path(&[name], id);
        for container in CONTAINERS {
            let mut path: Vec<&str> = container.to_vec();
            path.push(name);
            self.add_path(&path, id);
        }
        for path in known.map_or(&[][..], |k| k.extra_paths) {
            self.add_path(path, id);
        }
        id
    }

    fn add_path(&mut self, path: &[&str], id: FieldId) {
        self.trie.insert(path, id);
        self.paths[id as usize].push(path.iter().map(|k| k.to_string()).collect());
    }

    /// A trie of just the paths of `fields` (a walk that collects only them).
    pub fn trie_of(&self, fields: &[FieldId]) -> PathTrie {
        let mut trie = PathTrie::default();
        for &f in fields {
            for path in &self.paths[f as usize] {
                let keys: Vec<&str> = path.iter().map(String::as_str).collect();
                trie.insert(&keys, f);
            }
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
    /// Child keys (lower-cased), their hashes ([`key_hash`]) and nodes, sorted by key
    /// length; a key is compared only with the children of its length and hash.
    children: Vec<(Box<[u8]>, u64, u32)>,
    /// Bit `n - 1` set when some child key is `n` bytes long: most JSON keys of a record
    /// are rejected by their length and first byte before any hashing.
    key_lengths: u128,
    /// Bit `b` set when some child key starts with the (lower-cased) byte `b`.
    first_bytes: [u64; 4],
    fields: Vec<FieldId>,
    /// Per field of `fields`: this path is a fallback (an ECS name), read only when the
    /// record holds the field under no other path.
    fallback: Vec<bool>,
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

/// ECS objects: a field read under one of these names is a fallback. A Winlogbeat 8
/// record holds both `winlog.event_data.User` (`DOMAIN\\name`) and `user.name` (`name`);
/// taking both as values of `User` would make two different occurrences of one fact, and
/// a filter on it would then never apply. The ECS name is used when the other is absent.
const ECS_OBJECTS: &[&str] = &[
    "process",
    "file",
    "registry",
    "user",
    "dns",
    "source",
    "destination",
    "network",
    "powershell",
    "service",
    "sysmon",
    "event",
];

/// Whether a path of the field table is an ECS one (compared as written there: the
/// evtx_dump `Event` object is not ECS `event`).
fn is_fallback(path: &[&str]) -> bool {
    path.len() > 1 && ECS_OBJECTS.contains(&path[0])
}

/// FNV-1a over the ASCII-lower-cased bytes of a key (never 0).
fn key_hash(key: &[u8]) -> u64 {
    let h = key
        .iter()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ u64::from(b.to_ascii_lowercase())).wrapping_mul(0x0100_0000_01b3));
    h | 1
}

/// Longest key the trie can hold (rules naming a longer field are refused at load time).
pub const MAX_KEY_BYTES: usize = 128;

impl PathTrie {
    fn insert(&mut self, path: &[&str], field: FieldId) {
        assert!(
            path.iter().all(|k| !k.is_empty() && k.len() <= MAX_KEY_BYTES),
            "field names are checked by the loader"
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
                    children.sort_by_key(|(k, _, _)| k.len());
                    self.nodes.push(TrieNode::default());
                    next
                }
            };
            node = child as usize;
        }
        if !self.nodes[node].fields.contains(&field) {
            self.nodes[node].fields.push(field);
            self.nodes[node].fallback.push(is_fallback(path));
        }
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
        let from = node.children.partition_point(|(k, _, _)| k.len() < len);
        let mut same_length = node.children[from..].iter().take_while(|(k, _, _)| k.len() == len).peekable();
        // One child of this length (the usual case): compare at once; else by hash first.
        let hash = if same_length.clone().nth(1).is_some() { key_hash(key) } else { 0 };
        same_length
            .find(|(k, h, _)| (hash == 0 || *h == hash) && k.eq_ignore_ascii_case(key))
            .map(|&(_, _, child)| child)
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
