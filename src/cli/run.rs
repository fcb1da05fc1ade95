//! The tagging run: inputs → [`Stream`](iis_tagger::Stream) → output, with signals,
//! a closed downstream and write errors handled as DESIGN §1.7 says.

use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use iis_tagger::{Config, RuleError, RuleSetBuilder, Stats, Tagger};

use super::args::{RuleArgs, TagArgs};
use super::output::Vectored;
use super::signal;

/// Bytes read at a time.
pub(crate) const READ_BYTES: usize = 256 * 1024;

/// Why a run failed, and so which exit status it gets.
#[derive(Debug)]
pub enum Failure {
    /// Bad rules, settings or paths, found before any input was read (exit 2).
    Setup(String),
    /// An I/O error while running (exit 1).
    Io(String),
    /// `rules check --strict` found rules that do not load (exit 1).
    Check(String),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Setup(m) | Failure::Io(m) | Failure::Check(m) => f.write_str(m),
        }
    }
}

/// Loads the rules and builds the tagger. With --skip-invalid-rules, the rules that could
/// not be loaded are listed on stderr and returned.
pub fn build_tagger(rules: &RuleArgs, config: Config) -> Result<(Tagger, Vec<RuleError>), Failure> {
    let shapes = rules.shape_table().map_err(|e| Failure::Setup(e.to_string()))?;
    let mut builder = RuleSetBuilder::with_shapes(shapes);
    if !rules.no_builtin {
        builder.add_builtin().map_err(|e| Failure::Setup(e.to_string()))?;
    }
    let mut skipped = Vec::new();
    for path in &rules.rules {
        let added = if rules.skip_invalid_rules {
            builder.add_path_skipping(path, &mut skipped)
        } else {
            builder.add_path(path)
        };
        added.map_err(|e| Failure::Setup(e.to_string()))?;
    }
    for e in &skipped {
        eprintln!("iis-tagger: skipped {e}");
    }
    let set = builder.build();
    if set.rules().is_empty() {
        return Err(Failure::Setup("no rules loaded (--no-builtin without --rules, or every rule skipped)".into()));
    }
    Ok((Tagger::new(set, config).map_err(|e| Failure::Setup(e.to_string()))?, skipped))
}

pub(crate) struct Input {
    pub(crate) name: String,
    pub(crate) file: File,
}

fn stdin_file() -> io::Result<File> {
    Ok(File::from(io::stdin().as_fd().try_clone_to_owned()?))
}

fn open_inputs(files: &[PathBuf]) -> Result<Vec<Input>, Failure> {
    if files.is_empty() {
        let file = stdin_file().map_err(|e| Failure::Setup(format!("stdin: {e}")))?;
        return Ok(vec![Input { name: "stdin".into(), file }]);
    }
    files
        .iter()
        .map(|path| {
            let name = path.display().to_string();
            let file = if path.as_os_str() == "-" { stdin_file() } else { File::open(path) };
            file.map(|file| Input { name: name.clone(), file }).map_err(|e| Failure::Setup(format!("{name}: {e}")))
        })
        .collect()
}

fn open_output(path: Option<&Path>, inputs: &[PathBuf]) -> Result<File, Failure> {
    let Some(path) = path else {
        return Ok(File::from(
            io::stdout().as_fd().try_clone_to_owned().map_err(|e| Failure::Setup(format!("stdout: {e}")))?,
        ));
    };
    if let Ok(out) = path.canonicalize() {
        if inputs.iter().any(|i| i.canonicalize().is_ok_and(|i| i == out)) {
            return Err(Failure::Setup(format!("{}: the output file is also an input", path.display())));
        }
    }
    File::create(path).map_err(|e| Failure::Setup(format!("{}: {e}", path.display())))
}

/// How writing ended.
pub(crate) enum WriteError {
    /// The reader went away: stop quietly.
    Closed,
    /// Anything else.
    Io(io::Error),
}

pub(crate) fn write_out(output: &mut File, out: &mut Vectored, input: &[u8]) -> Result<(), WriteError> {
    let result = out.write_to(output, input);
    result.map_err(|e| if e.kind() == io::ErrorKind::BrokenPipe { WriteError::Closed } else { WriteError::Io(e) })
}

