//! Helpers shared by the integration tests: event builders for every shape of
//! ARCHITECTURE §4, an annotation stripper written independently of the library, paths.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use iis_tagger::{Config, RuleSet, Tagger};
use serde_json::{Map, Value, json};

pub const SYSMON: &str = "Microsoft-Windows-Sysmon/Operational";

/// Every evtx_dump JSON file of `../shared/corpus`, sorted by path (callers check first
/// that the corpus is there: [`crate::needs::Need::Corpus`]).
pub fn evtxdump_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![crate::needs::shared().join("corpus/evtxdump-json")];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("corpus folder") {
            let p = entry.expect("entry").path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|e| e == "jsonl") {
                files.push(p);
            }
        }
    }
    files.sort();
    files
}

pub fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// A fresh empty folder under the system temp dir.
pub fn temp_dir(tag: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "iis-tagger-{}-{}-{}",
        tag,
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

pub fn builtin_tagger() -> Tagger {
    Tagger::new(RuleSet::builtin().expect("built-in rules load"), Config::default()).expect("tagger")
}

/// The slugs of the detections on each output line (empty for an unannotated line).
pub fn detections(output: &[u8], key: &str) -> Vec<Vec<String>> {
    split_lines(output)
        .iter()
        .map(|line| {
            annotation(line, key)
                .and_then(|a| a["detections"].as_array().cloned())
                .map(|ds| ds.iter().map(|d| d["rule"].as_str().expect("rule slug").to_string()).collect())
                .unwrap_or_default()
        })
        .collect()
}

/// The XML annotation element `<key risk_score=…>…</key>` of an XML line: its range, as
/// found without the library's code (the last such element, ending right before an end tag).
fn xml_element(line: &[u8], key: &str) -> Option<std::ops::Range<usize>> {
    let open = format!("<{key} risk_score=\"");
    let close = format!("</{key}>");
    let start = line.windows(open.len()).rposition(|w| w == open.as_bytes())?;
    let end = start + line[start..].windows(close.len()).position(|w| w == close.as_bytes())? + close.len();
    line[end..].starts_with(b"</").then_some(start..end)
}

/// The annotation of an XML line, as the JSON annotation would hold it (risk, severity,
/// detections with their rule slugs, ids and ATT&CK ids, incomplete reasons), read with
/// roxmltree.
fn xml_annotation(line: &[u8], key: &str) -> Option<Value> {
    let range = xml_element(line, key)?;
    let text = std::str::from_utf8(&line[range]).ok()?;
    let doc = roxmltree::Document::parse(text).ok()?;
    let root = doc.root_element();
    let detections: Vec<Value> = root
        .children()
        .filter(|n| n.has_tag_name("detection"))
        .map(|d| {
            let texts = |tag: &str| -> Vec<Value> {
                d.children().filter(|c| c.has_tag_name(tag)).map(|c| json!(c.text().unwrap_or_default())).collect()
            };
            let mut o = Map::new();
            for a in d.attributes() {
                let v = a.value().parse::<u64>().map(Value::from).unwrap_or_else(|_| json!(a.value()));
                o.insert(a.name().to_string(), v);
            }
            o.insert("mitre".into(), Value::Array(texts("mitre")));
            o.insert("tactics".into(), Value::Array(texts("tactic")));
            Value::Object(o)
        })
        .collect();
    let incomplete: Vec<Value> =
        root.children().filter(|n| n.has_tag_name("incomplete")).map(|n| json!(n.text().unwrap_or_default())).collect();
    let mut a = json!({
        "risk_score": root.attribute("risk_score")?.parse::<u64>().ok()?,
        "severity": root.attribute("severity")?,
        "detections": detections,
    });
    if !incomplete.is_empty() {
        a["incomplete"] = Value::Array(incomplete);
    }
    Some(a)
}

/// The XML part of a line (after a syslog header, if any).
fn xml_part(line: &[u8]) -> &[u8] {
    match line.windows(6).position(|w| w == b"<Event") {
        Some(i) => &line[i..],
        None => line,
    }
}

/// Whether a line is an XML record (ends with `>`).
fn is_xml_line(line: &[u8]) -> bool {
    line.iter().rposition(|b| !matches!(b, b' ' | b'\t' | b'\r')).is_some_and(|i| line[i] == b'>')
}

/// The annotation of a line: the member `"<key>":{"risk_score":...}` that ends right before
/// the final `}` (or, for an XML line, its annotation element read as that member). Read on its own, since the record around it may hold what serde_json
/// refuses (a lone surrogate, `1e400`).
pub fn annotation(line: &[u8], key: &str) -> Option<Value> {
    if is_xml_line(line) {
        return xml_annotation(line, key);
    }
    let end = line.iter().rposition(|b| !matches!(b, b' ' | b'\t' | b'\r'))?;
    let marker = format!("{}:{{\"risk_score\":", serde_json::to_string(key).expect("key"));
    let start = line[..end].windows(marker.len()).rposition(|w| w == marker.as_bytes())?;
    let object = &line[start + marker.len() - "{\"risk_score\":".len()..end];
    serde_json::from_slice(object).ok()
}

/// The JSON part of a line (after a syslog header, if any).
fn json_part(line: &[u8]) -> &[u8] {
    match line.iter().position(|&b| b == b'{') {
        Some(i) if line[0] == b'<' => &line[i..],
        _ => line,
    }
}

/// Lines split on `\n` only; a final line without `\n` counts, a trailing `\n` does not
/// start another line.
pub fn split_lines(bytes: &[u8]) -> Vec<&[u8]> {
    if bytes.is_empty() {
        return Vec::new();
    }
    let body = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    body.split(|&b| b == b'\n').collect()
}

/// Removes an annotation member `"<key>":{"risk_score":...}` that ends right before the
/// line's final `}` (with its leading comma), independently of the library's code.
pub fn strip_line(line: &[u8], key: &str) -> Option<Vec<u8>> {
    if is_xml_line(line) {
        let range = xml_element(line, key)?;
        xml_annotation(line, key)?;
        let mut out = line[..range.start].to_vec();
        out.extend_from_slice(&line[range.end..]);
        return Some(out);
    }
    let end = line.iter().rposition(|b| !matches!(b, b' ' | b'\t' | b'\r'))?;
    if line[end] != b'}' {
        return None;
    }
    let marker = format!("{}:{{\"risk_score\":", serde_json::to_string(key).expect("key"));
    let start = line[..end].windows(marker.len()).rposition(|w| w == marker.as_bytes())?;
    // The member must be well-formed JSON running exactly to the final brace.
    let member = &line[start + marker.len() - 1 - "\"risk_score\":".len()..end];
    serde_json::from_slice::<Value>(member).ok()?;
    let cut_from = if start > 0 && line[start - 1] == b',' { start - 1 } else { start };
    let mut out = line[..cut_from].to_vec();
    out.extend_from_slice(&line[end..]);
    Some(out)
}

/// Checks the record contract between an input and its output, line by line:
/// same number of lines, each line identical or identical once the annotation is
/// removed, every annotated line valid JSON (after its syslog header) when its input was.
pub fn assert_contract(input: &[u8], output: &[u8], key: &str) {
    let (ins, outs) = (split_lines(input), split_lines(output));
    assert_eq!(ins.len(), outs.len(), "line count");
    assert_eq!(input.ends_with(b"\n"), output.ends_with(b"\n"), "final newline");
    for (i, (a, b)) in ins.iter().zip(&outs).enumerate() {
        if a == b {
            continue;
        }
        let stripped = strip_line(b, key).unwrap_or_else(|| panic!("line {} changed without an annotation", i + 1));
        assert_eq!(&stripped[..], *a, "line {}: stripping the annotation must give the input back", i + 1);
        if is_xml_line(a) {
            // Well-formed XML stays well-formed (read with roxmltree, not the library).
            let text = |l: &[u8]| String::from_utf8_lossy(xml_part(l)).into_owned();
            if roxmltree::Document::parse(&text(a)).is_ok() {
                roxmltree::Document::parse(&text(b))
                    .unwrap_or_else(|e| panic!("line {} annotated but not well-formed XML: {e}", i + 1));
            }
            continue;
        }
        // An input serde_json reads must stay readable; one it refuses (a lone surrogate,
        // `1e400`, deep nesting) gets an annotation that is JSON on its own.
        if serde_json::from_slice::<Value>(json_part(a)).is_ok() {
            serde_json::from_slice::<Value>(json_part(b))
                .unwrap_or_else(|e| panic!("line {} annotated but not JSON: {e}", i + 1));
        } else {
            annotation(b, key).unwrap_or_else(|| panic!("line {}: the annotation is not JSON", i + 1));
        }
    }
}

/// How a record is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// NXLog / OTRF / Splunk TA: every field at the top level.
    Flat,
    /// evtx_dump JSON with a numeric EventID.
    EvtxDump,
    /// evtx_dump JSON with `{"#attributes":{...},"#text":N}` as EventID (classic providers).
    EvtxDumpText,
    /// Winlogbeat raw: `winlog.event_id` (string), `winlog.event_data.*`.
    Winlogbeat,
    /// ECS-normalised: `event.code`, `winlog.channel`, `process.*`, `file.path`, `registry.*`.
    Ecs,
    /// One Windows XML `<Event>` line.
    Xml,
    /// Winlogbeat with `include_xml`: the XML event in `event.original`, no `event_data`.
    WinlogbeatXml,
    /// Vector's `windows_event_log`: `event_id`, `channel`, `provider_name`, `event_data`.
    Vector,
    /// A Wazuh alert: `data.win.system`, `data.win.eventdata` in lowerCamelCase.
    Wazuh,
    /// Sentinel `WindowsEvent` with `EventData` an object.
    SentinelObject,
    /// Sentinel `WindowsEvent` with `EventData` a JSON string.
    SentinelString,
    /// Sentinel `SecurityEvent`: `EventData` an XML `<EventData>` string.
    SecurityEventXml,
    /// Splunk HEC with the XmlWinEventLog event as a string.
    HecXml,
    /// Fluent Bit winevtlog: the EventData values by position in `StringInserts`.
    FluentBit,
}

