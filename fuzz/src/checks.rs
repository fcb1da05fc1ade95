//! What every fuzz target checks: the record contract of DESIGN §1, checked independently
//! of the library's code, plus each target's own property. A check that fails panics, which
//! libFuzzer reports as a crash and `cargo test` as a failure.
//!
//! * [`stream`]: arbitrary bytes → every line out once, unchanged or with exactly one
//!   member spliced before its final `}`; the prefilter changes nothing; the counters add up.
//! * [`chunking`]: the same bytes cut into arbitrary reads give the same output.
//! * [`splice`]: structured JSON with hostile strings, lone surrogates, duplicate keys, `{}`
//!   and huge numbers around a record that must match: it is annotated (unless it already
//!   carries the key) and the annotated line is JSON when the input was.
//! * [`normalize`]: the fold, the compatibility form and the path form are idempotent; every
//!   view of a value is bounded in size.
//! * [`differential`]: where serde_json accepts a JSON text, the values the rules read from
//!   it through simd-json (and the repair) are the ones serde_json reads.
//! * [`framing`]: octet-counted frames: the pieces do not depend on the cutting, memory is
//!   bounded, nothing is made up, and records tagged whole keep the record contract.

use std::sync::OnceLock;

use arbitrary::{Arbitrary, Unstructured};
use iis_tagger::event::{EventView, Occurrence, Scalar};
use iis_tagger::normalize::{self, FieldKind, Reading, Scratch};
use iis_tagger::{Config, RuleSet, Tagger};
use simd_json::{Node, StaticNode};

const KEY: &str = "iis_tagger";

/// Line limits the stream targets run with (the default, and ones a fuzzer crosses).
const LIMITS: [usize; 5] = [1 << 20, 16, 64, 300, 4096];

/// The built-in rules with each limit, prefilter on and off.
fn taggers() -> &'static [(Tagger, Tagger)] {
    static TAGGERS: OnceLock<Vec<(Tagger, Tagger)>> = OnceLock::new();
    TAGGERS.get_or_init(|| {
        LIMITS
            .iter()
            .map(|&max_line_bytes| {
                let make = |prefilter| {
                    let config = Config { max_line_bytes, prefilter, ..Config::default() };
                    Tagger::new(RuleSet::builtin().expect("built-in rules"), config).expect("tagger")
                };
                (make(true), make(false))
            })
            .collect()
    })
}

/// Lines split on `\n` only; a final line without `\n` counts.
fn lines(bytes: &[u8]) -> Vec<&[u8]> {
    if bytes.is_empty() {
        return Vec::new();
    }
    bytes.strip_suffix(b"\n").unwrap_or(bytes).split(|&b| b == b'\n').collect()
}

