//! What a hunt found, for a person to read: per rule, how often it fired, on which hosts,
//! from which event time to which; and the hosts ranked by the risk of what fired on them.
//!
//! A stream collects it when [`crate::Config::summary`] asks, as part of its [`Stats`]
//! (so that the front ends that add up streams — several files, several threads — add it up
//! too): for each annotated record, the rules it matched, its host (`Computer`, wherever the
//! record's shape keeps it) and its time (`TimeCreated`'s `SystemTime`, else Sysmon's
//! `UtcTime`, else the shipper's time stamp; see the shape table). Host names and times come
//! from the records, so from whoever wrote them: what is kept is bounded — at most
//! [`MAX_HOSTS`] hosts of at most [`MAX_HOST_BYTES`] bytes each, at most
//! [`MAX_RULE_HOSTS`] (rule, host) pairs; what is past a bound is counted under
//! [`OTHER_HOSTS`], never dropped from the counts.
//!
//! [`Stats`]: crate::Stats

use std::collections::HashMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::rules::{Rule, Severity};

/// Most distinct hosts kept by name; records of any further host count under [`OTHER_HOSTS`].
pub const MAX_HOSTS: usize = 4096;
/// Longest host name kept (a DNS name's limit); longer ones are cut at a character boundary.
pub const MAX_HOST_BYTES: usize = 255;
/// Most (rule, host) pairs counted by host; past them a rule's detections on a host not
/// yet counted for it go under [`OTHER_HOSTS`].
pub const MAX_RULE_HOSTS: usize = 65_536;
/// The name records past [`MAX_HOSTS`] (or pairs past [`MAX_RULE_HOSTS`]) are counted under.
pub const OTHER_HOSTS: &str = "(other hosts)";
/// The name records without a host are counted under.
pub const NO_HOST: &str = "(no host)";
/// The keys of the two buckets: every name's key starts with `=`, theirs with `!`.
const NO_HOST_KEY: &str = "!no-host";
const OTHER_HOSTS_KEY: &str = "!other-hosts";

/// Hosts the text summary lists by name, per rule and overall (the JSON report lists all).
pub const TOP: usize = 10;

/// An instant, UTC: seconds since 1970 and nanoseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Time {
    secs: i64,
    nanos: u32,
}

impl Time {
    /// Reads the time stamps Windows events carry: `2019-03-19T23:34:57.4557230Z` (System
    /// time), `2019-03-19 23:34:57.455` (Sysmon's `UtcTime`, NXLog's `EventTime`), with or
    /// without a fraction, with `Z`, an offset (`+01:00`, `-0500`) or no zone (read as UTC).
    /// Anything else is no time.
    pub fn parse(text: &str) -> Option<Time> {
        let b = text.trim().as_bytes();
        let num = |range: std::ops::Range<usize>| -> Option<i64> {
            let digits = b.get(range)?;
            digits.iter().try_fold(0i64, |n, &d| d.is_ascii_digit().then(|| n * 10 + i64::from(d - b'0')))
        };
        if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
            return None;
        }
        if b[13] != b':' || b[16] != b':' {
            return None;
        }
        let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
        let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
        if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
            return None;
        }
        if hour > 23 || minute > 59 || second > 60 {
            return None;
        }
        let mut i = 19;
        let mut nanos = 0u32;
        if b.get(i) == Some(&b'.') {
            i += 1;
            let start = i;
            while b.get(i).is_some_and(u8::is_ascii_digit) {
                if i - start < 9 {
                    nanos = nanos * 10 + u32::from(b[i] - b'0');
                }
                i += 1;
            }
            if i == start {
                return None;
            }
            for _ in (i - start)..9 {
                nanos *= 10;
            }
        }
        // Fluent Bit writes `2024-03-01 01:00:29 +0000`.
        if b.get(i) == Some(&b' ') && matches!(b.get(i + 1), Some(b'+' | b'-' | b'Z')) {
            i += 1;
        }
        let offset = match b.get(i..) {
            None | Some([]) | Some([b'Z' | b'z']) => 0,
            Some([sign @ (b'+' | b'-'), rest @ ..]) => {
                let (h, m) = match rest {
                    [h1, h2, b':', m1, m2] | [h1, h2, m1, m2] => (num_pair(*h1, *h2)?, num_pair(*m1, *m2)?),
                    [h1, h2] => (num_pair(*h1, *h2)?, 0),
                    _ => return None,
                };
                if h > 23 || m > 59 {
                    return None;
                }
                let minutes = h * 60 + m;
                if *sign == b'+' { minutes * 60 } else { -minutes * 60 }
            }
            Some(_) => return None,
        };
        let days = days_from_civil(year, month, day);
        let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset;
        Some(Time { secs, nanos })
    }
}

