//! One connection (or one input of `--forward`): read, frame, tag, write whole records.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Mutex, OwnedMutexGuard, mpsc, watch};
use tokio::time::Instant;

use crate::driver::Settings;
use crate::reload::Current;
use crate::sink::Boundary;
use crate::{Driver, End, Sink, Tagger};

use super::budget::{Budget, Reservation};
use super::metrics::{Ending, Metrics};
use super::output::{Kind, Output, WriteError};

/// Bytes read at a time from a connection: at first a little, more while reads fill the
/// buffer, so that many quiet connections hold little memory and a busy one reads in
/// large pieces. A connection without a reservation of the memory budget reads with the
/// first size only ([`super::budget`]).
const READ_BYTES_FIRST: usize = 8 * 1024;
use super::budget::READ_BYTES;

/// A read that, with the unfinished record it completes, holds at least this many bytes is
/// tagged off the reactor ([`Conn::take`]). At the worst cost per byte of the adversarial
/// benchmark (about 200 ns with the SigmaHQ rules) a smaller one costs at most about 3 ms.
const INLINE_BYTES: usize = 16 * 1024;

/// A connection quiet for this long, and not inside a record, gives back the scratch memory
/// its past records grew ([`Conn::release`]), as do its read buffer and batches, and its
/// reservation of the memory budget.
const RELEASE_QUIET: Duration = Duration::from_secs(1);

/// After a termination signal, a connection is read until it has sent nothing for this
/// long (or ends), so that what its peer sent before the signal is not lost.
const DRAIN_QUIET: Duration = Duration::from_millis(100);

/// Per-connection limits.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Close after this long without a byte.
    pub idle: Option<Duration>,
    /// A record must be complete this long after its first byte.
    pub partial_line: Option<Duration>,
    /// TLS handshake deadline.
    pub handshake: Duration,
}

/// What every connection task shares.
pub struct Shared {
    /// The rule set in use, and its reloads.
    pub rules: Arc<Current>,
    /// Where records go.
    pub output: Arc<Mutex<Output>>,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// Limits.
    pub limits: Limits,
    /// Framing of the input and the output, and what each ending writes of an unfinished
    /// record (TCP: the output is shared, so it is ended by `\n`, and a signal writes what
    /// the peer sent; `--forward`: one input to its own output, as ARCHITECTURE §1.7 says).
    pub settings: Settings,
    /// Becomes true on a termination signal.
    pub shutdown: watch::Receiver<bool>,
    /// The memory the connections that are reading may hold.
    pub budget: Arc<Budget>,
}

impl Shared {
    /// Becomes true when the output is closed for good (stdout's reader went away).
    pub fn output_closed(&self) -> watch::Receiver<bool> {
        self.metrics.output_closed()
    }
}

/// A newly accepted connection: TLS handshake (within the deadline) if configured, then
/// [`handle`].
pub async fn accept(socket: TcpStream, peer: SocketAddr, acceptor: Option<tokio_rustls::TlsAcceptor>, shared: &Shared) {
    let _ = socket.set_nodelay(true);
    match acceptor {
        None => close(handle(socket, shared).await).await,
        Some(acceptor) => match tokio::time::timeout(shared.limits.handshake, acceptor.accept(socket)).await {
            Ok(Ok(tls)) => close(handle(tls, shared).await).await,
            Ok(Err(e)) => {
                shared.metrics.handshake_failed();
                shared.metrics.note(&format!("TLS handshake with {peer} failed: {e}"));
            }
            Err(_) => {
                shared.metrics.handshake_failed();
                shared.metrics.note(&format!("TLS handshake with {peer} timed out"));
            }
        },
    }
}

/// Closes a connection cleanly (FIN; for TLS, close_notify first), not waiting long.
async fn close<S: AsyncWrite + Unpin>(mut socket: S) {
    let _ = tokio::time::timeout(Duration::from_secs(1), socket.shutdown()).await;
}

/// Output collected from one read, cut where its kind changes: the driver's sink.
struct Batch {
    bytes: Vec<u8>,
    /// (end offset in `bytes`, kind of the bytes up to it); the last entry ends at `bytes.len()`.
    cuts: Vec<(usize, Kind)>,
    /// The output ends inside a record over the limit (between its [`Boundary`] marks).
    open: bool,
}

impl Sink for Batch {
    fn input(&mut self, input: &[u8], range: std::ops::Range<usize>) {
        self.bytes.extend_from_slice(&input[range]);
    }

