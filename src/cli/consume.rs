//! `iis-tagger consume`: tag a NATS JetStream stream, shared by any number of instances.
//!
//! Every instance reads the stream through one durable pull consumer (the server splits the
//! messages between them), tags each message as one record (the driver's record mode, as
//! `mmexternal` does), publishes it — tagged or not — to the output subject with a
//! `Nats-Msg-Id` made of the input stream's name and the message's stream sequence, and
//! acknowledges the input message only once the output stream has acknowledged the
//! publish. A crash between the two leaves the input unacknowledged: the server delivers it
//! again after `--ack-wait-secs`, to this instance or another, and the output stream's
//! duplicate window drops the second publish (same id), so downstream sees each record
//! once (at-least-once end to end, de-duplicated within the window; see README "NATS
//! JetStream").
//!
//! At most `--in-flight` messages are taken and not yet acknowledged (backpressure: the
//! server holds the rest). SIGTERM/SIGINT stop taking messages; those in flight are
//! published and acknowledged, then the process exits. SIGHUP reloads the rules.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use async_nats::jetstream::{self, AckKind, consumer::pull};
use bytes::Bytes;
use clap::Args;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;

use super::args::{CoreArgs, RuleArgs, StatsArgs};
use super::common::Failure;
use super::live::{Live, Totals};

/// Options of `iis-tagger consume`.
#[derive(Debug, Args)]
pub struct ConsumeArgs {
    /// The NATS server(s), comma-separated URLs.
    #[arg(long, value_name = "URL", default_value = "nats://127.0.0.1:4222")]
    pub server: String,
    /// The JetStream stream to read.
    #[arg(long, value_name = "NAME")]
    pub stream: String,
    /// The durable pull consumer every instance shares (made if missing).
    #[arg(long, value_name = "NAME", default_value = "iis-tagger")]
    pub consumer: String,
    /// Read only the stream's messages on this subject (a consumer of a part of the stream:
    /// one consumer per partition keeps each partition's order, see README).
    #[arg(long, value_name = "SUBJECT")]
    pub filter_subject: Option<String>,
    /// Where every record is published (a subject of the output stream); `{subject}` is
    /// replaced by the input message's subject.
    #[arg(long, value_name = "SUBJECT")]
    pub output_subject: String,
    /// Messages taken and not yet acknowledged, at most.
    #[arg(long, value_name = "N", default_value_t = 512)]
    pub in_flight: usize,
    /// How long the server waits for an acknowledgement before it delivers a message again
    /// (the consumer's ack wait, when this instance makes the consumer).
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    pub ack_wait_secs: u64,
    /// NATS credentials file (JWT and nkey seed).
    #[arg(long, value_name = "FILE")]
    pub creds: Option<PathBuf>,
    /// TLS: trust these CAs (PEM) for the server, and require TLS.
    #[arg(long, value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// TLS client certificate (PEM), with --tls-key.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// TLS client key (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Serve Prometheus metrics at http://ADDR/metrics: messages, publishes, duplicates,
    /// redeliveries, in flight, the consumer's pending messages (lag), matches per rule.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<SocketAddr>,
    /// Publish every message as it came, untagged: the plain relay the benchmark compares
    /// with (benches/nats.rs).
    #[arg(long, hide = true)]
    pub relay_only: bool,
    /// Inspection settings.
    #[command(flatten)]
    pub core: CoreArgs,
    /// The summary at the end.
    #[command(flatten)]
    pub summary: StatsArgs,
}

/// The adapter's own counters.
#[derive(Default)]
struct Counters {
    consumed: AtomicU64,
    published: AtomicU64,
    duplicates: AtomicU64,
    redelivered: AtomicU64,
    publish_failures: AtomicU64,
    without_id: AtomicU64,
    in_flight: AtomicU64,
    pending: AtomicU64,
    annotation_dropped: AtomicU64,
    too_large: AtomicU64,
}

