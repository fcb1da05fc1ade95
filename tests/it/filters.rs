//! Sigma filters, `--disable-rule` and `--rule-risk` (issue 12): the specification's
//! example, `rules: any`, refusals with their place, suppression counts, and the attacks on
//! an allow-list — a duplicate key, a respelt path — that must not switch a detection off.

use std::process::Command;

use iis_tagger::{Config, RuleSetBuilder, Tagger};
use serde_json::Value;

use crate::support::{detections, repo, temp_dir};

/// A process-creation record of `parent` starting `child`, with a `User`.
fn process(parent: &str, child: &str, user: &str) -> String {
    serde_json::json!({
        "EventID": 1,
        "Channel": "Microsoft-Windows-Sysmon/Operational",
        "Computer": "web01",
        "User": user,
        "ParentImage": parent,
        "Image": child,
    })
    .to_string()
}

/// The built-in rules with the filters `filters` (name, text).
fn tagger_with(filters: &[(&str, &str)], config: Config) -> Result<Tagger, String> {
    let mut b = RuleSetBuilder::new();
    b.add_builtin().map_err(|e| e.to_string())?;
    for (name, text) in filters {
        b.add_filter_source(name, text).map_err(|e| e.to_string())?;
    }
    Tagger::new(b.build(), config).map_err(|e| e.to_string())
}

fn rules_on(tagger: &Tagger, line: &str) -> Vec<String> {
    let (out, _) = tagger.tag_all(format!("{line}\n").as_bytes());
    detections(&out, "iis_tagger").into_iter().next().unwrap_or_default()
}

const W3WP: &str = r"C:\Windows\System32\inetsrv\w3wp.exe";
const CMD: &str = r"C:\Windows\System32\cmd.exe";
const NODE: &str = r"C:\Program Files\nodejs\node.exe";

/// The Sumo Logic false positive: node.exe running build steps through cmd.exe.
const NODE_FILTER: &str = r"
title: node.exe build steps are not web shells
id: 7a1f6c1e-3f0e-4d55-9b61-0e8f0c3c2a11
logsource:
  category: process_creation
  product: windows
filter:
  rules:
    - webshell_child_process
  selection:
    ParentImage|endswith: '\node.exe'
  condition: not selection
";

#[test]
fn an_allow_list_suppresses_its_false_positive_and_counts_it() {
    let tagger = tagger_with(&[("mf_node.yml", NODE_FILTER)], Config::default()).expect("loads");
    assert_eq!(rules_on(&tagger, &process(W3WP, CMD, "iis")), ["webshell_child_process"]);
    assert!(rules_on(&tagger, &process(NODE, CMD, "dev")).is_empty(), "the false positive is suppressed");
    let input = format!("{}\n{}\n{}\n", process(NODE, CMD, "a"), process(W3WP, CMD, "b"), process(NODE, CMD, "c"));
    let (_, stats) = tagger.tag_all(input.as_bytes());
    let pair = tagger
        .rules()
        .suppressions()
        .iter()
        .position(|&(r, _)| tagger.rules().rules()[r as usize].meta.slug == "webshell_child_process");
    let pair = pair.expect("the filter applies to the rule");
    assert_eq!(stats.suppressed.get(pair).copied(), Some(2), "never silent: counted per rule and filter");
    assert_eq!(stats.annotated, 1);
}

#[test]
fn a_duplicate_key_does_not_switch_an_allow_list_on() {
    let tagger = tagger_with(&[("mf_node.yml", NODE_FILTER)], Config::default()).expect("loads");
    // The attacker adds a second ParentImage naming the allow-listed program.
    let line = format!(
        r#"{{"EventID":1,"Channel":"Microsoft-Windows-Sysmon/Operational","ParentImage":{},"Image":{},"ParentImage":{}}}"#,
        serde_json::json!(W3WP),
        serde_json::json!(CMD),
        serde_json::json!(NODE)
    );
    assert_eq!(rules_on(&tagger, &line), ["webshell_child_process"]);
}

#[test]
fn a_respelt_path_does_not_match_an_allow_list_it_does_not_resolve_to() {
    // An allow-list by folder: a path that only passes through the folder is not in it.
    let filter = r"
title: Programs under nodejs are build tools
logsource:
  category: process_creation
filter:
  rules: [webshell_child_process]
  folder:
    ParentImage|contains: '\nodejs\'
  condition: not folder
";
    let parent = r"C:\Program Files\nodejs\..\..\inetpub\wwwroot\w3wp.exe";
    let tagger = tagger_with(&[("f.yml", filter)], Config::default()).expect("loads");
    assert_eq!(
        rules_on(&tagger, &process(parent, CMD, "x")),
        ["webshell_child_process"],
        "the path Windows resolves is not under nodejs: the detection stands"
    );
    assert!(rules_on(&tagger, &process(NODE, CMD, "x")).is_empty(), "the real one is allowed");
    // Read only as logged (as other Sigma tools read it), the respelt path passes the
    // allow-list: the evasion the resolved reading closes.
    let logged = Config { resolved_reading: false, ..Config::default() };
    let tagger = tagger_with(&[("f.yml", filter)], logged).expect("loads");
    assert!(rules_on(&tagger, &process(parent, CMD, "x")).is_empty());
}

