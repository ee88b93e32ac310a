//! Limit state in this process: one set of buckets per consumer and kind, in the consumer's
//! [slot](crate::consumer_state) (one short lock per decision). Idle buckets are dropped once
//! they are full again, so memory does not grow with key churn. [`LocalStore`] puts them, with
//! this replica's budgets ([`LocalBudgets`]), behind the [`LimitStore`] seam.

use std::borrow::Cow;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use super::bucket::Rate;
use super::consumer_buckets::ConsumerBuckets;
use super::local_budget::LocalBudgets;
use super::policy::Window;
use super::store::{Kind, LimitStore, Refusal};
use crate::consumer_state::ConsumerSlots;

/// The milliseconds clock every bucket uses (monotonic, from process start).
#[derive(Debug, Clone, Copy)]
pub struct Clock(Instant);

impl Clock {
    pub fn new() -> Self {
        Clock(Instant::now())
    }

    pub fn now_ms(&self) -> u64 {
        u64::try_from(self.0.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}

/// In-memory buckets per consumer, in the buckets part of each consumer's slot.
#[derive(Debug, Default)]
pub struct LocalBuckets {
    slots: Arc<ConsumerSlots>,
    pub clock: Clock,
}

/// The rates this replica enforces: all of them, or its share in Redis fallback. Borrowed in
/// the common case, so a decision allocates nothing.
fn scaled(rates: &[(Window, Rate)], share: u32) -> Cow<'_, [(Window, Rate)]> {
    if share <= 1 {
        return Cow::Borrowed(rates);
    }
    let share = u64::from(share);
    rates
        .iter()
        .map(|(w, r)| {
            let limit = (r.limit / share).max(1);
            (
                *w,
                Rate {
                    limit,
                    window: r.window,
                    capacity: (r.capacity / share).max(1),
                },
            )
        })
        .collect()
}

fn lock(m: &Mutex<ConsumerBuckets>) -> MutexGuard<'_, ConsumerBuckets> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl LocalBuckets {
    /// Buckets kept in `slots`.
    pub fn new(slots: Arc<ConsumerSlots>) -> Self {
        LocalBuckets {
            slots,
            clock: Clock::new(),
        }
    }

    fn with_state<T>(
        &self,
        consumer: &Arc<str>,
        f: impl FnOnce(&mut ConsumerBuckets, u64) -> T,
    ) -> T {
        let now = self.clock.now_ms();
        let slot = self.slots.get_or_make(consumer);
        let mut state = lock(&slot.buckets);
        f(&mut state, now)
    }

    /// Takes `cost` from every bucket of `kind`, at `share` of each rate.
    pub fn take(
        &self,
        consumer: &Arc<str>,
        kind: Kind,
        rates: &[(Window, Rate)],
        cost: u64,
        share: u32,
    ) -> Result<(), Refusal> {
        if rates.is_empty() {
            return Ok(());
        }
        let rates = scaled(rates, share);
        self.with_state(consumer, |s, now| {
            s.of_kind(kind, &rates, now).take_all(&rates, cost, now)
        })
    }

    /// Moves every bucket of `kind` by `delta` (actual − reserved), at `share` of each rate.
    pub fn adjust(
        &self,
        consumer: &Arc<str>,
        kind: Kind,
        rates: &[(Window, Rate)],
        delta: i64,
        share: u32,
    ) {
        if rates.is_empty() || delta == 0 {
            return;
        }
        let rates = scaled(rates, share);
        self.with_state(consumer, |s, now| {
            s.of_kind(kind, &rates, now).adjust(&rates, delta, now)
        });
    }

    /// Forgets state that is back to full (nothing is lost by forgetting it).
    pub fn evict_idle(&self) -> usize {
        let now = self.clock.now_ms();
        let mut evicted = 0;
        self.slots.for_each(|_, slot| {
            let mut state = lock(&slot.buckets);
            if !state.is_empty() && state.idle(now) {
                *state = ConsumerBuckets::default();
                evicted += 1;
            }
        });
        self.slots.remove_empty();
        evicted
    }

