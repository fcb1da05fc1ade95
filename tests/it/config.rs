//! `--config FILE` and `config check` (issue 12): the file's options are those of the
//! command line, errors name the file's line and column, and flags replace the file's.

use std::process::{Command, Output};

use crate::support::{detections, repo, temp_dir};

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_iis-tagger")).args(args).current_dir(repo(".")).output().expect("runs")
}

fn write(name: &str, text: &str) -> String {
    let dir = temp_dir("config");
    let path = dir.join(name);
    std::fs::write(&path, text).expect("config");
    path.to_str().expect("path").to_string()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn the_file_sets_options_and_flags_replace_them() {
    let config = write(
        "c.yml",
        "# every mode\nfilters: [examples/filters]\nrule-risk:\n  webshell_child_process: 90\ntag:\n  field: from_file\n  stats_format: json\n",
    );
    let out = run(&["--config", &config, "examples/sample.jsonl"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let found = detections(&out.stdout, "from_file");
    assert!(found.iter().any(|d| d.iter().any(|r| r == "webshell_child_process")), "the file's field name");
    let stats: serde_json::Value = serde_json::from_slice(out.stderr.trim_ascii()).expect("the file's stats format");
    assert_eq!(stats["rule_set"]["filters"], 1, "the file's filters");
    let line = out.stdout.split(|&b| b == b'\n').find(|l| l.windows(22).any(|w| w == b"webshell_child_process"));
    let line = String::from_utf8_lossy(line.expect("a detection"));
    assert!(line.contains(r#""risk_score":90"#), "the file's risk: {line}");
    // A flag replaces the file's value; a list given on the command line replaces the
    // file's list.
    let out = run(&[
        "--config",
        &config,
        "--field",
        "from_flag",
        "--filters",
        "tests/fixtures/no-such-dir",
        "examples/sample.jsonl",
    ]);
    assert_eq!(out.status.code(), Some(2), "the flag's list, not the file's: {}", stderr(&out));
    assert!(stderr(&out).contains("tests/fixtures/no-such-dir"));
    let out = run(&["--config", &config, "--field", "from_flag", "examples/sample.jsonl"]);
    assert!(out.status.success());
    assert!(!detections(&out.stdout, "from_flag").iter().all(Vec::is_empty));
    assert!(detections(&out.stdout, "from_file").iter().all(Vec::is_empty));
}

#[test]
fn errors_name_the_file_line_and_column() {
    let cases: &[(&str, &str)] = &[
        ("serve:\n  listen: 127.0.0.1:0\n  max-line-byte: 2MiB\n", ":3:3: unknown key `max-line-byte` in serve"),
        ("tag:\n  threads: many\n", ":2:3: `threads`: invalid value 'many'"),
        ("watch-rules: yes please\n", ":1:14: `watch-rules` is a switch"),
        ("threads: 2\n", ":1:1: unknown key `threads` in the top level"),
        ("tag:\n  files: [a]\n", ":2:3: unknown key `files`"),
        ("rules: [\n", ":2:1: invalid YAML"),
        ("- a\n", ":1:1: a config file is a mapping"),
        ("tag:\n  max-line-bytes: [1, 2]\n", ":2:19: `max-line-bytes` takes one value"),
    ];
    for (text, want) in cases {
        let path = write("bad.yml", text);
        for out in [run(&["--config", &path, "examples/sample.jsonl"]), run(&["config", "check", &path])] {
            assert_eq!(out.status.code(), Some(2), "{text:?}: {}", stderr(&out));
            let err = stderr(&out);
            assert!(err.contains(&format!("{path}{want}")), "{text:?}: want {want:?} in {err}");
        }
    }
}

#[test]
fn config_check_validates_the_modes_and_loads_the_rules() {
    let good = write(
        "prod.yml",
        "filters: [examples/filters]\nwatch-rules: true\nserve:\n  listen: 0.0.0.0:6514\n  metrics: 127.0.0.1:9898\n  stats: true\nmmexternal:\n  max-line-bytes: 4MiB\n",
    );
    let out = run(&["config", "check", &good]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("serve: --listen=0.0.0.0:6514 --metrics=127.0.0.1:9898 --stats"), "{text}");
    assert!(text.contains("the rules load: 8 rules, 1 filters"), "{text}");
    assert!(text.trim_end().ends_with("config ok"));
    // A rule file that does not load fails the check, naming it.
    let bad_rules = write("rules.yml", "rules: [tests/fixtures/bad-rules/unknown_modifier.yml]\n");
    let out = run(&["config", "check", &bad_rules]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("tests/fixtures/bad-rules/unknown_modifier.yml:"), "{}", stderr(&out));
}

#[test]
fn the_readme_production_config_checks() {
    // The README's sidecar config, its rule and filter folders pointed at the repository's.
    let readme = std::fs::read_to_string(repo("README.md")).expect("README");
    let block = readme
        .split("```yaml\n# /etc/iis-tagger/config.yml")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("the production config in README");
    let text = format!("#{block}")
        .replace("/etc/iis-tagger/rules", "tests/fixtures/good-rules")
        .replace("/etc/iis-tagger/filters", "examples/filters");
    let path = write("prod.yml", &text);
    let out = run(&["config", "check", &path]);
    assert!(out.status.success(), "{}", stderr(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("--framing=octet-counted") && stdout.contains("the rules load: 9 rules, 1 filters"),
        "{stdout}"
    );
}

#[test]
fn a_bad_flag_is_the_command_lines_error_and_a_value_starting_with_a_dash_stays_a_value() {
    let path = write("c.yml", "tag:\n  threads: 4\n  field: -odd\n");
    let out = run(&["--config", &path, "--threads", "abc", "examples/sample.jsonl"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(!stderr(&out).contains(&path), "the flag's error, not the file's: {}", stderr(&out));
    // `-odd` reaches --field as its value (refused as an annotation key, by the tagger).
    let out = run(&["--config", &path, "examples/sample.jsonl"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("annotation"), "{}", stderr(&out));
}