#[test]
fn the_specifications_example_keeps_only_what_its_condition_selects() {
    // The specification's example: `condition: selection` (a match stands only for the
    // administrator accounts), applied to rules named by id.
    let rule = r"
title: Data Compressed - rar.exe
id: 6f3e2987-db24-4c78-a860-b4f4095a7095
logsource:
  category: process_creation
  product: windows
detection:
  selection:
    Image|endswith: '\rar.exe'
  condition: selection
level: low
";
    let filter = r"
title: Filter Administrator account
description: The valid administrator account start with adm_
logsource:
    category: process_creation
    product: windows
filter:
    rules:
        - 6f3e2987-db24-4c78-a860-b4f4095a7095 # Data Compressed - rar.exe
        - df0841c0-9846-4e9f-ad8a-7df91571771b # Login on jump host
    selection:
        User|startswith: 'adm_'
    condition: selection
";
    let mut b = RuleSetBuilder::new();
    b.add_source("rar.yml", "rar", rule).expect("rule");
    // The second id names no loaded rule: refused, at its line.
    let e = b.add_filter_source("mf.yml", filter).expect_err("an unknown rule");
    assert!(e.to_string().starts_with("mf.yml:10:"), "{e}");
    assert!(e.to_string().contains("df0841c0-9846-4e9f-ad8a-7df91571771b"), "{e}");
    let filter = filter.replace("        - df0841c0-9846-4e9f-ad8a-7df91571771b # Login on jump host\n", "");
    b.add_filter_source("mf.yml", &filter).expect("filter");
    let tagger = Tagger::new(b.build(), Config::default()).expect("tagger");
    let rar = r"C:\Program Files\WinRAR\rar.exe";
    assert_eq!(rules_on(&tagger, &process(W3WP, rar, "adm_jane")), ["rar"]);
    assert!(rules_on(&tagger, &process(W3WP, rar, "bob")).is_empty());
}

#[test]
fn rules_any_applies_where_the_log_source_covers() {
    let filter = r"
title: The build server is noisy
logsource:
  category: process_creation
filter:
  rules: any
  build:
    Computer: BUILD01
  condition: not build
";
    let tagger = tagger_with(&[("f.yml", filter)], Config::default()).expect("loads");
    let applied: Vec<&str> = tagger
        .rules()
        .suppressions()
        .iter()
        .map(|&(r, _)| tagger.rules().rules()[r as usize].meta.slug.as_str())
        .collect();
    // The process-creation rules, not the IIS configuration or file rules.
    assert!(applied.contains(&"webshell_child_process") && applied.contains(&"windows_iis_components_add_new_module"));
    assert!(!applied.contains(&"windows_iis_components_new_module_added"), "{applied:?}");
    assert!(!applied.contains(&"suspicious_web_file_written"), "{applied:?}");
    let on = |host: &str| {
        let mut v: Value = serde_json::from_str(&process(W3WP, CMD, "x")).expect("json");
        v["Computer"] = host.into();
        rules_on(&tagger, &v.to_string())
    };
    assert!(on("BUILD01").is_empty());
    assert_eq!(on("WEB01"), ["webshell_child_process"]);
}

#[test]
fn a_filter_that_would_do_nothing_is_refused_with_its_place() {
    let wrong_source = r"
title: For IIS configuration events
logsource:
  service: iis-configuration
filter:
  rules:
    - webshell_child_process
  selection:
    Computer: X
  condition: not selection
";
    let e = tagger_with(&[("f.yml", wrong_source)], Config::default()).expect_err("refused");
    assert!(e.starts_with("f.yml:7:7:") && e.contains("does not cover rule `webshell_child_process`"), "{e}");
    let no_rules = "title: t\nlogsource:\n  category: process_creation\nfilter:\n  selection:\n    User: x\n  condition: selection\n";
    let e = tagger_with(&[("g.yml", no_rules)], Config::default()).expect_err("refused");
    assert!(e.starts_with("g.yml:5:") && e.contains("no `rules`"), "{e}");
    let bad_condition = NODE_FILTER.replace("condition: not selection", "condition: not selektion");
    let e = tagger_with(&[("h.yml", &bad_condition)], Config::default()).expect_err("refused");
    assert!(e.starts_with("h.yml:12:") && e.contains("no selection named `selektion`"), "{e}");
}

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_iis-tagger"));
    c.current_dir(repo("."));
    c
}

