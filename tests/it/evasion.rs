//! Detection cannot be switched off by spelling. Each case is a record that a rule matches;
//! the property applies random stacks of the rewrites an attacker (or a shipper) can make
//! without changing what Windows does — case, compatibility forms, path spellings, 8.3
//! names, inserted quotes, blanks, option dashes, cmd carets, JSON escapes, key case,
//! whitespace, numbers as strings, duplicate keys with decoy values, a syslog header, parser
//! hazards in another member; in Windows XML, character references, CDATA sections, quotes,
//! comments and whitespace; the XML held in a JSON string (JSON escapes over XML
//! references), and a JSON record held in a JSON string — and requires the detection every
//! time, with the prefilter on and off.

use iis_tagger::{Config, RuleSetBuilder, Tagger};
use proptest::prelude::*;

use crate::support::{SYSMON, detections};

/// A JSON value that may hold duplicate keys, written by [`Writer`].
#[derive(Clone, Debug)]
enum J {
    Obj(Vec<(String, J)>),
    Str(String),
    Int(i64),
    Arr(Vec<J>),
    /// Written as is (parser hazards).
    Raw(String),
}

/// How an attacker-controlled field may be respelled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Class {
    Path,
    CommandLine,
    Text,
    /// Written by the system, not the attacker: only JSON-level rewrites.
    Fixed,
}

fn class(field: &str) -> Class {
    match field {
        "Image" | "ParentImage" | "TargetFilename" => Class::Path,
        "CommandLine" => Class::CommandLine,
        "Details" | "OriginalFileName" => Class::Text,
        _ => Class::Fixed,
    }
}

/// A record a rule matches.
struct Case {
    expect: &'static str,
    /// Process creation: also written as Security 4688.
    process: bool,
    eid: i64,
    channel: &'static str,
    fields: &'static [(&'static str, &'static str)],
    /// Values that, alone, would make the rule not match; added as duplicate keys.
    decoys: &'static [(&'static str, &'static str)],
    /// The process is cmd.exe: carets are escapes in its command line.
    cmd: bool,
    /// The rule takes the options of the command line with any dash (`windash`).
    windash: bool,
}

