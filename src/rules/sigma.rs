//! A Sigma rule document → a [`Rule`].
//!
//! Supported: field selections (a mapping is *and*, a list of mappings is *or*, a list of
//! values is *or*), the modifiers `contains`, `startswith`, `endswith`, `all`, `cased`,
//! `re` (with `i`, `m`, `s`), values with `*` / `?` wildcards, integers, booleans and
//! `null`, the condition language of [`condition`], and the log sources of
//! [`logsource`]. Vendor attributes the Sigma format lacks are read as extra keys:
//! `risk_score` (0–100) and `source`. Anything else in `detection` is refused with its
//! line: a clause that were silently ignored would change what the rule detects.

use crate::fields::FieldCatalog;
use crate::rules::condition::{self, ConditionError};
use crate::rules::expr::{Atom, Expr};
use crate::rules::logsource;
use crate::rules::pattern::{Matcher, RegexFlags, Token, tokenize};
use crate::rules::yaml::{Key, Node, Pos, Scalar, Value};
use crate::rules::{Rule, RuleMeta, Severity};

/// A located problem in a rule document.
#[derive(Debug)]
pub struct Problem {
    /// Where.
    pub pos: Pos,
    /// What.
    pub message: String,
}

fn problem<T>(pos: Pos, message: impl Into<String>) -> Result<T, Problem> {
    Err(Problem { pos, message: message.into() })
}

/// Compiles a parsed rule document. `stem` (the file name without extension) is the
/// slug when the rule has no `name`.
pub fn compile(doc: &Node, stem: &str, origin: &str, catalog: &mut FieldCatalog) -> Result<Rule, Problem> {
    let Some(top) = doc.as_map() else {
        return problem(doc.pos, format!("a rule must be a mapping, not {}", doc.kind()));
    };
    for (key, _) in top {
        if matches!(key.text.as_str(), "correlation" | "action" | "filter") {
            return problem(
                key.pos,
                format!("`{}` documents (Sigma correlation / meta rules) are not supported", key.text),
            );
        }
    }
    let meta = metadata(doc, stem, origin)?;
    let logsource = required(doc, "logsource")?;
    let route = logsource::compile(logsource, catalog)
        .map_err(|e| Problem { pos: logsource.get(e.key).map_or(logsource.pos, |n| n.pos), message: e.message })?;
    let detection = detection(required(doc, "detection")?, catalog)?;
    Ok(Rule { meta, expr: Expr::and(vec![route, detection]) })
}

fn required<'a>(doc: &'a Node, key: &str) -> Result<&'a Node, Problem> {
    doc.get(key).ok_or_else(|| Problem { pos: doc.pos, message: format!("the rule has no `{key}`") })
}

fn optional_str<'a>(doc: &'a Node, key: &str) -> Result<Option<&'a str>, Problem> {
    match doc.get(key) {
        None => Ok(None),
        Some(n) => match n.as_str() {
            Some(s) => Ok(Some(s)),
            None => problem(n.pos, format!("`{key}` must be a string, not {}", n.kind())),
        },
    }
}

