//! The shape table: every layout a Windows event travels in, and where each field a rule
//! names lives in each (see `builtin.yml`, which documents the format).
//!
//! The table is data. The field catalog ([`crate::fields`]) builds its path trie from it,
//! the field kinds it gives decide how values are compared and how the prefilter cuts
//! literals ([`crate::normalize::FieldKind`]), `iis-tagger shapes` prints it, and a user
//! adds shapes of their own with `--shapes FILE` (the same format; errors name the file,
//! line and column, as rule errors do).

use std::fmt;
use std::path::Path as FsPath;

use serde::Serialize;

use crate::normalize::FieldKind;
use crate::yaml::{self, Node, Pos, Scalar, Value};

/// A dotted path of JSON keys (empty: the record itself).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(into = "String")]
pub struct KeyPath(pub Vec<String>);

impl KeyPath {
    fn parse(text: &str) -> Result<KeyPath, String> {
        if text.is_empty() {
            return Ok(KeyPath(Vec::new()));
        }
        let keys: Vec<String> = text.split('.').map(str::to_string).collect();
        if keys.iter().any(|k| k.is_empty() || k.len() > MAX_KEY_BYTES) {
            return Err(format!("`{text}` is not a path of keys (dotted, none empty, each at most 128 bytes)"));
        }
        Ok(KeyPath(keys))
    }

    /// The keys.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() { f.write_str("(the record)") } else { f.write_str(&self.0.join(".")) }
    }
}

impl From<KeyPath> for String {
    fn from(p: KeyPath) -> String {
        p.0.join(".")
    }
}

/// EventData values given by position (no names), for one provider and event.
#[derive(Clone, Debug, Serialize)]
pub struct Positional {
    /// The array holding the values.
    pub array: KeyPath,
    /// The provider whose events these are.
    pub provider: String,
    /// The event id.
    pub event_id: i64,
    /// The names of the values, in order; the layout applies to arrays of this length.
    pub fields: Vec<String>,
}

/// One shape of the table.
#[derive(Clone, Debug, Serialize)]
pub struct Shape {
    /// Its name.
    pub name: String,
    /// What it is.
    pub description: String,
    /// Paths whose presence says a record is of this shape.
    pub recognised_by: Vec<KeyPath>,
    /// Paths under which any field may appear by its Sysmon name.
    pub containers: Vec<KeyPath>,
    /// Paths whose last key is a prefix: any field appears by its Sysmon name after it
    /// (a pipeline that flattens `winlog.event_data.Image` into `winlog_event_data_Image`).
    pub prefixes: Vec<KeyPath>,
    /// Per field, other paths that hold it.
    pub paths: Vec<(String, Vec<KeyPath>)>,
    /// Its paths are read only when the record holds the field under no other path.
    pub fallback: bool,
    /// A member holding a whole record of any shape.
    pub envelope: Option<KeyPath>,
    /// String members that may hold a whole event (XML or JSON).
    pub embedded: Vec<KeyPath>,
    /// EventData arrays by position.
    pub positional: Vec<Positional>,
    /// Values under its paths have every `\` doubled and every `"` escaped.
    pub doubled_backslashes: bool,
    /// `builtin` or the file it came from.
    pub origin: String,
}

/// The shapes, and the kinds of the fields they hold.
#[derive(Clone, Debug, Serialize)]
pub struct ShapeTable {
    /// Field kinds (a field not listed is text).
    pub fields: Vec<(String, FieldKind)>,
    /// Other names fields go by (alias, field), wherever fields appear by name.
    pub aliases: Vec<(String, String)>,
    /// The shapes, built-in ones first.
    pub shapes: Vec<Shape>,
}

/// A shape file that cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{origin}:{pos}: {message}")]
pub struct ShapeError {
    /// The file.
    pub origin: String,
    /// Where in it.
    pub pos: Pos,
    /// What is wrong.
    pub message: String,
}

const BUILTIN: &str = include_str!("builtin.yml");

/// Longest key a path may hold (the field catalog's trie holds no longer one; rules naming
/// a longer field are refused at load time).
pub const MAX_KEY_BYTES: usize = 128;

/// The name every XML event line counts under in the statistics (it is read in the
/// layout of `evtx_dump`).
pub const WINDOWS_XML: &str = "windows_xml";

impl ShapeTable {
    /// The built-in table (read once per process).
    pub fn builtin() -> ShapeTable {
        ShapeTable::shared_builtin().as_ref().clone()
    }

