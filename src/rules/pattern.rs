//! One value of a rule, compiled: what an event value must look like to match it.
//!
//! String values are compared against the event value's *compare form* (canonical for
//! its field kind, then case-folded; see [`crate::normalize`]), unless the rule asked for
//! `cased`. Sigma wildcards `*` and `?` are honoured; a pattern is classified once into
//! equality / prefix / suffix / substring / general glob, and the general glob is matched
//! segment by segment, leftmost first, which is linear in the value for `*`-only globs
//! and never backtracks.
//!
//! Which fragments of text *any* value a pattern matches must contain is derived by the
//! prefilter (`prefilter::fragments`), from the tokens of each form
//! ([`StrPattern::form_tokens`]); this module does not know the prefilter.

use memchr::memmem;
use regex::{Regex, RegexBuilder};

use crate::normalize::{FieldKind, Reading, canonical, compare_form, has_compatibility_forms, lower_into, path};
use crate::rules::error::{Refusal, refusal};

/// A piece of a wildcard pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Token {
    /// Literal text.
    Lit(String),
    /// `?`: exactly one character.
    One,
    /// `*`: any run of characters.
    Star,
}

/// Parses Sigma value syntax into tokens: `*` and `?` are wildcards, `\*`, `\?` and
/// `\\` escape them (and the backslash); a backslash before anything else is literal.
pub fn tokenize(value: &str) -> Vec<Token> {
    let mut tokens = Vec::new();
    let mut lit = String::new();
    let mut chars = value.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.peek() {
                Some(&next @ ('*' | '?' | '\\')) => {
                    lit.push(next);
                    chars.next();
                }
                _ => lit.push('\\'),
            },
            '*' | '?' => {
                if !lit.is_empty() {
                    tokens.push(Token::Lit(std::mem::take(&mut lit)));
                }
                let token = if c == '*' { Token::Star } else { Token::One };
                if !(token == Token::Star && tokens.last() == Some(&Token::Star)) {
                    tokens.push(token);
                }
            }
            _ => lit.push(c),
        }
    }
    if !lit.is_empty() {
        tokens.push(Token::Lit(lit));
    }
    tokens
}

/// How a string pattern compares, after classification.
#[derive(Clone, Debug)]
enum StrOp {
    Equals(String),
    Prefix(String),
    Suffix(String),
    Contains(Box<memmem::Finder<'static>>),
    Glob(Glob),
}

/// A compiled string pattern: its form in each reading (see [`Reading`]). The logged form
/// is the rule's text lower-cased; the resolved form its canonical, folded form. A value
/// whose text holds compatibility characters has no resolved form (it is about those
/// characters: resolved, `ˣ` would be any `x`).
#[derive(Clone, Debug)]
pub struct StrPattern {
    logged: Option<Form>,
    resolved: Option<Form>,
    /// Compare with the case-preserving forms instead of the folded ones.
    cased: bool,
}

/// One form of a string pattern.
#[derive(Clone, Debug)]
struct Form {
    op: StrOp,
    /// For path fields, a suffix `\name` also matches a value that is just `name`
    /// (a bare file name ends with its own last component).
    bare_name: Option<String>,
    tokens: Vec<Token>,
}

impl Form {
    fn new(tokens: Vec<Token>, kind: FieldKind) -> Form {
        let op = match tokens.as_slice() {
            [] => StrOp::Equals(String::new()),
            [Token::Star] => StrOp::Glob(Glob::new(&tokens)),
            [Token::Lit(l)] => StrOp::Equals(l.clone()),
            [Token::Lit(l), Token::Star] => StrOp::Prefix(l.clone()),
            [Token::Star, Token::Lit(l)] => StrOp::Suffix(l.clone()),
            [Token::Star, Token::Lit(l), Token::Star] => {
                StrOp::Contains(Box::new(memmem::Finder::new(l.as_bytes()).into_owned()))
            }
            _ => StrOp::Glob(Glob::new(&tokens)),
        };
        let bare_name = match (&op, kind) {
            (StrOp::Suffix(s), FieldKind::Path) if s.len() > 1 && s.starts_with('\\') => Some(s[1..].to_string()),
            _ => None,
        };
        Form { op, bare_name, tokens }
    }

