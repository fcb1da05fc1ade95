//! `--config FILE`: every option of every mode in one YAML file (the format of the rule
//! and shape files, read with the same positions-keeping parser; the Sigma and Fluent Bit
//! ecosystems write YAML).
//!
//! The file's keys are the long options, without `--` (`max-line-bytes`, or
//! `max_line_bytes`): at the top level those of every mode (`rules`, `filters`, `shapes`,
//! `watch-rules`, ...), and in a section per mode those of that mode — `tag` (the tagging
//! run, with no subcommand), `serve`, `mmexternal`. A value is a string or a number, a
//! list for an option that may be repeated, `true` for a switch. The file is turned into
//! the options it stands for and parsed with the command line by the same definitions
//! (`args.rs`), so the file and the flags cannot drift apart and are validated into the
//! same typed settings. An option given on the command line replaces the file's (a list
//! too); a switch the file turns on cannot be turned off by a flag (leave it out of the
//! file). An unknown key, a value of the wrong kind, or one the option refuses is an
//! error naming the file, line and column.

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::{ArgAction, CommandFactory};

use iis_tagger::yaml::{self, Node, Pos, Scalar, Value};

use super::command::Cli;

/// The modes a config file has a section for: (section, subcommand; `None` is the
/// tagging run).
const SECTIONS: &[(&str, Option<&str>)] =
    &[("tag", None), ("serve", Some("serve")), ("mmexternal", Some("mmexternal")), ("consume", Some("consume"))];

/// A problem with a config file, where it is.
#[derive(Debug)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

/// The command line with the options of its `--config` file (if any) put in, and where
/// each of those options came from.
pub struct Expanded {
    /// The arguments to parse.
    pub argv: Vec<OsString>,
    /// Long option → the file and position of the key that gave it.
    pub origins: HashMap<String, (PathBuf, Pos)>,
}

/// The options of one mode a config file gives, as arguments.
struct Options {
    args: Vec<OsString>,
}

/// Puts the options of the `--config` file of `argv` into it (see the module
/// documentation).
pub fn expand(argv: Vec<OsString>) -> Result<Expanded, ConfigError> {
    let Some(path) = config_path(&argv) else { return Ok(Expanded { argv, origins: HashMap::new() }) };
    let doc = read(&path)?;
    let cmd = Cli::command();
    let scan = scan(&cmd, &argv);
    let mut origins = HashMap::new();
    let globals = options(&path, &doc, &cmd, None, &scan.given, &mut origins)?;
    // Every section's keys and values are checked, whichever mode runs: a mistake in the
    // file shows at the first start, not at the first start of the mode it is in.
    for (name, sub) in SECTIONS {
        if let Some(node) = doc.get(name) {
            options(&path, node, &cmd, Some(*sub), &[], &mut HashMap::new())?;
        }
    }
    let section = SECTIONS.iter().find(|(_, sub)| *sub == scan.subcommand.as_ref().map(|(s, _)| s.as_str()));
    let mode = match section {
        Some((name, sub)) => match doc.get(name) {
            Some(node) => options(&path, node, &cmd, Some(*sub), &scan.given, &mut origins)?,
            None => Options { args: Vec::new() },
        },
        None => Options { args: Vec::new() },
    };
    let mut out = Vec::with_capacity(argv.len() + globals.args.len() + mode.args.len());
    out.push(argv.first().cloned().unwrap_or_else(|| "iis-tagger".into()));
    out.extend(globals.args);
    match scan.subcommand {
        Some((_, at)) => {
            out.extend(argv[1..=at].iter().cloned());
            out.extend(mode.args);
            out.extend(argv[at + 1..].iter().cloned());
        }
        None => {
            out.extend(mode.args);
            out.extend(argv.iter().skip(1).cloned());
        }
    }
    Ok(Expanded { argv: out, origins })
}

/// Reads and checks a config file on its own (`iis-tagger config check`): its keys and
/// values, then the options of each mode it has a section for, parsed as they would be.
/// Returns a summary of what it sets.
pub fn check(path: &Path) -> Result<String, ConfigError> {
    let doc = read(path)?;
    let cmd = Cli::command();
    let mut summary = String::new();
    let mut origins = HashMap::new();
    let globals = options(path, &doc, &cmd, None, &[], &mut origins)?;
    summary.push_str(&format!("{}: every mode: {}\n", path.display(), shown(&globals.args)));
    for (name, sub) in SECTIONS {
        let Some(node) = doc.get(name) else { continue };
        let mode = options(path, node, &cmd, Some(*sub), &[], &mut origins)?;
        let mut argv: Vec<OsString> = vec!["iis-tagger".into()];
        argv.extend(globals.args.iter().cloned());
        argv.extend(sub.map(OsString::from));
        argv.extend(mode.args.iter().cloned());
        if let Err(e) = Cli::try_parse_from_args(&argv) {
            return Err(attributed(&e, &origins)
                .unwrap_or_else(|| ConfigError(format!("{}: {name}: {}", path.display(), first_line(&e)))));
        }
        summary.push_str(&format!("{}: {name}: {}\n", path.display(), shown(&mode.args)));
    }
    Ok(summary)
}