/// Runs until SIGTERM/SIGINT.
pub fn run(args: &ConsumeArgs, rules: &RuleArgs) -> Result<(), Failure> {
    if args.in_flight == 0 {
        return Err(Failure::setup("--in-flight must be at least 1"));
    }
    let (live, skipped) = Live::load(rules, args.core.config(true))?;
    let live = Arc::new(live);
    live.watch()?;
    let runtime = super::serve::runtime()?;
    let counters = Arc::new(Counters::default());
    let totals = Arc::new(std::sync::Mutex::new(Totals::new(live.tagger())));
    let result = runtime.block_on(consume(args, &live, &counters, &totals));
    let mut totals = totals.lock().unwrap_or_else(|e| e.into_inner());
    let tagger = live.tagger();
    totals.move_to(&tagger);
    args.summary.print(&totals.stats, &tagger, &skipped, false, Some(live.current().status()));
    if args.summary.stats || args.summary.stats_format.is_some() {
        super::notes::say(&format!(
            "consume: {} messages, {} published ({} duplicates dropped by the output stream), {} redelivered, {} publishes failed",
            counters.consumed.load(Relaxed),
            counters.published.load(Relaxed),
            counters.duplicates.load(Relaxed),
            counters.redelivered.load(Relaxed),
            counters.publish_failures.load(Relaxed)
        ));
    }
    runtime.shutdown_timeout(Duration::from_millis(100));
    result
}

