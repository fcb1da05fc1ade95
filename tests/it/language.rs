//! The rule language through users' rules: conditions, modifiers, values, log sources,
//! largely the examples of the Sigma specification (v2.1) and its modifier appendix. Each
//! case is a detection block and records that must / must not match it; every case runs
//! with the prefilter, without it, and on the prefilter's every-line (routed) path.

use iis_tagger::{Config, RuleSetBuilder, Tagger};

use crate::support::{SYSMON, detections};

/// A rule that never matches and gives the prefilter no literal: loaded beside the rule
/// under test, it sends every line down the routed path.
const NO_LITERAL: &str = "title: N\nname: n\nlevel: low\nlogsource:\n  product: windows\ndetection:\n  s:\n    NoSuchField|exists: true\n  condition: s\n";

fn taggers_for(detection: &str, logsource: &str) -> Vec<(&'static str, Tagger)> {
    let text = format!("title: T\nname: t\nlevel: high\nlogsource:\n{logsource}\ndetection:\n{detection}\n");
    [("prefilter", true, false), ("no prefilter", false, false), ("routed", true, true)]
        .into_iter()
        .map(|(name, prefilter, routed)| {
            let mut b = RuleSetBuilder::new();
            b.add_source("test.yml", "t", &text).unwrap_or_else(|e| panic!("{e}\n{text}"));
            if routed {
                b.add_source("n.yml", "n", NO_LITERAL).expect("helper rule");
            }
            (name, Tagger::new(b.build(), Config { prefilter, ..Config::default() }).expect("tagger"))
        })
        .collect()
}

fn matches(t: &Tagger, record: &str) -> bool {
    let (out, _) = t.tag_all(record.as_bytes());
    detections(&out, "iis_tagger")[0].iter().any(|d| d == "t")
}

fn check(detection: &str, yes: &[&str], no: &[&str]) {
    check_in("  product: windows", detection, yes, no);
}

fn check_in(logsource: &str, detection: &str, yes: &[&str], no: &[&str]) {
    for (mode, t) in taggers_for(detection, logsource) {
        for r in yes {
            assert!(matches(&t, r), "should match ({mode}):\n{detection}\n{r}");
        }
        for r in no {
            assert!(!matches(&t, r), "should not match ({mode}):\n{detection}\n{r}");
        }
    }
}

