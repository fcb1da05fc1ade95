//! Crafted records (issue 15): no line may stall the pipeline. The cost of each case is
//! measured by `benches/adversarial.rs`; here, what must hold whatever the cost: the record
//! contract, output bounded by the input plus annotations, identical values evaluated once,
//! a field past its cap annotated as not fully evaluated (never passed as clean), and
//! scratch memory given back after a large record.

use iis_tagger::event::MAX_OCCURRENCES;
use iis_tagger::{Config, RuleSetBuilder, Tagger};
use serde_json::Value;

use crate::crafted_cases::{Case, cases};
use crate::support::{annotation, assert_contract, builtin_tagger, repo};

/// The built-ins and the crafted-rule fixtures (fieldref filters).
fn tagger() -> Tagger {
    let mut b = RuleSetBuilder::new();
    b.add_builtin().expect("built-ins");
    b.add_path(&repo("tests/fixtures/crafted-rules")).expect("fixtures load");
    Tagger::new(b.build(), Config::default()).expect("tagger")
}

/// The longest annotation a record can get from `tagger`: every rule, every reason.
fn max_annotation(tagger: &Tagger) -> usize {
    let all: Vec<u32> = (0..tagger.rules().rules().len() as u32).collect();
    let mut member = Vec::new();
    let every = iis_tagger::event::Incomplete::OCCURRENCES;
    let mut reasons = every;
    reasons.insert(iis_tagger::event::Incomplete::VIEWS);
    reasons.insert(iis_tagger::event::Incomplete::FIELDREF);
    iis_tagger::annotate::Annotator::new("iis_tagger", tagger.rules().rules()).write(&all, reasons, &mut member);
    member.len() + 1
}

fn incomplete_reasons(line: &[u8]) -> Vec<String> {
    annotation(line.strip_suffix(b"\n").unwrap_or(line), "iis_tagger")
        .and_then(|a| a.get("incomplete").cloned())
        .and_then(|v| v.as_array().cloned())
        .map(|a| a.iter().filter_map(Value::as_str).map(String::from).collect())
        .unwrap_or_default()
}

fn slugs(line: &[u8]) -> Vec<String> {
    annotation(line.strip_suffix(b"\n").unwrap_or(line), "iis_tagger")
        .and_then(|a| a["detections"].as_array().cloned())
        .map(|ds| ds.iter().map(|d| d["rule"].as_str().expect("slug").to_string()).collect())
        .unwrap_or_default()
}

#[test]
fn every_crafted_case_keeps_the_contract_and_bounded_output() {
    for tagger in [builtin_tagger(), tagger()] {
        let literals: Vec<String> = tagger.prefilter().trigger_literals().map(|l| l.text.clone()).collect();
        let room = max_annotation(&tagger);
        for Case { name, line, .. } in cases(1_000_000, &literals) {
            let mut input = line.clone();
            input.push(b'\n');
            input.extend_from_slice(b"{\"EventID\":1}\n");
            let mut stream = tagger.stream();
            let mut out = Vec::new();
            stream.feed(&input, &mut out);
            stream.finish(&mut out);
            let stats = stream.stats().clone();
            assert_contract(&input, &out, "iis_tagger");
            assert!(out.len() <= input.len() + stats.annotated as usize * room, "{name}: output bounded");
            // The large record's buffers were given back.
            assert!(stream.scratch_bytes() < 4 << 20, "{name}: {} bytes of scratch kept", stream.scratch_bytes());
            stream.release();
            assert!(stream.scratch_bytes() < 1 << 20, "{name}: {} bytes after release", stream.scratch_bytes());
        }
    }
}

/// A record with `n` members from `member(i)` after a web-server-spawns-a-shell head.
fn record(image: &str, n: usize, member: impl Fn(usize) -> String) -> Vec<u8> {
    let image = serde_json::to_string(image).expect("a string");
    let mut line = format!(
        r#"{{"EventID":1,"Channel":"Microsoft-Windows-Sysmon/Operational","ParentImage":"C:\\Windows\\System32\\inetsrv\\w3wp.exe","Image":{image}"#
    );
    for i in 0..n {
        line.push(',');
        line.push_str(&member(i));
    }
    line.push_str("}\n");
    line.into_bytes()
}

