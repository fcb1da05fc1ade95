//! What every front end of the command line shares: the failure kinds and their exit
//! statuses, building the tagger from the rule options, opening inputs and the output, and
//! writing a batch (a closed reader is an ending, not an error). The front ends (`run`,
//! `follow`, `parallel`, `serve`, `mmexternal`, `rules`) build on this module, never on
//! each other.

use std::fmt;
use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use iis_tagger::{Config, RuleError, RuleSetBuilder, Tagger};

use super::args::RuleArgs;
use super::output::Emit;

/// Bytes read at a time.
pub(crate) const READ_BYTES: usize = 256 * 1024;

/// What a failure holds: the library's typed error (its cause kept), or a message.
pub type Cause = Box<dyn std::error::Error + Send + Sync>;

/// Why a run failed, and so which exit status it gets.
#[derive(Debug)]
pub enum Failure {
    /// Bad rules, settings or paths, found before any input was read (exit 2).
    Setup(Cause),
    /// An I/O error while running (exit 1).
    Io(Cause),
    /// `rules check --strict` found rules that do not load (exit 1).
    Check(Cause),
}

impl Failure {
    /// A setup failure.
    pub fn setup(cause: impl Into<Cause>) -> Failure {
        Failure::Setup(cause.into())
    }

    /// A failure while running.
    pub fn io(cause: impl Into<Cause>) -> Failure {
        Failure::Io(cause.into())
    }

    /// A `--strict` check that found refusals.
    pub fn check(cause: impl Into<Cause>) -> Failure {
        Failure::Check(cause.into())
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Setup(e) | Failure::Io(e) | Failure::Check(e) => write!(f, "{e}"),
        }
    }
}

/// Loads the rules and builds the tagger. With --skip-invalid-rules, the rules that could
/// not be loaded are listed on stderr and returned.
pub fn build_tagger(rules: &RuleArgs, config: Config) -> Result<(Tagger, Vec<RuleError>), Failure> {
    let shapes = rules.shape_table().map_err(Failure::setup)?;
    let mut builder = RuleSetBuilder::with_shapes(shapes);
    if !rules.no_builtin {
        builder.add_builtin().map_err(Failure::setup)?;
    }
    let mut skipped = Vec::new();
    for path in &rules.rules {
        let added = if rules.skip_invalid_rules {
            builder.add_path_skipping(path, &mut skipped)
        } else {
            builder.add_path(path)
        };
        added.map_err(Failure::setup)?;
    }
    for e in &skipped {
        super::notes::say(&format!("iis-tagger: skipped {e}"));
    }
    for path in &rules.filters {
        builder.add_filter_path(path).map_err(Failure::setup)?;
    }
    for name in &rules.disable_rule {
        builder.disable(name).map_err(|e| Failure::setup(format!("--disable-rule: {e}")))?;
    }
    for (name, risk) in &rules.rule_risk {
        builder.set_risk(name, *risk).map_err(|e| Failure::setup(format!("--rule-risk: {e}")))?;
    }
    let set = builder.build();
    if set.rules().is_empty() {
        return Err(Failure::setup("no rules loaded (--no-builtin without --rules, or every rule skipped)"));
    }
    Ok((Tagger::new(set, config).map_err(Failure::setup)?, skipped))
}

/// A read buffer, page-aligned: the kernel copies into a misaligned buffer several times
/// slower.
pub(crate) struct ReadBuf {
    storage: Vec<u8>,
    offset: usize,
}

impl ReadBuf {
    pub(crate) fn new() -> ReadBuf {
        let storage = vec![0u8; READ_BYTES + 4096];
        let offset = storage.as_ptr().align_offset(4096).min(4096);
        ReadBuf { storage, offset }
    }

    pub(crate) fn get(&mut self) -> &mut [u8] {
        &mut self.storage[self.offset..self.offset + READ_BYTES]
    }
}

pub(crate) struct Input {
    pub(crate) name: String,
    pub(crate) file: File,
    /// A Windows binary event-log file (by its signature), read with `iis_tagger::evtx`.
    pub(crate) evtx: bool,
    /// Bytes of a stream already read (to look for the EVTX signature), read again first.
    pub(crate) head: Vec<u8>,
}

