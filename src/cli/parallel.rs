//! Tagging on several threads, with the output byte for byte what one thread writes.
//!
//! The reader cuts each input into blocks of whole lines (the tail of a read waits for
//! the next one), numbers them and hands them to the workers; each worker tags a block
//! with its own [`Stream`](iis_tagger::Stream) of the shared tagger; the writer puts the
//! tagged blocks back in order. A line longer than the limit is passed on as it streams,
//! by the reader, never held whole — as the single-threaded loop does. Memory is bounded:
//! a few blocks per worker in flight.
//!
//! Signals and a closed or failing output are handled as in the single-threaded loop: the
//! first SIGTERM/SIGINT stops reading once the line in progress is complete (a second one
//! stops at once), everything read is tagged and written, and the exit is clean.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};

use iis_tagger::driver::{Settings, StopGrace};
use iis_tagger::reload::Current;
use iis_tagger::tagger::{Framed, LineFramer};
use iis_tagger::{Driver, End, Stats, Tagger};

use super::common::{Failure, Input, READ_BYTES};
use super::live::Totals;
use super::progress::Progress;
use super::signal;

/// Blocks are cut at the last newline of a read of about this size.
const BLOCK_BYTES: usize = 1 << 20;

/// Blocks queued per worker (each at most `BLOCK_BYTES` plus a line).
const QUEUED_PER_WORKER: usize = 2;

/// Blocks read and not yet written, at most: a slow block cannot make the ones after it
/// pile up while waiting for their turn.
const IN_FLIGHT_PER_WORKER: usize = 4;

/// A block of whole lines to tag, or the end of an input (whose last line may lack its
/// `\n`: the stream is finished after it).
struct Job {
    seq: u64,
    /// The rule set in use when the block was cut: blocks switch to a reloaded set in
    /// input order, each block tagged whole by one set.
    rules: Arc<Tagger>,
    data: Vec<u8>,
    finish: bool,
    /// Lines at the block's start that are in its input's shape sample (the first
    /// `shape_sample_lines` of every input), as one stream would sample them.
    sample: u64,
}

/// Output for the writer, in sequence order.
struct Done {
    seq: u64,
    data: Vec<u8>,
}

/// How a run ended, for the caller.
pub enum Ended {
    /// Every input read to its end.
    Complete,
    /// Stopped by a signal; bytes of an unfinished line not written.
    Signalled { dropped: usize },
    /// The reader of the output went away.
    Closed,
}

/// Tags `inputs` into `output` with `threads` workers; adds the counters to `total`.
pub fn run(
    rules: &Current,
    threads: usize,
    inputs: Vec<Input>,
    output: &mut (dyn Write + Send),
    totals: &mut Totals,
    progress: &Progress,
) -> Result<Ended, Failure> {
    // The generation before the set: a reload between the two is seen at the first block.
    let seen = rules.generation();
    let tagger = rules.get();
    let closed = AtomicBool::new(false);
    let (job_tx, job_rx) = sync_channel::<Job>(threads * QUEUED_PER_WORKER);
    let job_rx = Arc::new(Mutex::new(job_rx));
    let (done_tx, done_rx) = sync_channel::<Done>(threads * QUEUED_PER_WORKER + 2);
    let in_flight = threads * IN_FLIGHT_PER_WORKER;
    let (token_tx, token_rx) = sync_channel::<()>(in_flight);
    for _ in 0..in_flight {
        token_tx.send(()).expect("room for every token");
    }
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                let (rx, tx) = (Arc::clone(&job_rx), done_tx.clone());
                let first = tagger.clone();
                scope.spawn(move || work(first, &rx, &tx, progress))
            })
            .collect();
        let closed_ref = &closed;
        let writer = scope.spawn(move || write(done_rx, output, closed_ref, &token_tx));
        let mut reader = Reader {
            rules,
            seen,
            tagger: tagger.clone(),
            jobs: job_tx,
            done: done_tx,
            tokens: token_rx,
            seq: 0,
            stats: Stats::new(tagger.rules().rules().len()),
            input_lines: 0,
            closed: &closed,
            progress,
        };
        let read = reader.read_all(inputs);
        let reader_stats = std::mem::take(&mut reader.stats);
        drop(reader);
        let workers: Vec<Totals> = workers.into_iter().map(|w| w.join().expect("a worker does not panic")).collect();
        // Every thread's totals in the rule order of the set in use now.
        totals.move_to(&rules.get());
        workers.into_iter().for_each(|w| totals.absorb(w));
        totals.stats.merge(&reader_stats);
        let written = writer.join().expect("the writer does not panic");
        match (read, written) {
            (Err(e), _) | (_, Err(e)) => Err(e),
            (Ok(_), Ok(())) if closed.load(Ordering::SeqCst) => Ok(Ended::Closed),
            (Ok(ended), Ok(())) => Ok(ended),
        }
    })
}

