//! The ways Fluent Bit and Vector run iis-tagger (neither can be installed here; the
//! configurations are in fluent-bit/ and vector/), driven the way those agents drive it:
//!
//! * exec: Fluent Bit's `exec` input (`oneshot`) and Vector's `exec` source (`streaming`)
//!   start `iis-tagger --follow FILE --state-file STATE`, read records from its stdout
//!   (newline-delimited), keep its stderr out of the events, send SIGTERM when they stop
//!   or restart it, and (Vector) start it again when it exits.
//! * sidecar: Fluent Bit's `tcp` output (`json_lines`) and Vector's `socket` sink write
//!   newline-delimited JSON to `iis-tagger serve` and, on a dropped connection, reconnect
//!   and send the unacknowledged chunk again.
//!
//! Also `iis-tagger mmexternal` as rsyslog drives it: one message, wait for its reply.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::net::{Sidecar, bin, numbered_lines, wait_for};
use crate::support::{builtin_tagger, temp_dir};

/// A child as the exec agents run it: stdout read as it comes, stderr apart.
struct ExecChild {
    child: Child,
    out: Arc<Mutex<Vec<u8>>>,
    reader: Option<std::thread::JoinHandle<()>>,
    err: Option<std::thread::JoinHandle<String>>,
}

impl ExecChild {
    fn start(args: &[&str]) -> ExecChild {
        let mut child = bin()
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starts");
        let out = Arc::new(Mutex::new(Vec::new()));
        let mut stdout = child.stdout.take().expect("stdout");
        let sink = out.clone();
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 65536];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().expect("lock").extend_from_slice(&buf[..n]);
            }
        });
        let mut stderr = child.stderr.take().expect("stderr");
        let err = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s);
            s
        });
        ExecChild { child, out, reader: Some(reader), err: Some(err) }
    }

    fn lines(&self) -> usize {
        self.out.lock().expect("lock").iter().filter(|&&b| b == b'\n').count()
    }

    fn wait_lines(&self, n: usize) {
        assert!(wait_for(Duration::from_secs(20), || self.lines() >= n), "{} of {n} lines came out", self.lines());
    }

    /// Ends the child with `signal` and returns (exit code, stdout, stderr).
    fn stop(mut self, signal: &str) -> (Option<i32>, Vec<u8>, String) {
        assert!(Command::new("kill").args([signal, &self.child.id().to_string()]).status().expect("kill").success());
        let status = self.child.wait().expect("wait");
        self.reader.take().expect("reader").join().expect("reader");
        let err = self.err.take().expect("stderr").join().expect("stderr");
        let out = std::mem::take(&mut *self.out.lock().expect("lock"));
        (status.code(), out, err)
    }
}

impl Drop for ExecChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn append(path: &Path, bytes: &[u8]) {
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path).expect("open");
    f.write_all(bytes).expect("append");
}

/// Lines `from..to` of one writer, each a record (every 50th a detection).
fn batch(from: usize, to: usize) -> Vec<u8> {
    let all = numbered_lines(0, to);
    let start = all.split(|&b| b == b'\n').take(from).map(|l| l.len() + 1).sum::<usize>();
    all[start..].to_vec()
}

