//! `--follow FILE`: tag a log file as it grows, for agents that run iis-tagger as their
//! `exec` source (Fluent Bit `exec`, Vector `exec` in streaming mode).
//!
//! Like `tail -F`: the file may not exist yet; when it is renamed away (rotation) the old
//! file is read to its end and the new one followed from its start; when it shrinks
//! (copytruncate) it is read again from its start. A line the old file ended without
//! `\n` is written ended by one.
//!
//! When the process reading stdout goes away — the pipe's read end closed, or the parent
//! gone — `--follow` sees it within [`POLL`] even while idle at the end of the file, and
//! ends as on a closed stdout ([`super::hangup`]): an agent that stops or dies does not
//! leave it running.
//!
//! With `--state-file`, the position after the last line written is kept there (with the
//! file's device and inode), saved at most every 100 ms while writing and whenever the
//! file is at its end, and at exit, so a restarted child resumes after it: on SIGTERM and
//! at a closed stdout, nothing is written twice or skipped; after a kill -9, the lines
//! written since the last save (at most 100 ms of them) are written again.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use iis_tagger::driver::{AtEof, OnStop, Settings};
use std::sync::Arc;

use iis_tagger::reload::Current;
use iis_tagger::{Driver, End, Tagger};

use super::common::{Failure, ReadBuf, WriteError, is_evtx, write_out};
use super::hangup::Watch;
use super::live::{Totals, follow_reload};
use super::output::Vectored;
use super::signal;

/// How the file's lines are ended: a line a rotated file ended without `\n` is ended by one
/// (the next file's lines follow it); a signal writes whole lines only (the state file
/// points before the unfinished one, which a restart reads again) and ends a line over the
/// limit already partly written with `\n` (its rest comes after a restart as a line of its
/// own).
const SETTINGS: Settings = Settings {
    input: iis_tagger::driver::Framing::Lines,
    output: iis_tagger::driver::Framing::Lines,
    at_eof: AtEof::Terminated,
    on_stop: OnStop::WholeRecords,
};

/// How often the file is looked at when at its end.
const POLL: Duration = Duration::from_millis(200);
/// Longest time between state saves while lines are being written.
const SAVE_EVERY: Duration = Duration::from_millis(100);

/// Which file, and where in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Position {
    dev: u64,
    ino: u64,
    offset: u64,
}

struct State {
    path: Option<PathBuf>,
    saved: Option<Position>,
    last_save: Instant,
}

impl State {
    fn load(path: Option<&Path>) -> Result<(State, Option<Position>), Failure> {
        let state = State { path: path.map(Path::to_path_buf), saved: None, last_save: Instant::now() };
        let Some(path) = path else { return Ok((state, None)) };
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((state, None)),
            Err(e) => return Err(Failure::setup(format!("{}: {e}", path.display()))),
        };
        let fields: Vec<u64> = text.split_whitespace().filter_map(|f| f.parse().ok()).collect();
        match fields[..] {
            [dev, ino, offset] => Ok((state, Some(Position { dev, ino, offset }))),
            _ => Err(Failure::setup(format!(
                "{}:1: not a state file (expected `DEVICE INODE OFFSET`); remove it to start afresh",
                path.display()
            ))),
        }
    }

    /// Saves `pos` (atomically: a new file renamed over the old).
    fn save(&mut self, pos: Position) -> Result<(), Failure> {
        self.last_save = Instant::now();
        let Some(path) = &self.path else { return Ok(()) };
        if self.saved == Some(pos) {
            return Ok(());
        }
        let tmp = path.with_extension("tmp");
        let text = format!("{} {} {}\n", pos.dev, pos.ino, pos.offset);
        std::fs::write(&tmp, text)
            .and_then(|()| std::fs::rename(&tmp, path))
            .map_err(|e| Failure::io(format!("{}: {e}", path.display())))?;
        self.saved = Some(pos);
        Ok(())
    }
}

/// The file being followed.
struct Followed {
    file: File,
    dev: u64,
    ino: u64,
    /// Bytes of it read.
    read: u64,
}