fn num_pair(a: u8, b: u8) -> Option<i64> {
    (a.is_ascii_digit() && b.is_ascii_digit()).then(|| i64::from(a - b'0') * 10 + i64::from(b - b'0'))
}

fn is_leap(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days from 1970-01-01 to a date of the proleptic Gregorian calendar (Howard Hinnant's
/// `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day counted from 1970-01-01 (the inverse of [`days_from_civil`]).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

/// RFC 3339 in UTC, the fraction without its trailing zeros: `2019-03-19T23:34:57.455723Z`.
impl std::fmt::Display for Time {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (days, rest) = (self.secs.div_euclid(86_400), self.secs.rem_euclid(86_400));
        let (y, m, d) = civil_from_days(days);
        write!(f, "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}", rest / 3600, rest / 60 % 60, rest % 60)?;
        if self.nanos > 0 {
            let fraction = format!("{:09}", self.nanos);
            write!(f, ".{}", fraction.trim_end_matches('0'))?;
        }
        f.write_str("Z")
    }
}

impl Serialize for Time {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// The first and last of some times.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Span {
    first: Option<Time>,
    last: Option<Time>,
}

impl Span {
    fn add(&mut self, time: Option<Time>) {
        let Some(t) = time else { return };
        self.first = Some(self.first.map_or(t, |f| f.min(t)));
        self.last = Some(self.last.map_or(t, |l| l.max(t)));
    }

    fn merge(&mut self, other: Span) {
        self.add(other.first);
        self.add(other.last);
    }
}

/// One rule's detections.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct RuleHits {
    count: u64,
    span: Span,
    /// Detections by host index.
    hosts: HashMap<u32, u64>,
}

/// One host's detections.
#[derive(Clone, Debug, PartialEq, Eq)]
struct HostHits {
    /// Its key in [`Hunt::by_name`] (a bucket's, or the name's).
    key: Box<str>,
    /// The name as first seen.
    name: Box<str>,
    /// Records annotated.
    records: u64,
    /// The sum of the risk scores of the rules they matched.
    risk: u64,
    span: Span,
}

/// What a hunt found (see the module's documentation).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Hunt {
    /// By rule index.
    rules: Vec<RuleHits>,
    /// By host index.
    hosts: Vec<HostHits>,
    /// Host index by key: `=` and the name in ASCII lower case (Windows host names are
    /// case-insensitive), or a bucket's key.
    by_name: HashMap<Box<str>, u32>,
    /// (rule, host) pairs counted.
    pairs: usize,
    /// Records annotated whose time could not be read.
    without_time: u64,
}

impl Hunt {
    /// Forgets everything (keeping the memory).
    pub fn clear(&mut self) {
        self.rules.clear();
        self.hosts.clear();
        self.by_name.clear();
        self.pairs = 0;
        self.without_time = 0;
    }

    /// The findings for another rule set (a reload): `map[old]` is the rule's index in the
    /// new set, or `None` when it has gone (its findings go; the hosts' totals stay).
    pub fn rekey(&mut self, map: &[Option<usize>]) {
        let old = std::mem::take(&mut self.rules);
        for (i, hits) in old.into_iter().enumerate() {
            let Some(new) = map.get(i).copied().flatten() else {
                self.pairs -= hits.hosts.len();
                continue;
            };
            if self.rules.len() <= new {
                self.rules.resize_with(new + 1, RuleHits::default);
            }
            self.rules[new] = hits;
        }
    }

