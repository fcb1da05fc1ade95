//! The sidecar as a library function, in process, on a current-thread runtime with paused
//! time: the deadlines (idle, partial record, shutdown) are checked in virtual seconds,
//! and the records by what a downstream listener receives. (`serve.rs` runs the binary.)

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use iis_tagger::driver::Framing;
use iis_tagger::serve::budget::{Budget, per_connection};
use iis_tagger::serve::conn::Limits;
use iis_tagger::serve::{self, Destination, Error, Served};
use iis_tagger::{Config, RuleSet, Tagger};

const WEBSHELL: &[u8] = br#"{"EventID":1,"Channel":"Microsoft-Windows-Sysmon/Operational","Image":"C:\\Windows\\System32\\cmd.exe","ParentImage":"C:\\Windows\\System32\\inetsrv\\w3wp.exe"}"#;
const BENIGN: &[u8] = br#"{"EventID":1,"Channel":"Microsoft-Windows-Sysmon/Operational","Image":"C:\\Windows\\notepad.exe","ParentImage":"C:\\Windows\\explorer.exe"}"#;

/// A downstream that takes one connection and returns everything it sent.
async fn downstream() -> (String, JoinHandle<Vec<u8>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the downstream");
    let addr = listener.local_addr().expect("its address").to_string();
    let task = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.expect("the sidecar connects");
        let mut got = Vec::new();
        socket.read_to_end(&mut got).await.expect("read the downstream");
        got
    });
    (addr, task)
}

fn config(forward: String, limits: Limits) -> serve::Config {
    let tagger = Tagger::new(RuleSet::builtin().expect("built-ins load"), Config::default()).expect("tagger");
    let max_line = tagger.config().max_line_bytes;
    serve::Config {
        rules: Arc::new(iis_tagger::reload::Current::fixed(Arc::new(tagger))),
        input: Framing::Lines,
        output: Framing::Lines,
        destination: Destination::Forward { addr: forward, tls: None },
        max_connections: 4,
        limits,
        budget: Budget::new(4 * per_connection(max_line), max_line, Duration::from_secs(10)).expect("budget"),
        acceptor: None,
        shutdown_timeout: Duration::from_secs(30),
        metrics: None,
    }
}

fn limits(idle: Option<u64>, partial_line: Option<u64>) -> Limits {
    Limits {
        idle: idle.map(Duration::from_secs),
        partial_line: partial_line.map(Duration::from_secs),
        handshake: Duration::from_secs(10),
    }
}

/// Starts the sidecar on a loopback port; the sender shuts it down.
async fn start(config: serve::Config) -> (SocketAddr, oneshot::Sender<()>, JoinHandle<Served>) {
    let listener = serve::bind("127.0.0.1:0".parse().expect("addr")).await.expect("bind");
    let addr = listener.local_addr().expect("its address");
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(serve::serve(listener, config, async {
        let _ = stopped.await;
    }));
    (addr, stop, task)
}

fn lines(records: &[&[u8]]) -> Vec<u8> {
    records.iter().flat_map(|r| r.iter().copied().chain([b'\n'])).collect()
}

#[tokio::test(start_paused = true)]
async fn records_are_tagged_in_order_and_unmatched_ones_pass_unchanged() {
    let (forward, received) = downstream().await;
    let (addr, stop, server) = start(config(forward, limits(None, None))).await;
    let mut client = TcpStream::connect(addr).await.expect("connect");
    client.write_all(&lines(&[WEBSHELL, BENIGN, b"not json"])).await.expect("write");
    client.shutdown().await.expect("close");
    // The connection is served to its end before the shutdown is asked for.
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).await.expect("the sidecar closes the connection");
    stop.send(()).expect("the sidecar runs");
    let served = server.await.expect("serve returns");
    served.result.expect("a clean shutdown");
    let got = received.await.expect("the downstream ends");
    let got: Vec<&[u8]> = got.split(|&b| b == b'\n').collect();
    assert_eq!(got.len(), 4, "three records and the end");
    let first = std::str::from_utf8(got[0]).expect("utf-8");
    assert!(first.contains(r#""rule":"webshell_child_process""#), "{first}");
    assert_eq!(got[1], BENIGN);
    assert_eq!(got[2], b"not json");
    assert_eq!(served.stats.annotated, 1);
    assert_eq!(served.stats.lines, 3);
}

#[tokio::test(start_paused = true)]
async fn a_quiet_connection_is_closed_at_its_idle_deadline() {
    let (forward, received) = downstream().await;
    let (addr, stop, server) = start(config(forward, limits(Some(300), None))).await;
    let mut client = TcpStream::connect(addr).await.expect("connect");
    client.write_all(&lines(&[BENIGN])).await.expect("write");
    let started = Instant::now();
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).await.expect("the sidecar closes the connection");
    let waited = started.elapsed();
    assert!(waited >= Duration::from_secs(300) && waited < Duration::from_secs(302), "{waited:?}");
    stop.send(()).expect("the sidecar runs");
    server.await.expect("serve returns").result.expect("a clean shutdown");
    assert_eq!(received.await.expect("the downstream ends"), lines(&[BENIGN]));
}

