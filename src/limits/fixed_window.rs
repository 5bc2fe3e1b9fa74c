//! Fixed windows aligned to the Unix epoch, as the reference service counts: a window of `unit`
//! seconds starts at a multiple of `unit` since 1970-01-01T00:00Z (so weeks start on Thursday).

use std::time::Duration;

/// One counter's stored state: the end of the window it counts (seconds since the epoch) and
/// the count in it. A counter whose window has ended counts as zero.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    pub window_end: u64,
    pub count: u64,
}

impl Counter {
    /// Whether the counter still holds anything at `now_secs`; an expired one may be dropped.
    pub fn is_live(&self, now_secs: u64) -> bool {
        self.window_end > now_secs
    }
}

/// A limit of `volume` units per window of `unit_secs`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FixedWindow {
    pub volume: u32,
    pub unit_secs: u64,
}

/// How a call touches a counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Fits if `count + hits <= volume`; counts `hits`.
    Charge,
    /// Costs known only afterwards: fits while `count < volume`; counts `hits` even past it.
    Postpaid,
    /// Fits if at least one unit is left; counts nothing.
    Probe,
    /// Never denies; gives `hits` back (clamped at zero) in the current window.
    Refund,
    /// Never denies; counts `hits` even past the volume: a cost already incurred, settled
    /// after the fact (the proxy's token excess).
    Settle,
}

/// The decision for one counter, before the call as a whole is decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// Whether this counter lets the call through.
    pub fits: bool,
    /// No amount of waiting makes this call fit (volume 0, or more hits than the volume).
    pub never_fits: bool,
    /// The count this operation saw.
    pub count_before: u64,
    /// The count if the call is committed.
    pub count_after: u64,
    /// End of the current window, seconds since the epoch.
    pub window_end: u64,
}

impl Verdict {
    /// The counter as this operation leaves it, if the call is committed.
    pub fn after(&self) -> Counter {
        Counter {
            window_end: self.window_end,
            count: self.count_after,
        }
    }
}

impl FixedWindow {
    /// End of the window containing `now`.
    pub fn window_end(&self, now: Duration) -> u64 {
        let unit = self.unit_secs.max(1);
        let secs = now.as_secs();
        secs - secs % unit + unit
    }

    /// The current window's state, given what is stored. A stored window that ends *later*
    /// than `now`'s is still the current one: a window never goes backwards, even when the
    /// clock does (a step back, or a caller that read the clock just before a boundary).
    pub fn current(&self, state: Option<&Counter>, now: Duration) -> Counter {
        let end = self.window_end(now);
        match state {
            Some(c) if c.window_end >= end => *c,
            _ => Counter {
                window_end: end,
                count: 0,
            },
        }
    }