    fn matches(&self, value: &str) -> bool {
        let hit = match &self.op {
            StrOp::Equals(s) => value == s,
            StrOp::Prefix(s) => value.starts_with(s.as_str()),
            StrOp::Suffix(s) => value.ends_with(s.as_str()),
            StrOp::Contains(f) => f.find(value.as_bytes()).is_some(),
            StrOp::Glob(g) => g.matches(value),
        };
        hit || self.bare_name.as_deref() == Some(value)
    }
}

impl StrPattern {
    /// Compiles the forms (tokens already in each reading's form) for a field of `kind`.
    pub fn new(logged: Option<Vec<Token>>, resolved: Option<Vec<Token>>, kind: FieldKind, cased: bool) -> StrPattern {
        StrPattern { logged: logged.map(|t| Form::new(t, kind)), resolved: resolved.map(|t| Form::new(t, kind)), cased }
    }

    /// Does `value` (the reading's folded form, or its case-kept form when `cased`) match?
    pub fn matches(&self, value: &str, reading: Reading) -> bool {
        let form = match reading {
            Reading::Logged => &self.logged,
            Reading::Resolved => &self.resolved,
        };
        form.as_ref().is_some_and(|f| f.matches(value))
    }

    /// Whether the case-preserving form is compared.
    pub fn cased(&self) -> bool {
        self.cased
    }

    fn forms(&self) -> impl Iterator<Item = &Form> {
        self.logged.iter().chain(&self.resolved)
    }

    /// The tokens of each form (as logged, then resolved): the ways a value can match.
    pub fn form_tokens(&self) -> impl Iterator<Item = &[Token]> {
        self.forms().map(|f| f.tokens.as_slice())
    }
}

/// A general wildcard pattern: segments separated by `*`, each of literal characters
/// and `?`. Matched greedily leftmost, segment by segment, which is exact for globs.
#[derive(Clone, Debug)]
struct Glob {
    /// Segments in order (`None` is `?`). The first is anchored at the start and the last
    /// at the end; a leading or trailing `*` makes that segment empty.
    segments: Vec<Vec<Option<char>>>,
    /// The same segments as UTF-8, when there is no `?`: then a match over the value's
    /// bytes is a match over its characters (in UTF-8 a character's encoding is found only
    /// at a character boundary), with no decoding, no copy, and a substring search for each
    /// middle segment — a value of a million non-ASCII characters costs one pass.
    bytes: Option<Vec<Vec<u8>>>,
}

impl Glob {
    fn new(tokens: &[Token]) -> Glob {
        let mut segments = vec![Vec::new()];
        for token in tokens {
            match token {
                Token::Lit(l) => segments.last_mut().expect("non-empty").extend(l.chars().map(Some)),
                Token::One => segments.last_mut().expect("non-empty").push(None),
                Token::Star => segments.push(Vec::new()),
            }
        }
        let bytes = segments
            .iter()
            .all(|seg| seg.iter().all(Option::is_some))
            .then(|| segments.iter().map(|seg| seg.iter().flatten().collect::<String>().into_bytes()).collect());
        Glob { segments, bytes }
    }

    fn matches(&self, value: &str) -> bool {
        if let Some(segments) = &self.bytes {
            return matches_bytes(segments, value.as_bytes());
        }
        if value.is_ascii() {
            // One byte, one character: no decoding.
            return self.matches_units(value.as_bytes(), |p, b| p == char::from(*b));
        }
        self.matches_chars(value)
    }

    /// The match over a value's characters, decoded where a segment is tried (no copy of
    /// the value: an attacker's value may be megabytes of expanded text).
    fn matches_chars(&self, value: &str) -> bool {
        let n = self.segments.len();
        if n == 1 {
            return seg_at_str(&self.segments[0], value, 0) == Some(value.len());
        }
        let Some(mut pos) = seg_at_str(&self.segments[0], value, 0) else { return false };
        // The last segment starts as many characters before the end as it holds.
        let last = &self.segments[n - 1];
        let mut end = value.len();
        for _ in 0..last.len() {
            if end <= pos {
                return false;
            }
            end = value[..end].char_indices().next_back().map_or(0, |(i, _)| i);
        }
        if seg_at_str(last, value, end).is_none() {
            return false;
        }
        let before_last = &value[..end];
        for seg in &self.segments[1..n - 1] {
            if seg.is_empty() {
                continue;
            }
            // The leftmost match at or after `pos` that ends by `end`.
            let found = before_last[pos..].char_indices().find_map(|(at, _)| seg_at_str(seg, before_last, pos + at));
            match found {
                Some(next) => pos = next,
                None => return false,
            }
        }
        pos <= end
    }