    fn bytes(&mut self, bytes: &[u8]) {
        self.bytes.extend_from_slice(bytes);
    }

    fn boundary(&mut self, boundary: Boundary) {
        match boundary {
            Boundary::LongStart => {
                self.cut(Kind::Records);
                self.open = true;
            }
            Boundary::LongEnd => {
                self.cut(Kind::Close);
                self.open = false;
            }
        }
    }
}

impl Batch {
    fn new() -> Batch {
        Batch { bytes: Vec::new(), cuts: Vec::new(), open: false }
    }

    /// Marks that the bytes added since the last cut are of `kind`. A `Close` is always
    /// marked (it ends the record left open, even with no bytes of its own).
    fn cut(&mut self, kind: Kind) {
        let start = self.cuts.last().map_or(0, |c| c.0);
        if self.bytes.len() == start && kind != Kind::Close {
            return;
        }
        match self.cuts.last_mut() {
            Some(last) if last.1 == kind && kind != Kind::Close => last.0 = self.bytes.len(),
            _ => self.cuts.push((self.bytes.len(), kind)),
        }
    }

    /// Marks the bytes added since the last cut: the start of a record left open, or whole
    /// records.
    fn seal(&mut self) {
        self.cut(if self.open { Kind::Open } else { Kind::Records });
    }

    fn is_empty(&self) -> bool {
        self.cuts.is_empty()
    }

    fn clear(&mut self) {
        self.bytes.clear();
        self.cuts.clear();
    }
}

/// A connection's state.
/// (The connection's driver is not a field: it is bound to the rule set in use, which a
/// reload replaces, so `handle` holds both and hands the driver to each method.)
struct Conn<'s> {
    shared: &'s Shared,
    batch: Batch,
    writer: Writer,
    /// The output failed for good (stdout closed): stop.
    dead: bool,
    /// Bytes of buffers last reported to the metrics.
    memory: usize,
    /// The runtime has other workers (large reads are tagged off the reactor).
    multi_thread: bool,
}

