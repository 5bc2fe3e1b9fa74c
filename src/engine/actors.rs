//! The counter actors: shard actors that own keys by hash, and the global actor that owns the
//! domains' global caps.
//!
//! Each actor is the single writer of its counters and takes one turn at a time. For memory
//! state the calling task takes the turn itself: it enters the actors a call needs in
//! ascending order (the global actor last), decides every counter and commits all or none in
//! one pass, then leaves. Nothing is awaited inside a turn, so a call cannot be cancelled
//! half-way and leave a reservation behind, and the fixed order means no two calls deadlock.

use std::hash::BuildHasher;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use super::plan::Plan;
use crate::limits::Mode;
use crate::store::{KeyTableFull, MemoryCounters};

pub(crate) struct Actors {
    /// `actors[..shards]` are the shard actors; the last one is the global actor.
    actors: Box<[Mutex<MemoryCounters>]>,
    shards: usize,
    // A fixed seed per process: routing only needs to spread keys, the tables are seeded apart.
    router: foldhash::fast::FixedState,
}

impl Actors {
    pub fn new(shards: usize, max_keys: usize) -> Actors {
        let shards = shards.max(1);
        let per_shard = max_keys.div_ceil(shards).max(1);
        // The global actor holds only configured caps, so its size is bounded by the config.
        let actors = (0..shards)
            .map(|_| MemoryCounters::new(per_shard))
            .chain(std::iter::once(MemoryCounters::new(usize::MAX)))
            .map(Mutex::new)
            .collect();
        Actors {
            actors,
            shards,
            router: foldhash::fast::FixedState::with_seed(0x746f_6c6c_6761_7465),
        }
    }

    /// The shard actor that owns `key`.
    pub fn route(&self, key: &[u8]) -> usize {
        (self.router.hash_one(key) % self.shards as u64) as usize
    }

    /// The global actor, always entered last.
    pub fn global(&self) -> usize {
        self.shards
    }

    fn enter(&self, actor: usize) -> MutexGuard<'_, MemoryCounters> {
        // A turn never panics while holding the lock; should one ever have, the counters are
        // still whole (every write is a single assignment), so carry on with them.
        self.actors[actor]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Decides every operation of `plan` and commits them all if every deciding one fits
    /// (refunds are committed either way). Returns whether the call was committed.
    pub fn turn(&self, plan: &mut Plan<'_>, now: Duration) -> Result<bool, KeyTableFull> {
        let now_secs = now.as_secs();
        let mut order: Vec<usize> = (0..plan.ops.len()).collect();
        order.sort_by_key(|&i| plan.ops[i].actor);

        let mut guards: Vec<(usize, MutexGuard<'_, MemoryCounters>)> = Vec::new();
        for &i in &order {
            let actor = plan.ops[i].actor;
            if guards.last().is_none_or(|(a, _)| *a != actor) {
                guards.push((actor, self.enter(actor)));
            }
        }

        // Decide. An earlier operation of this call on the same key counts as already done.
        let mut all_fit = true;
        let mut room = Ok(());
        let mut g = 0;
        for (pos, &i) in order.iter().enumerate() {
            let op = &plan.ops[i];
            while guards[g].0 != op.actor {
                g += 1;
            }
            let table = &mut guards[g].1;
            let key = &plan.keys[op.key.clone()];
            let earlier = order[..pos].iter().rev().find(|&&k| {
                plan.ops[k].actor == op.actor && plan.keys[plan.ops[k].key.clone()] == *key
            });
            let count = match earlier.and_then(|&k| plan.ops[k].verdict) {
                Some(v) => v.count_after,
                None => op.window.current(table.get(key), now),
            };
            let verdict = op.window.decide(count, op.hits, op.mode, now);
            if matches!(op.mode, Mode::Charge | Mode::Postpaid) && room.is_ok() {
                room = table.make_room(key, now_secs);
            }
            all_fit &= verdict.fits || !op.decides;
            plan.ops[i].verdict = Some(verdict);
        }
        if all_fit {
            // A denied call creates no counter, so only a call that would commit needs room.
            room?;
        }

        // Commit, in the same turn.
        let mut g = 0;
        for &i in &order {
            let op = &plan.ops[i];
            let Some(verdict) = op.verdict else { continue };
            while guards[g].0 != op.actor {
                g += 1;
            }
            let table = &mut guards[g].1;
            let key = &plan.keys[op.key.clone()];
            let counter = crate::limits::Counter {
                window_end: verdict.window_end,
                count: verdict.count_after,
            };
            match op.mode {
                Mode::Charge | Mode::Postpaid if all_fit => table.put(key, counter),
                Mode::Refund => table.update(key, counter),
                _ => {}
            }
        }
        Ok(all_fit)
    }

    /// Drops expired counters from every actor, one at a time.
    pub fn sweep(&self, now: Duration) -> usize {
        (0..self.actors.len())
            .map(|a| self.enter(a).sweep(now.as_secs()))
            .sum()
    }

    /// Counters held right now, over all actors.
    pub fn len(&self) -> usize {
        (0..self.actors.len()).map(|a| self.enter(a).len()).sum()
    }
}
