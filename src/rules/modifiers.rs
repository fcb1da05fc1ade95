//! Sigma value modifiers (specification v2.1, appendix "Modifiers"): the `Field|mod|mod`
//! key, and what each value of the field becomes.
//!
//! Supported: `contains`, `startswith`, `endswith`, `all`, `cased`, `windash`, `re` (with
//! `i`, `m`, `s`), `base64`, `base64offset`, `utf16le` / `utf16be` / `utf16` / `wide` (before
//! a `base64*`), `cidr`, `exists`, `fieldref`, `neq`, `lt` / `lte` / `gt` / `gte`. Refused,
//! with the reason: `expand` (placeholders come from a pipeline), the time modifiers, and
//! combinations that would silently mean something else.

use crate::fields::FieldCatalog;
use crate::normalize::FieldKind;
use crate::rules::error::{Refusal, refusal};
use crate::rules::pattern::{Cidr, Compare, Matcher, RegexFlags, TextOp, Token, tokenize};
use crate::yaml::Scalar;

/// The text encodings applied before `base64` / `base64offset`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    /// `utf16le` / `wide`.
    Utf16Le,
    /// `utf16be`.
    Utf16Be,
    /// `utf16`: a little-endian byte-order mark, then UTF-16LE.
    Utf16,
}

/// Which base64 form.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Base64 {
    /// `base64`: the encoding of the value.
    Plain,
    /// `base64offset`: the three stable middles of its encodings at offsets 0, 1, 2.
    Offset,
}

/// The modifiers of one key.
#[derive(Clone, Debug, Default)]
pub struct Modifiers {
    /// `contains` / `startswith` / `endswith`.
    pub op: Option<TextOp>,
    /// `all`.
    pub all: bool,
    /// `cased`.
    pub cased: bool,
    /// `windash`.
    pub windash: bool,
    /// `re` and its flags.
    pub re: Option<RegexFlags>,
    /// `utf16*` / `wide`.
    pub encoding: Option<Encoding>,
    /// `base64` / `base64offset`.
    pub base64: Option<Base64>,
    /// `cidr`.
    pub cidr: bool,
    /// `exists`.
    pub exists: bool,
    /// `fieldref`.
    pub fieldref: bool,
    /// `neq`: the whole test is negated (a list: none of the values).
    pub neq: bool,
    /// `lt` / `lte` / `gt` / `gte`.
    pub compare: Option<Compare>,
}

const TIME_MODIFIERS: &[&str] = &["minute", "hour", "day", "week", "month", "year"];

/// Splits `Field|mod|...` into the field name (empty for a keyword search) and checked
/// modifiers; the error is a message for the user.
pub fn parse(key: &str) -> Result<(String, Modifiers), Refusal> {
    let mut parts = key.split('|');
    let field = parts.next().unwrap_or_default().trim().to_string();
    let mut m = Modifiers::default();
    for modifier in parts {
        let op = |op: TextOp, m: &mut Modifiers| match m.op.replace(op) {
            Some(_) => Err(refusal!(
                Invalid,
                "`{modifier}` cannot be combined with another of contains / startswith / endswith"
            )),
            None => Ok(()),
        };
        match modifier {
            "contains" => op(TextOp::Contains, &mut m)?,
            "startswith" => op(TextOp::StartsWith, &mut m)?,
            "endswith" => op(TextOp::EndsWith, &mut m)?,
            "all" => m.all = true,
            "cased" => m.cased = true,
            "windash" => m.windash = true,
            "re" => m.re = Some(RegexFlags::default()),
            "i" | "m" | "s" | "ignorecase" | "multiline" | "dotall" => {
                let Some(flags) = m.re.as_mut() else {
                    return Err(refusal!(Invalid, "`{modifier}` is a flag of `re` and must follow it"));
                };
                match modifier {
                    "i" | "ignorecase" => flags.ignore_case = true,
                    "m" | "multiline" => flags.multi_line = true,
                    _ => flags.dot_all = true,
                }
            }
            "utf16le" | "wide" | "utf16be" | "utf16" => {
                if m.base64.is_some() {
                    return Err(refusal!(
                        Invalid,
                        "`{modifier}` after `base64` would encode the base64 text itself; write it before"
                    ));
                }
                let e = match modifier {
                    "utf16be" => Encoding::Utf16Be,
                    "utf16" => Encoding::Utf16,
                    _ => Encoding::Utf16Le,
                };
                if m.encoding.replace(e).is_some() {
                    return Err(refusal!(Invalid, "only one of utf16le / utf16be / utf16 / wide"));
                }
            }
            "base64" | "base64offset" => {
                let b = if modifier == "base64" { Base64::Plain } else { Base64::Offset };
                if m.base64.replace(b).is_some() {
                    return Err(refusal!(Invalid, "only one of base64 / base64offset"));
                }
            }
            "cidr" => m.cidr = true,
            "exists" => m.exists = true,
            "fieldref" => m.fieldref = true,
            "neq" => m.neq = true,
            "lt" | "lte" | "gt" | "gte" => {
                let c = match modifier {
                    "lt" => Compare::Lt,
                    "lte" => Compare::Lte,
                    "gt" => Compare::Gt,
                    _ => Compare::Gte,
                };
                if m.compare.replace(c).is_some() {
                    return Err(refusal!(Invalid, "only one of lt / lte / gt / gte"));
                }
            }
            "expand" => {
                return Err(refusal!(
                    Unsupported,
                    "modifier `expand` needs placeholder values from a pipeline; not supported"
                ));
            }
            t if TIME_MODIFIERS.contains(&t) => {
                return Err(refusal!(
                    Unsupported,
                    "time modifier `{t}` is not supported: iis-tagger reads no timestamps"
                ));
            }
            other => return Err(refusal!(Unsupported, "unknown modifier `{other}`")),
        }
    }
    check(&m, field.is_empty())?;
    Ok((field, m))
}

