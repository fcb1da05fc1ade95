//! The progress line (issue 13): on a terminal — a real pseudo-terminal made by
//! `script(1)` — a run writing to a file shows files and bytes done, records a second,
//! detections and the time left on stderr; never with `--quiet`, never when stdout is the
//! terminal too (the records would run through it), never when stderr is not a terminal;
//! and the records written are the same byte for byte either way.

use std::path::Path;
use std::process::{Command, Output};

use crate::needs::{Need, need, need_all};
use crate::support::{repo, temp_dir};

fn bin() -> String {
    env!("CARGO_BIN_EXE_iis-tagger").to_string()
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// `command` (a shell command line) run with its stdin, stdout and stderr on a new
/// pseudo-terminal; what the terminal showed.
fn on_a_terminal(script: &Path, command: &str) -> String {
    let out: Output = Command::new(script)
        .args(["-q", "-e", "-c", command, "/dev/null"])
        .current_dir(repo("."))
        .output()
        .expect("script runs");
    assert!(out.status.success(), "{command}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn shows_progress(terminal: &str) -> bool {
    terminal.contains("files 0/") && terminal.contains("detections") && terminal.contains("ETA")
}

#[test]
fn a_run_to_a_file_shows_its_progress_on_the_terminal_and_writes_the_same_records() {
    let Some([script, corpus]) = need_all([Need::Program("script", &["/usr/bin/script", "/bin/script"]), Need::Corpus])
    else {
        return;
    };
    let dir = temp_dir("progress");
    let evtx = corpus.join("evtx");
    let evtx = evtx.to_str().expect("path");
    let plain = Command::new(bin()).args(["-r", evtx]).current_dir(repo(".")).output().expect("runs");
    assert!(plain.status.success());
    assert!(
        plain.stderr.is_empty(),
        "no progress when stderr is not a terminal: {}",
        String::from_utf8_lossy(&plain.stderr)
    );

    let file = dir.join("tagged.jsonl");
    let shown = on_a_terminal(
        &script,
        &format!("{} -r {} > {}", quote(&bin()), quote(evtx), quote(file.to_str().expect("path"))),
    );
    assert!(shows_progress(&shown), "no progress line on the terminal: {shown:?}");
    // The 8 files and their bytes (3.53 MiB) are the totals.
    assert!(shown.contains("files 0/8"), "{shown:?}");
    assert!(shown.contains("MiB"), "{shown:?}");
    assert_eq!(std::fs::read(&file).expect("output"), plain.stdout, "the progress never mixes into the records");

    let quiet = on_a_terminal(
        &script,
        &format!("{} -q -r {} > {}", quote(&bin()), quote(evtx), quote(file.to_str().expect("path"))),
    );
    assert!(!shows_progress(&quiet) && !quiet.contains("ETA"), "--quiet: {quiet:?}");
    assert_eq!(std::fs::read(&file).expect("output"), plain.stdout);
}

#[test]
fn no_progress_when_the_records_go_to_the_terminal() {
    let Some(script) = need(Need::Program("script", &["/usr/bin/script", "/bin/script"])) else { return };
    let shown = on_a_terminal(&script, &format!("{} examples/sample.jsonl", quote(&bin())));
    assert!(shown.contains("\"iis_tagger\""), "the records are on the terminal: {shown:?}");
    assert!(!shown.contains("files 0/") && !shown.contains("ETA"), "{shown:?}");
}

#[test]
fn stdin_shows_bytes_and_records_without_a_total() {
    let Some(script) = need(Need::Program("script", &["/usr/bin/script", "/bin/script"])) else { return };
    let dir = temp_dir("progress-stdin");
    let out = dir.join("out.jsonl");
    let shown = on_a_terminal(
        &script,
        &format!("cat examples/sample.jsonl | {} > {}", quote(&bin()), quote(out.to_str().expect("path"))),
    );
    assert!(shown.contains("files 0/1") && shown.contains("records"), "{shown:?}");
    assert!(!shown.contains("ETA"), "no total, no time left: {shown:?}");
    let plain = Command::new(bin()).arg("examples/sample.jsonl").current_dir(repo(".")).output().expect("runs");
    assert_eq!(std::fs::read(&out).expect("output"), plain.stdout);
}