/// The rule must be refused at load time, with a message holding `needle`.
fn refused(detection: &str, needle: &str) {
    let text = format!("title: T\nname: t\nlevel: high\nlogsource:\n  product: windows\ndetection:\n{detection}\n");
    let mut b = RuleSetBuilder::new();
    match b.add_source("test.yml", "t", &text) {
        Ok(()) => panic!("should be refused:\n{detection}"),
        Err(e) => assert!(e.message().contains(needle), "{e}"),
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

#[test]
fn encodings_base64_base64offset_and_utf16() {
    // base64 of `cmd` is `Y21k`; base64offset finds it at any of the three offsets.
    check("  s: {A|base64: cmd}\n  condition: s", &[r#"{"A":"Y21k"}"#, r#"{"A":"y21K"}"#], &[r#"{"A":"xY21k"}"#]);
    check("  s: {A|base64|contains: cmd}\n  condition: s", &[r#"{"A":"xY21ky"}"#], &[r#"{"A":"cmd"}"#]);
    // `whoami` inside longer base64 text at each offset: `d2hvYW1p`, `dob2Fta`, `3aG9hbW`.
    check(
        "  s: {A|base64offset|contains: whoami}\n  condition: s",
        &[r#"{"A":"QUFBd2hvYW1pQUFB"}"#, r#"{"A":"IHdob2FtaQ=="}"#, r#"{"A":"ICB3aG9hbWk="}"#],
        &[r#"{"A":"d2hvYW"}"#],
    );
    // PowerShell's -EncodedCommand is UTF-16LE: `ping` → `cABpAG4AZw`.
    check(
        "  s: {CommandLine|wide|base64offset|contains: ping}\n  condition: s",
        &[r#"{"CommandLine":"powershell -enc cABpAG4AZwAgADEAMAAuADAALgAwAC4AMQA="}"#],
        &[r#"{"CommandLine":"powershell -enc cGluZw=="}"#],
    );
    check("  s: {A|utf16le|base64: ping}\n  condition: s", &[r#"{"A":"cABpAG4AZwA="}"#], &[]);
    check("  s: {A|utf16be|base64: ping}\n  condition: s", &[r#"{"A":"AHAAaQBuAGc="}"#], &[]);
    check("  s: {A|utf16|base64: ping}\n  condition: s", &[r#"{"A":"//5wAGkAbgBnAA=="}"#], &[]);
    refused("  s: {A|wide: ping}\n  condition: s", "only make sense before base64");
    refused("  s: {A|base64: 'c*d'}\n  condition: s", "wildcards");
    refused("  s: {A|base64offset|contains: a}\n  condition: s", "would match every value");
}

#[test]
fn windash_accepts_every_option_character() {
    let d = "  s: {CommandLine|windash|contains: ' -exec '}\n  condition: s";
    check(
        d,
        &[
            r#"{"CommandLine":"x -exec bypass"}"#,
            r#"{"CommandLine":"x /exec bypass"}"#,
            "{\"CommandLine\":\"x \u{2013}exec bypass\"}",
            "{\"CommandLine\":\"x \u{2014}exec bypass\"}",
            "{\"CommandLine\":\"x \u{2015}exec bypass\"}",
        ],
        &[r#"{"CommandLine":"x +exec bypass"}"#, r#"{"CommandLine":"x exec bypass"}"#],
    );
}

#[test]
fn cidr_exists_and_comparisons() {
    check(
        "  s: {DestinationIp|cidr: 10.0.0.0/8}\n  condition: s",
        &[r#"{"DestinationIp":"10.1.2.3"}"#, r#"{"destination":{"ip":"10.0.0.1"}}"#],
        &[r#"{"DestinationIp":"11.0.0.1"}"#, r#"{"DestinationIp":"10.0.0"}"#, r#"{"B":"10.0.0.1"}"#],
    );
    check(
        "  s: {DestinationIp|cidr: ['192.168.0.0/16', 'fe80::/10']}\n  condition: s",
        &[r#"{"DestinationIp":"192.168.7.1"}"#, r#"{"DestinationIp":"fe80::1"}"#],
        &[r#"{"DestinationIp":"fec0::1"}"#],
    );
    refused("  s: {A|cidr: 10.0.0.1/8}\n  condition: s", "host bits");
    // exists: present, be it empty or null.
    check(
        "  s: {A|exists: true}\n  condition: s",
        &[r#"{"A":"x"}"#, r#"{"A":""}"#, r#"{"A":null}"#],
        &[r#"{"B":"x"}"#],
    );
    check("  s: {A|exists: false}\n  condition: s", &[r#"{"B":"x"}"#], &[r#"{"A":""}"#]);
    refused("  s: {A|exists: yes please}\n  condition: s", "`true` or `false`");
    check(
        "  s: {N|gt: 10}\n  condition: s",
        &[r#"{"N":11}"#, r#"{"N":"12"}"#, r#"{"N":10.5}"#],
        &[r#"{"N":10}"#, r#"{"N":"ten"}"#, r#"{"M":11}"#],
    );
    check("  s: {N|gte: 10}\n  condition: s", &[r#"{"N":10}"#], &[r#"{"N":9}"#]);
    check("  s: {N|lt: 10}\n  condition: s", &[r#"{"N":-3}"#], &[r#"{"N":10}"#]);
    check("  s: {N|lte: 10}\n  condition: s", &[r#"{"N":10}"#], &[r#"{"N":11}"#]);
    refused("  s: {N|gt: abc}\n  condition: s", "compare with a number");
}

#[test]
fn fieldref_and_neq() {
    // fieldref: equal to another field of the same record (case-insensitive).
    check(
        "  s: {TargetUserName|fieldref: SubjectUserName}\n  condition: s",
        &[r#"{"TargetUserName":"Bob","SubjectUserName":"bob"}"#],
        &[r#"{"TargetUserName":"bob","SubjectUserName":"alice"}"#, r#"{"TargetUserName":"bob"}"#],
    );
    check(
        "  s: {CommandLine|fieldref|contains: Image}\n  condition: s",
        &[r#"{"CommandLine":"c:\\x.exe -a","Image":"C:\\X.EXE"}"#],
        &[r#"{"CommandLine":"y.exe","Image":"C:\\x.exe"}"#],
    );
    // A duplicate of the referenced field cannot switch a filter on.
    check(
        "  s: {A: x}\n  f: {User|fieldref: ParentUser}\n  condition: s and not f",
        &[r#"{"A":"x","User":"a","ParentUser":"b"}"#, r#"{"A":"x","User":"a","ParentUser":"b","ParentUser":"a"}"#],
        &[r#"{"A":"x","User":"a","ParentUser":"a"}"#],
    );
    // neq negates the whole test: a list means none of the values; an absent field is
    // different from every value.
    check(
        "  s: {A: x}\n  n: {User|neq: [admin, root]}\n  condition: s and n",
        &[r#"{"A":"x","User":"bob"}"#, r#"{"A":"x"}"#],
        &[r#"{"A":"x","User":"ROOT"}"#, r#"{"A":"x","User":"admin"}"#],
    );
    check(
        "  s: {A: x}\n  n: {User|fieldref|neq: ParentUser}\n  condition: s and n",
        &[r#"{"A":"x","User":"a","ParentUser":"b"}"#],
        &[r#"{"A":"x","User":"a","ParentUser":"A"}"#],
    );
}

#[test]
fn keywords_search_the_whole_record() {
    check(
        "  keywords:\n    - mimikatz\n    - 'sekurlsa::*'\n  condition: keywords",
        &[
            r#"{"CommandLine":"x MimiKatz.exe"}"#,
            r##"{"Event":{"EventData":{"Data":{"#text":["a","sekurlsa::logonpasswords"]}}}}"##,
            r#"{"deep":[[{"x":"mimikatz"}]]}"#,
        ],
        &[r#"{"mimikatz":"key, not value"}"#, r#"{"A":"mimi katz"}"#],
    );
    check(
        "  keywords:\n    '|all':\n      - foo\n      - bar\n  condition: keywords",
        &[r#"{"A":"foo","B":{"C":"xbarx"}}"#],
        &[r#"{"A":"foo"}"#],
    );
    check("  keywords: 4688\n  condition: keywords", &[r#"{"EventID":4688}"#, r#"{"A":"x 4688 y"}"#], &[r#"{"A":1}"#]);
    check("  keywords:\n    '|re': 'ab+c'\n  condition: keywords", &[r#"{"A":"xabbbc"}"#], &[r#"{"A":"ac"}"#]);
    check(
        "  s: {A: x}\n  keywords: [evil]\n  condition: s and not keywords",
        &[r#"{"A":"x"}"#],
        &[r#"{"A":"x","B":"so evil"}"#],
    );
}

#[test]
fn escapes_and_wildcards_as_the_specification_writes_them() {
    // `\*` is a literal star, `\\*` a backslash then a wildcard, `\\\*` a backslash and a
    // literal star; a backslash before anything else is itself.
    check(r"  s: {A: 'a\*b'}\n  condition: s".replace("\\n", "\n").as_str(), &[r#"{"A":"a*b"}"#], &[r#"{"A":"aab"}"#]);
    check(
        r"  s: {A: 'a\\*b'}\n  condition: s".replace("\\n", "\n").as_str(),
        &[r#"{"A":"a\\b"}"#, r#"{"A":"a\\xyzb"}"#],
        &[r#"{"A":"ab"}"#],
    );
    check(
        r"  s: {A: 'a\\\*b'}\n  condition: s".replace("\\n", "\n").as_str(),
        &[r#"{"A":"a\\*b"}"#],
        &[r#"{"A":"a\\xb"}"#],
    );
    check(
        r"  s: {A: 'C:\Windows\x'}\n  condition: s".replace("\\n", "\n").as_str(),
        &[r#"{"A":"c:\\windows\\x"}"#],
        &[],
    );
    check(
        "  s: {A: 'a?c'}\n  condition: s",
        &[r#"{"A":"abc"}"#, "{\"A\":\"a\u{e9}c\"}"],
        &[r#"{"A":"ac"}"#, r#"{"A":"abbc"}"#],
    );
}

#[test]
fn condition_precedence_and_selection_patterns() {
    // or < and < not < 1 of / all of < parentheses (Sigma specification, Condition).
    let d = "  a: {A: x}\n  b: {B: x}\n  c: {C: x}\n";
    check(&format!("{d}  condition: not a and b"), &[r#"{"B":"x"}"#], &[r#"{"A":"x","B":"x"}"#]);
    check(
        &format!("{d}  condition: a or not b and c"),
        &[r#"{"A":"x","B":"x"}"#, r#"{"C":"x"}"#],
        &[r#"{"B":"x","C":"x"}"#],
    );
    let d = "  sel_a: {A: x}\n  sel_b: {B: x}\n  filter_1: {C: x}\n  filter_2: {D: x}\n  _private: {E: x}\n";
    check(
        &format!("{d}  condition: 1 of sel_* and not 1 of filter_*"),
        &[r#"{"A":"x"}"#],
        &[r#"{"A":"x","D":"x"}"#, r#"{"C":"x"}"#],
    );
    // `them` leaves out names starting with `_`.
    check(&format!("{d}  condition: all of them"), &[r#"{"A":"x","B":"x","C":"x","D":"x"}"#], &[r#"{"E":"x"}"#]);
    check(&format!("{d}  condition: 1 of them"), &[r#"{"D":"x"}"#], &[r#"{"E":"x"}"#]);
    refused("  s: {A: x}\n  condition: s | count() > 5", "aggregations");
    refused("  s: {A: x}\n  condition: 1 of nomatch*", "");
}