const CASES: &[Case] = &[
    Case {
        expect: "test_command_line_only",
        process: true,
        eid: 1,
        channel: SYSMON,
        fields: &[
            ("Image", r"C:\Users\Public\m.exe"),
            ("CommandLine", r#"m.exe "privilege::debug" "sekurlsa::logonpasswords" exit"#),
        ],
        decoys: &[("CommandLine", "m.exe coffee")],
        cmd: false,
        windash: false,
    },
    Case {
        expect: "webshell_child_process",
        process: true,
        eid: 1,
        channel: SYSMON,
        fields: &[
            ("Image", r"C:\Windows\System32\WindowsPowerShell\v1.0\powershell.exe"),
            ("CommandLine", "powershell.exe -nop -w hidden -c iex $x"),
            ("ParentImage", r"C:\Windows\System32\inetsrv\w3wp.exe"),
        ],
        decoys: &[("ParentImage", r"C:\Windows\explorer.exe"), ("Image", r"C:\Windows\notepad.exe")],
        cmd: false,
        windash: false,
    },
    Case {
        expect: "webshell_child_process",
        process: true,
        eid: 1,
        channel: SYSMON,
        fields: &[
            ("Image", r"C:\Windows\System32\cmd.exe"),
            ("ParentImage", r"C:\Program Files\Apache Software Foundation\Tomcat 9.0\bin\Tomcat9.exe"),
        ],
        decoys: &[("ParentImage", r"C:\Windows\explorer.exe")],
        cmd: true,
        windash: false,
    },
    Case {
        expect: "webshell_child_discovery",
        process: true,
        eid: 1,
        channel: SYSMON,
        fields: &[
            ("Image", r"C:\Windows\System32\whoami.exe"),
            ("CommandLine", "whoami /all"),
            ("ParentImage", r"C:\Windows\System32\inetsrv\w3wp.exe"),
        ],
        decoys: &[("Image", r"C:\Windows\System32\notepad.exe")],
        cmd: false,
        windash: false,
    },
    Case {
        expect: "windows_iis_components_add_new_module",
        process: true,
        eid: 1,
        channel: SYSMON,
        fields: &[
            ("Image", r"C:\Windows\System32\inetsrv\appcmd.exe"),
            ("CommandLine", r"appcmd.exe install module /name:Backdoor /image:C:\Windows\Temp\mod.dll"),
            ("ParentImage", r"C:\Windows\System32\WindowsPowerShell\v1.0\powershell.exe"),
        ],
        decoys: &[("ParentImage", r"C:\Windows\System32\msiexec.exe"), ("CommandLine", "appcmd.exe list sites")],
        cmd: false,
        windash: false,
    },
    Case {
        expect: "microsoft_iis_service_account_password_dumped",
        process: true,
        eid: 1,
        channel: SYSMON,
        fields: &[
            ("Image", r"C:\Windows\System32\inetsrv\appcmd.exe"),
            ("CommandLine", r#""C:\Windows\System32\inetsrv\appcmd.exe" list apppool /text:processModel.password"#),
        ],
        decoys: &[("CommandLine", "appcmd.exe help"), ("Image", r"C:\Windows\System32\notepad.exe")],
        cmd: false,
        windash: true,
    },
    Case {
        // A renamed appcmd: only its PE original file name tells (Elastic reads it).
        expect: "microsoft_iis_service_account_password_dumped",
        process: false,
        eid: 1,
        channel: SYSMON,
        fields: &[
            ("Image", r"C:\Users\Public\svc.exe"),
            ("OriginalFileName", "appcmd.exe"),
            ("CommandLine", r"C:\Users\Public\svc.exe list vdir /text:*"),
        ],
        decoys: &[("OriginalFileName", "svc.exe")],
        cmd: false,
        windash: true,
    },
    Case {
        expect: "windows_iis_components_new_module_added",
        process: false,
        eid: 29,
        channel: "Microsoft-IIS-Configuration/Operational",
        fields: &[("NewValue", "Backdoor")],
        decoys: &[],
        cmd: false,
        windash: false,
    },
    Case {
        expect: "suspicious_web_file_written",
        process: false,
        eid: 11,
        channel: SYSMON,
        fields: &[
            ("Image", r"C:\Windows\System32\WindowsPowerShell\v1.0\powershell.exe"),
            ("TargetFilename", r"C:\inetpub\wwwroot\aspnet_client\shell.aspx"),
        ],
        decoys: &[("Image", r"C:\Windows\System32\msiexec.exe")],
        cmd: false,
        windash: false,
    },
    Case {
        expect: "suspicious_web_file_written",
        process: false,
        eid: 11,
        channel: SYSMON,
        fields: &[
            ("Image", r"C:\Windows\System32\cmd.exe"),
            ("TargetFilename", r"D:\sites\public_html\up\index.phtml"),
        ],
        decoys: &[("Image", r"C:\Windows\System32\robocopy.exe")],
        cmd: false,
        windash: false,
    },
    Case {
        expect: "iis_module_registered",
        process: false,
        eid: 13,
        channel: SYSMON,
        fields: &[
            ("Image", r"C:\Windows\regedit.exe"),
            ("TargetObject", r"HKLM\SYSTEM\CurrentControlSet\Services\W3SVC\Parameters\Backdoor"),
            ("Details", r"C:\Windows\Temp\mod.dll"),
        ],
        decoys: &[("Image", r"C:\Windows\System32\msiexec.exe"), ("Details", "DWORD (0x00000001)")],
        cmd: false,
        windash: false,
    },
    Case {
        expect: "windows_msiexec_spawn_discovery_command",
        process: true,
        eid: 1,
        channel: SYSMON,
        fields: &[("Image", r"C:\Windows\System32\ipconfig.exe"), ("ParentImage", r"C:\Windows\System32\msiexec.exe")],
        decoys: &[("ParentImage", r"C:\Windows\explorer.exe")],
        cmd: false,
        windash: false,
    },
    Case {
        // Read by the test rule below: cmd's carets and quotes are respelling.
        expect: "test_cmd_whoami_all",
        process: true,
        eid: 1,
        channel: SYSMON,
        fields: &[("Image", r"C:\Windows\System32\cmd.exe"), ("CommandLine", "cmd.exe /c whoami /all")],
        decoys: &[("CommandLine", "cmd.exe /c dir")],
        cmd: true,
        windash: false,
    },
];

/// A rule on cmd.exe's command line, for the caret rewrites (no built-in rule reads it).
const CMD_RULE: &str = r"
title: Test cmd whoami /all
name: test_cmd_whoami_all
level: high
logsource:
  category: process_creation
  product: windows
detection:
  selection:
    Image|endswith: '\cmd.exe'
    CommandLine|contains: 'whoami /all'
  condition: selection
";

/// A rule that reads nothing but the command line: the prefilter's only literals for it
/// are in the deleted text.
const CMDLINE_RULE: &str = r"
title: Test command line only
name: test_command_line_only
level: high
logsource:
  category: process_creation
  product: windows
detection:
  selection:
    CommandLine|contains|all:
      - 'sekurlsa::logonpasswords'
      - 'privilege::debug'
  condition: selection
";

/// A rule the prefilter gets no literal from: with it loaded, every line is parsed and
/// routed by log source first (the path the SigmaHQ rule set takes). It never matches.
const NO_LITERAL_RULE: &str = r"
title: Test no literal
name: test_no_literal
level: low
logsource:
  product: windows
detection:
  selection:
    NoSuchField|exists: true
  condition: selection
";

/// The built-ins and the test rules: with the prefilter on, off, and on in its
/// every-line (routed) mode.
fn taggers() -> &'static [Tagger; 3] {
    static TAGGERS: std::sync::OnceLock<[Tagger; 3]> = std::sync::OnceLock::new();
    TAGGERS.get_or_init(|| {
        [(true, false), (false, false), (true, true)].map(|(prefilter, routed)| {
            let mut b = RuleSetBuilder::new();
            b.add_builtin().expect("built-ins");
            b.add_source("cmd.yml", "cmd", CMD_RULE).expect("test rule");
            b.add_source("cmdline.yml", "cmdline", CMDLINE_RULE).expect("test rule");
            if routed {
                b.add_source("none.yml", "none", NO_LITERAL_RULE).expect("test rule");
            }
            let t = Tagger::new(b.build(), Config { prefilter, ..Config::default() }).expect("tagger");
            assert_eq!(t.prefilter().examines_every_line(), routed);
            t
        })
    })
}

/// A small deterministic generator for the choices inside a rewrite.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// A value rewrite. Path steps keep the path Windows resolves; command-line steps keep the
/// arguments the program receives (and, for cmd, what cmd runs).
#[derive(Clone, Copy, Debug)]
enum Step {
    Case,
    Fullwidth,
    Slash,
    Double,
    Variable,
    Trailing,
    Short,
    Quote,
    Blank,
    Dash,
    Caret,
}

const STEPS: [Step; 11] = [
    Step::Case,
    Step::Fullwidth,
    Step::Slash,
    Step::Double,
    Step::Variable,
    Step::Trailing,
    Step::Short,
    Step::Quote,
    Step::Blank,
    Step::Dash,
    Step::Caret,
];

fn flip_case(s: &str, rng: &mut Rng) -> String {
    s.chars()
        .map(|c| {
            if !rng.one_in(2) {
                c
            } else if c.is_ascii_lowercase() {
                c.to_ascii_uppercase()
            } else {
                c.to_ascii_lowercase()
            }
        })
        .collect()
}

/// Replaces some printable ASCII characters (other than those in `keep`) by their fullwidth
/// forms (U+FF01–U+FF5E).
fn fullwidth(s: &str, keep: &str, rng: &mut Rng) -> String {
    s.chars()
        .map(|c| match c {
            '!'..='~' if !keep.contains(c) && rng.one_in(3) => {
                char::from_u32(c as u32 - 0x21 + 0xFF01).expect("fullwidth form")
            }
            c => c,
        })
        .collect()
}

/// The 8.3 short name of a long ASCII name (`~N` with N from 1 to 4), if it has one.
fn short_name(name: &str, rng: &mut Rng) -> Option<String> {
    if name.ends_with(['.', ' ']) {
        return None;
    }
    let (stem, ext) = name.rsplit_once('.').filter(|(s, _)| !s.is_empty()).unwrap_or((name, ""));
    let plain = |s: &str| s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if (stem.len() <= 8 && ext.len() <= 3 && plain(stem) && plain(ext)) || !name.is_ascii() {
        return None;
    }
    let clean = |s: &str| -> String { s.chars().filter(|c| *c != ' ' && *c != '.').collect() };
    let base: String = clean(stem).chars().take(6).collect();
    let ext: String = clean(ext).chars().take(3).collect();
    let n = 1 + rng.below(4);
    let short = if ext.is_empty() { format!("{base}~{n}") } else { format!("{base}~{n}.{ext}") };
    Some(short.to_ascii_uppercase())
}

/// Rewrites a path. Components are rewritten one by one; separators are `\` or `/`.
fn path_step(step: Step, value: &str, rng: &mut Rng) -> String {
    match step {
        Step::Case => flip_case(value, rng),
        Step::Fullwidth => fullwidth(value, "", rng),
        Step::Slash => value.chars().map(|c| if c == '\\' && rng.one_in(2) { '/' } else { c }).collect(),
        Step::Double => {
            let mut out = String::new();
            for (i, c) in value.chars().enumerate() {
                out.push(c);
                // Not the first separator: a leading `\\` would make a UNC path.
                if (c == '\\' || c == '/') && i > 0 && rng.one_in(2) {
                    out.push(c);
                }
            }
            out
        }
        Step::Variable => {
            for (prefix, vars) in [
                (r"C:\Windows\", &["%SystemRoot%\\", "%windir%\\", "%SYSTEMROOT%\\", r"\SystemRoot\"][..]),
                (r"C:\Program Files\", &["%ProgramFiles%\\", "%programfiles%\\"][..]),
            ] {
                if value.get(..prefix.len()).is_some_and(|head| head.eq_ignore_ascii_case(prefix)) {
                    return format!("{}{}", rng.pick(vars), &value[prefix.len()..]);
                }
            }
            value.to_string()
        }
        Step::Trailing => map_components(
            value,
            |name, last, rng| {
                if (last || rng.one_in(3)) && name.contains(|c: char| c.is_alphanumeric()) {
                    format!("{name}{}", rng.pick(&[".", " ", ". .", "..", " ."]))
                } else {
                    name.to_string()
                }
            },
            rng,
        ),
        Step::Short => map_components(
            value,
            |name, _, rng| match short_name(name, rng) {
                Some(short) if rng.one_in(2) || name.len() > 8 => short,
                _ => name.to_string(),
            },
            rng,
        ),
        _ => value.to_string(),
    }
}

/// Applies `f` to each component of a path (not to drive letters or `%VAR%`).
fn map_components(value: &str, f: impl Fn(&str, bool, &mut Rng) -> String, rng: &mut Rng) -> String {
    let mut out = String::new();
    let mut name = String::new();
    let flush = |name: &mut String, out: &mut String, last: bool, rng: &mut Rng| {
        let skip = name.is_empty() || name.ends_with(':') || name.contains('%') || name.contains('?');
        out.push_str(&if skip { name.clone() } else { f(name, last, rng) });
        name.clear();
    };
    for c in value.chars() {
        // The fullwidth separators too: the resolved reading folds them to `\` and `/`, so
        // a `..` put after one would climb a level, not respell a name.
        if matches!(c, '\\' | '/' | '\u{FF3C}' | '\u{FF0F}') {
            flush(&mut name, &mut out, false, rng);
            out.push(c);
        } else {
            name.push(c);
        }
    }
    flush(&mut name, &mut out, true, rng);
    out
}

/// A command line as tokens; each token is pieces of text, quoted or not. Rewrites keep the
/// arguments `CommandLineToArgvW` gives: quotes are only put around text that neither ends
/// in nor follows a backslash, and carets only before characters of unquoted text.
#[derive(Clone, Debug)]
struct CommandLine {
    tokens: Vec<Vec<(String, bool)>>,
    blanks: Vec<String>,
}

impl CommandLine {
    fn parse(s: &str) -> CommandLine {
        let mut tokens = Vec::new();
        let mut rest = s;
        while !rest.is_empty() {
            rest = rest.trim_start();
            if let Some(q) = rest.strip_prefix('"') {
                let end = q.find('"').expect("closed quote");
                tokens.push(vec![(q[..end].to_string(), true)]);
                rest = &q[end + 1..];
            } else if !rest.is_empty() {
                let end = rest.find(' ').unwrap_or(rest.len());
                tokens.push(vec![(rest[..end].to_string(), false)]);
                rest = &rest[end..];
            }
        }
        let blanks = vec![" ".to_string(); tokens.len().saturating_sub(1)];
        CommandLine { tokens, blanks }
    }

    fn write(&self) -> String {
        let mut out = String::new();
        for (i, token) in self.tokens.iter().enumerate() {
            if i > 0 {
                out.push_str(&self.blanks[i - 1]);
            }
            for (text, quoted) in token {
                if *quoted {
                    out.push('"');
                    out.push_str(text);
                    out.push('"');
                } else {
                    out.push_str(text);
                }
            }
        }
        out
    }

    fn texts(&mut self, mut f: impl FnMut(&str, bool) -> String) {
        for token in &mut self.tokens {
            for (text, quoted) in token.iter_mut() {
                *text = f(text, *quoted);
            }
        }
    }

    fn step(&mut self, step: Step, case: &Case, rng: &mut Rng) {
        match step {
            Step::Case => self.texts(|t, _| flip_case(t, rng)),
            Step::Fullwidth => self.texts(|t, _| fullwidth(t, "\\\"^", rng)),
            Step::Blank => {
                for b in &mut self.blanks {
                    *b = rng.pick(&[" ", "  ", "\t", " \t ", "   "]).to_string();
                }
            }
            Step::Quote => {
                for token in &mut self.tokens {
                    if rng.one_in(2) {
                        continue;
                    }
                    // Not across cmd's carets: inside quotes a caret is literal.
                    let Some(k) = token.iter().position(|(t, q)| !q && t.chars().count() >= 2 && !t.contains('^'))
                    else {
                        continue;
                    };
                    let text: Vec<char> = token[k].0.chars().collect();
                    let a = rng.below(text.len());
                    let b = a + 1 + rng.below(text.len() - a);
                    let bad = |i: usize| i > 0 && text[i - 1] == '\\';
                    // `"a""b"` is not `"a"` and `"b"`: `""` inside quotes is a literal quote.
                    let quoted_before = a == 0 && k > 0 && token[k - 1].1;
                    let quoted_after = b == text.len() && token.get(k + 1).is_some_and(|p| p.1);
                    if bad(a) || bad(b) || quoted_before || quoted_after {
                        continue;
                    }
                    let piece = |r: std::ops::Range<usize>| text[r].iter().collect::<String>();
                    let mut pieces = vec![(piece(0..a), false), (piece(a..b), true), (piece(b..text.len()), false)];
                    pieces.retain(|(t, q)| *q || !t.is_empty());
                    token.splice(k..=k, pieces);
                }
            }
            Step::Dash if case.windash => {
                for token in &mut self.tokens {
                    if let Some((text, false)) = token.first_mut() {
                        if text.starts_with(['/', '-']) {
                            let dash = *rng.pick(&['-', '/', '\u{2013}', '\u{2014}', '\u{2015}']);
                            *text = format!("{dash}{}", &text[1..]);
                        }
                    }
                }
            }
            Step::Caret if case.cmd => self.texts(|t, quoted| {
                if quoted {
                    return t.to_string();
                }
                // `^x` is `x` to cmd; an existing `^x` is kept as it is (`^^x` would be `^x`).
                let mut out = String::new();
                let mut chars = t.chars();
                while let Some(c) = chars.next() {
                    if c == '^' {
                        out.push(c);
                        out.extend(chars.next());
                        continue;
                    }
                    if rng.one_in(3) {
                        out.push('^');
                    }
                    out.push(c);
                }
                out
            }),
            _ => {}
        }
    }
}

fn text_step(step: Step, value: &str, rng: &mut Rng) -> String {
    match step {
        Step::Case => flip_case(value, rng),
        Step::Fullwidth => fullwidth(value, "", rng),
        _ => value.to_string(),
    }
}

/// Blanks and one pair of quotes around a path or text value (Windows and the rules trim
/// them).
fn wrap(value: &str, rng: &mut Rng) -> String {
    let blank = |rng: &mut Rng| rng.pick(&["", " ", "\t", "  ", "\u{3000}"]).to_string();
    let (l, r) = (blank(rng), blank(rng));
    if rng.one_in(2) { format!("{l}\"{}\"{r}", value) } else { format!("{l}{value}{r}") }
}

/// A field value rewritten by `steps` (in order), for a field of `class`.
fn respell(case: &Case, class: Class, value: &str, steps: &[(Step, u64)]) -> String {
    match class {
        Class::Fixed => value.to_string(),
        Class::CommandLine => {
            let mut cl = CommandLine::parse(value);
            for &(step, seed) in steps {
                cl.step(step, case, &mut Rng(seed | 1));
            }
            cl.write()
        }
        Class::Path | Class::Text => {
            let mut v = value.to_string();
            for &(step, seed) in steps {
                let rng = &mut Rng(seed | 1);
                v = if class == Class::Path { path_step(step, &v, rng) } else { text_step(step, &v, rng) };
            }
            let rng = &mut Rng(steps.len() as u64 * 7919 + 1);
            if class == Class::Path && rng.one_in(3) && v.get(1..2) == Some(":") {
                v = format!("{}{v}", rng.pick(&[r"\\?\", r"\??\", "//?/"]));
            }
            if rng.one_in(2) { wrap(&v, rng) } else { v }
        }
    }
}

/// JSON-level rewrites.
#[derive(Clone, Debug, Default)]
struct Json {
    /// Per mille of string characters written as `\uXXXX` (or `/` as `\/`).
    escape_permille: u16,
    key_case: bool,
    whitespace: bool,
    event_id_string: bool,
    /// Per decoy: put it before (true) or after the real value; `None`: leave it out.
    decoys: Vec<Option<bool>>,
    syslog: bool,
    /// A parser hazard in another member.
    hazard: Option<usize>,
    seed: u64,
    /// XML: runs of text in CDATA sections.
    xml_cdata: bool,
    /// XML: attributes in single quotes.
    xml_single: bool,
    /// XML: comments between pieces of text.
    xml_comments: bool,
}

const HAZARDS: &[&str] = &[r#""\ud800x""#, "18446744073709551616", "1e400", r#"["\udfff", -9223372036854775809]"#];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shape {
    Flat,
    EvtxDump,
    EvtxDumpText,
    Winlogbeat,
    Ecs,
    /// A Windows XML line (XML rewrites: character references, CDATA, quotes, comments).
    Xml,
    /// Winlogbeat with include_xml: the XML event (XML rewrites) in `event.original`, a
    /// JSON string (JSON rewrites on top).
    EmbeddedXml,
    /// Sentinel WindowsEvent: the flat record (JSON rewrites) in `EventData`, a JSON string
    /// (JSON rewrites again).
    EmbeddedJson,
}

const SHAPES: [Shape; 8] = [
    Shape::Flat,
    Shape::EvtxDump,
    Shape::EvtxDumpText,
    Shape::Winlogbeat,
    Shape::Ecs,
    Shape::Xml,
    Shape::EmbeddedXml,
    Shape::EmbeddedJson,
];

fn ecs_path(field: &str) -> Option<&'static [&'static str]> {
    Some(match field {
        "Image" => &["process", "executable"],
        "CommandLine" => &["process", "command_line"],
        "ParentImage" => &["process", "parent", "executable"],
        "OriginalFileName" => &["process", "pe", "original_file_name"],
        "TargetFilename" => &["file", "path"],
        "TargetObject" => &["registry", "path"],
        "Details" => &["registry", "data", "strings"],
        _ => return None,
    })
}

/// Appends `value` under `path`, reusing the last object of each name on the way, so that
/// a second value of a field is a duplicate key.
fn put(obj: &mut Vec<(String, J)>, path: &[&str], value: J) {
    let (last, parents) = path.split_last().expect("non-empty path");
    let mut cur = obj;
    for p in parents {
        let i = match cur.iter().rposition(|(k, v)| k == p && matches!(v, J::Obj(_))) {
            Some(i) => i,
            None => {
                cur.push((p.to_string(), J::Obj(Vec::new())));
                cur.len() - 1
            }
        };
        let J::Obj(next) = &mut cur[i].1 else { unreachable!() };
        cur = next;
    }
    cur.push((last.to_string(), value));
}

fn record(shape: Shape, security: bool, case: &Case, fields: &[(String, String)], json: &Json) -> J {
    let (eid, channel) = if security { (4688, "Security") } else { (case.eid, case.channel) };
    let name = |f: &str| -> String {
        match (security, f) {
            (true, "Image") => "NewProcessName".into(),
            (true, "ParentImage") => "ParentProcessName".into(),
            _ => f.into(),
        }
    };
    let id = if json.event_id_string { J::Str(eid.to_string()) } else { J::Int(eid) };
    let data: Vec<(String, J)> = fields.iter().map(|(k, v)| (name(k), J::Str(v.clone()))).collect();
    let mut root = Vec::new();
    match shape {
        Shape::Flat => {
            root.push(("EventTime".into(), J::Str("2024-03-01 01:00:00".into())));
            root.push(("EventID".into(), id));
            root.push(("Channel".into(), J::Str(channel.into())));
            root.extend(data);
        }
        Shape::EvtxDump | Shape::EvtxDumpText => {
            let id = if shape == Shape::EvtxDump {
                id
            } else {
                J::Obj(vec![
                    ("#attributes".into(), J::Obj(vec![("Qualifiers".into(), J::Int(0))])),
                    ("#text".into(), id),
                ])
            };
            let system = J::Obj(vec![
                ("EventID".into(), id),
                ("Channel".into(), J::Str(channel.into())),
                ("Computer".into(), J::Str("WEB01".into())),
            ]);
            root.push(("Event".into(), J::Obj(vec![("System".into(), system), ("EventData".into(), J::Obj(data))])));
        }
        Shape::Winlogbeat => {
            let winlog = J::Obj(vec![
                ("event_id".into(), J::Str(eid.to_string())),
                ("channel".into(), J::Str(channel.into())),
                ("event_data".into(), J::Obj(data)),
            ]);
            root.push(("@timestamp".into(), J::Str("2024-03-01T01:00:00Z".into())));
            root.push(("winlog".into(), winlog));
        }
        Shape::Xml => unreachable!("written by XmlWriter"),
        Shape::EmbeddedXml => {
            let xml = xml_text(case, security, fields, json);
            root.push(("@timestamp".into(), J::Str("2024-03-01T01:00:00Z".into())));
            root.push((
                "event".into(),
                J::Obj(vec![("code".into(), J::Str(eid.to_string())), ("original".into(), J::Str(xml))]),
            ));
            root.push((
                "winlog".into(),
                J::Obj(vec![("event_id".into(), J::Str(eid.to_string())), ("channel".into(), J::Str(channel.into()))]),
            ));
        }
        Shape::EmbeddedJson => {
            let inner = J::Obj(data);
            let mut w = Writer { json, rng: Rng(json.seed.rotate_left(29) | 1), out: String::new() };
            w.value(&inner);
            root.push(("EventID".into(), id));
            root.push(("Channel".into(), J::Str(channel.into())));
            root.push(("Provider".into(), J::Str("Microsoft-Windows-Sysmon".into())));
            // A serializer writes the object compactly (or pretty-printed): no blank before
            // its first key.
            let inner = w.out.trim_start();
            let inner = format!("{{{}", inner[1..].trim_start());
            root.push(("EventData".into(), J::Str(inner)));
        }
        Shape::Ecs => {
            put(&mut root, &["event", "code"], J::Str(eid.to_string()));
            put(&mut root, &["winlog", "channel"], J::Str(channel.into()));
            for (k, v) in fields {
                match ecs_path(k) {
                    Some(p @ ["registry", "data", "strings"]) => put(&mut root, p, J::Arr(vec![J::Str(v.clone())])),
                    Some(p) => put(&mut root, p, J::Str(v.clone())),
                    None => put(&mut root, &["winlog", "event_data", &name(k)], J::Str(v.clone())),
                }
            }
        }
    }
    if let Some(h) = json.hazard {
        root.push(("Note".into(), J::Raw(HAZARDS[h].into())));
    }
    J::Obj(root)
}

struct Writer<'a> {
    json: &'a Json,
    rng: Rng,
    out: String,
}

impl Writer<'_> {
    fn space(&mut self) {
        if self.json.whitespace && self.rng.one_in(2) {
            let ws = *self.rng.pick(&[" ", "\t", "  ", "\r\n "]);
            // A raw newline would split the record: keep it out of the line.
            self.out.push_str(if ws.contains('\n') { " " } else { ws });
        }
    }

    fn string(&mut self, s: &str, key: bool) {
        self.out.push('"');
        for c in s.chars() {
            let c = if key && self.json.key_case && self.rng.one_in(2) {
                if c.is_ascii_lowercase() { c.to_ascii_uppercase() } else { c.to_ascii_lowercase() }
            } else {
                c
            };
            if self.rng.below(1000) < usize::from(self.json.escape_permille) {
                if c == '/' && self.rng.one_in(2) {
                    self.out.push_str("\\/");
                } else {
                    let mut units = [0u16; 2];
                    for u in c.encode_utf16(&mut units) {
                        self.out.push_str(&if self.rng.one_in(2) {
                            format!("\\u{u:04X}")
                        } else {
                            format!("\\u{u:04x}")
                        });
                    }
                }
            } else {
                let plain = serde_json::to_string(&c.to_string()).expect("char");
                self.out.push_str(&plain[1..plain.len() - 1]);
            }
        }
        self.out.push('"');
    }

    fn value(&mut self, v: &J) {
        self.space();
        match v {
            J::Str(s) => self.string(s, false),
            J::Int(i) => self.out.push_str(&i.to_string()),
            J::Raw(r) => self.out.push_str(r),
            J::Arr(items) => {
                self.out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        self.out.push(',');
                    }
                    self.value(item);
                }
                self.out.push(']');
            }
            J::Obj(members) => {
                self.out.push('{');
                for (i, (k, v)) in members.iter().enumerate() {
                    if i > 0 {
                        self.out.push(',');
                    }
                    self.space();
                    self.string(k, true);
                    self.space();
                    self.out.push(':');
                    self.value(v);
                    self.space();
                }
                self.out.push('}');
            }
        }
        self.space();
    }
}

/// XML-level rewrites: how Windows, a forwarder or an attacker may write the same event.
struct XmlWriter<'a> {
    json: &'a Json,
    rng: Rng,
    out: String,
}

