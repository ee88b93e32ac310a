//! Bucket leases: slices of the shared request and token buckets held by this replica, so a
//! decision needs no round trip to Redis.
//!
//! A lease is a number of units (requests or tokens) this replica took from the shared bucket
//! in Redis; a decision takes from it locally. It cannot admit more than Redis granted, so a
//! shared limit holds across replicas up to what the replicas hold unused (about 1 % of the
//! limit, [`lease_size`]; twice that when a decision's miss and the background top-up are
//! granted at once); what an idle lease holds is given back.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dashmap::DashMap;

use super::bucket::Rate;
use super::policy::Window;
use super::store::Kind;

/// One bucket set's lease (all of a consumer's windows of one kind: a grant takes the same
/// units from each).
#[derive(Debug)]
struct Lease {
    rates: Arc<[(Window, Rate)]>,
    /// Units held; negative after a reconciliation that found more was used (a debt).
    units: i64,
    /// The size to keep on hand.
    size: u64,
    used_at: Instant,
}

/// What a lease could do for a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Taken {
    Yes,
    /// Not enough on hand: this many more units are needed.
    Short(u64),
}

/// A lease that wants refilling, or one to give back.
#[derive(Debug, Clone)]
pub struct LeaseWork {
    pub consumer: Arc<str>,
    pub kind: Kind,
    pub rates: Arc<[(Window, Rate)]>,
    /// To grant (refill), or held to give back (negative: a debt to take).
    pub units: i64,
}

/// Bucket leases by (consumer, kind).
#[derive(Debug, Default)]
pub struct Leases {
    map: DashMap<(Arc<str>, Kind), Mutex<Lease>>,
}

/// Units to keep on hand for `rates` shared by `replicas`: about 1 % of the smallest limit
/// per replica, so what all replicas may hold unused is about 1 % of the limit.
pub fn lease_size(rates: &[(Window, Rate)], replicas: u32) -> u64 {
    let smallest = rates.iter().map(|(_, r)| r.limit).min().unwrap_or(1);
    (smallest / (u64::from(replicas.max(1)) * 100)).max(1)
}

fn lock(m: &Mutex<Lease>) -> std::sync::MutexGuard<'_, Lease> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Leases {
    fn entry(
        &self,
        consumer: &Arc<str>,
        kind: Kind,
        rates: &[(Window, Rate)],
        replicas: u32,
    ) -> dashmap::mapref::one::RefMut<'_, (Arc<str>, Kind), Mutex<Lease>> {
        self.map.entry((consumer.clone(), kind)).or_insert_with(|| {
            Mutex::new(Lease {
                rates: rates.into(),
                units: 0,
                size: lease_size(rates, replicas),
                used_at: Instant::now(),
            })
        })
    }

    /// Takes `cost` from the lease when it holds enough.
    pub fn try_take(
        &self,
        consumer: &Arc<str>,
        kind: Kind,
        rates: &[(Window, Rate)],
        cost: u64,
        replicas: u32,
    ) -> Taken {
        let entry = self.entry(consumer, kind, rates, replicas);
        let mut lease = lock(&entry);
        if *lease.rates != *rates {
            // A reload changed the limits: the units held were taken under the old ones.
            lease.rates = rates.into();
            lease.size = lease_size(rates, replicas);
        }
        lease.used_at = Instant::now();
        let cost_units = i64::try_from(cost).unwrap_or(i64::MAX);
        if lease.units >= cost_units {
            lease.units -= cost_units;
            Taken::Yes
        } else {
            Taken::Short(u64::try_from(cost_units.saturating_sub(lease.units)).unwrap_or(u64::MAX))
        }
    }

    /// The units a lease of `rates` keeps on hand.
    pub fn size(&self, consumer: &Arc<str>, kind: Kind) -> u64 {
        self.map
            .get(&(consumer.clone(), kind))
            .map_or(1, |e| lock(&e).size)
    }

    /// Adds granted or refunded units (negative: used after the fact, a debt the lease pays
    /// back to Redis when it is given back).
    pub fn credit(
        &self,
        consumer: &Arc<str>,
        kind: Kind,
        rates: &[(Window, Rate)],
        units: i64,
        replicas: u32,
    ) {
        let entry = self.entry(consumer, kind, rates, replicas);
        let mut lease = lock(&entry);
        lease.units = lease.units.saturating_add(units);
    }

    /// Removes every lease and returns what they held (at shutdown).
    pub fn take_all(&self) -> Vec<LeaseWork> {
        self.take_idle(Instant::now(), Duration::ZERO)
    }

    /// Leases below half their size that were used within `active`: what to grant them.
    pub fn to_refill(&self, now: Instant, active: Duration) -> Vec<LeaseWork> {
        self.map
            .iter()
            .filter_map(|e| {
                let lease = lock(e.value());
                let wanted = i64::try_from(lease.size).unwrap_or(i64::MAX);
                let low = lease.units < wanted / 2 || lease.units < 1;
                (low && now.duration_since(lease.used_at) < active).then(|| LeaseWork {
                    consumer: e.key().0.clone(),
                    kind: e.key().1,
                    rates: lease.rates.clone(),
                    units: wanted.saturating_sub(lease.units),
                })
            })
            .collect()
    }

    /// Removes leases unused for `idle` and returns what they held (or owe), to give back.
    pub fn take_idle(&self, now: Instant, idle: Duration) -> Vec<LeaseWork> {
        let mut out = Vec::new();
        self.map.retain(|(consumer, kind), m| {
            let lease = m.get_mut().unwrap_or_else(|p| p.into_inner());
            if now.duration_since(lease.used_at) < idle {
                return true;
            }
            if lease.units != 0 {
                out.push(LeaseWork {
                    consumer: consumer.clone(),
                    kind: *kind,
                    rates: lease.rates.clone(),
                    units: lease.units,
                });
            }
            false
        });
        out
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn per_min(n: u64) -> Vec<(Window, Rate)> {
        vec![(Window::Minute, Rate::per(n, Window::Minute.duration()))]
    }

    #[test]
    fn a_lease_admits_only_what_was_granted() {
        let leases = Leases::default();
        let c: Arc<str> = "c".into();
        let rates = per_min(1000);
        assert_eq!(
            leases.try_take(&c, Kind::Requests, &rates, 1, 1),
            Taken::Short(1)
        );
        leases.credit(&c, Kind::Requests, &rates, 3, 1);
        for _ in 0..3 {
            assert_eq!(
                leases.try_take(&c, Kind::Requests, &rates, 1, 1),
                Taken::Yes
            );
        }
        assert_eq!(
            leases.try_take(&c, Kind::Requests, &rates, 2, 1),
            Taken::Short(2)
        );
        let refill = leases.to_refill(Instant::now(), Duration::from_secs(1));
        assert_eq!(refill.len(), 1);
        assert_eq!(refill[0].units, lease_size(&rates, 1) as i64);
    }

    #[test]
    fn idle_leases_are_given_back() {
        let leases = Leases::default();
        let c: Arc<str> = "c".into();
        let rates = per_min(1000);
        leases.try_take(&c, Kind::Tokens, &rates, 5, 1);
        leases.credit(&c, Kind::Tokens, &rates, 40, 1);
        let later = Instant::now() + Duration::from_secs(10);
        let back = leases.take_idle(later, Duration::from_secs(5));
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].units, 40);
        assert!(leases.is_empty());
    }
}