    /// Decides one counter for `hits` units, given the window's state as this operation sees
    /// it (including anything earlier parts of the same call add).
    pub fn decide(&self, current: Counter, hits: u64, mode: Mode) -> Verdict {
        let volume = u64::from(self.volume);
        let count = current.count;
        let (fits, never_fits, count_after) = match mode {
            Mode::Charge => {
                let after = count.saturating_add(hits);
                (after <= volume, hits > volume, after)
            }
            Mode::Postpaid => (count < volume, volume == 0, count.saturating_add(hits)),
            Mode::Probe => (count < volume, volume == 0, count),
            Mode::Refund => (true, false, count.saturating_sub(hits)),
            Mode::Settle => (true, false, count.saturating_add(hits)),
        };
        Verdict {
            fits,
            never_fits,
            count_before: count,
            count_after,
            window_end: current.window_end,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: FixedWindow = FixedWindow {
        volume: 5,
        unit_secs: 60,
    };

    fn at(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    #[test]
    fn windows_are_aligned_to_the_epoch() {
        assert_eq!(MINUTE.window_end(at(0)), 60);
        assert_eq!(MINUTE.window_end(at(59)), 60);
        assert_eq!(MINUTE.window_end(at(60)), 120);
        assert_eq!(MINUTE.window_end(Duration::from_millis(60_999)), 120);
        // 1970-01-01 was a Thursday: the first week ends on Thursday 8 January.
        let week = FixedWindow {
            volume: 1,
            unit_secs: 604_800,
        };
        assert_eq!(week.window_end(at(3 * 86_400)), 7 * 86_400);
    }

    fn window(window_end: u64, count: u64) -> Counter {
        Counter { window_end, count }
    }

    #[test]
    fn a_counter_of_a_past_window_counts_zero() {
        let state = window(60, 5);
        assert_eq!(MINUTE.current(Some(&state), at(59)), state);
        assert_eq!(MINUTE.current(Some(&state), at(60)), window(120, 0));
        assert_eq!(MINUTE.current(None, at(10)), window(60, 0));
        assert!(state.is_live(59));
        assert!(!state.is_live(60));
    }

    #[test]
    fn a_window_never_goes_backwards() {
        // Counted in the window ending at 120; a caller whose clock still says 59.999 s sees
        // that window, not an empty one that would overwrite it.
        let state = window(120, 4);
        assert_eq!(
            MINUTE.current(Some(&state), Duration::from_millis(59_999)),
            state
        );
    }

    #[test]
    fn month_and_year_windows_are_30_and_365_days_from_the_epoch() {
        let month = FixedWindow {
            volume: 1,
            unit_secs: 2_592_000,
        };
        let year = FixedWindow {
            volume: 1,
            unit_secs: 31_536_000,
        };
        // 1970-01-31T00:00Z is the first month boundary, 1971-01-01 the first year boundary.
        assert_eq!(month.window_end(at(0)), 30 * 86_400);
        assert_eq!(month.window_end(at(30 * 86_400)), 60 * 86_400);
        assert_eq!(year.window_end(at(364 * 86_400)), 365 * 86_400);
        // 2026-12-04T00:00Z (day 20791): the current 30-day window started on day 20790.
        assert_eq!(month.window_end(at(20_791 * 86_400)), 20_820 * 86_400);
    }

    #[test]
    fn charge_fits_up_to_the_volume_exactly() {
        let v = MINUTE.decide(window(60, 4), 1, Mode::Charge);
        assert!(v.fits && !v.never_fits);
        assert_eq!((v.count_before, v.count_after, v.window_end), (4, 5, 60));
        let v = MINUTE.decide(window(60, 5), 1, Mode::Charge);
        assert!(!v.fits && !v.never_fits);
        let v = MINUTE.decide(window(60, 3), 3, Mode::Charge);
        assert!(!v.fits);
    }

    #[test]
    fn more_hits_than_the_volume_never_fit() {
        let v = MINUTE.decide(window(60, 0), 6, Mode::Charge);
        assert!(!v.fits && v.never_fits);
        let zero = FixedWindow {
            volume: 0,
            unit_secs: 60,
        };
        for mode in [Mode::Charge, Mode::Postpaid, Mode::Probe] {
            let v = zero.decide(window(60, 0), 1, mode);
            assert!(!v.fits && v.never_fits, "{mode:?}");
        }
    }

    #[test]
    fn postpaid_denies_only_once_the_volume_is_reached_and_counts_past_it() {
        let v = MINUTE.decide(window(60, 4), 100, Mode::Postpaid);
        assert!(v.fits);
        assert_eq!(v.count_after, 104);
        assert!(!MINUTE.decide(window(60, 5), 1, Mode::Postpaid).fits);
    }

    #[test]
    fn probe_needs_one_unit_and_counts_nothing() {
        let v = MINUTE.decide(window(60, 4), 0, Mode::Probe);
        assert!(v.fits);
        assert_eq!(v.count_after, 4);
        assert!(!MINUTE.decide(window(60, 5), 0, Mode::Probe).fits);
    }

    #[test]
    fn refund_never_denies_and_clamps_at_zero() {
        let v = MINUTE.decide(window(60, 5), 2, Mode::Refund);
        assert!(v.fits);
        assert_eq!(v.count_after, 3);
        assert_eq!(MINUTE.decide(window(60, 1), 7, Mode::Refund).count_after, 0);
        let v = MINUTE.decide(window(60, 5), 7, Mode::Settle);
        assert!(v.fits && !v.never_fits);
        assert_eq!(v.count_after, 12);
    }

    #[test]
    fn saturates_instead_of_overflowing() {
        let v = MINUTE.decide(window(60, u64::MAX), u64::MAX, Mode::Charge);
        assert!(!v.fits);
        assert_eq!(v.count_after, u64::MAX);
    }
}