impl XmlWriter<'_> {
    /// Blanks between elements (layout only).
    fn space(&mut self) {
        if self.json.whitespace && self.rng.one_in(2) {
            let blank: &&str = self.rng.pick(&[" ", "\t", "  "]);
            self.out.push_str(blank);
        }
    }

    /// Text or an attribute value: characters as character references (decimal or hex,
    /// either case), the five special ones as entities, runs of text as CDATA sections
    /// (text only), comments between pieces of text.
    fn text(&mut self, s: &str, attribute: bool, quote: char) {
        let mut cdata = false;
        for c in s.chars() {
            let in_cdata_ok = !attribute && self.json.xml_cdata && !matches!(c, ']' | '>');
            if in_cdata_ok && self.rng.one_in(4) != cdata {
                // Open or close a CDATA section here.
                self.out.push_str(if cdata { "]]>" } else { "<![CDATA[" });
                cdata = !cdata;
            }
            if cdata {
                self.out.push(c);
                continue;
            }
            if !attribute && self.json.xml_comments && self.rng.one_in(16) {
                self.out.push_str("<!-- x -->");
            }
            if self.rng.below(1000) < usize::from(self.json.escape_permille) {
                let r = match self.rng.below(3) {
                    0 => format!("&#{};", c as u32),
                    1 => format!("&#x{:x};", c as u32),
                    _ => format!("&#x{:X};", c as u32),
                };
                self.out.push_str(&r);
                continue;
            }
            match c {
                '&' => self.out.push_str("&amp;"),
                '<' => self.out.push_str("&lt;"),
                '>' => self.out.push_str(if self.rng.one_in(2) { "&gt;" } else { ">" }),
                '"' if attribute && quote == '"' => self.out.push_str("&quot;"),
                '\'' if attribute && quote == '\'' => self.out.push_str("&apos;"),
                '"' if self.rng.one_in(2) => self.out.push_str("&quot;"),
                c => self.out.push(c),
            }
        }
        if cdata {
            self.out.push_str("]]>");
        }
    }

    fn attribute(&mut self, name: &str, value: &str) {
        let quote = if self.json.xml_single { '\'' } else { '"' };
        self.out.push(' ');
        self.out.push_str(name);
        self.out.push('=');
        self.out.push(quote);
        self.text(value, true, quote);
        self.out.push(quote);
    }

    fn element(&mut self, name: &str, text: &str) {
        self.space();
        self.out.push('<');
        self.out.push_str(name);
        self.out.push('>');
        self.text(text, false, '"');
        self.out.push_str("</");
        self.out.push_str(name);
        self.out.push('>');
    }

    /// The event: `<Event>` with `<System>` and `<EventData>`, one `<Data>` a field.
    fn event(&mut self, eid: i64, channel: &str, fields: &[(String, String)]) {
        self.out.push_str("<Event");
        self.attribute("xmlns", "http://schemas.microsoft.com/win/2004/08/events/event");
        self.out.push('>');
        self.space();
        self.out.push_str("<System>");
        self.space();
        self.out.push_str("<Provider");
        self.attribute("Name", "Microsoft-Windows-Sysmon");
        self.out.push_str("/>");
        self.element("EventID", &eid.to_string());
        self.element("Channel", channel);
        self.element("Computer", "WEB01");
        self.space();
        self.out.push_str("</System>");
        self.space();
        self.out.push_str("<EventData>");
        for (k, v) in fields {
            self.space();
            self.out.push_str("<Data");
            self.attribute("Name", k);
            self.out.push('>');
            self.text(v, false, '"');
            self.out.push_str("</Data>");
        }
        self.space();
        self.out.push_str("</EventData>");
        self.space();
        self.out.push_str("</Event>");
    }
}

