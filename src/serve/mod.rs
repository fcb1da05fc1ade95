//! The TCP sidecar as a library: [`serve`] reads records from every connection of a
//! listener, tags them and writes whole records to one output, until a shutdown future
//! resolves. `iis-tagger serve` is this function with its options read from the command
//! line and SIGTERM/SIGINT as the shutdown; `--forward` of the tagging run is
//! [`conn::handle`] over each input file.
//!
//! Every connection gets its own [`Driver`](crate::Driver) and task ([`conn`]). A task
//! writes only whole records to the shared [`output::Output`], holding its lock for the
//! whole of a write (and, for a record over the line limit passed through in parts, until
//! that record ends), so records of two connections never interleave. When the output is
//! slow or away, the task waits for the lock or for the write, and so stops reading: the
//! clients are held back by TCP, and memory stays within what [`budget`] allows. On
//! shutdown: stop accepting, read every connection until it goes quiet or ends, write what
//! was read, close the forward connection cleanly ([`serve`]'s steps).
//!
//! Built with the `serve` feature (on by default, through `cli`).

pub mod budget;
pub mod conn;
pub mod metrics;
pub mod output;
pub mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Mutex, Semaphore, watch};
use tokio::task::JoinSet;

use crate::Stats;
use crate::driver::{AtEof, Framing, OnStop, Settings};
use crate::reload::Current;
use budget::Budget;
use conn::{Limits, Shared};
use metrics::Metrics;
use output::{Output, Target};

/// Why the sidecar could not be set up, or did not end cleanly.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A TLS file that cannot be used: which file, what it was read for, and why.
    #[error("{}: {what}: {cause}", file.display())]
    Tls {
        /// The PEM file.
        file: PathBuf,
        /// What it was read for ("reading certificates", "client CA", ...).
        what: &'static str,
        /// The cause.
        #[source]
        cause: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A downstream address that is not `HOST:PORT`.
    #[error("--forward {0}: not HOST:PORT")]
    Address(String),
    /// A name the forward server's certificate could not hold.
    #[error("TLS server name `{name}`: {cause}")]
    ServerName {
        /// The name.
        name: String,
        /// The cause.
        #[source]
        cause: rustls_pki_types::InvalidDnsNameError,
    },
    /// Binding or listening on an address failed.
    #[error("{what} {addr}: {cause}")]
    Bind {
        /// The step ("binding", "listening on").
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        cause: std::io::Error,
    },
    /// A configuration the sidecar refuses.
    #[error("{0}")]
    Config(&'static str),
    /// On shutdown, the connections were not drained or the output not written in time.
    #[error(
        "shutdown: connections not drained or output not written within {} s (downstream unavailable?)",
        .0.as_secs()
    )]
    NotDrained(Duration),
}

/// Where the records go.
#[derive(Clone)]
pub enum Destination {
    /// The process's standard output.
    Stdout,
    /// One persistent connection to a downstream (`HOST:PORT`), reconnected with backoff,
    /// with TLS when `tls` is given.
    Forward {
        /// `HOST:PORT`.
        addr: String,
        /// TLS settings ([`tls::connector`]).
        tls: Option<tls::Client>,
    },
}

/// Everything [`serve`] needs besides its listener and shutdown.
pub struct Config {
    /// The rules and inspection settings, and their reloads: each connection moves to a
    /// new set between two records ([`crate::reload`]).
    pub rules: Arc<Current>,
    /// Framing of the incoming connections.
    pub input: Framing,
    /// Framing of the output. Lines in and octet-counted out is refused
    /// ([`Error::Config`]): a line's length is known only at its end, and a line over the
    /// limit is streamed, not held.
    pub output: Framing,
    /// Where the records go.
    pub destination: Destination,
    /// Connections served at once; more are accepted and closed at once (counted).
    pub max_connections: usize,
    /// Per-connection deadlines.
    pub limits: Limits,
    /// The memory the connections that are reading may hold.
    pub budget: Budget,
    /// TLS on the listener.
    pub acceptor: Option<tokio_rustls::TlsAcceptor>,
    /// After shutdown, how long to wait for the connections to be drained and the output
    /// written.
    pub shutdown_timeout: Duration,
    /// Serve Prometheus metrics at `/metrics` on this listener.
    pub metrics: Option<TcpListener>,
}

