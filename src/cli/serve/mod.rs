//! `iis-tagger serve`: the sidecar's options, read from the command line, and
//! SIGTERM/SIGINT as its shutdown; the sidecar itself is the library's
//! [`iis_tagger::serve`]. `--forward` of the tagging run is [`pipe`].

pub mod pipe;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, ValueEnum};

use iis_tagger::serve::conn::Limits;
use iis_tagger::serve::{self as sidecar, Destination, budget, tls};

use super::args::{CoreArgs, StatsArgs};
use super::common::Failure;
use super::live::Live;

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

/// Runs the sidecar until SIGTERM/SIGINT.
pub fn run(args: &ServeArgs, rules: &super::args::RuleArgs) -> Result<(), Failure> {
    let in_framing = args.framing;
    let out_framing = args.forward_framing.unwrap_or(in_framing);
    if in_framing == Framing::Lines && out_framing == Framing::OctetCounted {
        return Err(Failure::setup(
            "--framing lines with --forward-framing octet-counted is not supported: a line's length is known only \
             at its end, and a line over --max-line-bytes is streamed, not held",
        ));
    }
    if args.max_connections == 0 {
        return Err(Failure::setup("--max-connections must be at least 1"));
    }
    let (live, skipped) = Live::load(rules, args.core.config(true))?;
    let live = Arc::new(live);
    live.watch()?;
    let budget_total = args.memory_budget.unwrap_or_else(budget::default_total);
    let budget = budget::Budget::new(
        budget_total,
        args.core.max_line_bytes,
        Duration::from_secs(args.memory_wait_secs),
    )
    .map_err(|e| {
        Failure::setup(format!(
            "--memory-budget {} is below what one connection may hold at its worst ({} bytes with --max-line-bytes {}): \
             raise it or lower --max-line-bytes",
            e.budget, e.each, args.core.max_line_bytes
        ))
    })?;
    if let Some(forward) = &args.forward {
        tls::check_addr(forward).map_err(setup)?;
    }
    let acceptor = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(tls::acceptor(cert, key, args.tls_client_ca.as_deref()).map_err(setup)?),
        _ => None,
    };
    let destination = match &args.forward {
        Some(addr) => {
            let tls = match &args.forward_tls_ca {
                Some(ca) => {
                    let client = args.forward_tls_cert.as_deref().zip(args.forward_tls_key.as_deref());
                    Some(tls::connector(ca, client, args.forward_tls_server_name.as_deref(), addr).map_err(setup)?)
                }
                None => None,
            };
            Destination::Forward { addr: addr.clone(), tls }
        }
        None => Destination::Stdout,
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
    let runtime = runtime()?;
    let served = runtime.block_on(async {
        let listener = sidecar::bind(args.listen).await.map_err(setup)?;
        let metrics = match args.metrics {
            Some(addr) => Some(sidecar::bind(addr).await.map_err(setup)?),
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
        if let Some(m) = &metrics {
            eprintln!("iis-tagger: metrics on http://{}/metrics", m.local_addr().map_err(io_setup)?);
        }
        let config = sidecar::Config {
            rules: live.current().clone(),
            input: in_framing.into(),
            output: out_framing.into(),
            destination,
            max_connections: args.max_connections,
            limits,
            budget,
            acceptor,
            shutdown_timeout: Duration::from_secs(args.shutdown_timeout_secs),
            metrics,
        };
        let signalled = super::signal::termination().map_err(io_setup)?;
        Ok::<_, Failure>(sidecar::serve(listener, config, signalled).await)
    })?;
    args.summary.print(&served.stats, &served.set, &skipped, false, Some(live.current().status()));
    // Tasks still blocked on a dead downstream are dropped with the runtime.
    runtime.shutdown_timeout(Duration::from_millis(100));
    served.result.map_err(Failure::io)
}

/// A multi-threaded runtime with one worker per core.
pub fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(std::thread::available_parallelism().map_or(2, usize::from))
        .enable_all()
        .build()
        .map_err(|e| Failure::setup(format!("starting the runtime: {e}")))
}

fn setup(e: sidecar::Error) -> Failure {
    Failure::setup(e)
}

fn io_setup(e: std::io::Error) -> Failure {
    Failure::setup(e)
}
