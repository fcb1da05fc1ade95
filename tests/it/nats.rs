//! `iis-tagger consume` against a real NATS server with JetStream (issue 14): Debian's
//! `nats-server -js`, which `.ci/run` installs. Instances sharing one durable consumer, one
//! killed with SIGKILL mid-stream and restarted, the server restarted mid-stream, poison
//! messages: every record arrives once (the output stream's duplicate window drops the
//! redelivered ones' second publish), annotated as the stream mode annotates it.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use futures_util::StreamExt;

use crate::needs::{Need, need};
use crate::net::wait_for;
use crate::support::{annotation, builtin_tagger, temp_dir};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// A nats-server with JetStream, its store in `dir`.
struct Server {
    binary: PathBuf,
    dir: PathBuf,
    port: u16,
    child: Option<Child>,
    /// A `tls { ... }` block for the server's configuration.
    tls: String,
}

impl Server {
    fn start(binary: &Path, dir: &Path) -> Server {
        Server::start_tls(binary, dir, String::new())
    }

    fn start_tls(binary: &Path, dir: &Path, tls: String) -> Server {
        let mut s =
            Server { binary: binary.to_path_buf(), dir: dir.to_path_buf(), port: free_port(), child: None, tls };
        s.up();
        s
    }

    fn up(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join("nats.log")).expect("log");
        // max_payload is a setting of the file only: 4 MiB, for the huge poison message.
        let conf = self.dir.join("nats.conf");
        let text = format!(
            "listen: 127.0.0.1:{}\nmax_payload: 4194304\njetstream {{ store_dir: \"{}\" }}\n{}\n",
            self.port,
            self.dir.join("js").display(),
            self.tls
        );
        std::fs::write(&conf, text).expect("nats.conf");
        let child = Command::new(&self.binary)
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("nats-server starts");
        self.child = Some(child);
        assert!(
            wait_for(Duration::from_secs(20), || TcpStream::connect(("127.0.0.1", self.port)).is_ok()),
            "nats-server listens"
        );
    }

    fn restart(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
            let _ = c.wait();
        }
        self.up();
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// An `iis-tagger consume` instance, killed when dropped.
struct Instance(Child);

impl Instance {
    fn start(url: &str, dir: &Path, n: usize) -> Instance {
        Instance::start_with(url, dir, n, &["--in-flight", "256"]).0
    }