    /// Whether nothing was found.
    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }

    /// One annotated record: the rules it matched (indices into `rules`), its host and the
    /// text of its time, as the record holds them.
    pub fn record(&mut self, rules: &[Rule], matched: &[u32], host: Option<&str>, time: Option<&str>) {
        self.record_at(rules, matched, host, time.and_then(Time::parse));
    }

    /// [`Hunt::record`] with the record's time already read.
    pub fn record_at(&mut self, rules: &[Rule], matched: &[u32], host: Option<&str>, time: Option<Time>) {
        if matched.is_empty() {
            return;
        }
        let span = Span { first: time, last: time };
        let risk = matched.iter().filter_map(|&r| rules.get(r as usize)).map(|r| u64::from(r.meta.risk_score)).sum();
        let h = self.add_host(host, 1, risk, span);
        self.without_time += u64::from(time.is_none());
        for &r in matched {
            self.add_rule(r as usize, 1, span);
            self.add_pair(r as usize, h, 1);
        }
    }

    /// Counts `records` records on `host`, with their total `risk` and time `span`.
    fn add_host(&mut self, host: Option<&str>, records: u64, risk: u64, span: Span) -> u32 {
        let h = self.host(host);
        let host = &mut self.hosts[h as usize];
        host.records += records;
        host.risk += risk;
        host.span.merge(span);
        h
    }

    /// Counts `n` detections of rule `r` in time `span`.
    fn add_rule(&mut self, r: usize, n: u64, span: Span) {
        if self.rules.len() <= r {
            self.rules.resize_with(r + 1, RuleHits::default);
        }
        self.rules[r].count += n;
        self.rules[r].span.merge(span);
    }

    /// Counts `n` detections of rule `r` on host `h` (under [`OTHER_HOSTS`] when the pairs
    /// are at their bound).
    fn add_pair(&mut self, r: usize, h: u32, n: u64) {
        let key =
            if self.rules[r].hosts.contains_key(&h) || self.pairs < MAX_RULE_HOSTS { h } else { self.other_host() };
        let entry = self.rules[r].hosts.entry(key).or_insert(0);
        if *entry == 0 {
            self.pairs += 1;
        }
        *entry += n;
    }

    /// The index of `host` (added if there is room), of [`NO_HOST`] or of [`OTHER_HOSTS`].
    /// The two buckets have keys of their own (`!…`; a name's key is `=` and the name), so a
    /// record whose `Computer` reads `(no host)` is a host of that name, not hidden in the
    /// bucket.
    fn host(&mut self, host: Option<&str>) -> u32 {
        let name = match host.map(str::trim) {
            None | Some("") => return self.bucket(NO_HOST_KEY, NO_HOST),
            Some(name) => cut(name, MAX_HOST_BYTES),
        };
        let key = format!("={}", name.to_ascii_lowercase());
        if let Some(&h) = self.by_name.get(key.as_str()) {
            return h;
        }
        if self.hosts.len() >= MAX_HOSTS {
            return self.other_host();
        }
        self.insert_host(name, key)
    }

    fn other_host(&mut self) -> u32 {
        self.bucket(OTHER_HOSTS_KEY, OTHER_HOSTS)
    }

    fn bucket(&mut self, key: &str, name: &str) -> u32 {
        match self.by_name.get(key) {
            Some(&h) => h,
            None => self.insert_host(name, key.to_string()),
        }
    }

    fn insert_host(&mut self, name: &str, key: String) -> u32 {
        let h = u32::try_from(self.hosts.len()).expect("hosts are bounded");
        let key = key.into_boxed_str();
        self.hosts.push(HostHits { key: key.clone(), name: name.into(), records: 0, risk: 0, span: Span::default() });
        self.by_name.insert(key, h);
        h
    }

    /// Adds what another stream found.
    pub fn merge(&mut self, other: &Hunt) {
        let hosts: Vec<u32> = other
            .hosts
            .iter()
            .map(|x| {
                let h = match &*x.key {
                    NO_HOST_KEY => self.bucket(NO_HOST_KEY, NO_HOST),
                    OTHER_HOSTS_KEY => self.other_host(),
                    _ => self.host(Some(&x.name)),
                };
                let host = &mut self.hosts[h as usize];
                host.records += x.records;
                host.risk += x.risk;
                host.span.merge(x.span);
                h
            })
            .collect();
        for (r, hits) in other.rules.iter().enumerate().filter(|(_, hits)| hits.count > 0) {
            self.add_rule(r, hits.count, hits.span);
            for (&h, &n) in &hits.hosts {
                self.add_pair(r, hosts[h as usize], n);
            }
        }
        self.without_time += other.without_time;
    }

    /// The report, naming the rules (`rules` in the order the indices refer to).
    pub fn report<'a>(&'a self, rules: &'a [Rule]) -> HuntReport<'a> {
        let mut fired: Vec<RuleReport<'a>> = self
            .rules
            .iter()
            .enumerate()
            .filter(|(_, hits)| hits.count > 0)
            .filter_map(|(r, hits)| {
                let rule = rules.get(r)?;
                let mut hosts: Vec<HostCount<'a>> = hits
                    .hosts
                    .iter()
                    .map(|(&h, &count)| HostCount { host: &self.hosts[h as usize].name, count })
                    .collect();
                hosts.sort_by(|a, b| b.count.cmp(&a.count).then(a.host.cmp(b.host)));
                Some(RuleReport {
                    rule: &rule.meta.slug,
                    title: &rule.meta.title,
                    severity: rule.meta.severity,
                    risk_score: rule.meta.risk_score,
                    mitre: &rule.meta.mitre,
                    count: hits.count,
                    first: hits.span.first,
                    last: hits.span.last,
                    hosts,
                })
            })
            .collect();
        fired.sort_by(|a, b| b.risk_score.cmp(&a.risk_score).then(b.count.cmp(&a.count)).then(a.rule.cmp(b.rule)));
        let mut hosts: Vec<HostReport<'a>> = self
            .hosts
            .iter()
            .enumerate()
            .filter(|(_, host)| host.records > 0)
            .map(|(h, host)| HostReport {
                host: &host.name,
                risk: host.risk,
                records: host.records,
                rules: self.rules.iter().filter(|hits| hits.hosts.contains_key(&(h as u32))).count(),
                first: host.span.first,
                last: host.span.last,
            })
            .collect();
        hosts.sort_by(|a, b| b.risk.cmp(&a.risk).then(b.records.cmp(&a.records)).then(a.host.cmp(b.host)));
        let mut span = Span::default();
        self.hosts.iter().for_each(|h| span.merge(h.span));
        HuntReport {
            records: self.hosts.iter().map(|h| h.records).sum(),
            detections: fired.iter().map(|r| r.count).sum(),
            first: span.first,
            last: span.last,
            records_without_time: self.without_time,
            rule_count: fired.len(),
            host_count: hosts.len(),
            rules: fired,
            hosts,
        }
    }
}

