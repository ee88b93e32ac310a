//! Limit state in this process: one set of buckets per consumer and kind (sharded map, one
//! short lock per decision). Idle state is evicted once its buckets are full again, so memory
//! does not grow with key churn. [`LocalStore`] puts it, with this replica's budgets
//! ([`LocalBudgets`]), behind the [`LimitStore`] seam.

use std::borrow::Cow;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dashmap::DashMap;

use super::bucket::{Bucket, Rate};
use super::local_budget::LocalBudgets;
use super::policy::Window;
use super::store::{Kind, LimitStore, Refusal};

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

/// A consumer's buckets of one kind, one per window, in the order of the rates they were made
/// for. The rates themselves stay in the consumer's shared policy: only a fingerprint is kept,
/// to notice a reload that changed them.
#[derive(Debug)]
struct Buckets {
    rates: u64,
    /// When every bucket is full again: past it, forgetting the state loses nothing.
    full_at_ms: u64,
    buckets: Box<[Bucket]>,
}

/// Identifies a set of rates. Per decision, so a multiply-xor fold rather than SipHash (the
/// `limits` benchmark measures it); a collision would only keep bucket levels across a reload.
fn fingerprint(rates: &[(Window, Rate)]) -> u64 {
    let mix = |h: u64, x: u64| (h ^ x).wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(29);
    rates.iter().fold(rates.len() as u64, |h, (window, rate)| {
        let window_ms = u64::try_from(rate.window.as_millis()).unwrap_or(u64::MAX);
        let h = mix(h, *window as u64);
        let h = mix(h, rate.limit);
        let h = mix(h, window_ms);
        mix(h, rate.capacity)
    })
}

impl Buckets {
    fn new(rates: &[(Window, Rate)], now_ms: u64) -> Self {
        Buckets {
            rates: fingerprint(rates),
            full_at_ms: now_ms,
            buckets: rates.iter().map(|(_, r)| Bucket::full(r, now_ms)).collect(),
        }
    }

    /// Takes `cost` from every bucket if all can give it; otherwise names the worst refusal.
    fn take_all(
        &mut self,
        rates: &[(Window, Rate)],
        cost: u64,
        now_ms: u64,
    ) -> Result<(), Refusal> {
        let mut worst: Option<Refusal> = None;
        for ((window, rate), bucket) in rates.iter().zip(self.buckets.iter_mut()) {
            let wait = bucket.wait(rate, cost, now_ms);
            if wait > Duration::ZERO && worst.is_none_or(|w| wait > w.retry_after) {
                worst = Some(Refusal {
                    window: *window,
                    limit: rate.limit,
                    retry_after: wait,
                });
            }
        }
        if let Some(refusal) = worst {
            return Err(refusal);
        }
        for ((_, rate), bucket) in rates.iter().zip(self.buckets.iter_mut()) {
            bucket.take(rate, cost, now_ms);
        }
        self.note_fill(rates, now_ms);
        Ok(())
    }

    fn adjust(&mut self, rates: &[(Window, Rate)], delta: i64, now_ms: u64) {
        for ((_, rate), bucket) in rates.iter().zip(self.buckets.iter_mut()) {
            bucket.adjust(rate, delta, now_ms);
        }
        self.note_fill(rates, now_ms);
    }

    /// Records when the fullest-to-be bucket is full again.
    fn note_fill(&mut self, rates: &[(Window, Rate)], now_ms: u64) {
        let until_full = rates
            .iter()
            .zip(self.buckets.iter_mut())
            .map(|((_, rate), bucket)| bucket.wait(rate, rate.capacity, now_ms))
            .max()
            .unwrap_or_default();
        let until_full = u64::try_from(until_full.as_millis()).unwrap_or(u64::MAX);
        self.full_at_ms = now_ms.saturating_add(until_full);
    }

    fn idle(&self, now_ms: u64) -> bool {
        now_ms >= self.full_at_ms
    }
}

/// A consumer's request and token buckets, each made on first use.
#[derive(Debug, Default)]
struct ConsumerState {
    requests: Option<Buckets>,
    tokens: Option<Buckets>,
}

impl ConsumerState {
    fn of_kind(&mut self, kind: Kind, rates: &[(Window, Rate)], now_ms: u64) -> &mut Buckets {
        let slot = match kind {
            Kind::Requests => &mut self.requests,
            Kind::Tokens => &mut self.tokens,
        };
        if slot.as_ref().is_some_and(|b| b.rates != fingerprint(rates)) {
            *slot = None;
        }
        slot.get_or_insert_with(|| Buckets::new(rates, now_ms))
    }

    fn idle(&self, now_ms: u64) -> bool {
        [&self.requests, &self.tokens]
            .into_iter()
            .all(|b| b.as_ref().is_none_or(|b| b.idle(now_ms)))
    }
}

/// In-memory buckets per consumer.
#[derive(Debug, Default)]
pub struct LocalBuckets {
    /// Boxed, so the map's spare capacity costs a pointer per slot, not a whole state.
    consumers: DashMap<Arc<str>, Box<Mutex<ConsumerState>>>,
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

impl LocalBuckets {
    fn with_state<T>(
        &self,
        consumer: &Arc<str>,
        f: impl FnOnce(&mut ConsumerState, u64) -> T,
    ) -> T {
        let now = self.clock.now_ms();
        let entry = self
            .consumers
            .entry(consumer.clone())
            .or_insert_with(|| Box::new(Mutex::new(ConsumerState::default())));
        let mut state = entry.lock().unwrap_or_else(|p| p.into_inner());
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
        let before = self.consumers.len();
        self.consumers
            .retain(|_, s| !s.get_mut().unwrap_or_else(|p| p.into_inner()).idle(now));
        before - self.consumers.len()
    }

    /// Entries held (for the memory benchmark and tests).
    pub fn len(&self) -> usize {
        self.consumers.len()
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
