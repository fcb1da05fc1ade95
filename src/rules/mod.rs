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
    /// The log source as the rule wrote it (which filters apply to it).
    pub logsource: LogsourceKeys,
    /// The filters applied to the rule, in load order: (index into [`RuleSet::filters`],
    /// index into [`RuleSet::suppressions`]). A match stands only where every one holds.
    pub filters: Vec<(u32, u32)>,
}

/// A `logsource` block's keys, lower-cased: what a filter's log source is compared with
/// (the specification: a filter applies to a rule whose log source has every key the
/// filter's has, with the same value).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct LogsourceKeys {
    /// `category`.
    pub category: Option<String>,
    /// `product`.
    pub product: Option<String>,
    /// `service`.
    pub service: Option<String>,
}

impl LogsourceKeys {
    /// The keys of a `logsource` node (one that compiled).
    pub(crate) fn of(node: &yaml::Node) -> LogsourceKeys {
        let key = |k: &str| node.get(k).and_then(|n| n.as_str()).map(str::to_ascii_lowercase);
        LogsourceKeys { category: key("category"), product: key("product"), service: key("service") }
    }

    /// Whether a rule of log source `rule` is within this one: every key set here is set
    /// there, to the same value.
    pub fn covers(&self, rule: &LogsourceKeys) -> bool {
        let within = |mine: &Option<String>, theirs: &Option<String>| mine.is_none() || mine == theirs;
        within(&self.category, &rule.category)
            && within(&self.product, &rule.product)
            && within(&self.service, &rule.service)
    }
}

impl std::fmt::Display for LogsourceKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys = [("category", &self.category), ("product", &self.product), ("service", &self.service)];
        let mut first = true;
        for (k, v) in keys {
            if let Some(v) = v {
                write!(f, "{}{k}: {v}", if first { "" } else { ", " })?;
                first = false;
            }
        }
        if first {
            f.write_str("any")?;
        }
        Ok(())
    }
}

/// Which rules a filter applies to.
#[derive(Clone, Debug)]
pub enum FilterTargets {
    /// Every rule its log source covers (`rules: any`).
    Any,
    /// The rules named (by `id` or name), with where each is named.
    Named(Vec<(String, Pos)>),
}

/// A Sigma filter (the specification's global filter): a condition added to the rules it
/// names — a match of one of them stands only where the filter's condition holds too
/// (`(rule) and (filter)`, as pySigma applies it). `condition: not selection` is the usual
/// allow-list. Evaluated with the rule's own readings and polarity ([`expr`]): a respelling
/// or a duplicate key cannot make an allow-list hold where the original spelling would not.
#[derive(Clone, Debug)]
pub struct Filter {
    /// `title`.
    pub title: String,
    /// `id`.
    pub id: Option<String>,
    /// The file it came from.
    pub origin: String,
    /// Where the document starts.
    pub pos: Pos,
    /// Its log source.
    pub logsource: LogsourceKeys,
    /// The rules it is for.
    pub targets: FilterTargets,
    /// The condition a match must also meet.
    pub condition: Expr,
}

impl Filter {
    /// How the filter is named in counters: its `id`, else its title.
    pub fn label(&self) -> &str {
        self.id.as_deref().unwrap_or(&self.title)
    }
}

impl RuleMeta {
    /// Whether `name` names the rule: its slug, or its id (case-insensitive), as filters,
    /// `--disable-rule` and `--rule-risk` name rules.
    pub fn is_named(&self, name: &str) -> bool {
        self.slug == name || self.id.as_deref().is_some_and(|id| id.eq_ignore_ascii_case(name))
    }
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
    filters: Vec<Filter>,
    /// Every (rule, filter) pair a filter applies to, as (rule index, filter index): what
    /// suppressed matches are counted by ([`crate::Stats::suppressed`]).
    suppressions: Vec<(u32, u32)>,
}

impl RuleSet {
    /// The rules, in load order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The filters, in load order.
    pub fn filters(&self) -> &[Filter] {
        &self.filters
    }

    /// The (rule index, filter index) pairs a filter applies to.
    pub fn suppressions(&self) -> &[(u32, u32)] {
        &self.suppressions
    }

    /// The (slug, filter label) of suppression pair `i`.
    pub fn suppression_names(&self, i: usize) -> Option<(&str, &str)> {
        let &(r, f) = self.suppressions.get(i)?;
        Some((&self.rules[r as usize].meta.slug, self.filters[f as usize].label()))
    }

