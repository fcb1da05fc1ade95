//! EVTX files (issue 13): the eight original `.evtx` files of `../shared/corpus/evtx` read
//! record for record as their evtx_dump JSON twins, with the same detections (built-ins and
//! SigmaHQ); damaged copies (cut short, bits flipped) yield what can be read and say what
//! could not; `--recursive` and `--matches-only`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::fuzz_checks;
use crate::needs::{Need, need, need_all};
use crate::support::{repo, temp_dir};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_iis-tagger"));
    c.current_dir(repo("."));
    c
}

fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("the binary runs")
}

fn evtx_files(corpus: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(corpus.join("evtx"))
        .expect("corpus/evtx")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "evtx"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 8, "the corpus README names eight files");
    files
}

/// The JSON lines the corpus README says an EVTX file holds: its twin, or a range of lines of
/// a concatenated file (per `SOURCES.tsv`).
fn twin_lines(corpus: &Path, evtx: &Path) -> Vec<u8> {
    let dir = corpus.join("evtxdump-json/evtx-attack-samples");
    let stem = evtx.file_stem().and_then(|s| s.to_str()).expect("name");
    let twin = dir.join(format!("{stem}.jsonl"));
    if twin.exists() {
        return std::fs::read(twin).expect("twin");
    }
    let (folder, file) = stem.split_once("__").expect("folder__file");
    let sources = std::fs::read_to_string(dir.join("SOURCES.tsv")).expect("SOURCES.tsv");
    let row = sources
        .lines()
        .map(|l| l.split('\t').collect::<Vec<_>>())
        .find(|cells| cells.len() == 3 && cells[2].replace(' ', "_") == format!("{folder}/{file}.evtx"))
        .unwrap_or_else(|| panic!("{stem} in SOURCES.tsv"));
    let (from, to) = row[1].split_once('-').expect("a line range");
    let (from, to): (usize, usize) = (from.parse().expect("from"), to.parse().expect("to"));
    let all = std::fs::read(dir.join(row[0])).expect("the concatenated file");
    let mut out = Vec::new();
    for line in all.split_inclusive(|&b| b == b'\n').skip(from - 1).take(to - from + 1) {
        out.extend_from_slice(line);
    }
    out
}

#[test]
fn every_evtx_file_reads_as_its_evtx_dump_twin_byte_for_byte() {
    let Some(corpus) = need(Need::Corpus) else { return };
    for evtx in evtx_files(&corpus) {
        let twin = twin_lines(&corpus, &evtx);
        // The records themselves, without rules: the lines evtx_dump wrote.
        let plain = run(&["--no-builtin", "--rules", "tests/fixtures/good-rules", evtx.to_str().expect("path")]);
        assert!(plain.status.success(), "{}: {}", evtx.display(), String::from_utf8_lossy(&plain.stderr));
        let dir = temp_dir("evtx-twin");
        let twin_file = dir.join("twin.jsonl");
        std::fs::write(&twin_file, &twin).expect("write the twin");
        let twin_plain =
            run(&["--no-builtin", "--rules", "tests/fixtures/good-rules", twin_file.to_str().expect("path")]).stdout;
        assert!(plain.stdout == twin_plain, "{}: not the records of its twin", evtx.display());
        assert_eq!(plain.stdout.iter().filter(|&&b| b == b'\n').count(), twin.iter().filter(|&&b| b == b'\n').count());
    }
}

/// `rule slug → count` over the annotated lines of `output`.
fn counts(output: &[u8]) -> std::collections::BTreeMap<String, usize> {
    let mut out = std::collections::BTreeMap::new();
    for line in output.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let value: serde_json::Value = serde_json::from_slice(line).expect("a JSON line");
        let Some(detections) = value["iis_tagger"]["detections"].as_array() else { continue };
        for d in detections {
            *out.entry(d["rule"].as_str().expect("rule").to_string()).or_insert(0) += 1;
        }
    }
    out
}

