//! The limiter the edges call: size, request rate, token reservations, budgets, and the
//! failed-authentication guard. Protocol-independent; state is local or in Redis.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use dashmap::DashMap;
use metrics::counter;

use super::bucket::Rate;
use super::local::{LocalBuckets, Refusal};
use super::policy::Window;
use super::redis::RedisLimits;
use crate::accounting::{ledger::month_of, Accounting};
use crate::auth::Consumer;
use crate::config::LimitsConfig;
use crate::denial::DenyReason;
use crate::telemetry;
use crate::usage::{RequestEstimate, Usage};

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
    replicas: u32,
}

pub struct Limiter {
    pub local: LocalBuckets,
    redis: ArcSwap<Option<Arc<RedisLimits>>>,
    accounting: Arc<Accounting>,
    /// Budget reservations of requests still in flight, per ledger key.
    reserved: DashMap<Arc<str>, u64>,
    settings: ArcSwap<Settings>,
    warned: Mutex<HashSet<String>>,
    /// consumer → (limit divisor, until): a detector's tightened limits.
    throttled: DashMap<Arc<str>, (u32, std::time::Instant)>,
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter")
            .field("local_entries", &self.local.len())
            .finish_non_exhaustive()
    }
}

fn refusal(r: Refusal, tokens: bool) -> DenyReason {
    if tokens {
        DenyReason::TokenLimited {
            window: r.window.as_str(),
            limit: r.limit,
            retry_after: r.retry_after,
        }
    } else {
        DenyReason::RateLimited {
            window: r.window.as_str(),
            limit: r.limit,
            retry_after: r.retry_after,
        }
    }
}

/// The ledger key of a team's shared budget.
pub fn team_key(team: &str) -> String {
    format!("team:{team}")
}

impl Limiter {
    pub fn new(accounting: Arc<Accounting>) -> Self {
        Limiter {
            local: LocalBuckets::default(),
            redis: ArcSwap::from_pointee(None),
            accounting,
            reserved: DashMap::new(),
            settings: ArcSwap::from_pointee(Settings {
                failed_auth: Rate::per(30, Window::Minute.duration()),
                soft_threshold: 0.8,
                replicas: 1,
            }),
            warned: Mutex::new(HashSet::new()),
            throttled: DashMap::new(),
        }
    }

    /// Tightens a consumer's request and token limits to `factor` of their value for `period`
    /// (enforced by extra local buckets on top of the normal ones).
    pub fn throttle(&self, consumer: &Arc<str>, factor: f64, period: std::time::Duration) {
        let divisor = (1.0 / factor.clamp(0.01, 1.0)).ceil() as u32;
        self.throttled.insert(
            consumer.clone(),
            (divisor, std::time::Instant::now() + period),
        );
    }

    fn throttle_divisor(&self, consumer: &Arc<str>) -> Option<u32> {
        let entry = self.throttled.get(consumer)?;
        let (divisor, until) = *entry;
        drop(entry);
        if std::time::Instant::now() >= until {
            self.throttled.remove(consumer);
            return None;
        }
        Some(divisor)
    }

    fn throttle_key(consumer: &Arc<str>) -> Arc<str> {
        format!("{consumer}#throttled").into()
    }

    /// Applies a (re)loaded config; connects to Redis when the backend is `redis`.
    pub fn configure(&self, config: &LimitsConfig, redis: Option<Arc<RedisLimits>>) {
        self.settings.store(Arc::new(Settings {
            failed_auth: Rate::per(
                config.failed_auth_per_minute.max(1),
                Window::Minute.duration(),
            ),
            soft_threshold: config.budget_soft_threshold,
            replicas: config.redis.as_ref().map_or(1, |r| r.replicas.max(1)),
        }));
        self.redis.store(Arc::new(redis));
    }

    fn redis(&self) -> Option<Arc<RedisLimits>> {
        self.redis.load().as_ref().clone()
    }

    /// Refuses an address that failed authentication too often.
    pub fn check_source(&self, ip: Option<IpAddr>) -> Result<(), DenyReason> {
        let Some(ip) = ip else { return Ok(()) };
        self.local
            .check_source(ip, &self.settings.load().failed_auth)
            .map_err(|r| DenyReason::AuthFlood {
                retry_after: r.retry_after,
            })
    }

    /// Counts a failed authentication from `ip`.
    pub fn failed_auth(&self, ip: Option<IpAddr>) {
        if let Some(ip) = ip {
            self.local
                .failed_auth(ip, &self.settings.load().failed_auth);
        }
    }

    /// At the request headers: declared size and the request-rate limits.
    pub async fn admit_request(
        &self,
        consumer: &Consumer,
        content_length: Option<u64>,
    ) -> Result<(), DenyReason> {
        let policy = &consumer.limits;
        if let Some(n) = content_length.filter(|n| *n > policy.max_request_bytes) {
            let _ = n;
            return Err(DenyReason::TooLarge {
                limit: policy.max_request_bytes,
            });
        }
        if let Some(divisor) = self.throttle_divisor(&consumer.name) {
            self.local
                .admit_request(
                    &Limiter::throttle_key(&consumer.name),
                    &policy.requests,
                    &policy.tokens,
                    divisor,
                )
                .map_err(|r| refusal(r, false))?;
        }
        if policy.requests.is_empty() {
            return Ok(());
        }
        if let Some(redis) = self.redis() {
            if let Some(result) = redis
                .take(&consumer.name, "requests", &policy.requests, 1)
                .await
            {
                return result.map_err(|r| refusal(r, false));
            }
        }
        let share = self.share();
        self.local
            .admit_request(&consumer.name, &policy.requests, &policy.tokens, share)
            .map_err(|r| refusal(r, false))
    }

