//! Settling a token reservation once the upstream has said what a call really cost: the unused
//! part goes back as a refund, any excess is charged. A reservation is settled at most once,
//! when its [`Reservation`] is dropped: with the usage seen by then, or kept whole when none
//! was (a stream cut off before its usage may have cost it all).

use tokio::runtime::Handle;

use super::limiter::{Ask, Limiter};
use super::usage::Usage;

pub struct Reservation {
    limiter: Limiter,
    domain: String,
    /// The token descriptors' entries, as reserved.
    descriptors: Vec<Vec<(String, String)>>,
    reserved: u64,
    usage: Option<Usage>,
}

impl Reservation {
    pub fn new(
        limiter: Limiter,
        domain: String,
        descriptors: Vec<Vec<(String, String)>>,
        reserved: u64,
    ) -> Reservation {
        Reservation {
            limiter,
            domain,
            descriptors,
            reserved,
            usage: None,
        }
    }

    /// What the call cost; settled on drop.
    pub fn used(&mut self, usage: Usage) {
        self.usage = Some(usage);
    }

    /// The upstream did no work (it could not be reached, or refused the call): all back.
    pub fn nothing_used(&mut self) {
        self.usage = Some(Usage::default());
    }

    fn settlement(&self, used: u64) -> Option<Vec<Ask>> {
        let (hits, refund) = match used.cmp(&self.reserved) {
            std::cmp::Ordering::Equal => return None,
            std::cmp::Ordering::Less => (self.reserved - used, true),
            std::cmp::Ordering::Greater => (used - self.reserved, false),
        };
        Some(
            self.descriptors
                .iter()
                .map(|entries| Ask {
                    entries: entries.clone(),
                    hits: Some(hits),
                    refund,
                })
                .collect(),
        )
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let Some(usage) = self.usage else {
            return;
        };
        let Some(asks) = self.settlement(usage.total()) else {
            return;
        };
        let Ok(runtime) = Handle::try_current() else {
            tracing::warn!("no runtime to settle a token reservation on; it is kept whole");
            return;
        };
        let limiter = self.limiter.clone();
        let domain = std::mem::take(&mut self.domain);
        let reserved = self.reserved;
        runtime.spawn(async move {
            match limiter.decide(&domain, &asks).await {
                Ok(decision) if decision.code == crate::engine::Code::Ok => {
                    tracing::debug!(reserved, used = usage.total(), "token reservation settled");
                }
                Ok(_) => tracing::warn!(
                    reserved,
                    used = usage.total(),
                    "the excess over a token reservation was refused (mark the token limit \
                     postpaid to always count it)"
                ),
                Err(e) => tracing::warn!(
                    error = %e,
                    reserved,
                    used = usage.total(),
                    "cannot settle a token reservation; it stays as reserved"
                ),
            }
        });
    }
}
