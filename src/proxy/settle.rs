//! Settling a token reservation once the upstream has said what a call really cost: the unused
//! part goes back as a refund, any excess is charged. A reservation is settled at most once,
//! when its [`Reservation`] is dropped: with the usage seen by then, or kept whole when none
//! was (a stream cut off before its usage may have cost it all).

use futures_util::FutureExt;
use tokio_util::task::TaskTracker;

use super::limiter::{Limiter, LimiterError};
use super::usage::Usage;

pub struct Reservation {
    limiter: Limiter,
    /// Settlements over gRPC run as tasks; shutdown waits for them.
    settlements: TaskTracker,
    domain: String,
    /// The token descriptors' entries, as reserved.
    descriptors: Vec<Vec<(String, String)>>,
    reserved: u64,
    usage: Option<Usage>,
}

impl Reservation {
    pub fn new(
        limiter: Limiter,
        settlements: TaskTracker,
        domain: String,
        descriptors: Vec<Vec<(String, String)>>,
        reserved: u64,
    ) -> Reservation {
        Reservation {
            limiter,
            settlements,
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

    /// The upstream did no billable work (it could not be reached, or answered an error).
    pub fn nothing_used(&mut self) {
        self.usage = Some(Usage::default());
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let Some(usage) = self.usage else {
            return;
        };
        let (limiter, domain) = (self.limiter.clone(), std::mem::take(&mut self.domain));
        let descriptors = std::mem::take(&mut self.descriptors);
        let (reserved, used) = (self.reserved, usage.total());
        let settle = async move {
            let result = if used < reserved {
                limiter
                    .refund(&domain, &descriptors, reserved - used)
                    .await
                    .map(|()| true)
            } else if used > reserved {
                limiter
                    .charge_excess(&domain, &descriptors, used - reserved)
                    .await
            } else {
                Ok(true)
            };
            report(result, reserved, used);
        };
        if matches!(self.limiter, Limiter::InProcess(_)) {
            // The engine decides without awaiting anything: settle here and now.
            if settle.now_or_never().is_none() {
                tracing::error!("an in-process settlement did not complete at once");
            }
            return;
        }
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                self.settlements.spawn_on(settle, &runtime);
            }
            Err(_) => tracing::warn!("no runtime to settle a token reservation on; it is kept"),
        }
    }
}

fn report(result: Result<bool, LimiterError>, reserved: u64, used: u64) {
    match result {
        Ok(true) => tracing::debug!(reserved, used, "token reservation settled"),
        Ok(false) => tracing::warn!(
            reserved,
            used,
            "the excess over a token reservation did not fit: the budget was charged up to its \
             limit only"
        ),
        Err(e) => tracing::warn!(
            error = %e,
            reserved,
            used,
            "cannot settle a token reservation; it stays as reserved"
        ),
    }
}