/// Runs the tagger over the inputs of `args`.
pub fn tag(args: &TagArgs) -> Result<(), Failure> {
    let config = args.core.config(!args.no_prefilter);
    let (tagger, skipped) = build_tagger(&args.rules, config)?;
    for &r in tagger.prefilter().unconstrained_rules() {
        let slug = &tagger.rules().rules()[r as usize].meta.slug;
        eprintln!("iis-tagger: note: rule `{slug}` gives the prefilter no literal; every JSON line is parsed for it");
    }
    let mut total = Stats::new(tagger.rules().rules().len());
    let result = if let Some(path) = &args.follow {
        let mut output = open_output(args.output.as_deref(), std::slice::from_ref(path))?;
        signal::install().map_err(|e| Failure::Setup(format!("installing signal handlers: {e}")))?;
        super::follow::run(&tagger, path, args.state_file.as_deref(), &mut output, &mut total)
    } else if let Some(forward) = &args.forward {
        let inputs = open_inputs(&args.files)?;
        super::serve::pipe::run(&tagger, inputs, forward, &mut total)
    } else {
        tag_to_output(args, &tagger, &mut total)
    };
    args.summary.print(&total, &tagger, &skipped);
    result
}

/// The inputs to stdout or `-o FILE`, on one thread or several.
fn tag_to_output(args: &TagArgs, tagger: &Tagger, total: &mut Stats) -> Result<(), Failure> {
    let inputs = open_inputs(&args.files)?;
    let mut output = open_output(args.output.as_deref(), &args.files)?;
    signal::install().map_err(|e| Failure::Setup(format!("installing signal handlers: {e}")))?;
    let threads = match args.threads {
        0 if tagger.prefilter().examines_every_line() => std::thread::available_parallelism().map_or(1, usize::from),
        0 => 1,
        n => n,
    };
    if threads > 1 {
        match super::parallel::run(tagger, threads, inputs, &mut output, total) {
            Ok(super::parallel::Ended::Signalled { dropped }) if dropped > 0 => {
                eprintln!("iis-tagger: stopped by signal; {dropped} bytes of an unfinished line were not written");
                Ok(())
            }
            Ok(_) => Ok(()),
            Err(e) => Err(e),
        }
    } else {
        run(tagger, inputs, &mut output, total)
    }
}

fn run(tagger: &Tagger, inputs: Vec<Input>, output: &mut File, total: &mut Stats) -> Result<(), Failure> {
    // Page-aligned: the kernel copies into a misaligned buffer several times slower.
    let mut storage = vec![0u8; READ_BYTES + 4096];
    let offset = storage.as_ptr().align_offset(4096).min(4096);
    let buf = &mut storage[offset..offset + READ_BYTES];
    let mut out = Vectored::default();
    for mut input in inputs {
        let mut stream = tagger.stream();
        let outcome = pump(&mut input, &mut stream, buf, &mut out, output);
        if let Ok(Pumped::Eof) = outcome {
            // The last line (without `\n`) is tagged, and counted, here.
            stream.finish(&mut out);
        }
        total.merge(stream.stats());
        match outcome {
            Ok(Pumped::Eof) => match write_out(output, &mut out, &[]) {
                Ok(()) => {}
                Err(WriteError::Closed) => return Ok(()),
                Err(WriteError::Io(e)) => return Err(Failure::Io(format!("writing output: {e}"))),
            },
            Ok(Pumped::Signalled { dropped }) => {
                if dropped > 0 {
                    eprintln!("iis-tagger: stopped by signal; {dropped} bytes of an unfinished line were not written");
                }
                return Ok(());
            }
            Ok(Pumped::Closed) => return Ok(()),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

enum Pumped {
    Eof,
    Closed,
    Signalled { dropped: usize },
}

/// Reads one input to its end (or a signal), feeding and writing as it goes.
fn pump(
    input: &mut Input,
    stream: &mut iis_tagger::Stream<'_>,
    buf: &mut [u8],
    out: &mut Vectored,
    output: &mut File,
) -> Result<Pumped, Failure> {
    // After a signal, keep reading only to finish the line in progress, and not for ever.
    let mut grace: Option<usize> = None;
    loop {
        let signals = signal::received();
        if signals > 0 {
            let budget = grace.get_or_insert(stream.pending_bytes() + READ_BYTES * 4 + (1 << 20));
            if signals > 1 || !stream.has_partial_line() || *budget == 0 {
                return Ok(Pumped::Signalled { dropped: stream.pending_bytes() });
            }
        }
        let n = match input.file.read(buf) {
            Ok(0) => return Ok(Pumped::Eof),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Failure::Io(format!("{}: {e}", input.name))),
        };
        if let Some(budget) = grace.as_mut() {
            *budget = budget.saturating_sub(n);
        }
        stream.feed(&buf[..n], out);
        match write_out(output, out, &buf[..n]) {
            Ok(()) => {}
            Err(WriteError::Closed) => return Ok(Pumped::Closed),
            Err(WriteError::Io(e)) => return Err(Failure::Io(format!("writing output: {e}"))),
        }
    }
}
