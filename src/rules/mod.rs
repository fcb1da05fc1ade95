//! Detection rules: loading, compiling and the metadata that goes into annotations.
//!
//! Rules are Sigma-style YAML. The built-in rules (ARCHITECTURE §3) are such files embedded in
//! the binary and go through the same loader as users' rules. Loading is strict: a file
//! that cannot be loaded is an error naming the file, the line and the problem, and two
//! rules with the same slug or id are refused — a security tool must never run with a
//! rule silently missing or silently replaced.

pub mod condition;
pub mod error;
pub mod expr;
pub mod logsource;
pub mod modifiers;
pub mod pattern;
pub mod sigma;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::fields::FieldCatalog;
use crate::yaml::{self, Pos};
pub use error::{Refusal, RefusalKind, RuleError, RuleErrorKind};
use expr::Expr;

/// Severity bands of the risk score (Elastic's: 0–21 low, 22–47 medium, 48–73 high,
/// 74–100 critical).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// 0–21.
    Low,
    /// 22–47.
    Medium,
    /// 48–73.
    High,
    /// 74–100.
    Critical,
}

impl Severity {
    /// The band a risk score falls in.
    pub fn from_risk(risk: u8) -> Severity {
        match risk {
            0..=21 => Severity::Low,
            22..=47 => Severity::Medium,
            48..=73 => Severity::High,
            _ => Severity::Critical,
        }
    }

    /// The lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

/// What a rule says about itself.
#[derive(Clone, Debug, Serialize)]
pub struct RuleMeta {
    /// Stable slug (`name`, else the file stem).
    pub slug: String,
    /// The vendor's title.
    pub title: String,
    /// The vendor's id, if any.
    pub id: Option<String>,
    /// Who wrote the detection (`Splunk`, `Elastic`, `Sumo Logic`, `Sigma`, ...).
    pub source: String,
    /// ATT&CK technique ids.
    pub mitre: Vec<String>,
    /// ATT&CK tactic names.
    pub tactics: Vec<String>,
    /// 0–100.
    pub risk_score: u8,
    /// The band of `risk_score`.
    pub severity: Severity,
    /// Sigma level, if given.
    pub level: Option<String>,
    /// Authors (the Detection Rule License asks that they travel with the rule).
    pub author: Option<String>,
    /// Where the rule was loaded from (`builtin:<file>` or a path).
    pub origin: String,
}

/// A compiled rule.
#[derive(Clone, Debug)]
pub struct Rule {
    /// Metadata.
    pub meta: RuleMeta,
    /// The events its log source means (a condition on `EventID`, `Channel`, ...).
    pub route: Expr,
    /// The detection.
    pub detection: Expr,
}

impl Rule {
    /// The whole logic as one expression (log source and detection).
    pub fn expr(&self) -> Expr {
        Expr::and(vec![self.route.clone(), self.detection.clone()])
    }
}

/// The built-in rule files (ARCHITECTURE §3), in annotation order.
pub const BUILTIN: &[(&str, &str)] = &[
    ("windows_iis_components_add_new_module.yml", include_str!("builtin/windows_iis_components_add_new_module.yml")),
    (
        "windows_iis_components_new_module_added.yml",
        include_str!("builtin/windows_iis_components_new_module_added.yml"),
    ),
    (
        "microsoft_iis_service_account_password_dumped.yml",
        include_str!("builtin/microsoft_iis_service_account_password_dumped.yml"),
    ),
    ("webshell_child_process.yml", include_str!("builtin/webshell_child_process.yml")),
    ("webshell_child_discovery.yml", include_str!("builtin/webshell_child_discovery.yml")),
    ("suspicious_web_file_written.yml", include_str!("builtin/suspicious_web_file_written.yml")),
    ("iis_module_registered.yml", include_str!("builtin/iis_module_registered.yml")),
    (
        "windows_msiexec_spawn_discovery_command.yml",
        include_str!("builtin/windows_msiexec_spawn_discovery_command.yml"),
    ),
];

/// The loaded rules and the fields they read.
#[derive(Debug, Default)]
pub struct RuleSet {
    rules: Vec<Rule>,
    fields: FieldCatalog,
}

impl RuleSet {
    /// The rules, in load order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The fields the rules read.
    pub fn fields(&self) -> &FieldCatalog {
        &self.fields
    }

    /// The field catalog, to add fields the rules do not read (the summary's host and time).
    pub(crate) fn fields_mut(&mut self) -> &mut FieldCatalog {
        &mut self.fields
    }

    /// Just the built-in rules.
    pub fn builtin() -> Result<RuleSet, RuleError> {
        let mut b = RuleSetBuilder::new();
        b.add_builtin()?;
        Ok(b.build())
    }
}

/// Collects rules from the built-ins, files and folders.
#[derive(Debug, Default)]
pub struct RuleSetBuilder {
    set: RuleSet,
    slugs: HashMap<String, String>,
    ids: HashMap<String, String>,
}

/// Folders are walked at most this deep (guards against symlink loops).
const MAX_DIR_DEPTH: usize = 16;

impl RuleSetBuilder {
    /// An empty builder over the built-in shape table.
    pub fn new() -> RuleSetBuilder {
        RuleSetBuilder::default()
    }