impl Cli {
    fn try_parse_from_args(argv: &[OsString]) -> Result<Cli, clap::Error> {
        <Cli as clap::Parser>::try_parse_from(argv)
    }
}

/// A clap error as one of the config file's, when the option it names came from it.
pub fn attributed(e: &clap::Error, origins: &HashMap<String, (PathBuf, Pos)>) -> Option<ConfigError> {
    let clap::error::ContextValue::String(arg) = e.get(clap::error::ContextKind::InvalidArg)? else { return None };
    let long = arg.trim_start_matches('-').split([' ', '=']).next()?;
    let (file, pos) = origins.get(long)?;
    Some(ConfigError(format!("{}:{pos}: `{long}`: {}", file.display(), first_line(e))))
}

fn first_line(e: &clap::Error) -> String {
    let text = e.to_string();
    let line = text.lines().next().unwrap_or("").trim();
    line.strip_prefix("error: ").unwrap_or(line).to_string()
}

fn shown(args: &[OsString]) -> String {
    if args.is_empty() {
        return "nothing".into();
    }
    args.iter().map(|a| a.to_string_lossy().into_owned()).collect::<Vec<_>>().join(" ")
}

/// The value of `--config` in `argv` (before a `--`).
fn config_path(argv: &[OsString]) -> Option<PathBuf> {
    let mut it = argv.iter().skip(1);
    while let Some(a) = it.next() {
        // An argument that is not UTF-8 (a file name) is not `--config`.
        let Some(a) = a.to_str() else { continue };
        if a == "--" {
            return None;
        }
        if a == "--config" {
            return it.next().map(PathBuf::from);
        }
        if let Some(v) = a.strip_prefix("--config=") {
            return Some(PathBuf::from(v));
        }
    }
    None
}

fn read(path: &Path) -> Result<Node, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError(format!("{}: {e}", path.display())))?;
    let doc = yaml::parse(&text)
        .map_err(|e| ConfigError(format!("{}:{}: invalid YAML: {}", path.display(), e.pos, e.message)))?;
    if doc.as_map().is_none() {
        return Err(ConfigError(format!(
            "{}:{}: a config file is a mapping of options, not {}",
            path.display(),
            doc.pos,
            doc.kind()
        )));
    }
    Ok(doc)
}

/// What the command line holds: its subcommand (and where), and the long names of the
/// options it gives.
struct Scan {
    subcommand: Option<(String, usize)>,
    given: Vec<String>,
}

fn scan(cmd: &clap::Command, argv: &[OsString]) -> Scan {
    let mut scan = Scan { subcommand: None, given: Vec::new() };
    let mut current = cmd;
    let find_long = |c: &clap::Command, long: &str| {
        c.get_arguments()
            .chain(cmd.get_arguments().filter(|a| a.is_global_set()))
            .find(|a| a.get_long() == Some(long))
            .map(|a| (a.get_long().unwrap_or("").to_string(), a.get_action().takes_values()))
    };
    let find_short = |c: &clap::Command, short: char| {
        c.get_arguments()
            .chain(cmd.get_arguments().filter(|a| a.is_global_set()))
            .find(|a| a.get_short() == Some(short))
            .map(|a| (a.get_long().unwrap_or("").to_string(), a.get_action().takes_values()))
    };
    let mut i = 1;
    while i < argv.len() {
        let Some(a) = argv[i].to_str() else {
            i += 1;
            continue;
        };
        if a == "--" {
            break;
        }
        if let Some(long) = a.strip_prefix("--") {
            let (name, inline) = match long.split_once('=') {
                Some((n, _)) => (n, true),
                None => (long, false),
            };
            if let Some((long, takes)) = find_long(current, name) {
                scan.given.push(long);
                if takes && !inline {
                    i += 1;
                }
            }
        } else if a.len() > 1 && a.starts_with('-') {
            let chars: Vec<char> = a[1..].chars().collect();
            for (k, &c) in chars.iter().enumerate() {
                if let Some((long, takes)) = find_short(current, c) {
                    scan.given.push(long);
                    if takes {
                        if k + 1 == chars.len() {
                            i += 1;
                        }
                        break;
                    }
                }
            }
        } else if scan.subcommand.is_none() {
            if let Some(sub) = cmd.find_subcommand(a) {
                scan.subcommand = Some((a.to_string(), i));
                current = sub;
            }
        }
        i += 1;
    }
    scan
}

