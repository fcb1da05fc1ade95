//! The annotation (ARCHITECTURE §2) and how it is put into a record.
//!
//! Each rule's detection object is serialized once, with `serde_json`, when the tagger is
//! built; a matching record gets `"<key>":{"risk_score":N,"severity":"…","detections":[…]}`
//! assembled from those pieces, and `"incomplete":["…"]` after the detections when the
//! record could not be evaluated in full (see [`Incomplete`]: such a record is annotated
//! even with no detection, never passed as clean). Nothing in it comes from the record. It is inserted right
//! before the record's final `}`, so removing it gives back the input bytes exactly.

use serde::Serialize;

use crate::event::Incomplete;
use crate::rules::{Rule, Severity};

#[derive(Serialize)]
struct Detection<'a> {
    rule: &'a str,
    title: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    source: &'a str,
    mitre: &'a [String],
    tactics: &'a [String],
    risk_score: u8,
    severity: Severity,
    /// The rule's authors, for rules loaded with `--rules` (the Detection Rule License of
    /// SigmaHQ's rules asks that they travel with every match). The built-ins keep the
    /// ARCHITECTURE §2 shape: their vendors are in `source`.
    #[serde(skip_serializing_if = "Option::is_none")]
    author: Option<&'a str>,
}

/// Builds annotations for one rule set and key.
#[derive(Debug, Clone)]
pub struct Annotator {
    /// `"<key>":` with the key JSON-escaped.
    key_prefix: Vec<u8>,
    /// The key, as the name of the XML element.
    key: String,
    /// Per rule, its serialized detection object.
    detections: Vec<Vec<u8>>,
    /// Per rule, its `<detection …>…</detection>` element.
    xml_detections: Vec<Vec<u8>>,
    risks: Vec<u8>,
}

impl Annotator {
    /// Serializes every rule's detection object once.
    pub fn new(key: &str, rules: &[Rule]) -> Annotator {
        let mut key_prefix = serde_json::to_vec(key).expect("a string serializes");
        key_prefix.push(b':');
        let detections = rules
            .iter()
            .map(|r| {
                let m = &r.meta;
                let d = Detection {
                    rule: &m.slug,
                    title: &m.title,
                    id: m.id.as_deref(),
                    source: &m.source,
                    mitre: &m.mitre,
                    tactics: &m.tactics,
                    risk_score: m.risk_score,
                    severity: m.severity,
                    author: m.author.as_deref().filter(|_| !m.origin.starts_with("builtin:")),
                };
                serde_json::to_vec(&d).expect("a detection serializes")
            })
            .collect();
        let xml_detections = rules.iter().map(xml_detection).collect();
        Annotator {
            key_prefix,
            key: key.to_string(),
            detections,
            xml_detections,
            risks: rules.iter().map(|r| r.meta.risk_score).collect(),
        }
    }

    /// Appends the XML element `<key risk_score="N" severity="…">` with one `<detection>`
    /// per rule of `matched` and an `<incomplete>` per reason, for a Windows XML event (it
    /// goes right before the event's `</Event>`). The key must be an XML name
    /// ([`crate::xml::is_name`]; [`crate::Tagger::new`] checks it).
    pub fn write_xml(&self, matched: &[u32], incomplete: Incomplete, out: &mut Vec<u8>) {
        let risk = matched.iter().map(|&r| self.risks[r as usize]).max().unwrap_or(0);
        out.push(b'<');
        out.extend_from_slice(self.key.as_bytes());
        out.extend_from_slice(b" risk_score=\"");
        out.extend_from_slice(risk.to_string().as_bytes());
        out.extend_from_slice(b"\" severity=\"");
        out.extend_from_slice(Severity::from_risk(risk).as_str().as_bytes());
        out.extend_from_slice(b"\">");
        for &r in matched {
            out.extend_from_slice(&self.xml_detections[r as usize]);
        }
        for name in incomplete.names() {
            out.extend_from_slice(b"<incomplete>");
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b"</incomplete>");
        }
        out.extend_from_slice(b"</");
        out.extend_from_slice(self.key.as_bytes());
        out.push(b'>');
    }

    /// Appends the member `"<key>":{...}` for the rules `matched` (indices, in order), and
    /// why the record was not fully evaluated, if it was not.
    pub fn write(&self, matched: &[u32], incomplete: Incomplete, out: &mut Vec<u8>) {
        let risk = matched.iter().map(|&r| self.risks[r as usize]).max().unwrap_or(0);
        out.extend_from_slice(&self.key_prefix);
        out.extend_from_slice(b"{\"risk_score\":");
        out.extend_from_slice(risk.to_string().as_bytes());
        out.extend_from_slice(b",\"severity\":\"");
        out.extend_from_slice(Severity::from_risk(risk).as_str().as_bytes());
        out.extend_from_slice(b"\",\"detections\":[");
        for (i, &r) in matched.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(&self.detections[r as usize]);
        }
        out.push(b']');
        if !incomplete.is_empty() {
            out.extend_from_slice(b",\"incomplete\":[");
            for (i, name) in incomplete.names().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.push(b'"');
                out.extend_from_slice(name.as_bytes());
                out.push(b'"');
            }
            out.push(b']');
        }
        out.push(b'}');
    }
}

