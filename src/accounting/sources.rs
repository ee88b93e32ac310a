//! Distinct source addresses per consumer over a sliding window, in bounded memory: each
//! consumer keeps at most `MAX_PER_CONSUMER` addresses with their last-seen time; the oldest
//! is evicted when full (so a flood of addresses still reads as "at least the cap"). Sharded:
//! a request locks one shard, and the periodic sweep one shard at a time, so sweeping a
//! million consumers never stalls every request at once.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;

use crate::address_map::AddressMap;

pub const MAX_PER_CONSUMER: usize = 1024;

#[derive(Debug, Default)]
pub struct SourceTracker {
    seen: DashMap<Arc<str>, AddressMap<Instant>>,
}

impl SourceTracker {
    /// Notes that `consumer` was used from `address`.
    pub fn record(&self, consumer: &Arc<str>, address: IpAddr, now: Instant) {
        let mut addresses = match self.seen.get_mut(&**consumer) {
            Some(addresses) => addresses,
            None => self.seen.entry(consumer.clone()).or_default(),
        };
        if let Some(seen) = addresses.get_mut(&address) {
            *seen = now;
            return;
        }
        if addresses.len() >= MAX_PER_CONSUMER {
            if let Some(oldest) = addresses.iter().min_by_key(|(_, t)| **t).map(|(a, _)| *a) {
                addresses.remove(&oldest);
            }
        }
        addresses.insert(address, now);
    }

    /// Distinct addresses per consumer seen within `window`; forgets older ones.
    pub fn distinct(&self, window: Duration, now: Instant) -> Vec<(Arc<str>, usize)> {
        self.seen.retain(|_, addresses| {
            addresses.retain(|_, t| now.saturating_duration_since(*t) <= window);
            !addresses.is_empty()
        });
        self.seen
            .iter()
            .map(|e| (e.key().clone(), e.value().len()))
            .collect()
    }

    /// How long ago the consumer was last seen, if it was.
    pub fn last_seen(&self, consumer: &str) -> Option<Duration> {
        let newest = self.seen.get(consumer)?.iter().map(|(_, t)| *t).max()?;
        Some(newest.elapsed())
    }

    /// Every address a consumer used within `window` (for detectors and evidence).
    pub fn addresses(&self, consumer: &str, window: Duration, now: Instant) -> Vec<IpAddr> {
        self.seen
            .get(consumer)
            .map(|a| {
                a.iter()
                    .filter(|(_, t)| now.saturating_duration_since(**t) <= window)
                    .map(|(ip, _)| *ip)
                    .collect()
            })
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_distinct_addresses_in_the_window_with_a_cap() {
        let tracker = SourceTracker::default();
        let c: Arc<str> = "team".into();
        let t0 = Instant::now();
        tracker.record(&c, "10.0.0.1".parse().unwrap(), t0);
        tracker.record(&c, "10.0.0.1".parse().unwrap(), t0);
        tracker.record(
            &c,
            "10.0.0.2".parse().unwrap(),
            t0 + Duration::from_secs(50),
        );
        assert_eq!(
            tracker.distinct(Duration::from_secs(60), t0 + Duration::from_secs(55)),
            vec![(c.clone(), 2)]
        );
        assert_eq!(
            tracker.distinct(Duration::from_secs(60), t0 + Duration::from_secs(100)),
            vec![(c.clone(), 1)]
        );
        for i in 0..(MAX_PER_CONSUMER as u32 + 50) {
            tracker.record(
                &c,
                IpAddr::from(i.to_be_bytes()),
                t0 + Duration::from_secs(100),
            );
        }
        let [(_, n)] = tracker.distinct(Duration::from_secs(60), t0 + Duration::from_secs(100))[..]
        else {
            panic!("one consumer expected")
        };
        assert_eq!(n, MAX_PER_CONSUMER);
    }
}
