//! The hunt's summary and ATT&CK Navigator layer (issue 13): `--summary` says, per rule, its
//! detections, hosts and first and last event time, and the hosts by risk — checked against
//! the annotated records themselves, in every shape of the bundled sample, on the corpus's
//! EVTX files, alike on one thread and several; `--attack-layer` writes a layer that has the
//! format's required fields and scores each technique by what fired.

use std::collections::BTreeMap;
use std::process::{Command, Output};

use serde_json::Value;

use crate::needs::{Need, need};
use crate::support::{annotation, repo, split_lines, temp_dir};

fn run(args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_iis-tagger"))
        .current_dir(repo("."))
        .args(args)
        .output()
        .expect("the binary runs");
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    out
}

/// The JSON object `--stats-format json` printed last on stderr.
fn stats(out: &Output) -> Value {
    let err = String::from_utf8_lossy(&out.stderr);
    serde_json::from_str(err.lines().last().expect("a stats line")).expect("stats JSON")
}

/// A time as the summary writes it: RFC 3339 UTC, the fraction without trailing zeros.
fn canonical(time: &str) -> String {
    let t = time.trim_end_matches('Z');
    match t.split_once('.') {
        Some((secs, fraction)) if !fraction.trim_end_matches('0').is_empty() => {
            format!("{secs}.{}Z", fraction.trim_end_matches('0'))
        }
        Some((secs, _)) => format!("{secs}Z"),
        None => format!("{t}Z"),
    }
}

/// What the summary must say, worked out from the annotated lines of `output` (evtx_dump
/// records: host and time read from `Event.System`), independently of the tagger.
fn expected_from_evtx_records(output: &[u8]) -> Value {
    // Per rule: detections, detections by host, times.
    type Seen = (u64, BTreeMap<String, u64>, Vec<String>);
    let mut rules: BTreeMap<String, Seen> = BTreeMap::new();
    let mut hosts: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let mut times = Vec::new();
    for line in split_lines(output) {
        let Some(a) = annotation(line, "iis_tagger") else { continue };
        let record: Value = serde_json::from_slice(line).expect("a JSON line");
        let host = record["Event"]["System"]["Computer"].as_str().expect("Computer").to_string();
        let time =
            canonical(record["Event"]["System"]["TimeCreated"]["#attributes"]["SystemTime"].as_str().expect("time"));
        times.push(time.clone());
        let mut risk = 0;
        for d in a["detections"].as_array().expect("detections") {
            let entry = rules.entry(d["rule"].as_str().expect("rule").to_string()).or_default();
            entry.0 += 1;
            *entry.1.entry(host.clone()).or_default() += 1;
            entry.2.push(time.clone());
            risk += d["risk_score"].as_u64().expect("risk");
        }
        let h = hosts.entry(host).or_default();
        h.0 += 1;
        h.1 += risk;
    }
    times.sort();
    let rules: Vec<Value> = rules
        .into_iter()
        .map(|(rule, (count, hosts, mut times))| {
            times.sort();
            serde_json::json!({
                "rule": rule, "count": count, "hosts": hosts,
                "first": times.first(), "last": times.last(),
            })
        })
        .collect();
    let hosts: BTreeMap<String, Value> = hosts
        .into_iter()
        .map(|(h, (records, risk))| (h, serde_json::json!({"records": records, "risk": risk})))
        .collect();
    serde_json::json!({"rules": rules, "hosts": hosts, "first": times.first(), "last": times.last()})
}

/// The same facts, read from the summary.
fn told(summary: &Value) -> Value {
    let mut rules: Vec<Value> = summary["rules"]
        .as_array()
        .expect("rules")
        .iter()
        .map(|r| {
            let hosts: BTreeMap<String, u64> = r["hosts"]
                .as_array()
                .expect("hosts")
                .iter()
                .map(|h| (h["host"].as_str().expect("host").to_string(), h["count"].as_u64().expect("count")))
                .collect();
            serde_json::json!({"rule": r["rule"], "count": r["count"], "hosts": hosts, "first": r["first"], "last": r["last"]})
        })
        .collect();
    rules.sort_by(|a, b| a["rule"].as_str().cmp(&b["rule"].as_str()));
    let hosts: BTreeMap<String, Value> = summary["hosts"]
        .as_array()
        .expect("top_hosts")
        .iter()
        .map(|h| {
            (
                h["host"].as_str().expect("host").to_string(),
                serde_json::json!({"records": h["records"], "risk": h["risk"]}),
            )
        })
        .collect();
    serde_json::json!({"rules": rules, "hosts": hosts, "first": summary["first"], "last": summary["last"]})
}

