//! Properties over random and adversarial streams: the record contract holds (line count,
//! byte identity once the annotation is removed, annotated lines valid JSON), the output
//! does not depend on how the input is cut into reads, and the prefilter changes nothing.

use iis_tagger::{Config, RuleSet, Tagger};
use proptest::prelude::*;

use crate::support::{SHAPES, SYSMON, assert_contract, event};

/// An event id, its channel and its fields.
type Template = (i64, &'static str, &'static [(&'static str, &'static str)]);

/// Records that match a built-in rule.
const POSITIVES: &[Template] = &[
    (1, SYSMON, &[("Image", r"C:\Windows\System32\cmd.exe"), ("ParentImage", r"C:\Windows\System32\inetsrv\w3wp.exe")]),
    (
        1,
        SYSMON,
        &[("Image", r"C:\Windows\System32\inetsrv\appcmd.exe"), ("CommandLine", "appcmd list apppool /text:password")],
    ),
    (
        1,
        SYSMON,
        &[("Image", r"C:\Windows\System32\inetsrv\appcmd.exe"), ("CommandLine", "appcmd install module /image:x.dll")],
    ),
    (
        4688,
        "Security",
        &[
            ("NewProcessName", r"C:\Windows\System32\nltest.exe"),
            ("ParentProcessName", r"C:\Windows\System32\msiexec.exe"),
        ],
    ),
    (29, "Microsoft-IIS-Configuration/Operational", &[("NewValue", "x")]),
    (11, SYSMON, &[("Image", r"C:\x\cmd.exe"), ("TargetFilename", r"C:\inetpub\wwwroot\s.aspx")]),
    (
        13,
        SYSMON,
        &[
            ("Image", r"C:\x\reg.exe"),
            ("TargetObject", r"HKLM\SYSTEM\CurrentControlSet\Services\W3SVC\x"),
            ("Details", "a.dll"),
        ],
    ),
];

fn positive() -> impl Strategy<Value = Vec<u8>> {
    (0..POSITIVES.len(), 0..SHAPES.len(), any::<bool>()).prop_map(|(i, s, syslog)| {
        let (eid, channel, fields) = POSITIVES[i];
        let line = event(SHAPES[s], eid, channel, fields);
        let line = if syslog { format!("<13>1 2024-03-01T00:00:00Z h app - - - {line}") } else { line };
        line.into_bytes()
    })
}

/// JSON text fragments, hostile ones included (escapes, lone surrogates, quotes,
/// non-ASCII, look-alikes, the annotation key itself).
const PIECES: &[&str] = &[
    "appcmd.exe",
    r"C:\\Windows\\System32\\inetsrv\\",
    "w3wp.exe",
    "cmd.exe",
    r"\u0061ppcmd.exe",
    r"w3wp\u002eexe",
    r"\/",
    r#"\""#,
    r"\\",
    r"\ud800",
    r"\udc00x",
    r"\ud83d\ude00",
    "é",
    "\u{212A}",
    " list ",
    " /text:x",
    "install module image",
    r"\\inetpub\\wwwroot\\a.aspx",
    "msiexec.exe",
    "\t",
    r"\n",
    "Microsoft-Windows-Sysmon/Operational",
    "iis_tagger",
];
const KEYS: &[&str] = &[
    "EventID",
    "Channel",
    "Image",
    "ParentImage",
    "CommandLine",
    "OriginalFileName",
    "TargetFilename",
    "TargetObject",
    "Details",
    "iis_tagger",
    "x",
    "image",
    "Event",
];

fn json_string() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(PIECES), 0..5).prop_map(|p| format!("\"{}\"", p.concat()))
}

fn json_value() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        json_string(),
        Just("1".to_string()),
        Just("4688".to_string()),
        Just("29".to_string()),
        Just("null".to_string()),
        Just("true".to_string()),
        Just("-0.5e3".to_string()),
        Just("18446744073709551616".to_string()),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(|v| format!("[{}]", v.join(","))),
            prop::collection::vec((prop::sample::select(KEYS), inner), 0..5).prop_map(|kv| {
                let members: Vec<String> = kv.into_iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
                format!("{{{}}}", members.join(","))
            }),
        ]
    })
}

fn hostile_object() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::collection::vec((prop::sample::select(KEYS), json_value()), 0..8),
        prop::sample::select(&[" ", "", "\r", " \t"][..]),
    )
        .prop_map(|(kv, tail)| {
            let members: Vec<String> = kv.into_iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
            format!("{{{}}}{tail}", members.join(",")).into_bytes()
        })
}

fn line() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => positive(),
        3 => hostile_object(),
        2 => prop::collection::vec(any::<u8>(), 0..80),
        1 => prop::sample::select(vec![Vec::new(), b"\r".to_vec(), b"\xEF\xBB\xBF{}".to_vec(), b"\0{\"a\":1}".to_vec()]),
    ]
}

fn stream() -> impl Strategy<Value = Vec<u8>> {
    (prop::collection::vec(line(), 0..24), any::<bool>()).prop_map(|(lines, final_newline)| {
        let mut s = lines.join(&b'\n');
        if final_newline && !s.is_empty() {
            s.push(b'\n');
        }
        s
    })
}

fn tagger(max_line_bytes: usize, prefilter: bool) -> Tagger {
    let config = Config { max_line_bytes, prefilter, ..Config::default() };
    Tagger::new(RuleSet::builtin().expect("rules"), config).expect("tagger")
}

