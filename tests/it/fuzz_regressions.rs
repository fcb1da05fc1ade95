//! Every seed of the fuzz targets and every input that once made one fail
//! (`fuzz/seeds/<target>/`, `fuzz/regressions/<target>/`), through the same checks the
//! targets run (`fuzz/src/checks.rs`, included here).

use std::path::Path;

use crate::fuzz_checks;
use crate::support::repo;

fn inputs(target: &str) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for folder in ["seeds", "regressions"] {
        let dir = repo("fuzz").join(folder).join(target);
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries {
            let path = entry.expect("entry").path();
            let name = Path::new(folder).join(path.file_name().expect("name")).display().to_string();
            out.push((name, std::fs::read(&path).expect("read")));
        }
    }
    out.sort();
    out
}

macro_rules! targets {
    ($($target:ident),*) => {$(
        #[test]
        fn $target() {
            let inputs = inputs(stringify!($target));
            assert!(!inputs.is_empty(), "fuzz/seeds/{} has seeds", stringify!($target));
            for (name, data) in inputs {
                let result = std::panic::catch_unwind(|| fuzz_checks::$target(&data));
                assert!(result.is_ok(), "fuzz/{} ({} target): the check failed", name, stringify!($target));
            }
        }
    )*};
}

targets!(stream, chunking, splice, normalize, differential, framing, xml, embedded, bounds);

/// The seeds of the `embedded` target are records a rule matches through the event their
/// string member holds (so the fuzzer starts from records read that way).
#[test]
fn embedded_seeds_are_detections() {
    let tagger = crate::support::builtin_tagger();
    for name in ["shell-xml", "shell-json"] {
        let data = std::fs::read(repo("fuzz/seeds/embedded").join(name)).expect("seed");
        let line = fuzz_checks::embedded_line(&data).expect("a record");
        let (out, stats) = tagger.tag_all(line.as_bytes());
        assert_eq!(stats.annotated, 1, "{name}: {line}");
        assert_eq!(stats.embedded_events, 1, "{name}");
        assert!(String::from_utf8_lossy(&out).contains("webshell_child_process"), "{name}");
    }
}
