//! Where the records go: stdout, or one persistent connection to a downstream,
//! reconnected with backoff.
//!
//! Writes come as whole records, or as the pieces of one record over the line limit
//! (`Open` … `Close`) while the writer holds the output. When the forward connection
//! fails, the records of the failed write that it had not taken are written again to the
//! new connection from the start of the record it failed in; what the old connection
//! took but its peer never read (the kernel's socket buffers, TLS's record buffer) is in
//! flight and lost with it. Before each write the connection is polled once, so a
//! downstream that closed is noticed before records are sent into the void.

use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::metrics::Metrics;
use crate::driver::Framing;

/// What a write holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Whole records.
    Records,
    /// The start or a middle piece of a record over the limit; more follows.
    Open,
    /// The last piece of that record (possibly empty).
    Close,
}

/// The output can no longer be written (stdout's reader went away, or it failed).
#[derive(Debug)]
pub enum WriteError {
    /// Stop serving.
    Closed,
}

/// Stdout, or the forward connection.
pub enum Target {
    /// The process's stdout.
    Stdout(tokio::io::Stdout),
    /// A downstream over TCP (or TLS).
    Forward(Box<Forwarder>),
}

impl Target {
    /// Stdout.
    pub fn stdout() -> Target {
        Target::Stdout(tokio::io::stdout())
    }

    /// A forward connection to `addr` (HOST:PORT), made when first written to.
    pub fn forward(addr: String, tls: Option<super::tls::Client>, metrics: Arc<Metrics>) -> Target {
        Target::Forward(Box::new(Forwarder {
            addr,
            tls,
            conn: None,
            metrics,
            failures: 0,
            discarding: false,
            long_sent: 0,
        }))
    }
}

/// The shared output.
pub struct Output {
    target: Target,
    framing: Framing,
    metrics: Arc<Metrics>,
    closed: bool,
}

impl Output {
    /// An output writing records framed as `framing`.
    pub fn new(target: Target, framing: Framing, metrics: Arc<Metrics>) -> Output {
        Output { target, framing, metrics, closed: false }
    }

    /// Writes `bytes`. A forward connection is retried until the write succeeds; stdout
    /// fails for good.
    pub async fn write(&mut self, bytes: &[u8], kind: Kind) -> Result<(), WriteError> {
        if self.closed {
            return Err(WriteError::Closed);
        }
        match &mut self.target {
            Target::Stdout(out) => {
                let result = async {
                    out.write_all(bytes).await?;
                    out.flush().await
                }
                .await;
                match result {
                    Ok(()) => {
                        self.metrics.wrote(bytes.len() as u64);
                        Ok(())
                    }
                    Err(e) => {
                        if e.kind() != std::io::ErrorKind::BrokenPipe {
                            eprintln!("iis-tagger: writing output: {e}");
                        }
                        self.closed = true;
                        Err(WriteError::Closed)
                    }
                }
            }
            Target::Forward(f) => {
                f.write(bytes, kind, self.framing).await;
                Ok(())
            }
        }
    }

    /// Flushes and closes (the forward connection with a clean shutdown).
    pub async fn close(&mut self) {
        match &mut self.target {
            Target::Stdout(out) => {
                let _ = out.flush().await;
            }
            Target::Forward(f) => f.close().await,
        }
    }
}

