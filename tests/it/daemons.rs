//! iis-tagger in real rsyslog and syslog-ng pipelines (issue 3): the daemons of Debian's
//! packages, started on loopback ports with configurations in a temp dir, fed every event of
//! `../shared/corpus/evtxdump-json`; what reaches the far end must be every message, in
//! order, annotated as the stream mode annotates it, and usable by the daemon (rsyslog:
//! templates and a filter reading `$!iis_tagger`).
//!
//! `.ci/run` installs rsyslog, and syslog-ng-core unpacked under /opt/syslog-ng (Debian's
//! two packages conflict, being both "the system logger"). Without a daemon the test is
//! skipped, but fails when `CI` is set ([`crate::needs`]).

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::needs::{Need, need, need_all};
use crate::net::wait_for;
use crate::support::{annotation, builtin_tagger, evtxdump_files, temp_dir};

/// Every evtx_dump JSON line of the corpus, in file order.
fn corpus_lines() -> Vec<Vec<u8>> {
    let mut lines = Vec::new();
    for f in evtxdump_files() {
        let text = std::fs::read(&f).expect("corpus file");
        lines.extend(text.split(|&b| b == b'\n').filter(|l| !l.is_empty()).map(<[u8]>::to_vec));
    }
    assert!(lines.len() > 16_000, "the corpus is there");
    lines
}