fn is_blank(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

/// Checks one output line against its input line: identical, or the input with one member
/// `"iis_tagger":{…}` (after a `,` unless the object was empty) before its final `}`.
/// Returns the annotation when there is one.
fn line_contract(input: &[u8], output: &[u8]) -> Option<serde_json::Value> {
    if input == output {
        return None;
    }
    let last = input.iter().rposition(|&b| !is_blank(b)).expect("an annotated line is not blank");
    if input[last] == b'>' {
        let (slugs, incomplete) = xml_line_contract(input, output)?;
        return Some(serde_json::json!({"detections": slugs, "incomplete": incomplete, "xml": true}));
    }
    let brace = input.iter().rposition(|&b| !is_blank(b)).expect("an annotated line has a final `}`");
    assert_eq!(input[brace], b'}', "only a line ending in `}}` may change");
    assert!(output.len() > input.len(), "a changed line only grows");
    let added = output.len() - input.len();
    assert_eq!(&output[..brace], &input[..brace], "bytes before the final `}}` unchanged");
    assert_eq!(&output[brace + added..], &input[brace..], "the final `}}` and what follows unchanged");
    let member = &output[brace..brace + added];
    let empty_object = input[..brace].iter().rposition(|&b| !is_blank(b)).is_some_and(|i| input[i] == b'{');
    let member = match member.strip_prefix(b",") {
        Some(m) => {
            assert!(!empty_object, "no comma after `{{`");
            m
        }
        None => {
            assert!(empty_object, "a comma before the member of a non-empty object");
            member
        }
    };
    let mut object = b"{".to_vec();
    object.extend_from_slice(member);
    object.push(b'}');
    let value: serde_json::Value = serde_json::from_slice(&object).expect("the member is JSON");
    let map = value.as_object().expect("an object");
    assert_eq!(map.len(), 1, "exactly one member");
    let annotation = map.get(KEY).expect("the annotation key").clone();
    let detections = annotation["detections"].as_array().expect("detections");
    let incomplete = annotation.get("incomplete").and_then(|i| i.as_array()).map_or(0, Vec::len);
    assert!(!detections.is_empty() || incomplete > 0, "an annotation says something");
    let top = annotation["risk_score"].as_u64().expect("risk_score");
    let max = detections.iter().map(|d| d["risk_score"].as_u64().expect("risk")).max().unwrap_or(0);
    assert_eq!(top, max, "the top risk is the maximum");
    Some(annotation)
}

/// Checks an XML output line against its input line: identical, or the input with one
/// element `<iis_tagger …>…</iis_tagger>` inserted right before the event's end tag, the
/// element and the whole line well-formed XML (read with roxmltree, not the library's
/// reader). Returns the element's detections (rule slugs) and reasons for being incomplete.
fn xml_line_contract(input: &[u8], output: &[u8]) -> Option<(Vec<String>, Vec<String>)> {
    if input == output {
        return None;
    }
    assert!(output.len() > input.len(), "a changed line only grows");
    let first = input.iter().zip(output).position(|(a, b)| a != b).unwrap_or(input.len());
    let added = output.len() - input.len();
    let open = format!("<{KEY} ");
    // The element starts with `<`, as the end tag it goes before does: the first difference
    // may be one byte into it.
    let at = (first.saturating_sub(1)..=first)
        .find(|&p| output[p..].starts_with(open.as_bytes()) && output[..p] == input[..p])
        .expect("an annotation element where the lines first differ");
    assert_eq!(&output[at + added..], &input[at..], "everything after the element unchanged");
    let element = std::str::from_utf8(&output[at..at + added]).expect("the element is UTF-8");
    assert!(input[at..].starts_with(b"</"), "inserted right before an end tag");
    assert!(element.starts_with(&open) && element.ends_with(&format!("</{KEY}>")), "{element}");
    let doc = roxmltree::Document::parse(element).expect("the element is well-formed XML");
    let root = doc.root_element();
    let slugs: Vec<String> = root
        .children()
        .filter(|n| n.has_tag_name("detection"))
        .map(|d| d.attribute("rule").expect("a rule").to_string())
        .collect();
    let incomplete: Vec<String> = root
        .children()
        .filter(|n| n.has_tag_name("incomplete"))
        .map(|n| n.text().unwrap_or_default().to_string())
        .collect();
    assert!(!slugs.is_empty() || !incomplete.is_empty(), "an annotation says something");
    let xml_part = |line: &[u8]| {
        let lt = line.windows(6).position(|w| w == b"<Event").unwrap_or(0);
        String::from_utf8_lossy(&line[lt..]).into_owned()
    };
    if roxmltree::Document::parse(&xml_part(input)).is_ok() {
        roxmltree::Document::parse(&xml_part(output)).expect("an annotated XML event stays well-formed");
    }
    Some((slugs, incomplete))
}

/// The record contract between a whole input and its output.
fn contract(input: &[u8], output: &[u8]) -> Vec<Option<serde_json::Value>> {
    let (ins, outs) = (lines(input), lines(output));
    assert_eq!(ins.len(), outs.len(), "every line out once");
    assert_eq!(input.ends_with(b"\n"), output.ends_with(b"\n"), "the final newline kept or not");
    ins.iter().zip(&outs).map(|(a, b)| line_contract(a, b)).collect()
}

/// Arbitrary bytes through the tagger with one of the limits.
pub fn stream(data: &[u8]) {
    let Some((&pick, input)) = data.split_first() else { return };
    let (with, without) = &taggers()[usize::from(pick) % LIMITS.len()];
    let (output, stats) = with.tag_all(input);
    let annotations = contract(input, &output);
    assert_eq!(stats.lines as usize, annotations.len());
    assert_eq!(stats.bytes as usize, input.len());
    assert_eq!(stats.annotated as usize, annotations.iter().flatten().count());
    let (full, _) = without.tag_all(input);
    assert!(full == output, "the prefilter changed the output");
}

/// The same bytes, fed in reads of arbitrary sizes.
pub fn chunking(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let pick = u.arbitrary::<u8>().unwrap_or(0);
    let sizes: Vec<u16> = u.arbitrary().unwrap_or_default();
    let input = u.take_rest();
    let (tagger, _) = &taggers()[usize::from(pick) % LIMITS.len()];
    let (whole, _) = tagger.tag_all(input);
    let mut stream = tagger.stream();
    let mut out = Vec::new();
    let mut at = 0;
    for size in sizes.iter().map(|&s| usize::from(s % 5000)).chain(std::iter::repeat(4096)) {
        if at >= input.len() {
            break;
        }
        let end = (at + size).min(input.len());
        stream.feed(&input[at..end], &mut out);
        at = end;
    }
    stream.finish(&mut out);
    assert!(out == whole, "the output depends on how the input was read");
}

/// A piece of a JSON string: a character, or a lone UTF-16 surrogate (which only an escape
/// can write).
#[derive(Debug, Clone, Arbitrary)]
enum Piece {
    Char(char),
    Text(Word),
    Lone(u16),
}

/// Text rules look for, and look-alikes.
#[derive(Debug, Clone, Copy, Arbitrary)]
enum Word {
    Cmd,
    W3wp,
    Appcmd,
    Sep,
    Sysmon,
    Fullwidth,
    Quote,
}

impl Word {
    fn text(self) -> &'static str {
        match self {
            Word::Cmd => "cmd.exe",
            Word::W3wp => "\\inetsrv\\w3wp.exe",
            Word::Appcmd => "appcmd list /text:x",
            Word::Sep => "\\",
            Word::Sysmon => "Microsoft-Windows-Sysmon/Operational",
            Word::Fullwidth => "ｃｍｄ．ｅｘｅ",
            Word::Quote => "\"",
        }
    }
}

