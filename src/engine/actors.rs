//! The counter actors: shard actors that own keys by hash, and the global actor that owns the
//! domains' global caps.
//!
//! Each actor is the single writer of its counters and takes one turn at a time. For memory
//! state the calling task takes the turn itself: it enters the actors a call needs in
//! ascending order (the global actor last), decides every counter and commits all or none in
//! one pass, then leaves. Nothing is awaited inside a turn, so a call cannot be cancelled
//! half-way and leave a reservation behind, and the fixed order means no two calls deadlock.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use super::plan::{Op, Plan};
use crate::clock::Clock;
use crate::limits::{Counter, Mode};
use crate::store::{Found, HashedKey, KeyHasher, KeyTableFull, MAX_SHARDS, MemoryCounters};

pub(crate) struct Actors {
    /// `actors[..shards]` are the shard actors; the last one is the global actor.
    actors: Box<[Mutex<MemoryCounters>]>,
    shards: usize,
    /// One hash per key, for routing and for every table.
    keys: KeyHasher,
}

impl Actors {
    pub fn new(shards: usize, max_keys: usize) -> Actors {
        let shards = shards.clamp(1, MAX_SHARDS);
        let per_shard = max_keys.div_ceil(shards).max(1);
        let keys = KeyHasher::default();
        // The global actor holds only configured caps, so its size is bounded by the config.
        let actors = (0..shards)
            .map(|_| MemoryCounters::new(per_shard, keys.clone()))
            .chain(std::iter::once(MemoryCounters::new(
                usize::MAX,
                keys.clone(),
            )))
            .map(Mutex::new)
            .collect();
        Actors {
            actors,
            shards,
            keys,
        }
    }

    /// The shard actor that owns `key`, and the key's hash in that actor's table.
    pub fn locate(&self, key: &[u8]) -> (usize, u64) {
        let hashed = self.keys.hash(key);
        (hashed.shard(self.shards), hashed.hash())
    }

    /// The global actor (always entered last), and the hash of `key` in its table.
    pub fn locate_global(&self, key: &[u8]) -> (usize, u64) {
        (self.shards, self.keys.hash(key).hash())
    }

    fn enter(&self, actor: usize) -> MutexGuard<'_, MemoryCounters> {
        // A turn never panics while holding a lock. Should one ever have, the table is still
        // whole (each counter is written by a single assignment), so carry on with it.
        self.actors[actor]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Decides every operation of `plan` and commits them all if every deciding one fits;
    /// a denied call commits only its refunds. Returns whether the call was committed and the
    /// time it was decided at.
    ///
    /// The clock is read once every actor of the call has been entered, so a later call on the
    /// same counters never decides at an earlier time.
    pub fn turn(
        &self,
        plan: &mut Plan<'_>,
        clock: &dyn Clock,
    ) -> Result<(bool, Duration), KeyTableFull> {
        // Enter every actor the plan touches, in ascending order (the global actor last).
        let mut guards: Vec<Entered<'_>> = Vec::with_capacity(plan.ops.len());
        let mut next = plan.ops.iter().map(|op| op.actor).min();
        while let Some(actor) = next {
            guards.push(Entered {
                actor,
                table: self.enter(actor),
                new_keys: 0,
            });
            next = plan
                .ops
                .iter()
                .map(|op| op.actor)
                .filter(|&a| a > actor)
                .min();
        }
        let mut repeats = false;
        for i in 0..plan.ops.len() {
            let op = &plan.ops[i];
            // Every actor of the plan was entered above: the search always finds it.
            let (Ok(guard) | Err(guard)) = guards.binary_search_by_key(&op.actor, |g| g.actor);
            let earlier = (0..i)
                .rev()
                .find(|&k| same_counter(&plan.keys, op, &plan.ops[k]));
            repeats |= earlier.is_some();
            plan.ops[i].place = Place {
                guard,
                earlier,
                ..Place::default()
            };
        }
        let now = clock.now();

        let mut turn = Turn {
            ops: &mut plan.ops,
            keys: &plan.keys,
            guards,
        };
        let room = turn.decide(now);
        let all_fit = turn
            .ops
            .iter()
            .all(|op| !op.decides || op.verdict.is_some_and(|v| v.fits));
        let committed = all_fit && room.is_ok();
        if !committed {
            // Only refunds go through: decide them again over what is stored, not over the
            // charges of this call that are not being made.
            turn.redecide_refunds(now);
        }
        turn.commit(committed);
        if committed && repeats {
            turn.report_final_counts();
        }
        room.map(|()| (committed, now))
    }