#[tokio::test(start_paused = true)]
async fn a_record_left_unfinished_is_written_ended_at_its_deadline() {
    let (forward, received) = downstream().await;
    let (addr, stop, server) = start(config(forward, limits(Some(300), Some(10)))).await;
    let mut client = TcpStream::connect(addr).await.expect("connect");
    client.write_all(&lines(&[BENIGN])).await.expect("write");
    client.write_all(br#"{"EventID":1,"Image":"#).await.expect("write");
    let started = Instant::now();
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).await.expect("the sidecar closes the connection");
    let waited = started.elapsed();
    // The partial-line deadline, not the idle one.
    assert!(waited >= Duration::from_secs(10) && waited < Duration::from_secs(12), "{waited:?}");
    stop.send(()).expect("the sidecar runs");
    server.await.expect("serve returns").result.expect("a clean shutdown");
    let mut expected = lines(&[BENIGN]);
    expected.extend_from_slice(b"{\"EventID\":1,\"Image\":\n");
    assert_eq!(received.await.expect("the downstream ends"), expected);
}

#[tokio::test(start_paused = true)]
async fn shutdown_writes_what_open_connections_sent_and_ends_cleanly() {
    let (forward, received) = downstream().await;
    let (addr, stop, server) = start(config(forward, limits(Some(300), None))).await;
    let mut client = TcpStream::connect(addr).await.expect("connect");
    // Whole records and the start of one: on shutdown all of it is written (the peer will
    // not send it again), the unfinished one ended by `\n`.
    client.write_all(&lines(&[WEBSHELL, BENIGN])).await.expect("write");
    client.write_all(b"{\"EventID\":").await.expect("write");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let started = Instant::now();
    stop.send(()).expect("the sidecar runs");
    let served = server.await.expect("serve returns");
    served.result.expect("a clean shutdown");
    // Drained as soon as the connection was quiet, not at its idle deadline.
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
    let got = received.await.expect("the downstream ends");
    assert!(got.ends_with(b"\n{\"EventID\":\n"), "{}", String::from_utf8_lossy(&got));
    assert_eq!(got.iter().filter(|&&b| b == b'\n').count(), 3);
    assert_eq!(served.stats.annotated, 1);
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).await.expect("the connection was closed");
}

#[tokio::test(start_paused = true)]
async fn a_downstream_that_never_comes_fails_the_shutdown_at_its_timeout() {
    // An address nobody listens on: the output reconnects with backoff, forever.
    let gone = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let forward = gone.local_addr().expect("its address").to_string();
    drop(gone);
    let (addr, stop, server) = start(config(forward, limits(None, None))).await;
    let mut client = TcpStream::connect(addr).await.expect("connect");
    client.write_all(&lines(&[BENIGN])).await.expect("write");
    client.shutdown().await.expect("close");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let started = Instant::now();
    stop.send(()).expect("the sidecar runs");
    let served = server.await.expect("serve returns");
    let waited = started.elapsed();
    assert!(matches!(served.result, Err(Error::NotDrained(t)) if t == Duration::from_secs(30)));
    assert!(waited >= Duration::from_secs(30) && waited < Duration::from_secs(32), "{waited:?}");
}

#[tokio::test(start_paused = true)]
async fn lines_in_and_frames_out_is_refused() {
    let (forward, _received) = downstream().await;
    let mut config = config(forward, limits(None, None));
    config.output = Framing::OctetCounted;
    let listener = serve::bind("127.0.0.1:0".parse().expect("addr")).await.expect("bind");
    let served = serve::serve(listener, config, std::future::pending()).await;
    assert!(matches!(served.result, Err(Error::Config(_))));
}