    /// An empty builder whose rules read fields where `shapes` says they are (the built-in
    /// table and a user's `--shapes` files).
    pub fn with_shapes(shapes: std::sync::Arc<crate::shapes::ShapeTable>) -> RuleSetBuilder {
        RuleSetBuilder {
            set: RuleSet { rules: Vec::new(), fields: FieldCatalog::with_shapes(shapes) },
            ..RuleSetBuilder::default()
        }
    }

    /// Adds the built-in rules.
    pub fn add_builtin(&mut self) -> Result<(), RuleError> {
        for (file, text) in BUILTIN {
            self.add_source(&format!("builtin:{file}"), stem(Path::new(file)), text)?;
        }
        Ok(())
    }

    /// Adds a rule file, or every `*.yml` / `*.yaml` file under a folder (sorted by path).
    /// Returns how many rules were added; a folder without rule files is an error, and so
    /// is the first rule that cannot be loaded.
    pub fn add_path(&mut self, path: &Path) -> Result<usize, RuleError> {
        self.add_path_with(path, &mut Err)
    }

    /// [`RuleSetBuilder::add_path`], loading every rule it can: each rule file that cannot
    /// be loaded is handed to `skipped` and the others are added. Errors about the path
    /// itself (missing, unreadable, no rule files) still fail.
    pub fn add_path_skipping(&mut self, path: &Path, skipped: &mut Vec<RuleError>) -> Result<usize, RuleError> {
        self.add_path_with(path, &mut |e| {
            skipped.push(e);
            Ok(())
        })
    }

    fn add_path_with(
        &mut self,
        path: &Path,
        on_error: &mut dyn FnMut(RuleError) -> Result<(), RuleError>,
    ) -> Result<usize, RuleError> {
        let origin = path.display().to_string();
        let meta = std::fs::metadata(path).map_err(|e| RuleError::new(origin.clone(), None, RuleErrorKind::Read(e)))?;
        if meta.is_file() {
            return match self.add_file(path) {
                Ok(()) => Ok(1),
                Err(e) => on_error(e).map(|()| 0),
            };
        }
        let mut files = Vec::new();
        collect_rule_files(path, 0, &mut files)?;
        files.sort();
        if files.is_empty() {
            return Err(RuleError::new(origin, None, RuleErrorKind::NoRuleFiles));
        }
        let mut added = 0;
        for file in &files {
            match self.add_file(file) {
                Ok(()) => added += 1,
                Err(e) => on_error(e)?,
            }
        }
        Ok(added)
    }

    fn add_file(&mut self, path: &Path) -> Result<(), RuleError> {
        let origin = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|e| RuleError::new(origin.clone(), None, RuleErrorKind::Read(e)))?;
        let text =
            String::from_utf8(bytes).map_err(|_| RuleError::new(origin.clone(), None, RuleErrorKind::NotUtf8))?;
        self.add_source(&origin, stem(path), &text)
    }

    /// Adds one rule from its text; `origin` names it in errors and in `rules` output.
    pub fn add_source(&mut self, origin: &str, stem: &str, text: &str) -> Result<(), RuleError> {
        let located = |pos: Pos, kind: RuleErrorKind| RuleError::new(origin, Some(pos), kind);
        let doc = yaml::parse(text).map_err(|e| located(e.pos, RuleErrorKind::Yaml(e.message)))?;
        let rule = sigma::compile(&doc, stem, origin, &mut self.set.fields)
            .map_err(|p| located(p.pos, RuleErrorKind::Refused(p.refusal)))?;
        if let Some(first) = self.slugs.get(&rule.meta.slug) {
            let pos = doc.get("name").map_or(doc.pos, |n| n.pos);
            let kind = RuleErrorKind::DuplicateName { name: rule.meta.slug.clone(), first: first.clone() };
            return Err(located(pos, kind));
        }
        if let Some(id) = &rule.meta.id {
            if let Some(first) = self.ids.get(id) {
                let kind = RuleErrorKind::DuplicateId { id: id.clone(), first: first.clone() };
                return Err(located(doc.get("id").map_or(doc.pos, |n| n.pos), kind));
            }
            self.ids.insert(id.clone(), origin.to_string());
        }
        self.slugs.insert(rule.meta.slug.clone(), origin.to_string());
        self.set.rules.push(rule);
        Ok(())
    }

    /// The rule set.
    pub fn build(self) -> RuleSet {
        self.set
    }
}

fn stem(path: &Path) -> &str {
    path.file_stem().and_then(|s| s.to_str()).unwrap_or("")
}

fn collect_rule_files(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) -> Result<(), RuleError> {
    let origin = || dir.display().to_string();
    if depth > MAX_DIR_DEPTH {
        return Err(RuleError::new(origin(), None, RuleErrorKind::TooDeep));
    }
    let entries = std::fs::read_dir(dir).map_err(|e| RuleError::new(origin(), None, RuleErrorKind::Read(e)))?;
    for entry in entries {
        let entry = entry.map_err(|e| RuleError::new(origin(), None, RuleErrorKind::Read(e)))?;
        let path = entry.path();
        let name = entry.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        if path.is_dir() {
            collect_rule_files(&path, depth + 1, out)?;
        } else if matches!(path.extension().and_then(|e| e.to_str()), Some("yml" | "yaml")) {
            out.push(path);
        }
    }
    Ok(())
}
