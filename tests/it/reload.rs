//! Rule reloads under load (issue 12), in every long-running mode: a stream runs while the
//! rule file is rewritten and reloaded many times (SIGHUP, and the file watch), once with a
//! broken file. Every record must come out once, in order, annotated by one rule set, the
//! sets in the order they were loaded; the broken set is refused, named file:line:col, and
//! the old one keeps tagging; SIGHUP never ends the process.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use crate::net::wait_for;
use crate::support::{repo, temp_dir};

/// The built-in web-shell rule under another name (generation `n` of the rule file).
fn rule_text(n: usize) -> String {
    let text = std::fs::read_to_string(repo("src/rules/builtin/webshell_child_process.yml")).expect("rule");
    text.replace("name: webshell_child_process", &format!("name: gen_{n}"))
}

/// A record every generation matches, numbered.
fn record(seq: u64) -> String {
    format!(
        r#"{{"seq":{seq},"EventID":1,"Channel":"Microsoft-Windows-Sysmon/Operational","Image":"C:\\Windows\\System32\\cmd.exe","ParentImage":"C:\\Windows\\System32\\inetsrv\\w3wp.exe"}}"#
    )
}

/// A running iis-tagger whose stdout and stderr are collected as they come.
struct Tagger {
    child: Child,
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<String>>,
}

impl Tagger {
    fn start(args: &[&str], stdin: Stdio, dir: &Path) -> Tagger {
        let mut child = Command::new(env!("CARGO_BIN_EXE_iis-tagger"))
            .args(args)
            .current_dir(dir)
            .stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("iis-tagger starts");
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut out = child.stdout.take().expect("stdout");
        let sink = stdout.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 1 << 16];
            while let Ok(n) = out.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().expect("stdout").extend_from_slice(&buf[..n]);
            }
        });
        let err = child.stderr.take().expect("stderr");
        let sink = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let mut s = sink.lock().expect("stderr");
                s.push_str(&line);
                s.push('\n');
            }
        });
        Tagger { child, stdout, stderr }
    }

    fn stderr(&self) -> String {
        self.stderr.lock().expect("stderr").clone()
    }

    fn count(&self, what: &str) -> usize {
        self.stderr().matches(what).count()
    }

    fn lines_out(&self) -> usize {
        self.stdout.lock().expect("stdout").iter().filter(|&&b| b == b'\n').count()
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill").args([sig, &self.child.id().to_string()]).status().expect("kill").success();
        assert!(ok, "signalled");
    }
}