impl Input {
    /// Reads the input's next bytes: first those read ahead, then the file's.
    pub(crate) fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        use std::io::Read;
        if self.head.is_empty() {
            return self.file.read(buf);
        }
        let n = self.head.len().min(buf.len());
        buf[..n].copy_from_slice(&self.head[..n]);
        self.head.drain(..n);
        Ok(n)
    }

    /// For a stream (a pipe: its start cannot be read in place) that is not a terminal:
    /// reads its first bytes for as long as they could be the EVTX signature, keeping them
    /// in `head`. True when they are: the caller then reads it as an EVTX file. A stream
    /// that does not start with `E` costs one read, of what was there anyway.
    pub(crate) fn starts_as_evtx_stream(&mut self) -> bool {
        use std::io::{IsTerminal, Read};
        use std::os::unix::fs::FileExt;
        if self.evtx || self.file.read_at(&mut [0u8; 1], 0).is_ok() || self.file.is_terminal() {
            return false;
        }
        let signature = iis_tagger::evtx::SIGNATURE;
        let mut byte = [0u8; 1];
        while self.head.len() < signature.len() && signature.starts_with(&self.head) {
            match self.file.read(&mut byte) {
                Ok(0) => break,
                Ok(_) => self.head.push(byte[0]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
        self.head.as_slice() == signature
    }
}

fn stdin_file() -> io::Result<File> {
    Ok(File::from(io::stdin().as_fd().try_clone_to_owned()?))
}

/// Whether `file` starts with the EVTX signature. Read in place (the file's offset does not
/// move), so stdin redirected from a file counts; a pipe or terminal cannot be read so, and
/// an EVTX file on one passes through as bytes (said and counted by the run).
pub(crate) fn is_evtx(file: &File) -> bool {
    use std::os::unix::fs::FileExt;
    let mut head = [0u8; 8];
    matches!(file.read_at(&mut head, 0), Ok(8)) && iis_tagger::evtx::is_evtx(&head)
}

/// Folders are walked at most this deep (`--recursive`).
const MAX_DEPTH: usize = 64;

/// The files to read: each FILE, and with `recursive` every file under each folder, in
/// path order, names starting with `.` left out; symbolic links to folders are not followed
/// (a link to a file is read). A folder without `recursive` is an error that says so.
pub(crate) fn expand_inputs(files: &[PathBuf], recursive: bool) -> Result<Vec<PathBuf>, Failure> {
    fn walk(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) -> Result<(), Failure> {
        if depth > MAX_DEPTH {
            return Err(Failure::setup(format!("{}: folders nest deeper than {MAX_DEPTH}", dir.display())));
        }
        let failed = |e: io::Error| Failure::setup(format!("{}: {e}", dir.display()));
        let mut paths = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(failed)? {
            let entry = entry.map_err(failed)?;
            if !entry.file_name().to_string_lossy().starts_with('.') {
                paths.push(entry.path());
            }
        }
        paths.sort();
        for path in paths {
            let meta =
                std::fs::symlink_metadata(&path).map_err(|e| Failure::setup(format!("{}: {e}", path.display())))?;
            if meta.is_dir() {
                walk(&path, depth + 1, out)?;
            } else if meta.is_file() || (meta.file_type().is_symlink() && path.is_file()) {
                out.push(path);
            } else {
                // A pipe, socket or device would block or never end; a link to a folder
                // could loop. Said, not read.
                eprintln!("iis-tagger: {}: skipped: not a regular file", path.display());
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    for path in files {
        if path.as_os_str() != "-" && path.is_dir() {
            if !recursive {
                return Err(Failure::setup(format!(
                    "{}: is a folder (--recursive reads every file under it)",
                    path.display()
                )));
            }
            walk(path, 0, &mut out)?;
        } else {
            out.push(path.clone());
        }
    }
    Ok(out)
}

pub(crate) fn open_inputs(files: &[PathBuf]) -> Result<Vec<Input>, Failure> {
    if files.is_empty() {
        let file = stdin_file().map_err(|e| Failure::setup(format!("stdin: {e}")))?;
        return Ok(vec![Input { name: "stdin".into(), evtx: is_evtx(&file), file, head: Vec::new() }]);
    }
    files
        .iter()
        .map(|path| {
            let name = path.display().to_string();
            let file = if path.as_os_str() == "-" { stdin_file() } else { File::open(path) };
            file.map(|file| Input { name: name.clone(), evtx: is_evtx(&file), file, head: Vec::new() })
                .map_err(|e| Failure::setup(format!("{name}: {e}")))
        })
        .collect()
}

pub(crate) fn open_output(path: Option<&Path>, inputs: &[PathBuf]) -> Result<File, Failure> {
    let Some(path) = path else {
        return Ok(File::from(
            io::stdout().as_fd().try_clone_to_owned().map_err(|e| Failure::setup(format!("stdout: {e}")))?,
        ));
    };
    if let Ok(out) = path.canonicalize() {
        if inputs.iter().any(|i| i.canonicalize().is_ok_and(|i| i == out)) {
            return Err(Failure::setup(format!("{}: the output file is also an input", path.display())));
        }
    }
    File::create(path).map_err(|e| Failure::setup(format!("{}: {e}", path.display())))
}

/// How writing ended.
pub(crate) enum WriteError {
    /// The reader went away: stop quietly.
    Closed,
    /// Anything else.
    Io(io::Error),
}

pub(crate) fn write_out(output: &mut impl io::Write, out: &mut impl Emit, input: &[u8]) -> Result<(), WriteError> {
    let result = out.emit(output, input);
    result.map_err(|e| if e.kind() == io::ErrorKind::BrokenPipe { WriteError::Closed } else { WriteError::Io(e) })
}
