//! Budget allowances: the slice of a monthly budget this replica may reserve without asking
//! Redis. Reservations come out of the free part and their unspent part flows back when they
//! settle; Redis records what each running replica holds (free and reserved) and grants others
//! only what nobody holds or has spent. Each allowance also remembers what was left for
//! everyone at the last contact, which bounds what the replica may admit while Redis is away.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use dashmap::DashMap;

use super::lease::Taken;

/// A key's slice of one month's budget.
#[derive(Debug)]
struct Allowance {
    month: String,
    /// The budget it is a slice of (micro-dollars), as of the last reservation.
    budget: u64,
    /// Spent by every replica at the last contact.
    spent: u64,
    /// Granted and not reserved; negative when charges exceeded their reservations.
    free: i64,
    /// Reserved by requests in flight.
    held: u64,
    used_at: Instant,
    /// Budget left for every replica (after every holding) at the last contact, and when.
    left: Option<(u64, Instant)>,
    /// This replica's share of `left` was taken for the current outage.
    outage: bool,
    /// What was last recorded in Redis as this replica's holding, and when.
    published: Option<(u64, Instant)>,
}

impl Allowance {
    fn new(month: &str) -> Self {
        Allowance {
            month: month.to_string(),
            budget: 0,
            spent: 0,
            free: 0,
            held: 0,
            used_at: Instant::now(),
            left: None,
            outage: false,
            published: None,
        }
    }

    fn outstanding(&self) -> u64 {
        u64::try_from(self.free.max(0))
            .unwrap_or(0)
            .saturating_add(self.held)
    }

    fn observe(&mut self, spent: u64, committed: u64) {
        self.spent = spent;
        self.left = Some((self.budget.saturating_sub(committed), Instant::now()));
        self.outage = false;
    }

    fn try_reserve(&mut self, cost: u64) -> Taken {
        let cost_i = i64::try_from(cost).unwrap_or(i64::MAX);
        if self.free >= cost_i {
            self.free -= cost_i;
            self.held = self.held.saturating_add(cost);
            Taken::Yes
        } else {
            Taken::Short(u64::try_from(cost_i.saturating_sub(self.free)).unwrap_or(u64::MAX))
        }
    }
}

/// Budget allowances by budget key (a consumer, or `team:<name>`).
#[derive(Debug, Default)]
pub struct Allowances {
    map: DashMap<Arc<str>, Mutex<Allowance>>,
}

