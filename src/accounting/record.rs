//! One consumer's metrics record: requests by outcome, responses by status class, request and
//! response bytes, tokens and spend by model, the two per-consumer gauges (month-to-date spend,
//! distinct source addresses) and the source addresses that gauge counts
//! ([`super::sources`]). [`super::meters::Meters`] finds a consumer's record; this file is what
//! a record holds and how it counts.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use super::sources::Sources;

/// The token kinds of `keygate_tokens_total`, in the order [`Record::charge`] takes them.
pub const TOKEN_KINDS: [&str; 5] = ["input", "output", "cached", "reasoning", "cache_creation"];

/// The status classes of `keygate_responses_total`.
pub const STATUS_CLASSES: [&str; 4] = ["2xx", "3xx", "4xx", "5xx"];

pub(super) const UNSET: u64 = u64::MAX;
pub(super) const UNSET_SOURCES: u32 = u32::MAX;

/// One consumer's counters and gauges. Counters only grow; a counter never touched is not
/// rendered, as a series the `metrics` registry never saw is not.
#[derive(Debug)]
pub struct Record {
    /// The `provider` label of the counters; set by the first request (a record made by a
    /// gauge has none yet).
    pub(super) provider: OnceLock<Arc<str>>,
    allowed: AtomicU64,
    request_bytes: AtomicU64,
    response_bytes: AtomicU64,
    responses: [AtomicU64; 4],
    /// Month-to-date spend in micro-dollars, [`UNSET`] until published.
    pub(super) month_to_date: AtomicU64,
    /// Distinct source addresses, [`UNSET_SOURCES`] until published.
    pub(super) sources: AtomicU32,
    /// The parts that grow: behind one lock, so a record is one 160-byte block.
    lists: Mutex<Lists>,
}

#[derive(Debug, Default)]
pub(super) struct Lists {
    /// The addresses behind the sources gauge, with when each was last seen.
    pub(super) addresses: Sources,
    /// Denials and models: few per consumer, and none for most.
    rare: Option<Box<Rare>>,
}

#[derive(Debug, Default, Clone)]
pub(super) struct Rare {
    pub denied: Vec<(&'static str, u64)>,
    pub models: Vec<ModelRow>,
}

/// Tokens by kind ([`TOKEN_KINDS`]) and spend of one model.
#[derive(Debug, Clone)]
pub(super) struct ModelRow {
    pub model: Arc<str>,
    pub tokens: [u64; 5],
    pub micro_usd: u64,
}

/// A record's values at one moment, for rendering.
#[derive(Debug, Default)]
pub(super) struct Snapshot {
    pub provider: Option<Arc<str>>,
    pub allowed: u64,
    pub request_bytes: u64,
    pub response_bytes: u64,
    pub responses: [u64; 4],
    pub month_to_date: Option<u64>,
    pub sources: Option<u32>,
    pub rare: Rare,
}

impl Record {
    pub(super) fn claims(&self, provider: &Arc<str>) -> bool {
        let label = self.provider.get_or_init(|| provider.clone());
        Arc::ptr_eq(label, provider) || label == provider
    }

    /// Sets `keygate_spend_month_to_date_usd` for this consumer.
    pub fn set_month_to_date(&self, micro_usd: u64) {
        self.month_to_date.store(micro_usd.min(UNSET - 1), Relaxed);
    }

    /// Counts one request's final outcome (`allowed`, or a denial's label).
    pub fn outcome(&self, outcome: &'static str) {
        if outcome == "allowed" {
            self.allowed.fetch_add(1, Relaxed);
            return;
        }
        self.with_rare(
            |rare| match rare.denied.iter_mut().find(|(o, _)| *o == outcome) {
                Some((_, n)) => *n += 1,
                None => {
                    rare.denied.reserve_exact(1);
                    rare.denied.push((outcome, 1));
                }
            },
        );
    }

    pub fn request_bytes(&self, n: u64) {
        self.request_bytes.fetch_add(n, Relaxed);
    }

    pub fn response_bytes(&self, n: u64) {
        self.response_bytes.fetch_add(n, Relaxed);
    }

    /// Counts a response by its status class.
    pub fn response(&self, status: u16) {
        let class = match status {
            200..=299 => 0,
            300..=399 => 1,
            400..=499 => 2,
            _ => 3,
        };
        self.responses[class].fetch_add(1, Relaxed);
    }

    /// Adds one charged response's tokens (by [`TOKEN_KINDS`]) and spend under `model`.
    pub fn charge(&self, model: &Arc<str>, tokens: [u64; 5], micro_usd: u64) {
        self.with_rare(|rare| {
            let row = match rare.models.iter().position(|r| r.model == *model) {
                Some(i) => &mut rare.models[i],
                None => {
                    // Most consumers use one or two models: grow by one, not to four.
                    rare.models.reserve_exact(1);
                    rare.models.push(ModelRow {
                        model: model.clone(),
                        tokens: [0; 5],
                        micro_usd: 0,
                    });
                    let last = rare.models.len() - 1;
                    &mut rare.models[last]
                }
            };
            for (total, n) in row.tokens.iter_mut().zip(tokens) {
                *total = total.saturating_add(n);
            }
            row.micro_usd = row.micro_usd.saturating_add(micro_usd);
        });
    }

    pub(super) fn lists(&self) -> MutexGuard<'_, Lists> {
        self.lists.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn with_rare(&self, f: impl FnOnce(&mut Rare)) {
        f(self.lists().rare.get_or_insert_with(Box::default));
    }

    pub(super) fn snapshot(&self) -> Snapshot {
        let lists = self.lists();
        let month_to_date = self.month_to_date.load(Relaxed);
        let sources = self.sources.load(Relaxed);
        Snapshot {
            provider: self.provider.get().cloned(),
            allowed: self.allowed.load(Relaxed),
            request_bytes: self.request_bytes.load(Relaxed),
            response_bytes: self.response_bytes.load(Relaxed),
            responses: std::array::from_fn(|i| self.responses[i].load(Relaxed)),
            month_to_date: (month_to_date != UNSET).then_some(month_to_date),
            sources: (sources != UNSET_SOURCES).then_some(sources),
            rare: lists.rare.as_deref().cloned().unwrap_or_default(),
        }
    }
}

impl Default for Record {
    fn default() -> Self {
        Record {
            provider: OnceLock::new(),
            allowed: AtomicU64::new(0),
            request_bytes: AtomicU64::new(0),
            response_bytes: AtomicU64::new(0),
            responses: Default::default(),
            month_to_date: AtomicU64::new(UNSET),
            sources: AtomicU32::new(UNSET_SOURCES),
            lists: Mutex::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    /// Pins the record's size: a million active consumers hold a million of these.
    #[test]
    fn record_stays_small() {
        let size = std::mem::size_of::<super::Record>();
        assert!(size <= 136, "{size}");
    }
}