    /// The match over a value as a slice of characters (`eq` compares a pattern character).
    fn matches_units<T>(&self, chars: &[T], eq: impl Fn(char, &T) -> bool + Copy) -> bool {
        let seg_at = |seg: &[Option<char>], at: usize| seg_at(seg, chars, at, eq);
        let n = self.segments.len();
        if n == 1 {
            return seg_at(&self.segments[0], 0) == Some(chars.len());
        }
        // First segment anchored at the start, last anchored at the end.
        let Some(mut pos) = seg_at(&self.segments[0], 0) else { return false };
        let last = &self.segments[n - 1];
        if last.len() > chars.len() - pos {
            return false;
        }
        let end = chars.len() - last.len();
        if seg_at(last, end).is_none() {
            return false;
        }
        for seg in &self.segments[1..n - 1] {
            // The leftmost match at or after `pos` that ends by `end`.
            let Some(last_start) = end.checked_sub(seg.len()) else { return false };
            match (pos..=last_start).find_map(|at| seg_at(seg, at)) {
                Some(next) => pos = next,
                None => return false,
            }
        }
        pos <= end
    }
}

/// A glob without `?` ([`Glob::bytes`]) over a value's bytes: the first segment anchored at
/// the start, the last at the end, each middle one found leftmost after the one before.
fn matches_bytes(segments: &[Vec<u8>], value: &[u8]) -> bool {
    let n = segments.len();
    if n == 1 {
        return value == segments[0].as_slice();
    }
    let (first, last) = (&segments[0], &segments[n - 1]);
    if first.len() + last.len() > value.len() || !value.starts_with(first) || !value.ends_with(last) {
        return false;
    }
    let (mut pos, end) = (first.len(), value.len() - last.len());
    for seg in &segments[1..n - 1] {
        match memchr::memmem::find(&value[pos..end], seg) {
            Some(k) => pos += k + seg.len(),
            None => return false,
        }
    }
    true
}

/// If `seg` matches `value` at byte `at` (a character boundary), the byte after it.
fn seg_at_str(seg: &[Option<char>], value: &str, at: usize) -> Option<usize> {
    let mut chars = value[at..].chars();
    for p in seg {
        let c = chars.next()?;
        if p.is_some_and(|p| p != c) {
            return None;
        }
    }
    Some(value.len() - chars.as_str().len())
}

/// If `seg` matches `chars` at `at`, the index after it.
fn seg_at<T>(seg: &[Option<char>], chars: &[T], at: usize, eq: impl Fn(char, &T) -> bool) -> Option<usize> {
    let window = chars.get(at..at + seg.len())?;
    seg.iter().zip(window).all(|(p, c)| p.is_none_or(|p| eq(p, c))).then_some(at + seg.len())
}

/// A compiled rule value.
#[derive(Clone, Debug)]
pub enum Matcher {
    /// A string (with Sigma wildcards).
    Str(StrPattern),
    /// An integer: equal to a JSON integer, or to a string holding that integer.
    Int(i64),
    /// A regular expression (linear-time engine), matched against the canonical value.
    Regex(Box<RegexPattern>),
    /// `null`: the field is absent or JSON null.
    Null,
    /// Any of these (spellings of one rule value: 8.3 short names, `windash`, the three
    /// `base64offset` forms).
    Any(Vec<Matcher>),
    /// `exists`: the field is present (`true`, even when null) or absent (`false`).
    Exists(bool),
    /// `lt` / `lte` / `gt` / `gte`: the value is a number (or a string holding one) that
    /// compares so with this one.
    Compare(Compare, f64),
    /// `cidr`: the value is an IP address in this network.
    Cidr(Cidr),
    /// `fieldref`: the value equals (or contains, starts or ends with) a value of another
    /// field of the same record, compared in folded form.
    FieldRef {
        /// The other field.
        field: crate::fields::FieldId,
        /// `contains` / `startswith` / `endswith`, or equality.
        op: Option<TextOp>,
    },
}

/// A numeric comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compare {
    /// `lt`
    Lt,
    /// `lte`
    Lte,
    /// `gt`
    Gt,
    /// `gte`
    Gte,
}

