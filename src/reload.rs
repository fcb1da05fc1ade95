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

use crate::Tagger;
pub use crate::stats::LoadStatus;

/// The rule set streams run on now (see the module documentation).
#[derive(Debug)]
pub struct Current {
    slot: Mutex<Arc<Tagger>>,
    /// Sets replaced, kept until no stream holds them ([`Current::free_retired`]): the
    /// last stream to move off a set would otherwise free it — a large set's many
    /// allocations — on its data path.
    retired: Mutex<Vec<Arc<Tagger>>>,
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
        Current {
            slot: Mutex::new(tagger),
            retired: Mutex::new(Vec::new()),
            generation: AtomicU64::new(0),
            status: Mutex::new(status),
        }
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
        let old = std::mem::replace(&mut *self.slot.lock().unwrap_or_else(|e| e.into_inner()), tagger);
        self.retired.lock().unwrap_or_else(|e| e.into_inner()).push(old);
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

    /// Frees the replaced sets no stream holds any more (the reload thread calls this now
    /// and then); returns how many are still held.
    pub fn free_retired(&self) -> usize {
        let mut retired = self.retired.lock().unwrap_or_else(|e| e.into_inner());
        let free: Vec<Arc<Tagger>> = {
            let (free, held): (Vec<_>, Vec<_>) = retired.drain(..).partition(|t| Arc::strong_count(t) == 1);
            *retired = held;
            free
        };
        let held = retired.len();
        drop(retired);
        drop(free);
        held
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Config, RuleSet};

    fn tagger() -> Arc<Tagger> {
        Arc::new(Tagger::new(RuleSet::builtin().expect("rules"), Config::default()).expect("tagger"))
    }

    #[test]
    fn streams_see_a_new_set_once_and_the_old_one_is_freed_off_their_path() {
        let current = Current::new(tagger(), "a".into());
        let mut seen = current.generation();
        let on = current.get();
        assert!(current.newer(&on, &mut seen).is_none(), "nothing new");
        current.set(tagger(), "b".into());
        let next = current.newer(&on, &mut seen).expect("the new set");
        assert!(current.newer(&next, &mut seen).is_none(), "seen once");
        let weak = Arc::downgrade(&on);
        assert_eq!(current.free_retired(), 1, "a stream still holds the old set");
        drop(on);
        assert!(weak.upgrade().is_some(), "the stream's drop did not free it");
        assert_eq!(current.free_retired(), 0);
        assert!(weak.upgrade().is_none(), "freed by free_retired");
        let status = current.status();
        assert_eq!((status.digest.as_str(), status.reloads, status.refused), ("b", 1, 0));
        current.refused("x.yml:1:1: bad".into());
        assert_eq!(current.status().last_error.as_deref(), Some("x.yml:1:1: bad"));
        assert!(Arc::ptr_eq(&current.get(), &next), "a refusal keeps the set");
    }
}
