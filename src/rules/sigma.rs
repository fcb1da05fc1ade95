//! A Sigma rule document → a [`Rule`].
//!
//! Supported: field selections (a mapping is *and*, a list of mappings is *or*, a list of
//! values is *or*), the modifiers `contains`, `startswith`, `endswith`, `all`, `cased`,
//! `re` (with `i`, `m`, `s`), values with `*` / `?` wildcards, integers, booleans and
//! `null`, the condition language of [`condition`], and the log sources of
//! [`logsource`]. Vendor attributes the Sigma format lacks are read as extra keys:
//! `risk_score` (0–100) and `source`. Anything else in `detection` is refused with its
//! line: a clause that were silently ignored would change what the rule detects.

use crate::fields::{FieldCatalog, FieldId};
use crate::rules::condition::{self, ConditionError};
use crate::rules::error::{Refusal, refusal};
use crate::rules::expr::{Atom, Expr};
use crate::rules::logsource;
use crate::rules::modifiers::{self, Modifiers};
use crate::rules::pattern::TextOp;
use crate::rules::{Filter, FilterTargets, LogsourceKeys, Rule, RuleMeta, Severity};
use crate::yaml::{Key, Node, Pos, Scalar, Value};

/// A located problem in a rule document.
#[derive(Debug)]
pub struct Problem {
    /// Where.
    pub pos: Pos,
    /// What.
    pub refusal: Refusal,
}

fn problem<T>(pos: Pos, refusal: Refusal) -> Result<T, Problem> {
    Err(Problem { pos, refusal })
}

/// Compiles a parsed rule document. `stem` (the file name without extension) is the
/// slug when the rule has no `name`.
pub fn compile(doc: &Node, stem: &str, origin: &str, catalog: &mut FieldCatalog) -> Result<Rule, Problem> {
    let Some(top) = doc.as_map() else {
        return problem(doc.pos, refusal!(Invalid, "a rule must be a mapping, not {}", doc.kind()));
    };
    for (key, _) in top {
        if key.text == "filter" {
            return problem(key.pos, refusal!(Invalid, "a Sigma filter, not a rule: load it with --filters"));
        }
        if matches!(key.text.as_str(), "correlation" | "action") {
            return problem(
                key.pos,
                refusal!(Unsupported, "`{}` documents (Sigma correlation / meta rules) are not supported", key.text),
            );
        }
    }
    let meta = metadata(doc, stem, origin)?;
    let logsource = required(doc, "logsource")?;
    let route = logsource::compile(logsource, catalog)
        .map_err(|e| Problem { pos: logsource.get(e.key).map_or(logsource.pos, |n| n.pos), refusal: e.refusal })?;
    let detection = detection(required(doc, "detection")?, &[], catalog)?;
    let logsource = LogsourceKeys::of(logsource);
    Ok(Rule { meta, route, detection, logsource, filters: Vec::new() })
}