/// What a run of [`serve`] did: its counters, and whether it ended cleanly.
pub struct Served {
    /// The core's counters, over every connection.
    pub stats: Stats,
    /// The rule set whose rule order `stats` is in (the one in use at the end).
    pub set: Arc<crate::Tagger>,
    /// `Ok` when every connection was drained and the output written within the shutdown
    /// timeout (or the output closed for good, after which nothing can be written).
    pub result: Result<(), Error>,
}

/// Connections waiting in the kernel's accept queue (see [`bind`]).
pub const BACKLOG: u32 = 1024;

/// A listener on `addr` with address reuse and a [`BACKLOG`]-deep accept queue.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, Error> {
    let failed = |what: &'static str| move |cause| Error::Bind { what, addr, cause };
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4() } else { tokio::net::TcpSocket::new_v6() };
    let socket = socket.map_err(failed("opening a socket for"))?;
    socket.set_reuseaddr(true).map_err(failed("setting SO_REUSEADDR for"))?;
    socket.bind(addr).map_err(failed("binding"))?;
    socket.listen(BACKLOG).map_err(failed("listening on"))
}

/// Serves `listener` until `shutdown` resolves (or the output is closed for good), then
/// drains: every connection is read until it has been quiet for a moment or ends, what
/// was read is written, and the forward connection is closed cleanly — all within
/// `config.shutdown_timeout`.
///
/// The records of one connection keep their order and are never interleaved with
/// another's. What each kind of connection ending writes of an unfinished record is the
/// driver's `AtEof::Terminated` and `OnStop::Everything` ([`crate::driver`]): the output
/// is shared, so a record a connection ends inside of is ended by `\n`, and on shutdown
/// what the peer sent is written (it will not send it again).
pub async fn serve(listener: TcpListener, config: Config, shutdown: impl Future<Output = ()>) -> Served {
    let rules = config.rules;
    let metrics = Arc::new(Metrics::new(rules.clone()));
    let result = async {
        if config.input == Framing::Lines && config.output == Framing::OctetCounted {
            return Err(Error::Config(
                "lines in and octet-counted out is not supported: a line's length is known only at its end, and a \
                 line over the limit is streamed, not held",
            ));
        }
        if config.max_connections == 0 {
            return Err(Error::Config("at least one connection must be allowed"));
        }
        let target = match config.destination {
            Destination::Stdout => Target::stdout(),
            Destination::Forward { addr, tls } => {
                tls::check_addr(&addr)?;
                Target::forward(addr, tls, metrics.clone())
            }
        };
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let shared = Arc::new(Shared {
            rules: rules.clone(),
            output: Arc::new(Mutex::new(Output::new(target, config.output, metrics.clone()))),
            metrics: metrics.clone(),
            limits: config.limits,
            settings: Settings {
                input: config.input,
                output: config.output,
                at_eof: AtEof::Terminated,
                on_stop: OnStop::Everything,
            },
            shutdown: shutdown_rx,
            budget: Arc::new(config.budget),
        });
        if let Some(m) = config.metrics {
            tokio::spawn(metrics::serve(m, metrics.clone(), shared.budget.clone(), shutdown_tx.subscribe()));
        }
        let tasks = accept_loop(&listener, &shared, config.acceptor, config.max_connections, shutdown).await;
        drop(listener);
        let _ = shutdown_tx.send(true);
        tokio::time::timeout(config.shutdown_timeout, async {
            let mut tasks = tasks;
            while tasks.join_next().await.is_some() {}
            shared.output.lock().await.close().await;
        })
        .await
        .map_err(|_| Error::NotDrained(config.shutdown_timeout))
    }
    .await;
    let (stats, set) = metrics.stats_and_set();
    Served { stats, set, result }
}

/// Accepts connections until `shutdown` resolves, or until the output is closed for good;
/// returns the connection tasks.
async fn accept_loop(
    listener: &TcpListener,
    shared: &Arc<Shared>,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    max_connections: usize,
    shutdown: impl Future<Output = ()>,
) -> JoinSet<()> {
    let slots = Arc::new(Semaphore::new(max_connections));
    let mut tasks = JoinSet::new();
    let mut closed = shared.output_closed();
    let mut refused_note = tokio::time::Instant::now();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
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
    tasks
}

/// Closes a connection beyond the limit at once, with a reset (no lingering state).
fn refuse(socket: TcpStream) {
    let _ = socket2::SockRef::from(&socket).set_linger(Some(Duration::ZERO));
    drop(socket);
}
