//! The rule language through users' rules: conditions, modifiers, values, log sources.
//! Each case is a detection block and records that must / must not match it.

use iis_tagger::{Config, RuleSetBuilder, Tagger};

use crate::support::{SYSMON, detections};

fn tagger_for(detection: &str, logsource: &str) -> Tagger {
    let text = format!("title: T\nname: t\nlevel: high\nlogsource:\n{logsource}\ndetection:\n{detection}\n");
    let mut b = RuleSetBuilder::new();
    b.add_source("test.yml", "t", &text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    Tagger::new(b.build(), Config::default()).expect("tagger")
}

fn matches(t: &Tagger, record: &str) -> bool {
    let (out, _) = t.tag_all(record.as_bytes());
    !detections(&out, "iis_tagger")[0].is_empty()
}

fn check(detection: &str, yes: &[&str], no: &[&str]) {
    check_in("  product: windows", detection, yes, no);
}

fn check_in(logsource: &str, detection: &str, yes: &[&str], no: &[&str]) {
    let t = tagger_for(detection, logsource);
    for r in yes {
        assert!(matches(&t, r), "should match:\n{detection}\n{r}");
    }
    for r in no {
        assert!(!matches(&t, r), "should not match:\n{detection}\n{r}");
    }
}

#[test]
fn conditions() {
    let d = "  a: {A: x}\n  b: {B: x}\n  c: {C: x}\n";
    check(&format!("{d}  condition: a or b and c"), &[r#"{"A":"x"}"#, r#"{"B":"x","C":"x"}"#], &[r#"{"B":"x"}"#]);
    check(&format!("{d}  condition: (a or b) and c"), &[r#"{"A":"x","C":"x"}"#], &[r#"{"A":"x"}"#]);
    check(&format!("{d}  condition: a and not b"), &[r#"{"A":"x"}"#], &[r#"{"A":"x","B":"x"}"#]);
    check(&format!("{d}  condition: not (a or b)"), &[r#"{"C":"x"}"#], &[r#"{"B":"x"}"#]);
    let d = "  sel_a: {A: x}\n  sel_b: {B: x}\n  filter: {C: x}\n";
    check(
        &format!("{d}  condition: 1 of sel_* and not filter"),
        &[r#"{"B":"x"}"#],
        &[r#"{"B":"x","C":"x"}"#, r#"{"C":"x"}"#],
    );
    check(&format!("{d}  condition: all of sel_*"), &[r#"{"A":"x","B":"x"}"#], &[r#"{"A":"x"}"#]);
    check(&format!("{d}  condition: all of them"), &[r#"{"A":"x","B":"x","C":"x"}"#], &[r#"{"A":"x","B":"x"}"#]);
    check(&format!("{d}  condition: 1 of them"), &[r#"{"C":"x"}"#], &[r#"{"D":"x"}"#]);
    check(&format!("{d}  condition:\n    - sel_a\n    - sel_b"), &[r#"{"A":"x"}"#, r#"{"B":"x"}"#], &[r#"{"C":"x"}"#]);
}

#[test]
fn selections_lists_and_maps() {
    // A mapping is `and`; a list of values is `or`; a list of mappings is `or`.
    check(
        "  s: {A: [x, y], B: z}\n  condition: s",
        &[r#"{"A":"Y","B":"z"}"#],
        &[r#"{"A":"y"}"#, r#"{"A":"w","B":"z"}"#],
    );
    check("  s:\n    - A: x\n    - B: y\n  condition: s", &[r#"{"A":"x"}"#, r#"{"B":"y"}"#], &[r#"{"A":"y"}"#]);
}

#[test]
fn modifiers_and_wildcards() {
    check("  s: {A|contains: EvIl}\n  condition: s", &[r#"{"A":"this is evil"}"#], &[r#"{"A":"evi"}"#]);
    check("  s: {A|startswith: ab}\n  condition: s", &[r#"{"A":"ABc"}"#], &[r#"{"A":"cab"}"#]);
    check("  s: {A|endswith: ab}\n  condition: s", &[r#"{"A":"cAB"}"#], &[r#"{"A":"abc"}"#]);
    check("  s: {A|contains|all: [ab, cd]}\n  condition: s", &[r#"{"A":"cd-ab"}"#], &[r#"{"A":"ab"}"#]);
    check("  s: {A|cased: Ab}\n  condition: s", &[r#"{"A":"Ab"}"#], &[r#"{"A":"ab"}"#]);
    check(
        "  s: {A: 'a*c?e'}\n  condition: s",
        &[r#"{"A":"aXXcde"}"#, r#"{"A":"ACDE"}"#],
        &[r#"{"A":"acde-"}"#, r#"{"A":"ace"}"#],
    );
    check(r"  s: {A: 'a\*b'}\n  condition: s".replace("\\n", "\n").as_str(), &[r#"{"A":"a*b"}"#], &[r#"{"A":"axb"}"#]);
    check("  s: {A|re: '^a.c$'}\n  condition: s", &[r#"{"A":"abc"}"#], &[r#"{"A":"ABC"}"#, r#"{"A":"xabc"}"#]);
    check("  s: {A|re|i: '^a.c$'}\n  condition: s", &[r#"{"A":"ABC"}"#], &[r#"{"A":"AB"}"#]);
}

#[test]
fn values_numbers_null_and_booleans() {
    check(
        "  s: {N: 29}\n  condition: s",
        &[r#"{"N":29}"#, r#"{"N":"29"}"#, r#"{"N":" 029"}"#],
        &[r#"{"N":290}"#, r#"{"N":"2 9"}"#, r#"{"N":29.5}"#],
    );
    check("  s: {N: '29'}\n  condition: s", &[r#"{"N":29}"#, r#"{"N":"29"}"#], &[r#"{"N":"029"}"#]);
    check("  s: {A: null}\n  condition: s", &[r#"{"B":1}"#, r#"{"A":null}"#], &[r#"{"A":""}"#, r#"{"A":"x"}"#]);
    check("  s: {A: ''}\n  condition: s", &[r#"{"A":""}"#], &[r#"{"B":""}"#, r#"{"A":"x"}"#]);
    check("  s: {A: true}\n  condition: s", &[r#"{"A":true}"#, r#"{"A":"True"}"#], &[r#"{"A":false}"#]);
    check("  s: {A|contains: x}\n  condition: not s", &[r#"{"B":"x"}"#], &[r#"{"A":"x"}"#]);
}

#[test]
fn field_names_resolve_in_every_shape() {
    let d = "  s: {ParentCommandLine|contains: 'beacon'}\n  condition: s";
    check(
        d,
        &[
            r#"{"ParentCommandLine":"x beacon"}"#,
            r#"{"Event":{"EventData":{"ParentCommandLine":"beacon"}}}"#,
            r#"{"winlog":{"event_data":{"ParentCommandLine":"beacon"}}}"#,
            r#"{"process":{"parent":{"command_line":"beacon"}}}"#,
            r#"{"parentcommandline":"beacon"}"#,
        ],
        &[r#"{"CommandLine":"beacon"}"#, r#"{"x":{"ParentCommandLine":"beacon"}}"#],
    );
}

#[test]
fn log_sources_route_by_event_and_channel() {
    let d = "  s: {Image|endswith: '\\x.exe'}\n  condition: s";
    let ev =
        |eid: u32, ch: &str, extra: &str| format!(r#"{{"EventID":{eid},"Channel":"{ch}","Image":"C:\\x.exe"{extra}}}"#);
    check_in(
        "  category: process_creation\n  product: windows",
        d,
        &[&ev(1, SYSMON, ""), &ev(4688, "Security", "")],
        &[&ev(4688, SYSMON, ""), &ev(1, "Security", ""), &ev(11, SYSMON, ""), r#"{"Image":"C:\\x.exe"}"#],
    );
    check_in("  category: image_load\n  product: windows", d, &[&ev(7, SYSMON, "")], &[&ev(1, SYSMON, "")]);
    check_in(
        "  category: registry_add\n  product: windows",
        d,
        &[&ev(12, SYSMON, r#","EventType":"CreateKey""#)],
        &[&ev(12, SYSMON, r#","EventType":"DeleteKey""#)],
    );
    check_in("  service: security\n  product: windows", d, &[&ev(4624, "Security", "")], &[&ev(4624, "System", "")]);
}

/// A rule the prefilter can derive no literal from makes every line a candidate; the other
/// rules must still be evaluated on the lines their literals pick (they once were not).
#[test]
fn a_rule_without_literals_leaves_the_others_working() {
    let text = "title: T\nname: no_literal\nlevel: low\nlogsource:\n  product: windows\ndetection:\n  s:\n    Foo: null\n  condition: s\n";
    let mut b = RuleSetBuilder::new();
    b.add_builtin().expect("built-ins");
    b.add_source("t.yml", "no_literal", text).expect("rule");
    let t = Tagger::new(b.build(), Config::default()).expect("tagger");
    assert!(t.prefilter().examines_every_line());
    let record = format!(
        r#"{{"EventID":1,"Channel":"{SYSMON}","Image":"C:\\Windows\\System32\\cmd.exe","ParentImage":"C:\\w3wp.exe","Foo":1}}"#
    );
    let input = format!("{record}\n{{\"x\":1}}\n{record}");
    let (out, stats) = t.tag_all(input.as_bytes());
    let found = detections(&out, "iis_tagger");
    assert_eq!(found[0], ["webshell_child_process"]);
    assert_eq!(found[1], ["no_literal"]);
    assert_eq!(found[2], ["webshell_child_process"]);
    assert_eq!(stats.lines, 3);
}