struct Reader<'a> {
    rules: &'a Current,
    /// The set in use (looked for again in `rules` for each block).
    tagger: Arc<Tagger>,
    /// The generation of `rules` last seen.
    seen: u64,
    jobs: SyncSender<Job>,
    done: SyncSender<Done>,
    /// One per block in flight, given back by the writer.
    tokens: Receiver<()>,
    seq: u64,
    /// Counters of what the reader passes on itself (lines over the limit).
    stats: Stats,
    /// Lines of the current input sent so far (counted until past the shape sample).
    input_lines: u64,
    closed: &'a AtomicBool,
    progress: &'a Progress,
}

impl Reader<'_> {
    /// The next block's number, once there is room for it.
    fn next_seq(&mut self) -> u64 {
        let _ = self.tokens.recv();
        self.seq += 1;
        self.seq
    }

    fn send_lines(&mut self, data: Vec<u8>, finish: bool) {
        let seq = self.next_seq();
        if let Some(next) = self.rules.newer(&self.tagger, &mut self.seen) {
            self.tagger = next;
        }
        let sample = self.tagger.config().shape_sample_lines.saturating_sub(self.input_lines);
        if sample > 0 {
            self.input_lines += memchr::memchr_iter(b'\n', &data).count() as u64;
        }
        // A closed channel means the run is ending; nothing more to do with the block.
        let _ = self.jobs.send(Job { seq, rules: self.tagger.clone(), data, finish, sample });
    }

    /// Input bytes passed on untagged (a line over the limit), counted.
    fn send_raw(&mut self, data: &[u8]) {
        self.stats.bytes += data.len() as u64;
        self.send_made(data);
    }

    /// Bytes straight to the writer, in turn.
    fn send_made(&mut self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        let seq = self.next_seq();
        let _ = self.done.send(Done { seq, data: data.to_vec() });
    }

    fn read_all(&mut self, inputs: Vec<Input>) -> Result<Ended, Failure> {
        for mut input in inputs {
            match self.read_one(&mut input)? {
                Ended::Complete => self.progress.file_done(),
                other => return Ok(other),
            }
        }
        Ok(Ended::Complete)
    }

    /// One input: blocks of whole lines to the workers, over-long lines straight to the
    /// writer. The input is cut by the driver's [`LineFramer`], so lines over the limit are
    /// found, passed on and counted exactly as one stream does it; a signal stops it as the
    /// driver's [`StopGrace`] says.
    fn read_one(&mut self, input: &mut Input) -> Result<Ended, Failure> {
        self.input_lines = 0;
        let mut framer = LineFramer::new(self.tagger.config().max_line_bytes);
        let mut grace = StopGrace::default();
        let mut buf = vec![0u8; READ_BYTES];
        let mut block: Vec<u8> = Vec::with_capacity(BLOCK_BYTES + READ_BYTES);
        loop {
            if self.closed.load(Ordering::SeqCst) {
                return Ok(Ended::Closed);
            }
            let (partial, held) = (framer.has_partial_line(), framer.pending_bytes());
            if grace.should_stop(signal::received(), partial, held) {
                if !block.is_empty() {
                    self.send_lines(std::mem::take(&mut block), false);
                }
                if framer.in_long_line() {
                    // A line over the limit partly written is ended: no line is torn.
                    self.send_made(b"\n");
                }
                return Ok(Ended::Signalled { dropped: framer.discard() });
            }
            let n = match input.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Failure::io(format!("{}: {e}", input.name))),
            };
            grace.read(n);
            self.progress.advance(n as u64, 0, 0);
            let chunk = &buf[..n];
            framer.feed(chunk, &mut |piece| self.framed(piece, chunk, &mut block));
            // A full block goes; so does what the reads so far completed when the source has
            // nothing more to read now (a quiet stream's records are not held back waiting
            // for a block to fill; a busy one still makes full blocks).
            let quiet = || n < buf.len() && input.head.is_empty() && !super::hangup::readable_now(&input.file);
            if block.len() >= BLOCK_BYTES || (!block.is_empty() && quiet()) {
                self.send_lines(std::mem::take(&mut block), false);
                block.reserve(BLOCK_BYTES + READ_BYTES);
            }
        }
        if framer.in_long_line() {
            // The input ended inside a line over the limit, written as it came.
            self.stats.unterminated += 1;
        }
        framer.finish(&mut |piece| self.framed(piece, &[], &mut block));
        self.send_lines(block, true);
        Ok(Ended::Complete)
    }

    /// What the framer gave: whole lines into the block; a line over the limit, after the
    /// block, straight to the writer.
    fn framed(&mut self, piece: Framed<'_>, input: &[u8], block: &mut Vec<u8>) {
        match piece {
            Framed::Lines { bytes, .. } => block.extend_from_slice(bytes),
            Framed::Oversized { held } => {
                if !block.is_empty() {
                    self.send_lines(std::mem::take(block), false);
                }
                self.stats.oversized_line();
                self.input_lines += 1;
                self.send_raw(held);
            }
            Framed::Pass(range) => self.send_raw(&input[range]),
            Framed::LongEnd => {}
        }
    }
}

