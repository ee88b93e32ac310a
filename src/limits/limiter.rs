//! The limiter the pipeline calls: request size, request rate, token reservations, budgets,
//! and the failed-authentication guard. Protocol-independent; counts live behind the
//! [`LimitStore`] seam, in this process or in Redis with a counted local fallback.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use arc_swap::ArcSwap;
use dashmap::DashMap;
use metrics::counter;

use super::backend::Backend;
use super::bucket::Rate;
use super::guard::SourceGuard;
use super::local::{LocalBuckets, LocalStore};
use super::local_budget::LocalBudgets;
use super::policy::Window;
use super::redis::RedisLimits;
use super::shared::SharedStore;
use super::store::{Kind, LimitStore, Refusal};
use crate::accounting::ledger::{month_of, team_key, Ledger};
use crate::auth::registry::Consumer;
use crate::config::LimitsConfig;
use crate::consumer_state::ConsumerSlots;
use crate::denial::DenyReason;
use crate::telemetry;

/// What a request's body phase asks to reserve: its worst-case tokens and their price.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cost {
    pub tokens: u64,
    pub micro_usd: u64,
}

/// What a request reserved before it was forwarded, released when its response is charged.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reservation {
    pub tokens: u64,
    pub micro_usd: u64,
    budget_keys: Vec<Arc<str>>,
    /// The month the budgets were reserved in (a request may settle in the next one).
    month: String,
}

#[derive(Debug, Clone)]
struct Settings {
    failed_auth: Rate,
    soft_threshold: f64,
}

pub struct Limiter {
    buckets: Arc<LocalBuckets>,
    budgets: Arc<LocalBudgets>,
    guard: SourceGuard,
    ledger: Arc<Ledger>,
    pub(super) backend: ArcSwap<Backend>,
    /// The shared store, kept across reloads (its leases and allowances are held in Redis).
    shared: Mutex<Option<Arc<SharedStore>>>,
    /// This process's id in Redis (what it holds is recorded under it).
    incarnation: String,
    settings: ArcSwap<Settings>,
    warned: Mutex<HashSet<String>>,
    /// consumer → (limit divisor, until): a detector's tightened limits.
    throttled: DashMap<Arc<str>, (u32, Instant)>,
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter")
            .field("local_entries", &self.buckets.len())
            .finish_non_exhaustive()
    }
}

fn refusal(r: Refusal, kind: Kind) -> DenyReason {
    let (window, limit, retry_after) = (r.window.as_str(), r.limit, r.retry_after);
    match kind {
        Kind::Tokens => DenyReason::TokenLimited {
            window,
            limit,
            retry_after,
        },
        Kind::Requests => DenyReason::RateLimited {
            window,
            limit,
            retry_after,
        },
    }
}

impl Limiter {
    /// A limiter with local counts; budgets read `ledger`.
    pub fn new(ledger: Arc<Ledger>) -> Self {
        Limiter::with_slots(ledger, Arc::default())
    }

    /// [`Limiter::new`], keeping local buckets in the consumers' `slots` (shared with the
    /// meters and the detectors).
    pub fn with_slots(ledger: Arc<Ledger>, slots: Arc<ConsumerSlots>) -> Self {
        let buckets = Arc::new(LocalBuckets::new(slots));
        let budgets = Arc::new(LocalBudgets::new(ledger.clone()));
        let local = LocalStore::new(buckets.clone(), budgets.clone(), 1);
        Limiter {
            buckets,
            budgets,
            guard: SourceGuard::default(),
            ledger,
            backend: ArcSwap::from_pointee(Backend::Local(local)),
            shared: Mutex::new(None),
            incarnation: hex::encode(rand::random::<[u8; 8]>()),
            settings: ArcSwap::from_pointee(Settings {
                failed_auth: Rate::per(30, Window::Minute.duration()),
                soft_threshold: 0.8,
            }),
            warned: Mutex::new(HashSet::new()),
            throttled: DashMap::new(),
        }
    }

    /// Connects to the Redis of `config` as this replica (lazily: nothing is sent yet).
    pub fn connect_redis(
        &self,
        config: &crate::config::RedisConfig,
    ) -> Result<Arc<RedisLimits>, super::redis::RedisSetupError> {
        RedisLimits::connect(config, self.ledger.replica(), &self.incarnation)
    }