/// `text` cut to at most `max` bytes at a character boundary.
fn cut(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// [`Hunt`] with the rules named, for printing: `summary` in `--stats-format json`.
#[derive(Debug, Serialize)]
pub struct HuntReport<'a> {
    /// Records annotated with a detection.
    pub records: u64,
    /// Detections (a record matching two rules is two).
    pub detections: u64,
    /// The earliest event time of a detection.
    pub first: Option<Time>,
    /// The latest.
    pub last: Option<Time>,
    /// Records annotated whose time could not be read (not in `first`/`last`).
    pub records_without_time: u64,
    /// Rules that fired.
    pub rule_count: usize,
    /// Hosts they fired on.
    pub host_count: usize,
    /// The rules that fired, the riskiest first.
    pub rules: Vec<RuleReport<'a>>,
    /// The hosts they fired on, by total risk (the text shows the first [`TOP`]).
    pub hosts: Vec<HostReport<'a>>,
}

/// One rule that fired.
#[derive(Debug, Serialize)]
pub struct RuleReport<'a> {
    /// The rule's slug (as in the annotation).
    pub rule: &'a str,
    /// Its title.
    pub title: &'a str,
    /// Its severity.
    pub severity: Severity,
    /// Its risk score.
    pub risk_score: u8,
    /// Its ATT&CK technique ids.
    pub mitre: &'a [String],
    /// Its detections.
    pub count: u64,
    /// The earliest event time of one.
    pub first: Option<Time>,
    /// The latest.
    pub last: Option<Time>,
    /// The hosts it fired on, by detections (the text shows the first [`TOP`]).
    pub hosts: Vec<HostCount<'a>>,
}

/// Detections on a host.
#[derive(Debug, Serialize)]
pub struct HostCount<'a> {
    /// The host's name.
    pub host: &'a str,
    /// Detections.
    pub count: u64,
}

/// A host, by what fired on it.
#[derive(Debug, Serialize)]
pub struct HostReport<'a> {
    /// The host's name.
    pub host: &'a str,
    /// The sum of the risk scores of every detection on it.
    pub risk: u64,
    /// Records annotated.
    pub records: u64,
    /// Rules that fired on it.
    pub rules: usize,
    /// The earliest event time of a detection on it.
    pub first: Option<Time>,
    /// The latest.
    pub last: Option<Time>,
}

/// `name` with its control characters (newlines, escape sequences: names come from the
/// records) written as `\u{..}`, so that a host name cannot forge lines of the summary or
/// drive the terminal.
fn printable(name: &str) -> std::borrow::Cow<'_, str> {
    if !name.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(name);
    }
    std::borrow::Cow::Owned(
        name.chars().map(|c| if c.is_control() { c.escape_unicode().to_string() } else { c.to_string() }).collect(),
    )
}