    /// The built-in table, shared.
    pub fn shared_builtin() -> std::sync::Arc<ShapeTable> {
        static BUILT: std::sync::OnceLock<std::sync::Arc<ShapeTable>> = std::sync::OnceLock::new();
        BUILT
            .get_or_init(|| {
                let mut table = ShapeTable { fields: Vec::new(), aliases: Vec::new(), shapes: Vec::new() };
                table.add_source("builtin:shapes.yml", BUILTIN).expect("the built-in shape table is valid");
                std::sync::Arc::new(table)
            })
            .clone()
    }

    /// Adds the shapes (and field kinds) of a user's file.
    pub fn add_file(&mut self, path: &FsPath) -> Result<(), ShapeError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ShapeError {
            origin: origin.clone(),
            pos: Pos { line: 1, col: 1 },
            message: e.to_string(),
        })?;
        self.add_source(&origin, &text)
    }

    /// Adds the shapes of a YAML text read from `origin`.
    pub fn add_source(&mut self, origin: &str, text: &str) -> Result<(), ShapeError> {
        let fail = |pos: Pos, message: String| ShapeError { origin: origin.to_string(), pos, message };
        let doc = yaml::parse(text).map_err(|e| fail(e.pos, format!("invalid YAML: {}", e.message)))?;
        let Some(entries) = doc.as_map() else { return Err(fail(doc.pos, "expected a mapping".into())) };
        let mut fields = Vec::new();
        let mut aliases = Vec::new();
        let mut shapes = Vec::new();
        for (key, value) in entries {
            match key.text.as_str() {
                "fields" => fields = read_fields(value).map_err(|(p, m)| fail(p, m))?,
                "aliases" => {
                    let Some(entries) = value.as_map() else {
                        return Err(fail(value.pos, "`aliases` must map other names to field names".into()));
                    };
                    for (alias, field) in entries {
                        aliases.push((alias.text.clone(), string(field, "a field name").map_err(|(p, m)| fail(p, m))?));
                    }
                }
                "shapes" => {
                    let Value::Seq(items) = &value.value else {
                        return Err(fail(value.pos, "`shapes` must be a list".into()));
                    };
                    for item in items {
                        shapes.push(read_shape(item, origin).map_err(|(p, m)| fail(p, m))?);
                    }
                }
                other => {
                    return Err(fail(
                        key.pos,
                        format!("unknown key `{other}` (expected `fields`, `aliases` or `shapes`)"),
                    ));
                }
            }
        }
        for (name, kind, pos) in fields {
            match self.fields.iter().find(|(n, _)| *n == name) {
                Some((_, k)) if *k != kind => {
                    return Err(fail(pos, format!("field `{name}` is already a {} field", kind_name(*k))));
                }
                Some(_) => {}
                None => self.fields.push((name, kind)),
            }
        }
        for (alias, field) in aliases {
            if !self.aliases.contains(&(alias.clone(), field.clone())) {
                self.aliases.push((alias, field));
            }
        }
        for (shape, pos) in shapes {
            if self.shapes.iter().any(|s| s.name == shape.name) || shape.name == WINDOWS_XML {
                return Err(fail(pos, format!("a shape named `{}` exists already", shape.name)));
            }
            self.shapes.push(shape);
        }
        Ok(())
    }

    /// The kind of a field.
    pub fn kind(&self, field: &str) -> FieldKind {
        self.fields.iter().find(|(n, _)| n == field).map_or(FieldKind::Text, |(_, k)| *k)
    }

    /// The table as text for people (`iis-tagger shapes`).
    pub fn to_text(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let list = |paths: &[KeyPath]| paths.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
        for shape in &self.shapes {
            let _ = writeln!(s, "{}  ({})", shape.name, shape.origin);
            let _ = writeln!(s, "  {}", shape.description);
            if !shape.recognised_by.is_empty() {
                let _ = writeln!(s, "  recognised by: {}", list(&shape.recognised_by));
            }
            if !shape.containers.is_empty() {
                let _ = writeln!(s, "  any field by its Sysmon name under: {}", list(&shape.containers));
            }
            if !shape.prefixes.is_empty() {
                let _ = writeln!(s, "  any field by its Sysmon name after the key prefix: {}", list(&shape.prefixes));
            }
            if let Some(e) = &shape.envelope {
                let _ = writeln!(s, "  a whole record of any shape under: {e}");
            }
            if !shape.embedded.is_empty() {
                let _ = writeln!(s, "  a whole event as XML or JSON in: {}", list(&shape.embedded));
            }
            if shape.fallback {
                let _ = writeln!(s, "  (its paths are read only where the record has no other path for the field)");
            }
            if shape.doubled_backslashes {
                let _ = writeln!(s, "  (its values have every backslash doubled: read with that undone)");
            }
            for (field, paths) in &shape.paths {
                let _ = writeln!(s, "    {field:<20} {}", list(paths));
            }
            for p in &shape.positional {
                let _ = writeln!(
                    s,
                    "    {} of {} event {} ({} values): {}",
                    p.array,
                    p.provider,
                    p.event_id,
                    p.fields.len(),
                    p.fields.join(", ")
                );
            }
            s.push('\n');
        }
        let _ = writeln!(
            s,
            "{WINDOWS_XML}  (builtin)\n  one <Event> (or <EventData>) per line, or in an embedded member; read in the evtx_dump layout\n"
        );
        let aliases: Vec<String> = self.aliases.iter().map(|(a, f)| format!("{a} = {f}")).collect();
        let _ = writeln!(s, "other names of fields, wherever fields appear by name: {}", aliases.join(", "));
        let kinds: Vec<String> = self.fields.iter().map(|(n, k)| format!("{n} ({})", kind_name(*k))).collect();
        let _ = writeln!(s, "field kinds (others are text): {}", kinds.join(", "));
        s
    }
}