    /// Drops the expired counters of one actor.
    pub fn sweep(&self, actor: usize, now: Duration) -> usize {
        self.enter(actor).sweep(now.as_secs())
    }

    /// Shard actors and the global actor.
    pub fn count(&self) -> usize {
        self.actors.len()
    }

    /// Counters held right now, over all actors.
    pub fn len(&self) -> usize {
        (0..self.actors.len()).map(|a| self.enter(a).len()).sum()
    }
}

/// An actor entered for the length of one turn.
struct Entered<'a> {
    actor: usize,
    table: MutexGuard<'a, MemoryCounters>,
    /// Keys this call would add to the table.
    new_keys: usize,
}

/// Where one operation stands in its turn: set and read by the turn alone. Operations are
/// decided in the plan's order, as they were planned: operations on one key chain over each
/// other, and operations on one actor share its room for new keys, first come first served.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Place {
    /// The entered actor that owns its key.
    guard: usize,
    /// The latest earlier operation of this call on the same key.
    earlier: Option<usize>,
    /// Where the key's counter was found while deciding, for the write.
    found: Option<Found>,
    /// The counter as stored before the turn.
    stored: Option<Counter>,
    /// This operation made room for its key in the table (set while deciding).
    reserved_room: bool,
}

/// The key of `op`, with the hash the plan gave it.
fn op_key<'k>(keys: &'k [u8], op: &Op<'_>) -> HashedKey<'k> {
    HashedKey::with_hash(&keys[op.key.clone()], op.hash)
}

/// Whether two operations of a call touch the same counter (one actor, one key).
fn same_counter(keys: &[u8], a: &Op<'_>, b: &Op<'_>) -> bool {
    a.actor == b.actor && op_key(keys, a) == op_key(keys, b)
}

/// One call's turn: its operations, their keys, and the actors it holds.
struct Turn<'p, 'c, 'a> {
    ops: &'p mut [Op<'c>],
    keys: &'p [u8],
    guards: Vec<Entered<'a>>,
}