impl Compare {
    /// Whether `value` compares so with `bound`.
    pub fn holds(self, value: f64, bound: f64) -> bool {
        match self {
            Compare::Lt => value < bound,
            Compare::Lte => value <= bound,
            Compare::Gt => value > bound,
            Compare::Gte => value >= bound,
        }
    }
}

/// `contains`, `startswith`, `endswith`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TextOp {
    /// `contains`
    Contains,
    /// `startswith`
    StartsWith,
    /// `endswith`
    EndsWith,
}

impl TextOp {
    /// Whether `value` relates so to `other`.
    pub fn holds(op: Option<TextOp>, value: &str, other: &str) -> bool {
        match op {
            None => value == other,
            Some(TextOp::Contains) => value.contains(other),
            Some(TextOp::StartsWith) => value.starts_with(other),
            Some(TextOp::EndsWith) => value.ends_with(other),
        }
    }
}

/// An IP network (`cidr`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    /// The address, as 128 bits (IPv4 in the low 32).
    addr: u128,
    prefix: u8,
    v6: bool,
}

impl Cidr {
    /// Parses `a.b.c.d/n` or `x:y::/n`; host bits set are refused, as the Sigma tools do.
    pub fn parse(text: &str) -> Result<Cidr, Refusal> {
        let (ip, prefix) = match text.trim().split_once('/') {
            Some((ip, p)) => (ip, Some(p)),
            None => (text.trim(), None),
        };
        let ip: std::net::IpAddr = ip.parse().map_err(|_| refusal!(Invalid, "`{text}` is not an IP network"))?;
        let (addr, bits, v6) = match ip {
            std::net::IpAddr::V4(a) => (u128::from(u32::from(a)), 32u8, false),
            std::net::IpAddr::V6(a) => (u128::from(a), 128u8, true),
        };
        let prefix = match prefix {
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|&p| p <= bits)
                .ok_or_else(|| refusal!(Invalid, "`{text}`: bad prefix length"))?,
            None => bits,
        };
        let net = Cidr { addr, prefix, v6 };
        if net.mask() & addr != addr {
            return Err(refusal!(Invalid, "`{text}` has host bits set"));
        }
        Ok(net)
    }

    fn mask(self) -> u128 {
        let bits = if self.v6 { 128 } else { 32 };
        if self.prefix == 0 {
            0
        } else {
            (u128::MAX << (bits - u32::from(self.prefix))) & if self.v6 { u128::MAX } else { u128::from(u32::MAX) }
        }
    }

    /// Whether the text is an address in the network (an IPv4-mapped IPv6 address counts
    /// as its IPv4 address).
    pub fn contains(self, text: &str) -> bool {
        let Ok(ip) = text.trim().parse::<std::net::IpAddr>() else { return false };
        let (addr, v6) = match ip {
            std::net::IpAddr::V4(a) => (u128::from(u32::from(a)), false),
            std::net::IpAddr::V6(a) => match a.to_ipv4_mapped() {
                Some(v4) => (u128::from(u32::from(v4)), false),
                None => (u128::from(a), true),
            },
        };
        v6 == self.v6 && addr & self.mask() == self.addr
    }
}

/// Largest compiled size allowed for one rule regex (bounds memory and start-up time;
/// `\w{1,64}`, Unicode-aware, needs a few MiB).
pub const REGEX_SIZE_LIMIT: usize = 16 << 20;

/// A compiled `re` value and the flags it was built with.
#[derive(Clone, Debug)]
pub struct RegexPattern {
    /// The compiled expression.
    pub re: Regex,
    /// Its flags (the prefilter must read the pattern with the same ones).
    pub flags: RegexFlags,
}

/// Flags of the Sigma `re` modifier.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RegexFlags {
    /// `i`: case-insensitive.
    pub ignore_case: bool,
    /// `m`: `^`/`$` match at line breaks.
    pub multi_line: bool,
    /// `s`: `.` matches a line break.
    pub dot_all: bool,
}

