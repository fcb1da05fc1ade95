//! The tagging run: inputs → [`Stream`](iis_tagger::Stream) → output, with signals,
//! a closed downstream and write errors handled as ARCHITECTURE §1.7 says.

use std::fs::File;
use std::io::{self, Read};

use iis_tagger::driver::Settings;
use iis_tagger::{Driver, End, MatchesOnly, Stats, Tagger};

use super::args::TagArgs;
use super::common::{
    Failure, Input, READ_BYTES, WriteError, build_tagger, expand_inputs, open_inputs, open_output, write_out,
};
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
            File::create(path).map_err(|e| Failure::setup(format!("--attack-layer {}: {e}", path.display())))?,
        )),
        None => None,
    };
    let (tagger, skipped) = build_tagger(&args.rules, config)?;
    let tagger = std::sync::Arc::new(tagger);
    for &r in tagger.prefilter().unconstrained_rules() {
        let slug = &tagger.rules().rules()[r as usize].meta.slug;
        eprintln!("iis-tagger: note: rule `{slug}` gives the prefilter no literal; every JSON line is parsed for it");
    }
    let mut total = Stats::new(tagger.rules().rules().len());
    let result = if let Some(path) = &args.follow {
        let mut output = open_output(args.output.as_deref(), std::slice::from_ref(path))?;
        signal::install().map_err(|e| Failure::setup(format!("installing signal handlers: {e}")))?;
        super::follow::run(&tagger, path, args.state_file.as_deref(), &mut output, &mut total)
    } else if let Some(forward) = &args.forward {
        let inputs = open_inputs(&args.files)?;
        super::serve::pipe::run(tagger.clone(), inputs, forward, &mut total)
    } else {
        tag_to_output(args, &tagger, &mut total)
    };
    args.summary.print(&total, &tagger, &skipped, args.hunt_summary);
    if let Some((path, file)) = layer {
        let layer =
            iis_tagger::attack_layer::layer(tagger.rules().rules(), &total.matches, args.attack_layer_score.into());
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
fn tag_to_output(args: &TagArgs, tagger: &Tagger, total: &mut Stats) -> Result<(), Failure> {
    let files = expand_inputs(&args.files, args.recursive)?;
    let inputs = open_inputs(&files)?;
    let mut output = open_output(args.output.as_deref(), &files)?;
    signal::install().map_err(|e| Failure::setup(format!("installing signal handlers: {e}")))?;
    let progress = Progress::new(
        Progress::wanted(args.quiet, args.output.is_none()),
        inputs.len(),
        inputs.iter().map(|i| i.file.metadata().ok().filter(|m| m.is_file()).map(|m| m.len())).sum(),
    );
    let result = tag_inputs(args, tagger, inputs, &mut output, total, &progress);
    progress.finish();
    result
}

/// [`tag_to_output`] once the inputs, the output and the progress line are set up.
fn tag_inputs(
    args: &TagArgs,
    tagger: &Tagger,
    inputs: Vec<Input>,
    output: &mut File,
    total: &mut Stats,
    progress: &Progress,
) -> Result<(), Failure> {
    let threads = match args.threads {
        0 if tagger.prefilter().examines_every_line() => std::thread::available_parallelism().map_or(1, usize::from),
        0 => 1,
        n => n,
    };
    // EVTX files and --matches-only are read on one thread (the parallel path cuts line
    // input into blocks and writes it as it came).
    if threads > 1 && !args.matches_only && !inputs.iter().any(|i| i.evtx) {
        match super::parallel::run(tagger, threads, inputs, output, total, progress) {
            Ok(super::parallel::Ended::Signalled { dropped }) if dropped > 0 => {
                eprintln!("iis-tagger: stopped by signal; {dropped} bytes of an unfinished line were not written");
                Ok(())
            }
            Ok(_) => Ok(()),
            Err(e) => Err(e),
        }
    } else if args.matches_only {
        let mut sink = MatchesOnly::default();
        let result = run(tagger, inputs, output, total, &mut sink, progress);
        total.unmatched_dropped += sink.take_dropped();
        result
    } else {
        run(tagger, inputs, output, total, &mut Vectored::default(), progress)
    }
}

/// Records of an EVTX file fed to the driver at a time (whole records, as JSON lines).
const EVTX_BATCH_BYTES: usize = 256 * 1024;

fn run<E: Emit>(
    tagger: &Tagger,
    inputs: Vec<Input>,
    output: &mut File,
    total: &mut Stats,
    out: &mut E,
    progress: &Progress,
) -> Result<(), Failure> {
    // Page-aligned: the kernel copies into a misaligned buffer several times slower.
    let mut storage = vec![0u8; READ_BYTES + 4096];
    let offset = storage.as_ptr().align_offset(4096).min(4096);
    let buf = &mut storage[offset..offset + READ_BYTES];
    for mut input in inputs {
        // One input to its own output: a last line as it came, whole lines on a signal.
        let mut driver = Driver::new(tagger, Settings::default());
        let end = if input.evtx {
            evtx_records(input, &mut driver, out, output, total, progress)
        } else {
            pump(&mut input, &mut driver, buf, out, output, total, progress)
        };
        progress.file_done();
        let ending = match &end {
            Ok(end) => *end,
            Err(_) => End::Closed,
        };
        let ended = driver.end(ending, out);
        out.end_input();
        driver.drain_stats(total);
        end?;
        if ending == End::Closed {
            return Ok(());
        }
        match write_out(output, out, &[]) {
            Ok(()) => {}
            Err(WriteError::Closed) => return Ok(()),
            Err(WriteError::Io(e)) => return Err(Failure::io(format!("writing output: {e}"))),
        }
        if ending == End::Stop {
            if ended.dropped > 0 {
                eprintln!(
                    "iis-tagger: stopped by signal; {} bytes of an unfinished line were not written",
                    ended.dropped
                );
            }
            return Ok(());
        }
    }
    Ok(())
}

/// Reads one EVTX file, feeding its records to `driver` as JSON lines, a batch at a time,
/// and writing as it goes. A part of the file that cannot be read is named on stderr and
/// counted; reading goes on after it.
fn evtx_records<E: Emit>(
    input: Input,
    driver: &mut Driver<'_>,
    out: &mut E,
    output: &mut File,
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
    let read = iis_tagger::evtx::read_file(input.file, |at, json| {
        progress.advance(at.bytes_read.saturating_sub(read_to), 0, 0);
        read_to = read_to.max(at.bytes_read);
        batch.extend_from_slice(json);
        batch.push(b'\n');
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

/// Reads one input to its end, a signal or a closed output, feeding and writing as it goes.
fn pump<E: Emit>(
    input: &mut Input,
    driver: &mut Driver<'_>,
    buf: &mut [u8],
    out: &mut E,
    output: &mut File,
    total: &mut Stats,
    progress: &Progress,
) -> Result<End, Failure> {
    let mut first = true;
    loop {
        if driver.should_stop(signal::received()) {
            return Ok(End::Stop);
        }
        let n = match input.file.read(buf) {
            Ok(0) => return Ok(End::Eof),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Failure::io(format!("{}: {e}", input.name))),
        };
        if std::mem::take(&mut first) && iis_tagger::evtx::is_evtx(&buf[..n]) {
            // An EVTX file is read from its path (the reader seeks); on a stream it can only
            // pass through as the bytes it is.
            eprintln!("iis-tagger: {}: an EVTX file on a stream: passed through as bytes (give its path)", input.name);
            total.evtx_streams += 1;
        }
        let before = (driver.stats().lines, driver.stats().annotated);
        driver.feed(&buf[..n], out);
        progress.advance(n as u64, driver.stats().lines - before.0, driver.stats().annotated - before.1);
        match write_out(output, out, &buf[..n]) {
            Ok(()) => {}
            Err(WriteError::Closed) => return Ok(End::Closed),
            Err(WriteError::Io(e)) => return Err(Failure::io(format!("writing output: {e}"))),
        }
    }
}