    /// Consumers holding buckets (for the memory benchmark and tests).
    pub fn len(&self) -> usize {
        let mut n = 0;
        self.slots
            .for_each(|_, slot| n += usize::from(!lock(&slot.buckets).is_empty()));
        n
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// This process's buckets and budgets behind the store seam. `share` scales every rate
/// (1/replicas when it is the fallback of the shared store while Redis is away).
#[derive(Debug, Clone)]
pub struct LocalStore {
    buckets: Arc<LocalBuckets>,
    budgets: Arc<LocalBudgets>,
    share: u32,
}

impl LocalStore {
    pub fn new(buckets: Arc<LocalBuckets>, budgets: Arc<LocalBudgets>, share: u32) -> Self {
        LocalStore {
            buckets,
            budgets,
            share: share.max(1),
        }
    }

    /// [`LimitStore::take`], which never waits here.
    pub fn take_now(
        &self,
        consumer: &Arc<str>,
        kind: Kind,
        rates: &[(Window, Rate)],
        cost: u64,
    ) -> Result<(), Refusal> {
        self.buckets.take(consumer, kind, rates, cost, self.share)
    }
}

impl LimitStore for LocalStore {
    async fn take(
        &self,
        consumer: &Arc<str>,
        kind: Kind,
        rates: &[(Window, Rate)],
        cost: u64,
    ) -> Result<(), Refusal> {
        self.take_now(consumer, kind, rates, cost)
    }

    fn adjust(&self, consumer: &Arc<str>, kind: Kind, rates: &[(Window, Rate)], delta: i64) {
        self.buckets
            .adjust(consumer, kind, rates, delta, self.share);
    }

    async fn reserve_budget(
        &self,
        key: &Arc<str>,
        month: &str,
        budget: u64,
        micro_usd: u64,
    ) -> bool {
        self.budgets.reserve(key, month, budget, micro_usd)
    }

    fn settle_budget(&self, key: &Arc<str>, _month: &str, reserved: u64, _actual: u64) {
        self.budgets.settle(key, reserved);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn per_min(n: u64) -> Vec<(Window, Rate)> {
        vec![(Window::Minute, Rate::per(n, Window::Minute.duration()))]
    }

    #[test]
    fn request_limit_refuses_the_sixty_first_and_names_the_window() {
        let local = LocalBuckets::default();
        let c: Arc<str> = "team".into();
        for _ in 0..60 {
            local.take(&c, Kind::Requests, &per_min(60), 1, 1).unwrap();
        }
        let refusal = local
            .take(&c, Kind::Requests, &per_min(60), 1, 1)
            .unwrap_err();
        assert_eq!(refusal.window, Window::Minute);
        assert_eq!(refusal.limit, 60);
        assert!(
            refusal.retry_after > Duration::from_millis(900)
                && refusal.retry_after <= Duration::from_secs(1)
        );
    }

    #[test]
    fn a_share_divides_the_limit() {
        let local = LocalBuckets::default();
        let c: Arc<str> = "team".into();
        let admitted = (0..100)
            .filter(|_| local.take(&c, Kind::Requests, &per_min(60), 1, 3).is_ok())
            .count();
        assert_eq!(admitted, 20);
    }

    #[test]
    fn idle_state_is_evicted_only_when_full() {
        let local = LocalBuckets::default();
        let c: Arc<str> = "team".into();
        local.take(&c, Kind::Requests, &per_min(60), 1, 1).unwrap();
        assert_eq!(local.evict_idle(), 0, "a used bucket is not forgotten");
        let fresh: Arc<str> = "other".into();
        local
            .take(&fresh, Kind::Tokens, &per_min(1_000), 0, 1)
            .unwrap();
        assert_eq!(local.evict_idle(), 1);
    }
}
