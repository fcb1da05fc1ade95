//! The tagging run: inputs → [`Stream`](iis_tagger::Stream) → output, with signals,
//! a closed downstream and write errors handled as ARCHITECTURE §1.7 says.

use std::fs::File;
use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{SyncSender, sync_channel};

use std::sync::Arc;

use iis_tagger::driver::Settings;
use iis_tagger::reload::Current;
use iis_tagger::{Driver, End, MatchesOnly, Stats, Tagger};

use super::args::TagArgs;
use super::common::{
    Failure, Input, READ_BYTES, ReadBuf, WriteError, expand_inputs, open_inputs, open_output, write_out,
};
use super::live::{Live, Totals, follow_reload};
use super::output::{Emit, Vectored};
use super::progress::Progress;
use super::signal;

/// Runs the tagger over the inputs of `args`.
pub fn tag(args: &TagArgs) -> Result<(), Failure> {
    let config = iis_tagger::Config { summary: args.hunt_summary, ..args.core.config(!args.no_prefilter) };
    // The layer's file is made before the hunt: a path that cannot be written is refused
    // before the work, not after it.
    let layer = match &args.attack_layer {
        Some(path) => Some((
            path,
            // Opened, not emptied: a run that fails before its end leaves an earlier layer as
            // it was.
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .open(path)
                .map_err(|e| Failure::setup(format!("--attack-layer {}: {e}", path.display())))?,
        )),
        None => None,
    };
    let (live, skipped) = Live::load(&args.rules, config)?;
    let live = Arc::new(live);
    let tagger = live.tagger();
    for &r in tagger.prefilter().unconstrained_rules() {
        let slug = &tagger.rules().rules()[r as usize].meta.slug;
        eprintln!("iis-tagger: note: rule `{slug}` gives the prefilter no literal; every JSON line is parsed for it");
    }
    // SIGHUP reloads the rules in every run (its default action would end the process):
    // a stream switches between records.
    live.watch()?;
    let mut totals = Totals::new(tagger.clone());
    let result = if let Some(path) = &args.follow {
        let mut output = open_output(args.output.as_deref(), std::slice::from_ref(path))?;
        signal::install().map_err(|e| Failure::setup(format!("installing signal handlers: {e}")))?;
        super::follow::run(live.current(), path, args.state_file.as_deref(), &mut output, &mut totals)
    } else if let Some(forward) = &args.forward {
        let inputs = open_inputs(&args.files)?;
        // `--forward` passes a file's bytes on as lines: an EVTX file would go through as
        // binary, read by nothing. Refused, not passed over.
        if let Some(evtx) = inputs.iter().find(|i| i.evtx) {
            return Err(Failure::setup(format!(
                "{}: an EVTX file: --forward reads lines (tag it to stdout and pipe that)",
                evtx.name
            )));
        }
        super::serve::pipe::run(live.current().clone(), inputs, forward, &mut totals)
    } else {
        tag_to_output(args, live.current(), &mut totals)
    };
    let tagger = live.tagger();
    totals.move_to(&tagger);
    let total = &totals.stats;
    args.summary.print(total, &tagger, &skipped, args.hunt_summary, Some(live.current().status()));
    if let Some((path, file)) = layer {
        let layer =
            iis_tagger::attack_layer::layer(tagger.rules().rules(), &total.matches, args.attack_layer_score.into());
        file.set_len(0).map_err(|e| Failure::io(format!("writing --attack-layer {}: {e}", path.display())))?;
        let mut out = io::BufWriter::new(file);
        serde_json::to_writer_pretty(&mut out, &layer)
            .map_err(io::Error::from)
            .and_then(|()| io::Write::write_all(&mut out, b"\n"))
            .and_then(|()| io::Write::flush(&mut out))
            .map_err(|e| Failure::io(format!("writing --attack-layer {}: {e}", path.display())))?;
    }
    result
}

