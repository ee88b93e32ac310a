//! Per-consumer metrics: finds each consumer's [`Record`] (in its
//! [slot](crate::consumer_state)), publishes the per-consumer gauges, and snapshots every
//! record for rendering in Prometheus text format next to the exporter's output
//! ([`super::meters_text`]).
//!
//! Why not the `metrics` registry: there every series costs about 300 B in three heap blocks
//! (label vector, key, counter), and full mode gives each active consumer a dozen of them. A
//! record holds them all, with the consumer's source addresses, in one block of 152 B (136 B
//! and the `Arc`'s counts), plus 64 B per model the consumer used and 24 B per address.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::record::{Record, Snapshot, UNSET, UNSET_SOURCES};
use super::sources::Clock;
use crate::consumer_state::{ConsumerSlots, Slot};

/// Every consumer's record, by consumer name (the record part of each consumer's slot).
#[derive(Debug)]
pub struct Meters {
    slots: Arc<ConsumerSlots>,
    /// The label used when no consumer matched (consumer and provider both).
    unknown: Arc<str>,
    /// The clock of the source addresses' last-seen times.
    clock: Clock,
}

impl Default for Meters {
    fn default() -> Self {
        Meters::new(Arc::default())
    }
}

impl Meters {
    /// Meters keeping their records in `slots`.
    pub fn new(slots: Arc<ConsumerSlots>) -> Self {
        Meters {
            slots,
            unknown: crate::telemetry::UNKNOWN.into(),
            clock: Clock::new(),
        }
    }

    /// `consumer`'s record with `provider` as its label. A consumer whose provider changed
    /// (a reload) gets a fresh record: its counters restart under the new label, which
    /// Prometheus reads as a new series.
    pub fn record(&self, consumer: &Arc<str>, provider: &Arc<str>) -> Arc<Record> {
        if let Some(slot) = self.slots.get(consumer) {
            if let Some(r) = &*slot.record.load() {
                if r.claims(provider) {
                    return r.clone();
                }
            }
        }
        let slot = self.slots.exclusive(consumer);
        let current = own_record(&slot);
        if current.claims(provider) {
            return current;
        }
        let fresh = Record::default();
        fresh
            .month_to_date
            .store(current.month_to_date.load(Relaxed), Relaxed);
        fresh.sources.store(current.sources.load(Relaxed), Relaxed);
        fresh.lists().addresses = std::mem::take(&mut current.lists().addresses);
        let _ = fresh.provider.set(provider.clone());
        let fresh = Arc::new(fresh);
        slot.record.store(Some(fresh.clone()));
        fresh
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
        let slot = self.slots.get(consumer)?;
        let newest = slot.record.load().as_ref()?.lists().addresses.newest()?;
        Some(Duration::from_millis(
            self.clock.ms(now).saturating_sub(newest),
        ))
    }

    /// Sets `keygate_source_addresses{consumer}` to the addresses seen within `window` of
    /// `now`, forgetting older ones. A consumer whose addresses all aged out reads 0; one
    /// never seen from an address stays absent.
    pub fn publish_sources(&self, window: Duration, now: Instant) {
        let now = self.clock.ms(now);
        self.for_each(|_, record| {
            let distinct = record.lists().addresses.sweep(now, window);
            if distinct > 0 {
                let n = u32::try_from(distinct).unwrap_or(u32::MAX);
                record.sources.store(n.min(UNSET_SOURCES - 1), Relaxed);
            } else {
                let _ = record
                    .sources
                    .fetch_update(Relaxed, Relaxed, |v| (v != UNSET_SOURCES).then_some(0));
            }
        });
    }

    /// Sets `keygate_spend_month_to_date_usd` for every consumer in `values`, and to 0 for
    /// every consumer it was set for that is absent now: a consumer that drops out reads 0,
    /// not its last value. One never set stays absent.
    pub fn publish_month_to_date(&self, values: Vec<(Arc<str>, u64)>) {
        let now: HashMap<Arc<str>, u64> = values.into_iter().collect();
        self.for_each(|consumer, record| {
            if !now.contains_key(consumer) {
                let _ = record
                    .month_to_date
                    .fetch_update(Relaxed, Relaxed, |v| (v != UNSET).then_some(0));
            }
        });
        for (consumer, value) in now {
            self.set_month_to_date(&consumer, value);
        }
    }

    fn gauges(&self, consumer: &Arc<str>) -> Arc<Record> {
        if let Some(slot) = self.slots.get(consumer) {
            if let Some(r) = &*slot.record.load() {
                return r.clone();
            }
        }
        own_record(&self.slots.exclusive(consumer))
    }

    /// Every record, sorted by consumer name.
    pub(super) fn snapshot(&self) -> Vec<(Arc<str>, Snapshot)> {
        let mut all = Vec::new();
        self.for_each(|consumer, record| all.push((consumer.clone(), record.snapshot())));
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// Calls `f` with every record (a slot without one is skipped).
    fn for_each(&self, mut f: impl FnMut(&Arc<str>, &Record)) {
        self.slots.for_each(|consumer, slot| {
            if let Some(record) = &*slot.record.load() {
                f(consumer, record);
            }
        });
    }

    /// Records held.
    pub fn len(&self) -> usize {
        let mut n = 0;
        self.for_each(|_, _| n += 1);
        n
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The slot's record, made (without a provider yet) if it has none; the caller holds the
/// slot exclusively, so two callers never make two.
fn own_record(slot: &Slot) -> Arc<Record> {
    if let Some(r) = slot.record.load_full() {
        return r;
    }
    let made = Arc::new(Record::default());
    slot.record.store(Some(made.clone()));
    made
}
