//! The per-stream memory bound ([`iis_tagger::stream_memory_bound`]) at its edge: every
//! crafted record of `benches/crafted.rs` at the default line limit, fed to a new stream in
//! reads of 256 KiB as a connection delivers it, must peak below the bound on the heap.
//!
//! A test binary of its own: its global allocator counts, per thread, the bytes live and
//! their high-water mark (the test harness runs tests on several threads; a stream tags on
//! the thread that feeds it).

// The counting allocator is `unsafe` by the trait's definition; it forwards every call
// to `System` unchanged.
#![allow(unsafe_code)]

#[path = "../benches/crafted.rs"]
#[allow(dead_code)]
mod crafted;
#[path = "it/needs.rs"]
#[allow(dead_code)]
mod needs;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use iis_tagger::{Config, Tagger, stream_memory_bound};

struct Counting;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn grew(n: isize) {
    // `try_with`: a thread being torn down has no counters left; nothing to count then.
    let _ = LIVE.try_with(|live| {
        let now = live.get() + n;
        live.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

// SAFETY: every call is forwarded to `System` with the caller's arguments unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as it came.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size() as isize);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded as it came.
        unsafe { System.dealloc(ptr, layout) };
        grew(-(layout.size() as isize));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded as it came.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            grew(new_size as isize - layout.size() as isize);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Peak heap of this thread, above what was live before, while a new stream takes `line`.
fn peak_for(tagger: &Tagger, line: &[u8]) -> usize {
    let mut stream = tagger.stream();
    let mut out = Vec::with_capacity(line.len() + (1 << 20));
    let base = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(base));
    for piece in line.chunks(256 * 1024) {
        stream.feed(piece, &mut out);
    }
    stream.feed(b"\n", &mut out);
    let peak = PEAK.with(Cell::get) - base;
    assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 1, "the record comes out");
    usize::try_from(peak).unwrap_or(0)
}

fn check(tagger: &Tagger) {
    let size = Config::default().max_line_bytes;
    let mut over = Vec::new();
    let mut worst = 0.0f64;
    for case in crafted::cases_for(tagger, size, None) {
        assert!(case.line.len() <= size);
        let peak = peak_for(tagger, &case.line);
        let bound = stream_memory_bound(case.line.len());
        worst = worst.max(peak as f64 / bound as f64);
        if peak > bound {
            over.push(format!("{}: {peak} bytes for a {}-byte line, bound {bound}", case.name, case.line.len()));
        }
    }
    assert!(over.is_empty(), "over the per-stream bound:\n{}", over.join("\n"));
    // The test can fail: the worst case takes most of the bound (a bound far above every
    // case would say nothing about the code).
    assert!(worst > 0.5, "worst case only {worst:.2} of the bound: the bound or the cases are off");
}

#[test]
fn every_crafted_record_stays_within_the_stream_bound_with_the_builtin_rules() {
    let (_, tagger) = &crafted::rule_sets(None)[0];
    check(tagger);
}

#[test]
fn every_crafted_record_stays_within_the_stream_bound_with_the_sigmahq_rules() {
    let Some(dir) = needs::need(needs::Need::SigmaRules) else { return };
    let (label, tagger) = &crafted::rule_sets(Some(&dir))[1];
    assert_eq!(*label, "SigmaHQ rules + built-ins");
    check(tagger);
}