#[test]
fn identical_values_are_evaluated_once_and_never_reach_the_cap() {
    let tagger = tagger();
    // 20,000 copies of one Image value after the real one: nothing left out.
    let line = record(r"C:\Windows\System32\cmd.exe", 20_000, |_| r#""Image":"C:\\Windows\\notepad.exe""#.into());
    let (out, stats) = tagger.tag_all(&line);
    assert!(slugs(&out).contains(&"webshell_child_process".to_string()));
    assert!(incomplete_reasons(&out).is_empty());
    assert_eq!(stats.duplicate_values, 19_999);
    assert_eq!(stats.capped_values, 0);
    // The fieldref filter with both fields duplicated, all one user: the filter applies.
    let same = record(r"C:\Windows\notepad.exe", 20_000, |i| {
        if i % 2 == 0 { r#""User":"CORP\\alice""#.into() } else { r#""ParentUser":"CORP\\alice""#.into() }
    });
    let (out, _) = tagger.tag_all(&same);
    assert!(!slugs(&out).contains(&"crafted_cross_user_notepad".to_string()), "same user: filtered");
    // One parent user that differs among the duplicates: not every value passes the filter.
    let differs = record(r"C:\Windows\notepad.exe", 20_000, |i| match i {
        7 => r#""ParentUser":"CORP\\mallory""#.into(),
        i if i % 2 == 0 => r#""User":"CORP\\alice""#.into(),
        _ => r#""ParentUser":"CORP\\alice""#.into(),
    });
    let (out, _) = tagger.tag_all(&differs);
    assert!(slugs(&out).contains(&"crafted_cross_user_notepad".to_string()), "a duplicate cannot switch a filter on");
}

#[test]
fn a_field_past_the_cap_is_annotated_as_not_fully_evaluated() {
    let tagger = tagger();
    let n = MAX_OCCURRENCES as usize + 100;
    // Distinct decoys first, the shell last: past the cap, so not evaluated, and said so.
    let line = record(r"C:\Windows\notepad0.exe", n, |i| {
        if i + 1 == n {
            r#""Image":"C:\\Windows\\System32\\cmd.exe""#.into()
        } else {
            format!(r#""Image":"C:\\Windows\\notepad{i}.exe""#)
        }
    });
    let (out, stats) = tagger.tag_all(&line);
    assert_eq!(incomplete_reasons(&out), ["occurrences"], "annotated as not fully evaluated");
    assert_eq!(stats.incomplete, 1);
    // The first decoy is the head's value again: `n` distinct values in all.
    assert_eq!(stats.capped_values, (n - MAX_OCCURRENCES as usize) as u64);
    assert_contract(&line, &out, "iis_tagger");
    // Within the cap, the same record is evaluated whole.
    let line = record(r"C:\Windows\notepad0.exe", 500, |i| {
        if i == 499 {
            r#""Image":"C:\\Windows\\System32\\cmd.exe""#.into()
        } else {
            format!(r#""Image":"C:\\x{i}.exe""#)
        }
    });
    let (out, _) = tagger.tag_all(&line);
    assert_eq!(slugs(&out), ["webshell_child_process"]);
    assert!(incomplete_reasons(&out).is_empty());
}

#[test]
fn a_fieldref_with_many_distinct_values_is_bounded_and_said_so() {
    let tagger = tagger();
    let line = record(r"C:\Windows\cmd.exe", 200, |i| {
        if i % 2 == 0 { format!(r#""ParentCommandLine":"p{i}""#) } else { format!(r#""CommandLine":"c{i}""#) }
    });
    let (out, _) = tagger.tag_all(&line);
    assert!(
        incomplete_reasons(&out).contains(&"fieldref".to_string()),
        "{}",
        String::from_utf8_lossy(&out[out.len() - 300..])
    );
    // A few values: compared in full.
    let line = record(r"C:\Windows\cmd.exe", 2, |i| {
        if i == 0 { r#""ParentCommandLine":"cmd /c""#.into() } else { r#""CommandLine":"cmd /c whoami""#.into() }
    });
    let (out, _) = tagger.tag_all(&line);
    assert!(slugs(&out).contains(&"crafted_child_in_parent_folder".to_string()));
    assert!(incomplete_reasons(&out).is_empty());
}

#[test]
fn expanding_characters_are_charged_against_the_record() {
    let tagger = builtin_tagger();
    // A path as long as Windows allows, of a character NFKC expands eighteen times: within
    // the budget, evaluated, detected.
    let long = format!(r"C:\{}\cmd.exe", "\u{FDFA}".repeat(32_000));
    let (out, _) = tagger.tag_all(&record(&long, 0, |_| String::new()));
    assert_eq!(slugs(&out), ["webshell_child_process"]);
    // A megabyte of it: past the budget, annotated as not fully evaluated.
    let huge = format!(r"C:\{}\cmd.exe", "\u{FDFA}".repeat(330_000));
    let (out, stats) = tagger.tag_all(&record(&huge, 0, |_| String::new()));
    assert_eq!(incomplete_reasons(&out), ["views"]);
    assert_eq!(stats.incomplete, 1);
}

#[test]
fn a_path_form_that_does_not_settle_is_said() {
    let tagger = builtin_tagger();
    // Quotes a `..` uncovers one layer a pass, nested past the passes the path form takes.
    let nested =
        |levels: usize| (0..levels).fold(r"C:\Windows\System32\cmd.exe".to_string(), |p, _| format!(r#""{p}"\y\.."#));
    let (out, stats) = tagger.tag_all(&record(&nested(4), 0, |_| String::new()));
    assert_eq!(slugs(&out), ["webshell_child_process"], "a few layers settle");
    assert_eq!(stats.incomplete, 0);
    let (out, stats) = tagger.tag_all(&record(&nested(40), 0, |_| String::new()));
    assert_eq!(incomplete_reasons(&out), ["views"], "annotated as not fully evaluated");
    assert_eq!(stats.incomplete, 1);
}
