//! The binary: golden output for `rules`, the sample, `--stats`, every bad rule file;
//! exit codes; stdin, `-`, several files, `-o`; a closed stdout; `/dev/full`; SIGTERM.
//!
//! Golden files live in `tests/golden/`; `UPDATE_GOLDEN=1 cargo test` rewrites them.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::support::{assert_contract, repo, temp_dir};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_iis-tagger"));
    c.current_dir(repo("."));
    c
}

fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("the binary runs")
}

fn golden(name: &str, actual: &[u8]) {
    let path = repo("tests/golden").join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).expect("write golden");
        return;
    }
    let want = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 creates it)", path.display()));
    assert!(
        want == actual,
        "{} differs:\n--- want\n{}\n--- got\n{}",
        path.display(),
        String::from_utf8_lossy(&want),
        String::from_utf8_lossy(actual)
    );
}

#[test]
fn rules_listing() {
    let out = run(&["rules"]);
    assert!(out.status.success());
    golden("rules.txt", &out.stdout);
    let out = run(&["rules", "--format", "json", "--rules", "tests/fixtures/good-rules"]);
    assert!(out.status.success());
    let rules: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(rules.as_array().map(Vec::len), Some(9));
    assert_eq!(rules[8]["slug"], "custom_whoami_service");
    assert_eq!(rules[8]["author"], "Example SOC");
    assert_eq!(rules[8]["origin"], "tests/fixtures/good-rules/custom_whoami.yml");
    // Both orders of the global option work.
    assert_eq!(
        run(&["--rules", "tests/fixtures/good-rules", "rules"]).stdout,
        run(&["rules", "--rules", "tests/fixtures/good-rules"]).stdout
    );
}

/// The `key` member of every object of the array `list`.
fn names_of(list: &serde_json::Value, key: &str) -> Vec<String> {
    list.as_array().expect("a list").iter().map(|s| s[key].as_str().expect("a name").to_string()).collect()
}

#[test]
fn sample_output_and_stats() {
    let out = run(&["--stats", "examples/sample.jsonl"]);
    assert!(out.status.success());
    golden("sample.tagged.jsonl", &out.stdout);
    golden("sample.stats.txt", &out.stderr);
    let input = std::fs::read(repo("examples/sample.jsonl")).expect("sample");
    assert_contract(&input, &out.stdout, "iis_tagger");

    let out = run(&["--stats-format", "json", "examples/sample.jsonl"]);
    let stats: serde_json::Value = serde_json::from_slice(&out.stderr).expect("stats json");
    assert_eq!(stats["lines"], 18);
    assert_eq!(stats["annotated"], 14);
    assert_eq!(stats["not_inspected"]["not_json"], 1, "the plain-text line; the XML line is an event");
    assert_eq!(stats["matches"][3], serde_json::json!({"rule": "webshell_child_process", "count": 6}));
    // Every line but the plain text is recognised in some shape, and the stats say which.
    let shapes = names_of(&stats["shapes"], "shape");
    // All the shapes of the table but `message` (no sample line holds its member alone).
    let listed: serde_json::Value = serde_json::from_slice(&run(&["shapes", "--format", "json"]).stdout).expect("json");
    let table = names_of(&listed["shapes"], "name");
    for shape in table.iter().filter(|s| *s != "message").chain(&["windows_xml".to_string()]) {
        assert!(shapes.contains(shape), "{shape} in {shapes:?}");
    }
    assert_eq!(stats["unrecognised_json"], 0);
}

#[test]
fn every_bad_rule_file_is_refused_with_file_line_and_reason() {
    let dir = repo("tests/fixtures/bad-rules");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .expect("fixtures")
        .map(|e| e.expect("entry").file_name().into_string().expect("utf8"))
        .collect();
    names.sort();
    let mut report = Vec::new();
    for name in names {
        let rel = format!("tests/fixtures/bad-rules/{name}");
        let out = run(&["--rules", &rel, "examples/sample.jsonl"]);
        assert_eq!(out.status.code(), Some(2), "{name}");
        assert!(out.stdout.is_empty(), "{name}: nothing is tagged with a rule missing");
        let msg = String::from_utf8(out.stderr).expect("utf8");
        assert!(msg.starts_with(&format!("iis-tagger: {rel}:")), "{msg}");
        report.extend_from_slice(msg.as_bytes());
    }
    golden("bad-rules.txt", &report);
}