/// The inputs to stdout or `-o FILE`, on one thread or several.
fn tag_to_output(args: &TagArgs, rules: &Current, totals: &mut Totals) -> Result<(), Failure> {
    let total = &mut totals.stats;
    let files = expand_inputs(&args.files, args.recursive)?;
    let mut inputs = open_inputs(&files)?;
    let mut output = open_output(args.output.as_deref(), &files)?;
    signal::install().map_err(|e| Failure::setup(format!("installing signal handlers: {e}")))?;
    // An EVTX file is read from a file (its reader seeks): one on a stream is copied to a
    // temporary file first, as evtx_dump does — before the thread choice, which EVTX input
    // changes.
    for input in &mut inputs {
        if input.starts_as_evtx_stream() {
            total.evtx_streams += 1;
            let head = std::mem::take(&mut input.head);
            input.file = spool(&head, &mut input.file)
                .map_err(|e| Failure::io(format!("{}: copying an EVTX stream to a temporary file: {e}", input.name)))?;
            input.evtx = true;
        }
    }
    let progress = Progress::new(
        Progress::wanted(args.quiet, args.output.is_none()),
        inputs.len(),
        inputs.iter().map(|i| i.file.metadata().ok().filter(|m| m.is_file()).map(|m| m.len())).sum(),
    );
    let result = tag_inputs(args, rules, inputs, &mut output, totals, &progress);
    progress.finish();
    result
}

/// [`tag_to_output`] once the inputs, the output and the progress line are set up.
fn tag_inputs(
    args: &TagArgs,
    rules: &Current,
    inputs: Vec<Input>,
    output: &mut File,
    totals: &mut Totals,
    progress: &Progress,
) -> Result<(), Failure> {
    let tagger = rules.get();
    let cores = || std::thread::available_parallelism().map_or(1, usize::from);
    let evtx_files = inputs.iter().filter(|i| i.evtx).count();
    let threads = match args.threads {
        0 if tagger.prefilter().examines_every_line() || evtx_files > 1 => cores(),
        0 => 1,
        n => n,
    };
    // Line input is cut into blocks of lines for the threads and written as it came; EVTX
    // files and --matches-only, whose output is not the input's bytes, are tagged a whole
    // input per thread.
    if threads > 1 && inputs.len() > 1 && (args.matches_only || evtx_files > 0) {
        if args.matches_only {
            run_inputs_in_parallel::<MatchesOnly>(rules, threads, inputs, output, totals, progress)
        } else {
            run_inputs_in_parallel::<Vectored>(rules, threads, inputs, output, totals, progress)
        }
    } else if threads > 1 && !args.matches_only && evtx_files == 0 {
        match super::parallel::run(rules, threads, inputs, output, totals, progress) {
            Ok(super::parallel::Ended::Signalled { dropped }) if dropped > 0 => {
                progress.say(&format!(
                    "iis-tagger: stopped by signal; {dropped} bytes of an unfinished line were not written"
                ));
                Ok(())
            }
            Ok(_) => Ok(()),
            Err(e) => Err(e),
        }
    } else if args.matches_only {
        let mut sink = MatchesOnly::default();
        let result = run(rules, inputs, output, totals, &mut sink, progress);
        totals.stats.unmatched_dropped += sink.take_dropped();
        result
    } else {
        run(rules, inputs, output, totals, &mut Vectored::default(), progress)
    }
}

/// Records of an EVTX file fed to the driver at a time (whole records, as JSON lines).
const EVTX_BATCH_BYTES: usize = 256 * 1024;

fn run<E: Emit>(
    rules: &Current,
    inputs: Vec<Input>,
    output: &mut File,
    totals: &mut Totals,
    out: &mut E,
    progress: &Progress,
) -> Result<(), Failure> {
    let mut buf = ReadBuf::new();
    let mut on = Reading::new(rules);
    for input in inputs {
        if let Next::Stop = one_input(&mut on, input, buf.get(), output, totals, out, progress)? {
            break;
        }
    }
    Ok(())
}

/// Whether the inputs after one are read.
enum Next {
    Go,
    /// A signal, or the output's reader went away.
    Stop,
}

/// The rule set a thread reads its inputs with, and its reloads.
struct Reading<'r> {
    rules: &'r Current,
    on: Arc<Tagger>,
    seen: u64,
}