fn kind_name(kind: FieldKind) -> &'static str {
    match kind {
        FieldKind::Path => "path",
        FieldKind::CommandLine => "command_line",
        FieldKind::Argument => "argument",
        FieldKind::Text => "text",
    }
}

type Problem = (Pos, String);

fn read_fields(node: &Node) -> Result<Vec<(String, FieldKind, Pos)>, Problem> {
    let Some(entries) = node.as_map() else { return Err((node.pos, "`fields` must map field names to kinds".into())) };
    entries
        .iter()
        .map(|(k, v)| {
            let kind = match v.as_str() {
                Some("path") => FieldKind::Path,
                Some("command_line") => FieldKind::CommandLine,
                Some("text") => FieldKind::Text,
                _ => return Err((v.pos, format!("`{}`: the kind must be path, command_line or text", k.text))),
            };
            Ok((k.text.clone(), kind, k.pos))
        })
        .collect()
}

fn boolean(node: &Node, what: &str) -> Result<bool, Problem> {
    match node.value {
        Value::Scalar(Scalar::Bool(b)) => Ok(b),
        _ => Err((node.pos, format!("`{what}` must be true or false"))),
    }
}

fn string(node: &Node, what: &str) -> Result<String, Problem> {
    match &node.value {
        Value::Scalar(Scalar::Str(s)) => Ok(s.clone()),
        _ => Err((node.pos, format!("{what} must be a string, not {}", node.kind()))),
    }
}

fn path(node: &Node) -> Result<KeyPath, Problem> {
    KeyPath::parse(&string(node, "a path")?).map_err(|m| (node.pos, m))
}

fn paths(node: &Node) -> Result<Vec<KeyPath>, Problem> {
    match &node.value {
        Value::Seq(items) => items.iter().map(path).collect(),
        _ => Ok(vec![path(node)?]),
    }
}