/// The Windows XML text of a record (fields already respelled).
fn xml_text(case: &Case, security: bool, fields: &[(String, String)], json: &Json) -> String {
    let (eid, channel) = if security { (4688, "Security") } else { (case.eid, case.channel) };
    let named: Vec<(String, String)> = fields
        .iter()
        .map(|(k, v)| {
            let k = match (security, k.as_str()) {
                (true, "Image") => "NewProcessName".to_string(),
                (true, "ParentImage") => "ParentProcessName".to_string(),
                _ => k.clone(),
            };
            (k, v.clone())
        })
        .collect();
    let mut w = XmlWriter { json, rng: Rng(json.seed.rotate_left(17) | 1), out: String::new() };
    w.event(eid, channel, &named);
    w.out
}

/// The record of `case` in `shape`, every rewrite applied.
fn line(case: &Case, shape: Shape, security: bool, steps: &[(Step, u64)], json: &Json) -> String {
    let mut fields: Vec<(String, String)> = Vec::new();
    let decoy = |i: usize| json.decoys.get(i).copied().flatten();
    for (i, (k, v)) in case.decoys.iter().enumerate() {
        if decoy(i) == Some(true) {
            fields.push((k.to_string(), v.to_string()));
        }
    }
    for (k, v) in case.fields {
        if security && *k == "OriginalFileName" {
            continue;
        }
        fields.push((k.to_string(), respell(case, class(k), v, steps)));
    }
    for (i, (k, v)) in case.decoys.iter().enumerate() {
        if decoy(i) == Some(false) {
            fields.push((k.to_string(), v.to_string()));
        }
    }
    let text = if shape == Shape::Xml {
        xml_text(case, security, &fields, json)
    } else {
        let mut w = Writer { json, rng: Rng(json.seed | 1), out: String::new() };
        w.value(&record(shape, security, case, &fields, json));
        w.out
    };
    if json.syslog { format!("<14>1 2024-03-01T01:00:00Z WEB01 sysmon - - - {text}") } else { text }
}