/// The rsyslogd binary and the corpus, or None (the test is skipped; under CI it fails).
fn rsyslogd_binary() -> Option<PathBuf> {
    let [rsyslogd, _] = need_all([Need::Program("rsyslogd", &["/usr/sbin/rsyslogd", "/sbin/rsyslogd"]), Need::Corpus])?;
    Some(rsyslogd)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// A daemon process, killed when dropped.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.0.id().to_string()]).status();
        if !wait_for(Duration::from_secs(10), || self.0.try_wait().ok().flatten().is_some()) {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

fn wait_listening(port: u16, daemon: &mut Daemon, log: &Path) {
    let up = wait_for(Duration::from_secs(20), || TcpStream::connect(("127.0.0.1", port)).is_ok());
    if !up {
        let _ = daemon.0.kill();
        panic!("the daemon did not listen on {port}: {}", std::fs::read_to_string(log).unwrap_or_default());
    }
}

/// Lines of `path` once it holds `n` (or after 60 s).
fn lines_of(path: &Path, n: usize) -> Vec<Vec<u8>> {
    let read = || std::fs::read(path).unwrap_or_default();
    wait_for(Duration::from_secs(60), || read().iter().filter(|&&b| b == b'\n').count() >= n);
    let all = read();
    let body = all.strip_suffix(b"\n").unwrap_or(&all);
    body.split(|&b| b == b'\n').map(<[u8]>::to_vec).collect()
}

/// The annotation the stream mode gives each line (Null when none).
fn expected_annotations(lines: &[Vec<u8>]) -> Vec<Value> {
    let tagger = builtin_tagger();
    lines
        .iter()
        .map(|l| {
            let (out, _) = tagger.tag_all(l);
            annotation(&out, "iis_tagger").unwrap_or(Value::Null)
        })
        .collect()
}

/// rsyslogd with `conf`, in the foreground, once it listens on `port`.
fn rsyslogd(binary: &Path, dir: &Path, conf: &str, port: u16) -> Daemon {
    std::fs::write(dir.join("rsyslog.conf"), conf).expect("conf");
    let log = dir.join("rsyslogd.log");
    let mut daemon = Daemon(
        Command::new(binary)
            .args(["-n", "-f"])
            .arg(dir.join("rsyslog.conf"))
            .arg("-i")
            .arg(dir.join("rsyslogd.pid"))
            .stdout(std::fs::File::create(&log).expect("log"))
            .stderr(Stdio::inherit())
            .spawn()
            .expect("rsyslogd starts"),
    );
    wait_listening(port, &mut daemon, &log);
    daemon
}

/// The lines as RFC 5424 messages, one per line.
fn syslog_framed(lines: &[Vec<u8>]) -> Vec<u8> {
    let mut input = Vec::new();
    for l in lines {
        input.extend_from_slice(b"<13>1 2026-12-01T00:00:00Z web01 winlogbeat - - - ");
        input.extend_from_slice(l);
        input.push(b'\n');
    }
    input
}

fn send(port: u16, bytes: &[u8]) {
    let mut conn = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    conn.write_all(bytes).expect("send");
}

#[test]
fn rsyslog_mmexternal_annotates_under_the_json_tree() {
    let Some(rsyslogd_bin) = rsyslogd_binary() else { return };
    let dir = temp_dir("rsyslog");
    let port = free_port();
    let bin = env!("CARGO_BIN_EXE_iis-tagger");
    // The message's annotation as JSON, a tab, the message as it came; a filter on the
    // annotation's risk score writes the alerts of a second file.
    let conf = format!(
        r#"global(workDirectory="{d}" maxMessageSize="4m")
module(load="imtcp")
module(load="mmexternal")
input(type="imtcp" address="127.0.0.1" port="{port}" ruleset="tag")
template(name="tagged" type="list") {{
  property(name="$!iis_tagger") constant(value="\t") property(name="msg") constant(value="\n")
}}
template(name="alert" type="string" string="%$!iis_tagger!risk_score% %$!iis_tagger!detections[0]!rule%\n")
ruleset(name="tag") {{
  action(type="mmexternal" binary="{bin} mmexternal" interface.input="fulljson")
  action(type="omfile" file="{d}/tagged.txt" template="tagged")
  if $!iis_tagger!risk_score >= 48 then {{
    action(type="omfile" file="{d}/alerts.txt" template="alert")
  }}
}}
"#,
        d = dir.display()
    );
    let daemon = rsyslogd(&rsyslogd_bin, &dir, &conf, port);
    let lines = corpus_lines();
    let input = syslog_framed(&lines);
    send(port, &input);
    let out = lines_of(&dir.join("tagged.txt"), lines.len());
    drop(daemon);
    assert_eq!(out.len(), lines.len(), "every message came out");
    let want = expected_annotations(&lines);
    let mut alerts_want = Vec::new();
    for (i, (got, sent)) in out.iter().zip(&lines).enumerate() {
        let tab = got.iter().position(|&b| b == b'\t').expect("tab");
        assert_eq!(&got[tab + 1..], &sent[..], "message {i} in order and unchanged");
        let ann = if tab == 0 { Value::Null } else { serde_json::from_slice(&got[..tab]).expect("rsyslog's JSON") };
        assert_eq!(ann, want[i], "annotation of message {i}");
        if let Some(risk) = want[i]["risk_score"].as_u64().filter(|&r| r >= 48) {
            alerts_want.push(format!("{risk} {}", want[i]["detections"][0]["rule"].as_str().expect("rule")));
        }
    }
    assert!(want.iter().filter(|a| !a.is_null()).count() >= 40, "the corpus holds detections");
    let alerts = std::fs::read_to_string(dir.join("alerts.txt")).unwrap_or_default();
    assert_eq!(alerts.lines().collect::<Vec<_>>(), alerts_want, "the filter on $!iis_tagger!risk_score");
    assert!(!alerts_want.is_empty());
}

#[test]
fn rsyslog_through_the_sidecar_with_octet_counting() {
    let Some(rsyslogd_bin) = rsyslogd_binary() else { return };
    let dir = temp_dir("rsyslog-sidecar");
    let (port_in, port_back) = (free_port(), free_port());
    let sidecar = crate::net::Sidecar::start(&[
        "--framing",
        "octet-counted",
        "--forward",
        &format!("127.0.0.1:{port_back}"),
        "--metrics",
        "127.0.0.1:0",
    ]);
    // rsyslog receives the events, forwards them octet-counted (RFC 5424) to the sidecar,
    // and takes them back on a second input, writing the message and its risk score.
    let conf = format!(
        r#"global(workDirectory="{d}" maxMessageSize="4m")
module(load="imtcp")
input(type="imtcp" address="127.0.0.1" port="{port_in}" ruleset="out")
input(type="imtcp" address="127.0.0.1" port="{port_back}" ruleset="back")
template(name="msg" type="string" string="%msg%\n")
ruleset(name="out") {{
  action(type="omfwd" target="127.0.0.1" port="{sidecar}" protocol="tcp" tcp_framing="octet-counted"
         template="RSYSLOG_SyslogProtocol23Format")
}}
ruleset(name="back") {{
  action(type="omfile" file="{d}/back.txt" template="msg")
}}
"#,
        d = dir.display(),
        sidecar = sidecar.addr.port()
    );
    let daemon = rsyslogd(&rsyslogd_bin, &dir, &conf, port_in);
    let lines = corpus_lines();
    let input = syslog_framed(&lines);
    send(port_in, &input);
    let back = lines_of(&dir.join("back.txt"), lines.len());
    assert_eq!(sidecar.metric("iis_tagger_frames_total"), lines.len() as u64, "octet-counted frames");
    assert_eq!(sidecar.metric("iis_tagger_unframed_records_total"), 0);
    drop(daemon);
    let (status, _, err) = sidecar.stop();
    assert!(status.success(), "{err}");
    assert_eq!(back.len(), lines.len(), "every message came back");
    let want = expected_annotations(&lines);
    for (i, (got, sent)) in back.iter().zip(&lines).enumerate() {
        let got_ann = annotation(got, "iis_tagger").unwrap_or(Value::Null);
        assert_eq!(got_ann, want[i], "annotation of message {i}");
        let stripped = crate::support::strip_line(got, "iis_tagger").unwrap_or_else(|| got.clone());
        assert_eq!(&stripped, sent, "message {i} in order and otherwise unchanged");
    }
}

/// syslog-ng's binary and how to run it (Debian's package unpacked, or installed).
fn syslog_ng() -> Option<(PathBuf, Vec<String>, Option<PathBuf>)> {
    need(Need::Corpus)?;
    let root = Path::new("/opt/syslog-ng");
    if root.join("usr/sbin/syslog-ng").is_file() {
        // The module folder is named after the version (3.38 in Debian 12).
        let libs = root.join("usr/lib/syslog-ng");
        let modules = std::fs::read_dir(&libs)
            .expect("syslog-ng libraries")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.is_dir() && p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(char::is_numeric)))
            .expect("syslog-ng module folder");
        let args = vec![format!("--module-path={}", modules.display())];
        return Some((root.join("usr/sbin/syslog-ng"), args, Some(libs)));
    }
    need(Need::Program("syslog-ng", &["/usr/sbin/syslog-ng"])).map(|p| (p, Vec::new(), None))
}

