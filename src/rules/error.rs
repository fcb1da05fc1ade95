//! Why a rule file was not loaded, typed.
//!
//! A [`RuleError`] says which file, where in it, and what kind of failure it is
//! ([`RuleErrorKind`]); a failure to read keeps its cause ([`std::error::Error::source`]).
//! A rule that parses but cannot be loaded carries a [`Refusal`]: the message, and the fixed
//! wording it was written from, so that `rules check` counts rules by reason ("unknown
//! modifier `…`: 12") from the wording itself, not by guessing which parts of a message
//! vary. Refusals are written with [`refusal!`], which keeps both.

use std::fmt;

use crate::yaml::Pos;

/// Whether a refused rule asks for something iis-tagger does not do, or is wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RefusalKind {
    /// A part of Sigma (or of a rule format) iis-tagger does not implement: correlation
    /// rules, aggregations, a modifier it lacks, a log source it does not read.
    Unsupported,
    /// Not a valid rule: a key missing or of the wrong type, a bad condition, a bad
    /// regular expression, modifiers that contradict each other.
    Invalid,
}

/// What is wrong with a rule that parses but cannot be loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    kind: RefusalKind,
    /// The format string the message was written from (`unknown modifier `{other}``).
    wording: &'static str,
    message: String,
}

/// A [`Refusal`] from a kind and a format string with its arguments:
/// `refusal!(Unsupported, "unknown modifier `{other}`")`. The format string is kept as the
/// refusal's wording.
macro_rules! refusal {
    ($kind:ident, $wording:literal $(,)?) => {
        $crate::rules::error::Refusal::new($crate::rules::error::RefusalKind::$kind, $wording, format!($wording))
    };
    ($kind:ident, $wording:literal, $($arg:tt)+) => {
        $crate::rules::error::Refusal::new(
            $crate::rules::error::RefusalKind::$kind,
            $wording,
            format!($wording, $($arg)+),
        )
    };
}
pub(crate) use refusal;

impl Refusal {
    /// A refusal of `kind` whose `message` was written from `wording` (use [`refusal!`]).
    pub fn new(kind: RefusalKind, wording: &'static str, message: String) -> Refusal {
        Refusal { kind, wording, message }
    }

    /// Unsupported or invalid.
    pub fn kind(&self) -> RefusalKind {
        self.kind
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The reason, the same for every rule refused for it: the wording with each
    /// placeholder written `…` (`unknown modifier `…``).
    pub fn reason(&self) -> String {
        let mut out = String::with_capacity(self.wording.len());
        let mut chars = self.wording.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    out.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    out.push('}');
                }
                '{' => {
                    for c in chars.by_ref() {
                        if c == '}' {
                            break;
                        }
                    }
                    out.push('…');
                }
                c => out.push(c),
            }
        }
        out
    }

    /// The same refusal, its message written in a context (`condition, at character 5:
    /// …`); the reason stays.
    pub(crate) fn within(self, context: impl fmt::Display) -> Refusal {
        Refusal { message: format!("{context}: {}", self.message), ..self }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// What kind of failure a [`RuleError`] is.
#[derive(Debug)]
#[non_exhaustive]
pub enum RuleErrorKind {
    /// The file or the folder could not be read (the cause is the error's source).
    Read(std::io::Error),
    /// The file is not UTF-8.
    NotUtf8,
    /// A folder that holds no rule files.
    NoRuleFiles,
    /// Folders nest deeper than they are walked (a symlink loop?).
    TooDeep,
    /// Not YAML: the parser's message.
    Yaml(String),
    /// YAML, but not a rule that can be loaded.
    Refused(Refusal),
    /// A rule named as one already loaded from `first`.
    DuplicateName {
        /// The name (slug).
        name: String,
        /// The file of the rule loaded first.
        first: String,
    },
    /// A rule with the `id` of one already loaded from `first`.
    DuplicateId {
        /// The id.
        id: String,
        /// The file of the rule loaded first.
        first: String,
    },
}

impl fmt::Display for RuleErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RuleErrorKind::Read(e) => write!(f, "{e}"),
            RuleErrorKind::NotUtf8 => f.write_str("the file is not valid UTF-8"),
            RuleErrorKind::NoRuleFiles => f.write_str("no rule files (*.yml, *.yaml) in this folder"),
            RuleErrorKind::TooDeep => f.write_str("folders nest too deep (a symlink loop?)"),
            RuleErrorKind::Yaml(message) => write!(f, "invalid YAML: {message}"),
            RuleErrorKind::Refused(refusal) => write!(f, "{refusal}"),
            RuleErrorKind::DuplicateName { name, first } => {
                write!(f, "a rule named `{name}` is already loaded from {first}")
            }
            RuleErrorKind::DuplicateId { id, first } => write!(f, "rule id {id} is already loaded from {first}"),
        }
    }
}