/// Refuses the combinations that have no meaning (or another one than written).
fn check(m: &Modifiers, keyword: bool) -> Result<(), Refusal> {
    let with = |what: &str, others: &[(&str, bool)]| -> Result<(), Refusal> {
        match others.iter().find(|(_, on)| *on) {
            Some((name, _)) => Err(refusal!(Invalid, "`{what}` cannot be combined with `{name}`")),
            None => Ok(()),
        }
    };
    let base64 = m.base64.is_some();
    let text_op = m.op.is_some();
    if m.encoding.is_some() && !base64 {
        return Err(refusal!(
            Invalid,
            "utf16le / utf16be / utf16 / wide only make sense before base64 or base64offset"
        ));
    }
    if m.re.is_some() {
        with(
            "re",
            &[
                ("cased", m.cased),
                ("windash", m.windash),
                ("base64", base64),
                ("cidr", m.cidr),
                ("fieldref", m.fieldref),
                ("exists", m.exists),
                ("lt/lte/gt/gte", m.compare.is_some()),
            ],
        )?;
    }
    if m.cidr {
        with(
            "cidr",
            &[
                ("contains/startswith/endswith", text_op),
                ("cased", m.cased),
                ("windash", m.windash),
                ("base64", base64),
                ("fieldref", m.fieldref),
                ("exists", m.exists),
                ("lt/lte/gt/gte", m.compare.is_some()),
            ],
        )?;
    }
    if m.exists {
        with(
            "exists",
            &[
                ("contains/startswith/endswith", text_op),
                ("all", m.all),
                ("cased", m.cased),
                ("windash", m.windash),
                ("base64", base64),
                ("fieldref", m.fieldref),
                ("neq", m.neq),
                ("lt/lte/gt/gte", m.compare.is_some()),
            ],
        )?;
    }
    if m.compare.is_some() {
        with(
            "lt/lte/gt/gte",
            &[
                ("contains/startswith/endswith", text_op),
                ("cased", m.cased),
                ("windash", m.windash),
                ("base64", base64),
                ("fieldref", m.fieldref),
            ],
        )?;
    }
    if m.fieldref {
        with("fieldref", &[("cased", m.cased), ("windash", m.windash), ("base64", base64)])?;
    }
    if keyword {
        let refused = [
            ("exists", m.exists),
            ("cidr", m.cidr),
            ("fieldref", m.fieldref),
            ("lt/lte/gt/gte", m.compare.is_some()),
            ("neq", m.neq),
        ];
        if let Some((name, _)) = refused.iter().find(|(_, on)| *on) {
            return Err(refusal!(Invalid, "a keyword search (no field name) cannot take `{name}`"));
        }
    }
    Ok(())
}