fn step_stack() -> impl Strategy<Value = Vec<(Step, u64)>> {
    prop::collection::vec((prop::sample::select(&STEPS[..]), any::<u64>()), 0..8)
}

fn json_rewrites() -> impl Strategy<Value = Json> {
    (
        prop_oneof![Just(0u16), 0u16..100, 0u16..1000],
        any::<(bool, bool, bool, bool)>(),
        prop::collection::vec(prop::option::of(any::<bool>()), 0..3),
        prop::option::of(0..HAZARDS.len()),
        any::<u64>(),
        any::<(bool, bool, bool)>(),
    )
        .prop_map(
            |(
                escape_permille,
                (key_case, whitespace, event_id_string, syslog),
                decoys,
                hazard,
                seed,
                (xml_cdata, xml_single, xml_comments),
            )| {
                Json {
                    escape_permille,
                    key_case,
                    whitespace,
                    event_id_string,
                    decoys,
                    syslog,
                    hazard,
                    seed,
                    xml_cdata,
                    xml_single,
                    xml_comments,
                }
            },
        )
}

fn detected(taggers: &[Tagger; 3], line: &str, expect: &str) -> Result<(), String> {
    let outputs: Vec<Vec<u8>> = taggers.iter().map(|t| t.tag_all(line.as_bytes()).0).collect();
    if outputs[0] != outputs[1] {
        return Err("the prefilter changed the output".into());
    }
    if outputs[0] != outputs[2] {
        return Err("the routed prefilter changed the output".into());
    }
    let found = detections(&outputs[0], "iis_tagger");
    if found.len() != 1 || !found[0].iter().any(|d| d == expect) {
        return Err(format!("{expect} not detected (found {:?})", found.first()));
    }
    Ok(())
}