#[derive(Debug, Clone, Arbitrary)]
struct JsonString {
    pieces: Vec<Piece>,
    /// Per mille of characters written as `\uXXXX`.
    escapes: u16,
}

#[derive(Debug, Clone, Arbitrary)]
enum Number {
    Int(i64),
    Float(f64),
    Huge(u8),
}

#[derive(Debug, Clone, Arbitrary)]
enum Value {
    Str(JsonString),
    Num(Number),
    Bool(bool),
    Null,
    Arr(Vec<Value>),
    Obj(Vec<(JsonKey, Value)>),
}

#[derive(Debug, Clone, Arbitrary)]
enum JsonKey {
    Known(u8),
    Any(JsonString),
}

const KNOWN_KEYS: &[&str] = &[
    "EventID",
    "Channel",
    "Image",
    "ParentImage",
    "CommandLine",
    "image",
    "IMAGE",
    "Event",
    "EventData",
    "System",
    "winlog",
    "event_data",
    "process",
    "executable",
    "iis_tagger",
    "x",
    "",
];

/// A record built from arbitrary parts, with (optionally) the members of a record the
/// built-in `webshell_child_process` matches, each written once and plainly.
#[derive(Debug, Arbitrary)]
struct Record {
    members: Vec<(JsonKey, Value)>,
    /// Where the matching members go, if present.
    core: Option<[u8; 4]>,
    prefix: u8,
    suffix: u8,
    whitespace: bool,
}