#[test]
fn other_start_up_errors() {
    for (args, needle) in [
        (
            &["--rules", "src/rules/builtin/webshell_child_process.yml", "examples/sample.jsonl"][..],
            "already loaded from builtin:",
        ),
        (&["--rules", "/nonexistent/rules"], "/nonexistent/rules: No such file"),
        (&["--rules", "tests/golden"], "no rule files"),
        (&["--no-builtin"], "no rules loaded"),
        (&["no-such-input.jsonl"], "no-such-input.jsonl: No such file"),
        (&["--max-line-bytes", "0"], "line limit"),
        (&["--field", ""], "annotation key"),
        (&["-o", "examples/sample.jsonl", "examples/sample.jsonl"], "also an input"),
    ] {
        let out = run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}

#[test]
fn stdin_dash_several_files_and_output_file() {
    let dir = temp_dir("cli");
    let sample = std::fs::read(repo("examples/sample.jsonl")).expect("sample");
    let tail = dir.join("tail.jsonl");
    // A last line without `\n` stays without one, and the next file starts its own line.
    std::fs::write(&tail, &sample[..sample.len() - 1]).expect("write");
    let mut child = bin()
        .args(["-", tail.to_str().expect("path")])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    child.stdin.take().expect("stdin").write_all(&sample).expect("write");
    let out = child.wait_with_output().expect("wait");
    assert!(out.status.success());
    let mut input = sample.clone();
    input.extend_from_slice(&sample[..sample.len() - 1]);
    assert_contract(&input, &out.stdout, "iis_tagger");
    assert!(!out.stdout.ends_with(b"\n"));

    let target = dir.join("out.jsonl");
    let out = run(&["-o", target.to_str().expect("path"), "--field", "detect", "examples/sample.jsonl"]);
    assert!(out.status.success() && out.stdout.is_empty());
    let written = std::fs::read(&target).expect("output file");
    assert_contract(&sample, &written, "detect");
    assert!(String::from_utf8_lossy(&written).contains(r#""detect":{"risk_score":"#));
    let _ = std::fs::remove_dir_all(dir);
}

fn big_input(lines: usize) -> Vec<u8> {
    let sample = std::fs::read(repo("examples/sample.jsonl")).expect("sample");
    sample.repeat(lines / 12 + 1)
}

#[test]
fn a_closed_stdout_ends_quietly() {
    let mut child = bin().stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn");
    let mut stdin = child.stdin.take().expect("stdin");
    let writer = std::thread::spawn(move || {
        let data = big_input(200_000);
        let _ = stdin.write_all(&data);
    });
    let mut stdout = child.stdout.take().expect("stdout");
    let mut first = [0u8; 64];
    stdout.read_exact(&mut first).expect("some output");
    drop(stdout);
    let out = child.wait_with_output().expect("wait");
    let _ = writer.join();
    assert_eq!(out.status.code(), Some(0), "a reader going away is a normal end");
    assert!(out.stderr.is_empty(), "no panic, no message: {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn a_full_disk_is_an_error() {
    if !Path::new("/dev/full").exists() {
        return;
    }
    let out = bin()
        .arg("examples/sample.jsonl")
        .stdout(std::fs::File::create("/dev/full").expect("/dev/full"))
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("No space left"), "{}", String::from_utf8_lossy(&out.stderr));
    let out = bin()
        .args(["--threads", "2", "examples/sample.jsonl"])
        .stdout(std::fs::File::create("/dev/full").expect("/dev/full"))
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1), "threads: {}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("No space left"));
}

#[test]
fn sigterm_drains_whole_lines_and_exits_zero() {
    let mut child = bin().stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn");
    let mut stdin = child.stdin.take().expect("stdin");
    let sample = std::fs::read(repo("examples/sample.jsonl")).expect("sample");
    let lines = crate::support::split_lines(&sample);
    // Three whole lines and the start of a fourth; the rest of it comes after the signal.
    let mut head = Vec::new();
    for l in &lines[..3] {
        head.extend_from_slice(l);
        head.push(b'\n');
    }
    let (start, rest) = lines[3].split_at(20);
    head.extend_from_slice(start);
    stdin.write_all(&head).expect("write");
    stdin.flush().expect("flush");
    std::thread::sleep(Duration::from_millis(300));
    let pid = child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().expect("kill").success());
    std::thread::sleep(Duration::from_millis(100));
    stdin.write_all(rest).expect("write");
    stdin.write_all(b"\n").expect("write");
    stdin.flush().expect("flush");
    // stdin stays open: the tagger must stop by itself once the line in flight is done.
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "still running 10 s after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    drop(stdin);
    let out = child.wait_with_output().expect("wait");
    assert_eq!(status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    // Output is whole lines: the three before the signal and the one finished after it.
    let got = crate::support::split_lines(&out.stdout);
    assert!(out.stdout.ends_with(b"\n"));
    assert_eq!(got.len(), 4, "{}", String::from_utf8_lossy(&out.stdout));
    let mut expected_input = head.clone();
    expected_input.extend_from_slice(rest);
    expected_input.push(b'\n');
    assert_contract(&expected_input, &out.stdout, "iis_tagger");
}

#[test]
fn skip_invalid_rules_loads_the_rest_and_says_what_it_skipped() {
    let out = run(&[
        "--rules",
        "tests/fixtures/bad-rules",
        "--rules",
        "tests/fixtures/good-rules",
        "--skip-invalid-rules",
        "--stats-format",
        "json",
        "examples/sample.jsonl",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let stderr = String::from_utf8(out.stderr).expect("utf8");
    let bad = std::fs::read_dir(repo("tests/fixtures/bad-rules")).expect("fixtures").count();
    assert_eq!(stderr.matches("iis-tagger: skipped tests/fixtures/bad-rules/").count(), bad, "{stderr}");
    let stats: serde_json::Value = serde_json::from_str(stderr.lines().last().expect("stats")).expect("json");
    assert_eq!(stats["skipped_rules"].as_array().map(Vec::len), Some(bad));
    assert!(stats["skipped_rules"][0].as_str().expect("text").contains("aggregation.yml:9:14"));
    assert!(String::from_utf8_lossy(&out.stdout).contains(r#""rule":"webshell_child_process""#), "the rest still runs");
    // Without the option the first bad file stops start-up.
    assert_eq!(run(&["--rules", "tests/fixtures/bad-rules", "examples/sample.jsonl"]).status.code(), Some(2));
}

#[test]
fn rules_check_reports_each_refusal_and_a_summary() {
    let out = run(&["rules", "check", "--format", "json", "tests/fixtures/bad-rules", "tests/fixtures/good-rules"]);
    assert_eq!(out.status.code(), Some(0), "without --strict a refusal is a report, not a failure");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let bad = std::fs::read_dir(repo("tests/fixtures/bad-rules")).expect("fixtures").count();
    assert_eq!(report["refused"].as_array().map(Vec::len), Some(bad));
    assert_eq!(report["loaded"], 9, "8 built-ins and the good rule");
    let regex = report["refused"]
        .as_array()
        .expect("list")
        .iter()
        .find(|r| r["file"].as_str().is_some_and(|f| f.ends_with("bad_regex.yml")))
        .expect("bad_regex");
    assert_eq!((regex["line"].as_u64(), regex["column"].as_u64()), (Some(8), Some(15)));
    assert_eq!(report["by_reason"]["unknown modifier `…`"], 1);
    // Counted by the typed kind of each refusal: what iis-tagger does not do, what is wrong.
    assert_eq!(report["by_category"], serde_json::json!({"invalid": 5, "unsupported": 4, "yaml": 2}));
    assert_eq!(regex["category"], "invalid");
    let strict = run(&["rules", "check", "--strict", "tests/fixtures/bad-rules"]);
    assert_eq!(strict.status.code(), Some(1));
    let clean = run(&["rules", "check", "--strict", "tests/fixtures/good-rules"]);
    assert_eq!(clean.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&clean.stdout).contains("9 rules loaded, 0 filters, 0 refused"));
}

#[test]
fn authors_of_loaded_rules_travel_with_their_detections() {
    let record = r#"{"EventID":1,"Channel":"Microsoft-Windows-Sysmon/Operational","Image":"C:\\Windows\\System32\\whoami.exe","CommandLine":"whoami","ParentImage":"C:\\Windows\\explorer.exe"}"#;
    let mut child = bin()
        .args(["--rules", "tests/fixtures/good-rules"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    child.stdin.take().expect("stdin").write_all(record.as_bytes()).expect("write");
    let out = child.wait_with_output().expect("wait");
    let line: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let d = &line["iis_tagger"]["detections"][0];
    assert_eq!(d["rule"], "custom_whoami_service");
    assert_eq!(d["author"], "Example SOC");
    // Built-in detections keep the ARCHITECTURE §2 shape (their vendor is `source`).
    let sample = run(&["examples/sample.jsonl"]);
    assert!(!String::from_utf8_lossy(&sample.stdout).contains("\"author\""));
}

/// A stream that exercises the block cutting of the parallel path: lines over the limit
/// (one longer than a block), the sample, and a last line without `\n`.
fn mixed_input() -> Vec<u8> {
    let sample = std::fs::read(repo("examples/sample.jsonl")).expect("sample");
    let mut input = Vec::new();
    input.extend_from_slice(format!("{{\"a\":\"{}\"}}\n", "x".repeat(3 << 20)).as_bytes());
    for _ in 0..400 {
        input.extend_from_slice(&sample);
    }
    input.extend_from_slice(format!("{{\"b\":\"{}\"}}\n", "y".repeat(1_500_000)).as_bytes());
    input.extend_from_slice(
        br#"{"EventID":1,"Channel":"Microsoft-Windows-Sysmon/Operational","Image":"cmd.exe","ParentImage":"w3wp.exe"}"#,
    );
    input
}

#[test]
fn threads_give_the_same_output_and_counts() {
    let dir = temp_dir("threads");
    let path = dir.join("mixed.jsonl");
    std::fs::write(&path, mixed_input()).expect("input");
    let p = path.to_str().expect("path");
    let runs: Vec<Output> = ["1", "2", "3"]
        .iter()
        .map(|t| run(&["--threads", t, "--stats-format", "json", p, "examples/sample.jsonl", p]))
        .collect();
    for (r, t) in runs.iter().zip(["1", "2", "3"]) {
        assert!(r.status.success(), "threads {t}: {}", String::from_utf8_lossy(&r.stderr));
    }
    assert!(
        runs[0].stdout == runs[1].stdout && runs[0].stdout == runs[2].stdout,
        "the output does not depend on threads"
    );
    // The counters, without the rule set's build time (each run builds its own).
    let counts = |r: &Output| {
        let mut stats: serde_json::Value =
            serde_json::from_str(String::from_utf8_lossy(&r.stderr).trim()).expect("stats json");
        let built = stats["rule_set"]["loaded_at"].take();
        assert!(built.as_u64().is_some_and(|t| t > 1_700_000_000), "{built}");
        stats
    };
    assert_eq!(counts(&runs[0]), counts(&runs[1]), "nor do the counts");
    assert_eq!(counts(&runs[0]), counts(&runs[2]));
    let stats = counts(&runs[1]);
    assert_eq!(stats["not_inspected"]["oversized"], 4);
    let sample_lines =
        crate::support::split_lines(&std::fs::read(repo("examples/sample.jsonl")).expect("sample")).len();
    let mixed_lines = crate::support::split_lines(&mixed_input()).len();
    assert_eq!(stats["lines"].as_u64(), Some((2 * mixed_lines + sample_lines) as u64));
    let one = run(&["--threads", "2", p]);
    assert_contract(&mixed_input(), &one.stdout, "iis_tagger");
    assert!(!one.stdout.ends_with(b"\n"), "the last line keeps its missing newline");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn threads_stop_on_sigterm_and_a_closed_stdout_like_one() {
    // A closed reader: exit 0, no message.
    let mut child = bin()
        .args(["--threads", "2"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut stdin = child.stdin.take().expect("stdin");
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&big_input(400_000));
    });
    let mut stdout = child.stdout.take().expect("stdout");
    let mut first = [0u8; 64];
    stdout.read_exact(&mut first).expect("some output");
    drop(stdout);
    let out = child.wait_with_output().expect("wait");
    let _ = writer.join();
    assert_eq!(out.status.code(), Some(0));
    assert!(out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
    // SIGTERM mid-stream: whole lines, a prefix of the full output, exit 0.
    let input = big_input(400_000);
    let (want, _) = crate::support::builtin_tagger().tag_all(&input);
    let mut child = bin()
        .args(["--threads", "2"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut stdin = child.stdin.take().expect("stdin");
    let feed = input.clone();
    let writer = std::thread::spawn(move || {
        for piece in feed.chunks(65_537) {
            if stdin.write_all(piece).is_err() {
                return;
            }
        }
    });
    let mut stdout = child.stdout.take().expect("stdout");
    let mut out = vec![0u8; 1 << 20];
    stdout.read_exact(&mut out).expect("the first MiB");
    assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill").success());
    stdout.read_to_end(&mut out).expect("the rest");
    let status = child.wait().expect("wait");
    let _ = writer.join();
    assert_eq!(status.code(), Some(0));
    assert!(out.ends_with(b"\n") && out.len() < want.len() && want.starts_with(&out));
}

#[test]
fn shapes_lists_the_table_and_a_users_file_adds_to_it() {
    let out = run(&["shapes"]);
    assert!(out.status.success());
    golden("shapes.txt", &out.stdout);
    let out = run(&["shapes", "--format", "json"]);
    assert!(out.status.success());
    let table: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let names = names_of(&table["shapes"], "name");
    assert_eq!(
        names,
        [
            "flat",
            "evtx_dump",
            "winlogbeat",
            "ecs",
            "vector",
            "wazuh",
            "sentinel",
            "splunk_hec",
            "message",
            "fluent_bit_winevtlog"
        ]
    );

    // Graylog-flattened Winlogbeat records: blind (and saying so) without the user's
    // shape file, tagged with it.
    let out = run(&["--stats-format", "json", "examples/graylog.jsonl"]);
    assert!(out.status.success());
    let stats: serde_json::Value = serde_json::from_slice(&out.stderr).expect("stats json");
    assert_eq!((stats["annotated"].as_u64(), stats["unrecognised_json"].as_u64()), (Some(0), Some(3)));
    let input = std::fs::read(repo("examples/graylog.jsonl")).expect("example");
    assert_eq!(out.stdout, input, "untagged records come out byte-identical");
    let out = run(&["--shapes", "examples/shapes/graylog.yml", "--stats-format", "json", "examples/graylog.jsonl"]);
    assert!(out.status.success());
    let stats: serde_json::Value = serde_json::from_slice(&out.stderr).expect("stats json");
    assert_eq!(stats["unrecognised_json"], 0);
    assert_eq!(stats["shapes"][0], serde_json::json!({"shape": "graylog_winlogbeat", "count": 3}));
    assert_contract(&input, &out.stdout, "iis_tagger");
    assert_eq!(
        crate::support::detections(&out.stdout, "iis_tagger"),
        [vec!["webshell_child_process"], vec!["microsoft_iis_service_account_password_dumped"], vec![]]
    );
    // Both orders of the global option, and `shapes` shows the file's shape.
    let listed = run(&["--shapes", "examples/shapes/graylog.yml", "shapes"]);
    assert_eq!(listed.stdout, run(&["shapes", "--shapes", "examples/shapes/graylog.yml"]).stdout);
    let text = String::from_utf8_lossy(&listed.stdout);
    assert!(text.contains("graylog_winlogbeat  (examples/shapes/graylog.yml)"), "{text}");
    assert!(text.contains("after the key prefix: winlogbeat_winlog_event_data_"), "{text}");
}

#[test]
fn a_bad_shape_file_is_refused_with_file_line_column_and_reason() {
    let dir = temp_dir("bad-shapes");
    for (text, needle) in [
        ("shapes:\n  - name: x\n    containrs: [a]\n", ":3:5: unknown key `containrs`"),
        ("shapes:\n  - name: flat\n", ":2:5: a shape named `flat` exists already"),
        ("shapes:\n  - name: x\n    prefixes: [\"\"]\n", ":3:15: a prefix must end in a key"),
        ("fields:\n  Image: command_line\n", ":2:3: field `Image` is already a path field"),
        ("shapes: [\n", ":2:1: invalid YAML"),
        ("shapes:\n  - name: x\n    paths:\n      Image: [a..b]\n", ":4:15: `a..b` is not a path of keys"),
    ] {
        let file = dir.join("shape.yml");
        std::fs::write(&file, text).expect("write");
        let file = file.to_str().expect("utf8");
        let out = run(&["--shapes", file, "examples/sample.jsonl"]);
        assert_eq!(out.status.code(), Some(2), "{text}");
        assert!(out.stdout.is_empty(), "nothing is read when the shape file is refused");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(&format!("{file}{needle}")), "{text}: {err}");
    }
    let out = run(&["--shapes", "/nonexistent/shapes.yml", "examples/sample.jsonl"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/shapes.yml:1:1: No such file"));
}