#[test]
fn syslog_ng_program_destination_and_a_network_source_close_the_loop() {
    let Some((binary, extra, libs)) = syslog_ng() else { return };
    let dir = temp_dir("syslog-ng");
    let (port_in, port_back) = (free_port(), free_port());
    let bin = env!("CARGO_BIN_EXE_iis-tagger");
    // flow-control: without it syslog-ng drops messages when a destination's queue is full.
    let conf = format!(
        r#"@version: 3.38
options {{ log-msg-size(4194304); flush-lines(1); stats-freq(0); }};
source s_in {{ network(ip("127.0.0.1") port({port_in}) transport("tcp") flags(no-parse) log-msg-size(4194304)); }};
source s_back {{ network(ip("127.0.0.1") port({port_back}) transport("tcp") flags(no-parse) log-msg-size(4194304)); }};
destination d_tagger {{ program("{bin} --forward 127.0.0.1:{port_back}" template("$MSG\n")); }};
destination d_out {{ file("{d}/out.txt" template("$MSG\n")); }};
log {{ source(s_in); destination(d_tagger); flags(flow-control); }};
log {{ source(s_back); destination(d_out); flags(flow-control); }};
"#,
        d = dir.display()
    );
    std::fs::write(dir.join("syslog-ng.conf"), conf).expect("conf");
    let log = dir.join("syslog-ng.log");
    let mut cmd = Command::new(binary);
    cmd.arg("-F")
        .arg("-f")
        .arg(dir.join("syslog-ng.conf"))
        .args(&extra)
        .arg(format!("--persist-file={}", dir.join("persist").display()))
        .arg(format!("--pidfile={}", dir.join("pid").display()))
        .arg(format!("--control={}", dir.join("ctl").display()))
        .stdout(std::fs::File::create(&log).expect("log"))
        .stderr(std::fs::File::create(dir.join("syslog-ng.err")).expect("log"));
    if let Some(libs) = libs {
        cmd.env("LD_LIBRARY_PATH", libs);
    }
    let mut daemon = Daemon(cmd.spawn().expect("syslog-ng starts"));
    wait_listening(port_in, &mut daemon, &dir.join("syslog-ng.err"));
    let lines = corpus_lines();
    let mut input = Vec::new();
    for l in &lines {
        input.extend_from_slice(l);
        input.push(b'\n');
    }
    send(port_in, &input);
    let out = lines_of(&dir.join("out.txt"), lines.len());
    drop(daemon);
    assert_eq!(out.len(), lines.len(), "every message came back");
    let (want, stats) = builtin_tagger().tag_all(&input);
    assert!(stats.annotated >= 40);
    let want: Vec<&[u8]> = want.strip_suffix(b"\n").expect("lines").split(|&b| b == b'\n').collect();
    for (i, (got, want)) in out.iter().zip(want).enumerate() {
        assert_eq!(&got[..], want, "message {i}: in order, annotated as the stream mode does");
    }
}