#[test]
fn the_detections_of_the_evtx_files_are_those_of_the_corpus_readme() {
    let Some(corpus) = need(Need::Corpus) else { return };
    let dir = corpus.join("evtx");
    let out = run(&["--recursive", "--matches-only", "--stats", "--stats-format", "json", dir.to_str().expect("path")]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let found = counts(&out.stdout);
    // The appcmd file: 39 × rule 3 and 1 × rule 4; the IIS web-shell file: 1 × rule 4.
    let want: std::collections::BTreeMap<String, usize> =
        [("microsoft_iis_service_account_password_dumped".to_string(), 39), ("webshell_child_process".to_string(), 2)]
            .into();
    assert_eq!(found, want);
    let stats: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stderr).lines().last().expect("stats")).expect("json");
    assert_eq!(stats["evtx_files"], 8);
    assert_eq!(stats["evtx_damaged"], 0);
    assert_eq!(stats["annotated"], 41);
    let records = stats["evtx_records"].as_u64().expect("records");
    assert_eq!(stats["unmatched_dropped"].as_u64(), Some(records - 41), "the others are counted, not lost");
    assert_eq!(out.stdout.iter().filter(|&&b| b == b'\n').count(), 41, "only the matches are written");
}

#[test]
fn with_the_sigmahq_rules_an_evtx_file_and_its_twin_give_the_same_detections() {
    let Some([corpus, sigma]) = need_all([Need::Corpus, Need::SigmaRules]) else { return };
    let sigma = sigma.to_str().expect("path").to_string();
    let dir = temp_dir("evtx-sigma");
    let mut evtx_found = std::collections::BTreeMap::new();
    let mut twin_found = std::collections::BTreeMap::new();
    for evtx in evtx_files(&corpus) {
        let twin = dir.join("twin.jsonl");
        std::fs::write(&twin, twin_lines(&corpus, &evtx)).expect("write the twin");
        for (file, found) in [(evtx.clone(), &mut evtx_found), (twin, &mut twin_found)] {
            let out = run(&["--rules", &sigma, "--matches-only", file.to_str().expect("path")]);
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            for (rule, n) in counts(&out.stdout) {
                *found.entry(rule).or_insert(0) += n;
            }
        }
    }
    assert!(evtx_found.len() > 3, "SigmaHQ rules fire on these attack samples: {evtx_found:?}");
    assert_eq!(evtx_found, twin_found);
}

/// The output of `iis-tagger FILE` and what it said on stderr.
fn tag(file: &Path) -> (Vec<u8>, String) {
    let out = run(&["--stats", "--stats-format", "json", file.to_str().expect("path")]);
    assert_eq!(out.status.code(), Some(0), "a damaged file is reported, not a failure");
    (out.stdout, String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn a_file_cut_short_yields_its_whole_chunks_and_says_where_it_ends() {
    let Some(corpus) = need(Need::Corpus) else { return };
    let file = corpus.join("evtx/Credential_Access__discovery_sysmon_1_iis_pwd_and_config_discovery_appcmd.evtx");
    let bytes = std::fs::read(&file).expect("read");
    let (whole, _) = tag(&file);
    let dir = temp_dir("evtx-cut");
    let cut = dir.join("cut.evtx");
    for len in [8, 100, 4096, 5000, 4096 + 65536, 70_000, 300_000] {
        std::fs::write(&cut, &bytes[..len]).expect("write");
        let (out, err) = tag(&cut);
        assert!(whole.starts_with(&out), "cut at {len}: the records read are the first ones, whole");
        assert!(err.contains(&format!("{}: skipped", cut.display())), "cut at {len}: named: {err}");
        let stats: serde_json::Value = serde_json::from_str(err.lines().last().expect("stats")).expect("json");
        assert!(stats["evtx_damaged"].as_u64() >= Some(1), "cut at {len}: counted");
        assert_eq!(stats["evtx_records"].as_u64(), Some(out.iter().filter(|&&b| b == b'\n').count() as u64));
    }
    // Cut inside the fifth chunk: the four before it are read, and the message names it.
    std::fs::write(&cut, &bytes[..300_000]).expect("write");
    let (out, err) = tag(&cut);
    assert!(err.contains("chunk 4") && err.contains("truncated"), "{err}");
    assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 36);
}

/// A deterministic generator, so that a failing case can be rerun.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

#[test]
fn damaged_files_never_fail_the_run_and_keep_the_record_contract() {
    let Some(corpus) = need(Need::Corpus) else { return };
    let dir = temp_dir("evtx-flip");
    let flipped = dir.join("flipped.evtx");
    for (n, file) in evtx_files(&corpus).iter().enumerate() {
        let bytes = std::fs::read(file).expect("read");
        fuzz_checks::evtx(&bytes);
        let mut rng = Lcg(n as u64 + 1);
        for round in 0..12 {
            let mut copy = bytes.clone();
            let flips = [1, 10, 100, 1000][round % 4];
            for _ in 0..flips {
                let i = 8 + (rng.next() as usize) % (copy.len() - 8);
                copy[i] ^= 1 << (rng.next() % 8);
            }
            // The library's reader through the fuzz target's checks, then the binary.
            fuzz_checks::evtx(&copy);
            std::fs::write(&flipped, &copy).expect("write");
            let out = run(&["--stats", flipped.to_str().expect("path")]);
            assert_eq!(
                out.status.code(),
                Some(0),
                "{} round {round}: {}",
                file.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));
        }
        fuzz_checks::evtx(&bytes[..bytes.len() / 3]);
    }
}