pub const SHAPES: [Shape; 5] = [Shape::Flat, Shape::EvtxDump, Shape::EvtxDumpText, Shape::Winlogbeat, Shape::Ecs];

/// The shapes issue 9 added, each a way Windows events are shipped: records in them are
/// read through the shape table (XML, embedded events, other layouts).
pub const MORE_SHAPES: [Shape; 9] = [
    Shape::Xml,
    Shape::WinlogbeatXml,
    Shape::Vector,
    Shape::Wazuh,
    Shape::SentinelObject,
    Shape::SentinelString,
    Shape::SecurityEventXml,
    Shape::HecXml,
    Shape::FluentBit,
];

/// Every shape a fixture is written in.
pub fn every_shape() -> impl Iterator<Item = Shape> {
    SHAPES.into_iter().chain(MORE_SHAPES)
}

/// `s` escaped for XML text and attribute values.
pub fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;").replace('\'', "&apos;")
}

fn provider_of(channel: &str) -> &'static str {
    match channel {
        SYSMON => "Microsoft-Windows-Sysmon",
        "Security" => "Microsoft-Windows-Security-Auditing",
        _ => "Microsoft-Windows-IIS-Configuration",
    }
}

/// One event as Windows renders it in XML (single-quoted attributes, as Splunk and
/// Winlogbeat have it).
pub fn xml_event(eid: i64, channel: &str, fields: &[(&str, &str)]) -> String {
    let mut x = format!(
        "<Event xmlns='http://schemas.microsoft.com/win/2004/08/events/event'><System><Provider Name='{}'/><EventID>{eid}</EventID><TimeCreated SystemTime='2024-03-01T01:00:00.000Z'/><Channel>{}</Channel><Computer>WEB01</Computer></System><EventData>",
        provider_of(channel),
        xml_escape(channel)
    );
    for (k, v) in fields {
        x.push_str(&format!("<Data Name='{}'>{}</Data>", xml_escape(k), xml_escape(v)));
    }
    x.push_str("</EventData></Event>");
    x
}