/// A connection to the downstream.
enum Conn {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl Conn {
    async fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        match self {
            Conn::Plain(s) => s.write(bytes).await,
            Conn::Tls(s) => s.write(bytes).await,
        }
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Conn::Plain(s) => s.flush().await,
            Conn::Tls(s) => s.flush().await,
        }
    }

    async fn shutdown(&mut self) -> std::io::Result<()> {
        match self {
            Conn::Plain(s) => s.shutdown().await,
            Conn::Tls(s) => s.shutdown().await,
        }
    }

    /// Polls the connection for reading once, without waiting: false if the peer closed it
    /// or it failed. A downstream sends nothing; whatever it sends is read and dropped (for
    /// TLS, this also takes in session tickets and the peer's close_notify).
    fn alive(&mut self) -> bool {
        let mut buf = [0u8; 4096];
        loop {
            let read = match self {
                Conn::Plain(s) => match s.try_read(&mut buf) {
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return true,
                    other => other,
                },
                // One poll with a waker that does nothing: the next real poll registers
                // the task's own.
                Conn::Tls(s) => {
                    let mut cx = Context::from_waker(Waker::noop());
                    let mut read = std::pin::pin!(s.read(&mut buf));
                    match read.as_mut().poll(&mut cx) {
                        Poll::Pending => return true,
                        Poll::Ready(r) => r,
                    }
                }
            };
            match read {
                Ok(0) | Err(_) => return false,
                Ok(_) => continue,
            }
        }
    }
}

/// Time to wait for a connection (and its TLS handshake).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// First and longest wait between connection attempts.
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// The forward connection and its state.
pub struct Forwarder {
    addr: String,
    tls: Option<super::tls::Client>,
    conn: Option<Conn>,
    metrics: Arc<Metrics>,
    /// Failed attempts since the last success.
    failures: u32,
    /// The connection failed inside a long record: its rest is not sent.
    discarding: bool,
    /// Bytes of the current long record sent on this connection.
    long_sent: u64,
}

impl Forwarder {
    /// Writes until the downstream has taken everything (retrying on new connections).
    async fn write(&mut self, bytes: &[u8], kind: Kind, framing: Framing) {
        if self.discarding {
            if kind == Kind::Close {
                self.discarding = false;
            }
            if kind != Kind::Records {
                return;
            }
        }
        let total = bytes.len() as u64;
        let mut pos = 0u64;
        loop {
            self.connect().await;
            if self.discarding && kind != Kind::Records {
                // The connection was found closed inside this long record.
                self.discarding = kind == Kind::Open;
                return;
            }
            let Some(conn) = self.conn.as_mut() else { continue };
            match send(conn, bytes, &mut pos).await {
                Ok(()) => {
                    self.metrics.wrote(total);
                    match kind {
                        Kind::Records => {}
                        Kind::Open => self.long_sent += total,
                        Kind::Close => self.long_sent = 0,
                    }
                    return;
                }
                Err(e) => {
                    self.metrics.note(&format!("forward {}: {e}; reconnecting", self.addr));
                    self.conn = None;
                    self.metrics.forward_up(false);
                    match kind {
                        // Again from the start of the record the failure came in.
                        Kind::Records => pos = record_start(bytes, pos, framing),
                        // Nothing of the long record went out yet: it can start afresh.
                        Kind::Open | Kind::Close if self.long_sent == 0 && pos == 0 => {}
                        Kind::Open | Kind::Close => {
                            self.metrics.forward_torn();
                            self.long_sent = 0;
                            self.discarding = kind == Kind::Open;
                            return;
                        }
                    }
                }
            }
        }
    }