#[test]
fn recursive_reads_every_file_in_path_order_and_a_folder_needs_it() {
    let dir = temp_dir("evtx-recursive");
    std::fs::create_dir_all(dir.join("b/c")).expect("folders");
    std::fs::write(dir.join("b/c/2.jsonl"), "two\n").expect("write");
    std::fs::write(dir.join("b/1.log"), "one\n").expect("write");
    std::fs::write(dir.join("a.json"), "zero\n").expect("write");
    std::fs::write(dir.join(".hidden"), "hidden\n").expect("write");
    // A file named .evtx that is not one is read as lines, as it is.
    std::fs::write(dir.join("b/d.evtx"), "not an event log\n").expect("write");
    let path = dir.to_str().expect("path");
    let out = run(&["--recursive", path]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "zero\none\ntwo\nnot an event log\n");
    let refused = run(&[path]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("is a folder (--recursive"));
    // A pipe in the folder would block the walk for ever: it is named and not read.
    let fifo = dir.join("b/pipe");
    let made = Command::new("mkfifo").arg(&fifo).status().expect("mkfifo runs");
    assert!(made.success());
    let out = run(&["--recursive", path]);
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "zero\none\ntwo\nnot an event log\n");
    assert!(String::from_utf8_lossy(&out.stderr).contains("pipe: skipped: not a regular file"));
}

/// The binary run with `args`, `bytes` written to its stdin through a pipe: its pid and
/// what it wrote (it must succeed).
fn piped(args: &[&str], bytes: &[u8]) -> (u32, Output) {
    let mut child = bin()
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let pid = child.id();
    let mut stdin = child.stdin.take().expect("stdin");
    let feed = bytes.to_vec();
    let writer = std::thread::spawn(move || std::io::Write::write_all(&mut stdin, &feed));
    let out = child.wait_with_output().expect("output");
    writer.join().expect("writer").expect("write");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    (pid, out)
}

