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
}

/// The decision for one counter, before the call as a whole is decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// Whether this counter lets the call through.
    pub fits: bool,
    /// No amount of waiting makes this call fit (volume 0, or more hits than the volume).
    pub never_fits: bool,
    /// The count in the current window before this call.
    pub count_before: u64,
    /// The count if the call is committed.
    pub count_after: u64,
    /// End of the current window, seconds since the epoch.
    pub window_end: u64,
}

impl FixedWindow {
    /// End of the window containing `now`.
    pub fn window_end(&self, now: Duration) -> u64 {
        let unit = self.unit_secs.max(1);
        let secs = now.as_secs();
        secs - secs % unit + unit
    }

    /// The count `state` holds in the window containing `now`.
    pub fn current(&self, state: Option<&Counter>, now: Duration) -> u64 {
        let end = self.window_end(now);
        match state {
            Some(c) if c.window_end == end => c.count,
            _ => 0,
        }
    }

    /// Decides one counter for `hits` units, given the count already in the window (which
    /// includes anything earlier parts of the same call will add).
    pub fn decide(&self, count_before: u64, hits: u64, mode: Mode, now: Duration) -> Verdict {
        let volume = u64::from(self.volume);
        let (fits, never_fits, count_after) = match mode {
            Mode::Charge => {
                let after = count_before.saturating_add(hits);
                (after <= volume, hits > volume, after)
            }
            Mode::Postpaid => (
                count_before < volume,
                volume == 0,
                count_before.saturating_add(hits),
            ),
            Mode::Probe => (count_before < volume, volume == 0, count_before),
            Mode::Refund => (true, false, count_before.saturating_sub(hits)),
        };
        Verdict {
            fits,
            never_fits,
            count_before,
            count_after,
            window_end: self.window_end(now),
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

    #[test]
    fn a_counter_of_a_past_window_counts_zero() {
        let state = Counter {
            window_end: 60,
            count: 5,
        };
        assert_eq!(MINUTE.current(Some(&state), at(59)), 5);
        assert_eq!(MINUTE.current(Some(&state), at(60)), 0);
        assert_eq!(MINUTE.current(None, at(10)), 0);
        assert!(state.is_live(59));
        assert!(!state.is_live(60));
    }

    #[test]
    fn charge_fits_up_to_the_volume_exactly() {
        let v = MINUTE.decide(4, 1, Mode::Charge, at(1));
        assert!(v.fits && !v.never_fits);
        assert_eq!((v.count_before, v.count_after, v.window_end), (4, 5, 60));
        let v = MINUTE.decide(5, 1, Mode::Charge, at(1));
        assert!(!v.fits && !v.never_fits);
        let v = MINUTE.decide(3, 3, Mode::Charge, at(1));
        assert!(!v.fits);
    }

    #[test]
    fn more_hits_than_the_volume_never_fit() {
        let v = MINUTE.decide(0, 6, Mode::Charge, at(1));
        assert!(!v.fits && v.never_fits);
        let zero = FixedWindow {
            volume: 0,
            unit_secs: 60,
        };
        for mode in [Mode::Charge, Mode::Postpaid, Mode::Probe] {
            let v = zero.decide(0, 1, mode, at(1));
            assert!(!v.fits && v.never_fits, "{mode:?}");
        }
    }

    #[test]
    fn postpaid_denies_only_once_the_volume_is_reached_and_counts_past_it() {
        let v = MINUTE.decide(4, 100, Mode::Postpaid, at(1));
        assert!(v.fits);
        assert_eq!(v.count_after, 104);
        assert!(!MINUTE.decide(5, 1, Mode::Postpaid, at(1)).fits);
    }

    #[test]
    fn probe_needs_one_unit_and_counts_nothing() {
        let v = MINUTE.decide(4, 0, Mode::Probe, at(1));
        assert!(v.fits);
        assert_eq!(v.count_after, 4);
        assert!(!MINUTE.decide(5, 0, Mode::Probe, at(1)).fits);
    }

    #[test]
    fn refund_never_denies_and_clamps_at_zero() {
        let v = MINUTE.decide(5, 2, Mode::Refund, at(1));
        assert!(v.fits);
        assert_eq!(v.count_after, 3);
        assert_eq!(MINUTE.decide(1, 7, Mode::Refund, at(1)).count_after, 0);
    }

    #[test]
    fn saturates_instead_of_overflowing() {
        let v = MINUTE.decide(u64::MAX, u64::MAX, Mode::Charge, at(1));
        assert!(!v.fits);
        assert_eq!(v.count_after, u64::MAX);
    }
}
