//! A YAML document as a tree whose every node knows its line and column.
//!
//! Rule files must be refused with an error that names the line of the problem, and
//! most problems in a rule are found after parsing ("unknown modifier `contians`"), so
//! the tree keeps positions. It is built from `saphyr-parser` events and resolves plain
//! scalars with the YAML 1.2 core schema (`null`, `true`, `29`, `0x1d`, `1.5`); quoted
//! scalars are always strings. Duplicate mapping keys, aliases, tags other than the core
//! ones and documents after the first are refused: in a rule file each of them would
//! silently change what the rule means.

use std::fmt;

use saphyr_parser::{Event, Parser, ScalarStyle, Span};

/// A position in a rule file: 1-based line, 1-based column.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pos {
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub col: usize,
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.col)
    }
}

impl From<Span> for Pos {
    fn from(span: Span) -> Pos {
        Pos { line: span.start.line(), col: span.start.col() + 1 }
    }
}

/// A scalar after core-schema resolution.
#[derive(Clone, Debug, PartialEq)]
pub enum Scalar {
    /// `null`, `~` or an empty plain scalar.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// An integer that fits in `i64`.
    Int(i64),
    /// A float.
    Float(f64),
    /// Any other scalar, and every quoted one.
    Str(String),
}

/// A node of the tree.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// A scalar.
    Scalar(Scalar),
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping, in file order. Keys are unique (duplicates are refused).
    Map(Vec<(Key, Node)>),
}

/// A mapping key: its text and where it is.
#[derive(Clone, Debug, PartialEq)]
pub struct Key {
    /// The key as written (keys are read as strings whatever they look like).
    pub text: String,
    /// Where the key is.
    pub pos: Pos,
}

/// A value and where it starts.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    /// The value.
    pub value: Value,
    /// Where it starts.
    pub pos: Pos,
}

/// Why a document could not be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct YamlError {
    /// Where.
    pub pos: Pos,
    /// What.
    pub message: String,
}

impl Node {
    /// The mapping entries, if this is a mapping.
    pub fn as_map(&self) -> Option<&[(Key, Node)]> {
        match &self.value {
            Value::Map(entries) => Some(entries),
            _ => None,
        }
    }

    /// The string, if this is a string scalar.
    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Scalar(Scalar::Str(s)) => Some(s),
            _ => None,
        }
    }

    /// The value under `key`, if this is a mapping that has it.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.as_map()?.iter().find(|(k, _)| k.text == key).map(|(_, v)| v)
    }

    /// A short name for the kind of node, for error messages.
    pub fn kind(&self) -> &'static str {
        match &self.value {
            Value::Scalar(Scalar::Null) => "null",
            Value::Scalar(Scalar::Bool(_)) => "a boolean",
            Value::Scalar(Scalar::Int(_)) => "an integer",
            Value::Scalar(Scalar::Float(_)) => "a number",
            Value::Scalar(Scalar::Str(_)) => "a string",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }
}

/// Parses exactly one YAML document. An empty file is an error.
pub fn parse(text: &str) -> Result<Node, YamlError> {
    let mut reader = Reader { parser: Parser::new_from_str(text), depth: 0 };
    loop {
        let (event, span) = reader.next()?;
        match event {
            Event::StreamStart | Event::DocumentStart(_) => continue,
            Event::StreamEnd => return Err(reader.error(span, "the file holds no YAML document")),
            _ => {
                let node = reader.node(event, span)?;
                reader.expect_end()?;
                return Ok(node);
            }
        }
    }
}

/// Nesting deeper than this is refused: no rule needs it, and recursion must be bounded.
const MAX_DEPTH: usize = 64;

struct Reader<'a> {
    parser: Parser<'a, saphyr_parser::StrInput<'a>>,
    depth: usize,
}

impl<'a> Reader<'a> {
    fn next(&mut self) -> Result<(Event<'a>, Span), YamlError> {
        match self.parser.next_event() {
            Some(Ok(pair)) => Ok(pair),
            Some(Err(e)) => Err(YamlError {
                pos: Pos { line: e.marker().line(), col: e.marker().col() + 1 },
                message: e.info().to_string(),
            }),
            None => Err(YamlError { pos: Pos::default(), message: "unexpected end of input".into() }),
        }
    }

    fn error(&self, span: Span, message: &str) -> YamlError {
        YamlError { pos: span.into(), message: message.to_string() }
    }

    fn node(&mut self, event: Event<'a>, span: Span) -> Result<Node, YamlError> {
        let pos = Pos::from(span);
        let value = match event {
            Event::Scalar(text, style, anchor, tag) => {
                self.refuse_anchor_or_tag(anchor, tag.is_some(), span)?;
                Value::Scalar(resolve(&text, style))
            }
            Event::SequenceStart(anchor, tag) => {
                self.refuse_anchor_or_tag(anchor, tag.is_some(), span)?;
                self.enter(span)?;
                let seq = self.seq()?;
                self.depth -= 1;
                Value::Seq(seq)
            }
            Event::MappingStart(anchor, tag) => {
                self.refuse_anchor_or_tag(anchor, tag.is_some(), span)?;
                self.enter(span)?;
                let map = self.map()?;
                self.depth -= 1;
                Value::Map(map)
            }
            Event::Alias(_) => return Err(self.error(span, "YAML aliases are not supported in rule files")),
            other => return Err(self.error(span, &format!("unexpected YAML event {other:?}"))),
        };
        Ok(Node { value, pos })
    }

