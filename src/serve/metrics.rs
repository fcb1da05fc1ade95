//! Running totals of the sidecar, and the Prometheus text endpoint that shows them.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::Mutex as StdMutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::reload::Current;
use crate::{Driver, Stats, Tagger};

use super::budget::Budget;

/// Why a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// The peer closed it.
    Eof,
    /// Reading failed (reset by the peer, TLS error).
    ReadError,
    /// Nothing came for `--idle-timeout-secs`.
    IdleTimeout,
    /// A record stayed incomplete past `--partial-line-timeout-secs`.
    PartialLineTimeout,
    /// Drained on a termination signal.
    Shutdown,
    /// The output was closed for good.
    OutputClosed,
    /// No reservation of the memory budget came within `--memory-wait-secs`.
    MemoryBudget,
}

impl Ending {
    const ALL: [Ending; 7] = [
        Ending::Eof,
        Ending::ReadError,
        Ending::IdleTimeout,
        Ending::PartialLineTimeout,
        Ending::Shutdown,
        Ending::OutputClosed,
        Ending::MemoryBudget,
    ];

    fn label(self) -> &'static str {
        match self {
            Ending::Eof => "eof",
            Ending::ReadError => "read_error",
            Ending::IdleTimeout => "idle_timeout",
            Ending::PartialLineTimeout => "partial_line_timeout",
            Ending::Shutdown => "shutdown",
            Ending::OutputClosed => "output_closed",
            Ending::MemoryBudget => "memory_budget",
        }
    }
}

#[derive(Default)]
struct Counter(AtomicU64);

impl Counter {
    fn add(&self, n: u64) {
        if n > 0 {
            self.0.fetch_add(n, Relaxed);
        }
    }
    fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// The sidecar's counters (shared by every task).
pub struct Metrics {
    /// The core's counters, merged from every connection's driver, in the rule order of
    /// the set they are kept for (the current one: they are re-keyed when it changes).
    core: StdMutex<Core>,
    /// The rule set in use.
    rules: Arc<Current>,
    connections_open: Counter,
    connections_closed: Counter,
    connections_refused: Counter,
    handshake_failures: Counter,
    endings: [Counter; 7],
    memory_waits: Counter,
    bytes_out: Counter,
    forward_connected: Counter,
    forward_connects: Counter,
    forward_reconnects: Counter,
    forward_torn: Counter,
    /// Bytes of buffers the open connections hold (reading, tagging, batches).
    connection_memory: AtomicI64,
    started: Instant,
    /// When stderr last got a note (notes are limited to one per second).
    noted: StdMutex<Option<Instant>>,
    closed: watch::Sender<bool>,
}

impl Metrics {
    /// Zeroed counters for the sets of `rules`.
    pub fn new(rules: Arc<Current>) -> Metrics {
        let set = rules.get();
        let stats = Stats::with_shapes(set.rules().rules().len(), set.rules().fields().shapes().shapes.len());
        Metrics {
            core: StdMutex::new(Core { stats, set }),
            rules,
            connections_open: Counter::default(),
            connections_closed: Counter::default(),
            connections_refused: Counter::default(),
            handshake_failures: Counter::default(),
            endings: Default::default(),
            memory_waits: Counter::default(),
            bytes_out: Counter::default(),
            forward_connected: Counter::default(),
            forward_connects: Counter::default(),
            forward_reconnects: Counter::default(),
            forward_torn: Counter::default(),
            connection_memory: AtomicI64::new(0),
            started: Instant::now(),
            noted: StdMutex::new(None),
            closed: watch::channel(false).0,
        }
    }

    /// Moves the counters of a connection's driver, on set `on`, into the totals.
    pub fn drain(&self, driver: &mut Driver<'_>, on: &Arc<Tagger>) {
        let mut core = self.core();
        if Arc::ptr_eq(&core.set, on) {
            driver.drain_stats(&mut core.stats);
        } else {
            let mut theirs = Stats::default();
            driver.drain_stats(&mut theirs);
            theirs.rekey(on.rules(), core.set.rules());
            core.stats.merge(&theirs);
        }
    }

    /// The totals, re-keyed to the current set first if it changed.
    fn core(&self) -> std::sync::MutexGuard<'_, Core> {
        let mut core = self.core.lock().unwrap_or_else(|e| e.into_inner());
        let current = self.rules.get();
        if !Arc::ptr_eq(&core.set, &current) {
            let Core { stats, set } = &mut *core;
            stats.rekey(set.rules(), current.rules());
            *set = current;
        }
        core
    }