const CORE: [(&str, &str); 4] = [
    ("EventID", "1"),
    ("Channel", "\"Microsoft-Windows-Sysmon/Operational\""),
    ("Image", r#""C:\\Windows\\System32\\cmd.exe""#),
    ("ParentImage", r#""C:\\Windows\\System32\\inetsrv\\w3wp.exe""#),
];

struct Writer<'a> {
    out: String,
    u: Unstructured<'a>,
    whitespace: bool,
    depth: usize,
}

impl Writer<'_> {
    fn blank(&mut self) {
        if self.whitespace && self.u.arbitrary::<bool>().unwrap_or(false) {
            self.out.push_str(if self.u.arbitrary::<bool>().unwrap_or(false) { " " } else { "\t" });
        }
    }

    /// Writes a string; returns its decoded text when it holds no lone surrogate.
    fn string(&mut self, s: &JsonString) -> Option<String> {
        let mut decoded = Some(String::new());
        self.out.push('"');
        let escapes = u32::from(s.escapes % 1000);
        for piece in &s.pieces {
            let chars: Vec<char> = match piece {
                Piece::Char(c) => vec![*c],
                Piece::Text(w) => w.text().chars().collect(),
                Piece::Lone(unit) => {
                    let unit = 0xD800 + (unit % 0x800);
                    self.out.push_str(&format!("\\u{unit:04x}"));
                    decoded = None;
                    continue;
                }
            };
            for c in chars {
                if let Some(d) = decoded.as_mut() {
                    d.push(c);
                }
                let escape = self.u.int_in_range(0..=999u32).unwrap_or(1000) < escapes;
                match c {
                    '"' => self.out.push_str("\\\""),
                    '\\' => self.out.push_str("\\\\"),
                    c if (c as u32) < 0x20 || escape => {
                        let mut units = [0u16; 2];
                        for unit in c.encode_utf16(&mut units) {
                            self.out.push_str(&format!("\\u{unit:04X}"));
                        }
                    }
                    c => self.out.push(c),
                }
            }
        }
        self.out.push('"');
        decoded
    }

    fn key(&mut self, k: &JsonKey) -> Option<String> {
        match k {
            JsonKey::Known(i) => {
                let s = KNOWN_KEYS[usize::from(*i) % KNOWN_KEYS.len()];
                self.out.push('"');
                self.out.push_str(s);
                self.out.push('"');
                Some(s.to_string())
            }
            JsonKey::Any(s) => self.string(s),
        }
    }

    fn number(&mut self, n: &Number) {
        match n {
            Number::Int(i) => self.out.push_str(&i.to_string()),
            Number::Float(f) if f.is_finite() => self.out.push_str(&format!("{f:e}")),
            Number::Float(_) => self.out.push('0'),
            Number::Huge(k) => {
                let huge = [
                    "18446744073709551616",
                    "-9223372036854775809",
                    "1e400",
                    "-1E+999",
                    "123456789012345678901234567890",
                ];
                self.out.push_str(huge[usize::from(*k) % huge.len()]);
            }
        }
    }

    fn value(&mut self, v: &Value) {
        self.blank();
        match v {
            Value::Str(s) => {
                self.string(s);
            }
            Value::Num(n) => self.number(n),
            Value::Bool(b) => self.out.push_str(if *b { "true" } else { "false" }),
            Value::Null => self.out.push_str("null"),
            Value::Arr(items) if self.depth < 8 => {
                self.depth += 1;
                self.out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        self.out.push(',');
                    }
                    self.value(item);
                }
                self.out.push(']');
                self.depth -= 1;
            }
            Value::Obj(members) if self.depth < 8 => {
                self.depth += 1;
                self.out.push('{');
                for (i, (k, v)) in members.iter().enumerate() {
                    if i > 0 {
                        self.out.push(',');
                    }
                    self.blank();
                    self.key(k);
                    self.blank();
                    self.out.push(':');
                    self.value(v);
                }
                self.out.push('}');
                self.depth -= 1;
            }
            Value::Arr(_) | Value::Obj(_) => self.out.push_str("{}"),
        }
        self.blank();
    }
}

/// Structured, hostile JSON around a record that must match.
pub fn splice(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok(record) = Record::arbitrary(&mut u) else { return };
    let mut w = Writer { out: String::new(), u, whitespace: record.whitespace, depth: 0 };
    w.out.push_str(
        ["", " ", "\u{FEFF}", "<13>1 2024-03-01T01:00:00Z web01 sysmon - - - "][usize::from(record.prefix % 4)],
    );
    w.out.push('{');
    let mut first = true;
    let mut has_key = false;
    let slots: Vec<usize> = record.core.map(|c| c.map(usize::from).to_vec()).unwrap_or_default();
    for i in 0..=record.members.len() {
        for (c, &slot) in slots.iter().enumerate() {
            if slot % (record.members.len() + 1) == i {
                if !first {
                    w.out.push(',');
                }
                first = false;
                w.out.push_str(&format!("\"{}\":{}", CORE[c].0, CORE[c].1));
            }
        }
        let Some((k, v)) = record.members.get(i) else { break };
        if !first {
            w.out.push(',');
        }
        first = false;
        w.blank();
        has_key |= w.key(k).as_deref() == Some(KEY);
        w.blank();
        w.out.push(':');
        w.value(v);
    }
    w.out.push('}');
    w.out.push_str(["", " ", "\r", "\t "][usize::from(record.suffix % 4)]);
    let line = w.out.replace('\n', "\\n");
    let (tagger, _) = &taggers()[0];
    let (output, _) = tagger.tag_all(line.as_bytes());
    let annotation = contract(line.as_bytes(), &output).pop().flatten();
    let must_match = record.core.is_some() && !has_key;
    if must_match {
        let a = annotation.as_ref().unwrap_or_else(|| panic!("not detected: {line}"));
        let rules: Vec<&str> =
            a["detections"].as_array().into_iter().flatten().filter_map(|d| d["rule"].as_str()).collect();
        assert!(rules.contains(&"webshell_child_process"), "{rules:?}: {line}");
    }
    if annotation.is_some() {
        let json_at = |b: &[u8]| b.iter().position(|&c| c == b'{').unwrap_or(0);
        let (input_json, output_json) = (&line.as_bytes()[json_at(line.as_bytes())..], &output[json_at(&output)..]);
        if tree(input_json).is_some() {
            assert!(tree(output_json).is_some(), "an annotated line that was JSON stays JSON");
        }
    }
}