/// The matcher one value of a field with modifiers `m` becomes; a `fieldref` names its
/// field in `catalog`.
pub fn value_matcher(
    value: &Scalar,
    m: &Modifiers,
    kind: FieldKind,
    catalog: &mut FieldCatalog,
) -> Result<Matcher, Refusal> {
    if m.exists {
        return match value {
            Scalar::Bool(b) => Ok(Matcher::Exists(*b)),
            _ => Err(refusal!(Invalid, "`exists` takes `true` or `false`")),
        };
    }
    if let Some(c) = m.compare {
        return match value {
            Scalar::Int(i) => Ok(Matcher::Compare(c, *i as f64)),
            Scalar::Float(f) if f.is_finite() => Ok(Matcher::Compare(c, *f)),
            _ => Err(refusal!(Invalid, "lt / lte / gt / gte compare with a number")),
        };
    }
    if matches!(value, Scalar::Null) {
        return if m.op.is_some() || m.re.is_some() || m.cased || m.base64.is_some() || m.cidr || m.fieldref || m.windash
        {
            Err(refusal!(Invalid, "`null` cannot take modifiers"))
        } else {
            Ok(Matcher::Null)
        };
    }
    let text = match value {
        Scalar::Null => unreachable!("handled above"),
        Scalar::Int(i)
            if m.op.is_none()
                && m.re.is_none()
                && !m.cased
                && m.base64.is_none()
                && !m.cidr
                && !m.fieldref
                && !m.windash =>
        {
            return Ok(Matcher::Int(*i));
        }
        Scalar::Int(i) => i.to_string(),
        Scalar::Float(f) => f.to_string(),
        Scalar::Bool(b) => b.to_string(),
        Scalar::Str(s) => s.clone(),
    };
    if m.cidr {
        return Cidr::parse(&text).map(Matcher::Cidr);
    }
    if m.fieldref {
        let name = text.trim();
        if name.is_empty() || name.len() > crate::fields::MAX_KEY_BYTES || name.contains('|') {
            return Err(refusal!(Invalid, "`{name}` is not a field name"));
        }
        return Ok(Matcher::FieldRef { field: catalog.intern(name), op: m.op });
    }
    if let Some(flags) = m.re {
        return Matcher::regex(&text, flags).map_err(|e| refusal!(Invalid, "bad regular expression `{text}`: {e}"));
    }
    let spellings = if m.windash { windash_variants(&text) } else { vec![text] };
    let mut alternatives = Vec::new();
    for spelling in &spellings {
        match m.base64 {
            None => alternatives.push(Matcher::string(wrap(tokenize(spelling), m.op), kind, m.cased)),
            Some(form) => {
                if tokenize(spelling).iter().any(|t| !matches!(t, Token::Lit(_))) {
                    return Err(refusal!(Invalid, "base64 of a value with wildcards cannot be matched"));
                }
                let bytes = encode(&plain_text(spelling), m.encoding);
                for encoded in base64_forms(&bytes, form)? {
                    alternatives.push(Matcher::string(wrap(vec![Token::Lit(encoded)], m.op), FieldKind::Text, m.cased));
                }
            }
        }
    }
    Ok(if alternatives.len() == 1 { alternatives.pop().expect("one") } else { Matcher::Any(alternatives) })
}

/// A value's text with Sigma's escapes removed (`\*` is `*`): what gets encoded.
fn plain_text(value: &str) -> String {
    tokenize(value)
        .into_iter()
        .map(|t| match t {
            Token::Lit(l) => l,
            Token::One => "?".into(),
            Token::Star => "*".into(),
        })
        .collect()
}

/// The bytes of `text` in `encoding` (UTF-8 without one).
fn encode(text: &str, encoding: Option<Encoding>) -> Vec<u8> {
    match encoding {
        None => text.as_bytes().to_vec(),
        Some(Encoding::Utf16Le) => text.encode_utf16().flat_map(u16::to_le_bytes).collect(),
        Some(Encoding::Utf16Be) => text.encode_utf16().flat_map(u16::to_be_bytes).collect(),
        Some(Encoding::Utf16) => {
            [0xFF, 0xFE].into_iter().chain(text.encode_utf16().flat_map(u16::to_le_bytes)).collect()
        }
    }
}

/// Standard base64 with padding.
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The forms a `base64` / `base64offset` value is looked for in. For an offset `i` the
/// value is encoded after `i` filler bytes, and the characters that depend on the bytes
/// around it are cut: the first 0 / 2 / 3, and the last 0, 3 or 2 depending on where the
/// value ends in its final group (as the Sigma tools compute them).
fn base64_forms(bytes: &[u8], form: Base64) -> Result<Vec<String>, Refusal> {
    if form == Base64::Plain {
        return Ok(vec![base64(bytes)]);
    }
    let mut forms = Vec::new();
    for i in 0..3 {
        let mut shifted = vec![b' '; i];
        shifted.extend_from_slice(bytes);
        let encoded = base64(&shifted);
        let start = [0, 2, 3][i];
        let end_cut = [0, 3, 2][(bytes.len() + i) % 3];
        let end = encoded.len().saturating_sub(end_cut);
        if end <= start {
            return Err(refusal!(Invalid, "base64offset of a value this short would match every value"));
        }
        forms.push(encoded[start..end].to_string());
    }
    forms.dedup();
    Ok(forms)
}

