//! Times inside the detectors' per-consumer state, stored compactly: a [`Stamp`] is a signed
//! nanosecond offset from one process-wide epoch (8 bytes against an `Instant`'s 16), and a
//! [`Fired`] is a stamp with a sentinel for "never" (8 bytes against `Option<Instant>`'s 16).
//! Offsets are exact within ±292 years of the epoch, so every comparison and duration the
//! detectors compute is the one they would compute on `Instant`s; beyond that they saturate.
//! One shared epoch (rather than one per consumer) means stamps need no rebasing when a
//! consumer's windows restart, and a consumer's own origin is a stamp too.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The instant all stamps count from: the first one ever taken in this process.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// An instant as nanoseconds after (or, negative, before) the process-wide epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Stamp(i64);

impl Stamp {
    /// The earliest representable stamp; `i64::MIN` is kept free for [`Fired::NEVER`].
    const MIN: i64 = i64::MIN + 1;

    /// `at` as a stamp, saturating far outside ±292 years of the epoch.
    pub fn of(at: Instant) -> Stamp {
        let epoch = epoch();
        match at.checked_duration_since(epoch) {
            Some(after) => Stamp::clamp(after.as_nanos() as i128),
            None => Stamp::clamp(-(epoch.duration_since(at).as_nanos() as i128)),
        }
    }

    fn clamp(nanos: i128) -> Stamp {
        Stamp(nanos.clamp(i128::from(Stamp::MIN), i128::from(i64::MAX)) as i64)
    }

    /// Time from `earlier` to `self`, zero if `earlier` is not earlier (as
    /// `Instant::saturating_duration_since`).
    pub fn since(self, earlier: Stamp) -> Duration {
        let nanos = i128::from(self.0) - i128::from(earlier.0);
        // At most 2^64 - 2 between two clamped stamps, so the conversion cannot fail.
        Duration::from_nanos(u64::try_from(nanos.max(0)).unwrap_or(u64::MAX))
    }
}

/// When a detector last fired, or never.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Fired(i64);

impl Fired {
    pub const NEVER: Fired = Fired(i64::MIN);

    pub fn at(stamp: Stamp) -> Fired {
        Fired(stamp.0)
    }

    pub fn get(self) -> Option<Stamp> {
        (self != Fired::NEVER).then_some(Stamp(self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);

    #[test]
    fn durations_between_stamps_are_exact_on_both_sides_of_the_epoch() {
        let epoch = epoch();
        let after = epoch + DAY + Duration::from_nanos(7);
        assert_eq!(Stamp::of(epoch), Stamp(0));
        assert_eq!(Stamp::of(after), Stamp(86_400_000_000_007));
        assert_eq!(
            Stamp::of(after).since(Stamp::of(epoch)),
            DAY + Duration::from_nanos(7)
        );
        assert_eq!(Stamp::of(epoch).since(Stamp::of(after)), Duration::ZERO);
        // The monotonic clock may not reach back far before the process started.
        if let Some(before) = epoch.checked_sub(Duration::from_nanos(1_234_567_891)) {
            let b = Stamp::of(before);
            assert_eq!(b, Stamp(-1_234_567_891));
            assert!(b < Stamp::of(epoch));
            assert_eq!(
                Stamp::of(after).since(b),
                after.saturating_duration_since(before)
            );
            assert_eq!(b.since(Stamp::of(after)), Duration::ZERO);
        }
    }

    #[test]
    fn saturates_instead_of_wrapping() {
        assert_eq!(Stamp::clamp(i128::MAX), Stamp(i64::MAX));
        assert_eq!(Stamp::clamp(i128::MIN), Stamp(Stamp::MIN));
        let span = Stamp(i64::MAX).since(Stamp(Stamp::MIN));
        assert_eq!(span, Duration::from_nanos(u64::MAX - 1));
        // A far-future instant, if the platform can represent one, pins at the maximum.
        if let Some(far) = epoch().checked_add(DAY * 365 * 1000) {
            assert_eq!(Stamp::of(far), Stamp(i64::MAX));
        }
    }

    #[test]
    fn never_is_distinct_from_every_stamp() {
        assert_eq!(Fired::NEVER.get(), None);
        for s in [Stamp(Stamp::MIN), Stamp(-1), Stamp(0), Stamp(i64::MAX)] {
            assert_eq!(Fired::at(s).get(), Some(s));
        }
        assert_eq!(
            Fired::at(Stamp::clamp(i128::MIN)).get(),
            Some(Stamp(Stamp::MIN))
        );
    }
}