impl<'r> Reading<'r> {
    fn new(rules: &'r Current) -> Reading<'r> {
        Reading { seen: rules.generation(), on: rules.get(), rules }
    }
}

/// One input to its own output: a last line as it came, whole lines on a signal. A
/// reload moves it to the new rules between two reads (an EVTX file is read whole by the
/// rules in use at its start).
fn one_input<E: Emit>(
    reading: &mut Reading<'_>,
    mut input: Input,
    buf: &mut [u8],
    output: &mut impl Write,
    totals: &mut Totals,
    out: &mut E,
    progress: &Progress,
) -> Result<Next, Failure> {
    if let Some(next) = reading.rules.newer(&reading.on, &mut reading.seen) {
        reading.on = next;
    }
    let rules = reading.rules;
    let mut on = reading.on.clone();
    let mut driver = Driver::new(&on, Settings::default());
    let end = if input.evtx {
        evtx_records(input, &mut driver, out, output, &mut totals.stats, progress)
    } else {
        let mut pending = None;
        loop {
            match pump(&mut input, &mut driver, buf, pending.take(), out, output, progress, (rules, reading.seen)) {
                Ok(Pumped::Reload { read }) => {
                    follow_reload!(rules, driver, on, &mut reading.seen, totals);
                    pending = Some(read);
                }
                Ok(Pumped::End(end)) => break Ok(end),
                Err(e) => break Err(e),
            }
        }
    };
    progress.file_done();
    let ending = match &end {
        Ok(end) => *end,
        Err(_) => End::Closed,
    };
    let ended = driver.end(ending, out);
    out.end_input();
    totals.drain(&mut driver, &on);
    drop(driver);
    reading.on = on;
    end?;
    if ending == End::Closed {
        return Ok(Next::Stop);
    }
    match write_out(output, out, &[]) {
        Ok(()) => {}
        Err(WriteError::Closed) => return Ok(Next::Stop),
        Err(WriteError::Io(e)) => return Err(Failure::io(format!("writing output: {e}"))),
    }
    if ending == End::Stop {
        if ended.dropped > 0 {
            progress.say(&format!(
                "iis-tagger: stopped by signal; {} bytes of an unfinished line were not written",
                ended.dropped
            ));
        }
        return Ok(Next::Stop);
    }
    Ok(Next::Go)
}

/// Output pieces of an input tagged on a thread of its own, queued for the writer at most
/// this many ...
const QUEUED_PIECES: usize = 8;
/// ... of at least this many bytes (a piece is sent once it holds them).
const PIECE_BYTES: usize = 256 * 1024;

/// Whole inputs tagged on `threads` threads at once (EVTX files, `--matches-only`), each
/// to a queue of its own, written in input order by this thread: the output is what one
/// thread writes, and memory is bounded by `threads` queues of [`QUEUED_PIECES`] pieces
/// (at most `threads` inputs are taken and not yet written). A thread that has tagged an
/// input ahead of the one being written waits for room.
fn run_inputs_in_parallel<E: Emit + Default>(
    rules: &Current,
    threads: usize,
    inputs: Vec<Input>,
    output: &mut File,
    totals: &mut Totals,
    progress: &Progress,
) -> Result<(), Failure> {
    let (senders, receivers): (Vec<_>, Vec<_>) = inputs.iter().map(|_| sync_channel(QUEUED_PIECES)).unzip();
    let work = std::sync::Mutex::new(inputs.into_iter().zip(senders));
    // A thread takes an input only with a token, and the writer gives one back for each
    // input written: at most `threads` inputs are taken and not yet written, so at most
    // that many queues hold output, however many inputs wait behind a slow one.
    let (token_tx, token_rx) = sync_channel::<()>(threads);
    for _ in 0..threads {
        token_tx.send(()).expect("room for every token");
    }
    let tokens = std::sync::Mutex::new(token_rx);
    let stop = AtomicBool::new(false);
    // Stopping (a signal, a closed output, an error): the inputs no thread has taken are
    // dropped with their queues, so that the writing thread does not wait for them.
    let halt = || {
        stop.store(true, Ordering::SeqCst);
        if let Ok(mut rest) = work.lock() {
            rest.by_ref().for_each(drop);
        }
    };
    let worker = || {
        // A thread that panics halts the others too, so that the writer does not wait for
        // the inputs it would have taken.
        let _halt_on_panic = OnPanic(&halt);
        let mut reading = Reading::new(rules);
        let mut stats = Totals::new(reading.on.clone());
        let mut buf = ReadBuf::new();
        let mut out = E::default();
        loop {
            if stop.load(Ordering::SeqCst) {
                break;
            }
            if !tokens.lock().is_ok_and(|t| t.recv().is_ok()) {
                break;
            }
            let Some((input, tx)) = work.lock().ok().and_then(|mut w| w.next()) else { break };
            let mut pieces = Pieces { piece: Vec::new(), tx };
            let next = one_input(&mut reading, input, buf.get(), &mut pieces, &mut stats, &mut out, progress);
            let flushed = pieces.flush();
            match next {
                Ok(Next::Go) if flushed.is_ok() => {}
                Ok(_) => {
                    halt();
                    break;
                }
                Err(e) => {
                    halt();
                    stats.stats.unmatched_dropped += out.take_dropped();
                    return (stats, Err(e));
                }
            }
        }
        stats.stats.unmatched_dropped += out.take_dropped();
        (stats, Ok(()))
    };
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads).map(|_| scope.spawn(worker)).collect();
        let mut failed = None;
        // A write that fails drops every queue (the loop's receivers): the threads' next
        // sends fail as on a closed pipe, and they stop.
        'inputs: for rx in receivers {
            for piece in rx {
                if let Err(e) = output.write_all(&piece) {
                    if e.kind() != io::ErrorKind::BrokenPipe {
                        failed = Some(Failure::io(format!("writing output: {e}")));
                    }
                    halt();
                    break 'inputs;
                }
            }
            let _ = token_tx.try_send(());
        }
        // Threads waiting for a token end.
        drop(token_tx);
        let workers: Vec<_> = workers.into_iter().map(|w| w.join()).collect();
        // Every thread's totals are added in the rule order of the set in use at the end.
        totals.move_to(&rules.get());
        for w in workers {
            let (stats, result) = w.unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            totals.absorb(stats);
            if let Err(e) = result {
                failed.get_or_insert(e);
            }
        }
        failed.map_or(Ok(()), Err)
    })
}

