//! Command-line arguments: the option groups every mode shares, and each mode's own
//! (the subcommands themselves are in `command`, which names every mode).

use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};

/// How records are inspected and annotated (every mode).
#[derive(Debug, Args, Clone)]
pub struct CoreArgs {
    /// Name of the annotation member.
    #[arg(long, value_name = "NAME", default_value = "iis_tagger")]
    pub field: String,
    /// Lines longer than this are passed through uninspected, streamed, never held whole.
    /// Accepts a byte count or a size such as 64KiB, 1MiB.
    #[arg(long, value_name = "SIZE", default_value = "1MiB", value_parser = parse_size)]
    pub max_line_bytes: usize,
    /// Match values only as the log wrote them, as other Sigma tools do: no resolved reading
    /// (paths as Windows resolves them, command lines as the program receives them). For
    /// comparing with those tools; it gives up the evasion-proof matching.
    #[arg(long)]
    pub logged_reading_only: bool,
}

impl CoreArgs {
    /// The tagger settings.
    pub fn config(&self, prefilter: bool) -> iis_tagger::Config {
        iis_tagger::Config {
            annotation_key: self.field.clone(),
            max_line_bytes: self.max_line_bytes,
            prefilter,
            resolved_reading: !self.logged_reading_only,
            shape_sample_lines: iis_tagger::SHAPE_SAMPLE_LINES,
            summary: false,
        }
    }
}

/// The summary on stderr at the end of a run.
#[derive(Debug, Args, Clone)]
pub struct StatsArgs {
    /// Print a summary to stderr at the end: lines, bytes, candidates, parsed, matches per
    /// rule, lines not inspected and why.
    #[arg(long)]
    pub stats: bool,
    /// Format of --stats (implies --stats).
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub stats_format: Option<StatsFormat>,
}

impl StatsArgs {
    /// Prints the counters of `stats`, if asked for, and what the hunt found when `hunt`
    /// (in the JSON object, or as text after the counters).
    pub fn print(
        &self,
        stats: &iis_tagger::Stats,
        tagger: &iis_tagger::Tagger,
        skipped: &[iis_tagger::RuleError],
        hunt: bool,
        rule_set: Option<iis_tagger::reload::LoadStatus>,
    ) {
        let counters = self.stats || self.stats_format.is_some();
        if !counters && !hunt {
            return;
        }
        let rules = tagger.rules().rules();
        let empty = iis_tagger::hunt::Hunt::default();
        let summary = hunt.then(|| stats.hunt.as_deref().unwrap_or(&empty).report(rules));
        let mut report = stats.report(tagger.rules());
        report.skipped_rules = skipped.iter().map(ToString::to_string).collect();
        report.rule_set = rule_set;
        match self.stats_format.unwrap_or(StatsFormat::Text) {
            StatsFormat::Json => {
                report.summary = summary;
                super::notes::say(&report.to_json());
            }
            StatsFormat::Text => {
                if counters {
                    super::notes::write(&report.to_text());
                }
                if let Some(summary) = summary {
                    super::notes::write(&summary.to_text());
                }
            }
        }
    }
}

/// Options of `iis-tagger mmexternal` (rules: the global --rules / --no-builtin).
#[derive(Debug, Args)]
pub struct MmexternalArgs {
    /// Inspection settings.
    #[command(flatten)]
    pub core: CoreArgs,
    /// The summary at the end of input, with the other messages (--log-file).
    #[command(flatten)]
    pub summary: StatsArgs,
    /// Append messages (reloads, skipped rule files, the summary) to FILE. Without it they
    /// go to stderr — unless stderr is the pipe of the replies, as rsyslog starts the
    /// program, where a message would be taken for a reply: then they are not written.
    #[arg(long, value_name = "FILE")]
    pub log_file: Option<PathBuf>,
}