fn metadata(doc: &Node, stem: &str, origin: &str) -> Result<RuleMeta, Problem> {
    let title = match optional_str(doc, "title")? {
        Some(t) if !t.trim().is_empty() => t.to_string(),
        _ => return problem(doc.get("title").map_or(doc.pos, |n| n.pos), "the rule needs a non-empty `title`"),
    };
    let slug = match doc.get("name") {
        Some(n) => {
            let s = n.as_str().ok_or_else(|| Problem { pos: n.pos, message: "`name` must be a string".into() })?;
            check_slug(s).map_err(|m| Problem { pos: n.pos, message: m })?;
            s.to_string()
        }
        None => {
            check_slug(stem)
                .map_err(|m| Problem { pos: doc.pos, message: format!("{m} (from the file name; set `name`)") })?;
            stem.to_string()
        }
    };
    let (mitre, tactics) = tags(doc)?;
    let level = match doc.get("level") {
        None => None,
        Some(n) => match n.as_str().map(str::to_ascii_lowercase).as_deref() {
            Some(l @ ("informational" | "low" | "medium" | "high" | "critical")) => Some(l.to_string()),
            _ => return problem(n.pos, "`level` must be one of informational, low, medium, high, critical"),
        },
    };
    let risk_score = match doc.get("risk_score") {
        Some(n) => match n.value {
            Value::Scalar(Scalar::Int(r)) if (0..=100).contains(&r) => r as u8,
            _ => return problem(n.pos, "`risk_score` must be an integer from 0 to 100"),
        },
        None => match level.as_deref() {
            Some("informational") => 0,
            Some("low") => 21,
            Some("medium") => 47,
            Some("high") => 73,
            Some("critical") => 99,
            _ => return problem(doc.pos, "the rule needs a `level` or a `risk_score`"),
        },
    };
    Ok(RuleMeta {
        slug,
        title,
        id: optional_str(doc, "id")?.map(str::to_string),
        source: optional_str(doc, "source")?.unwrap_or("Sigma").to_string(),
        mitre,
        tactics,
        risk_score,
        severity: Severity::from_risk(risk_score),
        level,
        author: optional_str(doc, "author")?.map(str::to_string),
        origin: origin.to_string(),
    })
}

fn check_slug(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 128
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok { Ok(()) } else { Err(format!("`{s}` is not a valid rule name: use letters, digits, `_`, `-`, `.`")) }
}

/// ATT&CK technique ids (`attack.t1505.004` → `T1505.004`) and tactic names
/// (`attack.persistence`) from `tags`.
fn tags(doc: &Node) -> Result<(Vec<String>, Vec<String>), Problem> {
    let mut mitre = Vec::new();
    let mut tactics = Vec::new();
    let Some(node) = doc.get("tags") else { return Ok((mitre, tactics)) };
    let Value::Seq(items) = &node.value else { return problem(node.pos, "`tags` must be a list") };
    for item in items {
        let Some(tag) = item.as_str() else { return problem(item.pos, "a tag must be a string") };
        let Some(rest) = tag.strip_prefix("attack.") else { continue };
        let bytes = rest.as_bytes();
        let technique = bytes.len() >= 5
            && bytes[0].eq_ignore_ascii_case(&b't')
            && bytes[1..].iter().all(|b| b.is_ascii_digit() || *b == b'.');
        if technique {
            let id = format!("T{}", &rest[1..]);
            if !mitre.contains(&id) {
                mitre.push(id);
            }
        } else if rest.bytes().all(|b| b.is_ascii_lowercase() || b == b'-' || b == b'_')
            && !rest.is_empty()
            && !tactics.iter().any(|t| t == rest)
        {
            tactics.push(rest.to_string());
        }
    }
    Ok((mitre, tactics))
}

fn detection(node: &Node, catalog: &mut FieldCatalog) -> Result<Expr, Problem> {
    let Some(entries) = node.as_map() else { return problem(node.pos, "`detection` must be a mapping") };
    let mut selections = Vec::new();
    let mut condition_node = None;
    for (key, value) in entries {
        match key.text.as_str() {
            "condition" => condition_node = Some(value),
            "timeframe" => return problem(key.pos, "`timeframe` needs state across records and is not supported"),
            name => selections.push((name.to_string(), selection(value, catalog)?)),
        }
    }
    let Some(cond) = condition_node else { return problem(node.pos, "`detection` has no `condition`") };
    let texts: Vec<&Node> = match &cond.value {
        Value::Seq(items) => items.iter().collect(),
        _ => vec![cond],
    };
    let mut alternatives = Vec::new();
    for text_node in texts {
        let Some(text) = text_node.as_str() else {
            return problem(text_node.pos, "`condition` must be a string or a list of strings");
        };
        let located = |e: ConditionError| Problem {
            pos: text_node.pos,
            message: format!("condition, at character {}: {}", e.offset + 1, e.message),
        };
        let parsed = condition::parse(text).map_err(located)?;
        alternatives.push(condition::resolve(&parsed, &selections).map_err(located)?);
    }
    if alternatives.is_empty() {
        return problem(cond.pos, "`condition` is an empty list");
    }
    Ok(Expr::or(alternatives))
}