async fn consume(
    args: &ConsumeArgs,
    live: &Live,
    counters: &Arc<Counters>,
    totals: &Arc<std::sync::Mutex<Totals>>,
) -> Result<(), Failure> {
    let setup = |what: &str| {
        let what = what.to_string();
        move |e: Box<dyn std::error::Error + Send + Sync>| Failure::setup(format!("{what}: {e}"))
    };
    let mut options = async_nats::ConnectOptions::new()
        .name("iis-tagger")
        .retry_on_initial_connect()
        .max_reconnects(None)
        .connection_timeout(Duration::from_secs(5));
    if let Some(creds) = &args.creds {
        options = options
            .credentials_file(creds)
            .await
            .map_err(|e| Failure::setup(format!("--creds {}: {e}", creds.display())))?;
    }
    if let Some(ca) = &args.tls_ca {
        options = options.add_root_certificates(ca.clone()).require_tls(true);
    }
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        options = options.add_client_certificate(cert.clone(), key.clone());
    }
    let servers: Vec<&str> = args.server.split(',').map(str::trim).collect();
    let client = options.connect(servers).await.map_err(|e| setup("connecting to NATS")(e.into()))?;
    let js = jetstream::new(client.clone());
    // The server's limit on a message, headers included, from its INFO (looked at again
    // now and then: a reconnection may reach a server with another; a stream's own limit
    // is learnt from its refusal). 0: not known yet.
    let mut max_payload = 0;
    let stream =
        js.get_stream(&args.stream).await.map_err(|e| setup(&format!("--stream {}", args.stream))(e.into()))?;
    let consumer: jetstream::consumer::PullConsumer = stream
        .get_or_create_consumer(
            &args.consumer,
            pull::Config {
                durable_name: Some(args.consumer.clone()),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                ack_wait: Duration::from_secs(args.ack_wait_secs),
                filter_subject: args.filter_subject.clone().unwrap_or_default(),
                ..Default::default()
            },
        )
        .await
        .map_err(|e| setup(&format!("--consumer {}", args.consumer))(e.into()))?;
    // The metrics page lives as long as this function.
    let metrics_stop = tokio::sync::watch::channel(false).0;
    if let Some(addr) = args.metrics {
        let listener =
            tokio::net::TcpListener::bind(addr).await.map_err(|e| Failure::setup(format!("--metrics {addr}: {e}")))?;
        super::notes::say(&format!(
            "iis-tagger: metrics on http://{}/metrics",
            listener.local_addr().map_err(Failure::setup)?
        ));
        let (counters, totals, rules) = (counters.clone(), totals.clone(), live.current().clone());
        tokio::spawn(iis_tagger::serve::metrics::serve_page(
            listener,
            move || render(&counters, &totals, &rules),
            metrics_stop.subscribe(),
        ));
    }
    super::notes::say(&format!("iis-tagger: consuming {} through consumer {}", args.stream, args.consumer));
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(args.in_flight.min(256))
        .heartbeat(Duration::from_secs(5))
        .expires(Duration::from_secs(10))
        .messages()
        .await
        .map_err(|e| setup("pulling messages")(e.into()))?;
    let current = live.current();
    let mut seen = current.generation();
    let mut on = current.get();
    let mut tagging = on.stream();
    let mut in_flight = FuturesUnordered::new();
    let terminate = super::signal::termination().map_err(Failure::setup)?;
    let mut terminate = std::pin::pin!(terminate);
    let mut stopping = false;
    let mut ended = false;
    loop {
        tokio::select! {
            biased;
            () = &mut terminate, if !stopping => {
                stopping = true;
                super::notes::say("iis-tagger: stopping: publishing and acknowledging what is in flight");
            }
            Some(()) = in_flight.next(), if !in_flight.is_empty() => {
                counters.in_flight.fetch_sub(1, Relaxed);
            }
            next = messages.next(), if !stopping && in_flight.len() < args.in_flight => {
                let message = match next {
                    Some(Ok(m)) => m,
                    Some(Err(e)) => {
                        super::notes::say(&format!("iis-tagger: pulling messages: {e}"));
                        continue;
                    }
                    None => {
                        // The consumer went away (deleted?): what is in flight is finished,
                        // then the run fails, so that a supervisor restarts it.
                        super::notes::say("iis-tagger: the consumer's message stream ended (was the consumer deleted?)");
                        stopping = true;
                        ended = true;
                        continue;
                    }
                };
                if let Some(next) = current.newer(&on, &mut seen) {
                    let (parked, moved) = tagging.park();
                    totals.lock().unwrap_or_else(|e| e.into_inner()).add(&moved, &on);
                    on = next;
                    tagging = parked.resume(&on);
                }
                counters.consumed.fetch_add(1, Relaxed);
                let (id, delivered, pending) = match message.info() {
                    Ok(info) => (format!("{}:{}", info.stream, info.stream_sequence), info.delivered, info.pending),
                    Err(_) => {
                        counters.without_id.fetch_add(1, Relaxed);
                        (String::new(), 1, 0)
                    }
                };
                counters.pending.store(pending, Relaxed);
                if delivered > 1 {
                    counters.redelivered.fetch_add(1, Relaxed);
                }
                let (payload, annotation): (Bytes, Option<Bytes>) = if args.relay_only {
                    (message.payload.clone(), None)
                } else {
                    let mut out = Vec::with_capacity(message.payload.len() + 512);
                    let annotated = tagging.record(&message.payload, &mut out);
                    let annotation = annotated.then(|| tagging.annotation().map(Bytes::copy_from_slice)).flatten();
                    (out.into(), annotation)
                };
                let subject = args.output_subject.replace("{subject}", message.subject.as_str());
                // The input's own headers travel on; JetStream's control headers (`Nats-…`:
                // expected stream or sequence, rollup, TTL, the message id) are about the
                // input stream and would be checked against the output one.
                let mut headers = async_nats::HeaderMap::new();
                for (name, values) in message.headers.iter().flat_map(|h| h.iter()) {
                    let text: &str = name.as_ref();
                    if text.get(..5).is_some_and(|p| p.eq_ignore_ascii_case("nats-")) {
                        continue;
                    }
                    for v in values {
                        headers.append(name.clone(), v.clone());
                    }
                }
                if !id.is_empty() {
                    headers.insert(async_nats::header::NATS_MESSAGE_ID, id.as_str());
                }
                if max_payload == 0 || counters.consumed.load(Relaxed) % 1024 == 0 {
                    max_payload = client.server_info().max_payload;
                }
                let record = Outgoing { subject, headers, payload, annotation };
                let limit = if max_payload == 0 { usize::MAX } else { max_payload };
                in_flight.push(deliver(js.clone(), limit, record, message, counters.clone()));
                counters.in_flight.fetch_add(1, Relaxed);
            }
            else => break,
        }
        if stopping && in_flight.is_empty() {
            break;
        }
        // The counters of the stream, for /metrics: every 512 messages, and whenever
        // nothing is in flight (the stream is quiet, or at its end).
        if counters.consumed.load(Relaxed) % 512 == 0 || in_flight.is_empty() {
            let mut t = totals.lock().unwrap_or_else(|e| e.into_inner());
            t.add(tagging.stats(), &on);
            tagging.reset_stats();
        }
    }
    totals.lock().unwrap_or_else(|e| e.into_inner()).add(tagging.stats(), &on);
    let _ = client.flush().await;
    if ended {
        return Err(Failure::io(format!(
            "consumer {} of stream {}: its message stream ended",
            args.consumer, args.stream
        )));
    }
    Ok(())
}

/// A record to publish: the tagged payload, and the annotation it holds (if any).
struct Outgoing {
    subject: String,
    headers: async_nats::HeaderMap,
    payload: Bytes,
    annotation: Option<Bytes>,
}

/// The header a record too large to publish annotated carries instead of the annotation:
/// [`ANNOTATION_DROPPED`] and the rules that matched.
const ANNOTATION_HEADER: &str = "Iis-Tagger-Annotation";
const ANNOTATION_DROPPED: &str = "dropped (the annotated record is larger than the server or stream takes)";

