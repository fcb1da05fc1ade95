//! The rule set of a long-running mode, and its reloads (ARCHITECTURE §5.4): built from
//! the rule options at start-up, built again on SIGHUP or — with `--watch-rules` — when
//! a rule, filter or shape file changes, on a thread of its own, and stored in the
//! [`Current`] every stream reads. A set that does not build is refused whole: the error
//! (file:line:column) goes to stderr and the metrics, and the old set keeps running.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use iis_tagger::reload::Current;
use iis_tagger::{Config, Driver, RuleError, Stats, Tagger};

use super::args::RuleArgs;
use super::common::{Failure, build_tagger};
use super::signal;

/// How often the reload thread looks for a SIGHUP.
const HANGUP_POLL: Duration = Duration::from_millis(50);

/// How often `--watch-rules` looks at the files.
const WATCH_POLL: Duration = Duration::from_secs(1);

/// The rules of a run, reloadable.
pub struct Live {
    rules: RuleArgs,
    config: Config,
    current: Arc<Current>,
}

impl Live {
    /// Builds the first set; the rules `--skip-invalid-rules` left out are returned.
    pub fn load(rules: &RuleArgs, config: Config) -> Result<(Live, Vec<RuleError>), Failure> {
        let digest = digest(rules);
        let (tagger, skipped) = build_tagger(rules, config.clone())?;
        let current = Arc::new(Current::new(Arc::new(tagger), digest));
        Ok((Live { rules: rules.clone(), config, current }, skipped))
    }

    /// The set streams read.
    pub fn current(&self) -> &Arc<Current> {
        &self.current
    }

    /// The set in use now.
    pub fn tagger(&self) -> Arc<Tagger> {
        self.current.get()
    }

    /// Builds the set again and, if it builds, stores it; else keeps the old one and says
    /// why. `why`: what asked for it (for the message).
    pub fn reload(&self, why: &str) -> bool {
        let digest = digest(&self.rules);
        match build_tagger(&self.rules, self.config.clone()) {
            Ok((tagger, skipped)) => {
                let (rules, filters) = (tagger.rules().rules().len(), tagger.rules().filters().len());
                self.current.set(Arc::new(tagger), digest.clone());
                let skipped =
                    if skipped.is_empty() { String::new() } else { format!(", {} rule files skipped", skipped.len()) };
                super::notes::say(&format!(
                    "iis-tagger: rules reloaded ({why}): {rules} rules, {filters} filters{skipped}, digest {digest}"
                ));
                true
            }
            Err(e) => {
                super::notes::say(&format!(
                    "iis-tagger: reload ({why}) refused, the rules loaded before keep running: {e}"
                ));
                self.current.refused(e.to_string());
                false
            }
        }
    }

    /// Starts the reload thread: SIGHUP always, the files with `--watch-rules`. The thread
    /// lives as long as the process.
    pub fn watch(self: &Arc<Self>) -> Result<(), Failure> {
        signal::install_hangup().map_err(|e| Failure::setup(format!("installing the SIGHUP handler: {e}")))?;
        let live = Arc::clone(self);
        std::thread::Builder::new()
            .name("reload".into())
            .spawn(move || live.watch_loop())
            .map_err(|e| Failure::setup(format!("starting the reload thread: {e}")))?;
        Ok(())
    }

    fn watch_loop(&self) {
        let mut hangups = signal::hangups();
        let mut loaded = self.rules.watch_rules.then(|| fingerprint(&self.rules));
        let mut pending: Option<Fingerprint> = None;
        let mut last_look = std::time::Instant::now();
        loop {
            std::thread::sleep(HANGUP_POLL);
            // Old sets are freed here, not by the last stream to leave them.
            self.current.free_retired();
            let now = signal::hangups();
            if now != hangups {
                hangups = now;
                self.reload("SIGHUP");
                if loaded.is_some() {
                    loaded = Some(fingerprint(&self.rules));
                    pending = None;
                }
                continue;
            }
            let Some(seen) = &loaded else { continue };
            if last_look.elapsed() < WATCH_POLL {
                continue;
            }
            last_look = std::time::Instant::now();
            let fresh = fingerprint(&self.rules);
            if fresh == *seen {
                pending = None;
                continue;
            }
            // Changed: reloaded once it has stayed the same for a look (an editor or a
            // deployment writes in several steps).
            if pending.as_ref() == Some(&fresh) {
                self.reload("a rule file changed");
                loaded = Some(fresh);
                pending = None;
            } else {
                pending = Some(fresh);
            }
        }
    }
}

/// What the files of the rule options are now: each file's path, length, inode and times
/// of change (or why it cannot be listed). A rewrite that keeps the length within the
/// file system's time resolution is not seen: SIGHUP reloads whatever the files look like.
type Fingerprint = Vec<(PathBuf, Result<(u64, u64, SystemTime, i64, i64), String>)>;