#[test]
fn the_shipped_example_filter_and_the_command_line() {
    let dir = temp_dir("filters-cli");
    let input = dir.join("in.jsonl");
    let dev = process(NODE, CMD, "dev").replace("web01", "DEV-LAPTOP7");
    let web = process(NODE, CMD, "svc").replace("web01", "WEB01");
    std::fs::write(&input, format!("{dev}\n{web}\n{}\n", process(W3WP, CMD, "iis"))).expect("input");
    let out =
        bin().args(["--filters", "examples/filters", "--stats-format", "json"]).arg(&input).output().expect("runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let found = detections(&out.stdout, "iis_tagger");
    assert!(found[0].is_empty(), "node on a developer machine: suppressed");
    assert_eq!(found[1], ["webshell_child_process"], "node on a web server: kept");
    assert_eq!(found[2], ["webshell_child_process"]);
    let stats: Value = serde_json::from_slice(out.stderr.trim_ascii()).expect("stats");
    assert_eq!(stats["suppressed"][0]["rule"], "webshell_child_process");
    assert_eq!(stats["suppressed"][0]["count"], 1);
    assert_eq!(stats["rule_set"]["filters"], 1);
    // The same run with the rule left out and another's risk changed.
    let out = bin()
        .args(["--disable-rule", "webshell_child_process", "--rule-risk", "webshell_child_discovery=12"])
        .arg(&input)
        .output()
        .expect("runs");
    assert!(out.status.success());
    assert!(detections(&out.stdout, "iis_tagger").iter().all(Vec::is_empty), "disabled");
    let listed = bin().args(["rules", "--rule-risk", "webshell_child_discovery=12"]).output().expect("runs");
    let listed = String::from_utf8_lossy(&listed.stdout);
    let row = listed.lines().find(|l| l.starts_with("webshell_child_discovery ")).expect("listed");
    assert!(row.contains(" 12  low "), "{row}");
    // A name no rule has stops start-up.
    for args in [["--disable-rule", "webshel_child_process"], ["--rule-risk", "nope=5"]] {
        let out = bin().args(args).arg(&input).output().expect("runs");
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("is not the name or id of a loaded rule"));
    }
    // A filter given as a rule is refused with the way to load it.
    let out = bin().args(["--rules", "examples/filters"]).arg(&input).output().expect("runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("load it with --filters"));
    // rules check sees the filters too.
    let out = bin()
        .args(["--filters", "examples/filters", "rules", "check", "tests/fixtures/good-rules"])
        .output()
        .expect("runs");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("9 rules loaded, 1 filters, 0 refused"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn filters_change_nothing_the_prefilter_decides() {
    // With a filter, the prefilter still skips only what the full evaluation would not
    // annotate: the output with and without it is the same, on the sample with records the
    // filter suppresses and ones it lets stand.
    let mut input = std::fs::read(repo("examples/sample.jsonl")).expect("sample");
    for (parent, child) in [(NODE, CMD), (W3WP, CMD), (NODE, r"C:\Windows\System32\whoami.exe")] {
        input.extend_from_slice(format!("{}\n", process(parent, child, "u")).as_bytes());
    }
    let with = |prefilter: bool| {
        let config = Config { prefilter, ..Config::default() };
        let tagger = tagger_with(&[("mf_node.yml", NODE_FILTER)], config).expect("loads");
        let (out, stats) = tagger.tag_all(&input);
        assert_eq!(stats.suppressed.iter().sum::<u64>(), 1, "node -> cmd is suppressed (prefilter {prefilter})");
        out
    };
    assert_eq!(with(true), with(false));
}

#[test]
fn a_stream_moved_to_a_smaller_set_after_a_candidate_line_tags_on() {
    // The prefilter's scratch of the last line holds the old set's literal and clause ids;
    // a smaller set must not index past its own tables with them (it panicked).
    let big = Tagger::new(
        {
            let mut b = RuleSetBuilder::new();
            b.add_builtin().expect("built-ins");
            b.add_path(&repo("tests/fixtures/good-rules")).expect("rules");
            b.build()
        },
        Config::default(),
    )
    .expect("tagger");
    let small = {
        let mut b = RuleSetBuilder::new();
        let rule = "title: t\nname: only_whoami\nlogsource:\n  category: process_creation\ndetection:\n  s:\n    Image|endswith: '\\whoami.exe'\n  condition: s\nlevel: high\n";
        b.add_source("one.yml", "one", rule).expect("rule");
        Tagger::new(b.build(), Config::default()).expect("tagger")
    };
    let mut stream = big.stream();
    let mut out = Vec::new();
    // A candidate line (literals of several rules), and the start of the next one.
    let first = format!("{}\n", process(W3WP, CMD, "x"));
    stream.feed(first.as_bytes(), &mut out);
    let second = process(W3WP, r"C:\Windows\System32\whoami.exe", "y");
    let (head, tail) = second.split_at(20);
    stream.feed(head.as_bytes(), &mut out);
    let (parked, counted) = stream.park();
    assert_eq!(counted.lines, 1, "the old set's counters, given back");
    let mut stream = parked.resume(&small);
    stream.feed(format!("{tail}\n{}\n", process(W3WP, CMD, "z")).as_bytes(), &mut out);
    stream.finish(&mut out);
    let found = detections(&out, "iis_tagger");
    assert_eq!(found.len(), 3);
    assert!(found[0].contains(&"webshell_child_process".to_string()), "the first by the big set");
    assert_eq!(found[1], ["only_whoami"], "the record that was arriving, whole, by the new set");
    assert!(found[2].is_empty(), "the new set has no web-shell rule");
    assert_eq!(stream.stats().lines, 2, "the new set's counters: the two records it judged");
}