/// The largest fold or compatibility expansion of one character, in bytes out per byte in,
/// plus the largest growth of a path by a variable's expansion: a view of a value of `n`
/// bytes is at most `VIEW_GROWTH * n + VIEW_SLACK` bytes.
const VIEW_GROWTH: usize = 12;
const VIEW_SLACK: usize = 64;

/// Idempotence and bounded size of the normal forms.
pub fn normalize(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let kind = [FieldKind::Path, FieldKind::CommandLine, FieldKind::Argument, FieldKind::Text]
        [usize::from(u.arbitrary::<u8>().unwrap_or(0) % 4)];
    let cmd = u.arbitrary::<bool>().unwrap_or(false);
    let Ok(s) = std::str::from_utf8(u.take_rest()) else { return };
    let fold = normalize::fold(s);
    assert_eq!(normalize::fold(&fold), fold, "fold is idempotent");
    let compat = normalize::compat(s);
    assert_eq!(normalize::compat(&compat), compat, "compat is idempotent");
    let mut path = String::new();
    if normalize::path::canonical_into(&compat, &mut path) {
        // A form that did not settle is said (the record is annotated incomplete).
        assert_eq!(normalize::path::canonical(&path), path, "the path form is idempotent: {s:?}");
    }
    let mut views = Vec::new();
    assert!(normalize::views(kind, s, cmd, usize::MAX, &mut Scratch::default(), |readings, v, how| {
        if readings & Reading::Resolved.bit() != 0 {
            // The fold the compatibility form chose for a resolved form is its fold.
            let mut short = String::new();
            if !normalize::fold_for(Reading::Resolved, v, how, &mut short) {
                assert!(short.is_empty());
                short.push_str(v);
            }
            assert_eq!(short, normalize::fold(v), "{how:?} fold of {v:?}");
        }
        views.push(v.to_string())
    }));
    assert!(views.len() <= 2, "{} views", views.len());
    for v in &views {
        assert!(v.len() <= VIEW_GROWTH * s.len() + VIEW_SLACK, "a view of {} bytes grew to {}", s.len(), v.len());
        let folded = normalize::fold(v);
        assert!(folded.len() <= VIEW_GROWTH * v.len() + VIEW_SLACK);
    }
    let args = normalize::split_args(&compat);
    assert!(
        args.iter().map(|a| a.len() + 1).sum::<usize>() <= compat.len() + 1,
        "arguments are never longer than the line"
    );
}

/// A JSON value as serde_json reads it, duplicate keys kept.
#[derive(Debug)]
enum Tree {
    Obj(Vec<(String, Tree)>),
    Arr(Vec<Tree>),
    Str(String),
    I64(i64),
    U64(u64),
    F64(f64),
    Bool(bool),
    Null,
}

impl<'de> serde::Deserialize<'de> for Tree {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Tree, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Tree;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("JSON")
            }
            fn visit_bool<E>(self, b: bool) -> Result<Tree, E> {
                Ok(Tree::Bool(b))
            }
            fn visit_i64<E>(self, i: i64) -> Result<Tree, E> {
                Ok(Tree::I64(i))
            }
            fn visit_u64<E>(self, u: u64) -> Result<Tree, E> {
                Ok(Tree::U64(u))
            }
            fn visit_f64<E>(self, f: f64) -> Result<Tree, E> {
                Ok(Tree::F64(f))
            }
            fn visit_str<E>(self, s: &str) -> Result<Tree, E> {
                Ok(Tree::Str(s.to_string()))
            }
            fn visit_unit<E>(self) -> Result<Tree, E> {
                Ok(Tree::Null)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut a: A) -> Result<Tree, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = a.next_element()? {
                    items.push(item);
                }
                Ok(Tree::Arr(items))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut a: A) -> Result<Tree, A::Error> {
                let mut members = Vec::new();
                while let Some((k, v)) = a.next_entry::<String, Tree>()? {
                    members.push((k, v));
                }
                Ok(Tree::Obj(members))
            }
        }
        d.deserialize_any(V)
    }
}

fn tree(json: &[u8]) -> Option<Tree> {
    serde_json::from_slice(json).ok()
}