fn chunked(tagger: &Tagger, input: &[u8], cuts: &[usize]) -> Vec<u8> {
    let mut stream = tagger.stream();
    let mut out = Vec::new();
    let mut at = 0;
    for &cut in cuts {
        let cut = cut.clamp(at, input.len());
        stream.feed(&input[at..cut], &mut out);
        at = cut;
    }
    stream.feed(&input[at..], &mut out);
    stream.finish(&mut out);
    out
}

fn fixed_chunks(tagger: &Tagger, input: &[u8], size: usize) -> Vec<u8> {
    let cuts: Vec<usize> = (1..).map(|i| i * size).take_while(|&c| c < input.len()).collect();
    chunked(tagger, input, &cuts)
}

/// Writes `value` as JSON, escaping string characters as `\uXXXX` (or `/` as `\/`)
/// wherever the next bit of `bits` says so, keys included.
fn write_escaped(value: &serde_json::Value, bits: &mut impl Iterator<Item = bool>, out: &mut String) {
    use serde_json::Value;
    let string = |s: &str, bits: &mut dyn Iterator<Item = bool>, out: &mut String| {
        out.push('"');
        for c in s.chars() {
            let plain = serde_json::to_string(&c.to_string()).expect("char");
            let plain = &plain[1..plain.len() - 1];
            if bits.next().unwrap_or(false) {
                if c == '/' {
                    out.push_str("\\/");
                } else {
                    let mut units = [0u16; 2];
                    for u in c.encode_utf16(&mut units) {
                        out.push_str(&format!("\\u{u:04X}"));
                    }
                }
            } else {
                out.push_str(plain);
            }
        }
        out.push('"');
    };
    match value {
        Value::String(s) => string(s, bits, out),
        Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_escaped(v, bits, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (i, (k, v)) in map.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                string(k, bits, out);
                out.push(':');
                write_escaped(v, bits, out);
            }
            out.push('}');
        }
        other => out.push_str(&other.to_string()),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn json_escapes_never_hide_a_detection(i in 0..POSITIVES.len(), s in 0..SHAPES.len(), bits in prop::collection::vec(prop::bool::weighted(0.2), 0..2000)) {
        let (eid, channel, fields) = POSITIVES[i];
        let plain = event(SHAPES[s], eid, channel, fields);
        let value: serde_json::Value = serde_json::from_str(&plain).expect("json");
        let mut escaped = String::new();
        write_escaped(&value, &mut bits.into_iter(), &mut escaped);
        prop_assert_eq!(serde_json::from_str::<serde_json::Value>(&escaped).expect("still json"), value);
        let t = tagger(1 << 20, true);
        let want = crate::support::detections(&t.tag_all(plain.as_bytes()).0, "iis_tagger");
        let got = crate::support::detections(&t.tag_all(escaped.as_bytes()).0, "iis_tagger");
        prop_assert!(!want[0].is_empty());
        prop_assert_eq!(got, want, "{}", escaped);
    }

    #[test]
    fn contract_chunking_and_prefilter(input in stream(), mut cuts in prop::collection::vec(0usize..4000, 0..12)) {
        for max in [1 << 20, 48, 300] {
            let with = tagger(max, true);
            let (output, stats) = with.tag_all(&input);
            assert_contract(&input, &output, "iis_tagger");
            prop_assert_eq!(stats.bytes as usize, input.len());
            cuts.sort_unstable();
            prop_assert_eq!(&chunked(&with, &input, &cuts), &output, "random reads, max {}", max);
            for size in [1, 7, 4096] {
                prop_assert_eq!(&fixed_chunks(&with, &input, size), &output, "reads of {} bytes, max {}", size, max);
            }
            let (full, _) = tagger(max, false).tag_all(&input);
            prop_assert_eq!(&full, &output, "prefilter on and off, max {}", max);
        }
    }

    #[test]
    fn every_positive_is_detected_in_any_stream_position(before in stream(), line in positive(), after in stream()) {
        let mut input = before.clone();
        if !input.is_empty() && !input.ends_with(b"\n") {
            input.push(b'\n');
        }
        input.extend_from_slice(&line);
        input.push(b'\n');
        input.extend_from_slice(&after);
        let (output, _) = tagger(1 << 20, true).tag_all(&input);
        let index = crate::support::split_lines(&input).iter().position(|l| *l == &line[..]).expect("present");
        let out_line = crate::support::split_lines(&output)[index];
        prop_assert!(out_line.windows(13).any(|w| w == b"\"iis_tagger\":"), "{}", String::from_utf8_lossy(out_line));
    }
}

#[test]
fn already_annotated_records_get_no_second_annotation() {
    let t = tagger(1 << 20, true);
    let line = event(SHAPES[0], 1, SYSMON, POSITIVES[0].2);
    let (once, _) = t.tag_all(line.as_bytes());
    let (twice, stats) = t.tag_all(&once);
    assert_eq!(once, twice);
    assert_eq!(stats.not_inspected.already_annotated, 1);
    assert_eq!(stats.annotated, 0);
}

#[test]
fn oversized_lines_stream_through_whole_in_any_chunking() {
    let t = tagger(64, true);
    let long = event(SHAPES[0], 1, SYSMON, POSITIVES[0].2);
    assert!(long.len() > 64);
    let input = format!("{long}\n{{}}\n{long}");
    for size in [1, 3, 64, 65, 100, 4096] {
        let out = fixed_chunks(&t, input.as_bytes(), size);
        assert_eq!(out, input.as_bytes(), "reads of {size}");
    }
    let (_, stats) = t.tag_all(input.as_bytes());
    assert_eq!((stats.lines, stats.not_inspected.oversized), (3, 2));
}