    /// Applies a (re)loaded config: shared through `redis` (by `limits.redis.replicas`
    /// replicas) or local counts. Bucket levels, leases and allowances survive a reload.
    pub fn configure(&self, config: &LimitsConfig, redis: Option<Arc<RedisLimits>>) {
        self.settings.store(Arc::new(Settings {
            failed_auth: Rate::per(
                config.failed_auth_per_minute.max(1),
                Window::Minute.duration(),
            ),
            soft_threshold: config.budget_soft_threshold,
        }));
        let backend = match (redis, &config.redis) {
            (Some(redis), Some(settings)) => {
                let replicas = settings.replicas.max(1);
                let fallback =
                    LocalStore::new(self.buckets.clone(), self.budgets.clone(), replicas);
                let mut shared = self.shared.lock().unwrap_or_else(|p| p.into_inner());
                let store = match &*shared {
                    Some(store) => {
                        store.reconfigure(redis, fallback, replicas, settings.sync_interval);
                        store.clone()
                    }
                    None => {
                        let store = Arc::new(SharedStore::new(
                            redis,
                            fallback,
                            self.ledger.clone(),
                            replicas,
                            settings.sync_interval,
                        ));
                        *shared = Some(store.clone());
                        store
                    }
                };
                Backend::Shared(store)
            }
            _ => Backend::Local(LocalStore::new(
                self.buckets.clone(),
                self.budgets.clone(),
                1,
            )),
        };
        self.backend.store(Arc::new(backend));
    }

    /// Tightens a consumer's request and token limits to `factor` of their value for `period`
    /// (enforced by extra local buckets on top of the normal ones).
    pub fn throttle(&self, consumer: &Arc<str>, factor: f64, period: std::time::Duration) {
        let divisor = (1.0 / factor.clamp(0.01, 1.0)).ceil() as u32;
        self.throttled
            .insert(consumer.clone(), (divisor, Instant::now() + period));
    }

    /// Lifts a throttle; returns whether the consumer was throttled.
    pub fn unthrottle(&self, consumer: &str) -> bool {
        let throttled = self.throttle_divisor(&Arc::from(consumer)).is_some();
        self.throttled.remove(consumer);
        throttled
    }

    fn throttle_divisor(&self, consumer: &Arc<str>) -> Option<u32> {
        let entry = self.throttled.get(consumer)?;
        let (divisor, until) = *entry;
        drop(entry);
        if Instant::now() >= until {
            self.throttled.remove(consumer);
            return None;
        }
        Some(divisor)
    }

    /// Refuses an address that failed authentication too often.
    pub fn check_source(&self, ip: Option<IpAddr>) -> Result<(), DenyReason> {
        let Some(ip) = ip else { return Ok(()) };
        self.guard
            .check(ip, &self.settings.load().failed_auth)
            .map_err(|r| DenyReason::AuthFlood {
                retry_after: r.retry_after,
            })
    }

    /// Counts a failed authentication from `ip`.
    pub fn failed_auth(&self, ip: Option<IpAddr>) {
        if let Some(ip) = ip {
            self.guard.failed(ip, &self.settings.load().failed_auth);
        }
    }

    /// At the request headers: the declared size and the request-rate limits.
    pub async fn admit_request(
        &self,
        consumer: &Consumer,
        content_length: Option<u64>,
    ) -> Result<(), DenyReason> {
        let policy = &consumer.limits;
        if content_length.is_some_and(|n| n > policy.max_request_bytes) {
            return Err(DenyReason::TooLarge {
                limit: policy.max_request_bytes,
            });
        }
        if let Some(divisor) = self.throttle_divisor(&consumer.name) {
            let key: Arc<str> = format!("{}#throttled", consumer.name).into();
            self.buckets
                .take(&key, Kind::Requests, &policy.requests, 1, divisor)
                .map_err(|r| refusal(r, Kind::Requests))?;
        }
        self.take(consumer, Kind::Requests, &policy.requests, 1)
            .await
    }

    async fn take(
        &self,
        consumer: &Consumer,
        kind: Kind,
        rates: &[(Window, Rate)],
        cost: u64,
    ) -> Result<(), DenyReason> {
        if rates.is_empty() {
            return Ok(());
        }
        let backend = self.backend.load_full();
        backend
            .take(&consumer.name, kind, rates, cost)
            .await
            .map_err(|r| refusal(r, kind))
    }

