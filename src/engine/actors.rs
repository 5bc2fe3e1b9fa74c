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
use crate::store::{HashedKey, KeyHasher, KeyTableFull, MAX_SHARDS, MemoryCounters};

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
        let mut guards: Vec<Entered<'_>> = Vec::new();
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
        let mut slots: Vec<Slot<'_>> = Vec::with_capacity(plan.ops.len());
        for (i, op) in plan.ops.iter().enumerate() {
            // Every actor of the plan was entered above: the search always finds it.
            let (Ok(guard) | Err(guard)) = guards.binary_search_by_key(&op.actor, |g| g.actor);
            let key = HashedKey::with_hash(&plan.keys[op.key.clone()], op.hash);
            let earlier = (0..i)
                .rev()
                .find(|&k| slots[k].guard == guard && slots[k].key == key);
            slots.push(Slot {
                op: i,
                guard,
                key,
                earlier,
                reserved_room: false,
            });
        }
        let now = clock.now();

        let mut turn = Turn {
            ops: &mut plan.ops,
            slots,
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

/// One operation of a turn. Operations are decided in the plan's order, as they were planned:
/// operations on one key chain over each other, and operations on one actor share its room
/// for new keys, first come first served.
struct Slot<'k> {
    /// Its index in the plan.
    op: usize,
    /// The entered actor that owns its key.
    guard: usize,
    /// Its key, with the hash the plan gave it.
    key: HashedKey<'k>,
    /// The latest earlier slot of this call on the same key.
    earlier: Option<usize>,
    /// This operation made room for its key in the table (set while deciding).
    reserved_room: bool,
}

/// One call's turn: its operations, and the actors it holds.
struct Turn<'p, 'c, 'k, 'a> {
    ops: &'p mut [Op<'c>],
    slots: Vec<Slot<'k>>,
    guards: Vec<Entered<'a>>,
}

impl Turn<'_, '_, '_, '_> {
    fn op(&self, pos: usize) -> &Op<'_> {
        &self.ops[self.slots[pos].op]
    }

    /// The earlier slots on the same key as `pos`, latest first.
    fn earlier_on_key(&self, pos: usize) -> impl Iterator<Item = usize> + '_ {
        std::iter::successors(self.slots[pos].earlier, |&k| self.slots[k].earlier)
    }

    fn stored(&self, pos: usize) -> Option<&Counter> {
        let slot = &self.slots[pos];
        self.guards[slot.guard].table.get(slot.key)
    }

    /// Decides every operation; an earlier operation of this call on the same key counts as
    /// done. Fails if the call would need more new keys than an actor has room for.
    fn decide(&mut self, now: Duration) -> Result<(), KeyTableFull> {
        let mut room = Ok(());
        for pos in 0..self.slots.len() {
            let Slot {
                op: i,
                guard: g,
                earlier,
                ..
            } = self.slots[pos];
            let op = self.op(pos);
            let stored_entry = self.stored(pos);
            let stored = op.window.current(stored_entry, now);
            let seen = earlier
                .and_then(|k| self.op(k).verdict)
                .map_or(stored, |v| v.after());
            let mut verdict = op.window.decide(seen, op.hits, op.mode);
            // The call's own charges on this key, together, may be more than it can ever hold.
            if op.mode == Mode::Charge {
                let own = self
                    .earlier_on_key(pos)
                    .filter(|&k| self.op(k).mode == Mode::Charge)
                    .map(|k| self.op(k).hits)
                    .fold(op.hits, u64::saturating_add);
                verdict.never_fits |= own > u64::from(op.window.volume);
            }
            // A new key needs room; a shadow limit never fails a call for want of it. An
            // earlier probe or refund on the key reserved nothing, so it does not count; an
            // expired counter counts as new, since making room may sweep it before the write.
            let creates = matches!(op.mode, Mode::Charge | Mode::Postpaid | Mode::Settle)
                && !stored_entry.is_some_and(|c| c.is_live(now.as_secs()))
                && !self
                    .earlier_on_key(pos)
                    .any(|k| self.slots[k].reserved_room);
            let decides = op.decides;
            if creates {
                let entered = &mut self.guards[g];
                match entered.table.make_room(entered.new_keys + 1, now.as_secs()) {
                    Ok(()) => {
                        entered.new_keys += 1;
                        self.slots[pos].reserved_room = true;
                    }
                    Err(full) if decides => room = room.and(Err(full)),
                    // No counter for this shadow limit: it counts from the next call that fits.
                    Err(_) => {
                        verdict.count_after = verdict.count_before;
                        self.ops[i].no_room = true;
                    }
                }
            }
            self.ops[i].stored_count = stored.count;
            self.ops[i].verdict = Some(verdict);
        }
        room
    }

    /// Decides the refunds of a call that is not committed, chained only over its refunds.
    fn redecide_refunds(&mut self, now: Duration) {
        for pos in 0..self.slots.len() {
            let op = self.op(pos);
            if op.mode != Mode::Refund {
                continue;
            }
            let earlier = self
                .earlier_on_key(pos)
                .find(|&k| self.op(k).mode == Mode::Refund);
            let seen = match earlier.and_then(|k| self.op(k).verdict) {
                Some(v) => v.after(),
                None => op.window.current(self.stored(pos), now),
            };
            let verdict = op.window.decide(seen, op.hits, Mode::Refund);
            self.ops[self.slots[pos].op].verdict = Some(verdict);
        }
    }

    /// Writes the decided counts: everything when `committed`, else only refunds. Several
    /// operations on one key write in order, so the last (cumulative) count is what stays.
    fn commit(&mut self, committed: bool) {
        for slot in &self.slots {
            let op = &self.ops[slot.op];
            let Some(verdict) = op.verdict else { continue };
            let table = &mut self.guards[slot.guard].table;
            match op.mode {
                Mode::Charge | Mode::Postpaid | Mode::Settle if committed && !op.no_room => {
                    table.put(slot.key, verdict.after())
                }
                Mode::Refund => table.update(slot.key, verdict.after()),
                _ => {}
            }
        }
        if committed {
            self.report_final_counts();
        }
    }

    /// Every operation on a key reports the count the key ends the call with.
    fn report_final_counts(&mut self) {
        for pos in 0..self.slots.len() {
            let Slot { op, guard, key, .. } = self.slots[pos];
            let last = (pos + 1..self.slots.len())
                .rev()
                .find(|&k| self.slots[k].guard == guard && self.slots[k].key == key);
            let Some(last) = last else { continue };
            let final_count = self.op(last).verdict.map(|v| v.count_after);
            if let (Some(count), Some(v)) = (final_count, self.ops[op].verdict.as_mut()) {
                v.count_after = count;
            }
        }
    }
}