    /// The rule set in use.
    pub fn rules(&self) -> &Arc<Current> {
        &self.rules
    }

    /// A connection was accepted and is being served.
    pub fn connection_opened(&self) {
        self.connections_open.add(1);
    }

    /// A connection's buffers grew (or shrank) by `delta` bytes.
    pub fn connection_memory(&self, delta: i64) {
        self.connection_memory.fetch_add(delta, Relaxed);
    }

    /// A connection waited for a reservation of the memory budget.
    pub fn memory_wait(&self) {
        self.memory_waits.add(1);
    }

    /// A served connection ended.
    pub fn connection_closed(&self) {
        self.connections_closed.add(1);
    }

    /// A connection beyond `--max-connections` was closed at once.
    pub fn connection_refused(&self) {
        self.connections_refused.add(1);
    }

    /// A TLS handshake failed or timed out.
    pub fn handshake_failed(&self) {
        self.handshake_failures.add(1);
    }

    /// How a served connection ended.
    pub fn ended(&self, ending: Ending) {
        self.endings[ending as usize].add(1);
    }

    /// Bytes written to the output.
    pub fn wrote(&self, n: u64) {
        self.bytes_out.add(n);
    }

    /// The forward connection is up (or down).
    pub fn forward_up(&self, up: bool) {
        self.forward_connected.0.store(u64::from(up), Relaxed);
        if up && self.forward_connects.0.fetch_add(1, Relaxed) > 0 {
            self.forward_reconnects.add(1);
        }
    }

    /// A record over the limit whose start went to a forward connection that failed: the
    /// rest of it was not sent to the new one.
    pub fn forward_torn(&self) {
        self.forward_torn.add(1);
    }

    /// Prints a note to stderr, at most one a second (the rest are only counted).
    pub fn note(&self, message: &str) {
        let Ok(mut last) = self.noted.lock() else { return };
        if last.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
            *last = Some(Instant::now());
            eprintln!("iis-tagger: {message}");
        }
    }

    /// Becomes true when the output is closed for good.
    pub fn output_closed(&self) -> watch::Receiver<bool> {
        self.closed.subscribe()
    }

    /// The output is closed for good: the server stops.
    pub fn close_output(&self) {
        self.closed.send_replace(true);
    }

    /// The totals as the core's counters (for --stats), with the set they are keyed to.
    pub fn stats_and_set(&self) -> (Stats, Arc<Tagger>) {
        let core = self.core();
        (core.stats.clone(), core.set.clone())
    }

    /// The totals as the core's counters (for --stats), keyed to the current set.
    pub fn stats(&self) -> Stats {
        self.core().stats.clone()
    }

    /// The Prometheus text exposition (format 0.0.4).
    pub fn render(&self, budget: &Budget) -> String {
        let (core, tagger) = self.stats_and_set();
        let tagger = &*tagger;
        let mut o = String::with_capacity(4096 + 96 * tagger.rules().rules().len());
        let counter = |o: &mut String, name: &str, help: &str, value: u64| {
            let _ = writeln!(o, "# HELP iis_tagger_{name} {help}\n# TYPE iis_tagger_{name} counter");
            let _ = writeln!(o, "iis_tagger_{name} {value}");
        };
        render_tagging(&mut o, &core, tagger, &self.rules.status());
        counter(&mut o, "bytes_out_total", "Bytes written to the output.", self.bytes_out.get());
        let open = self.connections_open.get().saturating_sub(self.connections_closed.get());
        let _ = writeln!(o, "# HELP iis_tagger_connections Connections being served.");
        let _ = writeln!(o, "# TYPE iis_tagger_connections gauge\niis_tagger_connections {open}");
        let _ = writeln!(
            o,
            "# HELP iis_tagger_connection_memory_bytes Bytes of buffers the open connections hold (read buffer, tagging scratch, output batches kept for reuse).\n# TYPE iis_tagger_connection_memory_bytes gauge\niis_tagger_connection_memory_bytes {}",
            self.connection_memory.load(Relaxed).max(0)
        );
        let _ = writeln!(
            o,
            "# HELP iis_tagger_memory_budget_bytes The memory budget of the connections that are reading (--memory-budget).\n# TYPE iis_tagger_memory_budget_bytes gauge\niis_tagger_memory_budget_bytes {}",
            budget.total()
        );
        let _ = writeln!(
            o,
            "# HELP iis_tagger_memory_reserved_bytes Bytes of the memory budget reserved by connections that are reading.\n# TYPE iis_tagger_memory_reserved_bytes gauge\niis_tagger_memory_reserved_bytes {}",
            budget.reserved()
        );
        counter(
            &mut o,
            "memory_waits_total",
            "Connections that waited for room in the memory budget before reading.",
            self.memory_waits.get(),
        );
        counter(&mut o, "connections_total", "Connections served.", self.connections_open.get());
        counter(
            &mut o,
            "connections_refused_total",
            "Connections closed at once, beyond --max-connections.",
            self.connections_refused.get(),
        );
        counter(
            &mut o,
            "tls_handshake_failures_total",
            "TLS handshakes failed or timed out.",
            self.handshake_failures.get(),
        );
        let _ = writeln!(o, "# HELP iis_tagger_connection_endings_total How served connections ended.");
        let _ = writeln!(o, "# TYPE iis_tagger_connection_endings_total counter");
        for e in Ending::ALL {
            let _ = writeln!(
                o,
                "iis_tagger_connection_endings_total{{reason=\"{}\"}} {}",
                e.label(),
                self.endings[e as usize].get()
            );
        }
        let _ = writeln!(o, "# HELP iis_tagger_forward_connected Whether the forward connection is up.");
        let _ = writeln!(o, "# TYPE iis_tagger_forward_connected gauge");
        let _ = writeln!(o, "iis_tagger_forward_connected {}", self.forward_connected.get());
        counter(
            &mut o,
            "forward_reconnects_total",
            "Forward connections made after the first.",
            self.forward_reconnects.get(),
        );
        counter(
            &mut o,
            "forward_torn_records_total",
            "Records over the limit cut short by a failed forward connection.",
            self.forward_torn.get(),
        );
        let _ = writeln!(o, "# HELP iis_tagger_uptime_seconds Seconds since start.");
        let _ = writeln!(o, "# TYPE iis_tagger_uptime_seconds gauge");
        let _ = writeln!(o, "iis_tagger_uptime_seconds {}", self.started.elapsed().as_secs());
        o
    }
}

