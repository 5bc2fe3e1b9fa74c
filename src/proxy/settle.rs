//! Settling a token reservation once the upstream has said what a call really cost: the unused
//! part goes back as a refund, any excess is charged. A reservation is settled at most once,
//! when its [`Reservation`] is dropped: with the usage seen by then, or kept whole when none
//! was (a stream cut off before its usage may have cost it all).

use std::time::Instant;

use futures_util::FutureExt;
use tokio_util::task::TaskTracker;

use super::limiter::{Limiter, LimiterError};
use super::metrics::{ProxyMetrics, TokenFlow};
use super::usage::Usage;

pub struct Reservation {
    limiter: Limiter,
    /// Settlements over gRPC run as tasks; shutdown waits for them.
    settlements: TaskTracker,
    metrics: ProxyMetrics,
    domain: String,
    /// The token descriptors' entries, as reserved.
    descriptors: Vec<Vec<(String, String)>>,
    reserved: u64,
    /// When the first of the reservation's windows ends: a refund after it would come out of
    /// the next window, which other calls are charged in, so none is given then.
    refund_until: Instant,
    usage: Option<Usage>,
}

impl Reservation {
    pub fn new(
        limiter: Limiter,
        settlements: TaskTracker,
        metrics: ProxyMetrics,
        domain: String,
        descriptors: Vec<Vec<(String, String)>>,
        reserved: u64,
        refund_until: Instant,
    ) -> Reservation {
        Reservation {
            limiter,
            settlements,
            metrics,
            domain,
            descriptors,
            reserved,
            refund_until,
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
        let metrics = self.metrics.clone();
        let (reserved, used) = (self.reserved, usage.total());
        if used < reserved && Instant::now() >= self.refund_until {
            tracing::info!(
                reserved,
                used,
                "a token window ended before the refund: none given"
            );
            return;
        }
        let settle = async move {
            let result = if used < reserved {
                let refund = reserved - used;
                let done = limiter.refund(&domain, &descriptors, refund).await;
                if done.is_ok() {
                    metrics.tokens(TokenFlow::Refunded, refund);
                }
                done.map(|()| true)
            } else if used > reserved {
                let excess = used - reserved;
                let done = limiter.charge_excess(&domain, &descriptors, excess).await;
                if done.is_ok() {
                    metrics.tokens(TokenFlow::Excess, excess);
                }
                done
            } else {
                Ok(true)
            };
            report(result, reserved, used);
        };
        if self.limiter.decides_in_process() {
            // Nothing to await: settle here and now.
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::clock::ManualClock;
    use crate::config::{LoadOptions, load::load_sources};
    use crate::engine::{Engine, EngineOptions};
    use crate::proxy::limiter::Ask;

    const RULES: &str = "domain: d\ndescriptors:\n  - key: tokens\n    rate_limit: {unit: day, requests_per_unit: 1000}\n";

    async fn left(limiter: &Limiter) -> u32 {
        let probe = [Ask::charge(vec![("tokens".into(), "c".into())], Some(0))];
        let decision = limiter.decide("d", &probe).await.unwrap();
        decision.statuses[0].limit_remaining
    }

    /// Reserves 300 tokens, then drops a reservation that used 100 of them.
    async fn settle_after(refund_until: Instant) -> u32 {
        let sources = [("t.yaml".to_owned(), RULES.to_owned())];
        let config = load_sources(&sources, &LoadOptions::default()).unwrap();
        let clock = ManualClock::new(Duration::from_secs(86_400 * 20_000));
        let engine = Engine::new(config, clock, EngineOptions::default());
        let limiter = Limiter::InProcess(Arc::new(engine));
        let entries = vec![("tokens".to_owned(), "c".to_owned())];
        let reserve = [Ask::charge(entries.clone(), Some(300))];
        limiter.decide("d", &reserve).await.unwrap();
        let tracker = TaskTracker::new();
        let mut reservation = Reservation::new(
            limiter.clone(),
            tracker,
            ProxyMetrics::default(),
            "d".into(),
            vec![entries],
            300,
            refund_until,
        );
        reservation.used(Usage {
            input_tokens: 60,
            output_tokens: 40,
        });
        drop(reservation);
        left(&limiter).await
    }

    #[tokio::test]
    async fn the_unused_part_comes_back_while_its_window_lasts() {
        let later = Instant::now() + Duration::from_secs(3600);
        assert_eq!(settle_after(later).await, 900);
    }

    #[tokio::test]
    async fn no_refund_once_the_reservations_window_has_ended() {
        let earlier = Instant::now().checked_sub(Duration::from_secs(1)).unwrap();
        assert_eq!(settle_after(earlier).await, 700);
    }
}
