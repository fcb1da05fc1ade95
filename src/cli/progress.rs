//! The progress line of a tagging run on a terminal: files and bytes done of the total,
//! records a second, detections so far, time left. Drawn on stderr, at most ten times a
//! second, only when stderr is a terminal and stdout is not (the records would run
//! through it) and `--quiet` is not given; cleared at the end, before the summaries. It
//! never writes to stdout. Shared by reference between the threads of a parallel run:
//! the counts are atomics, the line is indicatif's (which is `Sync`).

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Redraws a second at most.
const HZ: u8 = 10;

/// The progress of a run (drawing nothing when it is not shown).
#[derive(Debug)]
pub struct Progress {
    bar: Option<ProgressBar>,
    files: u64,
    files_done: AtomicU64,
    records: AtomicU64,
    detections: AtomicU64,
}

impl Progress {
    /// Whether a run that writes to stdout (`to_stdout`) shows progress: stderr is a
    /// terminal, stdout is not, and `--quiet` is not given.
    pub fn wanted(quiet: bool, to_stdout: bool) -> bool {
        !quiet && std::io::stderr().is_terminal() && !(to_stdout && std::io::stdout().is_terminal())
    }

    /// Progress over `files` inputs of `bytes` in all (`None`: not known, as for stdin),
    /// drawn if `show`.
    pub fn new(show: bool, files: usize, bytes: Option<u64>) -> Progress {
        let bar = show.then(|| {
            let target = ProgressDrawTarget::stderr_with_hz(HZ);
            let (bar, template) = match bytes {
                Some(total) => (
                    ProgressBar::with_draw_target(Some(total), target),
                    "[{wide_bar}] {bytes}/{total_bytes}, {msg}, ETA {eta}",
                ),
                None => (ProgressBar::with_draw_target(None, target), "{spinner} {bytes}, {msg}"),
            };
            if let Ok(style) = ProgressStyle::with_template(template) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar
        });
        let progress = Progress {
            bar,
            files: files as u64,
            files_done: AtomicU64::new(0),
            records: AtomicU64::new(0),
            detections: AtomicU64::new(0),
        };
        progress.redraw();
        progress
    }

    /// `bytes` more of the input read; `records` more records tagged, `detections` of
    /// them annotated.
    pub fn advance(&self, bytes: u64, records: u64, detections: u64) {
        let Some(bar) = &self.bar else { return };
        self.records.fetch_add(records, Ordering::Relaxed);
        self.detections.fetch_add(detections, Ordering::Relaxed);
        bar.inc(bytes);
        self.redraw();
    }

    /// One more input read to its end.
    pub fn file_done(&self) {
        if self.bar.is_some() {
            self.files_done.fetch_add(1, Ordering::Relaxed);
            self.redraw();
        }
    }

    fn redraw(&self) {
        let Some(bar) = &self.bar else { return };
        let records = self.records.load(Ordering::Relaxed);
        let secs = bar.elapsed().max(Duration::from_millis(1)).as_secs_f64();
        bar.set_message(format!(
            "files {}/{}, {records} records ({:.0}/s), {} detections",
            self.files_done.load(Ordering::Relaxed),
            self.files,
            records as f64 / secs,
            self.detections.load(Ordering::Relaxed)
        ));
    }

    /// Writes `message` to stderr, with the progress line taken away and drawn again.
    pub fn say(&self, message: &str) {
        match &self.bar {
            Some(bar) => bar.suspend(|| eprintln!("{message}")),
            None => eprintln!("{message}"),
        }
    }

    /// Clears the line (the summaries come after it).
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