/// The tagging's part of a metrics page, for every front end that has one (the sidecar,
/// `consume`): the core's counters (`COUNTERS`), matches per rule, suppressions per rule
/// and filter, the rule set in use and its reloads, records per shape, records not
/// inspected by reason. `core` is in the rule order of `tagger`.
pub fn render_tagging(o: &mut String, core: &Stats, tagger: &Tagger, status: &crate::reload::LoadStatus) {
    let counter = |o: &mut String, name: &str, help: &str, value: u64| {
        let _ = writeln!(o, "# HELP iis_tagger_{name} {help}\n# TYPE iis_tagger_{name} counter");
        let _ = writeln!(o, "iis_tagger_{name} {value}");
    };
    for c in crate::stats::COUNTERS {
        counter(o, c.name, c.help, (c.get)(core));
    }
    let _ = writeln!(o, "# HELP iis_tagger_matches_total Records each rule matched.");
    let _ = writeln!(o, "# TYPE iis_tagger_matches_total counter");
    for (rule, n) in tagger.rules().rules().iter().zip(&core.matches) {
        let _ = writeln!(o, "iis_tagger_matches_total{{rule=\"{}\"}} {n}", label(&rule.meta.slug));
    }
    let _ = writeln!(o, "# HELP iis_tagger_suppressed_total Matches a filter suppressed, by rule and filter.");
    let _ = writeln!(o, "# TYPE iis_tagger_suppressed_total counter");
    for (i, n) in core.suppressed.iter().enumerate() {
        if let Some((rule, filter)) = tagger.rules().suppression_names(i) {
            let _ =
                writeln!(o, "iis_tagger_suppressed_total{{rule=\"{}\",filter=\"{}\"}} {n}", label(rule), label(filter));
        }
    }
    let _ = writeln!(o, "# HELP iis_tagger_rules_loaded_info The rule set in use: its digest (value 1).");
    let _ = writeln!(o, "# TYPE iis_tagger_rules_loaded_info gauge");
    let _ = writeln!(o, "iis_tagger_rules_loaded_info{{digest=\"{}\"}} 1", label(&status.digest));
    let _ = writeln!(o, "# HELP iis_tagger_rules_loaded_timestamp_seconds When the rule set in use was built.");
    let _ = writeln!(o, "# TYPE iis_tagger_rules_loaded_timestamp_seconds gauge");
    let _ = writeln!(o, "iis_tagger_rules_loaded_timestamp_seconds {}", status.loaded_at);
    let _ = writeln!(o, "# HELP iis_tagger_rules_loaded Rules in the set in use.");
    let _ = writeln!(o, "# TYPE iis_tagger_rules_loaded gauge\niis_tagger_rules_loaded {}", status.rules);
    let _ = writeln!(o, "# HELP iis_tagger_filters_loaded Filters in the set in use.");
    let _ = writeln!(o, "# TYPE iis_tagger_filters_loaded gauge\niis_tagger_filters_loaded {}", status.filters);
    let _ = writeln!(
        o,
        "# HELP iis_tagger_rule_reloads_total Rule reloads, by outcome (refused: the set had an error; the old one kept running)."
    );
    let _ = writeln!(o, "# TYPE iis_tagger_rule_reloads_total counter");
    let _ = writeln!(o, "iis_tagger_rule_reloads_total{{outcome=\"loaded\"}} {}", status.reloads);
    let _ = writeln!(o, "iis_tagger_rule_reloads_total{{outcome=\"refused\"}} {}", status.refused);
    let _ = writeln!(
        o,
        "# HELP iis_tagger_rule_reload_failing Whether the last reload was refused (1) and the set in use is older than the files."
    );
    let _ = writeln!(
        o,
        "# TYPE iis_tagger_rule_reload_failing gauge\niis_tagger_rule_reload_failing {}",
        u8::from(status.last_error.is_some())
    );
    if let Some(error) = &status.last_error {
        let _ = writeln!(
            o,
            "# HELP iis_tagger_rule_reload_error_info Why the last reload was refused (file:line:column: what; value 1)."
        );
        let _ = writeln!(o, "# TYPE iis_tagger_rule_reload_error_info gauge");
        let _ = writeln!(o, "iis_tagger_rule_reload_error_info{{error=\"{}\"}} 1", label(error));
    }
    let _ = writeln!(o, "# HELP iis_tagger_records_by_shape_total Records read, by the shape they were recognised in.");
    let _ = writeln!(o, "# TYPE iis_tagger_records_by_shape_total counter");
    for (shape, n) in tagger.rules().fields().shapes().shapes.iter().zip(&core.shapes) {
        let _ = writeln!(o, "iis_tagger_records_by_shape_total{{shape=\"{}\"}} {n}", label(&shape.name));
    }
    let _ = writeln!(o, "# HELP iis_tagger_not_inspected_total Records passed through uninspected, by reason.");
    let _ = writeln!(o, "# TYPE iis_tagger_not_inspected_total counter");
    for (reason, n) in core.not_inspected.reasons() {
        let _ = writeln!(o, "iis_tagger_not_inspected_total{{reason=\"{reason}\"}} {n}");
    }
}

