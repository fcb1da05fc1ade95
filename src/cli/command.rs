//! The command line as a whole: the subcommands, one per mode, above every module that
//! implements one.

use clap::{Parser, Subcommand};

use super::args::{MmexternalArgs, RulesArgs, ShapesArgs, TagArgs};
use super::serve::ServeArgs;

/// Tag Windows / Sysmon event records that show IIS and web-server persistence.
///
/// Reads newline-delimited records from FILEs (or stdin; `-` is stdin) and writes every
/// record to stdout (or -o FILE) in order. Records matching a rule get one JSON member
/// (default `iis_tagger`) with the detections, MITRE ATT&CK ids and a risk score, inserted
/// before their final `}`; every other record is written byte for byte as it came.
///
/// Exit status: 0 on success, also when the reader of the output goes away (broken pipe)
/// or on SIGTERM/SIGINT after the lines read so far are written; 1 on an I/O error while
/// running; 2 on a bad argument, rule file or input path at start-up.
#[derive(Debug, Parser)]
#[command(name = "iis-tagger", version, subcommand_precedence_over_arg = true, max_term_width = 100)]
pub struct Cli {
    /// A subcommand; without one, iis-tagger tags its input.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Options of the tagging run.
    #[command(flatten)]
    pub tag: TagArgs,
    /// Read options from a YAML file: the options of every mode at its top level, those of
    /// one mode under `tag`, `serve` or `mmexternal` (see README, "One config file"). A
    /// flag given here replaces the file's.
    #[arg(long, value_name = "FILE", global = true)]
    pub config: Option<std::path::PathBuf>,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// List the loaded rules: slug, source, risk, severity, ATT&CK ids, title.
    Rules(RulesArgs),
    /// Print the shape table: every layout of Windows events read, how each is recognised
    /// and where each field lives in it (with those of --shapes files).
    Shapes(ShapesArgs),
    /// Run as a TCP sidecar: tag the records of every connection to --listen and write
    /// them to --forward (or stdout), each connection's records in order and whole.
    Serve(Box<ServeArgs>),
    /// Run as an rsyslog external message-modification plugin (`mmexternal` with
    /// `interface.input="fulljson"`): one reply line per message line, in order, flushed;
    /// `{}` when nothing matched, else the annotation under the `$!` tree.
    Mmexternal(MmexternalArgs),
    /// Tag a NATS JetStream stream through a durable pull consumer shared by any number of
    /// instances: every record is published to --output-subject (with a Nats-Msg-Id from
    /// the input stream and sequence), and the input acknowledged once the output stream
    /// has it.
    Consume(Box<super::consume::ConsumeArgs>),
    /// Config files: `config check FILE` reads one, checks every key and value and each
    /// mode's options as they would be parsed, and loads the rules it names.
    Config(ConfigArgs),
}

/// Options of `iis-tagger config`.
#[derive(Debug, clap::Args)]
pub struct ConfigArgs {
    /// What to do.
    #[command(subcommand)]
    pub action: ConfigAction,
}

/// `iis-tagger config <action>`.
#[derive(Debug, Subcommand)]
pub enum ConfigAction {
    /// Check a config file; exit 2 naming the file, line and column of what is wrong.
    Check {
        /// The file.
        #[arg(value_name = "FILE")]
        file: std::path::PathBuf,
    },
}