#[test]
fn the_summary_of_the_evtx_files_is_what_their_annotated_records_say() {
    let Some(corpus) = need(Need::Corpus) else { return };
    let dir = corpus.join("evtx");
    let out = run(&["-r", "--matches-only", "--summary", "--stats-format", "json", dir.to_str().expect("path")]);
    let summary = &stats(&out)["summary"];
    assert_eq!(told(summary), expected_from_evtx_records(&out.stdout));
    assert_eq!(summary["records"], 41);
    assert_eq!(summary["detections"], 41);
    assert_eq!(summary["records_without_time"], 0);
    // Each rule with its severity, risk and ATT&CK ids, as `rules` lists them.
    let listed: Value = serde_json::from_slice(&run(&["rules", "--format", "json"]).stdout).expect("rules JSON");
    for r in summary["rules"].as_array().expect("rules") {
        let rule = listed.as_array().expect("list").iter().find(|l| l["slug"] == r["rule"]).expect("listed");
        for key in ["severity", "risk_score", "mitre", "title"] {
            assert_eq!(r[key], rule[key], "{key} of {}", r["rule"]);
        }
    }
    // The riskiest rule first.
    let risks: Vec<u64> =
        summary["rules"].as_array().expect("rules").iter().map(|r| r["risk_score"].as_u64().expect("risk")).collect();
    assert!(risks.windows(2).all(|w| w[0] >= w[1]), "{risks:?}");
}

#[test]
fn the_summary_is_the_same_on_one_thread_and_several() {
    let Some(corpus) = need(Need::Corpus) else { return };
    let dir = corpus.join("evtxdump-json");
    let dir = dir.to_str().expect("path");
    let one = run(&["-r", "--threads", "1", "--summary", "--stats-format", "json", dir]);
    let two = run(&["-r", "--threads", "2", "--summary", "--stats-format", "json", dir]);
    assert_eq!(one.stdout, two.stdout);
    let (a, b) = (stats(&one), stats(&two));
    assert!(a["summary"]["records"].as_u64().expect("records") > 0, "the corpus has detections");
    assert_eq!(a["summary"], b["summary"]);
    // And what it says is what the annotated records say.
    assert_eq!(told(&a["summary"]), expected_from_evtx_records(&one.stdout));
}

/// The bundled sample holds one detection in each shape iis-tagger reads: the summary finds
/// each record's host and time wherever its shape keeps them.
#[test]
fn the_summary_reads_host_and_time_in_every_shape_of_the_sample() {
    let out = run(&["--summary", "--stats-format", "json", "examples/sample.jsonl"]);
    let summary = &stats(&out)["summary"];
    let mut hosts: Vec<(String, u64)> = summary["hosts"]
        .as_array()
        .expect("hosts")
        .iter()
        .map(|h| (h["host"].as_str().expect("host").to_string(), h["records"].as_u64().expect("records")))
        .collect();
    hosts.sort();
    // Flat (NXLog), evtx_dump, Winlogbeat, Security 4688, Vector, Wazuh, Sentinel, Fluent Bit
    // and Splunk HEC records name their host; the syslog-framed payload, the bare XML line
    // and the ECS file event do not (their host is outside the event, or absent).
    let want: Vec<(String, u64)> = [
        ("(no host)", 3),
        ("APP01.corp.example.com", 1),
        ("APP02.corp.example.com", 1),
        ("APP03.corp.example.com", 1),
        ("WEB01.corp.example.com", 2),
        ("WEB02", 1),
        ("WEB03.corp.example.com", 1),
        ("WEB04.corp.example.com", 1),
        ("WEB05.corp.example.com", 1),
        ("WEB06.corp.example.com", 1),
        ("WEB07.corp.example.com", 1),
    ]
    .iter()
    .map(|(h, n)| (h.to_string(), *n))
    .collect();
    assert_eq!(summary["host_count"], 11, "{hosts:?}");
    assert_eq!(hosts, want);
    // Only the syslog-framed payload and the bare XML line carry no time of their own.
    assert_eq!(summary["records_without_time"], 2);
    // The system time (NXLog's EventTime) before Sysmon's UtcTime (01:00:02.417).
    assert_eq!(summary["first"], "2024-03-01T01:00:02Z");
    assert_eq!(summary["last"], "2024-03-01T01:00:29Z");
}

