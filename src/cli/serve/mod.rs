//! `iis-tagger serve`: the TCP sidecar, and `--forward` for the other modes.
//!
//! Every connection gets its own [`Stream`](iis_tagger::Stream) and task. A task writes
//! only whole records to the shared [`output::Output`], holding its lock for the whole of
//! a write (and, for a record over the line limit passed through in parts, until that
//! record ends), so records of two connections never interleave. When the output is slow
//! or away, the task waits for the lock or for the write, and so stops reading: the
//! clients are held back by TCP, and memory stays within what the limits allow
//! (see `Limits`). SIGTERM/SIGINT: stop accepting, read every connection until it goes
//! quiet or ends, write what was read, close the forward connection cleanly, exit 0.

pub mod budget;
pub mod conn;
pub mod metrics;
pub mod output;
pub mod pipe;
pub mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, ValueEnum};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Mutex, Semaphore, watch};
use tokio::task::JoinSet;

use iis_tagger::Tagger;

use super::args::{CoreArgs, StatsArgs};
use super::common::{Failure, build_tagger};
use conn::{Limits, Shared};
use iis_tagger::driver::{AtEof, OnStop, Settings};
use metrics::Metrics;
use output::{Output, Target};

/// How records are delimited on a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Framing {
    /// One record per line, ended by `\n` (Fluent Bit `json_lines`, Vector
    /// `newline_delimited`, syslog-ng `network()`, rsyslog's default).
    Lines,
    /// RFC 6587 octet counting, `MSG-LEN SP MSG` (rsyslog `TCP_Framing="octet-counted"`,
    /// syslog-ng `syslog()`); bytes outside the framing are read up to `\n` as records.
    OctetCounted,
}

impl From<Framing> for iis_tagger::driver::Framing {
    fn from(f: Framing) -> Self {
        match f {
            Framing::Lines => iis_tagger::driver::Framing::Lines,
            Framing::OctetCounted => iis_tagger::driver::Framing::OctetCounted,
        }
    }
}

/// Options of `iis-tagger serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on. The default is loopback; any other address must be given
    /// here explicitly (and without TLS, a warning says the traffic is in clear).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:5170")]
    pub listen: SocketAddr,
    /// Framing of the incoming connections.
    #[arg(long, value_enum, default_value = "lines")]
    pub framing: Framing,
    /// Write to this downstream (HOST:PORT) over one persistent connection, reconnected
    /// with backoff; without it, write to stdout.
    #[arg(long, value_name = "HOST:PORT")]
    pub forward: Option<String>,
    /// Framing of the output (default: that of --framing). Lines in, octet-counted out is
    /// refused: a line's length is known only at its end, and a line over the limit is
    /// streamed, not held.
    #[arg(long, value_enum, value_name = "FRAMING")]
    pub forward_framing: Option<Framing>,
    /// Connections served at once; more are accepted and closed at once (counted).
    #[arg(long, value_name = "N", default_value_t = 256)]
    pub max_connections: usize,
    /// Memory the connections that are reading may hold in all (e.g. 4GiB). Each reserves
    /// what it may hold at its worst (about 20 MiB + 76 × --max-line-bytes) from its first
    /// byte until it has been quiet for a second; one that finds no room waits (unread).
    /// Default: half of the memory limit of this process's cgroup, or of the machine.
    #[arg(long, value_name = "SIZE", value_parser = super::args::parse_size)]
    pub memory_budget: Option<usize>,
    /// How long a connection waits for room in the memory budget; past it, its first read
    /// (at most 8 KiB) is tagged and written and it is closed (counted).
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    pub memory_wait_secs: u64,
    /// Close a connection that sends nothing for this long (0: never).
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    pub idle_timeout_secs: u64,
    /// A line (or frame) must be complete this long after its first byte came, else the
    /// connection is closed and what came of it is written, ended by `\n` (counted). Bounds
    /// slow-loris clients, and how long a line over the limit, passed through in parts,
    /// holds the output (0: no deadline).
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    pub partial_line_timeout_secs: u64,
    /// A TLS handshake must be complete within this long.
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    pub handshake_timeout_secs: u64,
    /// On SIGTERM, how long to wait for connections to be drained and the output written
    /// before giving up (exit 1).
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    pub shutdown_timeout_secs: u64,
    /// TLS on the listener: certificate chain (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// TLS on the listener: private key (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Require client certificates signed by these CAs (PEM): mutual TLS.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
    /// TLS on the forward connection, trusting the CAs of this file (PEM).
    #[arg(long, value_name = "FILE", requires = "forward")]
    pub forward_tls_ca: Option<PathBuf>,
    /// Client certificate chain (PEM) for the forward connection's TLS.
    #[arg(long, value_name = "FILE", requires_all = ["forward_tls_ca", "forward_tls_key"])]
    pub forward_tls_cert: Option<PathBuf>,
    /// Client private key (PEM) for the forward connection's TLS.
    #[arg(long, value_name = "FILE", requires = "forward_tls_cert")]
    pub forward_tls_key: Option<PathBuf>,
    /// Name the forward server's certificate must hold (default: the host of --forward).
    #[arg(long, value_name = "NAME", requires = "forward_tls_ca")]
    pub forward_tls_server_name: Option<String>,
    /// Serve Prometheus metrics (text format) on this address, at /metrics.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<SocketAddr>,
    /// The summary at exit.
    #[command(flatten)]
    pub summary: StatsArgs,
    /// Inspection settings.
    #[command(flatten)]
    pub core: CoreArgs,
}