    /// Whether the filters of `rule` let a match of it (its detection holds on `view`)
    /// stand: `None` when they do, else the suppression pair of the first filter that
    /// leaves it holding in no reading. A match stands in a reading where the detection and
    /// every filter hold; `differ`: the fields they read differ between the readings.
    pub(crate) fn suppressed_by(
        &self,
        rule: &Rule,
        view: &crate::event::EventView,
        readings: &[crate::normalize::Reading],
        differ: bool,
    ) -> Option<u32> {
        use crate::normalize::Reading;
        let one = [Reading::Resolved];
        let readings = if !differ && readings.len() == 2 { &one[..] } else { readings };
        let mut live = [None; 2];
        for (slot, &r) in live.iter_mut().zip(readings) {
            if rule.detection.eval_in(view, &[r]) {
                *slot = Some(r);
            }
        }
        for &(f, pair) in &rule.filters {
            let condition = &self.filters[f as usize].condition;
            for slot in &mut live {
                if slot.is_some_and(|r| !condition.eval_in(view, &[r])) {
                    *slot = None;
                }
            }
            if live.iter().all(Option::is_none) {
                return Some(pair);
            }
        }
        None
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
            set: RuleSet { fields: FieldCatalog::with_shapes(shapes), ..RuleSet::default() },
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
        let (origin, text) = read_rule_file(path)?;
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

    /// Loads the Sigma filters of a file, or of every `*.yml` / `*.yaml` under a folder
    /// (after the rules: a filter names rules already loaded). Returns how many were loaded.
    pub fn add_filter_path(&mut self, path: &Path) -> Result<usize, RuleError> {
        let files = rule_files(path)?;
        if files.is_empty() {
            return Err(RuleError::new(path.display().to_string(), None, RuleErrorKind::NoRuleFiles));
        }
        for file in &files {
            let (origin, text) = read_rule_file(file)?;
            self.add_filter_source(&origin, &text)?;
        }
        Ok(files.len())
    }

    /// Loads one Sigma filter from its text and applies it to the rules it names. Refused,
    /// naming the place: a filter that names no loaded rule, or a rule its log source does
    /// not cover (it would silently do nothing).
    pub fn add_filter_source(&mut self, origin: &str, text: &str) -> Result<(), RuleError> {
        let located = |pos: Pos, kind: RuleErrorKind| RuleError::new(origin, Some(pos), kind);
        let refused = |pos: Pos, r: Refusal| located(pos, RuleErrorKind::Refused(r));
        let doc = yaml::parse(text).map_err(|e| located(e.pos, RuleErrorKind::Yaml(e.message)))?;
        let filter = sigma::compile_filter(&doc, origin, &mut self.set.fields)
            .map_err(|p| located(p.pos, RuleErrorKind::Refused(p.refusal)))?;
        let index = self.set.filters.len() as u32;
        let mut targets = Vec::new();
        match &filter.targets {
            FilterTargets::Any => {
                targets.extend(
                    (0..self.set.rules.len()).filter(|&r| filter.logsource.covers(&self.set.rules[r].logsource)),
                );
            }
            FilterTargets::Named(names) => {
                for (name, pos) in names {
                    let found = self.set.rules.iter().position(|r| r.meta.is_named(name));
                    let Some(r) = found else {
                        return Err(refused(
                            *pos,
                            error::refusal!(
                                Invalid,
                                "the filter names `{name}`, which no loaded rule is (by id or name)"
                            ),
                        ));
                    };
                    let rule = &self.set.rules[r];
                    if !filter.logsource.covers(&rule.logsource) {
                        return Err(refused(
                            *pos,
                            error::refusal!(
                                Invalid,
                                "the filter's log source ({}) does not cover rule `{}` ({}): it would not apply",
                                filter.logsource,
                                rule.meta.slug,
                                rule.logsource
                            ),
                        ));
                    }
                    if !targets.contains(&r) {
                        targets.push(r);
                    }
                }
            }
        }
        for r in targets {
            let pair = self.set.suppressions.len() as u32;
            self.set.suppressions.push((r as u32, index));
            self.set.rules[r].filters.push((index, pair));
        }
        self.set.filters.push(filter);
        Ok(())
    }

    /// Leaves out the rule of this name or id (`--disable-rule`). Errors when no loaded
    /// rule has it (a misspelt name would silently disable nothing).
    pub fn disable(&mut self, name: &str) -> Result<(), String> {
        let r = self.find(name)?;
        self.set.rules.remove(r);
        // The removed rule's pairs go; rule indices past it move down by one, and each
        // rule's (filter, pair) list is made again from the pairs left.
        let removed = r as u32;
        self.set.suppressions.retain(|&(rule, _)| rule != removed);
        for pair in &mut self.set.suppressions {
            if pair.0 > removed {
                pair.0 -= 1;
            }
        }
        for rule in &mut self.set.rules {
            rule.filters.clear();
        }
        for (pair, &(rule, filter)) in self.set.suppressions.iter().enumerate() {
            self.set.rules[rule as usize].filters.push((filter, pair as u32));
        }
        Ok(())
    }

    /// Sets the risk score (and so the severity) of the rule of this name or id.
    pub fn set_risk(&mut self, name: &str, risk: u8) -> Result<(), String> {
        if risk > 100 {
            return Err(format!("risk {risk} for `{name}`: a risk score is from 0 to 100"));
        }
        let r = self.find(name)?;
        let meta = &mut self.set.rules[r].meta;
        meta.risk_score = risk;
        meta.severity = Severity::from_risk(risk);
        Ok(())
    }

    fn find(&self, name: &str) -> Result<usize, String> {
        self.set
            .rules
            .iter()
            .position(|r| r.meta.is_named(name))
            .ok_or_else(|| format!("`{name}` is not the name or id of a loaded rule"))
    }

    /// The rule set.
    pub fn build(self) -> RuleSet {
        self.set
    }
}

/// The rule files a `--rules` (or `--filters`) path means: the file itself, or every
/// `*.yml` / `*.yaml` under the folder, sorted (what a reload watches).
pub fn rule_files(path: &Path) -> Result<Vec<PathBuf>, RuleError> {
    let origin = path.display().to_string();
    let meta = std::fs::metadata(path).map_err(|e| RuleError::new(origin, None, RuleErrorKind::Read(e)))?;
    if meta.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files = Vec::new();
    collect_rule_files(path, 0, &mut files)?;
    files.sort();
    Ok(files)
}

/// A rule or filter file's origin (its path as shown) and text.
fn read_rule_file(path: &Path) -> Result<(String, String), RuleError> {
    let origin = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| RuleError::new(origin.clone(), None, RuleErrorKind::Read(e)))?;
    let text = String::from_utf8(bytes).map_err(|_| RuleError::new(origin.clone(), None, RuleErrorKind::NotUtf8))?;
    Ok((origin, text))
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