impl Drop for Tagger {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where the test's records go.
enum Feed {
    Stdin(ChildStdin),
    File(std::fs::File),
    Tcp(std::net::TcpStream),
}

impl Feed {
    fn write(&mut self, bytes: &[u8]) {
        match self {
            Feed::Stdin(s) => s.write_all(bytes).expect("write stdin"),
            Feed::File(f) => f.write_all(bytes).expect("append"),
            Feed::Tcp(t) => t.write_all(bytes).expect("send"),
        }
    }
}

/// Sets the flag when dropped: a writer thread stops even when the test fails first.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Writes numbered records (as `wrap` makes each line) until `stop`, then a last batch;
/// returns how many.
fn write_until(mut feed: Feed, stop: &AtomicBool, wrap: fn(String) -> String) -> (u64, Feed) {
    let mut seq = 0;
    let mut tail = 20;
    while tail > 0 {
        if stop.load(Ordering::SeqCst) {
            tail -= 1;
        }
        let mut chunk = String::new();
        for _ in 0..100 {
            chunk.push_str(&wrap(record(seq)));
            chunk.push('\n');
            seq += 1;
        }
        feed.write(chunk.as_bytes());
        std::thread::sleep(Duration::from_millis(3));
    }
    (seq, feed)
}

/// Rewrites the rule file `reloads` times while records stream, reloading by SIGHUP (or by
/// the watch, with `watch`); generation 4 is first written broken. Returns the generations
/// loaded, in order.
fn reload_many(tagger: &Tagger, rule: &Path, watch: bool) -> Vec<usize> {
    let reloads = 7;
    // The stream runs (on generation 0) before the first change.
    assert!(wait_for(Duration::from_secs(20), || tagger.lines_out() > 0), "{}", tagger.stderr());
    let mut loaded = vec![0];
    for n in 1..=reloads {
        if n == 4 {
            std::fs::write(rule, format!("{}\nbroken: [\n", rule_text(n))).expect("broken rule");
            let refused = tagger.count("refused");
            if !watch {
                tagger.signal("-HUP");
            }
            assert!(
                wait_for(Duration::from_secs(15), || tagger.count("refused") > refused),
                "the broken set is refused: {}",
                tagger.stderr()
            );
            std::thread::sleep(Duration::from_millis(300));
        }
        let before = tagger.count("rules reloaded");
        std::fs::write(rule, rule_text(n)).expect("rule");
        if !watch {
            tagger.signal("-HUP");
        }
        assert!(
            wait_for(Duration::from_secs(15), || tagger.count("rules reloaded") > before),
            "generation {n} is loaded: {}",
            tagger.stderr()
        );
        loaded.push(n);
        // Records flow on the new set for a while.
        std::thread::sleep(Duration::from_millis(400));
    }
    loaded
}

/// Checks the records that came out: `sent` of them, in order, each annotated by one
/// generation, the generations never going back and every one loaded seen.
fn check(out: &[u8], sent: u64, loaded: &[usize], rule_of: fn(&Value) -> Option<&str>, seq_of: fn(&Value, u64) -> u64) {
    let lines: Vec<&[u8]> = out.strip_suffix(b"\n").unwrap_or(out).split(|&b| b == b'\n').collect();
    assert_eq!(lines.len() as u64, sent, "every record came out once");
    let mut last = 0;
    let mut seen = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let v: Value = serde_json::from_slice(line).unwrap_or_else(|e| panic!("line {i}: {e}"));
        assert_eq!(seq_of(&v, i as u64), i as u64, "record {i} in order");
        let rule = rule_of(&v).unwrap_or_else(|| panic!("record {i} annotated: {v}"));
        let n: usize = rule.strip_prefix("gen_").and_then(|n| n.parse().ok()).expect("a generation");
        assert!(n >= last, "record {i}: generation {n} after {last}");
        last = n;
        if seen.last() != Some(&n) {
            seen.push(n);
        }
    }
    assert_eq!(seen, loaded, "every generation loaded tagged records, in order");
}

fn annotation_rule(v: &Value) -> Option<&str> {
    v["iis_tagger"]["detections"][0]["rule"].as_str()
}

fn own_seq(v: &Value, _: u64) -> u64 {
    v["seq"].as_u64().expect("seq")
}

fn setup(tag: &str) -> (PathBuf, PathBuf) {
    let dir = temp_dir(tag);
    let rules = dir.join("rules");
    std::fs::create_dir_all(&rules).expect("rules dir");
    let rule = rules.join("gen.yml");
    std::fs::write(&rule, rule_text(0)).expect("rule");
    (dir, rule)
}

