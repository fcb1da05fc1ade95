//! Known parser hazards and faults (issue 4): deep nesting, huge numbers, lone surrogates, a
//! 100 MiB line, 1 GiB without a newline, random bytes, lines at the sizes where SIMD blocks
//! and buffers turn over; SIGTERM in a running stream; a slow reader. In every case the
//! stream goes on, no line is lost, and memory stays bounded.

use std::io::{Read, Write};
use std::ops::Range;
use std::process::{Command, Stdio};
use std::time::Duration;

use iis_tagger::{Config, RuleSet, RuleSetBuilder, Sink, Tagger};
use proptest::prelude::*;

use crate::support::{SYSMON, assert_contract, builtin_tagger, detections, repo, split_lines};

/// A Sysmon 1 record the built-in `webshell_child_process` matches, with `extra` members
/// (JSON text) before the final `}`.
fn webshell(extra: &str) -> String {
    format!(
        r#"{{"EventID":1,"Channel":"{SYSMON}","Image":"C:\\Windows\\System32\\cmd.exe","ParentImage":"C:\\Windows\\System32\\inetsrv\\w3wp.exe"{extra}}}"#
    )
}

fn tag(tagger: &Tagger, line: &str) -> (Vec<String>, iis_tagger::Stats) {
    let (out, stats) = tagger.tag_all(line.as_bytes());
    assert_contract(line.as_bytes(), &out, "iis_tagger");
    (detections(&out, "iis_tagger").into_iter().next().unwrap_or_default(), stats)
}