fn read_shape(node: &Node, origin: &str) -> Result<(Shape, Pos), Problem> {
    let Some(entries) = node.as_map() else { return Err((node.pos, "a shape must be a mapping".into())) };
    let mut shape = Shape {
        name: String::new(),
        description: String::new(),
        recognised_by: Vec::new(),
        containers: Vec::new(),
        prefixes: Vec::new(),
        paths: Vec::new(),
        fallback: false,
        envelope: None,
        embedded: Vec::new(),
        positional: Vec::new(),
        doubled_backslashes: false,
        origin: origin.trim_start_matches("builtin:shapes.yml").to_string(),
    };
    if shape.origin.is_empty() {
        shape.origin = "builtin".into();
    }
    for (key, value) in entries {
        match key.text.as_str() {
            "name" => shape.name = string(value, "`name`")?,
            "description" => shape.description = string(value, "`description`")?,
            "recognised_by" => shape.recognised_by = paths(value)?,
            "containers" => shape.containers = paths(value)?,
            "prefixes" => {
                shape.prefixes = paths(value)?;
                if shape.prefixes.iter().any(|p| p.0.is_empty()) {
                    return Err((value.pos, "a prefix must end in a key (`winlog_event_data_`), not be empty".into()));
                }
            }
            "embedded" => shape.embedded = paths(value)?,
            "envelope" => shape.envelope = Some(path(value)?),
            "fallback" => shape.fallback = boolean(value, "fallback")?,
            "doubled_backslashes" => shape.doubled_backslashes = boolean(value, "doubled_backslashes")?,
            "paths" => {
                let Some(fields) = value.as_map() else {
                    return Err((value.pos, "`paths` must map field names to paths".into()));
                };
                for (field, list) in fields {
                    shape.paths.push((field.text.clone(), paths(list)?));
                }
            }
            "positional" => {
                let Value::Seq(items) = &value.value else {
                    return Err((value.pos, "`positional` must be a list".into()));
                };
                for item in items {
                    shape.positional.push(read_positional(item)?);
                }
            }
            other => {
                return Err((
                    key.pos,
                    format!(
                        "unknown key `{other}` (a shape has name, description, recognised_by, containers, prefixes, paths, \
                         fallback, envelope, embedded, positional, doubled_backslashes)"
                    ),
                ));
            }
        }
    }
    if shape.name.is_empty() || !shape.name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
        return Err((node.pos, "a shape needs a `name` of letters, digits, `_` and `-`".into()));
    }
    Ok((shape, node.pos))
}

fn read_positional(node: &Node) -> Result<Positional, Problem> {
    let field = |name: &str| node.get(name).ok_or((node.pos, format!("a positional layout needs `{name}`")));
    let event_id = match field("event_id")?.value {
        Value::Scalar(Scalar::Int(n)) => n,
        _ => return Err((field("event_id")?.pos, "`event_id` must be an integer".into())),
    };
    let Value::Seq(names) = &field("fields")?.value else {
        return Err((field("fields")?.pos, "`fields` must be a list of field names".into()));
    };
    let fields = names.iter().map(|n| string(n, "a field name")).collect::<Result<_, _>>()?;
    if let Some((k, _)) = node
        .as_map()
        .and_then(|m| m.iter().find(|(k, _)| !matches!(k.text.as_str(), "array" | "provider" | "event_id" | "fields")))
    {
        return Err((k.pos, format!("unknown key `{}` (a layout has array, provider, event_id, fields)", k.text)));
    }
    Ok(Positional {
        array: path(field("array")?)?,
        provider: string(field("provider")?, "`provider`")?,
        event_id,
        fields,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builtin_table_loads() {
        let t = ShapeTable::builtin();
        for name in ["flat", "evtx_dump", "winlogbeat", "ecs", "vector", "wazuh", "sentinel", "splunk_hec"] {
            assert!(t.shapes.iter().any(|s| s.name == name), "{name}");
        }
        assert_eq!(t.kind("Image"), FieldKind::Path);
        assert_eq!(t.kind("CommandLine"), FieldKind::CommandLine);
        assert_eq!(t.kind("User"), FieldKind::Text);
        assert!(t.to_text().contains("data.win.eventdata"));
    }

    #[test]
    fn bad_files_name_the_line() {
        let mut t = ShapeTable::builtin();
        for (text, says) in [
            ("shapes:\n  - name: x\n    containrs: [a]\n", "3:5: unknown key `containrs`"),
            ("shapes:\n  - name: flat\n", "2:5: a shape named `flat` exists already"),
            ("shapes:\n  - name: y\n    paths:\n      Image: [a..b]\n", "4:15: `a..b` is not a path"),
            ("fields:\n  Image: text\n", "2:3: field `Image` is already a path field"),
            ("shapes:\n  - description: no name\n", "2:5: a shape needs a `name`"),
            ("shapes: [\n", "invalid YAML"),
        ] {
            let e = t.add_source("mine.yml", text).expect_err(text);
            assert!(e.to_string().contains(says), "{text:?}: {e}");
            assert!(e.to_string().starts_with("mine.yml:"), "{e}");
        }
        t.add_source("mine.yml", "shapes:\n  - name: graylog\n    description: flattened\n    paths:\n      Image: [winlogbeat_winlog_event_data_Image]\n")
            .expect("a user's shape");
        assert_eq!(t.shapes.last().map(|s| s.origin.as_str()), Some("mine.yml"));
    }
}
