//! Token-bucket math with debt, shared by the local limiter and mirrored by the Redis script.
//!
//! A bucket holds up to `capacity` (the burst) and refills at `limit / window`. Taking needs the
//! whole cost available, except that a full bucket admits any cost (a single request larger
//! than the burst is not refused forever; it leaves the bucket in debt). Adjusting after the
//! fact (token reconciliation) may push the level below zero: later requests then wait until
//! the debt is repaid. Over any span of one window, a bucket admits at most
//! `capacity + limit` of cost plus the one oversized request a full bucket allows.

use std::time::Duration;

/// The shape of one limit: `limit` per `window`, with a burst of `capacity`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rate {
    pub limit: u64,
    pub window: Duration,
    pub capacity: u64,
}

impl Rate {
    /// A limit whose burst equals the limit (the default: a full window's worth at once).
    pub fn per(limit: u64, window: Duration) -> Self {
        Rate {
            limit,
            window,
            capacity: limit,
        }
    }

    fn window_ms(&self) -> i128 {
        i128::try_from(self.window.as_millis())
            .unwrap_or(i128::MAX)
            .max(1)
    }

    /// Amounts are kept in units of 1/window_ms so refill per millisecond is exactly `limit`.
    fn q(&self, amount: i128) -> i128 {
        amount.saturating_mul(self.window_ms())
    }
}

/// One bucket's state: its level (in 1/window_ms units) at `updated_ms`. 24 bytes: the level
/// is an `i128` (a day's window in milliseconds times a large token limit overflows 64 bits)
/// kept as bytes, since an `i128` field would align the bucket to 16 and pad it to 32.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bucket {
    level_q: Level,
    updated_ms: u64,
}

#[derive(Clone, Copy, PartialEq, Eq)]
struct Level([u8; 16]);

impl Level {
    fn new(q: i128) -> Self {
        Level(q.to_ne_bytes())
    }

    fn get(self) -> i128 {
        i128::from_ne_bytes(self.0)
    }
}

impl std::fmt::Debug for Level {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.get().fmt(f)
    }
}

impl Bucket {
    /// A full bucket.
    pub fn full(rate: &Rate, now_ms: u64) -> Self {
        Bucket {
            level_q: Level::new(rate.q(rate.capacity.into())),
            updated_ms: now_ms,
        }
    }

    fn refill(&mut self, rate: &Rate, now_ms: u64) {
        let elapsed = i128::from(now_ms.saturating_sub(self.updated_ms));
        let cap = rate.q(rate.capacity.into());
        let level = self
            .level_q
            .get()
            .saturating_add(elapsed.saturating_mul(rate.limit.into()))
            .min(cap);
        self.level_q = Level::new(level);
        self.updated_ms = self.updated_ms.max(now_ms);
    }

    /// The level now, after refill, in whole units (rounded down; negative = debt).
    pub fn level(&mut self, rate: &Rate, now_ms: u64) -> i64 {
        self.refill(rate, now_ms);
        i64::try_from(self.level_q.get().div_euclid(rate.window_ms())).unwrap_or(i64::MIN)
    }

    /// How long until `cost` could be taken; zero when it can be taken now. A full bucket
    /// takes any cost.
    pub fn wait(&mut self, rate: &Rate, cost: u64, now_ms: u64) -> Duration {
        self.refill(rate, now_ms);
        let needed = rate.q(cost.min(rate.capacity).into());
        let level = self.level_q.get();
        if level >= needed {
            return Duration::ZERO;
        }
        let per_ms = i128::from(rate.limit.max(1));
        let ms = (needed - level + per_ms - 1) / per_ms;
        Duration::from_millis(u64::try_from(ms).unwrap_or(u64::MAX))
    }

    /// Takes `cost` (the caller checked `wait` is zero).
    pub fn take(&mut self, rate: &Rate, cost: u64, now_ms: u64) {
        self.adjust(rate, i64::try_from(cost).unwrap_or(i64::MAX), now_ms);
    }

    /// Adds `delta` of cost after the fact (negative = refund). May leave the bucket in debt.
    pub fn adjust(&mut self, rate: &Rate, delta: i64, now_ms: u64) {
        self.refill(rate, now_ms);
        let cap = rate.q(rate.capacity.into());
        let level = self
            .level_q
            .get()
            .saturating_sub(rate.q(delta.into()))
            .min(cap);
        self.level_q = Level::new(level);
    }