/// Which rules to load.
#[derive(Debug, Args, Clone)]
pub struct RuleArgs {
    /// Load rules from a Sigma-style YAML file, or every *.yml / *.yaml under a folder
    /// (repeatable). A file that cannot be loaded stops start-up.
    #[arg(long = "rules", value_name = "PATH", global = true)]
    pub rules: Vec<PathBuf>,
    /// Do not load the built-in rules.
    #[arg(long, global = true)]
    pub no_builtin: bool,
    /// Load every rule of --rules that can be loaded; list the others on stderr (and in
    /// --stats) instead of stopping.
    #[arg(long, global = true)]
    pub skip_invalid_rules: bool,
    /// Load Sigma filters (the specification's global filters: `filter:` with `rules:`,
    /// selections and a `condition`) from a file or every *.yml / *.yaml under a folder
    /// (repeatable): a match of a rule a filter names stands only where the filter's
    /// condition holds too (`condition: not selection` is an allow-list). Suppressed
    /// matches are counted per rule and filter.
    #[arg(long = "filters", value_name = "PATH", global = true)]
    pub filters: Vec<PathBuf>,
    /// Leave out the rule of this name or id (repeatable). A name no loaded rule has stops
    /// start-up.
    #[arg(long = "disable-rule", value_name = "NAME|ID", global = true)]
    pub disable_rule: Vec<String>,
    /// Give the rule of this name or id this risk score, 0–100, and the severity that goes
    /// with it (repeatable): `--rule-risk webshell_child_process=90`.
    #[arg(long = "rule-risk", value_name = "NAME=RISK", global = true, value_parser = parse_rule_risk)]
    pub rule_risk: Vec<(String, u8)>,
    /// Reload the rules when a file of --rules, --filters or --shapes changes (checked every
    /// second), as on SIGHUP: the new set replaces the old between records, or is refused
    /// whole with its error on stderr while the old one keeps running.
    #[arg(long, global = true)]
    pub watch_rules: bool,
    /// Add the shapes of a YAML file (the format of `iis-tagger shapes`; e.g. an in-house
    /// pipeline's renamed fields) to the built-in shape table (repeatable). A file that
    /// cannot be used stops start-up, naming its line and column.
    #[arg(long = "shapes", value_name = "FILE", global = true)]
    pub shapes: Vec<PathBuf>,
}

impl RuleArgs {
    /// The built-in shape table with the `--shapes` files added.
    pub fn shape_table(
        &self,
    ) -> Result<std::sync::Arc<iis_tagger::shapes::ShapeTable>, iis_tagger::shapes::ShapeError> {
        if self.shapes.is_empty() {
            return Ok(iis_tagger::shapes::ShapeTable::shared_builtin());
        }
        let mut table = iis_tagger::shapes::ShapeTable::builtin();
        for file in &self.shapes {
            table.add_file(file)?;
        }
        Ok(std::sync::Arc::new(table))
    }
}

/// Options of `iis-tagger shapes` (with the global --shapes).
#[derive(Debug, Args)]
pub struct ShapesArgs {
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: StatsFormat,
}

/// Output format of `--stats`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StatsFormat {
    /// Lines for people.
    Text,
    /// One JSON object.
    Json,
}

/// Options of a tagging run.
#[derive(Debug, Args)]
pub struct TagArgs {
    /// Input files; none or `-` reads stdin. Windows' binary event-log files (`.evtx`,
    /// recognised by their signature) are read record by record, each written as one JSON
    /// line in the evtx_dump shape.
    #[arg(value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Read every file under each FILE that is a folder (in path order; names starting with
    /// `.` left out; links to folders not followed).
    #[arg(short = 'r', long)]
    pub recursive: bool,
    /// Write only the records that got an annotation (for hunting; the others are counted).
    #[arg(long, conflicts_with_all = ["follow", "forward"])]
    pub matches_only: bool,
    /// Write to FILE instead of stdout.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Rules.
    #[command(flatten)]
    pub rules: RuleArgs,
    /// The summary at the end.
    #[command(flatten)]
    pub summary: StatsArgs,
    /// Inspection settings.
    #[command(flatten)]
    pub core: CoreArgs,
    /// Write to a TCP downstream (HOST:PORT) instead of stdout: one connection, reconnected
    /// with backoff when it drops; the records not yet written wait (and input is not read
    /// meanwhile). For syslog-ng's `program()` destination, and any pipe into a socket.
    #[arg(long, value_name = "HOST:PORT", conflicts_with = "output")]
    pub forward: Option<String>,
    /// Follow FILE as it grows (as `tail -F`: across rotation by rename and truncation),
    /// for agents that run iis-tagger as their `exec` source. Never ends by itself; SIGTERM
    /// ends it after the last complete line.
    #[arg(long, value_name = "FILE", conflicts_with = "files")]
    pub follow: Option<PathBuf>,
    /// With --follow: where to keep the position of the last line written, so that a
    /// restarted iis-tagger resumes after it (the agent restarts its exec child).
    #[arg(long, value_name = "PATH", requires = "follow")]
    pub state_file: Option<PathBuf>,
    /// Parse every JSON line and evaluate every rule, without the prefilter (slow; to check
    /// that the prefilter changes nothing).
    #[arg(long)]
    pub no_prefilter: bool,
    /// No progress line (drawn on stderr when it is a terminal and stdout is not).
    #[arg(short, long)]
    pub quiet: bool,
    /// At the end, print what the hunt found to stderr: detections per rule with severity,
    /// ATT&CK ids, hosts and first and last event time, and the hosts by total risk (with
    /// --stats-format json: `summary` in its object).
    #[arg(long = "summary")]
    pub hunt_summary: bool,
    /// At the end, write an ATT&CK Navigator layer (format 4.5) of the techniques that
    /// fired to FILE, to load into the Navigator as a coloured matrix.
    #[arg(long, value_name = "FILE")]
    pub attack_layer: Option<PathBuf>,
    /// What a technique's score is in the --attack-layer: its detections, or their risk.
    #[arg(long, value_enum, value_name = "SCORE", default_value = "count", requires = "attack_layer")]
    pub attack_layer_score: LayerScore,
    /// Worker threads. 0 (the default) is one, or one per core when the rules make the
    /// prefilter examine every line (a large rule set); the output is the same either way.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub threads: usize,
}

