//! The sidecar's memory budget (`--memory-budget`): how many connections may be reading at
//! once, so that the process's memory has a bound that does not depend on what is sent.
//!
//! A connection that is reading — from its first byte after a quiet spell until it has
//! been quiet, outside a record, for a second (when it gives its buffers back, see
//! `conn::RELEASE_QUIET`) — holds a reservation of [`per_connection`] bytes: the most it
//! can hold at any moment whatever its peer sends. A connection that cannot get one waits,
//! unread (TCP holds its peer back), for up to `--memory-wait-secs`; then what it had sent
//! in its first read (at most 8 KiB) is tagged and written, and the connection is closed
//! and counted (`iis_tagger_connection_endings_total{reason="memory_budget"}`). A reading
//! connection's own reservation always covers its next step, so the connections that hold
//! one always make progress and give it back: there is no deadlock.
//!
//! So the process holds at most the budget, plus what quiet connections keep (a few KiB
//! each, at most `--max-connections` of them), plus the rules and the runtime:
//!
//! ```text
//! total ≤ rules + runtime + --memory-budget + --max-connections × QUIET_BYTES
//! ```
//!
//! (`tests/it/serve.rs` holds every connection at its worst and reads the peak RSS against
//! it.)

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::stream_memory_bound;

/// The most a connection reads at a time (its read buffer grows to this while reads fill
/// it): part of what a reading connection may hold, so defined here and read by `conn`.
pub const READ_BYTES: usize = 256 * 1024;

/// Bytes of output one batch may hold for `input` bytes of records: the records, and their
/// annotations (an annotated record grows by its member; a read of the smallest records a
/// rule can match, each annotated, about triples). Generous by design.
const fn batch_bytes(input: usize) -> usize {
    4 * input + (64 << 10)
}

/// The most one reading connection holds: its read buffer, its stream at the bound for the
/// longest record it can be given ([`stream_memory_bound`], which counts the start of a
/// record held until its end), and three output batches (one being written, one queued,
/// one filling), each of a read and a whole record.
pub const fn per_connection(max_line_bytes: usize) -> usize {
    READ_BYTES + stream_memory_bound(max_line_bytes) + 3 * batch_bytes(max_line_bytes + READ_BYTES)
}

/// What a quiet connection keeps outside the budget at most: its first read buffer, the
/// small working size (64 KiB, the core's `KEEP_BYTES`) of each of its stream's ten
/// buffers and of two batches, and 64 KiB for its socket's task and TLS state.
pub const QUIET_BYTES: usize = 8 * 1024 + 12 * (64 << 10) + (64 << 10);

/// Units of the semaphore: KiB, so that a reservation of gigabytes fits its `u32` count.
const UNIT: usize = 1024;

/// The budget shared by every connection.
#[derive(Debug)]
pub struct Budget {
    permits: Arc<Semaphore>,
    /// Bytes held by [`Reservation`]s now (a waiter may have been given part of its permits
    /// already; those are not counted until it has all of them).
    reserved: Arc<AtomicUsize>,
    /// Units a reading connection reserves.
    each: u32,
    /// Bytes in all.
    total: usize,
    /// How long a connection waits for a reservation before it is closed.
    wait: Duration,
}

/// Why a budget cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TooSmall {
    /// The budget asked for.
    pub budget: usize,
    /// What one reading connection needs.
    pub each: usize,
}

impl Budget {
    /// A budget of `total` bytes for connections whose records may reach `max_line_bytes`;
    /// refused when not even one connection fits.
    pub fn new(total: usize, max_line_bytes: usize, wait: Duration) -> Result<Budget, TooSmall> {
        let each = per_connection(max_line_bytes);
        if total < each {
            return Err(TooSmall { budget: total, each });
        }
        let units = |bytes: usize| u32::try_from(bytes.div_ceil(UNIT)).unwrap_or(u32::MAX);
        let each_units = units(each);
        let all_units = (total / UNIT).min(Semaphore::MAX_PERMITS);
        Ok(Budget {
            permits: Arc::new(Semaphore::new(all_units)),
            reserved: Arc::new(AtomicUsize::new(0)),
            each: each_units,
            total,
            wait,
        })
    }

    /// Bytes in all.
    pub fn total(&self) -> usize {
        self.total
    }

    /// Bytes one reading connection reserves.
    pub fn each(&self) -> usize {
        self.each as usize * UNIT
    }

    /// Connections that may be reading at once.
    pub fn readers(&self) -> usize {
        self.total / UNIT / self.each as usize
    }

    /// Bytes reserved now.
    pub fn reserved(&self) -> usize {
        self.reserved.load(Relaxed)
    }