/// The totals and the set their rule order is that of.
struct Core {
    stats: Stats,
    set: Arc<Tagger>,
}

/// A Prometheus label value: `\`, `"` and newlines escaped.
fn label(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Longest request head read.
const MAX_REQUEST: usize = 8192;

/// Serves the sidecar's `GET /metrics` until shutdown.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>, budget: Arc<Budget>, shutdown: watch::Receiver<bool>) {
    serve_page(listener, move || metrics.render(&budget), shutdown).await;
}

/// Serves `GET /metrics` with the page `render` makes for each request, until `shutdown`
/// changes or its sender goes (any front end with metrics: the sidecar, `consume`); other
/// paths get 404.
pub async fn serve_page<F>(listener: TcpListener, render: F, mut shutdown: watch::Receiver<bool>)
where
    F: Fn() -> String + Send + Sync + 'static,
{
    let render = Arc::new(render);
    loop {
        let (mut socket, _) = tokio::select! {
            _ = shutdown.changed() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let render = render.clone();
        tokio::spawn(async move {
            let mut head = Vec::with_capacity(512);
            let mut buf = [0u8; 1024];
            let read = tokio::time::timeout(Duration::from_secs(5), async {
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_REQUEST {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return false,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                true
            })
            .await;
            if !matches!(read, Ok(true)) {
                return;
            }
            let response = if head.starts_with(b"GET /metrics ") || head.starts_with(b"GET /metrics?") {
                let body = render();
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
            } else {
                "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_string()
            };
            let _ = socket.write_all(response.as_bytes()).await;
            let _ = socket.shutdown().await;
        });
    }
}
