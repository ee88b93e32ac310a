//! Limits and budgets shared by every replica through Redis, decided locally.
//!
//! A decision takes from this replica's lease of the shared bucket, or reserves from its
//! allowance of the shared budget, with no call to Redis; the background sync
//! ([`super::shared_sync`]) keeps both topped up and publishes this replica's ledger totals.
//! Only when a lease or allowance runs short does a decision wait for one Redis call (counted
//! in `keygate_limits_lease_miss_total`). While Redis is away (or was found empty and is
//! being rebuilt), buckets are counted locally at this replica's share of each limit, and a
//! budget admits at most this replica's share of what was left at the last contact; both are
//! counted in `keygate_limits_fallback_total`.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::{ArcSwap, ArcSwapOption};
use metrics::counter;

use super::allowance::Allowances;
use super::bucket::Rate;
use super::lease::{Leases, Taken};
use super::local::LocalStore;
use super::policy::Window;
use super::redis::{rebuild_window, BudgetRecord, RedisLimits};
use super::store::{Kind, LimitStore, Refusal};
use crate::accounting::ledger::Ledger;
use crate::telemetry;

/// How many times a decision asks Redis again when units it was granted were taken by
/// concurrent decisions before it could use them.
const ATTEMPTS: usize = 3;
/// The longest a budget decision waits for a rebuild window to end (the shipped Envoy
/// configs give keygate 500 ms per message).
const MAX_TRUST_WAIT: Duration = Duration::from_millis(200);

pub struct SharedStore {
    pub(super) redis: ArcSwap<RedisLimits>,
    pub(super) replicas: AtomicU32,
    pub(super) leases: Leases,
    pub(super) allowances: Allowances,
    pub(super) fallback: ArcSwap<LocalStore>,
    pub(super) ledger: Arc<Ledger>,
    /// The Redis epoch this replica has published its ledger to; budgets are granted only
    /// under it.
    pub(super) epoch: ArcSwapOption<String>,
    /// The epoch is current and no rebuild is under way (as of the last sync or grant).
    pub(super) trusted: AtomicBool,
    pub(super) sync_interval: ArcSwap<Duration>,
    /// When the sync last published month totals and holdings.
    pub(super) published_at: std::sync::Mutex<Option<Instant>>,
}

impl std::fmt::Debug for SharedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedStore")
            .field("leases", &self.leases.len())
            .finish_non_exhaustive()
    }
}

/// The slice of a budget an allowance asks for at a time: 1 % of it per replica, so what the
/// replicas hold unused is about 1 % of the budget.
pub fn allowance_size(budget: u64, replicas: u32) -> u64 {
    (budget / (u64::from(replicas.max(1)) * 100)).max(1)
}

impl SharedStore {
    pub fn new(
        redis: Arc<RedisLimits>,
        fallback: LocalStore,
        ledger: Arc<Ledger>,
        replicas: u32,
        sync_interval: Duration,
    ) -> Self {
        SharedStore {
            redis: ArcSwap::new(redis),
            replicas: AtomicU32::new(replicas.max(1)),
            leases: Leases::default(),
            allowances: Allowances::default(),
            fallback: ArcSwap::from_pointee(fallback),
            ledger,
            epoch: ArcSwapOption::empty(),
            trusted: AtomicBool::new(false),
            sync_interval: ArcSwap::from_pointee(sync_interval),
            published_at: std::sync::Mutex::new(None),
        }
    }

    /// Applies a reloaded config; leases and allowances held are kept.
    pub fn reconfigure(
        &self,
        redis: Arc<RedisLimits>,
        fallback: LocalStore,
        replicas: u32,
        sync_interval: Duration,
    ) {
        self.redis.store(redis);
        self.fallback.store(Arc::new(fallback));
        self.replicas.store(replicas.max(1), Ordering::Relaxed);
        self.sync_interval.store(Arc::new(sync_interval));
    }

    pub(super) fn replicas(&self) -> u32 {
        self.replicas.load(Ordering::Relaxed)
    }

    /// How recent the last contact about a budget must be for an outage to share what was
    /// left (the sync refreshes it twice as often).
    pub(super) fn fresh(&self) -> Duration {
        (self.sync_interval() * 10).max(Duration::from_secs(1))
    }

    /// Budgets are granted from Redis (else each replica admits its share of what was left).
    pub fn is_trusted(&self) -> bool {
        self.trusted.load(Ordering::Relaxed)
    }

    /// Ready to serve: budgets are granted from Redis, or Redis is unreachable (decisions
    /// fall back to shares, as documented). Not ready while a reachable Redis is being
    /// rebuilt, so a replica that has just started takes traffic once it can grant budgets.
    pub fn is_ready(&self) -> bool {
        self.is_trusted() || self.redis.load().is_down()
    }

    /// Spent on `key` this `month` by every replica, as of the last contact with Redis.
    pub fn spent_seen(&self, key: &str, month: &str) -> Option<u64> {
        self.allowances.spent_seen(key, month)
    }