impl Matcher {
    /// A string pattern for a field of `kind`, from Sigma value syntax. On path fields a
    /// whole file or folder name that has an 8.3 short form also matches in that form
    /// (`\powershell.exe` matches `\POWERS~1.EXE`).
    pub fn string(tokens: Vec<Token>, kind: FieldKind, cased: bool) -> Matcher {
        let logged: Vec<Token> = tokens
            .iter()
            .map(|t| match t {
                Token::Lit(l) if cased => Token::Lit(l.clone()),
                Token::Lit(l) => {
                    let mut lower = String::with_capacity(l.len());
                    lower_into(l, &mut lower);
                    Token::Lit(lower)
                }
                other => other.clone(),
            })
            .collect();
        let about_compatibility = tokens.iter().any(|t| matches!(t, Token::Lit(l) if has_compatibility_forms(l)));
        let resolved: Option<Vec<Token>> = (!about_compatibility).then(|| {
            tokens
                .into_iter()
                .map(|t| match t {
                    Token::Lit(l) if cased => Token::Lit(canonical(kind, &l)),
                    Token::Lit(l) => Token::Lit(compare_form(kind, &l)),
                    other => other,
                })
                .collect()
        });
        let variants = match &resolved {
            Some(r) if kind == FieldKind::Path && !cased => {
                let mut v = short_name_variants(r);
                v.extend(short_extension_variant(r));
                v
            }
            _ => Vec::new(),
        };
        let first = Matcher::Str(StrPattern::new(Some(logged), resolved, kind, cased));
        if variants.is_empty() {
            return first;
        }
        // Short names are how Windows may name a file: resolved reading only.
        let mut all = vec![first];
        all.extend(variants.into_iter().map(|t| Matcher::Str(StrPattern::new(None, Some(t), kind, cased))));
        Matcher::Any(all)
    }

    /// The needles (compare form) of a value that is plain, case-insensitive `contains`
    /// through and through (itself, or alternatives that all are), or `None`.
    pub fn plain_contains(&self) -> Option<Vec<&str>> {
        match self {
            // The same needle in both readings.
            Matcher::Str(StrPattern { logged: Some(a), resolved: Some(b), cased: false }) => match (&a.op, &b.op) {
                (StrOp::Contains(fa), StrOp::Contains(fb)) if fa.needle() == fb.needle() => {
                    Some(vec![std::str::from_utf8(fb.needle()).ok()?])
                }
                _ => None,
            },
            Matcher::Any(alternatives) => {
                let per: Option<Vec<Vec<&str>>> = alternatives.iter().map(Matcher::plain_contains).collect();
                per.map(|p| p.into_iter().flatten().collect())
            }
            _ => None,
        }
    }

    /// Fields other than its own that a value reads (`fieldref`).
    pub fn referenced_fields(&self, out: &mut Vec<crate::fields::FieldId>) {
        match self {
            Matcher::Any(alternatives) => alternatives.iter().for_each(|m| m.referenced_fields(out)),
            Matcher::FieldRef { field, .. } => out.push(*field),
            _ => {}
        }
    }

    /// A regular expression; the error is the engine's message.
    pub fn regex(pattern: &str, flags: RegexFlags) -> Result<Matcher, Refusal> {
        RegexBuilder::new(pattern)
            .case_insensitive(flags.ignore_case)
            .multi_line(flags.multi_line)
            .dot_matches_new_line(flags.dot_all)
            .size_limit(REGEX_SIZE_LIMIT)
            .dfa_size_limit(REGEX_SIZE_LIMIT)
            .build()
            .map(|re| Matcher::Regex(Box::new(RegexPattern { re, flags })))
            .map_err(|e| {
                // The engine's message spans lines (pattern, caret, error); keep the error.
                let text = e.to_string();
                let error = text.lines().find_map(|l| l.strip_prefix("error: ")).unwrap_or(&text);
                refusal!(Invalid, "{error}")
            })
    }
}