/// What a technique's score is in an ATT&CK Navigator layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LayerScore {
    /// Detections of the rules carrying it.
    Count,
    /// The sum of their risk scores.
    Risk,
}

impl From<LayerScore> for iis_tagger::attack_layer::Score {
    fn from(score: LayerScore) -> Self {
        match score {
            LayerScore::Count => iis_tagger::attack_layer::Score::Count,
            LayerScore::Risk => iis_tagger::attack_layer::Score::Risk,
        }
    }
}

/// Options of `iis-tagger rules` (which rules: the global --rules / --no-builtin).
#[derive(Debug, Args)]
pub struct RulesArgs {
    /// What to do with rules (default: list the loaded ones).
    #[command(subcommand)]
    pub action: Option<RulesAction>,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: StatsFormat,
}

/// `iis-tagger rules <action>`.
#[derive(Debug, Subcommand)]
pub enum RulesAction {
    /// Load every rule under PATHs and report, per rule, what was refused and why, then a
    /// summary by reason, and how many rules the prefilter gets no literal from.
    Check(CheckArgs),
}

/// Options of `iis-tagger rules check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Rule files or folders.
    #[arg(value_name = "PATH", required = true)]
    pub paths: Vec<PathBuf>,
    /// Exit with status 1 when any rule is refused.
    #[arg(long)]
    pub strict: bool,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: StatsFormat,
}

/// Parses `NAME=RISK` (`--rule-risk`).
pub fn parse_rule_risk(text: &str) -> Result<(String, u8), String> {
    let (name, risk) = text.rsplit_once('=').ok_or_else(|| format!("`{text}` is not NAME=RISK"))?;
    let risk: u8 = risk.trim().parse().map_err(|_| format!("`{risk}` is not a risk score from 0 to 100"))?;
    if risk > 100 || name.is_empty() {
        return Err(format!("`{text}`: a risk score is from 0 to 100, after a rule's name or id"));
    }
    Ok((name.to_string(), risk))
}

/// Parses `1048576`, `64KiB`, `1MiB`, `1M` (powers of 1024) or `1MB` (powers of 1000).
pub fn parse_size(text: &str) -> Result<usize, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: usize = digits.parse().map_err(|_| format!("`{text}` is not a size"))?;
    let factor: usize = match unit.trim() {
        "" | "B" => 1,
        "K" | "KiB" => 1 << 10,
        "M" | "MiB" => 1 << 20,
        "G" | "GiB" => 1 << 30,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        other => return Err(format!("unknown size unit `{other}` (use KiB, MiB, GiB, KB, MB, GB)")),
    };
    n.checked_mul(factor).ok_or_else(|| format!("`{text}` is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_size("64KiB"), Ok(64 << 10));
        assert_eq!(parse_size("1M"), Ok(1 << 20));
        assert_eq!(parse_size("2MB"), Ok(2_000_000));
        assert!(parse_size("1 parsec").is_err());
        assert!(parse_size("x").is_err());
    }
}