    fn fallback_take(
        &self,
        consumer: &Arc<str>,
        kind: Kind,
        rates: &[(Window, Rate)],
        cost: u64,
    ) -> Result<(), Refusal> {
        counter!(telemetry::LIMITS_FALLBACK_TOTAL, "operation" => "take").increment(1);
        self.fallback.load().take_now(consumer, kind, rates, cost)
    }

    /// Whether budgets are granted from Redis; while Redis is up but being rebuilt (it was
    /// found empty), waits a little for the rebuild window to pass rather than deciding on
    /// this replica's share at once. Bounded well inside Envoy's ext_proc message timeout.
    async fn wait_for_trust(&self) -> bool {
        let wait = rebuild_window(self.sync_interval()).min(MAX_TRUST_WAIT);
        let deadline = Instant::now() + wait;
        while !self.trusted.load(Ordering::Relaxed) {
            if Instant::now() >= deadline || !self.redis.load().available() {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        true
    }

    fn outage_reserve(&self, key: &Arc<str>, month: &str, cost: u64) -> bool {
        counter!(telemetry::LIMITS_FALLBACK_TOTAL, "operation" => "budget").increment(1);
        self.allowances
            .reserve_in_outage(key, month, cost, self.replicas(), self.fresh())
            == Taken::Yes
    }
}

impl LimitStore for SharedStore {
    async fn take(
        &self,
        consumer: &Arc<str>,
        kind: Kind,
        rates: &[(Window, Rate)],
        cost: u64,
    ) -> Result<(), Refusal> {
        if rates.is_empty() {
            return Ok(());
        }
        let replicas = self.replicas();
        for _ in 0..ATTEMPTS {
            let need = match self.leases.try_take(consumer, kind, rates, cost, replicas) {
                Taken::Yes => return Ok(()),
                Taken::Short(need) => need,
            };
            let redis = self.redis.load_full();
            if !redis.available() {
                return self.fallback_take(consumer, kind, rates, cost);
            }
            counter!(telemetry::LIMITS_LEASE_MISS_TOTAL, "kind" => kind.as_str()).increment(1);
            let want = need.saturating_add(self.leases.size(consumer, kind));
            let grant = match redis.grant(consumer, kind, rates, want, need, false).await {
                Ok(grant) => grant,
                Err(_) => return self.fallback_take(consumer, kind, rates, cost),
            };
            let units = i64::try_from(grant.granted).unwrap_or(i64::MAX);
            self.leases.credit(consumer, kind, rates, units, replicas);
            if let Some((index, retry_after)) = grant.short {
                let (window, rate) = rates.get(index).copied().unwrap_or(rates[0]);
                return Err(Refusal {
                    window,
                    limit: rate.limit,
                    retry_after,
                });
            }
        }
        let (window, rate) = rates[0];
        Err(Refusal {
            window,
            limit: rate.limit,
            retry_after: Duration::from_millis(1),
        })
    }

    fn adjust(&self, consumer: &Arc<str>, kind: Kind, rates: &[(Window, Rate)], delta: i64) {
        if rates.is_empty() || delta == 0 {
            return;
        }
        if self.redis.load().available() {
            let units = delta.checked_neg().unwrap_or(i64::MAX);
            self.leases
                .credit(consumer, kind, rates, units, self.replicas());
        } else {
            self.fallback.load().adjust(consumer, kind, rates, delta);
        }
    }

    async fn reserve_budget(&self, key: &Arc<str>, month: &str, budget: u64, cost: u64) -> bool {
        let need = match self.allowances.try_reserve(key, month, budget, cost) {
            Taken::Yes => return true,
            Taken::Short(need) => need,
        };
        let redis = self.redis.load_full();
        let trusted = redis.available() && self.wait_for_trust().await;
        let Some(epoch) = self.epoch.load_full().filter(|_| trusted) else {
            return self.outage_reserve(key, month, cost);
        };
        counter!(telemetry::LIMITS_LEASE_MISS_TOTAL, "kind" => "budget").increment(1);
        let record = BudgetRecord {
            key,
            month,
            total: self.ledger.month_total(key, month),
            holding: self.allowances.outstanding(key),
        };
        let want = need.max(allowance_size(budget, self.replicas()));
        match redis
            .budget_grant(&record, want, budget, &epoch, false)
            .await
        {
            Ok(view) => match view.granted {
                Some(granted) => {
                    self.allowances
                        .granted(key, month, granted, view.spent, view.committed);
                    self.allowances.try_reserve(key, month, budget, cost) == Taken::Yes
                }
                None => {
                    self.trusted.store(false, Ordering::Relaxed);
                    self.outage_reserve(key, month, cost)
                }
            },
            Err(_) => self.outage_reserve(key, month, cost),
        }
    }

    fn settle_budget(&self, key: &Arc<str>, month: &str, reserved: u64, actual: u64) {
        self.allowances.settle(key, month, reserved, actual);
    }
}
