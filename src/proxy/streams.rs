//! A per-client cap on concurrent streamed calls: a stream holds an upstream connection for
//! minutes, so one client must not hold them all. A slot is held by a guard that lives as long
//! as the response body, and is given back when it ends or the client goes away.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

#[derive(Clone, Default)]
pub struct StreamSlots {
    held: Arc<Mutex<HashMap<String, u32>>>,
}

pub struct Slot {
    held: Arc<Mutex<HashMap<String, u32>>>,
    client: String,
}

impl StreamSlots {
    /// A slot for `client`, unless it already holds `max`.
    pub fn acquire(&self, client: &str, max: u32) -> Option<Slot> {
        let mut held = self
            .held
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let count = held.entry(client.to_owned()).or_insert(0);
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(Slot {
            held: self.held.clone(),
            client: client.to_owned(),
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut held = self
            .held
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // Entries at zero are removed, so the map holds only clients with a stream open.
        if let Some(count) = held.get_mut(&self.client) {
            *count -= 1;
            if *count == 0 {
                held.remove(&self.client);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_capped_per_client_and_given_back() {
        let slots = StreamSlots::default();
        let a1 = slots.acquire("a", 2).unwrap();
        let _a2 = slots.acquire("a", 2).unwrap();
        assert!(slots.acquire("a", 2).is_none());
        let _b = slots.acquire("b", 2).unwrap();
        drop(a1);
        assert!(slots.acquire("a", 2).is_some());
        drop(_a2);
        drop(_b);
        assert!(slots.held.lock().unwrap().is_empty());
    }
}
