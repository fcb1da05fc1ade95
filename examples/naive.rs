//! The naive baseline of the benchmarks: the same eight detections written the way a
//! pipeline user writes them today — every line parsed into a `serde_json::Value`, fields
//! looked up per shape, strings lower-cased, matches annotated by inserting into the value
//! and serializing it again (which, unlike iis-tagger, rewrites the record).
//!
//! `cargo run --release --example naive -- FILE > out.jsonl`; the benchmarks include
//! [`tag_line`] directly.

use std::io::{BufRead, Write};

use serde_json::{Map, Value, json};

const SYSMON: &str = "microsoft-windows-sysmon/operational";
const WEB_PARENTS: &[&str] = &[
    "w3wp.exe",
    "httpd.exe",
    "nginx.exe",
    "java.exe",
    "php-cgi.exe",
    "perl.exe",
    "python.exe",
    "ruby.exe",
    "node.exe",
];
const SHELLS: &[&str] = &["cmd.exe", "powershell.exe", "pwsh.exe", "wscript.exe", "cscript.exe", "mshta.exe"];
const DISCOVERY: &[&str] = &[
    "rundll32.exe",
    "regsvr32.exe",
    "certutil.exe",
    "net.exe",
    "net1.exe",
    "whoami.exe",
    "systeminfo.exe",
    "nltest.exe",
    "curl.exe",
    "wget.exe",
    "hostname.exe",
    "ipconfig.exe",
];
const ROOTS: &[&str] = &[
    "\\inetpub\\",
    "\\wwwroot\\",
    "\\htdocs\\",
    "\\webapps\\",
    "\\public_html\\",
    "/var/www/",
    "/srv/www/",
    "/usr/share/nginx/",
];
const EXTS: &[&str] = &[".aspx", ".asp", ".php", ".jsp", ".jspx", ".cfm", ".ashx", ".asmx", ".phtml", ".shtml"];
const FILE_EXCL: &[&str] =
    &["msiexec.exe", "setup.exe", "devenv.exe", "code.exe", "explorer.exe", "robocopy.exe", "xcopy.exe", "w3wp.exe"];
const KEYS: &[&str] = &["\\services\\w3svc", "\\software\\microsoft\\inetstp", "\\services\\was"];
const MSI_CHILDREN: &[&str] = &["powershell.exe", "cmd.exe", "nltest.exe", "ipconfig.exe", "systeminfo.exe"];

/// (slug, mitre, risk) of the rules, in order.
const RULES: &[(&str, &[&str], u8)] = &[
    ("windows_iis_components_add_new_module", &["T1505", "T1505.004"], 64),
    ("windows_iis_components_new_module_added", &["T1505", "T1505.004"], 50),
    ("microsoft_iis_service_account_password_dumped", &["T1003"], 21),
    ("webshell_child_process", &["T1505", "T1505.003"], 99),
    ("webshell_child_discovery", &["T1505", "T1505.003"], 73),
    ("suspicious_web_file_written", &["T1505", "T1505.003"], 73),
    ("iis_module_registered", &["T1505", "T1505.004"], 73),
    ("windows_msiexec_spawn_discovery_command", &["T1218", "T1218.007"], 35),
];

fn text(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => s.to_lowercase(),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::Object(o)) => text(o.get("#text")),
        _ => String::new(),
    }
}

fn base(p: &str) -> &str {
    p.rsplit(['\\', '/']).next().unwrap_or("")
}

/// Field lookup in whichever shape the record has.
fn field<'a>(o: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    if let Some(ev) = o.get("Event") {
        return ev.get("EventData").and_then(|d| d.get(name));
    }
    if let Some(w) = o.get("winlog") {
        if let Some(v) = w.get("event_data").and_then(|d| d.get(name)) {
            return Some(v);
        }
        let ecs = match name {
            "Image" => o.get("process").and_then(|p| p.get("executable")),
            "CommandLine" => o.get("process").and_then(|p| p.get("command_line")),
            "ParentImage" => o.get("process").and_then(|p| p.get("parent")).and_then(|p| p.get("executable")),
            "OriginalFileName" => o.get("process").and_then(|p| p.get("pe")).and_then(|p| p.get("original_file_name")),
            "TargetFilename" => o.get("file").and_then(|f| f.get("path")),
            "TargetObject" => o.get("registry").and_then(|r| r.get("path")),
            "Details" => {
                o.get("registry").and_then(|r| r.get("data")).and_then(|d| d.get("strings")).and_then(|s| s.get(0))
            }
            _ => None,
        };
        return ecs;
    }
    o.get(name)
}