    fn enter(&mut self, span: Span) -> Result<(), YamlError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.error(span, "nesting is deeper than 64 levels"));
        }
        Ok(())
    }

    fn refuse_anchor_or_tag(&self, anchor: usize, tagged: bool, span: Span) -> Result<(), YamlError> {
        if anchor != 0 {
            return Err(self.error(span, "YAML anchors are not supported in rule files"));
        }
        if tagged {
            return Err(self.error(span, "YAML tags are not supported in rule files"));
        }
        Ok(())
    }

    fn seq(&mut self) -> Result<Vec<Node>, YamlError> {
        let mut items = Vec::new();
        loop {
            let (event, span) = self.next()?;
            if event == Event::SequenceEnd {
                return Ok(items);
            }
            items.push(self.node(event, span)?);
        }
    }

    fn map(&mut self) -> Result<Vec<(Key, Node)>, YamlError> {
        let mut entries: Vec<(Key, Node)> = Vec::new();
        loop {
            let (event, span) = self.next()?;
            let key = match event {
                Event::MappingEnd => return Ok(entries),
                Event::Scalar(text, _, 0, None) => Key { text: text.into_owned(), pos: span.into() },
                _ => return Err(self.error(span, "mapping keys must be plain strings")),
            };
            if let Some((first, _)) = entries.iter().find(|(k, _)| k.text == key.text) {
                let msg = format!("duplicate key `{}` (first at line {})", key.text, first.pos.line);
                return Err(YamlError { pos: key.pos, message: msg });
            }
            let (event, span) = self.next()?;
            let value = self.node(event, span)?;
            entries.push((key, value));
        }
    }

    fn expect_end(&mut self) -> Result<(), YamlError> {
        loop {
            let (event, span) = self.next()?;
            match event {
                Event::DocumentEnd => continue,
                Event::StreamEnd => return Ok(()),
                _ => {
                    return Err(self.error(span, "a rule file holds one YAML document; a second one starts here"));
                }
            }
        }
    }
}

/// YAML 1.2 core schema resolution of a scalar.
fn resolve(text: &str, style: ScalarStyle) -> Scalar {
    if style != ScalarStyle::Plain {
        return Scalar::Str(text.to_string());
    }
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Scalar::Null,
        "true" | "True" | "TRUE" => return Scalar::Bool(true),
        "false" | "False" | "FALSE" => return Scalar::Bool(false),
        _ => {}
    }
    if let Some(i) = parse_int(text) {
        return Scalar::Int(i);
    }
    if looks_like_float(text) {
        if let Ok(f) = text.parse::<f64>() {
            return Scalar::Float(f);
        }
    }
    Scalar::Str(text.to_string())
}

fn parse_int(text: &str) -> Option<i64> {
    let (neg, digits) = match text.as_bytes().first()? {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    let magnitude = if let Some(hex) = digits.strip_prefix("0x") {
        i64::from_str_radix(hex, 16).ok()?
    } else if let Some(oct) = digits.strip_prefix("0o") {
        i64::from_str_radix(oct, 8).ok()?
    } else if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        digits.parse::<i64>().ok()?
    } else {
        return None;
    };
    Some(if neg { -magnitude } else { magnitude })
}

fn looks_like_float(text: &str) -> bool {
    let t = text.trim_start_matches(['-', '+']);
    !t.is_empty()
        && t.bytes().any(|b| b.is_ascii_digit())
        && t.bytes().all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'-' | b'+'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scalar(text: &str) -> Scalar {
        match parse(text).expect("parses").value {
            Value::Scalar(s) => s,
            other => panic!("not a scalar: {other:?}"),
        }
    }

    #[test]
    fn core_schema_scalars() {
        assert_eq!(scalar("29"), Scalar::Int(29));
        assert_eq!(scalar("'29'"), Scalar::Str("29".into()));
        assert_eq!(scalar("0x1d"), Scalar::Int(29));
        assert_eq!(scalar("-4"), Scalar::Int(-4));
        assert_eq!(scalar("null"), Scalar::Null);
        assert_eq!(scalar("~"), Scalar::Null);
        assert_eq!(scalar("true"), Scalar::Bool(true));
        assert_eq!(scalar("1.5"), Scalar::Float(1.5));
        assert_eq!(scalar("appcmd.exe"), Scalar::Str("appcmd.exe".into()));
        assert_eq!(scalar(r"'\appcmd.exe'"), Scalar::Str(r"\appcmd.exe".into()));
        assert_eq!(scalar("1.2.3"), Scalar::Str("1.2.3".into()));
    }

    #[test]
    fn positions_are_one_based() {
        let doc = parse("title: x\ndetection:\n  sel:\n    Image: a\n").expect("parses");
        let sel = doc.get("detection").and_then(|d| d.get("sel")).expect("sel");
        assert_eq!(sel.pos.line, 4);
        let (key, _) = &sel.as_map().expect("map")[0];
        assert_eq!(key.pos, Pos { line: 4, col: 5 });
    }

    #[test]
    fn duplicate_keys_are_refused_with_both_lines() {
        let err = parse("a: 1\nb: 2\na: 3\n").expect_err("duplicate");
        assert_eq!(err.pos.line, 3);
        assert!(err.message.contains("first at line 1"), "{}", err.message);
    }

    #[test]
    fn refuses_what_would_change_meaning_silently() {
        assert!(parse("a: &x 1\nb: *x\n").is_err());
        assert!(parse("a: !!str 1\n").is_err());
        assert!(parse("a: 1\n---\nb: 2\n").is_err());
        assert!(parse("").is_err());
        assert!(parse("a: [1, 2").is_err());
    }

    #[test]
    fn deep_nesting_is_refused_not_overflowed() {
        let text = "[".repeat(10_000);
        assert!(parse(&text).is_err());
    }
}