/// The options a mapping of the file gives for `mode` (`None`: the top level, the options
/// of every mode; `Some(None)`: the tagging run; `Some(Some(sub))`: a subcommand), left out
/// those the command line gives.
fn options(
    path: &Path,
    node: &Node,
    cmd: &clap::Command,
    mode: Option<Option<&str>>,
    given: &[String],
    origins: &mut HashMap<String, (PathBuf, Pos)>,
) -> Result<Options, ConfigError> {
    let at = |pos: Pos, message: String| ConfigError(format!("{}:{pos}: {message}", path.display()));
    let Some(entries) = node.as_map() else {
        return Err(at(node.pos, format!("a section is a mapping of options, not {}", node.kind())));
    };
    let (scope, args): (&str, Vec<&clap::Arg>) = match mode {
        None => ("the top level (every mode)", cmd.get_arguments().filter(|a| a.is_global_set()).collect()),
        Some(None) => ("`tag`", cmd.get_arguments().filter(|a| !a.is_global_set()).collect()),
        Some(Some(sub)) => (
            sub,
            cmd.find_subcommand(sub)
                .map(|c| c.get_arguments().filter(|a| !a.is_global_set()).collect())
                .unwrap_or_default(),
        ),
    };
    let known = |args: &[&clap::Arg]| -> String {
        let mut names: Vec<&str> = args.iter().filter_map(|a| a.get_long()).filter(|l| *l != "config").collect();
        names.sort_unstable();
        names.join(", ")
    };
    let mut out = Options { args: Vec::new() };
    for (key, value) in entries {
        if mode.is_none() && SECTIONS.iter().any(|(s, _)| *s == key.text) {
            continue;
        }
        let long = key.text.replace('_', "-");
        if long == "config" {
            return Err(at(key.pos, "`config` cannot be set in a config file".into()));
        }
        let Some(arg) = args.iter().find(|a| a.get_long() == Some(long.as_str())) else {
            let hint = match mode {
                None => format!(" (sections: tag, serve, mmexternal; the options of every mode: {})", known(&args)),
                Some(_) => format!(" (its options: {})", known(&args)),
            };
            return Err(at(key.pos, format!("unknown key `{}` in {scope}{hint}", key.text)));
        };
        if arg.is_positional() {
            return Err(at(key.pos, format!("`{}` is given on the command line, not in a config file", key.text)));
        }
        // An option the command line gives replaces the file's: its errors are the
        // command line's, not the file's.
        if given.contains(&long) {
            continue;
        }
        origins.insert(long.clone(), (path.to_path_buf(), key.pos));
        let flag = OsString::from(format!("--{long}"));
        match arg.get_action() {
            ArgAction::SetTrue | ArgAction::Count => match &value.value {
                Value::Scalar(Scalar::Bool(true)) => out.args.push(flag),
                Value::Scalar(Scalar::Bool(false)) => {}
                _ => {
                    return Err(at(
                        value.pos,
                        format!("`{}` is a switch: true or false, not {}", key.text, value.kind()),
                    ));
                }
            },
            ArgAction::Append => {
                // A mapping gives `KEY=VALUE` options (`rule-risk: {webshell_child_process: 90}`).
                if let Value::Map(pairs) = &value.value {
                    for (k, v) in pairs {
                        let v = scalar(v)
                            .map_err(|kind| at(v.pos, format!("`{}`: a string or a number, not {kind}", k.text)))?;
                        out.args.push(format!("--{long}={}={v}", k.text).into());
                    }
                    continue;
                }
                let items: Vec<&Node> = match &value.value {
                    Value::Seq(items) => items.iter().collect(),
                    _ => vec![value],
                };
                for item in items {
                    let v = scalar(item)
                        .map_err(|kind| at(item.pos, format!("`{}`: a string or a number, not {kind}", key.text)))?;
                    // `--long=value`: a value that starts with `-` stays a value.
                    out.args.push(format!("--{long}={v}").into());
                }
            }
            _ => {
                let text = scalar(value).map_err(|kind| {
                    at(value.pos, format!("`{}` takes one value: a string or a number, not {kind}", key.text))
                })?;
                out.args.push(format!("--{long}={text}").into());
            }
        }
    }
    Ok(out)
}

/// A scalar as the text of an argument.
fn scalar(node: &Node) -> Result<String, &'static str> {
    match &node.value {
        Value::Scalar(Scalar::Str(s)) => Ok(s.clone()),
        Value::Scalar(Scalar::Int(n)) => Ok(n.to_string()),
        Value::Scalar(Scalar::Float(f)) => Ok(f.to_string()),
        Value::Scalar(Scalar::Bool(b)) => Ok(b.to_string()),
        _ => Err(node.kind()),
    }
}

/// Loads the rules a config file names (its top-level rule options), as start-up would:
/// for `config check`.
pub fn check_rules(path: &Path) -> Result<String, super::common::Failure> {
    use super::common::Failure;
    let argv: Vec<OsString> = vec!["iis-tagger".into(), "--config".into(), path.into()];
    let expanded = expand(argv).map_err(Failure::setup)?;
    let cli = <Cli as clap::Parser>::try_parse_from(&expanded.argv)
        .map_err(|e| Failure::setup(attributed(&e, &expanded.origins).map_or_else(|| first_line(&e), |c| c.0)))?;
    let (tagger, skipped) = super::common::build_tagger(&cli.tag.rules, iis_tagger::Config::default())?;
    Ok(format!(
        "{}: the rules load: {} rules, {} filters{}\n",
        path.display(),
        tagger.rules().rules().len(),
        tagger.rules().filters().len(),
        if skipped.is_empty() { String::new() } else { format!(", {} rule files skipped", skipped.len()) }
    ))
}