/// Calls its function when dropped while the thread panics.
struct OnPanic<'a>(&'a (dyn Fn() + Sync));

impl Drop for OnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            (self.0)();
        }
    }
}

/// A writer that queues what it is given for the writing thread, in pieces.
struct Pieces {
    piece: Vec<u8>,
    tx: SyncSender<Vec<u8>>,
}

impl Pieces {
    fn send(&mut self) -> io::Result<()> {
        let piece = std::mem::replace(&mut self.piece, Vec::with_capacity(PIECE_BYTES));
        // The writing thread has stopped (its output is closed): as a closed pipe.
        self.tx.send(piece).map_err(|_| io::Error::from(io::ErrorKind::BrokenPipe))
    }
}

impl Write for Pieces {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.piece.extend_from_slice(bytes);
        if self.piece.len() >= PIECE_BYTES {
            self.send()?;
        }
        Ok(bytes.len())
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        let mut n = 0;
        for b in bufs {
            self.piece.extend_from_slice(b);
            n += b.len();
        }
        if self.piece.len() >= PIECE_BYTES {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.piece.is_empty() { Ok(()) } else { self.send() }
    }
}

/// Reads one EVTX file, feeding its records to `driver` as JSON lines, a batch at a time,
/// and writing as it goes. A part of the file that cannot be read is named on stderr and
/// counted; reading goes on after it.
fn evtx_records<E: Emit>(
    input: Input,
    driver: &mut Driver<'_>,
    out: &mut E,
    output: &mut impl Write,
    total: &mut Stats,
    progress: &Progress,
) -> Result<End, Failure> {
    let len = input.file.metadata().map_or(0, |m| m.len());
    let mut read_to = 0;
    let mut batch = Vec::with_capacity(EVTX_BATCH_BYTES + 64 * 1024);
    let mut end = End::Eof;
    let mut failed = None;
    let mut flush = |batch: &mut Vec<u8>, driver: &mut Driver<'_>| -> bool {
        let before = (driver.stats().lines, driver.stats().annotated);
        driver.feed(batch, out);
        progress.advance(0, driver.stats().lines - before.0, driver.stats().annotated - before.1);
        let written = write_out(output, out, batch);
        batch.clear();
        match written {
            Ok(()) if driver.should_stop(signal::received()) => end = End::Stop,
            Ok(()) => return true,
            Err(WriteError::Closed) => end = End::Closed,
            Err(WriteError::Io(e)) => failed = Some(Failure::io(format!("writing output: {e}"))),
        }
        false
    };
    let read = iis_tagger::evtx::read_file(input.file, |at, lines| {
        progress.advance(at.bytes_read.saturating_sub(read_to), 0, 0);
        read_to = read_to.max(at.bytes_read);
        batch.extend_from_slice(lines);
        batch.len() < EVTX_BATCH_BYTES || flush(&mut batch, driver)
    });
    total.evtx_files += 1;
    let read = match read {
        Ok(read) => read,
        Err(e) => {
            // Its header cannot be read: no record can be; the other inputs are read.
            progress.say(&format!("iis-tagger: {}: skipped: {e}", input.name));
            progress.advance(len, 0, 0);
            total.evtx_damaged += 1;
            return Ok(End::Eof);
        }
    };
    if !read.stopped && !batch.is_empty() {
        flush(&mut batch, driver);
    }
    progress.advance(len.saturating_sub(read_to), 0, 0);
    total.evtx_records += read.records;
    total.evtx_damaged += read.damage.len() as u64;
    for damage in &read.damage {
        progress.say(&format!("iis-tagger: {}: skipped {damage}", input.name));
    }
    match failed {
        Some(f) => Err(f),
        None => Ok(end),
    }
}