/// `--forward` and `--follow` read lines: an EVTX file given to them is refused at start-up,
/// naming it, rather than passed on as binary read by nothing.
#[test]
fn the_line_only_modes_refuse_an_evtx_file() {
    let Some(corpus) = need(Need::Corpus) else { return };
    let file = corpus.join("evtx/Lateral_Movement__LM_typical_IIS_webshell_sysmon_1_10_traces.evtx");
    let path = file.to_str().expect("path");
    for args in [vec!["--forward", "127.0.0.1:9", path], vec!["--follow", path]] {
        let out = run(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(out.stdout.is_empty(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(path) && err.contains("an EVTX file"), "{args:?}: {err}");
    }
}

#[test]
fn an_evtx_file_on_stdin_is_read_from_a_file_or_a_pipe() {
    let Some(corpus) = need(Need::Corpus) else { return };
    let file = corpus.join("evtx/Lateral_Movement__LM_typical_IIS_webshell_sysmon_1_10_traces.evtx");
    let bytes = std::fs::read(&file).expect("read");
    let by_path = run(&[file.to_str().expect("path")]);
    assert!(by_path.status.success());
    assert!(String::from_utf8_lossy(&by_path.stdout).contains(r#""rule":"webshell_child_process""#));
    // Redirected from the file, stdin is the file: read as EVTX.
    let redirected = bin().stdin(std::fs::File::open(&file).expect("open")).output().expect("runs");
    assert!(redirected.status.success());
    assert_eq!(redirected.stdout, by_path.stdout);
    // Through a pipe (the reader seeks): copied to a temporary file, then read the same.
    let (pid, out) = piped(&["--stats", "--stats-format", "json"], &bytes);
    assert_eq!(out.stdout, by_path.stdout, "the same records as from the path");
    let err = String::from_utf8_lossy(&out.stderr);
    let stats: serde_json::Value = serde_json::from_str(err.lines().last().expect("stats")).expect("json");
    assert_eq!(stats["evtx_streams"], 1);
    assert_eq!(stats["evtx_files"], 1);
    assert_eq!(stats["evtx_damaged"], 0);
    // On several threads too (the parallel path cuts lines: the stream is looked at first).
    let piped = |args: &[&str], bytes: &[u8]| piped(args, bytes).1.stdout;
    assert_eq!(piped(&["--threads", "2"], &bytes), by_path.stdout);
    // A stream that only starts like the signature passes through as it came.
    for start in [&b"E"[..], b"ElfFile", b"ElfFilX\n{\"a\":1}\n", b"{\"EventID\":1}\n"] {
        assert_eq!(piped(&["--threads", "2"], start), start);
        assert_eq!(piped(&[], start), start);
    }
    // The temporary file is gone (deleted as soon as it was made).
    let prefix = format!(".iis-tagger-{pid}-");
    let left = std::fs::read_dir(std::env::temp_dir())
        .expect("the temporary folder")
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .count();
    assert_eq!(left, 0, "a temporary file was left behind");
}

#[test]
fn matches_only_writes_the_annotated_lines_of_a_json_stream() {
    let out = run(&["--matches-only", "--stats", "--stats-format", "json", "examples/sample.jsonl"]);
    assert!(out.status.success());
    let all = run(&["examples/sample.jsonl"]).stdout;
    let input = std::fs::read(repo("examples/sample.jsonl")).expect("sample");
    // A record that matched nothing comes out as it came in; an annotated one does not:
    // the lines kept are exactly the changed ones, in order.
    let every: Vec<&[u8]> = all.split_inclusive(|&b| b == b'\n').collect();
    let given: Vec<&[u8]> = input.split_inclusive(|&b| b == b'\n').collect();
    assert_eq!(every.len(), given.len());
    let changed: Vec<u8> = every.iter().zip(&given).filter(|(o, i)| o != i).flat_map(|(o, _)| o.to_vec()).collect();
    assert!(!changed.is_empty());
    assert_eq!(out.stdout, changed);
    let stats: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stderr).lines().last().expect("stats")).expect("json");
    let kept = out.stdout.iter().filter(|&&b| b == b'\n').count();
    assert_eq!(stats["annotated"].as_u64(), Some(kept as u64));
    assert_eq!(stats["unmatched_dropped"].as_u64(), Some((every.len() - kept) as u64));
}

/// `--threads` reads several files at once (issue 13): the output — every record, or only
/// the matches — and the counters are those of one thread, in the same order.
#[test]
fn files_read_on_several_threads_come_out_as_on_one() {
    let Some(corpus) = need(Need::Corpus) else { return };
    let evtx = corpus.join("evtx");
    let evtx = evtx.to_str().expect("path");
    let all = corpus.to_str().expect("path");
    for args in [vec!["-r", evtx], vec!["-r", "--matches-only", all]] {
        let runs: Vec<Output> = ["1", "2", "3"]
            .iter()
            .map(|t| {
                let mut a = args.clone();
                a.extend(["--threads", t, "--stats-format", "json"]);
                let out = run(&a);
                assert!(out.status.success(), "{a:?}: {}", String::from_utf8_lossy(&out.stderr));
                out
            })
            .collect();
        assert!(!runs[0].stdout.is_empty());
        // The counters, without the rule set's build time (each run builds its own).
        let stats = |o: &Output| -> serde_json::Value {
            let mut stats: serde_json::Value =
                serde_json::from_str(String::from_utf8_lossy(&o.stderr).lines().last().expect("stats")).expect("json");
            stats["rule_set"]["loaded_at"].take();
            stats
        };
        for other in &runs[1..] {
            assert!(other.stdout == runs[0].stdout, "{args:?}: the output differs from one thread's");
            assert_eq!(stats(other), stats(&runs[0]), "{args:?}");
        }
    }
}

/// A reader that goes away, or a full disk, ends a run of files on several threads as on one:
/// quietly with status 0, or with status 1 and the error said.
#[test]
fn files_on_several_threads_end_cleanly_when_the_output_does() {
    use std::io::Read;
    let Some(corpus) = need(Need::Corpus) else { return };
    let evtx = corpus.join("evtx");
    let mut child = bin()
        .args(["-r", "--threads", "2", evtx.to_str().expect("path")])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawns");
    let mut head = [0u8; 100];
    child.stdout.take().expect("stdout").read_exact(&mut head).expect("the first bytes");
    let out = child.wait_with_output().expect("ends");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));

    let full = std::fs::OpenOptions::new().write(true).open("/dev/full").expect("/dev/full");
    let out = bin().args(["-r", "--threads", "2", evtx.to_str().expect("path")]).stdout(full).output().expect("runs");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("No space left"), "{}", String::from_utf8_lossy(&out.stderr));
}