/// A worker: tags blocks until the reader is done.
fn work(first: Arc<Tagger>, jobs: &Mutex<Receiver<Job>>, done: &SyncSender<Done>, progress: &Progress) -> Totals {
    // Blocks are whole lines but for an input's last: it ends as one input to its own
    // output does.
    let mut on = first;
    let mut driver = Driver::new(&on, Settings::default());
    let mut stats = Totals::new(on.clone());
    loop {
        let job = match jobs.lock().map(|rx| rx.recv()) {
            Ok(Ok(job)) => job,
            _ => break,
        };
        if !Arc::ptr_eq(&job.rules, &on) {
            // A reload: the block is tagged by the set it was cut under (blocks are whole
            // lines, so the driver holds nothing of a record here).
            let (parked, moved) = driver.park();
            stats.add(&moved, &on);
            on = job.rules.clone();
            driver = parked.resume(&on);
        }
        let mut out = Vec::with_capacity(job.data.len() + job.data.len() / 8);
        driver.sample_lines(job.sample);
        let before = (driver.stats().lines, driver.stats().annotated);
        driver.feed(&job.data, &mut out);
        progress.advance(0, driver.stats().lines - before.0, driver.stats().annotated - before.1);
        if job.finish {
            driver.end(End::Eof, &mut out);
            stats.drain(&mut driver, &on);
            driver = Driver::new(&on, Settings::default());
        }
        if done.send(Done { seq: job.seq, data: out }).is_err() {
            break;
        }
    }
    stats.drain(&mut driver, &on);
    stats
}

/// The writer: tagged blocks back in order.
fn write(
    done: Receiver<Done>,
    output: &mut (dyn Write + Send),
    closed: &AtomicBool,
    tokens: &SyncSender<()>,
) -> Result<(), Failure> {
    let mut next = 1u64;
    let mut waiting: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    let mut failed = None;
    for d in done {
        waiting.insert(d.seq, d.data);
        while let Some(data) = waiting.remove(&next) {
            next += 1;
            let _ = tokens.try_send(());
            if failed.is_some() || closed.load(Ordering::SeqCst) {
                continue;
            }
            match output.write_all(&data) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::BrokenPipe => closed.store(true, Ordering::SeqCst),
                Err(e) => {
                    failed = Some(Failure::io(format!("writing output: {e}")));
                    // Stop the reader as a closed output would.
                    closed.store(true, Ordering::SeqCst);
                }
            }
        }
    }
    match failed {
        Some(f) => Err(f),
        None => output.flush().or_else(|e| {
            if e.kind() == io::ErrorKind::BrokenPipe {
                Ok(())
            } else {
                Err(Failure::io(format!("writing output: {e}")))
            }
        }),
    }
}