/// How [`pump`] returned.
enum Pumped {
    /// The input ended (or is to end) so.
    End(End),
    /// A reload stored a new rule set: the driver is to move to it, then [`pump`] goes on
    /// with the `read` bytes at the start of the buffer (read, not yet fed).
    Reload { read: usize },
}

/// Reads one input to its end, a signal, a closed output or a reload (of a set newer than
/// generation `seen` of `rules`: looked for after each read, so that what a read brings is
/// tagged by the set in use when it came), feeding and writing as it goes. `pending`:
/// bytes at the start of `buf` read before a reload, fed first.
#[allow(clippy::too_many_arguments)]
fn pump<E: Emit>(
    input: &mut Input,
    driver: &mut Driver<'_>,
    buf: &mut [u8],
    mut pending: Option<usize>,
    out: &mut E,
    output: &mut impl Write,
    progress: &Progress,
    (rules, seen): (&Current, u64),
) -> Result<Pumped, Failure> {
    loop {
        let n = match pending.take() {
            Some(n) => n,
            None => {
                if driver.should_stop(signal::received()) {
                    return Ok(Pumped::End(End::Stop));
                }
                let n = match input.read(buf) {
                    Ok(0) => return Ok(Pumped::End(End::Eof)),
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(Failure::io(format!("{}: {e}", input.name))),
                };
                if rules.generation() != seen {
                    return Ok(Pumped::Reload { read: n });
                }
                n
            }
        };
        let before = (driver.stats().lines, driver.stats().annotated);
        driver.feed(&buf[..n], out);
        progress.advance(n as u64, driver.stats().lines - before.0, driver.stats().annotated - before.1);
        match write_out(output, out, &buf[..n]) {
            Ok(()) => {}
            Err(WriteError::Closed) => return Ok(Pumped::End(End::Closed)),
            Err(WriteError::Io(e)) => return Err(Failure::io(format!("writing output: {e}"))),
        }
    }
}

/// `first` and the rest of `stream` in a temporary file, at its start. The file is deleted
/// as soon as it is made (its space is given back when it is closed); it is readable by
/// this user only. A signal ends the copy, and the run then stops as on any signal (whole
/// records written).
fn spool(first: &[u8], stream: &mut File) -> io::Result<File> {
    use std::io::{Seek, SeekFrom};
    use std::os::unix::fs::OpenOptionsExt;
    let dir = std::env::temp_dir();
    let mut n = 0;
    let (path, mut file) = loop {
        let path = dir.join(format!(".iis-tagger-{}-{n}.evtx", std::process::id()));
        match std::fs::OpenOptions::new().read(true).write(true).create_new(true).mode(0o600).open(&path) {
            Ok(file) => break (path, file),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && n < 100 => n += 1,
            Err(e) => return Err(e),
        }
    };
    std::fs::remove_file(&path)?;
    file.write_all(first)?;
    let mut buf = vec![0u8; READ_BYTES];
    while signal::received() == 0 {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(k) => file.write_all(&buf[..k])?,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    file.seek(SeekFrom::Start(0))?;
    Ok(file)
}