    /// At the request body: its real size, then the budget and token reservation of `cost`.
    pub async fn reserve(
        &self,
        consumer: &Consumer,
        body_len: u64,
        cost: Cost,
        now: SystemTime,
    ) -> Result<Reservation, DenyReason> {
        let policy = &consumer.limits;
        if body_len > policy.max_request_bytes {
            return Err(DenyReason::TooLarge {
                limit: policy.max_request_bytes,
            });
        }
        let month = month_of(now);
        let budget_keys = self
            .reserve_budgets(consumer, &month, cost.micro_usd)
            .await?;
        if let Err(denied) = self
            .take(consumer, Kind::Tokens, &policy.tokens, cost.tokens)
            .await
        {
            self.release(&budget_keys, &month, cost.micro_usd, 0);
            return Err(denied);
        }
        Ok(Reservation {
            tokens: cost.tokens,
            micro_usd: cost.micro_usd,
            budget_keys,
            month,
        })
    }

    /// Reserves `micro_usd` against the consumer's and its team's budgets, or refuses.
    async fn reserve_budgets(
        &self,
        consumer: &Consumer,
        month: &str,
        micro_usd: u64,
    ) -> Result<Vec<Arc<str>>, DenyReason> {
        let policy = &consumer.limits;
        let mut budgets: Vec<(Arc<str>, u64, Option<String>)> = Vec::new();
        if let Some(b) = policy.budget_micro_usd {
            budgets.push((consumer.name.clone(), b, None));
        }
        if let Some((team, b)) = &policy.team_budget {
            budgets.push((team_key(team).into(), *b, Some(team.to_string())));
        }
        let backend = self.backend.load_full();
        let mut taken = Vec::new();
        for (key, budget, team) in budgets {
            if !backend.reserve_budget(&key, month, budget, micro_usd).await {
                self.release(&taken, month, micro_usd, 0);
                return Err(DenyReason::OverBudget { team });
            }
            taken.push(key);
        }
        Ok(taken)
    }

    fn release(&self, keys: &[Arc<str>], month: &str, reserved: u64, actual: u64) {
        let backend = self.backend.load();
        for key in keys {
            backend.settle_budget(key, month, reserved, actual);
        }
    }

    /// The response was charged (or never came): release the reservation, reconcile tokens to
    /// the actual usage and warn at the soft threshold. The charge itself is already in the
    /// ledger (which the shared store publishes).
    pub fn settle(
        &self,
        consumer: &Arc<Consumer>,
        reservation: &Reservation,
        actual_tokens: u64,
        charged_micro_usd: u64,
    ) {
        self.release(
            &reservation.budget_keys,
            &reservation.month,
            reservation.micro_usd,
            charged_micro_usd,
        );
        let delta = i64::try_from(actual_tokens)
            .unwrap_or(i64::MAX)
            .saturating_sub(i64::try_from(reservation.tokens).unwrap_or(i64::MAX));
        self.backend
            .load()
            .adjust(&consumer.name, Kind::Tokens, &consumer.limits.tokens, delta);
        self.soft_threshold(consumer, &month_of(SystemTime::now()));
    }

    /// Forgets limiter state that is back to full.
    pub fn evict_idle(&self) -> usize {
        self.buckets.evict_idle() + self.guard.evict_idle(&self.settings.load().failed_auth)
    }

    /// Entries held in this process (for the memory benchmark and tests).
    pub fn local_entries(&self) -> usize {
        self.buckets.len() + self.guard.len()
    }

    fn soft_threshold(&self, consumer: &Consumer, month: &str) {
        let Some(budget) = consumer.limits.budget_micro_usd else {
            return;
        };
        let own = self.ledger.month_total(&consumer.name, month);
        let shared = self.backend.load().spent_seen(&consumer.name, month);
        let spent = shared.map_or(own, |s| s.max(own));
        if (spent as f64) < budget as f64 * self.settings.load().soft_threshold {
            return;
        }
        let mark = format!("{month}/{}", consumer.name);
        let mut warned = self.warned.lock().unwrap_or_else(|p| p.into_inner());
        if warned.insert(mark) {
            counter!(telemetry::BUDGET_THRESHOLD_TOTAL, "consumer" => consumer.name.to_string())
                .increment(1);
            tracing::warn!(consumer = %consumer.name, spent_usd = spent as f64 / 1e6, budget_usd = budget as f64 / 1e6, "budget soft threshold reached");
        }
    }
}