/// The variants of a path pattern with whole names replaced by their 8.3 short forms (at
/// most eight, the first names first). A name is whole when separators, or the anchored
/// ends of the pattern, bound it on both sides.
fn short_name_variants(tokens: &[Token]) -> Vec<Vec<Token>> {
    // (token index, byte range in it, short form) of every whole name with a short form.
    let mut names = Vec::new();
    for (t, token) in tokens.iter().enumerate() {
        let Token::Lit(text) = token else { continue };
        let mut start = 0;
        for (i, part) in text.split('\\').enumerate() {
            let end = start + part.len();
            let left = i > 0 || t == 0;
            let right = end < text.len() || t + 1 == tokens.len();
            if left && right && !part.is_empty() {
                if let Some(short) = path::short_name(part) {
                    names.push((t, start..end, short));
                }
            }
            start = end + 1;
        }
    }
    names.truncate(3);
    let mut variants = Vec::new();
    for mask in 1u32..(1 << names.len()) {
        let mut out = tokens.to_vec();
        // Replace right to left so earlier byte ranges stay valid.
        for (k, (t, range, short)) in names.iter().enumerate().rev() {
            if mask & (1 << k) != 0 {
                if let Token::Lit(text) = &mut out[*t] {
                    text.replace_range(range.clone(), short);
                }
            }
        }
        variants.push(retokenize(out));
    }
    variants
}

/// The variant of a pattern ending in `*.ext` with an extension too long for 8.3 that
/// matches the short form of such names: `*.phtml` → `*~?.pht` (a short name is the first
/// six characters of the stem, `~N`, and three of the extension).
fn short_extension_variant(tokens: &[Token]) -> Option<Vec<Token>> {
    let [.., Token::Star, Token::Lit(last)] = tokens else { return None };
    let ext = last.strip_prefix('.')?;
    let valid = |c: char| c.is_ascii_alphanumeric() || "!#$%&'()-@^_`{}~".contains(c);
    if ext.len() <= 3 || !ext.chars().all(valid) {
        return None;
    }
    let mut out = tokens[..tokens.len() - 1].to_vec();
    out.push(Token::Lit(format!("~?.{}", &ext[..3])));
    Some(retokenize(out))
}