#[test]
fn exec_follow_resumes_across_restarts_rotation_and_truncation_without_loss_or_repeats() {
    let dir = temp_dir("follow");
    let (log, state) = (dir.join("sysmon.jsonl"), dir.join("state"));
    let args = ["--follow", log.to_str().expect("utf8"), "--state-file", state.to_str().expect("utf8")];
    let mut written = Vec::new();
    let add = |bytes: &[u8], written: &mut Vec<u8>| {
        append(&log, bytes);
        written.extend_from_slice(bytes);
    };
    // The child starts before the file exists (tail -F), and follows it as it grows.
    let run = ExecChild::start(&args);
    std::thread::sleep(Duration::from_millis(300));
    add(&batch(0, 1000), &mut written);
    run.wait_lines(1000);
    add(&batch(1000, 1500), &mut written);
    add(b"{\"unfinished\":", &mut written);
    run.wait_lines(1500);
    // The agent stops (or restarts) its child with SIGTERM.
    let (code, mut out, err) = run.stop("-TERM");
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 1500, "the unfinished line waits in the file");
    // Started again, it resumes where the state file says.
    let run = ExecChild::start(&args);
    add(b"1}\n", &mut written);
    add(&batch(1500, 2000), &mut written);
    run.wait_lines(501);
    // Rotation: renamed away (a last line appended to the old file first), a new file.
    add(&batch(2000, 2100), &mut written);
    std::fs::rename(&log, dir.join("sysmon.jsonl.1")).expect("rotate");
    add(&batch(2100, 2400), &mut written);
    run.wait_lines(501 + 400);
    // Truncation (copytruncate): read again from the start.
    std::fs::write(&log, b"").expect("truncate");
    std::thread::sleep(Duration::from_millis(500));
    add(&batch(2400, 2450), &mut written);
    run.wait_lines(501 + 400 + 50);
    let (code, more, err) = run.stop("-TERM");
    assert_eq!(code, Some(0), "{err}");
    out.extend_from_slice(&more);
    let (want, _) = builtin_tagger().tag_all(&written);
    assert_eq!(String::from_utf8_lossy(&out), String::from_utf8_lossy(&want), "every line once, in order, tagged");
}

#[test]
fn exec_follow_after_kill_9_repeats_only_unsaved_lines() {
    let dir = temp_dir("follow-kill");
    let (log, state) = (dir.join("app.jsonl"), dir.join("state"));
    let args = ["--follow", log.to_str().expect("utf8"), "--state-file", state.to_str().expect("utf8")];
    append(&log, &batch(0, 3000));
    let run = ExecChild::start(&args);
    run.wait_lines(3000);
    std::thread::sleep(Duration::from_millis(400));
    let (_, first, _) = run.stop("-KILL");
    append(&log, &batch(3000, 4000));
    let run = ExecChild::start(&args);
    run.wait_lines(1000);
    let (code, second, err) = run.stop("-TERM");
    assert_eq!(code, Some(0), "{err}");
    let (a, b) = (seqs(&first), seqs(&second));
    assert_eq!(a, (0..3000).collect::<Vec<_>>());
    // At least once: the second run starts at or before where the first stopped, never after.
    assert!(b[0] <= 3000, "lines lost across kill -9: the second run starts at {}", b[0]);
    assert_eq!(b, (b[0]..4000).collect::<Vec<_>>());
    // The state is saved whenever the file is at its end: here nothing is repeated.
    assert_eq!(b[0], 3000, "lines written again after kill -9 (the state was saved at the end of the file)");
}

/// Whether process `pid` has ended (gone, or a zombie nobody has reaped yet).
fn ended(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // `pid (comm) S ...`: the state follows the last `)`.
        Ok(stat) => stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
    }
}

/// `iis-tagger --follow LOG --state-file STATE`, its stdout piped to the test, stderr dropped.
fn follower(log: &Path, state: &Path) -> Child {
    bin()
        .args(["--follow", log.to_str().expect("utf8"), "--state-file", state.to_str().expect("utf8")])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("starts")
}

/// The `seq` of every record of a follower's output, in order (every line whole JSON).
fn seqs(out: &[u8]) -> Vec<u64> {
    out.split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice::<serde_json::Value>(l).expect("whole lines")["seq"].as_u64().expect("seq"))
        .collect()
}

/// After `first` lines were written and the follower ended idle, a new run with the same
/// state file writes exactly the lines appended since: the state it left is consistent.
fn resumes_after(dir: &Path, log: &Path, state: &Path, first: usize) {
    resumes_from(dir, log, state, first, first);
}

/// The same when the file holds `in_file` lines of which the follower wrote `first`: the new
/// run writes the rest, then 100 lines appended now, each once, in order.
fn resumes_from(dir: &Path, log: &Path, state: &Path, first: usize, in_file: usize) {
    append(log, &batch(in_file, in_file + 100));
    let args = ["--follow", log.to_str().expect("utf8"), "--state-file", state.to_str().expect("utf8")];
    let run = ExecChild::start(&args);
    run.wait_lines(in_file + 100 - first);
    std::thread::sleep(Duration::from_millis(300));
    let (code, out, err) = run.stop("-TERM");
    assert_eq!(code, Some(0), "{err}");
    let want: Vec<u64> = (first as u64..in_file as u64 + 100).collect();
    assert_eq!(seqs(&out), want, "the second run starts where the first ended ({})", dir.display());
}