/// The tape simd-json would give for `t`.
fn to_tape<'a>(t: &'a Tree, out: &mut Vec<Node<'a>>) {
    let at = out.len();
    match t {
        Tree::Obj(members) => {
            out.push(Node::Object { len: members.len(), count: 0 });
            for (k, v) in members {
                out.push(Node::String(k));
                to_tape(v, out);
            }
            let count = out.len() - at - 1;
            out[at] = Node::Object { len: members.len(), count };
        }
        Tree::Arr(items) => {
            out.push(Node::Array { len: items.len(), count: 0 });
            for v in items {
                to_tape(v, out);
            }
            let count = out.len() - at - 1;
            out[at] = Node::Array { len: items.len(), count };
        }
        Tree::Str(s) => out.push(Node::String(s)),
        Tree::I64(i) => out.push(Node::Static(StaticNode::I64(*i))),
        Tree::U64(u) => out.push(Node::Static(StaticNode::U64(*u))),
        Tree::F64(f) => out.push(Node::Static(StaticNode::F64(*f))),
        Tree::Bool(b) => out.push(Node::Static(StaticNode::Bool(*b))),
        Tree::Null => out.push(Node::Static(StaticNode::Null)),
    }
}

/// What a rule can read of an occurrence.
#[derive(Debug)]
enum Read {
    Str(String),
    Int(i128),
    Float(f64),
    Bool(bool),
    Null,
}

fn read(view: &EventView, occ: &Occurrence) -> Read {
    match occ.scalar {
        Scalar::Str => Read::Str(view.raw(occ).to_string()),
        Scalar::Int(i) => Read::Int(i128::from(i)),
        Scalar::UInt(u) => Read::Int(i128::from(u)),
        Scalar::Float(f) => Read::Float(f),
        Scalar::Bool(b) => Read::Bool(b),
        Scalar::Null => Read::Null,
    }
}

fn close(a: f64, b: f64) -> bool {
    a == b || (a - b).abs() <= 1e-12 * a.abs().max(b.abs())
}

/// The same reading, allowing for float rounding and for the repair, which turns a number
/// simd-json cannot hold into the string of its digits (serde_json reads it as a float).
fn same(ours: &Read, theirs: &Read) -> bool {
    match (ours, theirs) {
        (Read::Str(a), Read::Str(b)) => a == b,
        (Read::Int(a), Read::Int(b)) => a == b,
        (Read::Float(a), Read::Float(b)) => close(*a, *b),
        (Read::Float(a), Read::Int(b)) | (Read::Int(b), Read::Float(a)) => close(*a, *b as f64),
        (Read::Str(a), Read::Float(b)) => a.parse::<f64>().is_ok_and(|a| close(a, *b)),
        (Read::Bool(a), Read::Bool(b)) => a == b,
        (Read::Null, Read::Null) => true,
        _ => false,
    }
}

fn readings(view: &EventView, fields: usize) -> Vec<Vec<Read>> {
    (0..fields as u32).map(|f| view.occurrences(f).iter().map(|o| read(view, o)).collect()).collect()
}

/// simd-json (with the repair) against serde_json on the values the rules read.
pub fn differential(data: &[u8]) {
    let Some(theirs) = tree(data) else { return };
    if !matches!(theirs, Tree::Obj(_)) {
        return;
    }
    let rules = &taggers()[0].0.rules();
    let catalog = rules.fields();
    let mut tape = Vec::new();
    to_tape(&theirs, &mut tape);
    let mut reference = EventView::new();
    reference.load(&tape, catalog, KEY);
    let mut copy = data.to_vec();
    let mut ours = EventView::new();
    let parsed = match simd_json::to_tape(&mut copy) {
        Ok(t) => {
            ours.load(&t.0, catalog, KEY);
            true
        }
        Err(_) => false,
    };
    if !parsed {
        let mut repaired = iis_tagger::repair::repair(data).unwrap_or_else(|| {
            panic!(
                "serde_json reads it, simd-json refuses it and there is nothing to repair: {}",
                String::from_utf8_lossy(data)
            )
        });
        let t = simd_json::to_tape(&mut repaired).expect("the repaired copy parses");
        ours.load(&t.0, catalog, KEY);
    }
    let (a, b) = (readings(&ours, catalog.len()), readings(&reference, catalog.len()));
    for (f, (x, y)) in a.iter().zip(&b).enumerate() {
        let agree = x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same(p, q));
        assert!(agree, "field {}: simd-json {x:?}, serde_json {y:?}", catalog.name(f as u32));
    }
    assert_eq!(ours.has_annotation_key(), reference.has_annotation_key());
}