/// Splits the `?` of inserted short names out of literal tokens.
fn retokenize(tokens: Vec<Token>) -> Vec<Token> {
    let mut out = Vec::new();
    for token in tokens {
        match token {
            Token::Lit(text) if text.contains('?') => {
                for (i, piece) in text.split('?').enumerate() {
                    if i > 0 {
                        out.push(Token::One);
                    }
                    if !piece.is_empty() {
                        out.push(Token::Lit(piece.to_string()));
                    }
                }
            }
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    impl StrPattern {
        fn resolved_matches(&self, value: &str) -> bool {
            self.matches(value, Reading::Resolved)
        }
    }

    fn pat(value: &str) -> StrPattern {
        match Matcher::string(tokenize(value), FieldKind::Text, false) {
            Matcher::Str(p) => p,
            _ => unreachable!(),
        }
    }

    #[test]
    fn sigma_escapes() {
        assert_eq!(tokenize(r"a\*b"), vec![Token::Lit("a*b".into())]);
        // pySigma: `\*` is an escaped star, i.e. a literal `*`.
        assert_eq!(tokenize(r"C:\Windows\*"), vec![Token::Lit(r"C:\Windows*".into())]);
        assert_eq!(tokenize(r"C:\Windows\\*"), vec![Token::Lit(r"C:\Windows\".into()), Token::Star]);
        assert_eq!(tokenize("a**b"), vec![Token::Lit("a".into()), Token::Star, Token::Lit("b".into())]);
        assert_eq!(tokenize(r"\\server"), vec![Token::Lit(r"\server".into())]);
    }

    #[test]
    fn classified_patterns() {
        assert!(pat("AppCmd.exe").resolved_matches("appcmd.exe"));
        assert!(!pat("appcmd.exe").resolved_matches("xappcmd.exe"));
        assert!(pat("*install *").resolved_matches("appcmd install module"));
        assert!(pat(r"*\cmd.exe").resolved_matches(r"c:\windows\cmd.exe"));
        assert!(pat("c:*").resolved_matches("c:\\x"));
        assert!(pat("*").resolved_matches(""));
        assert!(pat("").resolved_matches(""));
        assert!(!pat("").resolved_matches("a"));
    }

    #[test]
    fn general_globs() {
        assert!(pat("a*b*c").resolved_matches("axxbyyc"));
        assert!(pat("a*b*c").resolved_matches("abc"));
        assert!(!pat("a*b*c").resolved_matches("acb"));
        assert!(pat("a?c").resolved_matches("abc"));
        assert!(!pat("a?c").resolved_matches("ac"));
        assert!(pat("*a?c*").resolved_matches("xxabcxx"));
        assert!(pat("ab*ab").resolved_matches("abab"));
        assert!(!pat("ab*ab").resolved_matches("aba"));
        assert!(pat("?*").resolved_matches("é"));
        assert!(pat("*.exe*x?z").resolved_matches("a.exe.exe-xyz"));
    }

    #[test]
    fn glob_agrees_with_naive_backtracking() {
        fn naive(p: &[char], v: &[char]) -> bool {
            match p.first() {
                None => v.is_empty(),
                Some('*') => (0..=v.len()).any(|i| naive(&p[1..], &v[i..])),
                Some('?') => !v.is_empty() && naive(&p[1..], &v[1..]),
                Some(c) => v.first() == Some(c) && naive(&p[1..], &v[1..]),
            }
        }
        // Patterns with and without `?` (matched over characters, or over bytes), values
        // with characters of two, three and four bytes (their own fold).
        let alphabet = ['a', 'é', '*', '?', '€'];
        let values = [
            "", "a", "é", "aé", "éa", "aaé", "aéaé", "ééaé", "aééa", "aaaa", "€", "a€é", "é€", "€a€", "ééé", "a𝄞é", "𝄞",
        ];
        for n in 0..5usize {
            for mut k in 0..alphabet.len().pow(n as u32) {
                let mut p = String::new();
                for _ in 0..n {
                    p.push(alphabet[k % alphabet.len()]);
                    k /= alphabet.len();
                }
                let pc: Vec<char> = p.chars().collect();
                for v in values {
                    let vc: Vec<char> = v.chars().collect();
                    assert_eq!(pat(&p).resolved_matches(v), naive(&pc, &vc), "pattern {p:?} value {v:?}");
                }
            }
        }
    }

    #[test]
    fn path_suffix_matches_bare_name() {
        let Matcher::Str(p) = Matcher::string(tokenize(r"*\AppCmd.exe"), FieldKind::Path, false) else {
            unreachable!()
        };
        assert!(p.resolved_matches(r"c:\windows\system32\inetsrv\appcmd.exe"));
        assert!(p.resolved_matches("appcmd.exe"));
        assert!(!p.resolved_matches("xappcmd.exe"));
    }

    fn matches(m: &Matcher, value: &str) -> bool {
        match m {
            Matcher::Str(p) => p.resolved_matches(value),
            Matcher::Any(all) => all.iter().any(|m| matches(m, value)),
            _ => unreachable!(),
        }
    }

    #[test]
    fn short_names_of_whole_path_names() {
        let m = Matcher::string(tokenize(r"*\powershell.exe"), FieldKind::Path, false);
        assert!(matches(&m, r"c:\windows\system32\windowspowershell\v1.0\powershell.exe"));
        assert!(matches(&m, r"c:\windows\system32\window~1\v1.0\powers~1.exe"));
        assert!(!matches(&m, r"c:\x\powers~1.dll"));
        let m = Matcher::string(tokenize(r"C:\Program Files\\*\trustedinstaller.exe"), FieldKind::Path, false);
        assert!(matches(&m, r"c:\progra~1\x\truste~2.exe"));
        assert!(matches(&m, r"c:\program files\x\truste~2.exe"));
        let m = Matcher::string(tokenize("*.phtml"), FieldKind::Path, false);
        assert!(matches(&m, r"c:\inetpub\wwwroot\index~1.pht") && matches(&m, r"c:\x\index.phtml"));
        assert!(!matches(&m, r"c:\x\index.pht"), "only a short name (with its ~N) stands for the long one");
        let partial = Matcher::string(tokenize(r"*\tomcat*"), FieldKind::Path, false);
        assert!(matches!(partial, Matcher::Str(_)), "a name cut by a wildcard has no known short form");
    }

    #[test]
    fn path_patterns_take_the_canonical_separator() {
        let Matcher::Str(p) = Matcher::string(tokenize("*/var/www/*"), FieldKind::Path, false) else { unreachable!() };
        assert!(p.resolved_matches(r"\var\www\html\x.php"));
    }
}