/// The connection's writing half: a task of its own, so that the next read is tagged
/// while the last one is written (the two cores work at once). One batch is written and at
/// most one waits, so a connection holds at most three batches.
struct Writer {
    batches: Option<mpsc::Sender<Batch>>,
    recycled: mpsc::Receiver<Batch>,
    /// Bytes of capacity of the batches waiting in `recycled`.
    recycled_bytes: Arc<std::sync::atomic::AtomicUsize>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Writer {
    fn start(output: Arc<Mutex<Output>>, metrics: Arc<Metrics>) -> Writer {
        let (batches, queue) = mpsc::channel(1);
        let (recycle, recycled) = mpsc::channel(2);
        let recycled_bytes = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let task = tokio::spawn(write_batches(output, metrics, queue, recycle, recycled_bytes.clone()));
        Writer { batches: Some(batches), recycled, recycled_bytes, task: Some(task) }
    }

    /// An empty batch, reusing a written one's buffers when there is one.
    fn fresh(&mut self) -> Batch {
        self.take_recycled().unwrap_or_else(Batch::new)
    }

    fn take_recycled(&mut self) -> Option<Batch> {
        let batch = self.recycled.try_recv().ok()?;
        self.recycled_bytes.fetch_sub(batch.bytes.capacity(), std::sync::atomic::Ordering::Relaxed);
        Some(batch)
    }

    /// Hands a batch over, waiting while the previous one is still queued.
    async fn send(&mut self, batch: Batch) {
        if let Some(batches) = &self.batches {
            let _ = batches.send(batch).await;
        }
    }

    /// Waits until everything handed over is written.
    async fn finish(&mut self) {
        self.batches = None;
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

/// Writes a connection's batches in order, holding the output across each (and after one
/// that ends inside a record, until that record ends).
async fn write_batches(
    output: Arc<Mutex<Output>>,
    metrics: Arc<Metrics>,
    mut queue: mpsc::Receiver<Batch>,
    recycle: mpsc::Sender<Batch>,
    recycled_bytes: Arc<std::sync::atomic::AtomicUsize>,
) {
    let mut held: Option<OwnedMutexGuard<Output>> = None;
    let mut dead = false;
    while let Some(mut batch) = queue.recv().await {
        if !dead {
            let mut guard = match held.take() {
                Some(g) => g,
                None => output.clone().lock_owned().await,
            };
            let mut start = 0;
            let mut open = false;
            for &(end, kind) in &batch.cuts {
                if let Err(WriteError::Closed) = guard.write(&batch.bytes[start..end], kind).await {
                    dead = true;
                    metrics.close_output();
                    break;
                }
                open = kind == Kind::Open;
                start = end;
            }
            if open && !dead {
                held = Some(guard);
            }
        }
        batch.clear();
        let capacity = batch.bytes.capacity();
        recycled_bytes.fetch_add(capacity, std::sync::atomic::Ordering::Relaxed);
        if recycle.try_send(batch).is_err() {
            recycled_bytes.fetch_sub(capacity, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// Reads a connection to its end, a limit, or a termination signal; gives it back.
pub async fn handle<R: AsyncRead + Unpin>(mut reader: R, shared: &Shared) -> R {
    let writer = Writer::start(shared.output.clone(), shared.metrics.clone());
    let mut conn = Conn {
        shared,
        batch: Batch::new(),
        writer,
        dead: false,
        memory: 0,
        multi_thread: tokio::runtime::Handle::current().runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread,
    };
    let mut seen = shared.rules.generation();
    let mut on = shared.rules.get();
    let mut driver = Driver::new(&on, shared.settings);
    let mut shutdown = shared.shutdown.clone();
    let mut draining = *shutdown.borrow();
    let mut buf = vec![0u8; READ_BYTES_FIRST];
    let mut last_byte = Instant::now();
    let mut partial_since: Option<Instant> = None;
    let mut released = true;
    // Held from the first byte after a quiet spell until the next release.
    let mut reservation: Option<Reservation> = None;
    let ending = loop {
        // The nearest deadline: idle (or, draining, quiet), or the partial record's.
        let quiet = if draining { Some(DRAIN_QUIET) } else { shared.limits.idle };
        let idle_at = quiet.map(|d| last_byte + d);
        let partial_at = partial_since.zip(shared.limits.partial_line).map(|(t, d)| t + d);
        // And, once per quiet spell outside a record, the time to give memory back.
        let release_at = (!released && partial_since.is_none()).then(|| last_byte + RELEASE_QUIET);
        let deadline = [idle_at, partial_at, release_at].into_iter().flatten().min();
        let sleep = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let read = tokio::select! {
            biased;
            changed = shutdown.changed(), if !draining => {
                // A closed channel means the server is going away: drain as for a signal.
                let _ = changed;
                draining = true;
                continue;
            }
            read = reader.read(&mut buf) => read,
            () = sleep => {
                let now = Instant::now();
                if release_at.is_some_and(|r| r <= now) && idle_at.is_none_or(|i| i > now) {
                    conn.release(&mut driver);
                    buf = vec![0u8; READ_BYTES_FIRST];
                    conn.report_memory(&driver, buf.len());
                    released = true;
                    reservation = None;
                    continue;
                }
                if partial_at.is_some_and(|p| p <= now) {
                    break Ending::PartialLineTimeout;
                }
                if draining && driver.has_partial() {
                    // Quiet, but inside a record: wait for its end until its deadline.
                    last_byte = now;
                    if partial_at.is_none() {
                        break Ending::Shutdown;
                    }
                    continue;
                }
                break if draining { Ending::Shutdown } else { Ending::IdleTimeout };
            }
        };
        let n = match read {
            Ok(0) => break Ending::Eof,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break Ending::ReadError,
        };
        released = false;
        let mut refused = false;
        if reservation.is_none() {
            // Reading starts: reserve what the connection may hold from now on, waiting for
            // other connections to give theirs back. Without one, only this first read (at
            // most `READ_BYTES_FIRST`, outside any record) is tagged, and the connection
            // is closed.
            reservation = shared.budget.try_reserve();
            if reservation.is_none() {
                shared.metrics.memory_wait();
                reservation = shared.budget.reserve().await;
                refused = reservation.is_none();
            }
        }
        last_byte = Instant::now();
        // A reload: the connection moves to the new set here, between two reads — what it
        // holds of a record is evaluated whole by the new set.
        if let Some(next) = shared.rules.newer(&on, &mut seen) {
            shared.metrics.drain(&mut driver, &on);
            let (parked, _) = driver.park(); // its counters were drained just above
            on = next;
            driver = parked.resume(&on);
        }
        conn.take(&mut driver, &on, &buf[..n]).await;
        if refused {
            shared.metrics.note("memory budget: no room for a connection within --memory-wait-secs; it is closed");
            conn.report_memory(&driver, buf.len());
            break Ending::MemoryBudget;
        }
        if n == buf.len() && buf.len() < READ_BYTES {
            buf.resize(buf.len() * 2, 0);
        } else if n < buf.len() / 4 && buf.len() > READ_BYTES_FIRST {
            buf.truncate(buf.len() / 2);
            buf.shrink_to_fit();
        }
        conn.report_memory(&driver, buf.len());
        if conn.dead {
            break Ending::OutputClosed;
        }
        if driver.has_partial() {
            partial_since.get_or_insert(last_byte);
        } else {
            partial_since = None;
        }
    };
    conn.end(&mut driver, &on, ending).await;
    conn.shared.metrics.connection_memory(-(conn.memory as i64));
    reader
}

impl Conn<'_> {
    /// Tags the bytes of one read and writes the records they complete (`driver` on set
    /// `on`).
    async fn take(&mut self, driver: &mut Driver<'_>, on: &Arc<Tagger>, input: &[u8]) {
        // Tagging is CPU work: a read that completes a large record (whose cost, bounded per
        // byte, can still reach tenths of a second) is tagged with this worker thread handed
        // over to the runtime's blocking pool, so that the other connections, the timers and
        // `/metrics` go on meanwhile on another worker. Small reads cost at most
        // [`INLINE_BYTES`] times the worst cost per byte and are tagged in place, as is
        // everything on a current-thread runtime (which has no other worker to hand over to,
        // and where `block_in_place` would panic).
        if input.len() + driver.held_bytes() >= INLINE_BYTES && self.multi_thread {
            tokio::task::block_in_place(|| self.tag(driver, input));
        } else {
            self.tag(driver, input);
        }
        self.flush(driver, on).await;
    }

    /// Reports the bytes the connection's buffers hold now (`read`: its read buffer).
    fn report_memory(&mut self, driver: &Driver<'_>, read: usize) {
        let recycled = self.writer.recycled_bytes.load(std::sync::atomic::Ordering::Relaxed);
        let now = read + driver.scratch_bytes() + self.batch.bytes.capacity() + recycled;
        self.shared.metrics.connection_memory(now as i64 - self.memory as i64);
        self.memory = now;
    }

    /// Gives back the memory a connection's past records made it hold, while it is quiet.
    fn release(&mut self, driver: &mut Driver<'_>) {
        driver.release();
        if self.batch.bytes.capacity() > READ_BYTES_FIRST {
            let open = self.batch.open;
            self.batch = Batch::new();
            self.batch.open = open;
        }
        while self.writer.take_recycled().is_some() {}
    }

    fn tag(&mut self, driver: &mut Driver<'_>, input: &[u8]) {
        driver.feed(input, &mut self.batch);
        self.batch.seal();
    }

    /// Hands the batch to the writer.
    async fn flush(&mut self, driver: &mut Driver<'_>, on: &Arc<Tagger>) {
        self.shared.metrics.drain(driver, on);
        self.dead = self.dead || *self.shared.metrics.output_closed().borrow();
        if self.batch.is_empty() || self.dead {
            self.batch.clear();
            return;
        }
        let mut fresh = self.writer.fresh();
        fresh.open = self.batch.open;
        let full = std::mem::replace(&mut self.batch, fresh);
        self.writer.send(full).await;
    }

    /// Ends the connection: what is held of a record is written as the driver's settings
    /// say for this ending, and the ending counted.
    async fn end(&mut self, driver: &mut Driver<'_>, on: &Arc<Tagger>, ending: Ending) {
        let end = match ending {
            _ if self.dead => End::Closed,
            Ending::OutputClosed => End::Closed,
            Ending::Shutdown => End::Stop,
            _ => End::Eof,
        };
        let ended = driver.end(end, &mut self.batch);
        if end == End::Stop && ended.dropped > 0 {
            // One input to its own output, stopped by a signal: whole lines only (ARCHITECTURE §1.7).
            eprintln!("iis-tagger: stopped by signal; {} bytes of an unfinished line were not written", ended.dropped);
        }
        self.batch.seal();
        self.flush(driver, on).await;
        self.writer.finish().await;
        self.shared.metrics.ended(ending);
    }
}
