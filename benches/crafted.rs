//! Crafted records: what an attacker who controls command lines, file names and registry
//! values can put in one event to make a tagger slow or big. Used by the adversarial
//! benchmark (`benches/adversarial.rs`) and by the regression tests of the bounds
//! (`tests/it/crafted.rs`).
//!
//! Each case is one line of at most `size` bytes (the default line limit is 1 MiB, so a
//! case of that size is inspected). Process-creation records of the Sysmon channel with a
//! web-server parent, so that the rules of that log source read them.

/// The rule sets the benchmarks measure crafted records with: the built-ins, and with `sigma`
/// (a folder of SigmaHQ rules) those added to them.
pub fn rule_sets(sigma: Option<&std::path::Path>) -> Vec<(&'static str, iis_tagger::Tagger)> {
    use iis_tagger::{Config, RuleSet, RuleSetBuilder, Tagger};
    let builtins = Tagger::new(RuleSet::builtin().expect("built-ins"), Config::default()).expect("tagger");
    let mut sets = vec![("built-in rules", builtins)];
    if let Some(dir) = sigma {
        let mut b = RuleSetBuilder::new();
        b.add_builtin().expect("built-ins");
        b.add_path(dir).expect("SigmaHQ rules load");
        sets.push(("SigmaHQ rules + built-ins", Tagger::new(b.build(), Config::default()).expect("tagger")));
    }
    sets
}

/// The cases for `tagger` (its trigger literals planted in `every-literal`), each at most
/// `size` bytes; only the one named `only` when given.
pub fn cases_for(tagger: &iis_tagger::Tagger, size: usize, only: Option<&str>) -> Vec<Case> {
    let literals: Vec<String> = tagger.prefilter().trigger_literals().map(|l| l.text.clone()).collect();
    let mut cases = cases(size, &literals);
    if let Some(only) = only {
        cases.retain(|c| c.name == only);
    }
    cases
}

/// A crafted case: its name, what it does, and the line.
pub struct Case {
    /// Short name.
    pub name: &'static str,
    /// What the line holds.
    pub what: &'static str,
    /// The record (no `\n`).
    pub line: Vec<u8>,
}

const HEAD: &str = r#"{"EventID":1,"Channel":"Microsoft-Windows-Sysmon/Operational","Computer":"WEB01","#;
const W3WP: &str = r#""ParentImage":"C:\\Windows\\System32\\inetsrv\\w3wp.exe""#;

/// `HEAD`, then members from `member(i)` until the line would pass `size`, then `tail`.
fn repeat(size: usize, head: &str, tail: &str, mut member: impl FnMut(usize) -> String) -> Vec<u8> {
    let mut line = String::from(head);
    let mut i = 0;
    loop {
        let m = member(i);
        if line.len() + m.len() + tail.len() + 2 > size {
            break;
        }
        line.push_str(&m);
        i += 1;
    }
    line.push_str(tail);
    line.into_bytes()
}

/// A JSON string of `n` copies of `unit` (already JSON text).
fn run_of(unit: &str, budget: usize) -> String {
    unit.repeat(budget / unit.len().max(1))
}

/// At most `budget` bytes of characters that have a compatibility form, ~1,900 distinct
/// ones in turn (squared katakana words, CJK compatibility ideographs, mathematical
/// letters), more than the per-character caches hold.
fn distinct_compat(budget: usize) -> String {
    let chars: Vec<char> = (0x3300..=0x33FFu32)
        .chain(0xF900..=0xFAD9)
        .chain(0x1D400..=0x1D6A3)
        .filter_map(char::from_u32)
        .filter(|c| iis_tagger::normalize::compat(c.encode_utf8(&mut [0; 4])) != c.to_string())
        .collect();
    let mut s = String::new();
    for c in chars.iter().cycle() {
        if s.len() + c.len_utf8() > budget {
            break;
        }
        s.push(*c);
    }
    s
}