/// RFC 6587 octet counting: arbitrary bytes, cut into arbitrary reads, give the same pieces
/// as one read; at most a record and a header are held; no more bytes come out than went
/// in; and every record, tagged whole, keeps the record contract.
pub fn framing(data: &[u8]) {
    use iis_tagger::framing::{OctetCounted, Piece};
    let mut u = Unstructured::new(data);
    let max = [4usize, 16, 64, 1 << 20][usize::from(u.arbitrary::<u8>().unwrap_or(0) % 4)];
    let sizes: Vec<u16> = u.arbitrary().unwrap_or_default();
    let input = u.take_rest();
    let decode = |cuts: &[usize]| {
        let mut d = OctetCounted::new(max);
        let mut pieces: Vec<(u8, Vec<u8>)> = Vec::new();
        let mut given = 0usize;
        let mut f = |p: Piece<'_>| {
            let (kind, bytes) = match p {
                Piece::Record(r) => (b'R', r.to_vec()),
                Piece::LongHead(n) => (b'H', n.to_string().into_bytes()),
                Piece::LongPart(b) => (b'P', b.to_vec()),
                Piece::LongEnd { missing } => (b'E', missing.to_string().into_bytes()),
            };
            if matches!(kind, b'R' | b'P') {
                given += bytes.len();
            }
            match pieces.last_mut() {
                // Long parts depend on the cutting; their concatenation does not.
                Some((b'P', last)) if kind == b'P' => last.extend_from_slice(&bytes),
                _ => pieces.push((kind, bytes)),
            }
        };
        let mut at = 0;
        for &n in cuts.iter().chain(std::iter::repeat(&4096)) {
            if at >= input.len() {
                break;
            }
            let end = (at + n.max(1)).min(input.len());
            d.feed(&input[at..end], &mut f);
            assert!(d.held_bytes() <= max + 11, "held {} bytes with a limit of {max}", d.held_bytes());
            at = end;
        }
        d.finish(&mut f);
        assert!(given <= input.len(), "more bytes out than in");
        pieces
    };
    let whole = decode(&[input.len()]);
    let cuts: Vec<usize> = sizes.iter().map(|&s| usize::from(s % 3000)).collect();
    assert!(decode(&cuts) == whole, "the pieces depend on the cutting");
    let (tagger, _) = &taggers()[0];
    let mut stream = tagger.stream();
    for (kind, record) in &whole {
        if *kind != b'R' || record.contains(&b'\n') {
            continue;
        }
        let mut out = Vec::new();
        stream.record(record, &mut out);
        line_contract(record, &out);
    }
}

/// Arbitrary bytes as a Windows XML line: the reader never panics and reports an element
/// within the text; the tagger keeps the record contract on them, as an `<Event>` line and
/// after a syslog header, with the prefilter on and off; an annotated XML line stays
/// well-formed (checked with roxmltree in [`xml_line_contract`]).
pub fn xml(data: &[u8]) {
    struct Count(usize);
    impl iis_tagger::xml::Visitor for Count {
        fn start(&mut self, _: &str) {
            self.0 += 1;
        }
        fn attribute(&mut self, _: &str, _: &str) {}
        fn text(&mut self, _: &str) {}
        fn end(&mut self) {}
    }
    let mut count = Count(0);
    if let Ok(e) = iis_tagger::xml::read(data, &mut iis_tagger::xml::Scratch::default(), &mut count) {
        assert!(e.end <= data.len() && e.close.is_none_or(|c| c < e.end));
        assert!(count.0 >= 1);
    }
    let Some(line) = data.split(|&b| b == b'\n').next() else { return };
    let (with, without) = &taggers()[0];
    for prefix in [&b""[..], b"<14>1 2024-03-01T01:00:00Z WEB01 wef - - - "] {
        let mut input = prefix.to_vec();
        input.extend_from_slice(line);
        input.push(b'\n');
        let (output, stats) = with.tag_all(&input);
        contract(&input, &output);
        assert!(output.len() <= input.len() + stats.annotated as usize * MAX_ANNOTATION);
        assert!(without.tag_all(&input).0 == output, "the prefilter changed the output");
    }
}

/// Room one annotation of the built-in rules takes at most (all eight rules and every
/// reason for being incomplete, in JSON or XML).
const MAX_ANNOTATION: usize = 8192;

/// A structured event held in a string member of a JSON record (XML or JSON, with the
/// record's own shape around it), the embedded text cut and its characters escaped at the
/// fuzzer's choice: the record contract holds, the prefilter changes nothing, and the
/// output is bounded by the input and one annotation.
pub fn embedded(data: &[u8]) {
    let Some(line) = embedded_line(data) else { return };
    let input = line.as_bytes();
    let (with, without) = &taggers()[0];
    let (output, stats) = with.tag_all(input);
    contract(input, &output);
    assert!(output.len() <= input.len() + stats.annotated as usize * MAX_ANNOTATION);
    assert!(without.tag_all(input).0 == output, "the prefilter changed the output: {line}");
}