/// A rule file (or folder) that could not be loaded: where, and why.
#[derive(Debug)]
pub struct RuleError {
    origin: String,
    pos: Option<Pos>,
    kind: RuleErrorKind,
}

impl RuleError {
    pub(crate) fn new(origin: impl Into<String>, pos: Option<Pos>, kind: RuleErrorKind) -> RuleError {
        RuleError { origin: origin.into(), pos, kind }
    }

    /// The file or folder (or `builtin:<name>`).
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Where in the file, when known.
    pub fn pos(&self) -> Option<Pos> {
        self.pos
    }

    /// What kind of failure.
    pub fn kind(&self) -> &RuleErrorKind {
        &self.kind
    }

    /// What is wrong, without the place.
    pub fn message(&self) -> String {
        self.kind.to_string()
    }

    /// The category: `unsupported` or `invalid` (a [`Refusal`] of that kind), `yaml`,
    /// `duplicate`, or `unreadable` (not read, not UTF-8, no rule files, nested too deep).
    pub fn category(&self) -> &'static str {
        match &self.kind {
            RuleErrorKind::Refused(r) if r.kind() == RefusalKind::Unsupported => "unsupported",
            RuleErrorKind::Refused(_) => "invalid",
            RuleErrorKind::Yaml(_) => "yaml",
            RuleErrorKind::DuplicateName { .. } | RuleErrorKind::DuplicateId { .. } => "duplicate",
            RuleErrorKind::Read(_) | RuleErrorKind::NotUtf8 | RuleErrorKind::NoRuleFiles | RuleErrorKind::TooDeep => {
                "unreadable"
            }
        }
    }

    /// What is wrong, the same for every file refused for it (for counting): a refusal's
    /// [`Refusal::reason`], else the kind of failure.
    pub fn reason(&self) -> String {
        match &self.kind {
            RuleErrorKind::Read(e) => format!("cannot be read: {}", e.kind()),
            RuleErrorKind::Yaml(_) => "invalid YAML".into(),
            RuleErrorKind::Refused(refusal) => refusal.reason(),
            RuleErrorKind::DuplicateName { .. } => "a rule named `…` is already loaded".into(),
            RuleErrorKind::DuplicateId { .. } => "rule id … is already loaded".into(),
            other => other.to_string(),
        }
    }
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.pos {
            Some(pos) => write!(f, "{}:{}: {}", self.origin, pos, self.kind),
            None => write!(f, "{}: {}", self.origin, self.kind),
        }
    }
}

impl std::error::Error for RuleError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.kind {
            RuleErrorKind::Read(e) => Some(e),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reason_is_the_wording_with_its_placeholders_elided() {
        let other = "`odd` name";
        let r = refusal!(Unsupported, "unknown modifier `{other}`");
        assert_eq!(r.message(), "unknown modifier ``odd` name`");
        // A backtick inside the value does not shift what is elided.
        assert_eq!(r.reason(), "unknown modifier `…`");
        assert_eq!(r.kind(), RefusalKind::Unsupported);
        let r = refusal!(Invalid, "`{}` and {{braces}} at {}", "a", 3);
        assert_eq!(r.message(), "`a` and {braces} at 3");
        assert_eq!(r.reason(), "`…` and {braces} at …");
        let r = r.within(format_args!("condition, at character {}", 5));
        assert_eq!(r.message(), "condition, at character 5: `a` and {braces} at 3");
        assert_eq!(r.reason(), "`…` and {braces} at …");
    }

    #[test]
    fn a_read_failure_keeps_its_cause() {
        let e = RuleError::new("x.yml", None, RuleErrorKind::Read(std::io::Error::from(std::io::ErrorKind::NotFound)));
        let source = std::error::Error::source(&e).expect("the cause");
        assert_eq!(source.to_string(), std::io::Error::from(std::io::ErrorKind::NotFound).to_string());
        assert_eq!(e.reason(), "cannot be read: entity not found");
    }
}