fn selection(node: &Node, catalog: &mut FieldCatalog) -> Result<Expr, Problem> {
    match &node.value {
        Value::Map(entries) => {
            if entries.is_empty() {
                return problem(node.pos, "a selection must not be empty");
            }
            let atoms = entries.iter().map(|(k, v)| field_test(k, v, catalog)).collect::<Result<Vec<_>, _>>()?;
            Ok(Expr::and(atoms))
        }
        Value::Seq(items) if !items.is_empty() && items.iter().all(|i| i.as_map().is_some()) => {
            let alts = items.iter().map(|i| selection(i, catalog)).collect::<Result<Vec<_>, _>>()?;
            Ok(Expr::or(alts))
        }
        Value::Seq(items) if items.iter().all(|i| matches!(i.value, Value::Scalar(_))) => {
            problem(node.pos, "keyword selections (a list of values without a field) are not supported yet")
        }
        _ => problem(node.pos, "a selection must be a mapping of fields, or a list of such mappings"),
    }
}

/// Modifiers of one `Field|mod|mod` key.
#[derive(Default)]
struct Modifiers {
    op: Option<&'static str>,
    all: bool,
    cased: bool,
    windash: bool,
    re: Option<RegexFlags>,
}

fn modifiers(key: &Key) -> Result<(String, Modifiers), Problem> {
    let mut parts = key.text.split('|');
    let field = parts.next().unwrap_or_default().trim().to_string();
    if field.is_empty() {
        return problem(key.pos, "a field name is required before the modifiers (keyword search is not supported yet)");
    }
    if field.len() > crate::fields::MAX_KEY_BYTES {
        return problem(
            key.pos,
            format!("field names longer than {} bytes are not supported", crate::fields::MAX_KEY_BYTES),
        );
    }
    let mut m = Modifiers::default();
    for modifier in parts {
        match modifier {
            "contains" | "startswith" | "endswith" => {
                let op = match modifier {
                    "contains" => "contains",
                    "startswith" => "startswith",
                    _ => "endswith",
                };
                if let Some(prev) = m.op.replace(op) {
                    return problem(key.pos, format!("`{modifier}` cannot be combined with `{prev}`"));
                }
            }
            "all" => m.all = true,
            "cased" => m.cased = true,
            "windash" => m.windash = true,
            "re" => m.re = Some(RegexFlags::default()),
            "i" | "m" | "s" => {
                let Some(flags) = m.re.as_mut() else {
                    return problem(key.pos, format!("`{modifier}` is a flag of `re` and must follow it"));
                };
                match modifier {
                    "i" => flags.ignore_case = true,
                    "m" => flags.multi_line = true,
                    _ => flags.dot_all = true,
                }
            }
            "expand" => {
                return problem(key.pos, "modifier `expand` needs placeholder values from a pipeline; not supported");
            }
            "base64" | "base64offset" | "utf16le" | "utf16be" | "wide" | "utf16" | "cidr" | "exists" | "fieldref"
            | "neq" | "lt" | "lte" | "gt" | "gte" => {
                return problem(key.pos, format!("modifier `{modifier}` is not supported yet"));
            }
            other => return problem(key.pos, format!("unknown modifier `{other}`")),
        }
    }
    if let (Some(_), Some(op)) = (m.re, m.op) {
        return problem(key.pos, format!("`re` cannot be combined with `{op}`"));
    }
    if m.re.is_some() && m.windash {
        return problem(key.pos, "`re` cannot be combined with `windash`");
    }
    Ok((field, m))
}