/// The cases, each at most `size` bytes. `literals` are rule literals (as they appear in
/// JSON text) to plant, for the case that holds every one of them.
pub fn cases(size: usize, literals: &[String]) -> Vec<Case> {
    let budget = size.saturating_sub(400);
    let process = |image: &str, fields: &str| format!(r#"{HEAD}"Image":"{image}",{W3WP},{fields}}}"#).into_bytes();
    let mut all_literals = String::new();
    for l in literals {
        if all_literals.len() + l.len() + 1 > budget / 2 {
            break;
        }
        all_literals.push_str(l);
        all_literals.push(' ');
    }
    vec![
        Case {
            name: "duplicate-keys",
            what: "User and ParentUser duplicated, all one value (a fieldref filter that holds)",
            line: repeat(size, &format!("{HEAD}\"Image\":\"C:\\\\Windows\\\\notepad.exe\",{W3WP}"), "}", |_| {
                r#","User":"CORP\\alice","ParentUser":"CORP\\alice""#.to_string()
            }),
        },
        Case {
            name: "duplicate-keys-distinct",
            what: "User and ParentUser duplicated, every value different (a fieldref pair)",
            line: repeat(size, &format!("{HEAD}\"Image\":\"C:\\\\Windows\\\\notepad.exe\",{W3WP}"), "}", |i| {
                format!(r#","User":"CORP\\u{i}","ParentUser":"CORP\\p{i}""#)
            }),
        },
        Case {
            name: "expanding-image",
            what: "Image of U+FDFA (NFKC: 18 characters each) ending \\cmd.exe",
            line: process(&format!("C:\\\\{}\\\\cmd.exe", "\u{FDFA}".repeat(budget / 3)), r#""CommandLine":"cmd""#),
        },
        Case {
            name: "expanding-path-32k",
            what: "a 32,130-character Image of U+FDFA, as long as Windows allows",
            line: process(&format!("C:\\\\{}\\\\cmd.exe", "\u{FDFA}".repeat(32_120)), r#""CommandLine":"cmd""#),
        },
        Case {
            name: "distinct-compat",
            what: "Image of ~1,900 distinct characters with compatibility forms in turn (more than any cache of recent characters holds)",
            line: process(&format!("C:\\\\{}\\\\cmd.exe", distinct_compat(budget)), r#""CommandLine":"cmd""#),
        },
        Case {
            name: "array-of-strings",
            what: "CommandLine an array of distinct strings, rule literals in the other fields",
            line: repeat(
                size,
                &format!(
                    "{HEAD}\"Image\":\"C:\\\\Windows\\\\System32\\\\inetsrv\\\\appcmd.exe\",\"OriginalFileName\":\"appcmd.exe\",{W3WP},\"CommandLine\":[\"appcmd\""
                ),
                "]}",
                |i| format!(",\"a{i} install module /text:x\""),
            ),
        },
        Case {
            name: "array-of-ones",
            what: "CommandLine an array of the number 1",
            line: repeat(
                size,
                &format!("{HEAD}\"Image\":\"C:\\\\Windows\\\\cmd.exe\",{W3WP},\"CommandLine\":[1"),
                "]}",
                |_| ",1".to_string(),
            ),
        },
        Case {
            name: "array-of-numbers",
            what: "CommandLine an array of distinct numbers",
            line: repeat(
                size,
                &format!("{HEAD}\"Image\":\"C:\\\\Windows\\\\cmd.exe\",{W3WP},\"CommandLine\":[1"),
                "]}",
                |i| format!(",{i}"),
            ),
        },
        Case {
            name: "many-arguments",
            what: "a command line of one-letter arguments (each an argument occurrence)",
            line: process(
                "C:\\\\Windows\\\\System32\\\\cmd.exe",
                &format!(r#""CommandLine":"cmd /c {}""#, run_of("a ", budget)),
            ),
        },
        Case {
            name: "windash-storm",
            what: "a command line of windash characters (- / en dash, em dash, horizontal bar)",
            line: process(
                "C:\\\\Windows\\\\System32\\\\cmd.exe",
                &format!(r#""CommandLine":"cmd {}""#, run_of("-/\u{2013}\u{2014}\u{2015} ", budget)),
            ),
        },
        Case {
            name: "quote-storm",
            what: "a command line of quotes and carets, cmd.exe as the process",
            line: process(
                "C:\\\\Windows\\\\System32\\\\cmd.exe",
                &format!(r#""CommandLine":"cmd {}""#, run_of("\\\"^", budget)),
            ),
        },
        Case {
            name: "escape-storm",
            what: "a command line written in \\u escapes",
            line: process(
                "C:\\\\Windows\\\\System32\\\\cmd.exe",
                &format!(r#""CommandLine":"{}""#, run_of("\\u0061\\u0070\\u0070\\u0063\\u006d\\u0064 ", budget)),
            ),
        },
        Case {
            name: "path-tricks",
            what: "an Image of .., doubled separators, %variables% and 8.3 names",
            line: process(&run_of("..\\\\\\\\%SystemRoot%\\\\PROGRA~1\\\\.\\\\", budget), r#""CommandLine":"x""#),
        },
        Case {
            name: "every-literal",
            what: "every rule literal at once, in the command line and the image",
            line: process(
                &format!("C:\\\\{}", all_literals.replace('"', "")),
                &format!(r#""CommandLine":"{}""#, all_literals.replace('"', "")),
            ),
        },
        Case {
            name: "many-values",
            what: "many nested objects of distinct strings (every value a keyword occurrence)",
            line: repeat(size, &format!("{HEAD}\"Image\":\"C:\\\\Windows\\\\cmd.exe\",{W3WP}"), "}", |i| {
                format!(r#","x{i}":{{"y":["v{i} powershell -enc","w{i}"]}}"#)
            }),
        },
        Case {
            name: "deep-nesting",
            what: "an array nested as deep as the line allows",
            line: format!(
                "{HEAD}\"Image\":\"C:\\\\Windows\\\\cmd.exe\",{W3WP},\"x\":{}{}}}",
                "[".repeat(budget / 2),
                "]".repeat(budget / 2)
            )
            .into_bytes(),
        },
        Case {
            name: "lone-surrogates",
            what: "lone surrogate escapes (the repaired copy)",
            line: process(
                "C:\\\\Windows\\\\System32\\\\cmd.exe",
                &format!(r#""CommandLine":"{}""#, run_of("\\ud800", budget)),
            ),
        },
        Case {
            name: "huge-numbers",
            what: "numbers out of range (the repaired copy)",
            line: repeat(
                size,
                &format!("{HEAD}\"Image\":\"C:\\\\Windows\\\\cmd.exe\",{W3WP},\"n\":[1e400"),
                "]}",
                |_| ",1e400".to_string(),
            ),
        },
        Case {
            name: "xml-markup-lines",
            what: "short Windows XML lines, each with a character reference (repeated: many per read)",
            line: b"<Event><System><EventID>1</EventID></System><EventData><Data Name='Image'>c&#58;\\x</Data></EventData></Event>"
                .to_vec(),
        },
    ]
}