fn secs(n: u64) -> Option<Duration> {
    (n > 0).then(|| Duration::from_secs(n))
}

/// Connections waiting in the kernel's accept queue.
const BACKLOG: u32 = 1024;

/// Runs the sidecar until SIGTERM/SIGINT.
pub fn run(args: &ServeArgs, rules: &super::args::RuleArgs) -> Result<(), Failure> {
    let in_framing = args.framing;
    let out_framing = args.forward_framing.unwrap_or(in_framing);
    if in_framing == Framing::Lines && out_framing == Framing::OctetCounted {
        return Err(Failure::Setup(
            "--framing lines with --forward-framing octet-counted is not supported: a line's length is known only \
             at its end, and a line over --max-line-bytes is streamed, not held"
                .into(),
        ));
    }
    if args.max_connections == 0 {
        return Err(Failure::Setup("--max-connections must be at least 1".into()));
    }
    let (tagger, skipped) = build_tagger(rules, args.core.config(true))?;
    let budget_total = args.memory_budget.unwrap_or_else(budget::default_total);
    let budget = budget::Budget::new(
        budget_total,
        args.core.max_line_bytes,
        Duration::from_secs(args.memory_wait_secs),
    )
    .map_err(|e| {
        Failure::Setup(format!(
            "--memory-budget {} is below what one connection may hold at its worst ({} bytes with --max-line-bytes {}): \
             raise it or lower --max-line-bytes",
            e.budget, e.each, args.core.max_line_bytes
        ))
    })?;
    if let Some(forward) = &args.forward {
        tls::check_addr(forward)?;
    }
    // Connection tasks outlive any borrow; the tagger lives as long as the process.
    let tagger: &'static Tagger = Box::leak(Box::new(tagger));
    let acceptor = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(tls::acceptor(cert, key, args.tls_client_ca.as_deref())?),
        _ => None,
    };
    let connector = match &args.forward_tls_ca {
        Some(ca) => {
            let forward = args.forward.as_deref().unwrap_or_default();
            let client = args.forward_tls_cert.as_deref().zip(args.forward_tls_key.as_deref());
            Some(tls::connector(ca, client, args.forward_tls_server_name.as_deref(), forward)?)
        }
        None => None,
    };
    // A descriptor per connection, plus a few: say so now rather than fail at accept.
    match super::rlimit::raise_open_files() {
        Ok(files) if files < args.max_connections as u64 + 32 => eprintln!(
            "iis-tagger: warning: the open-file limit ({files}) is below --max-connections ({}) + 32",
            args.max_connections
        ),
        Ok(_) => {}
        Err(e) => eprintln!("iis-tagger: warning: cannot read the open-file limit: {e}"),
    }
    if !args.listen.ip().is_loopback() && acceptor.is_none() {
        eprintln!("iis-tagger: warning: listening on {} without TLS: records travel in clear", args.listen);
    }
    let limits = Limits {
        idle: secs(args.idle_timeout_secs),
        partial_line: secs(args.partial_line_timeout_secs),
        handshake: Duration::from_secs(args.handshake_timeout_secs.max(1)),
    };
    let shutdown_timeout = Duration::from_secs(args.shutdown_timeout_secs);
    let runtime = runtime()?;
    let metrics = Arc::new(Metrics::new(tagger.rules().rules().len(), tagger.rules().fields().shapes().shapes.len()));
    let report = runtime.block_on(async {
        let listener = bind(args.listen).await?;
        let metrics_listener = match args.metrics {
            Some(addr) => Some(bind(addr).await?),
            None => None,
        };
        eprintln!("iis-tagger: listening on {}", listener.local_addr().map_err(io_setup)?);
        eprintln!(
            "iis-tagger: memory budget {} MiB: {} connections reading at once at their worst ({} MiB each); \
             connections hold at most {} MiB in all",
            budget.total() >> 20,
            budget.readers(),
            budget.each() >> 20,
            (budget.total() + args.max_connections * budget::QUIET_BYTES) >> 20
        );
        if let Some(m) = &metrics_listener {
            eprintln!("iis-tagger: metrics on http://{}/metrics", m.local_addr().map_err(io_setup)?);
        }
        let target = match &args.forward {
            Some(addr) => Target::forward(addr.clone(), connector, metrics.clone()),
            None => Target::stdout(),
        };
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let output = Arc::new(Mutex::new(Output::new(target, out_framing, metrics.clone())));
        let shared = Arc::new(Shared {
            tagger,
            output,
            metrics: metrics.clone(),
            limits,
            settings: Settings {
                input: in_framing.into(),
                output: out_framing.into(),
                // The output is shared: a record a connection ends inside of is ended by
                // `\n`, and on a signal what the peer sent is written (it will not send it
                // again).
                at_eof: AtEof::Terminated,
                on_stop: OnStop::Everything,
            },
            shutdown: shutdown_rx,
            budget: Arc::new(budget),
        });
        if let Some(m) = metrics_listener {
            tokio::spawn(metrics::serve(m, metrics.clone(), tagger, shared.budget.clone(), shutdown_tx.subscribe()));
        }
        let accepted = accept_loop(&listener, &shared, acceptor, args.max_connections).await;
        drop(listener);
        let _ = shutdown_tx.send(true);
        let drained = tokio::time::timeout(shutdown_timeout, async {
            let mut tasks = accepted?;
            while tasks.join_next().await.is_some() {}
            shared.output.lock().await.close().await;
            Ok::<(), Failure>(())
        })
        .await;
        match drained {
            Ok(result) => result,
            Err(_) => Err(Failure::Io(format!(
                "shutdown: connections not drained or output not written within {} s (downstream unavailable?)",
                shutdown_timeout.as_secs()
            ))),
        }
    });
    args.summary.print(&metrics.stats(), tagger, &skipped);
    // Tasks still blocked on a dead downstream are dropped with the runtime.
    runtime.shutdown_timeout(Duration::from_millis(100));
    report
}