/// Fluent Bit's StringInserts layouts (the shape table's) for a provider and event.
fn layouts(eid: i64) -> &'static [&'static [&'static str]] {
    match eid {
        1 => &[&[
            "RuleName",
            "UtcTime",
            "ProcessGuid",
            "ProcessId",
            "Image",
            "FileVersion",
            "Description",
            "Product",
            "Company",
            "OriginalFileName",
            "CommandLine",
            "CurrentDirectory",
            "User",
            "LogonGuid",
            "LogonId",
            "TerminalSessionId",
            "IntegrityLevel",
            "Hashes",
            "ParentProcessGuid",
            "ParentProcessId",
            "ParentImage",
            "ParentCommandLine",
            "ParentUser",
        ]],
        11 => &[&[
            "RuleName",
            "UtcTime",
            "ProcessGuid",
            "ProcessId",
            "Image",
            "TargetFilename",
            "CreationUtcTime",
            "User",
        ]],
        13 => &[&[
            "RuleName",
            "EventType",
            "UtcTime",
            "ProcessGuid",
            "ProcessId",
            "Image",
            "TargetObject",
            "Details",
            "User",
        ]],
        4688 => &[&[
            "SubjectUserSid",
            "SubjectUserName",
            "SubjectDomainName",
            "SubjectLogonId",
            "NewProcessId",
            "NewProcessName",
            "TokenElevationType",
            "ProcessId",
            "CommandLine",
            "TargetUserSid",
            "TargetUserName",
            "TargetDomainName",
            "TargetLogonId",
            "ParentProcessName",
            "MandatoryLabel",
        ]],
        _ => &[],
    }
}