#[test]
fn every_case_is_detected_as_written() {
    let taggers = taggers();
    for case in CASES {
        for shape in SHAPES {
            for security in [false, true].into_iter().filter(|&s| !s || case.process) {
                let l = line(case, shape, security, &[], &Json::default());
                if let Err(e) = detected(taggers, &l, case.expect) {
                    panic!("{e}: {l}");
                }
            }
        }
    }
}

/// The rewrites are not no-ops: each step changes some case's record.
#[test]
fn every_rewrite_changes_something() {
    for step in STEPS {
        let changed = CASES.iter().any(|case| {
            let plain = line(case, Shape::Flat, false, &[], &Json::default());
            (1..20u64).any(|seed| line(case, Shape::Flat, false, &[(step, seed)], &Json::default()) != plain)
        });
        assert!(changed, "{step:?} never changes a record");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

    #[test]
    fn no_stack_of_respellings_hides_a_detection(
        c in 0..CASES.len(),
        s in 0..SHAPES.len(),
        security in any::<bool>(),
        steps in step_stack(),
        json in json_rewrites(),
    ) {
        let case = &CASES[c];
        let security = security && case.process;
        let l = line(case, SHAPES[s], security, &steps, &json);
        if let Err(e) = detected(taggers(), &l, case.expect) {
            return Err(TestCaseError::fail(format!("{e}\n{l}")));
        }
    }
}