/// A stdin stream, on one thread or several, reloaded by SIGHUP.
fn stdin_stream(threads: &str) {
    let (dir, rule) = setup(&format!("reload-stdin-{threads}"));
    let mut tagger = Tagger::start(&["--no-builtin", "--rules", "./rules", "--threads", threads], Stdio::piped(), &dir);
    let feed = Feed::Stdin(tagger.child.stdin.take().expect("stdin"));
    let stop = AtomicBool::new(false);
    let (sent, loaded) = std::thread::scope(|s| {
        let writer = s.spawn(|| write_until(feed, &stop, |r| r));
        let _stop = StopOnDrop(&stop);
        let loaded = reload_many(&tagger, &rule, false);
        stop.store(true, Ordering::SeqCst);
        let (sent, feed) = writer.join().expect("writer");
        drop(feed);
        (sent, loaded)
    });
    let status = tagger.child.wait().expect("exit");
    assert!(status.success(), "SIGHUP did not end it: {status:?} {}", tagger.stderr());
    assert!(wait_for(Duration::from_secs(10), || tagger.lines_out() as u64 >= sent));
    let stderr = tagger.stderr();
    let refusal = stderr.lines().find(|l| l.contains("refused")).expect("a refusal");
    let place = refusal.split("./rules/gen.yml:").nth(1).expect("names the file");
    let mut at = place.split(':').take(2).map(|n| n.parse::<usize>());
    assert!(at.next().is_some_and(|l| l.is_ok()) && at.next().is_some_and(|c| c.is_ok()), "line and column: {refusal}");
    check(&tagger.stdout.lock().expect("out"), sent, &loaded, annotation_rule, own_seq);
}

#[test]
fn a_stdin_stream_reloads_on_sighup_between_records() {
    stdin_stream("1");
}

#[test]
fn a_stdin_stream_on_several_threads_reloads_in_input_order() {
    stdin_stream("2");
}

#[test]
fn follow_reloads_when_a_rule_file_changes() {
    let (dir, rule) = setup("reload-follow");
    let log = dir.join("events.jsonl");
    let file = std::fs::OpenOptions::new().create(true).append(true).open(&log).expect("log");
    let tagger = Tagger::start(
        &["--no-builtin", "--rules", "./rules", "--watch-rules", "--follow", "events.jsonl"],
        Stdio::null(),
        &dir,
    );
    let stop = AtomicBool::new(false);
    let (sent, loaded) = std::thread::scope(|s| {
        let writer = s.spawn(|| write_until(Feed::File(file), &stop, |r| r));
        let _stop = StopOnDrop(&stop);
        let loaded = reload_many(&tagger, &rule, true);
        stop.store(true, Ordering::SeqCst);
        (writer.join().expect("writer").0, loaded)
    });
    assert!(
        wait_for(Duration::from_secs(20), || tagger.lines_out() as u64 >= sent),
        "{} of {sent}",
        tagger.lines_out()
    );
    tagger.signal("-TERM");
    let mut tagger = tagger;
    assert!(tagger.child.wait().expect("exit").success());
    check(&tagger.stdout.lock().expect("out"), sent, &loaded, annotation_rule, own_seq);
}

#[test]
fn serve_reloads_every_connection_between_records() {
    let (dir, rule) = setup("reload-serve");
    let tagger =
        Tagger::start(&["--no-builtin", "--rules", "./rules", "serve", "--listen", "127.0.0.1:0"], Stdio::null(), &dir);
    assert!(wait_for(Duration::from_secs(20), || tagger.stderr().contains("listening on")), "{}", tagger.stderr());
    let addr = tagger
        .stderr()
        .lines()
        .find_map(|l| l.strip_prefix("iis-tagger: listening on ").map(str::to_string))
        .expect("address");
    let conn = std::net::TcpStream::connect(&addr).expect("connect");
    let stop = AtomicBool::new(false);
    let (sent, loaded) = std::thread::scope(|s| {
        let writer = s.spawn(|| write_until(Feed::Tcp(conn), &stop, |r| r));
        let _stop = StopOnDrop(&stop);
        let loaded = reload_many(&tagger, &rule, false);
        stop.store(true, Ordering::SeqCst);
        let (sent, feed) = writer.join().expect("writer");
        drop(feed);
        (sent, loaded)
    });
    assert!(wait_for(Duration::from_secs(20), || tagger.lines_out() as u64 >= sent));
    tagger.signal("-TERM");
    let mut tagger = tagger;
    assert!(tagger.child.wait().expect("exit").success(), "{}", tagger.stderr());
    check(&tagger.stdout.lock().expect("out"), sent, &loaded, annotation_rule, own_seq);
}