    fn share(&self) -> u32 {
        if self.redis().is_some() {
            self.settings.load().replicas
        } else {
            1
        }
    }

    /// At the request body: real size, token reservation and budget.
    pub async fn admit_body(
        &self,
        consumer: &Consumer,
        body_len: u64,
        estimate: &RequestEstimate,
    ) -> Result<Reservation, DenyReason> {
        self.admit_body_at(consumer, body_len, estimate, SystemTime::now())
            .await
    }

    /// `admit_body` at a given wall-clock time (budgets are per calendar month).
    pub async fn admit_body_at(
        &self,
        consumer: &Consumer,
        body_len: u64,
        estimate: &RequestEstimate,
        now: SystemTime,
    ) -> Result<Reservation, DenyReason> {
        let policy = &consumer.limits;
        if body_len > policy.max_request_bytes {
            return Err(DenyReason::TooLarge {
                limit: policy.max_request_bytes,
            });
        }
        let output = estimate
            .max_output_tokens
            .unwrap_or(policy.default_max_tokens);
        let tokens = estimate.prompt_tokens_estimate.saturating_add(output);
        let worst_case = Usage {
            input_tokens: estimate.prompt_tokens_estimate,
            output_tokens: output,
            model: estimate.model.clone(),
            ..Usage::default()
        };
        let micro_usd = self
            .accounting
            .price(consumer.provider.kind, &worst_case)
            .unwrap_or(0);
        let budget_keys = self.check_budgets(consumer, micro_usd, now).await?;
        if !policy.tokens.is_empty() {
            let redis_result = match self.redis() {
                Some(redis) => {
                    redis
                        .take(&consumer.name, "tokens", &policy.tokens, tokens)
                        .await
                }
                None => None,
            };
            let result = match redis_result {
                Some(r) => r,
                None => self.local.reserve_tokens(
                    &consumer.name,
                    &policy.requests,
                    &policy.tokens,
                    tokens,
                    self.share(),
                ),
            };
            if let Err(r) = result {
                self.release(&budget_keys, micro_usd);
                return Err(refusal(r, true));
            }
        }
        Ok(Reservation {
            tokens,
            micro_usd,
            budget_keys,
        })
    }

    /// Reserves `micro_usd` against the consumer's and its team's budgets, or refuses.
    async fn check_budgets(
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
        let mut taken = Vec::new();
        for (key, budget, team) in budgets {
            let spent = self.spent(&key, now).await;
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

    /// Month-to-date spend for a ledger key: Redis when shared, else the local ledger.
    async fn spent(&self, key: &str, now: SystemTime) -> u64 {
        if let Some(redis) = self.redis() {
            if let Some(v) = redis.month_spend(key, &month_of(now)).await {
                return v;
            }
        }
        self.accounting.ledger.month_to_date(key, now)
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
        self.release(&reservation.budget_keys, reservation.micro_usd);
        let delta = i64::try_from(actual_tokens).unwrap_or(i64::MAX)
            - i64::try_from(reservation.tokens).unwrap_or(i64::MAX);
        let now = SystemTime::now();
        let month = month_of(now);
        match (self.redis(), tokio::runtime::Handle::try_current()) {
            (Some(redis), Ok(runtime)) => {
                let mut spend_keys = vec![consumer.name.clone()];
                if let Some((team, _)) = &consumer.limits.team_budget {
                    spend_keys.push(team_key(team).into());
                }
                let (limiter, consumer, month) = (self.clone(), consumer.clone(), month.clone());
                runtime.spawn(async move {
                    let policy = &consumer.limits;
                    let shared = redis
                        .reconcile(
                            &consumer.name,
                            &policy.tokens,
                            delta,
                            &spend_keys,
                            &month,
                            charged_micro_usd,
                        )
                        .await;
                    if !shared {
                        let share = limiter.settings.load().replicas;
                        limiter.local.reconcile_tokens(
                            &consumer.name,
                            &policy.requests,
                            &policy.tokens,
                            delta,
                            share,
                        );
                    }
                });
            }
            _ => self.local.reconcile_tokens(
                &consumer.name,
                &consumer.limits.requests,
                &consumer.limits.tokens,
                delta,
                1,
            ),
        }
        self.soft_threshold(consumer, &month, now);
    }

    /// Forgets limiter state that is back to full.
    pub fn evict_idle(&self) -> usize {
        self.local.evict_idle(&self.settings.load().failed_auth)
    }

    fn soft_threshold(&self, consumer: &Consumer, month: &str, now: SystemTime) {
        let Some(budget) = consumer.limits.budget_micro_usd else {
            return;
        };
        let spent = self.accounting.ledger.month_to_date(&consumer.name, now);
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