/// A rule's `<detection>` element: the fields of the JSON detection as attributes, its
/// ATT&CK ids and tactics as child elements.
fn xml_detection(rule: &Rule) -> Vec<u8> {
    let m = &rule.meta;
    let mut out = b"<detection".to_vec();
    let mut attribute = |name: &str, value: &str| {
        out.push(b' ');
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b"=\"");
        crate::xml::escape_into(value, &mut out);
        out.push(b'"');
    };
    attribute("rule", &m.slug);
    attribute("title", &m.title);
    if let Some(id) = &m.id {
        attribute("id", id);
    }
    attribute("source", &m.source);
    attribute("risk_score", &m.risk_score.to_string());
    attribute("severity", m.severity.as_str());
    if let Some(author) = m.author.as_deref().filter(|_| !m.origin.starts_with("builtin:")) {
        attribute("author", author);
    }
    out.push(b'>');
    for (element, values) in [("mitre", &m.mitre), ("tactic", &m.tactics)] {
        for v in values {
            out.extend_from_slice(format!("<{element}>").as_bytes());
            crate::xml::escape_into(v, &mut out);
            out.extend_from_slice(format!("</{element}>").as_bytes());
        }
    }
    out.extend_from_slice(b"</detection>");
    out
}

/// Offset of the final `}` of a line that holds one JSON object (only JSON whitespace
/// may follow it).
pub fn closing_brace(line: &[u8]) -> Option<usize> {
    let end = line.iter().rposition(|b| !matches!(b, b' ' | b'\t' | b'\r' | b'\n'))?;
    (line[end] == b'}').then_some(end)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::RuleSet;

    #[test]
    fn design_example_shape() {
        let set = RuleSet::builtin().expect("built-ins");
        let a = Annotator::new("iis_tagger", set.rules());
        let mut out = Vec::new();
        a.write(&[0], Incomplete::default(), &mut out);
        let want = r#""iis_tagger":{"risk_score":64,"severity":"high","detections":[{"rule":"windows_iis_components_add_new_module","title":"Windows IIS Components Add New Module","id":"38fe731c-1f13-43d4-b878-a5bbe44807e3","source":"Splunk","mitre":["T1505","T1505.004"],"tactics":["persistence"],"risk_score":64,"severity":"high"}]}"#;
        assert_eq!(String::from_utf8(out).expect("utf8"), want);
    }

    #[test]
    fn top_level_risk_is_the_maximum() {
        let set = RuleSet::builtin().expect("built-ins");
        let a = Annotator::new("k\"ey", set.rules());
        let mut out = Vec::new();
        a.write(&[2, 3], Incomplete::default(), &mut out);
        let text = String::from_utf8(out).expect("utf8");
        assert!(text.starts_with(r#""k\"ey":{"risk_score":99,"severity":"critical","#), "{text}");
    }

    #[test]
    fn the_xml_element() {
        let set = RuleSet::builtin().expect("built-ins");
        let a = Annotator::new("iis_tagger", set.rules());
        let mut out = Vec::new();
        let mut why = Incomplete::OCCURRENCES;
        why.insert(Incomplete::VIEWS);
        a.write_xml(&[3], why, &mut out);
        let want = r#"<iis_tagger risk_score="99" severity="critical"><detection rule="webshell_child_process" title="Detect Server Software Component (WebShell_ChildProcess)" id="032d7594-58e1-4e03-b6cd-45ab0fdf8f4f" source="Sumo Logic" risk_score="99" severity="critical"><mitre>T1505</mitre><mitre>T1505.003</mitre><tactic>persistence</tactic></detection><incomplete>occurrences</incomplete><incomplete>views</incomplete></iis_tagger>"#;
        assert_eq!(String::from_utf8(out).expect("utf8"), want);
    }

    #[test]
    fn closing_brace_skips_trailing_whitespace() {
        assert_eq!(closing_brace(b"{\"a\":1} \r"), Some(6));
        assert_eq!(closing_brace(b"{ }"), Some(2));
        assert_eq!(closing_brace(b"[1]"), None);
        assert_eq!(closing_brace(b""), None);
    }
}