/// A record in one of [`MORE_SHAPES`]; `None` when the shape cannot carry these fields
/// (Fluent Bit's positional values have no layout for them).
fn more_event(
    shape: Shape,
    eid: i64,
    channel: &str,
    fields: &[(&str, &str)],
    data: Map<String, Value>,
) -> Option<Value> {
    let provider = provider_of(channel);
    Some(match shape {
        Shape::Xml | Shape::Flat | Shape::EvtxDump | Shape::EvtxDumpText | Shape::Winlogbeat | Shape::Ecs => {
            unreachable!("written elsewhere")
        }
        Shape::WinlogbeatXml => json!({"@timestamp": "2024-03-01T01:00:00Z",
            "event": {"code": eid.to_string(), "original": xml_event(eid, channel, fields)},
            "winlog": {"event_id": eid.to_string(), "channel": channel, "provider_name": provider}}),
        Shape::Vector => json!({"timestamp": "2024-03-01T01:00:00Z", "event_id": eid, "channel": channel,
            "provider_name": provider, "computer": "WEB01", "event_data": Value::Object(data), "source_type": "windows_event_log"}),
        Shape::Wazuh => {
            // The decoder lower-cases the first letter of each name and doubles backslashes.
            let mut ed = Map::new();
            for (k, v) in fields {
                let mut name = k.to_string();
                name[..1].make_ascii_lowercase();
                ed.insert(name, json!(v.replace('\\', "\\\\")));
            }
            json!({"timestamp": "2024-03-01T01:00:00.000+0000", "rule": {"id": "61603"}, "decoder": {"name": "windows_eventchannel"},
                "data": {"win": {"system": {"providerName": provider, "eventID": eid.to_string(), "channel": channel, "computer": "WEB01"},
                "eventdata": Value::Object(ed)}}, "location": "EventChannel"})
        }
        Shape::SentinelObject => {
            json!({"TimeGenerated": "2024-03-01T01:00:00Z", "Computer": "WEB01", "Channel": channel,
            "EventID": eid, "Provider": provider, "Type": "WindowsEvent", "EventData": Value::Object(data)})
        }
        Shape::SentinelString => {
            json!({"TimeGenerated": "2024-03-01T01:00:00Z", "Computer": "WEB01", "Channel": channel,
            "EventID": eid, "Provider": provider, "Type": "WindowsEvent",
            "EventData": serde_json::to_string(&Value::Object(data)).expect("serializes")})
        }
        Shape::SecurityEventXml => {
            let mut x = String::from("<EventData xmlns=\"http://schemas.microsoft.com/win/2004/08/events/event\">");
            for (k, v) in fields {
                x.push_str(&format!("<Data Name=\"{}\">{}</Data>", xml_escape(k), xml_escape(v)));
            }
            x.push_str("</EventData>");
            json!({"TimeGenerated": "2024-03-01T01:00:00Z", "Computer": "WEB01", "Channel": channel, "EventID": eid,
                "EventSourceName": provider, "Type": "SecurityEvent", "EventData": x})
        }
        Shape::HecXml => json!({"time": 1709254800, "host": "WEB01", "source": format!("XmlWinEventLog:{channel}"),
            "sourcetype": "XmlWinEventLog", "event": xml_event(eid, channel, fields)}),
        Shape::FluentBit => {
            let inserts: Vec<Value> = if fields.is_empty() {
                Vec::new()
            } else {
                let layout = layouts(eid).iter().find(|l| fields.iter().all(|(k, _)| l.contains(k)))?;
                layout
                    .iter()
                    .map(|name| json!(fields.iter().find(|(k, _)| k == name).map_or("-", |(_, v)| *v)))
                    .collect()
            };
            json!({"ProviderName": provider, "EventID": eid, "Channel": channel, "Computer": "WEB01",
                "Message": "", "StringInserts": inserts})
        }
    })
}

