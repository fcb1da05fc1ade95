//! Rule sets that change while streams run (a reload): the set in use, shared by every
//! stream, swapped whole for a new one (ARCHITECTURE §5.4).
//!
//! A new set is built away from the streams (the front end's reload thread compiles it)
//! and stored here with [`Current::set`]; each stream sees it at its next read
//! ([`Current::newer`]) and moves its driver onto it between records
//! ([`Driver::park`](crate::Driver::park), then [`Driver::resume`](crate::Driver::resume)):
//! what is held of a record in progress is evaluated whole by the new set, so no record is
//! lost, duplicated, reordered or judged half by one set and half by the other. A set
//! that fails to build is never stored: the old one keeps running, and the failure is
//! counted ([`Current::refused`]).
//!
//! Checking costs one atomic load per read; a stream that has moved drops its reference
//! to the old set, which is freed when the last stream has moved.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;

use crate::Tagger;

/// What is loaded, since when, and how reloads went (for `--stats` and the metrics).
#[derive(Clone, Debug, Default, Serialize)]
pub struct LoadStatus {
    /// A digest of the rule, filter and shape files and the options the set was built
    /// from (16 hex digits).
    pub digest: String,
    /// When the set was built, in seconds since the Unix epoch.
    pub loaded_at: u64,
    /// Rules in the set.
    pub rules: usize,
    /// Filters in the set.
    pub filters: usize,
    /// Reloads that replaced the set.
    pub reloads: u64,
    /// Reloads refused (the set had an error; the old one kept running).
    pub refused: u64,
    /// The error of the last refused reload, if the last reload was refused.
    pub last_error: Option<String>,
}

/// The rule set streams run on now (see the module documentation).
#[derive(Debug)]
pub struct Current {
    slot: Mutex<Arc<Tagger>>,
    generation: AtomicU64,
    status: Mutex<LoadStatus>,
}

impl Current {
    /// The first set, built from files of digest `digest`.
    pub fn new(tagger: Arc<Tagger>, digest: String) -> Current {
        let status = LoadStatus {
            digest,
            loaded_at: now(),
            rules: tagger.rules().rules().len(),
            filters: tagger.rules().filters().len(),
            ..LoadStatus::default()
        };
        Current { slot: Mutex::new(tagger), generation: AtomicU64::new(0), status: Mutex::new(status) }
    }

    /// A set that is never reloaded (a library user's, a test's).
    pub fn fixed(tagger: Arc<Tagger>) -> Current {
        Current::new(tagger, String::new())
    }

    /// The set in use.
    pub fn get(&self) -> Arc<Tagger> {
        self.slot.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// How many times the set was replaced.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Replaces the set (a reload that built).
    pub fn set(&self, tagger: Arc<Tagger>, digest: String) {
        let (rules, filters) = (tagger.rules().rules().len(), tagger.rules().filters().len());
        *self.slot.lock().unwrap_or_else(|e| e.into_inner()) = tagger;
        {
            let mut status = self.status.lock().unwrap_or_else(|e| e.into_inner());
            status.digest = digest;
            status.loaded_at = now();
            status.rules = rules;
            status.filters = filters;
            status.reloads += 1;
            status.last_error = None;
        }
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// A reload was refused with `error`: the set in use stays.
    pub fn refused(&self, error: String) {
        let mut status = self.status.lock().unwrap_or_else(|e| e.into_inner());
        status.refused += 1;
        status.last_error = Some(error);
    }

    /// What is loaded and how reloads went.
    pub fn status(&self) -> LoadStatus {
        self.status.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// A set newer than `on`, if one was stored since generation `seen` (which is brought
    /// up to date). One atomic load when nothing changed.
    pub fn newer(&self, on: &Arc<Tagger>, seen: &mut u64) -> Option<Arc<Tagger>> {
        let generation = self.generation();
        if generation == *seen {
            return None;
        }
        *seen = generation;
        let current = self.get();
        (!Arc::ptr_eq(&current, on)).then_some(current)
    }
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}