/// Form `k` of a record, the forms tried in order while each is too large for the server
/// (`max_payload`, known before publishing) or the output stream (its maximum message size,
/// known from its refusal): 0, the tagged record; for an annotated record, 1, the record as
/// it came with [`ANNOTATION_HEADER`] saying the annotation was dropped and naming the
/// rules, and 2, the same with no header of the input's. (The annotation itself in a header
/// would be larger than in the record.) So a detection is never lost unsaid, and a record
/// is never handed back for ever because its annotation pushed it over a limit. Only form
/// 0 is made for a record that fits: the others cost a parse of the annotation.
fn form(record: &Outgoing, original: &Bytes, k: usize) -> Option<(async_nats::HeaderMap, Bytes)> {
    if k == 0 {
        return Some((record.headers.clone(), record.payload.clone()));
    }
    let annotation = record.annotation.as_ref().filter(|_| k <= 2)?;
    let mut headers = if k == 1 {
        record.headers.clone()
    } else {
        let mut bare = async_nats::HeaderMap::new();
        if let Some(id) = record.headers.get(async_nats::header::NATS_MESSAGE_ID) {
            bare.insert(async_nats::header::NATS_MESSAGE_ID, id.clone());
        }
        bare
    };
    let said = format!("{ANNOTATION_DROPPED}; rules: {}", rules_of(annotation).join(","));
    headers.insert(ANNOTATION_HEADER, said.as_str());
    Some((headers, original.clone()))
}

/// The first [`form`] from `k` on that the server takes (`max_payload`), and its number.
fn fitting(
    record: &Outgoing,
    original: &Bytes,
    mut k: usize,
    max_payload: usize,
) -> (usize, Option<(async_nats::HeaderMap, Bytes)>) {
    loop {
        match form(record, original, k) {
            Some((h, p)) if message_size(&h, &p) > max_payload => k += 1,
            found => return (k, found),
        }
    }
}

/// The rules an annotation names (`"iis_tagger":{…,"detections":[{"rule":…},…]}`).
fn rules_of(annotation: &[u8]) -> Vec<String> {
    let member = format!("{{{}}}", String::from_utf8_lossy(annotation));
    let value: serde_json::Value = serde_json::from_str(&member).unwrap_or_default();
    let detections = value.get("iis_tagger").and_then(|t| t.get("detections")).and_then(|d| d.as_array());
    detections
        .into_iter()
        .flatten()
        .filter_map(|d| d.get("rule").and_then(|r| r.as_str()).map(str::to_string))
        .collect()
}

/// The bytes a message takes against the server's `max_payload`: the payload and the
/// header block (`NATS/1.0\r\n`, a `Name: value\r\n` line per value, `\r\n`).
fn message_size(headers: &async_nats::HeaderMap, payload: &[u8]) -> usize {
    let lines: usize = headers
        .iter()
        .map(|(name, values)| {
            values.iter().map(|v| AsRef::<str>::as_ref(name).len() + v.as_str().len() + 4).sum::<usize>()
        })
        .sum();
    payload.len() + if lines == 0 { 0 } else { 12 + lines }
}

/// Whether a publish was refused for the message's size (by the client, against the
/// server's `max_payload`, or by the stream, against its maximum message size).
fn refused_for_size(e: &async_nats::jetstream::context::PublishError) -> bool {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(js) = s.downcast_ref::<async_nats::jetstream::Error>() {
            return js.error_code() == async_nats::jetstream::ErrorCode::STREAM_MESSAGE_EXCEEDS_MAXIMUM;
        }
        if let Some(p) = s.downcast_ref::<async_nats::PublishError>() {
            return p.kind() == async_nats::client::PublishErrorKind::MaxPayloadExceeded;
        }
        source = s.source();
    }
    false
}