fn args(cmd: &str) -> Vec<String> {
    let mut out = Vec::new();
    let (mut cur, mut quoted, mut have) = (String::new(), false, false);
    for c in cmd.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                have = true;
            }
            ' ' | '\t' if !quoted => {
                if have {
                    out.push(std::mem::take(&mut cur));
                    have = false;
                }
            }
            _ => {
                cur.push(c);
                have = true;
            }
        }
    }
    if have {
        out.push(cur);
    }
    out
}

/// Indices of the rules the record matches.
fn detect(o: &Map<String, Value>) -> Vec<usize> {
    let (eid, channel) = match (o.get("Event"), o.get("winlog")) {
        (Some(ev), _) => (
            text(ev.get("System").and_then(|s| s.get("EventID"))),
            text(ev.get("System").and_then(|s| s.get("Channel"))),
        ),
        (None, Some(w)) => (text(w.get("event_id")), text(w.get("channel"))),
        _ => (text(o.get("EventID")), text(o.get("Channel"))),
    };
    let mut hits = Vec::new();
    if channel == "microsoft-iis-configuration/operational" && eid == "29" {
        hits.push(1);
    }
    let sec = eid == "4688" && channel == "security";
    if (eid == "1" && channel == SYSMON) || sec {
        let image = text(field(o, if sec { "NewProcessName" } else { "Image" }));
        let parent = text(field(o, if sec { "ParentProcessName" } else { "ParentImage" }));
        let cmd = text(field(o, "CommandLine"));
        let (ib, pb) = (base(&image), base(&parent));
        if ib == "appcmd.exe"
            && (cmd.contains("install ") || cmd.contains("module "))
            && cmd.contains("image")
            && pb != "msiexec.exe"
            && pb != "iissetup.exe"
        {
            hits.push(0);
        }
        if ib == "appcmd.exe" || text(field(o, "OriginalFileName")) == "appcmd.exe" {
            let a = args(&cmd);
            if a.iter().any(|x| x == "list") && a.iter().any(|x| x.starts_with("/text")) {
                hits.push(2);
            }
        }
        if WEB_PARENTS.contains(&pb) || pb.starts_with("tomcat") {
            if SHELLS.contains(&ib) {
                hits.push(3);
            }
            if DISCOVERY.contains(&ib) {
                hits.push(4);
            }
        }
        if pb == "msiexec.exe" && MSI_CHILDREN.contains(&ib) {
            hits.push(7);
        }
    }
    if channel == SYSMON && eid == "11" {
        let tf = text(field(o, "TargetFilename"));
        let writer = text(field(o, "Image"));
        if ROOTS.iter().any(|r| tf.contains(r))
            && EXTS.iter().any(|e| tf.ends_with(e))
            && !FILE_EXCL.contains(&base(&writer))
        {
            hits.push(5);
        }
    }
    if channel == SYSMON && eid == "13" {
        let to = text(field(o, "TargetObject"));
        let details = text(field(o, "Details"));
        let writer = text(field(o, "Image"));
        if KEYS.iter().any(|k| to.contains(k))
            && details.ends_with(".dll")
            && !["msiexec.exe", "trustedinstaller.exe", "wusa.exe"].contains(&base(&writer))
        {
            hits.push(6);
        }
    }
    hits.sort_unstable();
    hits
}

/// The line re-serialized with an annotation, if it matches.
pub fn tag_line(line: &str) -> Option<String> {
    let Ok(Value::Object(mut o)) = serde_json::from_str::<Value>(line) else { return None };
    let hits = detect(&o);
    if hits.is_empty() {
        return None;
    }
    let risk = hits.iter().map(|&i| RULES[i].2).max().unwrap_or(0);
    let detections: Vec<Value> =
        hits.iter().map(|&i| json!({"rule": RULES[i].0, "mitre": RULES[i].1, "risk_score": RULES[i].2})).collect();
    o.insert("iis_tagger".into(), json!({"risk_score": risk, "detections": detections}));
    serde_json::to_string(&o).ok()
}

#[allow(dead_code)]
fn main() -> std::io::Result<()> {
    let path = std::env::args_os().nth(1).expect("usage: naive FILE");
    let input = std::io::BufReader::with_capacity(256 * 1024, std::fs::File::open(path)?);
    let mut out = std::io::BufWriter::with_capacity(256 * 1024, std::io::stdout().lock());
    for line in input.split(b'\n') {
        let line = line?;
        match std::str::from_utf8(&line).ok().and_then(tag_line) {
            Some(tagged) => out.write_all(tagged.as_bytes())?,
            None => out.write_all(&line)?,
        }
        out.write_all(b"\n")?;
    }
    out.flush()
}
