//! Sigma `condition` expressions: parsing and resolution against the selections.
//!
//! Grammar (Sigma specification v2, precedence from loosest to tightest):
//! `or` < `and` < `not` < `1 of` / `all of` < parentheses. Identifiers name selections;
//! in `1 of` / `all of` they may carry `*` wildcards, and `them` means every selection
//! whose name does not start with `_`. An aggregation (`| count() > 5`) is refused: it
//! needs state across records, which this tagger does not keep.

use crate::rules::error::{Refusal, refusal};
use crate::rules::expr::Expr;

/// A parse or resolution error, with the byte offset in the condition text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConditionError {
    /// Byte offset in the condition.
    pub offset: usize,
    /// What is wrong.
    pub refusal: Refusal,
}

/// Parsed condition, before selections are resolved.
#[derive(Debug, Clone, PartialEq)]
pub enum Cond {
    /// `a and b`
    And(Box<Cond>, Box<Cond>),
    /// `a or b`
    Or(Box<Cond>, Box<Cond>),
    /// `not a`
    Not(Box<Cond>),
    /// A selection name.
    Ident(String, usize),
    /// `1 of pattern` (`None` = `them`).
    OneOf(Option<String>, usize),
    /// `all of pattern` (`None` = `them`).
    AllOf(Option<String>, usize),
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Open,
    Close,
    Word(String),
}

fn tokenize(text: &str) -> Result<Vec<(Tok, usize)>, ConditionError> {
    let mut toks = Vec::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        match c {
            b' ' | b'\t' | b'\n' | b'\r' => i += 1,
            b'(' => {
                toks.push((Tok::Open, i));
                i += 1;
            }
            b')' => {
                toks.push((Tok::Close, i));
                i += 1;
            }
            b'|' => {
                return Err(ConditionError {
                    offset: i,
                    refusal: refusal!(
                        Unsupported,
                        "aggregations (`| count() ...`) are not supported: they need state across records"
                    ),
                });
            }
            _ if c.is_ascii_alphanumeric() || matches!(c, b'_' | b'*' | b'-' | b'.') => {
                let start = i;
                while i < bytes.len()
                    && (bytes[i].is_ascii_alphanumeric() || matches!(bytes[i], b'_' | b'*' | b'-' | b'.'))
                {
                    i += 1;
                }
                toks.push((Tok::Word(text[start..i].to_string()), start));
            }
            _ => {
                let ch = text[i..].chars().next().unwrap_or('?');
                return Err(ConditionError { offset: i, refusal: refusal!(Invalid, "unexpected character `{ch}`") });
            }
        }
    }
    Ok(toks)
}

struct Parser {
    toks: Vec<(Tok, usize)>,
    at: usize,
    end: usize,
    depth: usize,
}

const MAX_DEPTH: usize = 128;

fn is_kw(tok: Option<&Tok>, kw: &str) -> bool {
    matches!(tok, Some(Tok::Word(w)) if w.eq_ignore_ascii_case(kw))
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.at).map(|(t, _)| t)
    }

    fn offset(&self) -> usize {
        self.toks.get(self.at).map_or(self.end, |(_, o)| *o)
    }

    fn err<T>(&self, refusal: Refusal) -> Result<T, ConditionError> {
        Err(ConditionError { offset: self.offset(), refusal })
    }

    fn or(&mut self) -> Result<Cond, ConditionError> {
        let mut left = self.and()?;
        while is_kw(self.peek(), "or") {
            self.at += 1;
            left = Cond::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Cond, ConditionError> {
        let mut left = self.not()?;
        while is_kw(self.peek(), "and") {
            self.at += 1;
            left = Cond::And(Box::new(left), Box::new(self.not()?));
        }
        Ok(left)
    }

    fn not(&mut self) -> Result<Cond, ConditionError> {
        if is_kw(self.peek(), "not") {
            self.at += 1;
            self.descend()?;
            let inner = self.not()?;
            self.depth -= 1;
            return Ok(Cond::Not(Box::new(inner)));
        }
        self.primary()
    }

    fn descend(&mut self) -> Result<(), ConditionError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return self.err(refusal!(Invalid, "condition nests deeper than 128 levels"));
        }
        Ok(())
    }

    fn primary(&mut self) -> Result<Cond, ConditionError> {
        let offset = self.offset();
        match self.peek().cloned() {
            Some(Tok::Open) => {
                self.at += 1;
                self.descend()?;
                let inner = self.or()?;
                self.depth -= 1;
                if self.peek() != Some(&Tok::Close) {
                    return self.err(refusal!(Invalid, "expected `)`"));
                }
                self.at += 1;
                Ok(inner)
            }
            Some(Tok::Word(w)) => {
                self.at += 1;
                if is_kw(self.peek(), "of") {
                    self.at += 1;
                    let target = match self.peek().cloned() {
                        Some(Tok::Word(t)) if t.eq_ignore_ascii_case("them") => None,
                        Some(Tok::Word(t)) if !is_keyword(&t) => Some(t),
                        _ => return self.err(refusal!(Invalid, "expected a selection pattern or `them` after `of`")),
                    };
                    self.at += 1;
                    return match w.to_ascii_lowercase().as_str() {
                        "1" | "any" => Ok(Cond::OneOf(target, offset)),
                        "all" => Ok(Cond::AllOf(target, offset)),
                        _ => Err(ConditionError {
                            offset,
                            refusal: refusal!(Unsupported, "`{w} of` is not supported: use `1 of` or `all of`"),
                        }),
                    };
                }
                if is_keyword(&w) {
                    return Err(ConditionError { offset, refusal: refusal!(Invalid, "unexpected `{w}`") });
                }
                Ok(Cond::Ident(w, offset))
            }
            Some(Tok::Close) => self.err(refusal!(Invalid, "unexpected `)`")),
            None => self.err(refusal!(Invalid, "the condition ends too early")),
        }
    }
}