/// The characters Windows programs accept where an option starts with `-` or `/`.
const DASHES: [char; 5] = ['-', '/', '\u{2013}', '\u{2014}', '\u{2015}'];

/// Sigma's `windash`: the value with each option character (a `-` or `/` at the start or
/// after a non-word character, and before a word character) written every way Windows
/// programs accept: `-`, `/`, en dash, em dash, horizontal bar. With up to three option
/// characters every combination is produced (125 at most); with more, each way for all of
/// them at once.
pub fn windash_variants(value: &str) -> Vec<String> {
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
    let mut variants: Vec<String> = if positions.len() <= 3 {
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
pub fn wrap(tokens: Vec<Token>, op: Option<TextOp>) -> Vec<Token> {
    let (lead, trail) = match op {
        Some(TextOp::Contains) => (true, true),
        Some(TextOp::StartsWith) => (false, true),
        Some(TextOp::EndsWith) => (true, false),
        None => (false, false),
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
        assert_eq!(windash_variants(" -a -b -c").len(), 125);
        assert_eq!(windash_variants("x-y"), vec!["x-y"], "a dash inside a word is not an option");
        assert_eq!(windash_variants(" --exec").len(), 5, "only the dash before the word");
        assert_eq!(windash_variants("-a -b -c -d").len(), 5);
    }

    /// The specification's and the Sigma tools' examples.
    #[test]
    fn base64_forms_match_the_reference() {
        assert_eq!(base64(b"cmd"), "Y21k");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b"a"), "YQ==");
        assert_eq!(base64_forms(b"cmd", Base64::Offset).expect("valid"), ["Y21k", "NtZ", "jbW"]);
        assert_eq!(base64_forms(b"http://", Base64::Offset).expect("valid"), ["aHR0cDovL", "h0dHA6Ly", "odHRwOi8v"]);
        let wide = encode("ping", Some(Encoding::Utf16Le));
        assert_eq!(base64_forms(&wide, Base64::Offset).expect("valid"), ["cABpAG4AZw", "AAaQBuAGcA", "wAGkAbgBnA"]);
        assert_eq!(base64(&encode("ping", Some(Encoding::Utf16))), "//5wAGkAbgBnAA==");
        assert_eq!(base64(&encode("ping", Some(Encoding::Utf16Be))), "AHAAaQBuAGc=");
        assert!(base64_forms(b"a", Base64::Offset).is_err(), "a one-byte value would match everything");
    }

    #[test]
    fn combinations_that_change_meaning_are_refused() {
        for key in [
            "F|wide",
            "F|base64|wide",
            "F|re|cased",
            "F|cidr|contains",
            "F|exists|neq",
            "F|gt|contains",
            "F|fieldref|cased",
            "F|expand",
            "F|hour",
            "F|contains|endswith",
            "F|i",
            "|exists",
        ] {
            assert!(parse(key).is_err(), "{key} must be refused");
        }
        for key in [
            "F|wide|base64offset|contains",
            "F|re|i|m|s",
            "F|cidr",
            "F|exists",
            "F|fieldref|contains",
            "F|neq",
            "F|contains|neq",
            "F|gte",
            "F|windash|contains",
            "|all",
            "F|contains|all|windash",
        ] {
            assert!(parse(key).is_ok(), "{key} must load: {:?}", parse(key).err());
        }
    }

    #[test]
    fn cidr_networks() {
        let net = Cidr::parse("10.0.0.0/8").expect("valid");
        assert!(net.contains("10.1.2.3") && net.contains(" 10.255.255.255 ") && !net.contains("11.0.0.1"));
        assert!(net.contains("::ffff:10.0.0.1"), "IPv4-mapped IPv6");
        assert!(!net.contains("not an ip") && !net.contains("fe80::1"));
        let v6 = Cidr::parse("fe80::/10").expect("valid");
        assert!(v6.contains("fe80::1") && v6.contains("FEBF::1") && !v6.contains("fec0::1"));
        assert!(Cidr::parse("10.0.0.1/8").is_err(), "host bits set");
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(Cidr::parse("0.0.0.0/0").expect("valid").contains("1.2.3.4"));
        assert!(Cidr::parse("192.168.1.5").expect("valid").contains("192.168.1.5"));
    }
}