/// Opens `path`, waiting for it to exist (or a signal, or the reader of `output` to go).
fn open_waiting(path: &Path, watch: &Watch, output: &File) -> Result<Option<Followed>, Failure> {
    loop {
        match File::open(path) {
            Ok(file) => {
                let meta = file.metadata().map_err(|e| Failure::io(format!("{}: {e}", path.display())))?;
                return Ok(Some(Followed { file, dev: meta.dev(), ino: meta.ino(), read: 0 }));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(Failure::io(format!("{}: {e}", path.display()))),
        }
        if signal::received() > 0 || watch.gone(output) {
            return Ok(None);
        }
        std::thread::sleep(POLL);
    }
}

/// What the path holds now, compared with the file being read.
enum Change {
    Same,
    /// Renamed away or deleted, maybe replaced.
    Rotated,
    /// Shorter than what was read.
    Truncated,
}

fn look(path: &Path, f: &Followed) -> Change {
    match std::fs::metadata(path) {
        Ok(m) if m.dev() != f.dev || m.ino() != f.ino => Change::Rotated,
        Ok(m) if m.len() < f.read => Change::Truncated,
        Ok(_) => Change::Same,
        // Gone: the old file is read to its end; a new one is waited for.
        Err(_) => Change::Rotated,
    }
}

/// Why following stopped.
enum Stop {
    /// SIGTERM/SIGINT: everything read is written.
    Signal,
    /// Stdout's reader went away: the last batch may not have been written.
    Closed,
    /// An error.
    Failed(Failure),
    /// A reload stored a new rule set: the driver moves to it, and following goes on.
    Reload,
}

impl From<WriteError> for Stop {
    fn from(e: WriteError) -> Stop {
        match e {
            WriteError::Closed => Stop::Closed,
            WriteError::Io(e) => Stop::Failed(Failure::io(format!("writing output: {e}"))),
        }
    }
}

/// Follows `path` until a signal or a closed stdout.
pub fn run(
    rules: &Current,
    path: &Path,
    state_path: Option<&Path>,
    output: &mut File,
    totals: &mut Totals,
) -> Result<(), Failure> {
    let (mut state, resume) = State::load(state_path)?;
    let mut storage = ReadBuf::new();
    let buf = storage.get();
    let mut out = Vectored::default();
    let watch = Watch::new(output);
    let Some(mut f) = open_waiting(path, &watch, output)? else { return Ok(()) };
    // An EVTX file is not a log of lines: followed, its bytes would pass through read by
    // nothing. Refused, not passed over.
    if is_evtx(&f.file) {
        return Err(Failure::setup(format!(
            "{}: an EVTX file: --follow reads lines (give it as a FILE)",
            path.display()
        )));
    }
    if let Some(p) = resume.filter(|p| p.dev == f.dev && p.ino == f.ino) {
        let len = f.file.metadata().map(|m| m.len()).unwrap_or(0);
        if p.offset <= len {
            f.file.seek(SeekFrom::Start(p.offset)).map_err(|e| Failure::io(format!("{}: {e}", path.display())))?;
            f.read = p.offset;
        }
    }
    let mut seen = rules.generation();
    let mut on = rules.get();
    let mut driver = Driver::new(&on, SETTINGS);
    let stop = loop {
        let stop =
            follow(&on, (rules, seen), path, &mut f, &mut driver, &mut state, buf, &mut out, output, totals, &watch);
        match stop {
            Ok(Stop::Reload) => follow_reload!(rules, driver, on, &mut seen, totals),
            Ok(stop) | Err(stop) => break stop,
        }
    };
    match stop {
        Stop::Signal => {
            let pos = position(&f, &driver);
            driver.end(End::Stop, &mut out);
            totals.drain(&mut driver, &on);
            if let Err(e) = write_out(output, &mut out, &[]) {
                return match Stop::from(e) {
                    Stop::Failed(f) => Err(f),
                    _ => Ok(()),
                };
            }
            state.save(pos)
        }
        Stop::Closed | Stop::Reload => {
            totals.drain(&mut driver, &on);
            Ok(())
        }
        Stop::Failed(failure) => {
            totals.drain(&mut driver, &on);
            Err(failure)
        }
    }
}

/// The loop of [`run`]; ends only with a [`Stop`].
#[allow(clippy::too_many_arguments)]
fn follow<'t>(
    on: &'t Arc<Tagger>,
    (rules, seen): (&Current, u64),
    path: &Path,
    f: &mut Followed,
    driver: &mut Driver<'t>,
    state: &mut State,
    buf: &mut [u8],
    out: &mut Vectored,
    output: &mut File,
    totals: &mut Totals,
    watch: &Watch,
) -> Result<Stop, Stop> {
    let io = |e: io::Error| Stop::Failed(Failure::io(format!("{}: {e}", path.display())));
    loop {
        if signal::received() > 0 {
            return Ok(Stop::Signal);
        }
        if rules.generation() != seen {
            return Ok(Stop::Reload);
        }
        let n = match f.file.read(buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io(e)),
        };
        if n > 0 {
            f.read += n as u64;
            driver.feed(&buf[..n], out);
            write_out(output, out, &buf[..n])?;
            if state.last_save.elapsed() >= SAVE_EVERY {
                state.save(position(f, driver)).map_err(Stop::Failed)?;
            }
            continue;
        }
        // At the end: save, wait, and see whether the file was rotated or truncated.
        state.save(position(f, driver)).map_err(Stop::Failed)?;
        std::thread::sleep(POLL);
        if watch.gone(output) {
            // Everything written was saved just above: a restart resumes there.
            return Ok(Stop::Closed);
        }
        let change = look(path, f);
        if let Change::Same = change {
            continue;
        }
        // Whatever was appended before a rotation is read first.
        if let Change::Rotated = change {
            drain(f, driver, buf, out, output)?;
        }
        // The line the old file (or the old content) ended without `\n` is ended by one.
        driver.end(End::Eof, out);
        write_out(output, out, &[])?;
        totals.drain(driver, on);
        *driver = Driver::new(on, SETTINGS);
        match change {
            Change::Truncated => {
                f.file.seek(SeekFrom::Start(0)).map_err(io)?;
                f.read = 0;
            }
            _ => match open_waiting(path, watch, output).map_err(Stop::Failed)? {
                Some(new) => *f = new,
                None => return Ok(Stop::Signal),
            },
        }
        state.save(position(f, driver)).map_err(Stop::Failed)?;
    }
}

/// Where the next line starts: after the last line written (an unfinished line held is
/// read again after a restart; one over the limit, partly written, is not).
fn position(f: &Followed, driver: &Driver<'_>) -> Position {
    Position { dev: f.dev, ino: f.ino, offset: f.read - driver.held_bytes() as u64 }
}

/// Reads a rotated file to its end.
fn drain(
    f: &mut Followed,
    driver: &mut Driver<'_>,
    buf: &mut [u8],
    out: &mut Vectored,
    output: &mut File,
) -> Result<(), Stop> {
    loop {
        let n = match f.file.read(buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Stop::Failed(Failure::io(format!("reading a rotated file: {e}")))),
        };
        f.read += n as u64;
        driver.feed(&buf[..n], out);
        write_out(output, out, &buf[..n])?;
    }
}