/// A record the web-shell rule matches, numbered, as an RFC 5424 message.
fn webshell_message(seq: u64) -> Vec<u8> {
    let record = format!(
        r#"{{"seq":{seq},"EventID":1,"Channel":"Microsoft-Windows-Sysmon/Operational","Image":"C:\\Windows\\System32\\cmd.exe","ParentImage":"C:\\Windows\\System32\\inetsrv\\w3wp.exe"}}"#
    );
    syslog_framed(&[record.into_bytes()])
}

#[test]
fn rsyslog_mmexternal_picks_up_changed_rules_with_the_file_watch() {
    // rsyslog does not pass its HUP on to an mmexternal program (the module has no HUP
    // handler), so a reload reaches the plugin through --watch-rules: the rule file is
    // changed under the running daemon, and the next messages carry the new rule. The
    // plugin's messages go to --log-file: its stderr is the reply pipe.
    let Some(rsyslogd_bin) = rsyslogd_binary() else { return };
    let dir = temp_dir("rsyslog-reload");
    let rules = dir.join("rules");
    std::fs::create_dir_all(&rules).expect("rules");
    let rule_text = |name: &str| {
        std::fs::read_to_string(crate::support::repo("src/rules/builtin/webshell_child_process.yml"))
            .expect("rule")
            .replace("name: webshell_child_process", &format!("name: {name}"))
    };
    std::fs::write(rules.join("r.yml"), rule_text("before_reload")).expect("rule");
    let port = free_port();
    let bin = env!("CARGO_BIN_EXE_iis-tagger");
    let conf = format!(
        r#"global(workDirectory="{d}" maxMessageSize="4m")
module(load="imtcp")
module(load="mmexternal")
input(type="imtcp" address="127.0.0.1" port="{port}" ruleset="tag")
template(name="rule" type="string" string="%$!iis_tagger!detections[0]!rule%\n")
ruleset(name="tag") {{
  action(type="mmexternal" binary="{bin} mmexternal --no-builtin --rules {r} --watch-rules --log-file {d}/plugin.log"
         interface.input="fulljson")
  action(type="omfile" file="{d}/rules.txt" template="rule")
}}
"#,
        d = dir.display(),
        r = rules.display()
    );
    let daemon = rsyslogd(&rsyslogd_bin, &dir, &conf, port);
    send(port, &webshell_message(0));
    let first = lines_of(&dir.join("rules.txt"), 1);
    assert_eq!(first, [b"before_reload".to_vec()]);
    std::fs::write(rules.join("r.yml"), rule_text("after_reload")).expect("rule");
    let log = dir.join("plugin.log");
    let reloaded = wait_for(Duration::from_secs(20), || {
        std::fs::read_to_string(&log).unwrap_or_default().contains("rules reloaded")
    });
    assert!(reloaded, "the plugin reloaded: {}", std::fs::read_to_string(&log).unwrap_or_default());
    send(port, &webshell_message(1));
    let both = lines_of(&dir.join("rules.txt"), 2);
    drop(daemon);
    assert_eq!(both, [b"before_reload".to_vec(), b"after_reload".to_vec()]);
}