/// Publishes one record and, once the output stream has it, acknowledges the input.
/// A publish that fails is retried a few times (same id: a publish that did land is a
/// duplicate the output stream drops), then the input is given back to the server
/// (`Nak`), to be delivered again. A publish refused for its size moves on to the next of
/// [`form`]s; a record none of whose forms fits is terminated (`Term`), counted and said.
async fn deliver(
    js: jetstream::Context,
    max_payload: usize,
    record: Outgoing,
    message: jetstream::Message,
    counters: Arc<Counters>,
) {
    let subject = &record.subject;
    let (mut k, mut current) = fitting(&record, &message.payload, 0, max_payload);
    let mut wait = Duration::from_millis(100);
    let mut attempt = 0;
    while let Some((headers, payload)) = &current {
        let published = match js.publish_with_headers(subject.clone(), headers.clone(), payload.clone()).await {
            Ok(ack) => ack.await,
            Err(e) => Err(async_nats::jetstream::context::PublishError::with_source(
                async_nats::jetstream::context::PublishErrorKind::Other,
                e,
            )),
        };
        match published {
            Ok(ack) => {
                counters.published.fetch_add(1, Relaxed);
                if ack.duplicate {
                    counters.duplicates.fetch_add(1, Relaxed);
                }
                match k {
                    0 => {}
                    _ => {
                        counters.annotation_dropped.fetch_add(1, Relaxed);
                        super::notes::say(&format!(
                            "iis-tagger: a record to {subject} ({}) was published without its annotation, too large with it: {}",
                            id_of(&record),
                            String::from_utf8_lossy(record.annotation.as_deref().unwrap_or_default())
                        ));
                    }
                }
                // Acknowledged and confirmed by the server: a lost acknowledgement would
                // mean a redelivery, which the output's duplicate window absorbs.
                let _ = message.double_ack().await;
                return;
            }
            Err(e) if refused_for_size(&e) => (k, current) = fitting(&record, &message.payload, k + 1, max_payload),
            Err(e) => {
                counters.publish_failures.fetch_add(1, Relaxed);
                attempt += 1;
                if attempt == 5 {
                    super::notes::say(&format!(
                        "iis-tagger: publishing to {subject}: {e}; the message goes back to the server"
                    ));
                    let _ = message.ack_with(AckKind::Nak(Some(Duration::from_secs(1)))).await;
                    return;
                }
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(2));
            }
        }
    }
    counters.too_large.fetch_add(1, Relaxed);
    super::notes::say(&format!(
        "iis-tagger: a record to {subject} ({}, {} bytes) is larger than the server or the output stream takes in any form; it is terminated, not published",
        id_of(&record),
        message.payload.len()
    ));
    let _ = message.ack_with(AckKind::Term).await;
}

/// The record's message id, for what is said of it.
fn id_of(record: &Outgoing) -> String {
    record.headers.get(async_nats::header::NATS_MESSAGE_ID).map_or_else(|| "no id".into(), |v| v.to_string())
}

/// The consumer's metrics page: its own counters, then the tagging's
/// ([`iis_tagger::serve::metrics::render_tagging`], as the sidecar shows them).
fn render(counters: &Counters, totals: &std::sync::Mutex<Totals>, rules: &iis_tagger::reload::Current) -> String {
    let c = counters;
    let own: [(&str, &str, &str, &AtomicU64); 10] = [
        ("consumed_total", "counter", "Messages taken from the stream.", &c.consumed),
        ("published_total", "counter", "Records published and acknowledged by the output stream.", &c.published),
        (
            "publish_duplicates_total",
            "counter",
            "Publishes the output stream dropped as duplicates (a redelivery of a record already published).",
            &c.duplicates,
        ),
        ("redelivered_total", "counter", "Messages delivered more than once.", &c.redelivered),
        (
            "publish_failures_total",
            "counter",
            "Publish attempts that failed (retried, then the message given back).",
            &c.publish_failures,
        ),
        (
            "messages_without_id_total",
            "counter",
            "Messages whose stream sequence could not be read: published without a Nats-Msg-Id (a redelivery of one is not de-duplicated).",
            &c.without_id,
        ),
        (
            "annotations_dropped_total",
            "counter",
            "Annotated records too large to publish with their annotation: published as they came, the Iis-Tagger-Annotation header naming the rules (and stderr the annotation).",
            &c.annotation_dropped,
        ),
        (
            "records_too_large_total",
            "counter",
            "Records larger than the server or the output stream takes in any form: terminated, not published.",
            &c.too_large,
        ),
        ("in_flight", "gauge", "Messages taken and not yet acknowledged.", &c.in_flight),
        (
            "consumer_pending",
            "gauge",
            "Messages of the stream not yet delivered to the consumer (lag), as of the last message.",
            &c.pending,
        ),
    ];
    let mut o = String::new();
    for (name, kind, help, value) in own {
        let value = value.load(Relaxed);
        let _ =
            writeln!(o, "# HELP iis_tagger_{name} {help}\n# TYPE iis_tagger_{name} {kind}\niis_tagger_{name} {value}");
    }
    let totals = totals.lock().unwrap_or_else(|e| e.into_inner());
    iis_tagger::serve::metrics::render_tagging(&mut o, &totals.stats, &totals.on, &rules.status());
    o
}