impl Turn<'_, '_, '_> {
    /// The earlier operations on the same key as `i`, latest first.
    fn earlier_on_key(&self, i: usize) -> impl Iterator<Item = usize> + '_ {
        std::iter::successors(self.ops[i].place.earlier, |&k| self.ops[k].place.earlier)
    }

    fn lookup(&self, i: usize) -> Option<(Found, Counter)> {
        let op = &self.ops[i];
        let (found, counter) = self.guards[op.place.guard]
            .table
            .find(op_key(self.keys, op))?;
        Some((found, *counter))
    }

    /// Decides every operation; an earlier operation of this call on the same key counts as
    /// done. Fails if the call would need more new keys than an actor has room for.
    fn decide(&mut self, now: Duration) -> Result<(), KeyTableFull> {
        // Every counter is looked up before any is decided: a cold counter is a cache miss,
        // and lookups with nothing in between let the processor wait for several at once.
        for i in 0..self.ops.len() {
            let (found, counter) = self.lookup(i).unzip();
            let place = &mut self.ops[i].place;
            place.found = found;
            place.stored = counter;
        }
        let mut room = Ok(());
        for i in 0..self.ops.len() {
            let op = &self.ops[i];
            let Place {
                guard,
                earlier,
                stored: stored_entry,
                ..
            } = op.place;
            let stored = op.window.current(stored_entry.as_ref(), now);
            let seen = earlier
                .and_then(|k| self.ops[k].verdict)
                .map_or(stored, |v| v.after());
            let mut verdict = op.window.decide(seen, op.hits, op.mode);
            // The call's own charges on this key, together, may be more than it can ever hold.
            if op.mode == Mode::Charge {
                let own = self
                    .earlier_on_key(i)
                    .filter(|&k| self.ops[k].mode == Mode::Charge)
                    .map(|k| self.ops[k].hits)
                    .fold(op.hits, u64::saturating_add);
                verdict.never_fits |= own > u64::from(op.window.volume);
            }
            // A new key needs room; a shadow limit never fails a call for want of it. An
            // earlier probe or refund on the key reserved nothing, so it does not count; an
            // expired counter counts as new, since making room may sweep it before the write.
            let creates = matches!(op.mode, Mode::Charge | Mode::Postpaid | Mode::Settle)
                && !stored_entry.is_some_and(|c| c.is_live(now.as_secs()))
                && !self
                    .earlier_on_key(i)
                    .any(|k| self.ops[k].place.reserved_room);
            let decides = op.decides;
            if creates {
                let entered = &mut self.guards[guard];
                match entered.table.make_room(entered.new_keys + 1, now.as_secs()) {
                    Ok(()) => {
                        entered.new_keys += 1;
                        self.ops[i].place.reserved_room = true;
                    }
                    Err(full) if decides => room = room.and(Err(full)),
                    // No counter for this shadow limit: it counts from the next call that fits.
                    Err(_) => {
                        verdict.count_after = verdict.count_before;
                        self.ops[i].no_room = true;
                    }
                }
            }
            let op = &mut self.ops[i];
            op.stored_count = stored.count;
            op.verdict = Some(verdict);
        }
        room
    }

    /// Decides the refunds of a call that is not committed, chained only over its refunds.
    fn redecide_refunds(&mut self, now: Duration) {
        for i in 0..self.ops.len() {
            let op = &self.ops[i];
            if op.mode != Mode::Refund {
                continue;
            }
            let earlier = self
                .earlier_on_key(i)
                .find(|&k| self.ops[k].mode == Mode::Refund);
            let seen = match earlier.and_then(|k| self.ops[k].verdict) {
                Some(v) => v.after(),
                // As looked up before deciding: since then a sweep can only have dropped a
                // counter whose window had ended, which counts as zero either way.
                None => op.window.current(op.place.stored.as_ref(), now),
            };
            let verdict = op.window.decide(seen, op.hits, Mode::Refund);
            self.ops[i].verdict = Some(verdict);
        }
    }

    /// Writes the decided counts: everything when `committed`, else only refunds. Several
    /// operations on one key write in order, so the last (cumulative) count is what stays.
    fn commit(&mut self, committed: bool) {
        for op in self.ops.iter() {
            let Some(verdict) = op.verdict else { continue };
            let table = &mut self.guards[op.place.guard].table;
            let key = op_key(self.keys, op);
            match op.mode {
                Mode::Charge | Mode::Postpaid | Mode::Settle if committed && !op.no_room => {
                    table.put(key, op.place.found, verdict.after())
                }
                Mode::Refund => table.update(key, op.place.found, verdict.after()),
                _ => {}
            }
        }
    }

    /// Every operation on a key reports the count the key ends the call with (needed only
    /// where a call names a key more than once).
    fn report_final_counts(&mut self) {
        for i in 0..self.ops.len() {
            let last = (i + 1..self.ops.len())
                .rev()
                .find(|&k| same_counter(self.keys, &self.ops[i], &self.ops[k]));
            let Some(last) = last else { continue };
            let final_count = self.ops[last].verdict.map(|v| v.count_after);
            if let (Some(count), Some(v)) = (final_count, self.ops[i].verdict.as_mut()) {
                v.count_after = count;
            }
        }
    }
}