fn plural(n: u64, noun: &str) -> String {
    if n == 1 { format!("1 {noun}") } else { format!("{n} {noun}s") }
}

fn span_text(first: Option<Time>, last: Option<Time>) -> String {
    match (first, last) {
        (Some(f), Some(l)) if f == l => f.to_string(),
        (Some(f), Some(l)) => format!("{f} .. {l}"),
        _ => "no event time".into(),
    }
}

impl HuntReport<'_> {
    /// The report as text for people.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        if self.records == 0 {
            let _ = writeln!(s, "iis-tagger summary: no detections");
            return s;
        }
        let _ = writeln!(
            s,
            "iis-tagger summary: {} in {}, {} on {}, {}",
            plural(self.detections, "detection"),
            plural(self.records, "record"),
            plural(self.rule_count as u64, "rule"),
            plural(self.host_count as u64, "host"),
            span_text(self.first, self.last)
        );
        if self.records_without_time > 0 {
            let _ = writeln!(s, "  ({} records without a readable event time)", self.records_without_time);
        }
        let width = self.rules.iter().map(|r| r.rule.len()).max().unwrap_or(0);
        let _ = writeln!(s, "  {:<8} {:>4} {:>7}  {:<width$}  ATT&CK", "severity", "risk", "count", "rule");
        for r in &self.rules {
            let _ = writeln!(
                s,
                "  {:<8} {:>4} {:>7}  {:<width$}  {}",
                r.severity.as_str(),
                r.risk_score,
                r.count,
                r.rule,
                r.mitre.join(" ")
            );
            let hosts: Vec<String> =
                r.hosts.iter().take(TOP).map(|h| format!("{} ({})", printable(h.host), h.count)).collect();
            let more = if r.hosts.len() > TOP { format!(" and {} more", r.hosts.len() - TOP) } else { String::new() };
            let _ = writeln!(s, "      {}; hosts: {}{more}", span_text(r.first, r.last), hosts.join(", "));
        }
        let _ = writeln!(s, "  top hosts by risk:");
        let width = self.hosts.iter().take(TOP).map(|h| printable(h.host).chars().count()).max().unwrap_or(0);
        for h in self.hosts.iter().take(TOP) {
            let _ = writeln!(
                s,
                "    {:<width$}  risk {:>6}  {:>6} records  {:>3} rules  {}",
                printable(h.host),
                h.risk,
                h.records,
                h.rules,
                span_text(h.first, h.last)
            );
        }
        if self.hosts.len() > TOP {
            let _ = writeln!(s, "    and {} more hosts", self.hosts.len() - TOP);
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(text: &str) -> String {
        Time::parse(text).map(|t| t.to_string()).unwrap_or_else(|| "none".into())
    }

    #[test]
    fn times_in_the_forms_events_carry() {
        assert_eq!(t("2019-03-19T23:34:57.4557230Z"), "2019-03-19T23:34:57.455723Z");
        assert_eq!(t("2024-03-01 01:00:02.417"), "2024-03-01T01:00:02.417Z");
        assert_eq!(t("2024-03-01 01:00:02"), "2024-03-01T01:00:02Z");
        assert_eq!(t("2024-03-01T01:00:02+01:30"), "2024-02-29T23:30:02Z");
        assert_eq!(t("2023-12-31T23:00:00-0100"), "2024-01-01T00:00:00Z");
        assert_eq!(t("2024-03-01 01:00:29 +0000"), "2024-03-01T01:00:29Z");
        assert_eq!(t("1969-12-31T23:59:59.5Z"), "1969-12-31T23:59:59.5Z");
        assert_eq!(t("2019-03-19T23:34:57.1234567891234Z"), "2019-03-19T23:34:57.123456789Z");
        for bad in ["", "2019-02-29T00:00:00Z", "2019-13-01T00:00:00Z", "2019-03-19", "2019-03-19T23:34:57.Z"] {
            assert_eq!(t(bad), "none", "{bad}");
        }
        for bad in
            ["2019-03-19T24:00:00Z", "2019-03-19T23:34:57+2", "2019-03-19T23:34:57 UTC", "２０１９-03-19T00:00:00Z"]
        {
            assert_eq!(t(bad), "none", "{bad}");
        }
    }

    #[test]
    fn days_round_trip() {
        for days in (-800_000..800_000).step_by(997) {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
            assert!((1..=12).contains(&m) && d >= 1 && d <= days_in_month(y, m));
        }
    }

    fn rules() -> Vec<Rule> {
        crate::RuleSet::builtin().expect("built-ins").rules().to_vec()
    }

    #[test]
    fn counts_hosts_times_and_risk() {
        let rules = rules();
        let mut h = Hunt::default();
        h.record(&rules, &[3], Some("WEB01"), Some("2024-03-01 01:00:02.417"));
        h.record(&rules, &[3, 4], Some("web01"), Some("2024-03-01T00:59:00Z"));
        h.record(&rules, &[4], Some("DB02"), None);
        h.record(&rules, &[4], None, Some("not a time"));
        h.record(&rules, &[], Some("IGNORED"), None);
        let report = h.report(&rules);
        assert_eq!((report.records, report.detections, report.rule_count, report.host_count), (4, 5, 2, 3));
        assert_eq!(report.records_without_time, 2);
        assert_eq!(report.first.map(|t| t.to_string()).as_deref(), Some("2024-03-01T00:59:00Z"));
        assert_eq!(report.last.map(|t| t.to_string()).as_deref(), Some("2024-03-01T01:00:02.417Z"));
        let web = &report.hosts[0];
        assert_eq!(web.host, "WEB01", "first spelling kept, case folded");
        let (r3, r4) = (u64::from(rules[3].meta.risk_score), u64::from(rules[4].meta.risk_score));
        assert_eq!((web.risk, web.records, web.rules), (2 * r3 + r4, 2, 2));
        let r4_report = report.rules.iter().find(|r| r.rule == rules[4].meta.slug).expect("rule 4");
        assert_eq!((r4_report.count, r4_report.hosts.len()), (3, 3));
        assert!(report.hosts.iter().any(|h| h.host == NO_HOST));
        assert!(!report.to_text().is_empty());
        // A record naming its host as the bucket is a host of that name, not in the bucket.
        let mut h = Hunt::default();
        h.record(&rules, &[3], Some(NO_HOST), None);
        h.record(&rules, &[3], None, None);
        h.record(&rules, &[3], Some("evil\n  top hosts by risk:\u{1b}[2J"), None);
        let report = h.report(&rules);
        assert_eq!(report.hosts.len(), 3);
        let text = report.to_text();
        let forged = text.lines().filter(|l| l.trim_start().starts_with("top hosts by risk")).count();
        assert!(!text.contains('\u{1b}') && forged == 1, "{text}");
    }

    #[test]
    fn hosts_past_the_bound_are_counted_not_kept() {
        let rules = rules();
        let mut h = Hunt::default();
        let long = "é".repeat(500);
        for i in 0..MAX_HOSTS + 500 {
            h.record(&rules, &[3], Some(&format!("{i}{long}")), None);
        }
        assert_eq!(h.hosts.len(), MAX_HOSTS + 1, "the bound and the other-hosts entry");
        assert!(h.hosts.iter().all(|x| x.name.len() <= MAX_HOST_BYTES));
        let report = h.report(&rules);
        assert_eq!(report.records, (MAX_HOSTS + 500) as u64);
        assert_eq!(report.rules[0].count, (MAX_HOSTS + 500) as u64);
    }

    #[test]
    fn merging_equals_one_stream() {
        let rules = rules();
        let records: Vec<(Vec<u32>, Option<String>, Option<&str>)> = (0..200)
            .map(|i| {
                let host = (i % 7 != 0).then(|| format!("host{}", i % 13));
                let time = ["2024-03-01T00:00:00Z", "2024-03-02 10:00:00", "bad"][i % 3];
                (vec![(i % 8) as u32], host, Some(time))
            })
            .collect();
        let mut one = Hunt::default();
        let (mut a, mut b) = (Hunt::default(), Hunt::default());
        for (i, (m, host, time)) in records.iter().enumerate() {
            one.record(&rules, m, host.as_deref(), *time);
            let part = if i % 2 == 0 { &mut a } else { &mut b };
            part.record(&rules, m, host.as_deref(), *time);
        }
        let mut merged = Hunt::default();
        merged.merge(&a);
        merged.merge(&b);
        let json = |h: &Hunt| serde_json::to_string(&h.report(&rules)).expect("serializes");
        assert_eq!(json(&merged), json(&one));
    }
}
