//! What a test needs from outside the repository, and the one rule for all of them: outside
//! CI a test whose need is missing is skipped with one line saying what is missing and how
//! to get it, and a summary of every skip is printed when the test binary exits; under CI
//! (`CI` set, as `.ci/run` does) a missing need fails the test.
//!
//! Everything the project wrote itself (rule fixtures, goldens, small generated corpora in
//! `tests/fixtures/generated/`) is in the repository, so a bare clone runs all of the
//! suite that needs nothing else.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;

/// Something a test needs that the repository does not hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Need {
    /// The public corpus, `../shared/corpus`.
    Corpus,
    /// The corpus's reference checker, `../shared/corpus/tools/tag_check.py`, and python3.
    TagCheck,
    /// The SigmaHQ rules, `../shared/sigma/rules/windows`.
    SigmaRules,
    /// The corpus generator, `../shared/tools/gen-sysmon-corpus`, and python3.
    Generator,
    /// pySigma with its SQLite backend, for the reference comparison.
    PySigma,
    /// A program, by name, found at one of the given paths or on `PATH`.
    Program(&'static str, &'static [&'static str]),
}

impl Need {
    fn describe(self) -> String {
        match self {
            Need::Corpus => "the public corpus ../shared/corpus".into(),
            Need::TagCheck => "python3 and ../shared/corpus/tools/tag_check.py".into(),
            Need::SigmaRules => "the SigmaHQ rules ../shared/sigma/rules/windows".into(),
            Need::Generator => "python3 and ../shared/tools/gen-sysmon-corpus".into(),
            Need::PySigma => "pySigma with its SQLite backend".into(),
            Need::Program(name, _) => format!("the program `{name}`"),
        }
    }

    fn how(self) -> &'static str {
        match self {
            Need::Corpus | Need::TagCheck | Need::SigmaRules | Need::Generator => {
                "check out the project's `shared` folder beside this repository"
            }
            Need::PySigma => "pip install pysigma==2.0.1 pysigma-backend-sqlite==2.1.1",
            Need::Program("rsyslogd", _) => "apt-get install rsyslog",
            Need::Program("syslog-ng", _) => {
                "apt-get download syslog-ng-core; dpkg -x it under /opt/syslog-ng (see .ci/run)"
            }
            Need::Program("openssl", _) => "apt-get install openssl",
            Need::Program("prlimit", _) => "apt-get install util-linux",
            Need::Program("script", _) => "apt-get install bsdutils",
            Need::Program("nats-server", _) => "apt-get install nats-server",
            Need::Program(..) => "install it (see .ci/run)",
        }
    }

    /// Where the need is, when it is there.
    fn locate(self) -> Option<PathBuf> {
        let shared = shared();
        match self {
            Need::Corpus => Some(shared.join("corpus")).filter(|p| p.join("evtxdump-json").is_dir()),
            Need::TagCheck => {
                let p = shared.join("corpus/tools/tag_check.py");
                (p.is_file() && python_has("")).then_some(p)
            }
            Need::SigmaRules => Some(shared.join("sigma/rules/windows")).filter(|p| p.is_dir()),
            Need::Generator => {
                let p = shared.join("tools/gen-sysmon-corpus");
                (p.is_file() && python_has("")).then_some(p)
            }
            Need::PySigma => python_has("import sigma.backends.sqlite, sigma.collection").then(PathBuf::new),
            Need::Program(name, paths) => {
                paths.iter().map(PathBuf::from).find(|p| p.is_file()).or_else(|| on_path(name))
            }
        }
    }
}

/// `../shared`, beside the repository.
pub fn shared() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared")
}

/// Whether python3 runs `code` (quietly: a missing module is not a traceback on the screen).
fn python_has(code: &str) -> bool {
    Command::new("python3")
        .args(["-c", code])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| Path::new(d).join(name)).find(|p| p.is_file())
}

/// Skips recorded so far: (test, what was missing).
static SKIPPED: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());

/// The location of `need`, or `None` when it is missing and the calling test is to be
/// skipped (it should return at once). Under CI a missing need panics.
pub fn need(what: Need) -> Option<PathBuf> {
    static FOUND: Mutex<Vec<(Need, Option<PathBuf>)>> = Mutex::new(Vec::new());
    let found = {
        let mut cache = FOUND.lock().unwrap_or_else(|e| e.into_inner());
        match cache.iter().find(|(n, _)| *n == what) {
            Some((_, p)) => p.clone(),
            None => {
                let p = what.locate();
                cache.push((what, p.clone()));
                p
            }
        }
    };
    if found.is_some() {
        return found;
    }
    let test = std::thread::current().name().unwrap_or("a test").to_string();
    assert!(
        std::env::var_os("CI").is_none(),
        "{test} needs {} ({}); under CI nothing may be skipped",
        what.describe(),
        what.how()
    );
    // Straight to the terminal: the harness captures only the print macros.
    let _ = writeln!(std::io::stderr(), "skipped: {test}: needs {} ({})", what.describe(), what.how());
    let mut skipped = SKIPPED.lock().unwrap_or_else(|e| e.into_inner());
    if skipped.is_empty() {
        summary_at_exit();
    }
    skipped.push((test, what.describe()));
    None
}

/// All of `needs`, or `None` (the test is skipped for the first one missing).
pub fn need_all<const N: usize>(needs: [Need; N]) -> Option<[PathBuf; N]> {
    let mut found = Vec::with_capacity(N);
    for n in needs {
        found.push(need(n)?);
    }
    found.try_into().ok()
}

#[allow(unsafe_code)]
fn summary_at_exit() {
    extern "C" fn print_summary() {
        let skipped = SKIPPED.lock().unwrap_or_else(|e| e.into_inner());
        let mut by_need: Vec<(&str, usize)> = Vec::new();
        for (_, what) in skipped.iter() {
            match by_need.iter_mut().find(|(w, _)| *w == what) {
                Some((_, n)) => *n += 1,
                None => by_need.push((what, 1)),
            }
        }
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "\n{} tests skipped, for what the repository does not hold:", skipped.len());
        for (what, n) in by_need {
            let _ = writeln!(err, "  {n:>3} need {what}");
        }
        let _ = writeln!(err, "CI runs them all (.ci/run installs what they need; README says what that is).");
    }
    // SAFETY: `atexit` is given an `extern "C"` function without arguments that neither
    // unwinds (it only locks a mutex, poison ignored, and writes to stderr, errors ignored)
    // nor calls `exit`.
    unsafe {
        libc::atexit(print_summary);
    }
}
