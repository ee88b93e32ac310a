//! Per-consumer metrics, one compact record per consumer: requests by outcome, responses by
//! status class, request and response bytes, tokens and spend by model, and the two
//! per-consumer gauges (month-to-date spend, distinct source addresses), and the source
//! addresses that gauge counts ([`super::sources`]). Rendered in Prometheus text format next
//! to the exporter's output ([`super::meters_text`]).
//!
//! Why not the `metrics` registry: there every series costs about 300 B in three heap blocks
//! (label vector, key, counter), and full mode gives each active consumer a dozen of them. A
//! record holds them all, with the consumer's source addresses, in one block of 152 B (136 B
//! and the `Arc`'s counts), plus 64 B per model the consumer used and 24 B per address.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use dashmap::DashMap;

use super::sources::{Clock, Sources};

/// The token kinds of `keygate_tokens_total`, in the order [`Record::charge`] takes them.
pub const TOKEN_KINDS: [&str; 5] = ["input", "output", "cached", "reasoning", "cache_creation"];

/// The status classes of `keygate_responses_total`.
pub const STATUS_CLASSES: [&str; 4] = ["2xx", "3xx", "4xx", "5xx"];

const UNSET: u64 = u64::MAX;
const UNSET_SOURCES: u32 = u32::MAX;

/// Every consumer's record, by consumer name.
#[derive(Debug)]
pub struct Meters {
    records: DashMap<Arc<str>, Arc<Record>>,
    /// The label used when no consumer matched (consumer and provider both).
    unknown: Arc<str>,
    /// The clock of the source addresses' last-seen times.
    clock: Clock,
}

/// One consumer's counters and gauges. Counters only grow; a counter never touched is not
/// rendered, as a series the `metrics` registry never saw is not.
#[derive(Debug)]
pub struct Record {
    /// The `provider` label of the counters; set by the first request (a record made by a
    /// gauge has none yet).
    provider: OnceLock<Arc<str>>,
    allowed: AtomicU64,
    request_bytes: AtomicU64,
    response_bytes: AtomicU64,
    responses: [AtomicU64; 4],
    /// Month-to-date spend in micro-dollars, [`UNSET`] until published.
    month_to_date: AtomicU64,
    /// Distinct source addresses, [`UNSET_SOURCES`] until published.
    sources: AtomicU32,
    /// The parts that grow: behind one lock, so a record is one 160-byte block.
    lists: Mutex<Lists>,
}

#[derive(Debug, Default)]
struct Lists {
    /// The addresses behind the sources gauge, with when each was last seen.
    addresses: Sources,
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

impl Default for Meters {
    fn default() -> Self {
        Meters {
            records: DashMap::new(),
            unknown: crate::telemetry::UNKNOWN.into(),
            clock: Clock::new(),
        }
    }
}

impl Meters {
    /// `consumer`'s record with `provider` as its label. A consumer whose provider changed
    /// (a reload) gets a fresh record: its counters restart under the new label, which
    /// Prometheus reads as a new series.
    pub fn record(&self, consumer: &Arc<str>, provider: &Arc<str>) -> Arc<Record> {
        if let Some(r) = self.records.get(&**consumer) {
            if r.claims(provider) {
                return r.clone();
            }
        }
        let mut entry = self.records.entry(consumer.clone()).or_default();
        if !entry.claims(provider) {
            let fresh = Record::default();
            fresh
                .month_to_date
                .store(entry.month_to_date.load(Relaxed), Relaxed);
            fresh.sources.store(entry.sources.load(Relaxed), Relaxed);
            fresh.lists().addresses = std::mem::take(&mut entry.lists().addresses);
            let _ = fresh.provider.set(provider.clone());
            *entry = Arc::new(fresh);
        }
        entry.clone()
    }

    /// The record counting requests whose key matched no consumer.
    pub fn unknown(&self) -> Arc<Record> {
        self.record(&self.unknown.clone(), &self.unknown.clone())
    }

    /// Sets `keygate_spend_month_to_date_usd{consumer}`.
    pub fn set_month_to_date(&self, consumer: &Arc<str>, micro_usd: u64) {
        self.gauges(consumer).set_month_to_date(micro_usd);
    }

    /// Notes that `record`'s consumer called from `address` at `at`.
    pub fn saw(&self, record: &Record, address: IpAddr, at: Instant) {
        record.lists().addresses.note(address, self.clock.ms(at));
    }

    /// How long before `now` the consumer was last seen from any address still remembered.
    pub fn last_seen(&self, consumer: &str, now: Instant) -> Option<Duration> {
        let newest = self.records.get(consumer)?.lists().addresses.newest()?;
        Some(Duration::from_millis(
            self.clock.ms(now).saturating_sub(newest),
        ))
    }

    /// Sets `keygate_source_addresses{consumer}` to the addresses seen within `window` of
    /// `now`, forgetting older ones. A consumer whose addresses all aged out reads 0; one
    /// never seen from an address stays absent.
    pub fn publish_sources(&self, window: Duration, now: Instant) {
        let now = self.clock.ms(now);
        for record in self.records.iter() {
            let distinct = record.lists().addresses.sweep(now, window);
            if distinct > 0 {
                let n = u32::try_from(distinct).unwrap_or(u32::MAX);
                record.sources.store(n.min(UNSET_SOURCES - 1), Relaxed);
            } else {
                let _ = record
                    .sources
                    .fetch_update(Relaxed, Relaxed, |v| (v != UNSET_SOURCES).then_some(0));
            }
        }
    }

    /// Sets `keygate_spend_month_to_date_usd` for every consumer in `values`, and to 0 for
    /// every consumer it was set for that is absent now: a consumer that drops out reads 0,
    /// not its last value. One never set stays absent.
    pub fn publish_month_to_date(&self, values: Vec<(Arc<str>, u64)>) {
        let now: HashMap<Arc<str>, u64> = values.into_iter().collect();
        for record in self.records.iter() {
            if !now.contains_key(record.key()) {
                let _ = record
                    .month_to_date
                    .fetch_update(Relaxed, Relaxed, |v| (v != UNSET).then_some(0));
            }
        }
        for (consumer, value) in now {
            self.set_month_to_date(&consumer, value);
        }
    }

    fn gauges(&self, consumer: &Arc<str>) -> Arc<Record> {
        if let Some(r) = self.records.get(&**consumer) {
            return r.clone();
        }
        self.records.entry(consumer.clone()).or_default().clone()
    }

    /// Every record, sorted by consumer name.
    pub(super) fn snapshot(&self) -> Vec<(Arc<str>, Snapshot)> {
        let mut all: Vec<_> = self
            .records
            .iter()
            .map(|e| (e.key().clone(), e.value().snapshot()))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}

impl Record {
    fn claims(&self, provider: &Arc<str>) -> bool {
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

    fn lists(&self) -> MutexGuard<'_, Lists> {
        self.lists.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn with_rare(&self, f: impl FnOnce(&mut Rare)) {
        f(self.lists().rare.get_or_insert_with(Box::default));
    }

    fn snapshot(&self) -> Snapshot {
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
