//! A consumer's request and token buckets: what the local limits keep per consumer, in the
//! consumer's [slot](crate::consumer_state). [`super::local::LocalBuckets`] decides with them.

use std::time::Duration;

use super::bucket::{Bucket, Rate};
use super::policy::Window;
use super::store::{Kind, Refusal};

/// A consumer's buckets of one kind, one per window, in the order of the rates they were made
/// for. The rates themselves stay in the consumer's shared policy: only a fingerprint is kept,
/// to notice a reload that changed them.
#[derive(Debug)]
pub(super) struct Buckets {
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
    pub(super) fn take_all(
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

    pub(super) fn adjust(&mut self, rates: &[(Window, Rate)], delta: i64, now_ms: u64) {
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
pub(crate) struct ConsumerBuckets {
    requests: Option<Buckets>,
    tokens: Option<Buckets>,
}

impl ConsumerBuckets {
    pub(super) fn of_kind(
        &mut self,
        kind: Kind,
        rates: &[(Window, Rate)],
        now_ms: u64,
    ) -> &mut Buckets {
        let slot = match kind {
            Kind::Requests => &mut self.requests,
            Kind::Tokens => &mut self.tokens,
        };
        if slot.as_ref().is_some_and(|b| b.rates != fingerprint(rates)) {
            *slot = None;
        }
        slot.get_or_insert_with(|| Buckets::new(rates, now_ms))
    }

    pub(super) fn idle(&self, now_ms: u64) -> bool {
        [&self.requests, &self.tokens]
            .into_iter()
            .all(|b| b.as_ref().is_none_or(|b| b.idle(now_ms)))
    }

    /// Whether it holds no bucket (a slot whose parts are all empty is dropped).
    pub(crate) fn is_empty(&self) -> bool {
        self.requests.is_none() && self.tokens.is_none()
    }
}