    /// An instance with `extra` options; its log file.
    fn start_with(url: &str, dir: &Path, n: usize, extra: &[&str]) -> (Instance, PathBuf) {
        let path = dir.join(format!("consume-{n}-{}.log", Instant::now().elapsed().as_nanos()));
        let log = std::fs::File::create(&path).expect("log");
        let child = Command::new(env!("CARGO_BIN_EXE_iis-tagger"))
            .args(["consume", "--server", url, "--stream", "IN", "--output-subject", "out.{subject}"])
            .args(["--ack-wait-secs", "3", "--stats"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("consume starts");
        (Instance(child), path)
    }

    fn kill9(&mut self) {
        let _ = Command::new("kill").args(["-KILL", &self.0.id().to_string()]).status();
        let _ = self.0.wait();
    }

    fn stop(mut self) -> bool {
        let _ = Command::new("kill").args(["-TERM", &self.0.id().to_string()]).status();
        let ok = wait_for(Duration::from_secs(30), || self.0.try_wait().ok().flatten().is_some());
        ok && self.0.wait().is_ok_and(|s| s.success())
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Record `seq`: one in a hundred a web shell, the rest benign; every hundred-and-first
/// not JSON at all.
fn record(seq: u64) -> Vec<u8> {
    if seq % 101 == 100 {
        return format!("not json at all, record {seq}").into_bytes();
    }
    let (parent, image) = if seq % 100 == 7 {
        (r"C:\\Windows\\System32\\inetsrv\\w3wp.exe", r"C:\\Windows\\System32\\cmd.exe")
    } else {
        (r"C:\\Windows\\explorer.exe", r"C:\\Windows\\System32\\notepad.exe")
    };
    format!(
        r#"{{"seq":{seq},"EventID":1,"Channel":"Microsoft-Windows-Sysmon/Operational","Computer":"host{}","ParentImage":"{parent}","Image":"{image}"}}"#,
        seq % 10
    )
    .into_bytes()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime")
}

/// TLS settings of the test's own client: (CA, client certificate, client key).
static CLIENT_TLS: std::sync::Mutex<Option<(String, String, String)>> = std::sync::Mutex::new(None);

async fn context(url: &str) -> jetstream::Context {
    let tls = CLIENT_TLS.lock().expect("tls").clone().filter(|_| url.contains("tls-"));
    let url = url.replace("tls-", "");
    let mut options = async_nats::ConnectOptions::new();
    if let Some((ca, cert, key)) = tls {
        options =
            options.add_root_certificates(ca.into()).add_client_certificate(cert.into(), key.into()).require_tls(true);
    }
    jetstream::new(options.connect(url).await.expect("connects"))
}

/// The input and output streams, and `records` published to the input (pipelined, each
/// acknowledged).
async fn setup(url: &str, records: &[Vec<u8>]) {
    setup_with(url, records, 4 << 20).await
}

/// [`setup`], the output stream taking messages of at most `out_max` bytes.
async fn setup_with(url: &str, records: &[Vec<u8>], out_max: i32) {
    let js = context(url).await;
    for (name, subject, max) in [("IN", "in.>", 4 << 20), ("OUT", "out.>", out_max)] {
        js.create_stream(jetstream::stream::Config {
            name: name.into(),
            subjects: vec![subject.into()],
            duplicate_window: Duration::from_secs(120),
            max_message_size: max,
            ..Default::default()
        })
        .await
        .expect("stream");
    }
    let mut acks = Vec::new();
    for (seq, r) in records.iter().enumerate() {
        let subject = format!("in.host{}", seq % 10);
        acks.push(js.publish(subject, r.clone().into()).await.expect("publish"));
        if acks.len() == 2048 {
            for a in acks.drain(..) {
                a.await.expect("acknowledged");
            }
        }
    }
    for a in acks {
        a.await.expect("acknowledged");
    }
}

async fn output_count(url: &str) -> u64 {
    let js = context(url).await;
    let mut s = js.get_stream("OUT").await.expect("OUT");
    s.info().await.map(|i| i.state.messages).unwrap_or(0)
}

/// Every message of the output stream, in stream order, with its `Nats-Msg-Id`.
async fn output(url: &str) -> Vec<(String, Vec<u8>)> {
    output_with(url, "Iis-Tagger-Annotation").await.into_iter().map(|(id, payload, _)| (id, payload)).collect()
}

/// [`output`], with each message's value of `header` (empty when absent).
async fn output_with(url: &str, header: &str) -> Vec<(String, Vec<u8>, String)> {
    let js = context(url).await;
    let stream = js.get_stream("OUT").await.expect("OUT");
    let consumer: jetstream::consumer::PullConsumer = stream
        .create_consumer(jetstream::consumer::pull::Config { durable_name: Some("check".into()), ..Default::default() })
        .await
        .expect("consumer");
    let total = output_count(url).await as usize;
    let mut got: Vec<(String, Vec<u8>, String)> = Vec::with_capacity(total);
    let mut messages = consumer.messages().await.expect("messages");
    while got.len() < total {
        let m = messages.next().await.expect("a message").expect("no error");
        let id = m
            .headers
            .as_ref()
            .and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID))
            .map(|v| v.to_string())
            .unwrap_or_default();
        let value = m.headers.as_ref().and_then(|h| h.get(header)).map(|v| v.to_string()).unwrap_or_default();
        got.push((id, m.payload.to_vec(), value));
        m.ack().await.expect("ack");
    }
    got
}

/// Checks the output: each input record exactly once (by its id, the input stream's
/// sequence), annotated as the stream mode annotates it, otherwise unchanged.
fn check(records: &[Vec<u8>], out: &[(String, Vec<u8>)]) {
    assert_eq!(out.len(), records.len(), "every record once");
    let tagger = builtin_tagger();
    let mut seen = vec![false; records.len()];
    for (id, payload) in out {
        let seq: usize = id
            .strip_prefix("IN:")
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("an id from the input: {id:?}"));
        assert!(!std::mem::replace(&mut seen[seq - 1], true), "{id} twice");
        let sent = &records[seq - 1];
        let (want, _) = tagger.tag_all(sent);
        assert_eq!(payload, &want, "{id} as the stream mode tags it");
    }
    let annotated = out.iter().filter(|(_, p)| annotation(p, "iis_tagger").is_some()).count();
    assert!(annotated >= records.len() / 120, "the detections are there ({annotated})");
}

fn nats_server() -> Option<PathBuf> {
    need(Need::Program("nats-server", &["/usr/sbin/nats-server", "/usr/bin/nats-server"]))
}

#[test]
fn three_instances_share_a_stream_and_one_killed_loses_and_repeats_nothing() {
    let Some(binary) = nats_server() else { return };
    let dir = temp_dir("nats-three");
    let server = Server::start(&binary, &dir);
    let url = server.url();
    let rt = runtime();
    let n: u64 = 1_000_000;
    let records: Vec<Vec<u8>> = (0..n).map(record).collect();
    rt.block_on(setup(&url, &records));
    let mut instances: Vec<Instance> = (0..3).map(|i| Instance::start(&url, &dir, i)).collect();
    // Mid-stream, one instance is killed without a chance to acknowledge what it holds.
    assert!(wait_for(Duration::from_secs(120), || rt.block_on(output_count(&url)) >= n / 3), "a third is through");
    instances[0].kill9();
    instances[0] = Instance::start(&url, &dir, 3);
    assert!(
        wait_for(Duration::from_secs(300), || rt.block_on(output_count(&url)) >= n),
        "every record is published ({} of {n})",
        rt.block_on(output_count(&url))
    );
    // Nothing more comes: the redeliveries of what the killed one held were duplicates.
    std::thread::sleep(Duration::from_secs(5));
    for i in instances {
        assert!(i.stop(), "an instance drains and exits 0 on SIGTERM");
    }
    let out = rt.block_on(output(&url));
    check(&records, &out);
    drop(server);
}

#[test]
fn the_server_restarted_mid_stream_and_poison_messages() {
    let Some(binary) = nats_server() else { return };
    let dir = temp_dir("nats-restart");
    let mut server = Server::start(&binary, &dir);
    let url = server.url();
    let rt = runtime();
    let mut records: Vec<Vec<u8>> = (0..100_000).map(record).collect();
    // Poison: a huge line (over the line limit, passed through uninspected), invalid UTF-8,
    // an empty message.
    records.push(vec![b'x'; 3 << 20]);
    records.push(vec![0xff, 0xfe, b'{', 0x80]);
    records.push(Vec::new());
    rt.block_on(setup(&url, &records));
    let instance = Instance::start(&url, &dir, 0);
    assert!(wait_for(Duration::from_secs(120), || rt.block_on(output_count(&url)) >= 30_000));
    server.restart();
    assert!(
        wait_for(Duration::from_secs(180), || rt.block_on(output_count(&url)) >= records.len() as u64),
        "every record after the restart ({} of {})",
        rt.block_on(output_count(&url)),
        records.len()
    );
    std::thread::sleep(Duration::from_secs(4));
    assert!(instance.stop());
    let out = rt.block_on(output(&url));
    check(&records, &out);
}

/// The metrics page of an instance started with `--metrics 127.0.0.1:0` (its address from
/// its log).
fn metrics_of(log: &Path) -> String {
    use std::io::{Read, Write};
    let mut addr = None;
    assert!(wait_for(Duration::from_secs(20), || {
        addr = std::fs::read_to_string(log).unwrap_or_default().lines().find_map(|l| {
            l.strip_prefix("iis-tagger: metrics on http://").map(|a| a.trim_end_matches("/metrics").to_string())
        });
        addr.is_some()
    }));
    let mut s = TcpStream::connect(addr.expect("address")).expect("metrics");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").expect("request");
    let mut page = String::new();
    s.read_to_string(&mut page).expect("page");
    page.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default()
}

fn metric(page: &str, name: &str) -> u64 {
    page.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{name} in {page}"))
}

#[test]
fn one_message_in_flight_at_a_time_and_the_metrics_say_so() {
    let Some(binary) = nats_server() else { return };
    let dir = temp_dir("nats-window");
    let server = Server::start(&binary, &dir);
    let url = server.url();
    let rt = runtime();
    let records: Vec<Vec<u8>> = (0..3000).map(record).collect();
    rt.block_on(setup(&url, &records));
    let (instance, log) = Instance::start_with(&url, &dir, 0, &["--in-flight", "1", "--metrics", "127.0.0.1:0"]);
    let mut most = 0;
    let done = wait_for(Duration::from_secs(120), || {
        let page = metrics_of(&log);
        most = most.max(metric(&page, "iis_tagger_in_flight"));
        metric(&page, "iis_tagger_published_total") == records.len() as u64
    });
    assert!(done, "every record through a window of one");
    assert!(most <= 1, "never more than --in-flight taken: {most}");
    let page = metrics_of(&log);
    assert_eq!(metric(&page, "iis_tagger_consumed_total"), records.len() as u64);
    assert_eq!(metric(&page, "iis_tagger_consumer_pending"), 0, "no lag left");
    assert_eq!(metric(&page, "iis_tagger_in_flight"), 0);
    assert!(metric(&page, "iis_tagger_matches_total{rule=\"webshell_child_process\"}") >= 29, "{page}");
    assert!(instance.stop());
    check(&records, &rt.block_on(output(&url)));
}

#[test]
fn consume_over_mutual_tls() {
    let Some(binary) = nats_server() else { return };
    let Some(pki) = crate::tls::Pki::new() else { return };
    let dir = temp_dir("nats-tls");
    let tls = format!(
        "tls {{ cert_file: \"{}\", key_file: \"{}\", ca_file: \"{}\", verify: true }}",
        pki.path("server.pem"),
        pki.path("server.key"),
        pki.path("ca.pem")
    );
    let server = Server::start_tls(&binary, &dir, tls);
    *CLIENT_TLS.lock().expect("tls") = Some((pki.path("ca.pem"), pki.path("client.pem"), pki.path("client.key")));
    // `tls-` marks the test client's own connections as TLS ones (see `context`).
    let url = format!("nats://tls-127.0.0.1:{}", server.port);
    let rt = runtime();
    let records: Vec<Vec<u8>> = (0..3000).map(record).collect();
    rt.block_on(setup(&url, &records));
    // Without TLS the server refuses the instance: nothing goes through.
    let plain = Instance::start(&server.url(), &dir, 9);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(rt.block_on(output_count(&url)), 0, "a plain connection is refused");
    drop(plain);
    let (ca, cert, key) = (pki.path("ca.pem"), pki.path("client.pem"), pki.path("client.key"));
    let (instance, log) =
        Instance::start_with(&server.url(), &dir, 0, &["--tls-ca", &ca, "--tls-cert", &cert, "--tls-key", &key]);
    let through = wait_for(Duration::from_secs(60), || rt.block_on(output_count(&url)) >= records.len() as u64);
    assert!(through, "every record over TLS: {}", std::fs::read_to_string(&log).unwrap_or_default());
    assert!(instance.stop());
    check(&records, &rt.block_on(output(&url)));
}

/// A record whose annotation would take it past the server's `max_payload` (4 MiB here) is
/// published as it came, with a header naming the rules that matched; one too large to
/// publish with its message id at all is terminated and counted. Neither is handed back
/// for ever, and the records around them come out as always.
#[test]
fn records_the_annotation_would_push_past_max_payload() {
    past_a_limit("nats-max-payload", 4 << 20, 4 << 20);
}

/// The same when the limit is the output stream's maximum message size (learnt from its
/// refusal), below the server's.
#[test]
fn records_the_annotation_would_push_past_the_output_streams_limit() {
    past_a_limit("nats-stream-max", 4 << 20, 1 << 20);
}

fn past_a_limit(name: &str, server_max: usize, out_max: usize) {
    let Some(binary) = nats_server() else { return };
    let dir = temp_dir(name);
    let server = Server::start(&binary, &dir);
    let url = server.url();
    let rt = runtime();
    let padded = |seq: u64, size: usize| {
        let mut r = record(seq);
        let pad = format!(r#","pad":"{}"}}"#, "x".repeat(size - r.len() - 9));
        r.pop();
        r.extend_from_slice(pad.as_bytes());
        assert_eq!(r.len(), size);
        r
    };
    assert_eq!(server_max, 4 << 20, "the test server's max_payload");
    let max = out_max;
    let records = vec![
        record(0),
        padded(7, max - 300), // a web shell: annotated, over the limit
        record(1),
        padded(3, max - 4), // not annotated, but with its message id over the limit
        record(107),
    ];
    rt.block_on(setup_with(&url, &records, out_max as i32));
    let (instance, log) =
        Instance::start_with(&url, &dir, 0, &["--max-line-bytes", "8MiB", "--metrics", "127.0.0.1:0"]);
    let page = || metrics_of(&log);
    assert!(
        wait_for(Duration::from_secs(60), || metric(&page(), "iis_tagger_records_too_large_total") == 1
            && rt.block_on(output_count(&url)) == 4),
        "four published, one terminated: {}",
        page()
    );
    std::thread::sleep(Duration::from_secs(4));
    let page = page();
    assert_eq!(metric(&page, "iis_tagger_annotations_dropped_total"), 1);
    assert_eq!(metric(&page, "iis_tagger_consumer_pending"), 0);
    assert!(instance.stop());
    let out = rt.block_on(output_with(&url, "Iis-Tagger-Annotation"));
    // In flight together, so in any order (a refused publish is tried again after the others).
    let mut ids: Vec<&str> = out.iter().map(|(id, _, _)| id.as_str()).collect();
    ids.sort_unstable();
    assert_eq!(ids, ["IN:1", "IN:2", "IN:3", "IN:5"], "each once, the terminated one not at all");
    let tagger = builtin_tagger();
    for (id, payload, header) in &out {
        let sent = &records[id[3..].parse::<usize>().expect("seq") - 1];
        if id == "IN:2" {
            assert_eq!(payload, sent, "published as it came");
            assert!(header.starts_with("dropped") && header.ends_with("rules: webshell_child_process"), "{header}");
        } else {
            assert_eq!(payload, &tagger.tag_all(sent).0, "{id}");
            assert!(header.is_empty(), "{id}: {header}");
        }
    }
    let last = out.iter().find(|(id, _, _)| id == "IN:5").expect("IN:5");
    assert!(annotation(&last.1, "iis_tagger").is_some(), "the record after them is annotated");
    let said = std::fs::read_to_string(&log).expect("log");
    assert!(said.contains("without its annotation") && said.contains("webshell_child_process"), "{said}");
    assert!(said.contains("terminated, not published"), "{said}");
}