    /// True when the bucket is full again, so forgetting it loses nothing.
    pub fn is_full(&mut self, rate: &Rate, now_ms: u64) -> bool {
        self.refill(rate, now_ms);
        self.level_q.get() >= rate.q(rate.capacity.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MIN: Duration = Duration::from_secs(60);

    #[test]
    fn a_bucket_is_24_bytes_and_keeps_levels_beyond_64_bits() {
        assert_eq!(std::mem::size_of::<Bucket>(), 24);
        // 2^62 tokens a day: 2^62 × 86,400,000 units, far beyond 64 bits.
        let rate = Rate::per(1 << 62, Duration::from_secs(86_400));
        let mut b = Bucket::full(&rate, 0);
        assert_eq!(b.level(&rate, 0), 1 << 62);
        b.take(&rate, 1 << 62, 0);
        assert_eq!(b.level(&rate, 0), 0);
        b.adjust(&rate, 5, 0);
        assert_eq!(b.level(&rate, 0), -5);
        for q in [i128::MIN, -1, 0, 1, i128::MAX] {
            assert_eq!(Level::new(q).get(), q);
        }
    }

    #[test]
    fn sixty_per_minute_admits_sixty_then_one_per_second() {
        let rate = Rate::per(60, MIN);
        let mut b = Bucket::full(&rate, 0);
        for _ in 0..60 {
            assert_eq!(b.wait(&rate, 1, 0), Duration::ZERO);
            b.take(&rate, 1, 0);
        }
        assert_eq!(b.wait(&rate, 1, 0), Duration::from_millis(1000));
        assert_eq!(b.wait(&rate, 1, 999), Duration::from_millis(1));
        assert_eq!(b.wait(&rate, 1, 1000), Duration::ZERO);
    }

    #[test]
    fn debt_is_repaid_before_new_work() {
        let rate = Rate::per(1_000, MIN);
        let mut b = Bucket::full(&rate, 0);
        b.take(&rate, 100, 0);
        b.adjust(&rate, 1_400, 0); // the answer was much longer than reserved
        assert_eq!(b.level(&rate, 0), -500);
        assert_eq!(b.wait(&rate, 100, 0), Duration::from_millis(36_000));
        assert_eq!(b.wait(&rate, 100, 36_000), Duration::ZERO);
    }

    #[test]
    fn refunds_never_exceed_capacity() {
        let rate = Rate::per(10, MIN);
        let mut b = Bucket::full(&rate, 0);
        b.adjust(&rate, -50, 0);
        assert_eq!(b.level(&rate, 0), 10);
    }

    #[test]
    fn a_full_bucket_admits_one_oversized_request() {
        let rate = Rate::per(100, MIN);
        let mut b = Bucket::full(&rate, 0);
        assert_eq!(b.wait(&rate, 500, 0), Duration::ZERO);
        b.take(&rate, 500, 0);
        assert!(b.wait(&rate, 1, 0) > Duration::from_secs(200));
    }

    proptest! {
        /// Over any window, unit-cost admissions never exceed limit + burst.
        #[test]
        fn admitted_never_exceeds_limit_plus_burst(
            limit in 1u64..200,
            gaps in proptest::collection::vec(0u64..3_000, 1..600),
        ) {
            let window = Duration::from_secs(10);
            let rate = Rate::per(limit, window);
            let mut b = Bucket::full(&rate, 0);
            let mut now = 0u64;
            let mut admitted: Vec<u64> = Vec::new();
            for gap in gaps {
                now += gap;
                if b.wait(&rate, 1, now) == Duration::ZERO {
                    b.take(&rate, 1, now);
                    admitted.push(now);
                }
            }
            let w = window.as_millis() as u64;
            for (i, start) in admitted.iter().enumerate() {
                let in_window = admitted[i..].iter().take_while(|t| **t < start + w).count() as u64;
                prop_assert!(in_window <= limit + limit, "{in_window} admitted in one window, limit {limit}");
            }
        }

        /// Refill is exact: after any idle time the level is min(capacity, level + rate * time).
        #[test]
        fn refill_is_linear_and_capped(limit in 1u64..10_000, taken in 0u64..10_000, idle in 0u64..120_000) {
            let rate = Rate::per(limit, MIN);
            let mut b = Bucket::full(&rate, 0);
            b.adjust(&rate, taken as i64, 0);
            let want = ((limit as i128 * 60_000 - taken as i128 * 60_000 + idle as i128 * limit as i128)
                .min(limit as i128 * 60_000))
                .div_euclid(60_000);
            prop_assert_eq!(i128::from(b.level(&rate, idle)), want);
        }

        /// Whatever the debt, the wait until a request fits is exactly what refill needs.
        #[test]
        fn waiting_the_announced_time_is_enough(limit in 1u64..1_000, debt in 0u64..5_000, cost in 1u64..1_000) {
            let rate = Rate::per(limit, MIN);
            let mut b = Bucket::full(&rate, 0);
            b.adjust(&rate, (limit + debt) as i64, 0);
            let wait = b.wait(&rate, cost, 0);
            let mut early = b;
            prop_assert_eq!(b.wait(&rate, cost, wait.as_millis() as u64), Duration::ZERO);
            if wait > Duration::ZERO {
                prop_assert!(early.wait(&rate, cost, wait.as_millis() as u64 - 1) > Duration::ZERO, "not one ms early");
            }
        }
    }
}