#[test]
fn summary_and_layer_leave_the_output_alone_and_the_text_goes_to_stderr() {
    let dir = temp_dir("hunt-output");
    let layer = dir.join("layer.json");
    let plain = run(&["examples/sample.jsonl"]);
    let hunted = run(&["--summary", "--attack-layer", layer.to_str().expect("path"), "examples/sample.jsonl"]);
    assert_eq!(plain.stdout, hunted.stdout);
    let err = String::from_utf8_lossy(&hunted.stderr);
    assert!(err.starts_with("iis-tagger summary: 14 detections in 14 records, 8 rules on 11 hosts"), "{err}");
    assert!(err.contains("top hosts by risk:"), "{err}");
    assert!(!String::from_utf8_lossy(&plain.stderr).contains("summary"));
}

/// The layer has what the format (version 4.5) requires, and each technique's score is what
/// the rules carrying it detected — by count, or by count times risk.
#[test]
fn the_attack_layer_has_the_required_fields_and_scores_what_fired() {
    let dir = temp_dir("hunt-layer");
    let rules: Value = serde_json::from_slice(&run(&["rules", "--format", "json"]).stdout).expect("rules JSON");
    let rules = rules.as_array().expect("a list of rules");
    for (score, name) in [("count", "by-count.json"), ("risk", "by-risk.json")] {
        let path = dir.join(name);
        let path = path.to_str().expect("path");
        let out = run(&[
            "--attack-layer",
            path,
            "--attack-layer-score",
            score,
            "--stats-format",
            "json",
            "examples/sample.jsonl",
        ]);
        let matches = &stats(&out)["matches"];
        let layer: Value = serde_json::from_slice(&std::fs::read(path).expect("the layer")).expect("layer JSON");
        assert!(layer["name"].as_str().is_some_and(|n| !n.is_empty()));
        assert!(
            ["enterprise-attack", "mobile-attack", "ics-attack"].contains(&layer["domain"].as_str().expect("domain"))
        );
        assert_eq!(layer["versions"]["layer"], "4.5");
        let navigator: Vec<u64> = layer["versions"]["navigator"]
            .as_str()
            .expect("navigator")
            .split('.')
            .map(|p| p.parse().expect("number"))
            .collect();
        assert!(navigator >= vec![4, 9, 0], "layer 4.5 needs Navigator 4.9.0 or later");
        let gradient = &layer["gradient"];
        assert!(gradient["colors"].as_array().expect("colors").len() >= 2);
        assert!(gradient["maxValue"].as_f64() > gradient["minValue"].as_f64());
        // The scores, from `rules --format json` and the match counts.
        let mut want: BTreeMap<String, u64> = BTreeMap::new();
        for m in matches.as_array().expect("matches") {
            let n = m["count"].as_u64().expect("count");
            let rule = rules.iter().find(|r| r["slug"] == m["rule"]).expect("the rule is listed");
            for t in rule["mitre"].as_array().expect("mitre") {
                let add = if score == "risk" { n * rule["risk_score"].as_u64().expect("risk") } else { n };
                if n > 0 {
                    *want.entry(t.as_str().expect("id").to_string()).or_default() += add;
                }
            }
        }
        let got: BTreeMap<String, u64> = layer["techniques"]
            .as_array()
            .expect("techniques")
            .iter()
            .map(|t| (t["techniqueID"].as_str().expect("techniqueID").to_string(), t["score"].as_u64().expect("score")))
            .collect();
        assert_eq!(got, want, "scored by {score}");
        assert!(got.keys().all(|id| id.starts_with('T')), "{got:?}");
        assert_eq!(gradient["maxValue"].as_u64(), got.values().max().copied());
    }
}

#[test]
fn a_layer_path_that_cannot_be_written_is_refused_before_any_input_is_read() {
    let out = Command::new(env!("CARGO_BIN_EXE_iis-tagger"))
        .current_dir(repo("."))
        .args(["--attack-layer", "/nonexistent-dir/layer.json", "examples/sample.jsonl"])
        .output()
        .expect("runs");
    assert!(!out.status.success());
    assert!(out.stdout.is_empty(), "nothing was tagged");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--attack-layer /nonexistent-dir/layer.json"), "{err}");
}