fn field_test(key: &Key, value: &Node, catalog: &mut FieldCatalog) -> Result<Expr, Problem> {
    let (name, mods) = modifiers(key)?;
    let field = catalog.intern(&name);
    let kind = catalog.kind(field);
    let values: Vec<&Node> = match &value.value {
        Value::Seq(items) if items.is_empty() => return problem(value.pos, "an empty list of values matches nothing"),
        Value::Seq(items) => items.iter().collect(),
        Value::Map(_) => return problem(value.pos, "a field value must be a value or a list of values, not a mapping"),
        Value::Scalar(_) => vec![value],
    };
    let mut matchers = Vec::with_capacity(values.len());
    for v in values {
        let Value::Scalar(scalar) = &v.value else {
            return problem(v.pos, "a list of values must hold plain values");
        };
        let text = match scalar {
            Scalar::Null if mods.op.is_some() || mods.re.is_some() || mods.cased => {
                return problem(v.pos, "`null` cannot take modifiers");
            }
            Scalar::Null => {
                matchers.push(Matcher::Null);
                continue;
            }
            Scalar::Int(i) if mods.op.is_none() && mods.re.is_none() && !mods.cased => {
                matchers.push(Matcher::Int(*i));
                continue;
            }
            Scalar::Int(i) => i.to_string(),
            Scalar::Float(f) => f.to_string(),
            Scalar::Bool(b) => b.to_string(),
            Scalar::Str(s) => s.clone(),
        };
        if let Some(flags) = mods.re {
            matchers.push(
                Matcher::regex(&text, flags)
                    .map_err(|e| Problem { pos: v.pos, message: format!("bad regular expression `{text}`: {e}") })?,
            );
            continue;
        }
        if mods.windash {
            let variants: Vec<Matcher> = windash_variants(&text)
                .iter()
                .map(|v| Matcher::string(wrap(tokenize(v), mods.op), kind, mods.cased))
                .collect();
            matchers.push(Matcher::Any(variants));
        } else {
            matchers.push(Matcher::string(wrap(tokenize(&text), mods.op), kind, mods.cased));
        }
    }
    Ok(Expr::Atom(Atom { field, matchers, all: mods.all }))
}

/// The characters Windows programs accept where an option starts with `-` or `/`.
const DASHES: [char; 5] = ['-', '/', '\u{2013}', '\u{2014}', '\u{2015}'];

/// Sigma's `windash`: the value with each option character (a `-` or `/` at the start or
/// after a non-word character, and before a word character) written every way Windows
/// programs accept: `-`, `/`, en dash, em dash, horizontal bar. With up to two option
/// characters every combination is produced; with more, each way for all of them at once.
fn windash_variants(value: &str) -> Vec<String> {
    let chars: Vec<char> = value.chars().collect();
    let word = |c: char| c.is_alphanumeric() || c == '_';
    let positions: Vec<usize> = (0..chars.len())
        .filter(|&i| {
            (chars[i] == '-' || chars[i] == '/')
                && (i == 0 || !word(chars[i - 1]))
                && chars.get(i + 1).is_some_and(|&c| word(c))
        })
        .collect();
    let spell = |choice: &dyn Fn(usize) -> char| {
        let mut out = chars.clone();
        for (k, &p) in positions.iter().enumerate() {
            out[p] = choice(k);
        }
        out.into_iter().collect::<String>()
    };
    let mut variants: Vec<String> = if positions.len() <= 2 {
        (0..DASHES.len().pow(positions.len() as u32))
            .map(|n| spell(&|k| DASHES[(n / DASHES.len().pow(k as u32)) % DASHES.len()]))
            .collect()
    } else {
        DASHES.iter().map(|&d| spell(&|_| d)).collect()
    };
    variants.sort();
    variants.dedup();
    variants
}

/// Adds the implicit wildcards of `contains` / `startswith` / `endswith`.
fn wrap(tokens: Vec<Token>, op: Option<&str>) -> Vec<Token> {
    let (lead, trail) = match op {
        Some("contains") => (true, true),
        Some("startswith") => (false, true),
        Some("endswith") => (true, false),
        _ => (false, false),
    };
    let mut out = Vec::with_capacity(tokens.len() + 2);
    if lead && tokens.first() != Some(&Token::Star) {
        out.push(Token::Star);
    }
    out.extend(tokens);
    if trail && out.last() != Some(&Token::Star) {
        out.push(Token::Star);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windash_spellings() {
        let v = windash_variants("-text");
        assert_eq!(v.len(), 5);
        assert!(v.contains(&"/text".to_string()) && v.contains(&"\u{2013}text".to_string()));
        assert_eq!(windash_variants(" -a -b").len(), 25);
        assert_eq!(windash_variants("x-y"), vec!["x-y"], "a dash inside a word is not an option");
        assert_eq!(windash_variants("-a -b -c").len(), 5);
    }
}