    /// Makes sure there is a live connection, waiting with backoff as long as it takes.
    async fn connect(&mut self) {
        if let Some(conn) = self.conn.as_mut() {
            if conn.alive() {
                return;
            }
            self.conn = None;
            self.metrics.forward_up(false);
            self.metrics.note(&format!("forward {}: the downstream closed the connection; reconnecting", self.addr));
            if self.long_sent > 0 {
                self.metrics.forward_torn();
                self.long_sent = 0;
                self.discarding = true;
            }
        }
        loop {
            match self.try_connect().await {
                Ok(conn) => {
                    if self.failures > 0 {
                        self.metrics.note(&format!(
                            "forward {}: connected after {} attempts",
                            self.addr,
                            self.failures + 1
                        ));
                    }
                    self.failures = 0;
                    self.conn = Some(conn);
                    self.metrics.forward_up(true);
                    return;
                }
                Err(e) => {
                    self.failures = self.failures.saturating_add(1);
                    self.metrics.note(&format!("forward {}: {e}; retrying", self.addr));
                    let wait =
                        BACKOFF_FIRST.saturating_mul(1 << self.failures.min(8).saturating_sub(1)).min(BACKOFF_MAX);
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    async fn try_connect(&self) -> std::io::Result<Conn> {
        let timed_out = || std::io::Error::new(std::io::ErrorKind::TimedOut, "connection timed out");
        let tcp =
            tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&self.addr)).await.map_err(|_| timed_out())??;
        tcp.set_nodelay(true)?;
        let keepalive =
            socket2::TcpKeepalive::new().with_time(Duration::from_secs(60)).with_interval(Duration::from_secs(10));
        socket2::SockRef::from(&tcp).set_tcp_keepalive(&keepalive)?;
        match &self.tls {
            None => Ok(Conn::Plain(tcp)),
            Some(client) => {
                let name: ServerName<'static> = client.server_name.clone();
                let tls = tokio::time::timeout(CONNECT_TIMEOUT, client.connector.connect(name, tcp))
                    .await
                    .map_err(|_| timed_out())??;
                Ok(Conn::Tls(Box::new(tls)))
            }
        }
    }

    async fn close(&mut self) {
        if let Some(mut conn) = self.conn.take() {
            let _ = conn.flush().await;
            let _ = conn.shutdown().await;
        }
    }
}

/// Writes `bytes[pos..]`, advancing `pos` by what the connection took.
async fn send(conn: &mut Conn, bytes: &[u8], pos: &mut u64) -> std::io::Result<()> {
    while let Some(rest) = usize::try_from(*pos).ok().and_then(|p| bytes.get(p..)).filter(|r| !r.is_empty()) {
        let n = conn.write(rest).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        *pos += n as u64;
    }
    conn.flush().await
}

/// The start of the record of `bytes` (whole records in `framing`) that holds offset
/// `pos`; `bytes.len()` if `pos` is past the last.
fn record_start(bytes: &[u8], pos: u64, framing: Framing) -> u64 {
    let pos = usize::try_from(pos).map_or(bytes.len(), |p| p.min(bytes.len()));
    match framing {
        Framing::Lines => memchr::memrchr(b'\n', &bytes[..pos]).map_or(0, |i| i + 1) as u64,
        Framing::OctetCounted => {
            let mut at = 0;
            while at < bytes.len() {
                let digits = bytes[at..].iter().take_while(|b| b.is_ascii_digit()).count();
                let len = std::str::from_utf8(&bytes[at..at + digits]).ok().and_then(|d| d.parse::<usize>().ok());
                let Some(next) = len.map(|l| at + digits + 1 + l) else { return at as u64 };
                if next > pos {
                    return at as u64;
                }
                at = next;
            }
            at as u64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_starts() {
        let lines = b"aa\nbbb\ncc\n";
        assert_eq!(record_start(lines, 0, Framing::Lines), 0);
        assert_eq!(record_start(lines, 2, Framing::Lines), 0);
        assert_eq!(record_start(lines, 3, Framing::Lines), 3);
        assert_eq!(record_start(lines, 8, Framing::Lines), 7);
        assert_eq!(record_start(lines, 10, Framing::Lines), 10);
        let frames = b"2 aa3 bbb2 cc";
        assert_eq!(record_start(frames, 0, Framing::OctetCounted), 0);
        assert_eq!(record_start(frames, 3, Framing::OctetCounted), 0);
        assert_eq!(record_start(frames, 4, Framing::OctetCounted), 4);
        assert_eq!(record_start(frames, 9, Framing::OctetCounted), 9);
        assert_eq!(record_start(frames, 8, Framing::OctetCounted), 4);
        assert_eq!(record_start(frames, 10, Framing::OctetCounted), 9);
        assert_eq!(record_start(frames, 13, Framing::OctetCounted), 13);
    }
}