/// A multi-threaded runtime with one worker per core.
pub fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(std::thread::available_parallelism().map_or(2, usize::from))
        .enable_all()
        .build()
        .map_err(|e| Failure::Setup(format!("starting the runtime: {e}")))
}

fn io_setup(e: std::io::Error) -> Failure {
    Failure::Setup(e.to_string())
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, Failure> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4() } else { tokio::net::TcpSocket::new_v6() };
    let socket = socket.map_err(|e| Failure::Setup(format!("{addr}: {e}")))?;
    socket.set_reuseaddr(true).map_err(|e| Failure::Setup(format!("{addr}: {e}")))?;
    socket.bind(addr).map_err(|e| Failure::Setup(format!("binding {addr}: {e}")))?;
    socket.listen(BACKLOG).map_err(|e| Failure::Setup(format!("listening on {addr}: {e}")))
}

/// Accepts connections until a termination signal, or until the output is closed for
/// good; returns the connection tasks.
async fn accept_loop(
    listener: &TcpListener,
    shared: &Arc<Shared<'static>>,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    max_connections: usize,
) -> Result<JoinSet<()>, Failure> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).map_err(io_setup)?;
    let mut int = signal(SignalKind::interrupt()).map_err(io_setup)?;
    let slots = Arc::new(Semaphore::new(max_connections));
    let mut tasks = JoinSet::new();
    let mut closed = shared.output_closed();
    let mut refused_note = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = closed.changed() => break,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            accepted = listener.accept() => {
                let (socket, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of descriptors and the like: wait a little rather than spin.
                        eprintln!("iis-tagger: accept: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    shared.metrics.connection_refused();
                    if refused_note.elapsed() >= Duration::from_secs(10) {
                        eprintln!("iis-tagger: {max_connections} connections open (--max-connections): refusing {peer}");
                        refused_note = tokio::time::Instant::now();
                    }
                    refuse(socket);
                    continue;
                };
                let shared = shared.clone();
                let acceptor = acceptor.clone();
                tasks.spawn(async move {
                    let _slot = slot;
                    shared.metrics.connection_opened();
                    conn::accept(socket, peer, acceptor, &shared).await;
                    shared.metrics.connection_closed();
                });
            }
        }
    }
    Ok(tasks)
}

/// Closes a connection beyond the limit at once, with a reset (no lingering state).
fn refuse(socket: TcpStream) {
    let _ = socket2::SockRef::from(&socket).set_linger(Some(Duration::ZERO));
    drop(socket);
}