fn ecs_path(field: &str) -> Option<&'static [&'static str]> {
    Some(match field {
        "Image" | "NewProcessName" => &["process", "executable"],
        "CommandLine" => &["process", "command_line"],
        "ParentImage" | "ParentProcessName" => &["process", "parent", "executable"],
        "OriginalFileName" => &["process", "pe", "original_file_name"],
        "TargetFilename" => &["file", "path"],
        "TargetObject" => &["registry", "path"],
        "Details" => &["registry", "data", "strings"],
        _ => return None,
    })
}

fn insert_path(obj: &mut Map<String, Value>, path: &[&str], value: Value) {
    let (last, parents) = path.split_last().expect("non-empty path");
    let mut cur = obj;
    for p in parents {
        cur = cur.entry(p.to_string()).or_insert_with(|| json!({})).as_object_mut().expect("object");
    }
    cur.insert(last.to_string(), value);
}

/// One record of event `eid` in `channel` with `fields` (Sysmon names), in `shape`.
pub fn event(shape: Shape, eid: i64, channel: &str, fields: &[(&str, &str)]) -> String {
    event_in(shape, eid, channel, fields).expect("a JSON shape carries any fields")
}

/// [`event`] in any shape; `None` when the shape cannot carry `fields`.
pub fn event_in(shape: Shape, eid: i64, channel: &str, fields: &[(&str, &str)]) -> Option<String> {
    let mut data = Map::new();
    for (k, v) in fields {
        data.insert(k.to_string(), json!(v));
    }
    if shape == Shape::Xml {
        return Some(xml_event(eid, channel, fields));
    }
    let record = match shape {
        Shape::Flat => {
            let mut o = Map::new();
            o.insert("EventTime".into(), json!("2024-03-01 01:00:00"));
            o.insert("EventID".into(), json!(eid));
            o.insert("Channel".into(), json!(channel));
            o.extend(data);
            Value::Object(o)
        }
        Shape::EvtxDump | Shape::EvtxDumpText => {
            let id = if shape == Shape::EvtxDump {
                json!(eid)
            } else {
                json!({"#attributes": {"Qualifiers": 0}, "#text": eid})
            };
            json!({"Event": {"#attributes": {"xmlns": "http://schemas.microsoft.com/win/2004/08/events/event"},
                "System": {"EventID": id, "Channel": channel, "Computer": "WEB01"}, "EventData": Value::Object(data)}})
        }
        Shape::Winlogbeat => json!({"@timestamp": "2024-03-01T01:00:00Z",
            "winlog": {"event_id": eid.to_string(), "channel": channel, "event_data": Value::Object(data)}}),
        Shape::Ecs => {
            let mut o = Map::new();
            insert_path(&mut o, &["@timestamp"], json!("2024-03-01T01:00:00Z"));
            insert_path(&mut o, &["event", "code"], json!(eid.to_string()));
            insert_path(&mut o, &["winlog", "channel"], json!(channel));
            for (k, v) in fields {
                match ecs_path(k) {
                    Some(["registry", "data", "strings"]) => {
                        insert_path(&mut o, &["registry", "data", "strings"], json!([v]))
                    }
                    Some(path) => insert_path(&mut o, path, json!(v)),
                    None => insert_path(&mut o, &["winlog", "event_data", k], json!(v)),
                }
            }
            Value::Object(o)
        }
        other => more_event(other, eid, channel, fields, data)?,
    };
    Some(serde_json::to_string(&record).expect("serializes"))
}