/// Compiles a parsed Sigma filter document (the specification's global filter: `title`,
/// `logsource`, and `filter` with `rules`, selections and a `condition`). The rules it
/// names are resolved by the rule set ([`crate::rules::RuleSetBuilder::add_filter_source`]).
pub fn compile_filter(doc: &Node, origin: &str, catalog: &mut FieldCatalog) -> Result<Filter, Problem> {
    let Some(top) = doc.as_map() else {
        return problem(doc.pos, refusal!(Invalid, "a filter must be a mapping, not {}", doc.kind()));
    };
    for (key, _) in top {
        if matches!(key.text.as_str(), "detection" | "correlation") {
            return problem(key.pos, refusal!(Invalid, "a filter has `filter`, not `{}`: is this a rule?", key.text));
        }
    }
    let title = match optional_str(doc, "title")? {
        Some(t) if !t.trim().is_empty() => t.to_string(),
        _ => {
            return problem(
                doc.get("title").map_or(doc.pos, |n| n.pos),
                refusal!(Invalid, "the filter needs a non-empty `title`"),
            );
        }
    };
    let id = optional_str(doc, "id")?.map(str::to_string);
    let logsource = required(doc, "logsource")?;
    // Refused as a rule's would be (an unknown category names its key); the filter applies
    // to rules by their log source keys, not by this condition.
    logsource::compile(logsource, catalog)
        .map_err(|e| Problem { pos: logsource.get(e.key).map_or(logsource.pos, |n| n.pos), refusal: e.refusal })?;
    let body = required(doc, "filter")?;
    let Some(rules) = body.get("rules") else {
        return problem(body.pos, refusal!(Invalid, "`filter` has no `rules` (the rules it applies to, or `any`)"));
    };
    let targets = match &rules.value {
        Value::Scalar(Scalar::Str(s)) if s.eq_ignore_ascii_case("any") => FilterTargets::Any,
        Value::Scalar(Scalar::Str(s)) => FilterTargets::Named(vec![(s.clone(), rules.pos)]),
        Value::Seq(items) if !items.is_empty() => {
            let mut named = Vec::with_capacity(items.len());
            for item in items {
                let Some(name) = item.as_str() else {
                    return problem(item.pos, refusal!(Invalid, "a rule reference must be a string (an id or a name)"));
                };
                named.push((name.to_string(), item.pos));
            }
            FilterTargets::Named(named)
        }
        _ => return problem(rules.pos, refusal!(Invalid, "`rules` must be a list of rule ids or names, or `any`")),
    };
    let condition = detection(body, &["rules"], catalog)?;
    Ok(Filter {
        title,
        id,
        origin: origin.to_string(),
        logsource: LogsourceKeys::of(logsource),
        targets,
        condition,
        pos: doc.pos,
    })
}

fn required<'a>(doc: &'a Node, key: &str) -> Result<&'a Node, Problem> {
    doc.get(key).ok_or_else(|| Problem { pos: doc.pos, refusal: refusal!(Invalid, "the rule has no `{key}`") })
}

fn optional_str<'a>(doc: &'a Node, key: &str) -> Result<Option<&'a str>, Problem> {
    match doc.get(key) {
        None => Ok(None),
        Some(n) => match n.as_str() {
            Some(s) => Ok(Some(s)),
            None => problem(n.pos, refusal!(Invalid, "`{key}` must be a string, not {}", n.kind())),
        },
    }
}

