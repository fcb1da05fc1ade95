//! The memory benchmark: the peak heap one stream takes to tag each crafted record
//! (`benches/crafted.rs`), as a multiple of the record's length, with the built-in rules and
//! with the SigmaHQ Windows rules (when `../shared/sigma` is there). It is the measured side
//! of the per-stream bound in RELIABILITY.md §4 (`FIXED + FACTOR × line`), which the sidecar's
//! memory budget reserves before it tags a large record (`src/serve/budget.rs`).
//!
//! ```text
//! cargo bench --bench memory [-- --size BYTES] [--sigma DIR | --no-sigma] [--only NAME]
//! ```
//!
//! Each record reaches a new stream in reads of 256 KiB (as the sidecar's reads deliver it:
//! the start is held until the `\n` comes), into an output buffer allocated beforehand (the
//! output is the connection's batch, counted apart). Heap is counted by a global allocator
//! that adds up what is live and keeps the high-water mark; the stream itself is created
//! before the mark is reset, the tagger long before.

// A report on stdout is this program's output.
#![allow(clippy::print_stdout)]
// The counting allocator below is the repository's one `unsafe`: `GlobalAlloc` is an unsafe
// trait. It forwards every call to `System` unchanged; the library stays `unsafe`-free.
#![allow(unsafe_code)]

#[path = "crafted.rs"]
#[allow(dead_code)] // the cases' descriptions are the adversarial benchmark's legend
mod crafted;

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use iis_tagger::Tagger;

/// The system allocator, counting live bytes and their high-water mark.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded to `System` with the caller's arguments unchanged; the
// counters are only arithmetic on the sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as it came.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded as it came.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded as it came.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            if new_size >= layout.size() {
                grew(new_size - layout.size());
            } else {
                LIVE.fetch_sub(layout.size() - new_size, Relaxed);
            }
        }
        p
    }
}

fn grew(n: usize) {
    let live = LIVE.fetch_add(n, Relaxed) + n;
    PEAK.fetch_max(live, Relaxed);
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const READ: usize = 256 * 1024;

/// Peak heap, above what was live before, while one new stream tags `line` (with `\n`).
fn peak_for(tagger: &Tagger, line: &[u8]) -> (usize, bool) {
    let mut stream = tagger.stream();
    let mut out = Vec::with_capacity(line.len() + 2 * READ);
    let base = LIVE.load(Relaxed);
    PEAK.store(base, Relaxed);
    for piece in line.chunks(READ) {
        stream.feed(piece, &mut out);
    }
    stream.feed(b"\n", &mut out);
    let peak = PEAK.load(Relaxed) - base;
    let annotated = stream.stats().annotated > 0;
    drop(stream);
    (peak, annotated)
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut size = 1_000_000;
    let mut sigma = Some(root.join("../shared/sigma/rules/windows")).filter(|p| p.is_dir());
    let mut only = None;
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--size" => size = it.next().and_then(|s| s.parse().ok()).expect("--size BYTES"),
            "--sigma" => sigma = Some(it.next().expect("--sigma DIR").into()),
            "--no-sigma" => sigma = None,
            "--only" => only = it.next(),
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    for (label, tagger) in &crafted::rule_sets(sigma.as_deref()) {
        let cases = crafted::cases_for(tagger, size, only.as_deref());
        println!("\n{label}: peak heap of one stream tagging one record");
        println!("{:<26} {:>9} {:>12} {:>9}  annotated", "case", "line", "peak heap", "x line");
        let mut worst = (0.0f64, "", 0usize);
        for case in &cases {
            let (peak, annotated) = peak_for(tagger, &case.line);
            let ratio = peak as f64 / case.line.len() as f64;
            if ratio > worst.0 {
                worst = (ratio, case.name, peak);
            }
            println!("{:<26} {:>9} {:>12} {:>9.2}  {annotated}", case.name, case.line.len(), peak, ratio);
        }
        println!("{label}: worst {:.2}x the line ({}, {} bytes)", worst.0, worst.1, worst.2);
    }
}