/// The record [`embedded`] makes of `data`: byte 0 picks XML or JSON (bit 0) and the
/// member (bits 1–3), byte 1 escapes every n-th character as `\uXXXX` (0: none), bytes 2–3
/// cut the embedded text to that many characters (0: no cut), and the rest is the Image,
/// the ParentImage and an extra value, separated by 0xFF bytes.
pub fn embedded_line(data: &[u8]) -> Option<String> {
    let (&flags, rest) = data.split_first()?;
    let (&every, rest) = rest.split_first()?;
    let cut = u16::from_le_bytes([*rest.first()?, *rest.get(1)?]);
    let mut parts = rest[2..].split(|&b| b == 0xFF).map(|p| String::from_utf8_lossy(p).into_owned());
    let (image, parent, extra) =
        (parts.next().unwrap_or_default(), parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
    let inner = if flags & 1 == 1 {
        let x = |s: &str| s.replace('&', "&amp;").replace('<', "&lt;");
        format!(
            "<Event xmlns='x'><System><EventID>1</EventID><Channel>Microsoft-Windows-Sysmon/Operational</Channel></System><EventData><Data Name='Image'>{}</Data><Data Name='ParentImage'>{}</Data>{extra}</EventData></Event>",
            x(&image),
            x(&parent)
        )
    } else {
        serde_json::json!({"Image": image, "ParentImage": parent, "Extra": extra}).to_string()
    };
    let inner: String = if cut > 0 { inner.chars().take(usize::from(cut)).collect() } else { inner };
    let mut escaped = String::from("\"");
    for (i, c) in inner.chars().enumerate() {
        if every > 0 && i % usize::from(every) == 0 {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                escaped.push_str(&format!("\\u{unit:04x}"));
            }
        } else {
            let plain = serde_json::to_string(&c.to_string()).expect("a char");
            escaped.push_str(&plain[1..plain.len() - 1]);
        }
    }
    escaped.push('"');
    let tail = r#""EventID":1,"Channel":"Microsoft-Windows-Sysmon/Operational""#;
    Some(match usize::from(flags >> 1) % 6 {
        0 => format!("{{\"event\":{{\"original\":{escaped}}},{tail}}}\n"),
        m => format!("{{\"{}\":{escaped},{tail}}}\n", ["EventData", "message", "event", "xml", "System"][m - 1]),
    })
}

/// Arbitrary bytes through the tagger with the built-in rules: the output is at most the
/// input plus one annotation per annotated record plus one newline, every line comes out
/// once, and the stream's scratch memory is back under a small bound once it has seen a
/// short record after the input (`Stream::release`).
pub fn bounds(data: &[u8]) {
    let (with, _) = &taggers()[0];
    let mut stream = with.stream();
    let mut output = Vec::new();
    stream.feed(data, &mut output);
    stream.finish(&mut output);
    let stats = stream.stats().clone();
    assert!(output.len() <= data.len() + stats.annotated as usize * MAX_ANNOTATION + 1, "output bounded by input");
    assert_eq!(lines(&output).len(), lines(data).len());
    stream.release();
    assert!(stream.scratch_bytes() <= 4 << 20, "{} bytes of scratch after release", stream.scratch_bytes());
}

/// Arbitrary bytes as an EVTX file (seeded with real files, whose chunks the fuzzer cuts
/// and flips): reading never panics; every record it yields is one line of JSON (no raw
/// newline); tagged, those lines keep the record contract with the prefilter
/// on and off; what cannot be read is reported, and the count of records read and of
/// parts skipped covers the file (at least one of them when the file has chunk bytes).
pub fn evtx(data: &[u8]) {
    let mut lines = Vec::new();
    let mut records = 0u64;
    let read = iis_tagger::evtx::read_bytes(data.to_vec(), |at, json| {
        records += at.records;
        assert!(json.ends_with(b"\n"), "whole lines");
        assert_eq!(json.iter().filter(|&&b| b == b'\n').count() as u64, at.records, "a record is one line");
        assert!(at.bytes_read <= data.len() as u64);
        // A corrupted record may render as invalid JSON (the parser's output); the tagger
        // passes such a line through and counts it, as any other.
        lines.extend_from_slice(json);
        true
    });
    let Ok(read) = read else { return };
    assert_eq!(read.records, records);
    if data.len() > 4096 && iis_tagger::evtx::is_evtx(data) {
        assert!(read.records + read.damage.len() as u64 > 0 || data[4096..].iter().all(|&b| b == 0));
    }
    let (with, without) = &taggers()[0];
    let (output, _) = with.tag_all(&lines);
    contract(&lines, &output);
    assert!(without.tag_all(&lines).0 == output, "the prefilter changed the output");
}