/// What kind of event a fixture describes.
#[derive(Clone, Copy, Debug)]
pub enum Kind {
    /// Process creation: Sysmon 1, and Security 4688 (NewProcessName / ParentProcessName).
    Process,
    /// Sysmon 11.
    File,
    /// Sysmon 13.
    Registry,
    /// A given event id and channel.
    Raw(i64, &'static str),
}

/// One record built from a fixture.
pub struct Record {
    /// Which shape and event, for messages.
    pub label: String,
    /// The JSON line.
    pub line: String,
    /// A Security 4688 record (no `OriginalFileName` there).
    pub security: bool,
}

/// Every record a fixture stands for: each shape, and for process creation also 4688.
pub fn records(kind: Kind, fields: &[(&str, &str)]) -> Vec<Record> {
    let mut out = Vec::new();
    for shape in every_shape() {
        let label = |what: &str| format!("{what} {shape:?}");
        let mut rec = |label: String, line: Option<String>, security: bool| {
            if let Some(line) = line {
                out.push(Record { label, line, security });
            }
        };
        match kind {
            Kind::Process => {
                rec(label("sysmon 1"), event_in(shape, 1, SYSMON, fields), false);
                let sec: Vec<(&str, &str)> = fields
                    .iter()
                    .filter(|(k, _)| *k != "OriginalFileName")
                    .map(|&(k, v)| match k {
                        "Image" => ("NewProcessName", v),
                        "ParentImage" => ("ParentProcessName", v),
                        _ => (k, v),
                    })
                    .collect();
                rec(label("security 4688"), event_in(shape, 4688, "Security", &sec), true);
            }
            Kind::File => rec(label("sysmon 11"), event_in(shape, 11, SYSMON, fields), false),
            Kind::Registry => rec(label("sysmon 13"), event_in(shape, 13, SYSMON, fields), false),
            Kind::Raw(eid, channel) => {
                rec(label(&format!("{eid} {channel}")), event_in(shape, eid, channel, fields), false)
            }
        }
    }
    out
}