fn metadata(doc: &Node, stem: &str, origin: &str) -> Result<RuleMeta, Problem> {
    let title = match optional_str(doc, "title")? {
        Some(t) if !t.trim().is_empty() => t.to_string(),
        _ => {
            return problem(
                doc.get("title").map_or(doc.pos, |n| n.pos),
                refusal!(Invalid, "the rule needs a non-empty `title`"),
            );
        }
    };
    let slug = match doc.get("name") {
        Some(n) => {
            let s = n
                .as_str()
                .ok_or_else(|| Problem { pos: n.pos, refusal: refusal!(Invalid, "`name` must be a string") })?;
            check_slug(s).map_err(|refusal| Problem { pos: n.pos, refusal })?;
            s.to_string()
        }
        None => {
            check_slug(stem).map_err(|m| Problem {
                pos: doc.pos,
                refusal: refusal!(Invalid, "{m} (from the file name; set `name`)"),
            })?;
            stem.to_string()
        }
    };
    let (mitre, tactics) = tags(doc)?;
    let level = match doc.get("level") {
        None => None,
        Some(n) => match n.as_str().map(str::to_ascii_lowercase).as_deref() {
            Some(l @ ("informational" | "low" | "medium" | "high" | "critical")) => Some(l.to_string()),
            _ => {
                return problem(
                    n.pos,
                    refusal!(Invalid, "`level` must be one of informational, low, medium, high, critical"),
                );
            }
        },
    };
    let risk_score = match doc.get("risk_score") {
        Some(n) => match n.value {
            Value::Scalar(Scalar::Int(r)) if (0..=100).contains(&r) => r as u8,
            _ => return problem(n.pos, refusal!(Invalid, "`risk_score` must be an integer from 0 to 100")),
        },
        None => match level.as_deref() {
            Some("informational") => 0,
            Some("low") => 21,
            Some("medium") => 47,
            Some("high") => 73,
            Some("critical") => 99,
            _ => return problem(doc.pos, refusal!(Invalid, "the rule needs a `level` or a `risk_score`")),
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

fn check_slug(s: &str) -> Result<(), Refusal> {
    let ok = !s.is_empty()
        && s.len() <= 128
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(refusal!(Invalid, "`{s}` is not a valid rule name: use letters, digits, `_`, `-`, `.`"))
    }
}

/// ATT&CK technique ids (`attack.t1505.004` → `T1505.004`) and tactic names
/// (`attack.persistence`) from `tags`.
fn tags(doc: &Node) -> Result<(Vec<String>, Vec<String>), Problem> {
    let mut mitre = Vec::new();
    let mut tactics = Vec::new();
    let Some(node) = doc.get("tags") else { return Ok((mitre, tactics)) };
    let Value::Seq(items) = &node.value else { return problem(node.pos, refusal!(Invalid, "`tags` must be a list")) };
    for item in items {
        let Some(tag) = item.as_str() else { return problem(item.pos, refusal!(Invalid, "a tag must be a string")) };
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

/// A `detection` block (or a filter's `filter` block, whose `skip` keys are not
/// selections).
fn detection(node: &Node, skip: &[&str], catalog: &mut FieldCatalog) -> Result<Expr, Problem> {
    let Some(entries) = node.as_map() else {
        return problem(node.pos, refusal!(Invalid, "`detection` must be a mapping"));
    };
    let mut selections = Vec::new();
    let mut condition_node = None;
    for (key, value) in entries {
        match key.text.as_str() {
            "condition" => condition_node = Some(value),
            "timeframe" => {
                return problem(
                    key.pos,
                    refusal!(Unsupported, "`timeframe` needs state across records and is not supported"),
                );
            }
            name if skip.contains(&name) => {}
            name => selections.push((name.to_string(), selection(value, catalog)?)),
        }
    }
    let Some(cond) = condition_node else {
        return problem(node.pos, refusal!(Invalid, "`detection` has no `condition`"));
    };
    let texts: Vec<&Node> = match &cond.value {
        Value::Seq(items) => items.iter().collect(),
        _ => vec![cond],
    };
    let mut alternatives = Vec::new();
    for text_node in texts {
        let Some(text) = text_node.as_str() else {
            return problem(text_node.pos, refusal!(Invalid, "`condition` must be a string or a list of strings"));
        };
        let located = |e: ConditionError| Problem {
            pos: text_node.pos,
            refusal: e.refusal.within(format_args!("condition, at character {}", e.offset + 1)),
        };
        let parsed = condition::parse(text).map_err(located)?;
        alternatives.push(condition::resolve(&parsed, &selections).map_err(located)?);
    }
    if alternatives.is_empty() {
        return problem(cond.pos, refusal!(Invalid, "`condition` is an empty list"));
    }
    Ok(Expr::or(alternatives))
}

fn selection(node: &Node, catalog: &mut FieldCatalog) -> Result<Expr, Problem> {
    match &node.value {
        Value::Map(entries) => {
            if entries.is_empty() {
                return problem(node.pos, refusal!(Invalid, "a selection must not be empty"));
            }
            let atoms = entries.iter().map(|(k, v)| field_test(k, v, catalog)).collect::<Result<Vec<_>, _>>()?;
            Ok(Expr::and(atoms))
        }
        Value::Seq(items) if !items.is_empty() && items.iter().all(|i| i.as_map().is_some()) => {
            let alts = items.iter().map(|i| selection(i, catalog)).collect::<Result<Vec<_>, _>>()?;
            Ok(Expr::or(alts))
        }
        // A list of plain values, or one: keywords, searched for in the whole record.
        Value::Seq(items) if !items.is_empty() && items.iter().all(|i| matches!(i.value, Value::Scalar(_))) => {
            keyword_test(node, &Modifiers::default(), catalog)
        }
        Value::Scalar(Scalar::Str(_) | Scalar::Int(_)) => keyword_test(node, &Modifiers::default(), catalog),
        _ => problem(
            node.pos,
            refusal!(Invalid, "a selection must be a mapping of fields, a list of such mappings, or keywords"),
        ),
    }
}

/// Keywords: each value (with Sigma wildcards) is looked for in every string and number
/// of the record, at any depth (the specification's "search across the entire event").
fn keyword_test(values: &Node, mods: &Modifiers, catalog: &mut FieldCatalog) -> Result<Expr, Problem> {
    let field = catalog.keywords();
    let mut mods = mods.clone();
    if mods.re.is_none() && mods.op.is_none() {
        mods.op = Some(TextOp::Contains);
    }
    // `|all`: every keyword somewhere in the record (not all in one value).
    if std::mem::take(&mut mods.all) {
        if let Value::Seq(items) = &values.value {
            let each = items.iter().map(|v| keyword_atom(field, v, &mods, catalog)).collect::<Result<Vec<_>, _>>()?;
            return Ok(Expr::and(each));
        }
    }
    keyword_atom(field, values, &mods, catalog)
}

fn keyword_atom(field: FieldId, values: &Node, mods: &Modifiers, catalog: &mut FieldCatalog) -> Result<Expr, Problem> {
    Ok(match test_of(field, values, mods, catalog)? {
        Expr::Atom(atom) => Expr::Atom(atom.keyword()),
        other => other,
    })
}

fn field_test(key: &Key, value: &Node, catalog: &mut FieldCatalog) -> Result<Expr, Problem> {
    let (name, mods) = modifiers::parse(&key.text).map_err(|refusal| Problem { pos: key.pos, refusal })?;
    if name.is_empty() {
        return keyword_test(value, &mods, catalog);
    }
    if name.len() > crate::fields::MAX_KEY_BYTES {
        return problem(
            key.pos,
            refusal!(Unsupported, "field names longer than {} bytes are not supported", crate::fields::MAX_KEY_BYTES),
        );
    }
    let field = catalog.intern(&name);
    test_of(field, value, &mods, catalog)
}

/// The test of `field` against the value(s) in `value`; `neq` negates the whole of it.
fn test_of(field: FieldId, value: &Node, mods: &Modifiers, catalog: &mut FieldCatalog) -> Result<Expr, Problem> {
    let kind = catalog.kind(field);
    let values: Vec<&Node> = match &value.value {
        Value::Seq(items) if items.is_empty() => {
            return problem(value.pos, refusal!(Invalid, "an empty list of values matches nothing"));
        }
        Value::Seq(items) => items.iter().collect(),
        Value::Map(_) => {
            return problem(
                value.pos,
                refusal!(Invalid, "a field value must be a value or a list of values, not a mapping"),
            );
        }
        Value::Scalar(_) => vec![value],
    };
    let mut matchers = Vec::with_capacity(values.len());
    for v in values {
        let Value::Scalar(scalar) = &v.value else {
            return problem(v.pos, refusal!(Invalid, "a list of values must hold plain values"));
        };
        let matcher =
            modifiers::value_matcher(scalar, mods, kind, catalog).map_err(|refusal| Problem { pos: v.pos, refusal })?;
        matchers.push(matcher);
    }
    let atom = Expr::Atom(Atom::new(field, matchers, mods.all));
    Ok(if mods.neq { Expr::Not(Box::new(atom)) } else { atom })
}