#[test]
fn deep_nesting_is_parsed_not_refused() {
    let t = builtin_tagger();
    let deep = format!(",\"x\":{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let (found, _) = tag(&t, &webshell(&deep));
    assert_eq!(found, ["webshell_child_process"]);
    let objects = format!(",\"Event\":{}1{}", "{\"Event\":".repeat(50_000), "}".repeat(50_000));
    assert_eq!(tag(&t, &webshell(&objects)).0, ["webshell_child_process"], "nested objects the walk descends into");
    // Unbalanced: not JSON, passed on and counted.
    let (found, stats) = tag(&t, &webshell(&format!(",\"x\":{}", "[".repeat(100_000))));
    assert!(found.is_empty());
    assert_eq!(stats.not_inspected.invalid_json, 1);
    let (found, stats) = tag(&t, &"[".repeat(100_000));
    assert!(found.is_empty());
    assert_eq!(stats.lines, 1);
}

#[test]
fn huge_numbers_do_not_hide_a_record() {
    let t = builtin_tagger();
    for number in ["18446744073709551616", "-9223372036854775809", "1e400", "-1E+999", &"9".repeat(400)] {
        let (found, stats) = tag(&t, &webshell(&format!(",\"x\":{number},\"y\":[{number}]")));
        assert_eq!(found, ["webshell_child_process"], "{number}");
        assert_eq!(stats.repaired, 1);
    }
    let (found, stats) = tag(&t, &webshell(",\"x\":1.7976931348623157e308,\"y\":18446744073709551615"));
    assert_eq!((found.len(), stats.repaired), (1, 0), "in range: no repair needed");
    // A field a rule reads, out of range: still compared as the number it spells.
    let line = r#"{"EventID":18446744073709551645,"Channel":"Microsoft-IIS-Configuration/Operational"}"#;
    assert!(tag(&t, line).0.is_empty(), "not event 29");
    let line = r#"{"EventID":29,"Channel":"Microsoft-IIS-Configuration/Operational","N":1e999}"#;
    assert_eq!(tag(&t, line).0, ["windows_iis_components_new_module_added"]);
}

#[test]
fn lone_surrogates_do_not_hide_a_record() {
    let t = builtin_tagger();
    for extra in [
        r#","x":"\ud800""#,
        r#","x":"\udfff\u0041""#,
        r#","\ud800":"x""#,
        r#","x":["a\ud83d"]"#,
        r#","CommandLine":"cmd.exe /c \udc00whoami""#,
    ] {
        let (found, stats) = tag(&t, &webshell(extra));
        assert_eq!(found, ["webshell_child_process"], "{extra}");
        assert_eq!(stats.repaired, 1, "{extra}");
    }
    // In the field the rule reads: it is one unknown character of a path, not its end.
    let line = r#"{"EventID":1,"Channel":"Microsoft-Windows-Sysmon/Operational","Image":"C:\\x\\\udbff\\cmd.exe","ParentImage":"C:\\w3wp.exe"}"#;
    assert_eq!(tag(&t, line).0, ["webshell_child_process"]);
    // A valid pair is no repair.
    assert_eq!(tag(&t, &webshell(r#","x":"\ud83d\ude00""#)).1.repaired, 0);
}

/// A sink that keeps only a count and a hash of what it is given, so that gigabytes can
/// pass through a test.
#[derive(Default)]
struct Digest {
    bytes: u64,
    hash: u64,
}

impl Digest {
    fn add(&mut self, bytes: &[u8]) {
        self.bytes += bytes.len() as u64;
        // FNV-1a, 64 bit.
        for &b in bytes {
            self.hash = (self.hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

impl Sink for Digest {
    fn input(&mut self, input: &[u8], range: Range<usize>) {
        self.add(&input[range]);
    }
    fn bytes(&mut self, bytes: &[u8]) {
        self.add(bytes);
    }
}

fn digest_of(chunks: impl Iterator<Item = Vec<u8>>) -> Digest {
    let mut d = Digest { hash: 0xcbf2_9ce4_8422_2325, ..Digest::default() };
    for c in chunks {
        d.add(&c);
    }
    d
}

#[test]
fn a_gigabyte_without_a_newline_streams_through_in_bounded_memory() {
    let t = builtin_tagger();
    let limit = t.config().max_line_bytes;
    let chunk: Vec<u8> = webshell("").into_bytes().repeat((1 << 20) / 200);
    let count = (1usize << 30).div_ceil(chunk.len());
    let mut stream = t.stream();
    let mut out = Digest { hash: 0xcbf2_9ce4_8422_2325, ..Digest::default() };
    let mut most_held = 0;
    for _ in 0..count {
        stream.feed(&chunk, &mut out);
        most_held = most_held.max(stream.pending_bytes());
    }
    stream.finish(&mut out);
    let want = digest_of(std::iter::repeat_n(chunk.clone(), count));
    assert_eq!((out.bytes, out.hash), (want.bytes, want.hash), "the output is the input");
    assert!(out.bytes >= 1 << 30);
    assert!(most_held <= limit, "held {most_held} bytes of one line; the limit is {limit}");
    let stats = stream.stats();
    assert_eq!((stats.lines, stats.not_inspected.oversized, stats.annotated), (1, 1, 0));
}

#[test]
fn a_100_mib_line_passes_over_the_limit_and_is_tagged_under_it() {
    let pad = format!(",\"Pad\":\"{}\"", "A".repeat(100 << 20));
    let line = format!("{}\n{}\n", webshell(&pad), webshell(""));
    // Default limit (1 MiB): passed on whole, uninspected, counted; the next line is tagged.
    let t = builtin_tagger();
    let mut stream = t.stream();
    let mut out = Vec::with_capacity(line.len() + 4096);
    let mut most_held = 0;
    for piece in line.as_bytes().chunks(64 * 1024) {
        stream.feed(piece, &mut out);
        most_held = most_held.max(stream.pending_bytes());
    }
    stream.finish(&mut out);
    assert!(most_held <= t.config().max_line_bytes);
    let lines = split_lines(&out);
    assert_eq!(lines[0], split_lines(line.as_bytes())[0], "the long line is unchanged");
    assert_eq!(detections(lines[1], "iis_tagger")[0], ["webshell_child_process"]);
    assert_eq!(stream.stats().not_inspected.oversized, 1);
    // With a limit above it, it is a record like any other.
    let config = Config { max_line_bytes: 128 << 20, ..Config::default() };
    let t = Tagger::new(RuleSet::builtin().expect("rules"), config).expect("tagger");
    let (out, stats) = t.tag_all(line.as_bytes());
    assert_eq!(stats.annotated, 2);
    assert_contract(line.as_bytes(), &out, "iis_tagger");
}

/// A rule short enough for records of 31 bytes.
fn short_rule_tagger(max_line_bytes: usize) -> Tagger {
    let text = "title: T\nname: t\nlevel: high\nlogsource:\n  product: windows\ndetection:\n  s:\n    Image|endswith: '\\cmd.exe'\n  condition: s\n";
    let mut b = RuleSetBuilder::new();
    b.add_source("t.yml", "t", text).expect("rule");
    Tagger::new(b.build(), Config { max_line_bytes, ..Config::default() }).expect("tagger")
}

/// A matching record exactly `len` bytes long (at least 21).
fn record_of_len(len: usize) -> String {
    let base = r#"{"Image":"\\cmd.exe"}"#;
    assert!(len >= base.len() + 7 || len == base.len());
    if len == base.len() {
        return base.to_string();
    }
    // `,"P":"…"` adds 7 bytes and the padding.
    format!(r#"{{"Image":"\\cmd.exe","P":"{}"}}"#, "x".repeat(len - base.len() - 7))
}

#[test]
fn lines_at_block_and_buffer_boundaries() {
    for len in [21, 31, 32, 33, 63, 64, 65, 127, 128, 129, 4095, 4096, 4097] {
        let line = record_of_len(len);
        assert_eq!(line.len(), len);
        let input = format!("{line}\n{line}\n{line}");
        for limit in [len - 1, len, len + 1] {
            let t = short_rule_tagger(limit);
            let (whole, stats) = t.tag_all(input.as_bytes());
            assert_contract(input.as_bytes(), &whole, "iis_tagger");
            let want = if limit >= len { 3 } else { 0 };
            assert_eq!(stats.annotated, want, "line of {len} bytes, limit {limit}");
            assert_eq!(stats.not_inspected.oversized, 3 - want);
            for size in [1, 2, len - 1, len, len + 1, 4096] {
                let mut stream = t.stream();
                let mut out = Vec::new();
                for piece in input.as_bytes().chunks(size) {
                    stream.feed(piece, &mut out);
                }
                stream.finish(&mut out);
                assert_eq!(out, whole, "line of {len} bytes, limit {limit}, reads of {size}");
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Arbitrary bytes, newlines among them: every line out once, unchanged or annotated.
    #[test]
    fn random_bytes_pass_through(bytes in prop::collection::vec(prop_oneof![4 => any::<u8>(), 1 => Just(b'\n')], 0..6000)) {
        let t = builtin_tagger();
        let (out, stats) = t.tag_all(&bytes);
        assert_contract(&bytes, &out, "iis_tagger");
        prop_assert_eq!(stats.lines as usize, split_lines(&bytes).len());
    }
}

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_iis-tagger"));
    c.current_dir(repo("."));
    c
}

/// A generated input of about `bytes` bytes: the sample, repeated.
fn sample_stream(bytes: usize) -> Vec<u8> {
    let sample = std::fs::read(repo("examples/sample.jsonl")).expect("sample");
    sample.repeat(bytes / sample.len() + 1)
}

/// Resident and peak memory of a running process, in KiB, from /proc.
fn rss_kib(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status.lines().find_map(|l| l.strip_prefix(name)).and_then(|v| v.split_whitespace().next()?.parse().ok())
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

#[test]
fn a_slow_reader_holds_memory_flat_and_loses_nothing() {
    let input = sample_stream(64 << 20);
    let dir = crate::support::temp_dir("slow");
    let path = dir.join("in.jsonl");
    std::fs::write(&path, &input).expect("input");
    let mut child = bin().arg(&path).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut out = Vec::with_capacity(input.len() + (8 << 20));
    let mut buf = vec![0u8; 4096];
    let mut peak = 0;
    // A trickle first: 4 KiB every 2 ms for a while, sampling the tagger's memory.
    for i in 0..600 {
        let n = stdout.read(&mut buf).expect("read");
        out.extend_from_slice(&buf[..n]);
        if i % 20 == 0 {
            if let Some((rss, _)) = rss_kib(child.id()) {
                peak = peak.max(rss);
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let high_water = rss_kib(child.id()).map_or(0, |(_, hwm)| hwm);
    stdout.read_to_end(&mut out).expect("read the rest");
    let status = child.wait().expect("wait");
    assert!(status.success());
    assert!(peak > 0 && high_water > 0, "memory was sampled");
    assert!(high_water < 32 * 1024, "peak RSS {high_water} KiB while the reader was slow (input 64 MiB)");
    let (want, _) = builtin_tagger().tag_all(&input);
    assert!(out == want, "the output is the whole tagged input");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn sigterm_in_a_running_stream_leaves_a_prefix_of_whole_lines() {
    let input = sample_stream(32 << 20);
    let (want, _) = builtin_tagger().tag_all(&input);
    let mut child = bin().stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn");
    let mut stdin = child.stdin.take().expect("stdin");
    let feed = input.clone();
    // Writes until the tagger stops reading (it exits after the signal: broken pipe).
    let writer = std::thread::spawn(move || {
        for piece in feed.chunks(100_003) {
            if stdin.write_all(piece).is_err() {
                return;
            }
        }
    });
    let mut stdout = child.stdout.take().expect("stdout");
    let mut out = vec![0u8; 1 << 20];
    stdout.read_exact(&mut out).expect("the first MiB");
    let pid = child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().expect("kill").success());
    stdout.read_to_end(&mut out).expect("the rest");
    let status = child.wait().expect("wait");
    let _ = writer.join();
    assert_eq!(status.code(), Some(0));
    assert!(out.ends_with(b"\n"), "whole lines only");
    assert!(out.len() < want.len(), "stopped before the end of the input");
    assert!(want.starts_with(&out), "the output is a prefix of the whole tagged stream");
}
