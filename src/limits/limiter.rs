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
use super::policy::Window;
use super::redis::RedisLimits;
use super::store::{Kind, Refusal};
use crate::accounting::ledger::{month_of, team_key, Ledger};
use crate::auth::registry::Consumer;
use crate::config::LimitsConfig;
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
}

#[derive(Debug, Clone)]
struct Settings {
    failed_auth: Rate,
    soft_threshold: f64,
}

pub struct Limiter {
    buckets: Arc<LocalBuckets>,
    guard: SourceGuard,
    ledger: Arc<Ledger>,
    backend: ArcSwap<Backend>,
    /// Budget reservations of requests still in flight, per ledger key.
    reserved: DashMap<Arc<str>, u64>,
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
        let buckets = Arc::new(LocalBuckets::default());
        let local = LocalStore::new(buckets.clone(), ledger.clone(), 1);
        Limiter {
            buckets,
            guard: SourceGuard::default(),
            ledger,
            backend: ArcSwap::from_pointee(Backend::Local(local)),
            reserved: DashMap::new(),
            settings: ArcSwap::from_pointee(Settings {
                failed_auth: Rate::per(30, Window::Minute.duration()),
                soft_threshold: 0.8,
            }),
            warned: Mutex::new(HashSet::new()),
            throttled: DashMap::new(),
        }
    }

    /// Applies a (re)loaded config: Redis (`redis`, shared by `limits.redis.replicas`
    /// replicas) or local counts. Bucket levels kept in this process survive a reload.
    pub fn configure(&self, config: &LimitsConfig, redis: Option<Arc<RedisLimits>>) {
        self.settings.store(Arc::new(Settings {
            failed_auth: Rate::per(
                config.failed_auth_per_minute.max(1),
                Window::Minute.duration(),
            ),
            soft_threshold: config.budget_soft_threshold,
        }));
        let backend = match redis {
            Some(redis) => {
                let replicas = config.redis.as_ref().map_or(1, |r| r.replicas.max(1));
                let fallback = LocalStore::new(self.buckets.clone(), self.ledger.clone(), replicas);
                Backend::Shared { redis, fallback }
            }
            None => Backend::Local(LocalStore::new(
                self.buckets.clone(),
                self.ledger.clone(),
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
        let budget_keys = self.reserve_budgets(consumer, cost.micro_usd, now).await?;
        if let Err(denied) = self
            .take(consumer, Kind::Tokens, &policy.tokens, cost.tokens)
            .await
        {
            self.release(&budget_keys, cost.micro_usd);
            return Err(denied);
        }
        Ok(Reservation {
            tokens: cost.tokens,
            micro_usd: cost.micro_usd,
            budget_keys,
        })
    }

    /// Reserves `micro_usd` against the consumer's and its team's budgets, or refuses.
    async fn reserve_budgets(
        &self,
        consumer: &Consumer,
        micro_usd: u64,
        now: SystemTime,
    ) -> Result<Vec<Arc<str>>, DenyReason> {
        let policy = &consumer.limits;
        let mut budgets: Vec<(Arc<str>, u64, Option<String>)> = Vec::new();
        if let Some(b) = policy.budget_micro_usd {
            budgets.push((consumer.name.clone(), b, None));
        }
        if let Some((team, b)) = &policy.team_budget {
            budgets.push((team_key(team).into(), *b, Some(team.to_string())));
        }
        let month = month_of(now);
        let backend = self.backend.load_full();
        let mut taken = Vec::new();
        for (key, budget, team) in budgets {
            let spent = backend.spent(&key, &month).await;
            let mut reserved = self.reserved.entry(key.clone()).or_insert(0);
            let committed = spent.saturating_add(*reserved);
            if committed >= budget || committed.saturating_add(micro_usd) > budget {
                drop(reserved);
                self.release(&taken, micro_usd);
                return Err(DenyReason::OverBudget { team });
            }
            *reserved += micro_usd;
            drop(reserved);
            taken.push(key);
        }
        Ok(taken)
    }

    fn release(&self, keys: &[Arc<str>], micro_usd: u64) {
        for key in keys {
            if let Some(mut r) = self.reserved.get_mut(key) {
                *r = r.saturating_sub(micro_usd);
            }
        }
    }

    /// The response was charged (or never came): release the reservation, reconcile tokens to
    /// the actual usage, publish shared spend and warn at the soft threshold.
    pub fn settle(
        self: &Arc<Self>,
        consumer: &Arc<Consumer>,
        reservation: &Reservation,
        actual_tokens: u64,
        charged_micro_usd: u64,
    ) {
        self.settle_at(
            consumer,
            reservation,
            actual_tokens,
            charged_micro_usd,
            SystemTime::now(),
        );
    }

    /// [`Limiter::settle`] for a charge made at `now` (budgets are per calendar month).
    pub fn settle_at(
        self: &Arc<Self>,
        consumer: &Arc<Consumer>,
        reservation: &Reservation,
        actual_tokens: u64,
        charged_micro_usd: u64,
        now: SystemTime,
    ) {
        self.release(&reservation.budget_keys, reservation.micro_usd);
        let delta = i64::try_from(actual_tokens)
            .unwrap_or(i64::MAX)
            .saturating_sub(i64::try_from(reservation.tokens).unwrap_or(i64::MAX));
        let month = month_of(now);
        let backend = self.backend.load_full();
        match (&*backend, tokio::runtime::Handle::try_current()) {
            (Backend::Shared { .. }, Ok(runtime)) => {
                let mut spend_keys: Vec<Arc<str>> = vec![consumer.name.clone()];
                if let Some((team, _)) = &consumer.limits.team_budget {
                    spend_keys.push(team_key(team).into());
                }
                let (consumer, month) = (consumer.clone(), month.clone());
                runtime.spawn(async move {
                    let tokens = &consumer.limits.tokens;
                    backend
                        .adjust(&consumer.name, Kind::Tokens, tokens, delta)
                        .await;
                    backend
                        .add_spend(&spend_keys, &month, charged_micro_usd)
                        .await;
                });
            }
            _ => self.buckets.adjust(
                &consumer.name,
                Kind::Tokens,
                &consumer.limits.tokens,
                delta,
                backend.share(),
            ),
        }
        self.soft_threshold(consumer, &month);
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
        let spent = self.ledger.month_total(&consumer.name, month);
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