/// Issue 16: a `--follow` child idle at the end of its file ends within a second or so when
/// the process reading its stdout closes the pipe (Fluent Bit's exec input, stopped), and
/// leaves a state a restart resumes from.
#[test]
fn exec_follow_ends_when_its_reader_closes_the_pipe() {
    let dir = temp_dir("follow-reader-gone");
    let (log, state) = (dir.join("app.jsonl"), dir.join("state"));
    append(&log, &batch(0, 500));
    let mut child = follower(&log, &state);
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    for _ in 0..500 {
        let mut line = String::new();
        assert!(stdout.read_line(&mut line).expect("read") > 0, "a line");
    }
    // Idle at the end of the file now; the reader goes away without a word.
    std::thread::sleep(Duration::from_millis(500));
    drop(stdout);
    let closed = std::time::Instant::now();
    assert!(
        wait_for(Duration::from_secs(2), || child.try_wait().expect("wait").is_some()),
        "still running 2 s after its reader went away"
    );
    eprintln!("ended {:?} after the reader closed the pipe", closed.elapsed());
    assert_eq!(child.wait().expect("status").code(), Some(0), "ended as on a closed stdout");
    resumes_after(&dir, &log, &state, 500);
}

/// Issue 16: the parent (here a shell running `iis-tagger --follow … | sleep`, whose pipe
/// keeps a reader that never reads) is killed with SIGKILL while the child is idle: the
/// child sees it was re-parented and ends within 2 s.
#[test]
fn exec_follow_ends_when_its_parent_is_killed() {
    let dir = temp_dir("follow-parent-killed");
    let (log, state) = (dir.join("app.jsonl"), dir.join("state"));
    append(&log, &batch(0, 200));
    let bin = env!("CARGO_BIN_EXE_iis-tagger");
    let mut shell = Command::new("sh")
        .args(["-c", r#""$0" --follow "$1" --state-file "$2" | sleep 30"#, bin])
        .arg(&log)
        .arg(&state)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("sh");
    let children = |ppid: u32| -> Vec<(u32, String)> {
        let mut found = Vec::new();
        for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
            let Some((head, rest)) = stat.rsplit_once(')') else { continue };
            let parent = rest.split_whitespace().nth(1).and_then(|p| p.parse::<u32>().ok());
            if parent == Some(ppid) {
                found.push((pid, head.split_once('(').map_or("", |(_, c)| c).to_string()));
            }
        }
        found
    };
    let mut tagger = None;
    assert!(wait_for(Duration::from_secs(10), || {
        tagger = children(shell.id()).into_iter().find(|(_, comm)| comm == "iis-tagger").map(|(p, _)| p);
        tagger.is_some()
    }));
    let tagger = tagger.expect("the follower");
    // Let it read the file and go idle (the state is saved at the end of the file).
    assert!(wait_for(Duration::from_secs(10), || std::fs::metadata(&state).is_ok()));
    std::thread::sleep(Duration::from_millis(600));
    shell.kill().expect("SIGKILL the parent");
    let _ = shell.wait();
    assert!(wait_for(Duration::from_secs(2), || ended(tagger)), "still running 2 s after its parent was killed");
    resumes_after(&dir, &log, &state, 200);
}

/// Issue 16: a reader that takes the child's output only in large chunks, with pauses between
/// (as an exec input that reads into a big buffer, or is blocked while its engine works): the
/// child blocks on the full pipe rather than dropping or spinning, every line arrives once and
/// in order, and the state left after SIGTERM resumes exactly.
#[test]
fn exec_follow_with_a_reader_that_takes_large_chunks_loses_nothing() {
    let dir = temp_dir("follow-large-chunks");
    let (log, state) = (dir.join("app.jsonl"), dir.join("state"));
    append(&log, &batch(0, 20_000));
    let mut child = follower(&log, &state);
    let mut stdout = child.stdout.take().expect("stdout");
    let got = Arc::new(Mutex::new(Vec::new()));
    let sink = got.clone();
    let reader = std::thread::spawn(move || {
        // 1 MiB at a time (the pipe holds 64 KiB: the child waits on it in between), then a
        // pause; until the pipe closes.
        let mut chunk = vec![0u8; 1 << 20];
        loop {
            let mut filled = 0;
            while filled < chunk.len() {
                match stdout.read(&mut chunk[filled..]) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => filled += n,
                }
            }
            sink.lock().expect("lock").extend_from_slice(&chunk[..filled]);
            if filled < chunk.len() {
                return;
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    });
    let lines = |bytes: &[u8]| bytes.iter().filter(|&&b| b == b'\n').count();
    // The first 20,000 lines are over 1 MiB: at least one pause falls inside them; the last
    // chunk comes once the next lines fill it, so more are appended until all have come.
    let mut appended = 20_000;
    assert!(
        wait_for(Duration::from_secs(60), || {
            if lines(&got.lock().expect("lock")) < 20_000 {
                append(&log, &batch(appended, appended + 2_000));
                appended += 2_000;
                std::thread::sleep(Duration::from_millis(200));
            }
            lines(&got.lock().expect("lock")) >= 20_000
        }),
        "{} lines of 20,000 arrived",
        lines(&got.lock().expect("lock"))
    );
    std::thread::sleep(Duration::from_millis(300));
    assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill").success());
    let status = child.wait().expect("status");
    reader.join().expect("reader");
    assert_eq!(status.code(), Some(0));
    let out = std::mem::take(&mut *got.lock().expect("lock"));
    let seqs = seqs(&out);
    assert!(seqs.len() >= 20_000);
    assert_eq!(seqs, (0..seqs.len() as u64).collect::<Vec<_>>(), "every line once, in order");
    resumes_from(&dir, &log, &state, seqs.len(), appended);
}

#[test]
fn exec_stdout_holds_only_records_and_stderr_the_rest() {
    let dir = temp_dir("follow-stderr");
    let log = dir.join("x.jsonl");
    append(&log, &batch(0, 200));
    let run = ExecChild::start(&["--stats", "--follow", log.to_str().expect("utf8")]);
    run.wait_lines(200);
    let (code, out, err) = run.stop("-TERM");
    assert_eq!(code, Some(0));
    for line in out.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        serde_json::from_slice::<serde_json::Value>(line).expect("stdout: records only");
    }
    assert!(err.contains("200 lines"), "the summary goes to stderr: {err}");
}

#[test]
fn fluent_bit_style_retry_after_a_dropped_connection() {
    // Fluent Bit's tcp output writes a chunk of json_lines; when the connection drops it
    // reconnects and sends the whole chunk again. The sidecar passes the torn line as one
    // line of its own (Fluent Bit's tcp input then rejects it as JSON), never joined.
    let sidecar = Sidecar::start(&["--metrics", "127.0.0.1:0"]);
    let chunk1 = numbered_lines(0, 100);
    let chunk2 = batch(100, 200);
    let mut conn = sidecar.connect();
    conn.write_all(&chunk1).expect("send");
    conn.write_all(&chunk2[..chunk2.len() / 2]).expect("send");
    drop(conn);
    assert!(wait_for(Duration::from_secs(10), || sidecar.metric("iis_tagger_unterminated_records_total") == 1));
    let mut again = sidecar.connect();
    again.write_all(&chunk2).expect("resend");
    drop(again);
    assert!(wait_for(Duration::from_secs(10), || sidecar.metric("iis_tagger_connections_total") == 2
        && sidecar.metric("iis_tagger_connection_endings_total{reason=\"eof\"}") == 2));
    let (status, out, err) = sidecar.stop();
    assert!(status.success(), "{err}");
    let lines: Vec<&[u8]> = out.split(|&b| b == b'\n').filter(|l| !l.is_empty()).collect();
    let parsed: Vec<serde_json::Value> = lines.iter().filter_map(|l| serde_json::from_slice(l).ok()).collect();
    assert_eq!(lines.len() - parsed.len(), 1, "one torn line, on its own");
    let seqs: Vec<u64> = parsed.iter().map(|v| v["seq"].as_u64().expect("seq")).collect();
    let torn_at = chunk2[..chunk2.len() / 2].iter().filter(|&&b| b == b'\n').count() as u64 + 100;
    let want: Vec<u64> = (0..torn_at).chain(100..200).collect();
    assert_eq!(seqs, want, "the first chunk, the part of the second before the cut, then the second again");
}

#[test]
fn vector_style_socket_sink_with_max_length_framing() {
    // Vector's socket source with newline_delimited framing drops lines over max_length;
    // the fluent-bit/ and vector/ configurations set it to --max-line-bytes plus room for
    // an annotation. An annotation of all eight built-in rules fits that room.
    let tagger = builtin_tagger();
    let mut member = Vec::new();
    let all: Vec<u32> = (0..tagger.rules().rules().len() as u32).collect();
    iis_tagger::annotate::Annotator::new("iis_tagger", tagger.rules().rules()).write(
        &all,
        Default::default(),
        &mut member,
    );
    assert!(member.len() < 8192, "the room for the annotation in the configurations: {} bytes", member.len());
    let sidecar = Sidecar::start(&["--metrics", "127.0.0.1:0"]);
    let mut conn = sidecar.connect();
    let body = numbered_lines(3, 5000);
    conn.write_all(&body).expect("send");
    drop(conn);
    assert!(wait_for(Duration::from_secs(10), || sidecar.metric("iis_tagger_lines_total") == 5000));
    let (status, out, _) = sidecar.stop();
    assert!(status.success());
    let longest_in = body.split(|&b| b == b'\n').map(<[u8]>::len).max().expect("lines");
    let longest_out = out.split(|&b| b == b'\n').map(<[u8]>::len).max().expect("lines");
    assert!(longest_out <= longest_in + member.len() + 1);
}

#[test]
fn mmexternal_answers_each_message_before_the_next_with_an_empty_environment() {
    // rsyslog writes one message and waits for its reply: each reply must be flushed.
    let mut child = bin()
        .arg("mmexternal")
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starts");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let webshell = r#"{"EventID":1,"Channel":"Microsoft-Windows-Sysmon/Operational","Image":"C:\\Windows\\System32\\cmd.exe","ParentImage":"C:\\Windows\\System32\\inetsrv\\w3wp.exe"}"#;
    let message = |msg: &str| {
        let mut m = serde_json::to_vec(&serde_json::json!({"msg": msg, "rawmsg": msg, "hostname": "web01", "$!": {}}))
            .expect("json");
        m.push(b'\n');
        m
    };
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (message(webshell), "webshell_child_process"),
        (message("plain text"), "{}"),
        (b"not json\n".to_vec(), "{}"),
        (b"\n".to_vec(), "{}"),
        // A lone surrogate escape in the event (serde_json and simd-json refuse it): the
        // event is read from a repaired copy.
        (message(&webshell.replace("\"Image\"", "\"CommandLine\":\"\\ud800\",\"Image\"")), "webshell_child_process"),
        // One in rsyslog's own object: read from a repaired copy, its message is no event.
        (with_lone_surrogate(&message("X")), "{}"),
        (message(&format!(" {}", webshell.replace("cmd.exe", "CMD.EXE"))), "webshell_child_process"),
    ];
    for (input, want) in &cases {
        stdin.write_all(input).expect("write");
        stdin.flush().expect("flush");
        let mut reply = String::new();
        stdout.read_line(&mut reply).expect("a reply before the next message");
        if *want == "{}" {
            assert_eq!(reply, "{}\n", "{}", String::from_utf8_lossy(input));
        } else {
            let v: serde_json::Value = serde_json::from_str(&reply).expect("reply is JSON");
            assert_eq!(v["$!"]["iis_tagger"]["detections"][0]["rule"], *want, "{reply}");
            assert_eq!(v.as_object().map(|o| o.len()), Some(1), "only the $! tree is changed");
        }
    }
    drop(stdin);
    let status = child.wait().expect("wait");
    assert!(status.success(), "ends quietly at the end of its input");
}

/// `"msg":"X…` made `"msg":"\ud800 …`.
fn with_lone_surrogate(message: &[u8]) -> Vec<u8> {
    let text = String::from_utf8(message.to_vec()).expect("utf8");
    text.replacen("\"msg\":\"X", "\"msg\":\"\\ud800 ", 1).into_bytes()
}