fn lock(m: &Mutex<Allowance>) -> MutexGuard<'_, Allowance> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Allowances {
    fn with<T>(&self, key: &Arc<str>, month: &str, f: impl FnOnce(&mut Allowance) -> T) -> T {
        let entry = self
            .map
            .entry(key.clone())
            .or_insert_with(|| Mutex::new(Allowance::new(month)));
        let mut a = lock(&entry);
        if a.month.as_str() < month {
            // A new month: last month's allowance is void; its reservations still settle.
            let held = a.held;
            *a = Allowance::new(month);
            a.held = held;
        }
        a.used_at = Instant::now();
        f(&mut a)
    }

    /// Reserves `cost` of `budget` from the allowance, or says how much more is needed.
    pub fn try_reserve(&self, key: &Arc<str>, month: &str, budget: u64, cost: u64) -> Taken {
        self.with(key, month, |a| {
            a.budget = budget;
            a.try_reserve(cost)
        })
    }

    /// Adds a grant from Redis, with what every replica spent and had committed (spent and
    /// held) after it.
    pub fn granted(&self, key: &Arc<str>, month: &str, granted: u64, spent: u64, committed: u64) {
        self.with(key, month, |a| {
            a.free = a
                .free
                .saturating_add(i64::try_from(granted).unwrap_or(i64::MAX));
            a.observe(spent, committed);
        });
    }

    /// Records what Redis said every replica spent and committed, after a publish.
    pub fn observed(&self, key: &Arc<str>, month: &str, spent: u64, committed: u64) {
        if let Some(e) = self.map.get(key) {
            let mut a = lock(&e);
            if a.month == month {
                a.observe(spent, committed);
            }
        }
    }

    /// Spent by every replica as of the last contact, if `key` had one this `month`.
    pub fn spent_seen(&self, key: &str, month: &str) -> Option<u64> {
        let e = self.map.get(key)?;
        let a = lock(&e);
        (a.month == month && a.left.is_some()).then_some(a.spent)
    }

    /// While Redis is away: takes this replica's share of what was left at the last contact
    /// (`replicas` share it), once per outage, then reserves `cost`. A key with no contact in
    /// the last `fresh` gets no share: what others were granted since is unknown, so the
    /// replica can spend only what it holds (fail closed).
    pub fn reserve_in_outage(
        &self,
        key: &Arc<str>,
        month: &str,
        cost: u64,
        replicas: u32,
        fresh: Duration,
    ) -> Taken {
        let replicas = u64::from(replicas.max(1));
        self.with(key, month, |a| {
            if !a.outage {
                a.outage = true;
                let share = match a.left {
                    Some((left, at)) if at.elapsed() <= fresh => left / replicas,
                    _ => 0,
                };
                a.free = a
                    .free
                    .saturating_add(i64::try_from(share).unwrap_or(i64::MAX));
            }
            a.try_reserve(cost)
        })
    }

    /// A reservation settled: it no longer holds `reserved`; the unspent part is free again.
    pub fn settle(&self, key: &Arc<str>, month: &str, reserved: u64, actual: u64) {
        self.with(key, month, |a| {
            a.held = a.held.saturating_sub(reserved);
            if a.month != month {
                return; // last month's grant is void; only its reservation ends
            }
            let back = i64::try_from(reserved)
                .unwrap_or(i64::MAX)
                .saturating_sub(i64::try_from(actual).unwrap_or(i64::MAX));
            a.free = a.free.saturating_add(back);
        });
    }

    /// Free allowance of `key` (what a top-up compares with its target).
    pub fn free(&self, key: &Arc<str>) -> i64 {
        self.map.get(key).map_or(0, |e| lock(&e).free)
    }

    /// What this replica holds of `key`'s budget (free and reserved), as Redis records it.
    pub fn outstanding(&self, key: &Arc<str>) -> u64 {
        self.map.get(key).map_or(0, |e| lock(&e).outstanding())
    }

    /// Drops the free part of allowances unused for `idle` (so other replicas can have it).
    pub fn release_idle(&self, now: Instant, idle: Duration) {
        for e in self.map.iter() {
            let mut a = lock(e.value());
            if a.free > 0 && now.duration_since(a.used_at) >= idle {
                a.free = 0;
            }
        }
        self.map.retain(|_, m| {
            let a = m.get_mut().unwrap_or_else(|p| p.into_inner());
            a.held > 0 || a.free != 0 || now.duration_since(a.used_at) < idle
        });
    }

    /// Keys (with their month and holding) whose holding differs from what Redis has, or was
    /// recorded longer than `refresh` ago; each is marked as recorded.
    pub fn to_publish(&self, now: Instant, refresh: Duration) -> Vec<(Arc<str>, String, u64)> {
        self.map
            .iter()
            .filter_map(|e| {
                let mut a = lock(e.value());
                let holding = a.outstanding();
                let stale = a.published.is_none_or(|(recorded, at)| {
                    recorded != holding || now.duration_since(at) >= refresh
                });
                stale.then(|| {
                    a.published = Some((holding, now));
                    (e.key().clone(), a.month.clone(), holding)
                })
            })
            .collect()
    }

    /// Forgets what Redis was told (it lost it, or the record failed): publish again.
    pub fn unpublished(&self, key: &Arc<str>) {
        if let Some(e) = self.map.get(key) {
            lock(&e).published = None;
        }
    }

    /// Keys used within `active` whose free allowance is below `target(budget)`: (key, month,
    /// budget, what is missing).
    pub fn to_top_up(
        &self,
        now: Instant,
        active: Duration,
        target: impl Fn(u64) -> u64,
    ) -> Vec<(Arc<str>, String, u64, u64)> {
        self.map
            .iter()
            .filter_map(|e| {
                let a = lock(e.value());
                let target = i64::try_from(target(a.budget)).unwrap_or(i64::MAX);
                let exhausted = a.left.is_some_and(|(left, _)| left == 0);
                let low = a.free < target / 2 && !a.outage && !exhausted;
                (low && now.duration_since(a.used_at) < active).then(|| {
                    let missing = u64::try_from(target.saturating_sub(a.free)).unwrap_or(0);
                    (e.key().clone(), a.month.clone(), a.budget, missing)
                })
            })
            .collect()
    }

    /// Every key, forgetting what Redis was told (after Redis lost its data).
    pub fn republish_all(&self) {
        for e in self.map.iter() {
            lock(e.value()).published = None;
        }
    }

    /// Gives up every free allowance (at shutdown).
    pub fn release_all(&self) {
        for e in self.map.iter() {
            let mut a = lock(e.value());
            a.free = a.free.min(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FRESH: Duration = Duration::from_secs(1);

    #[test]
    fn allowances_reserve_settle_and_count_what_is_held() {
        let a = Allowances::default();
        let k: Arc<str> = "team:ml".into();
        assert_eq!(a.try_reserve(&k, "2026-11", 500, 50), Taken::Short(50));
        a.granted(&k, "2026-11", 120, 0, 120);
        assert_eq!(a.try_reserve(&k, "2026-11", 500, 50), Taken::Yes);
        assert_eq!(a.outstanding(&k), 120, "70 free + 50 reserved");
        a.settle(&k, "2026-11", 50, 30);
        assert_eq!(a.outstanding(&k), 90, "the 30 charged is no longer held");
        assert_eq!(
            a.try_reserve(&k, "2026-12", 500, 1),
            Taken::Short(1),
            "a new month starts empty"
        );
    }

    #[test]
    fn an_outage_adds_one_share_of_what_was_left() {
        let a = Allowances::default();
        let k: Arc<str> = "c".into();
        a.try_reserve(&k, "2026-11", 1_000, 0);
        a.granted(&k, "2026-11", 10, 600, 700);
        let take = |cost| a.reserve_in_outage(&k, "2026-11", cost, 3, FRESH);
        assert_eq!(take(100), Taken::Yes, "10 held + 100 of the 300 left");
        assert_eq!(take(10), Taken::Yes);
        assert_eq!(
            take(1),
            Taken::Short(1),
            "the share is taken once per outage"
        );
        a.observed(&k, "2026-11", 900, 910);
        assert_eq!(take(30), Taken::Yes, "a new outage, a new share of 90");
        assert_eq!(take(1), Taken::Short(1));
    }

    #[test]
    fn an_outage_on_a_key_without_recent_contact_admits_only_what_is_held() {
        let a = Allowances::default();
        let k: Arc<str> = "c".into();
        assert_eq!(
            a.reserve_in_outage(&k, "2026-11", 1, 3, FRESH),
            Taken::Short(1),
            "never heard of: nothing to share"
        );
        let stale: Arc<str> = "stale".into();
        a.try_reserve(&stale, "2026-11", 1_000, 0);
        a.granted(&stale, "2026-11", 5, 0, 5);
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(
            a.reserve_in_outage(&stale, "2026-11", 6, 3, Duration::from_millis(10)),
            Taken::Short(1),
            "a stale view shares nothing; the 5 held can still be spent"
        );
        assert_eq!(
            a.reserve_in_outage(&stale, "2026-11", 5, 3, Duration::from_millis(10)),
            Taken::Yes
        );
    }
}