#[test]
fn mmexternal_reloads_between_messages() {
    let (dir, rule) = setup("reload-mmexternal");
    let mut tagger = Tagger::start(&["--no-builtin", "--rules", "./rules", "mmexternal"], Stdio::piped(), &dir);
    let feed = Feed::Stdin(tagger.child.stdin.take().expect("stdin"));
    let stop = AtomicBool::new(false);
    let (sent, loaded) = std::thread::scope(|s| {
        let writer = s.spawn(|| write_until(feed, &stop, |r| serde_json::json!({ "msg": r }).to_string()));
        let _stop = StopOnDrop(&stop);
        let loaded = reload_many(&tagger, &rule, false);
        stop.store(true, Ordering::SeqCst);
        let (sent, feed) = writer.join().expect("writer");
        drop(feed);
        (sent, loaded)
    });
    assert!(tagger.child.wait().expect("exit").success(), "{}", tagger.stderr());
    // One reply per message, in order (a reply has no number of its own).
    check(
        &tagger.stdout.lock().expect("out"),
        sent,
        &loaded,
        |v| v["$!"]["iis_tagger"]["detections"][0]["rule"].as_str(),
        |_, i| i,
    );
}

#[test]
fn a_refused_reload_is_in_the_stats_and_the_old_set_keeps_tagging() {
    let (dir, rule) = setup("reload-stats");
    let mut tagger =
        Tagger::start(&["--no-builtin", "--rules", "./rules", "--stats-format", "json"], Stdio::piped(), &dir);
    let mut stdin = tagger.child.stdin.take().expect("stdin");
    stdin.write_all(format!("{}\n", record(0)).as_bytes()).expect("write");
    assert!(wait_for(Duration::from_secs(10), || tagger.lines_out() == 1));
    std::fs::write(&rule, "title: [").expect("broken");
    tagger.signal("-HUP");
    assert!(wait_for(Duration::from_secs(10), || tagger.count("refused") == 1), "{}", tagger.stderr());
    stdin.write_all(format!("{}\n", record(1)).as_bytes()).expect("write");
    drop(stdin);
    assert!(tagger.child.wait().expect("exit").success());
    let out = tagger.stdout.lock().expect("out").clone();
    for line in out.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let v: Value = serde_json::from_slice(line).expect("json");
        assert_eq!(annotation_rule(&v), Some("gen_0"), "the old set tags on");
    }
    let stderr = tagger.stderr();
    let stats: Value = serde_json::from_str(stderr.lines().last().expect("stats")).expect("stats json");
    assert_eq!(stats["rule_set"]["reloads"], 0);
    assert_eq!(stats["rule_set"]["refused"], 1);
    assert!(stats["rule_set"]["last_error"].as_str().is_some_and(|e| e.contains("rules/gen.yml:")), "{stats}");
    assert_eq!(stats["rule_set"]["digest"].as_str().map(str::len), Some(16));
    assert_eq!(stats["matches"][0]["count"], 2);
}

