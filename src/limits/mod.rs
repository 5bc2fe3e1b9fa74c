//! Rate-limit algorithms as pure functions of (counter state, now, hits) → decision.
//!
//! No clock reads, no I/O, no locking: the engine's actors call these inside their turn, and
//! every storage backend (memory today, durable and Redis later) must give the same answers.

mod fixed_window;

pub use fixed_window::{Counter, FixedWindow, Mode, Verdict};
