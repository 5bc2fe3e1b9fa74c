//! Counter state behind the actors. Each actor owns one store; nothing else touches it.
//!
//! Memory is the only backend today. A durable or Redis backend keeps the same contract: a
//! turn reads every counter it needs, decides over all of them with `limits`, and writes all
//! of them or none, as one atomic step (for Redis, one server-side script).

pub mod memory;

pub use memory::{Found, HashedKey, KeyHasher, KeyTableFull, MAX_SHARDS, MemoryCounters};