    fn held(&self, permit: OwnedSemaphorePermit) -> Reservation {
        let bytes = self.each();
        self.reserved.fetch_add(bytes, Relaxed);
        Reservation { _permit: permit, bytes, reserved: self.reserved.clone() }
    }

    /// A reservation at once, if one is free.
    pub fn try_reserve(&self) -> Option<Reservation> {
        self.permits.clone().try_acquire_many_owned(self.each).ok().map(|p| self.held(p))
    }

    /// A reservation, waiting for one for up to the budget's wait; `None` past it.
    pub async fn reserve(&self) -> Option<Reservation> {
        if let Some(r) = self.try_reserve() {
            return Some(r);
        }
        let acquire = self.permits.clone().acquire_many_owned(self.each);
        match tokio::time::timeout(self.wait, acquire).await {
            Ok(Ok(permit)) => Some(self.held(permit)),
            _ => None,
        }
    }
}

/// One reading connection's share of the budget, given back when dropped.
#[derive(Debug)]
pub struct Reservation {
    _permit: OwnedSemaphorePermit,
    bytes: usize,
    reserved: Arc<AtomicUsize>,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.reserved.fetch_sub(self.bytes, Relaxed);
    }
}

/// The default budget: half of the memory this process may use (the cgroup's limit when
/// there is one, else the machine's memory), or 1 GiB when neither can be read.
pub fn default_total() -> usize {
    let cgroup = std::fs::read_to_string("/sys/fs/cgroup/memory.max").ok().and_then(|s| s.trim().parse::<u64>().ok());
    let machine = std::fs::read_to_string("/proc/meminfo").ok().and_then(|s| {
        let line = s.lines().find(|l| l.starts_with("MemTotal:"))?;
        line.split_whitespace().nth(1)?.parse::<u64>().ok().map(|kib| kib * 1024)
    });
    let limit = match (cgroup, machine) {
        (Some(c), Some(m)) => c.min(m),
        (c, m) => c.or(m).unwrap_or(2 << 30),
    };
    usize::try_from(limit / 2).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_budget_below_one_connection_is_refused() {
        let each = per_connection(1 << 20);
        assert_eq!(
            Budget::new(each - 1, 1 << 20, Duration::ZERO).expect_err("too small"),
            TooSmall { budget: each - 1, each }
        );
        let b = Budget::new(each, 1 << 20, Duration::ZERO).expect("one fits");
        assert_eq!(b.readers(), 1);
    }

    #[test]
    fn reservations_are_counted_and_given_back() {
        let each = per_connection(64 << 10);
        let b = Budget::new(2 * each + 1000, 64 << 10, Duration::ZERO).expect("budget");
        assert_eq!(b.readers(), 2);
        let one = b.try_reserve().expect("first");
        let two = b.try_reserve().expect("second");
        assert!(b.try_reserve().is_none(), "a third does not fit");
        assert_eq!(b.reserved(), 2 * b.each());
        drop(one);
        assert!(b.try_reserve().is_some(), "given back");
        drop(two);
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_waits_for_a_reservation_then_gives_up() {
        let each = per_connection(64 << 10);
        let b = Arc::new(Budget::new(each, 64 << 10, Duration::from_secs(5)).expect("budget"));
        let held = b.try_reserve().expect("first");
        let waiter = {
            let b = b.clone();
            tokio::spawn(async move { b.reserve().await.is_some() })
        };
        tokio::time::sleep(Duration::from_secs(1)).await;
        drop(held);
        assert!(waiter.await.expect("task"), "granted once the first is given back");
        let _held = b.try_reserve().expect("again");
        let start = tokio::time::Instant::now();
        assert!(b.reserve().await.is_none(), "none past the wait");
        assert_eq!(start.elapsed(), Duration::from_secs(5));
    }

    /// The figures README and `--help` give for the default line limit, and the default
    /// budget's floor, are what the code reserves.
    #[test]
    fn the_documented_figures_are_the_formula() {
        assert_eq!(per_connection(1 << 20) >> 20, 95, "README: 95 MiB at the default 1 MiB lines");
        let slope = (per_connection(2 << 20) - per_connection(1 << 20)) / (1 << 20);
        assert_eq!(slope, 76, "--help: 76 × --max-line-bytes");
        assert!((19 << 20..=20 << 20).contains(&per_connection(0)), "--help: about 20 MiB");
        assert_eq!(QUIET_BYTES >> 10, 840, "README and RELIABILITY: 840 KiB a quiet connection");
        assert!(default_total() >= 1 << 20);
    }
}
