//! Limit state in this process: one set of buckets per consumer (sharded map, one short lock
//! per decision), plus failed-authentication buckets per source address. Idle state is evicted
//! once its buckets are full again, so memory does not grow with key churn.

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dashmap::DashMap;

use super::bucket::{Bucket, Rate};
use super::policy::Window;

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

/// Which limit refused, and when to retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    pub window: Window,
    pub limit: u64,
    pub retry_after: Duration,
}

/// A consumer's buckets of one kind (requests or tokens), one per window, in the order of the
/// rates they were made for. The rates themselves stay in the consumer's shared policy: only a
/// fingerprint is kept, to notice a reload that changed them.
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

    /// Takes `cost` from every bucket if all can give it; otherwise names the first refusal.
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

#[derive(Debug)]
struct ConsumerState {
    requests: Buckets,
    tokens: Buckets,
}

/// In-memory buckets. `share` scales every rate (1/replicas in Redis fallback).
#[derive(Debug, Default)]
pub struct LocalBuckets {
    /// Boxed, so the map's spare capacity costs a pointer per slot, not a whole state.
    consumers: DashMap<Arc<str>, Box<Mutex<ConsumerState>>>,
    sources: DashMap<IpAddr, Mutex<Bucket>>,
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
        requests: &[(Window, Rate)],
        tokens: &[(Window, Rate)],
        f: impl FnOnce(&mut ConsumerState, u64) -> T,
    ) -> T {
        let now = self.clock.now_ms();
        let entry = self.consumers.entry(consumer.clone()).or_insert_with(|| {
            Box::new(Mutex::new(ConsumerState {
                requests: Buckets::new(requests, now),
                tokens: Buckets::new(tokens, now),
            }))
        });
        let mut state = entry.lock().unwrap_or_else(|p| p.into_inner());
        if state.requests.rates != fingerprint(requests) {
            state.requests = Buckets::new(requests, now);
        }
        if state.tokens.rates != fingerprint(tokens) {
            state.tokens = Buckets::new(tokens, now);
        }
        f(&mut state, now)
    }

    /// One request against the request buckets.
    pub fn admit_request(
        &self,
        consumer: &Arc<str>,
        rates: &[(Window, Rate)],
        tokens: &[(Window, Rate)],
        share: u32,
    ) -> Result<(), Refusal> {
        if rates.is_empty() {
            return Ok(());
        }
        let (r, t) = (scaled(rates, share), scaled(tokens, share));
        self.with_state(consumer, &r, &t, |s, now| s.requests.take_all(&r, 1, now))
    }

    /// Reserves `tokens` against the token buckets.
    pub fn reserve_tokens(
        &self,
        consumer: &Arc<str>,
        rates: &[(Window, Rate)],
        tokens: &[(Window, Rate)],
        amount: u64,
        share: u32,
    ) -> Result<(), Refusal> {
        if tokens.is_empty() {
            return Ok(());
        }
        let (r, t) = (scaled(rates, share), scaled(tokens, share));
        self.with_state(consumer, &r, &t, |s, now| {
            s.tokens.take_all(&t, amount, now)
        })
    }

    /// Reconciles a reservation with the actual usage (`delta` = actual − reserved).
    pub fn reconcile_tokens(
        &self,
        consumer: &Arc<str>,
        rates: &[(Window, Rate)],
        tokens: &[(Window, Rate)],
        delta: i64,
        share: u32,
    ) {
        if tokens.is_empty() || delta == 0 {
            return;
        }
        let (r, t) = (scaled(rates, share), scaled(tokens, share));
        self.with_state(consumer, &r, &t, |s, now| s.tokens.adjust(&t, delta, now));
    }

    /// Refuses an address that failed authentication too often recently.
    pub fn check_source(&self, ip: IpAddr, rate: &Rate) -> Result<(), Refusal> {
        let Some(entry) = self.sources.get(&ip) else {
            return Ok(());
        };
        let mut bucket = entry.lock().unwrap_or_else(|p| p.into_inner());
        match bucket.wait(rate, 1, self.clock.now_ms()) {
            d if d.is_zero() => Ok(()),
            retry_after => Err(Refusal {
                window: Window::Minute,
                limit: rate.limit,
                retry_after,
            }),
        }
    }

    /// Counts one failed authentication from `ip`.
    pub fn failed_auth(&self, ip: IpAddr, rate: &Rate) {
        let now = self.clock.now_ms();
        let entry = self
            .sources
            .entry(ip)
            .or_insert_with(|| Mutex::new(Bucket::full(rate, now)));
        let mut bucket = entry.lock().unwrap_or_else(|p| p.into_inner());
        bucket.take(rate, 1, now);
    }

    /// Forgets state that is back to full (nothing is lost by forgetting it).
    pub fn evict_idle(&self, source_rate: &Rate) -> usize {
        let now = self.clock.now_ms();
        let before = self.consumers.len() + self.sources.len();
        self.consumers.retain(|_, s| {
            let state = s.get_mut().unwrap_or_else(|p| p.into_inner());
            !(state.requests.idle(now) && state.tokens.idle(now))
        });
        self.sources.retain(|_, b| {
            !b.get_mut()
                .unwrap_or_else(|p| p.into_inner())
                .is_full(source_rate, now)
        });
        before - self.consumers.len() - self.sources.len()
    }

    /// Entries held (for the memory benchmark and tests).
    pub fn len(&self) -> usize {
        self.consumers.len() + self.sources.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
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
            local.admit_request(&c, &per_min(60), &[], 1).unwrap();
        }
        let refusal = local.admit_request(&c, &per_min(60), &[], 1).unwrap_err();
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
            .filter(|_| local.admit_request(&c, &per_min(60), &[], 3).is_ok())
            .count();
        assert_eq!(admitted, 20);
    }

    #[test]
    fn idle_state_is_evicted_only_when_full() {
        let local = LocalBuckets::default();
        let c: Arc<str> = "team".into();
        local.admit_request(&c, &per_min(60), &[], 1).unwrap();
        let guard = Rate::per(30, Window::Minute.duration());
        assert_eq!(
            local.evict_idle(&guard),
            0,
            "a used bucket is not forgotten"
        );
        let fresh: Arc<str> = "other".into();
        local
            .reserve_tokens(&fresh, &[], &per_min(1_000), 0, 1)
            .unwrap();
        assert_eq!(local.evict_idle(&guard), 1);
    }

    #[test]
    fn failed_authentications_lock_out_an_address() {
        let local = LocalBuckets::default();
        let rate = Rate::per(3, Window::Minute.duration());
        let ip: IpAddr = "127.0.0.9".parse().unwrap();
        for _ in 0..3 {
            local.check_source(ip, &rate).unwrap();
            local.failed_auth(ip, &rate);
        }
        assert!(local.check_source(ip, &rate).is_err());
        assert!(local
            .check_source("127.0.0.10".parse().unwrap(), &rate)
            .is_ok());
    }
}