/// The files a set is built from: every rule and filter file, and the shape files.
fn files(rules: &RuleArgs) -> Vec<Result<PathBuf, String>> {
    let mut out = Vec::new();
    for path in rules.rules.iter().chain(&rules.filters) {
        match iis_tagger::rules::rule_files(path) {
            Ok(files) => out.extend(files.into_iter().map(Ok)),
            Err(e) => out.push(Err(e.to_string())),
        }
    }
    out.extend(rules.shapes.iter().cloned().map(Ok));
    out
}

fn fingerprint(rules: &RuleArgs) -> Fingerprint {
    files(rules)
        .into_iter()
        .map(|f| match f {
            Ok(path) => {
                use std::os::unix::fs::MetadataExt;
                let meta = std::fs::metadata(&path)
                    .and_then(|m| Ok((m.len(), m.ino(), m.modified()?, m.ctime(), m.ctime_nsec())));
                let meta = meta.map_err(|e| e.to_string());
                (path, meta)
            }
            Err(e) => (PathBuf::new(), Err(e)),
        })
        .collect()
}

/// A digest of what a set is built from: the files' names and bytes, and the options that
/// change the set (FNV-1a, 64 bits: an identity to compare, not a protection).
fn digest(rules: &RuleArgs) -> String {
    let mut hash = Fnv::default();
    hash.add(if rules.no_builtin { b"no-builtin" } else { b"builtin" });
    hash.add(env!("CARGO_PKG_VERSION").as_bytes());
    for file in files(rules) {
        match file {
            Ok(path) => {
                hash.add(path.as_os_str().as_encoded_bytes());
                match std::fs::read(&path) {
                    Ok(bytes) => hash.add(&bytes),
                    Err(_) => hash.add(b"unreadable"),
                }
            }
            Err(e) => hash.add(e.as_bytes()),
        }
    }
    for name in &rules.disable_rule {
        hash.add(b"disable");
        hash.add(name.as_bytes());
    }
    for (name, risk) in &rules.rule_risk {
        hash.add(b"risk");
        hash.add(name.as_bytes());
        hash.add(&[*risk]);
    }
    format!("{:016x}", hash.0)
}

struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    /// Adds `bytes`, then their length (so that two pieces cannot run together).
    fn add(&mut self, bytes: &[u8]) {
        for &b in bytes.iter().chain(&(bytes.len() as u64).to_le_bytes()) {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

/// Running totals across reloads: counters in the rule order of one set (`on`), those of
/// streams on another set re-keyed as they are added ([`Stats::rekey`]).
pub struct Totals {
    /// The counters.
    pub stats: Stats,
    /// The set their rule order is that of.
    pub on: Arc<Tagger>,
}

impl Totals {
    /// Zeroed totals for `on`.
    pub fn new(on: Arc<Tagger>) -> Totals {
        Totals { stats: Stats::new(on.rules().rules().len()), on }
    }

    /// Adds counters kept in the rule order of `keyed`, the set of the latest stream to
    /// report (one stream's reports come in time order): the totals move to it first, so a
    /// rule a reload added keeps its counts.
    pub fn add(&mut self, stats: &Stats, keyed: &Arc<Tagger>) {
        self.move_to(keyed);
        self.stats.merge(stats);
    }

    /// Adds counters of another thread's totals, in the rule order of the set these are
    /// on (move them to the newest set first: [`Totals::move_to`]).
    pub fn absorb(&mut self, other: Totals) {
        let Totals { mut stats, on } = other;
        if !Arc::ptr_eq(&on, &self.on) {
            stats.rekey(on.rules(), self.on.rules());
        }
        self.stats.merge(&stats);
    }

    /// Moves a driver's counters (on `keyed`) here.
    pub fn drain(&mut self, driver: &mut Driver<'_>, keyed: &Arc<Tagger>) {
        let mut stats = Stats::default();
        driver.drain_stats(&mut stats);
        self.add(&stats, keyed);
    }

    /// The totals in the rule order of `next` (the set in use at the end).
    pub fn move_to(&mut self, next: &Arc<Tagger>) {
        if !Arc::ptr_eq(next, &self.on) {
            self.stats.rekey(self.on.rules(), next.rules());
            self.on = next.clone();
        }
    }
}

/// Moves `driver`, on `on`, to the set in use if a reload stored a newer one since
/// generation `seen`: its counters go to `totals`, and what it holds of a record in
/// progress is evaluated by the new set. Written as a macro because the driver borrows
/// `on`, which it replaces.
macro_rules! follow_reload {
    ($current:expr, $driver:ident, $on:ident, $seen:expr, $totals:expr) => {
        if let Some(next) = $current.newer(&$on, $seen) {
            let (parked, moved) = $driver.park();
            $totals.add(&moved, &$on);
            $on = next;
            $driver = parked.resume(&$on);
        }
    };
}
pub(crate) use follow_reload;