fn is_keyword(w: &str) -> bool {
    ["and", "or", "not", "of", "them", "all"].iter().any(|k| w.eq_ignore_ascii_case(k))
}

/// Parses a condition.
pub fn parse(text: &str) -> Result<Cond, ConditionError> {
    let toks = tokenize(text)?;
    let mut p = Parser { toks, at: 0, end: text.len(), depth: 0 };
    let cond = p.or()?;
    if p.at != p.toks.len() {
        return p.err(refusal!(Invalid, "unexpected text after the end of the condition"));
    }
    Ok(cond)
}

/// Does `name` match a pattern with `*` wildcards?
fn name_matches(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == name;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !name.starts_with(first) || name.len() < first.len() + last.len() || !name.ends_with(last) {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    true
}

/// Replaces selection names by their compiled expressions.
pub fn resolve(cond: &Cond, selections: &[(String, Expr)]) -> Result<Expr, ConditionError> {
    let pick = |pattern: &Option<String>, offset: usize| -> Result<Vec<Expr>, ConditionError> {
        let chosen: Vec<Expr> = selections
            .iter()
            .filter(|(name, _)| match pattern {
                None => !name.starts_with('_'),
                Some(p) => name_matches(p, name),
            })
            .map(|(_, e)| e.clone())
            .collect();
        if chosen.is_empty() {
            let what = pattern.as_deref().unwrap_or("them");
            return Err(ConditionError { offset, refusal: refusal!(Invalid, "`{what}` matches no selection") });
        }
        Ok(chosen)
    };
    Ok(match cond {
        Cond::And(a, b) => Expr::and(vec![resolve(a, selections)?, resolve(b, selections)?]),
        Cond::Or(a, b) => Expr::or(vec![resolve(a, selections)?, resolve(b, selections)?]),
        Cond::Not(a) => Expr::Not(Box::new(resolve(a, selections)?)),
        Cond::Ident(name, offset) => match selections.iter().find(|(n, _)| n == name) {
            Some((_, e)) => e.clone(),
            None => {
                return Err(ConditionError {
                    offset: *offset,
                    refusal: refusal!(Invalid, "no selection named `{name}`"),
                });
            }
        },
        Cond::OneOf(p, offset) => Expr::or(pick(p, *offset)?),
        Cond::AllOf(p, offset) => Expr::and(pick(p, *offset)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn show(c: &Cond) -> String {
        match c {
            Cond::And(a, b) => format!("({} and {})", show(a), show(b)),
            Cond::Or(a, b) => format!("({} or {})", show(a), show(b)),
            Cond::Not(a) => format!("(not {})", show(a)),
            Cond::Ident(n, _) => n.clone(),
            Cond::OneOf(p, _) => format!("1of:{}", p.as_deref().unwrap_or("them")),
            Cond::AllOf(p, _) => format!("allof:{}", p.as_deref().unwrap_or("them")),
        }
    }

    #[test]
    fn precedence_follows_the_specification() {
        let cases = [
            ("a or b and c", "(a or (b and c))"),
            ("a and b or c", "((a and b) or c)"),
            ("not a and b", "((not a) and b)"),
            ("not (a and b)", "(not (a and b))"),
            ("a and not b or not c", "((a and (not b)) or (not c))"),
            ("1 of sel* and not 1 of filter*", "(1of:sel* and (not 1of:filter*))"),
            ("all of them", "allof:them"),
            ("((a))", "a"),
            ("A AND NOT b", "(A and (not b))"),
        ];
        for (text, want) in cases {
            assert_eq!(show(&parse(text).expect(text)), want, "{text}");
        }
    }

    #[test]
    fn errors_carry_an_offset() {
        for (text, offset) in [
            ("a and", 5),
            ("(a", 2),
            ("a)", 1),
            ("sel | count() > 4", 4),
            ("2 of sel*", 0),
            ("a b", 2),
            ("a # b", 2),
            ("", 0),
        ] {
            let e = parse(text).expect_err(text);
            assert_eq!(e.offset, offset, "{text}: {}", e.refusal);
        }
    }

    #[test]
    fn wildcard_names() {
        assert!(name_matches("sel*", "selection"));
        assert!(name_matches("*_img", "sel_img"));
        assert!(name_matches("s*l*n", "selection"));
        assert!(!name_matches("sel*", "filter"));
        assert!(!name_matches("ab*ba", "aba"));
    }

    #[test]
    fn resolution_refuses_unknown_names() {
        let sels = vec![("sel".to_string(), Expr::Const(true)), ("_hidden".to_string(), Expr::Const(false))];
        assert!(resolve(&parse("nope").expect("parses"), &sels).is_err());
        assert!(resolve(&parse("1 of filter*").expect("parses"), &sels).is_err());
        let them = resolve(&parse("all of them").expect("parses"), &sels).expect("resolves");
        assert!(matches!(them, Expr::Const(true)), "`them` skips names starting with `_`: {them:?}");
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let text = format!("{}a{}", "(".repeat(10_000), ")".repeat(10_000));
        assert!(parse(&text).is_err());
        let text = format!("{}a", "not ".repeat(10_000));
        assert!(parse(&text).is_err());
    }
}