#[test]
fn mmexternal_with_stderr_on_the_reply_pipe_writes_replies_only() {
    // rsyslog starts the program with stderr on its stdout pipe: a message there would be
    // read as a reply. A skipped rule file at start and a reload mid-stream write nothing
    // into it; one reply per message, each a JSON object.
    let (dir, rule) = setup("reload-mmexternal-pipe");
    std::fs::write(dir.join("rules").join("broken.yml"), "title: [").expect("a rule that is skipped");
    let script = format!(
        "exec {} --no-builtin --rules ./rules --skip-invalid-rules mmexternal 2>&1",
        env!("CARGO_BIN_EXE_iis-tagger")
    );
    let mut child = Command::new("sh")
        .args(["-c", &script])
        .current_dir(&dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("starts");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut replies = BufReader::new(child.stdout.take().expect("stdout"));
    let message = |seq| format!("{}\n", serde_json::json!({ "msg": record(seq) }));
    let mut reply = |stdin: &mut ChildStdin, seq| {
        stdin.write_all(message(seq).as_bytes()).expect("write");
        stdin.flush().expect("flush");
        let mut line = String::new();
        replies.read_line(&mut line).expect("a reply");
        let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("reply {seq} is JSON ({e}): {line:?}"));
        v["$!"]["iis_tagger"]["detections"][0]["rule"].as_str().map(str::to_string)
    };
    assert_eq!(reply(&mut stdin, 0).as_deref(), Some("gen_0"));
    std::fs::write(&rule, rule_text(1)).expect("rule");
    let ok = Command::new("kill").args(["-HUP", &child.id().to_string()]).status().expect("kill");
    assert!(ok.success());
    let mut seq = 1;
    let switched = wait_for(Duration::from_secs(15), || {
        seq += 1;
        reply(&mut stdin, seq).as_deref() == Some("gen_1")
    });
    assert!(switched, "the reload took effect");
    drop(stdin);
    let mut rest = String::new();
    replies.read_to_string(&mut rest).expect("the end");
    assert_eq!(rest, "", "nothing but replies");
    assert!(child.wait().expect("exit").success());
}

#[test]
fn the_sidecars_metrics_say_which_set_is_loaded_and_how_reloads_went() {
    let (dir, rule) = setup("reload-metrics");
    let rules = dir.join("rules");
    let rules = rules.to_str().expect("path");
    let sidecar = crate::net::Sidecar::start_with(&["--metrics", "127.0.0.1:0"], &["--no-builtin", "--rules", rules]);
    let digest = |page: &str| {
        page.lines().find_map(|l| l.strip_prefix("iis_tagger_rules_loaded_info{digest=\"")).map(|d| d[..16].to_string())
    };
    let first = digest(&sidecar.metrics()).expect("a digest");
    let mut conn = sidecar.connect();
    conn.write_all(format!("{}\n", record(0)).as_bytes()).expect("send");
    assert!(wait_for(Duration::from_secs(10), || sidecar.metric("iis_tagger_matches_total{rule=\"gen_0\"}") == 1));
    std::fs::write(&rule, rule_text(1)).expect("rule");
    let hup = |pid: u32| Command::new("kill").args(["-HUP", &pid.to_string()]).status().expect("kill");
    hup(sidecar.pid());
    assert!(
        wait_for(Duration::from_secs(10), || sidecar.metric("iis_tagger_rule_reloads_total{outcome=\"loaded\"}") == 1)
    );
    let page = sidecar.metrics();
    assert_ne!(digest(&page).expect("a digest"), first, "the new set's digest");
    // The connection moves to the new set at its next read.
    conn.write_all(format!("{}\n", record(1)).as_bytes()).expect("send");
    assert!(wait_for(Duration::from_secs(10), || sidecar.metric("iis_tagger_matches_total{rule=\"gen_1\"}") == 1));
    std::fs::write(&rule, "title: [").expect("broken");
    hup(sidecar.pid());
    assert!(wait_for(Duration::from_secs(10), || sidecar.metric("iis_tagger_rule_reload_failing") == 1));
    let page = sidecar.metrics();
    assert!(page.contains("iis_tagger_rule_reloads_total{outcome=\"refused\"} 1"), "{page}");
    let error = page.lines().find(|l| l.starts_with("iis_tagger_rule_reload_error_info{error=")).expect("the error");
    assert!(error.contains("rules/gen.yml:") && error.contains("invalid YAML"), "{error}");
    assert!(page.contains("iis_tagger_rules_loaded 1"), "{page}");
    conn.write_all(format!("{}\n", record(2)).as_bytes()).expect("send");
    assert!(
        wait_for(Duration::from_secs(10), || sidecar.metric("iis_tagger_matches_total{rule=\"gen_1\"}") == 2),
        "the old set tags on"
    );
    drop(conn);
    let (status, out, err) = sidecar.stop();
    assert!(status.success(), "{err}");
    assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 3);
}
