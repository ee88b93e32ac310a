//! The Redis side of the shared limits: keys, script calls and their outcome. Decisions never
//! call this directly; [`SharedStore`](super::shared::SharedStore) calls it when a lease or
//! allowance runs short and its background sync calls it to keep them topped up.
//!
//! Redis is one server, a Redis Cluster or a Sentinel group ([`Link`]). Keys are hash-tagged
//! for Redis Cluster, where every key of one script call must sit in one slot: a consumer's
//! buckets share the consumer's slot (`{prefix}:b:{consumer}:...`), so consumers spread over
//! the cluster; every budget hash shares the prefix's slot with the epoch keys
//! (`{prefix}:budget:...`, `{prefix}:epoch`, `{prefix}:rebuilding`), because a budget script
//! reads the epoch, and because a shard that loses its data then loses the epoch with it and
//! the loss is noticed. That puts every budget call on one node; budgets are touched rarely
//! (an allowance is 1 % of a budget per replica, and each sync pass sends one epoch call plus
//! one call per budget whose spend changed or whose allowance runs low), while the bucket
//! calls, the bulk of the traffic, spread over the consumers' slots.
//! Any error or timeout is a [`StoreError`]; after one,
//! calls are skipped for a short pause (no timeout per decision while Redis is away), the
//! outage is logged once, and every call is counted by result.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use metrics::counter;
use redis::Script;

use super::bucket::Rate;
use super::policy::Window;
use super::redis_link::Link;
use super::redis_scripts;
use super::store::{Kind, StoreError};
use crate::config::RedisConfig;
use crate::telemetry;

/// While Redis is failing, skip it for this long between attempts.
const RETRY_PAUSE: Duration = Duration::from_millis(500);

/// How long budgets wait, after Redis was found empty, for every replica to publish its
/// ledger: a replica that saw Redis fail retries after `RETRY_PAUSE`, then syncs within an
/// interval, so the window covers both with room for a slow pass.
pub fn rebuild_window(sync_interval: Duration) -> Duration {
    (RETRY_PAUSE + sync_interval * 5).max(Duration::from_secs(1))
}

/// Shared month spend is kept a little over two months.
const SPEND_TTL_SECS: u64 = 70 * 86_400;
/// A holding not refreshed for this long belongs to a process that is gone.
pub const HOLDING_LIFETIME: Duration = Duration::from_secs(600);

/// What a bucket grant gave, and when it fell short, the window that refused and how long
/// until the units needed would be there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BucketGrant {
    pub granted: u64,
    pub short: Option<(usize, Duration)>,
}

/// One replica's record of a budget key: its month total and what this process holds.
#[derive(Debug, Clone, Copy)]
pub struct BudgetRecord<'a> {
    pub key: &'a str,
    pub month: &'a str,
    pub total: u64,
    pub holding: u64,
}

/// A budget key as Redis sees it after a record or grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetView {
    /// Granted to this process; `None` when budgets are not trusted (stale epoch, rebuild).
    pub granted: Option<u64>,
    /// Spent by every replica this month.
    pub spent: u64,
    /// Spent plus every live holding.
    pub committed: u64,
}

pub use super::redis_link::RedisSetupError;

pub struct RedisLimits {
    link: Link,
    prefix: String,
    /// For calls a decision waits on.
    timeout: Duration,
    /// For background calls.
    sync_timeout: Duration,
    replica: String,
    incarnation: String,
    grant: Script,
    give_back: Script,
    budget_grant: Script,
    budget_publish: Script,
    epoch: Script,
    down: AtomicBool,
    failed_at_ms: AtomicU64,
    started: Instant,
}

impl std::fmt::Debug for RedisLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLimits")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisLimits {
    /// Prepares a lazily connecting client for the replica whose ledger is `replica` (this
    /// process is `incarnation`): keygate starts, in fallback, even if Redis is down.
    pub fn connect(
        config: &RedisConfig,
        replica: &str,
        incarnation: &str,
    ) -> Result<Arc<Self>, RedisSetupError> {
        let sync_timeout = (config.timeout * 10).max(Duration::from_millis(250));
        let link = Link::open(config, sync_timeout)?;
        Ok(Arc::new(RedisLimits {
            link,
            prefix: config.key_prefix.clone(),
            timeout: config.timeout,
            sync_timeout,
            replica: replica.to_string(),
            incarnation: incarnation.to_string(),
            grant: Script::new(redis_scripts::GRANT),
            give_back: Script::new(redis_scripts::GIVE_BACK),
            budget_grant: Script::new(&redis_scripts::budget_grant()),
            budget_publish: Script::new(&redis_scripts::budget_publish()),
            epoch: Script::new(redis_scripts::EPOCH),
            down: AtomicBool::new(false),
            failed_at_ms: AtomicU64::new(0),
            started: Instant::now(),
        }))
    }

    /// In the consumer's slot: one consumer's windows go to one script call.
    fn bucket_key(&self, consumer: &str, kind: Kind, window: Window) -> String {
        format!(
            "{}:b:{{{consumer}}}:{}:{}",
            self.prefix,
            kind.as_str(),
            window.as_str()
        )
    }

    /// In the prefix's slot, with the epoch keys (see the module doc).
    fn budget_key(&self, key: &str, month: &str) -> String {
        format!("{{{}}}:budget:{month}:{key}", self.prefix)
    }

    fn epoch_keys(&self) -> [String; 2] {
        [
            format!("{{{}}}:epoch", self.prefix),
            format!("{{{}}}:rebuilding", self.prefix),
        ]
    }

    /// False while calls are being skipped after a failure.
    /// The last call failed (Redis is treated as away until a call succeeds).
    pub fn is_down(&self) -> bool {
        self.down.load(Ordering::Relaxed)
    }

    pub fn available(&self) -> bool {
        !(self.down.load(Ordering::Relaxed)
            && (self.started.elapsed().as_millis() as u64)
                .saturating_sub(self.failed_at_ms.load(Ordering::Relaxed))
                < RETRY_PAUSE.as_millis() as u64)
    }

    async fn run<T: redis::FromRedisValue + Send>(
        &self,
        what: &'static str,
        background: bool,
        invocation: redis::ScriptInvocation<'_>,
    ) -> Result<T, StoreError> {
        if !self.available() {
            return Err(StoreError("redis is down; retrying shortly".into()));
        }
        let timeout = if background {
            self.sync_timeout
        } else {
            self.timeout
        };
        let outcome = tokio::time::timeout(timeout, self.link.invoke::<T>(&invocation)).await;
        let error = match outcome {
            Ok(Ok(v)) => {
                counter!(telemetry::LIMITS_REDIS_CALLS_TOTAL, "operation" => what, "result" => "ok")
                    .increment(1);
                if self.down.swap(false, Ordering::Relaxed) {
                    tracing::info!("redis is back: limits are shared again");
                }
                return Ok(v);
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => "timed out".to_string(),
        };
        counter!(telemetry::LIMITS_REDIS_CALLS_TOTAL, "operation" => what, "result" => "error")
            .increment(1);
        self.link.failed();
        self.failed_at_ms
            .store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
        if !self.down.swap(true, Ordering::Relaxed) {
            tracing::error!(
                error,
                "redis unavailable: each replica limits to its share until it is back"
            );
        }
        Err(StoreError(error))
    }

    fn bucket_args(
        &self,
        invocation: &mut redis::ScriptInvocation<'_>,
        consumer: &str,
        kind: Kind,
        rates: &[(Window, Rate)],
    ) {
        for (window, rate) in rates {
            invocation.key(self.bucket_key(consumer, kind, *window));
            invocation
                .arg(rate.limit)
                .arg(u64::try_from(rate.window.as_millis()).unwrap_or(u64::MAX))
                .arg(rate.capacity);
        }
    }

    /// Takes up to `want` units from a consumer's buckets of `kind` for a lease; short when
    /// fewer than `need` were there. `background`: a top-up, not a decision waiting on it.
    pub async fn grant(
        &self,
        consumer: &str,
        kind: Kind,
        rates: &[(Window, Rate)],
        want: u64,
        need: u64,
        background: bool,
    ) -> Result<BucketGrant, StoreError> {
        let mut invocation = self.grant.prepare_invoke();
        invocation.arg(want).arg(need);
        self.bucket_args(&mut invocation, consumer, kind, rates);
        let (granted, index, wait): (i64, usize, u64) =
            self.run("grant", background, invocation).await?;
        let granted = u64::try_from(granted).unwrap_or(0);
        let short =
            (granted < need && index > 0).then(|| (index - 1, Duration::from_millis(wait.max(1))));
        Ok(BucketGrant { granted, short })
    }

    /// Returns `units` of a lease to the buckets (negative: takes a debt).
    pub async fn give_back(
        &self,
        consumer: &str,
        kind: Kind,
        rates: &[(Window, Rate)],
        units: i64,
    ) -> Result<(), StoreError> {
        let mut invocation = self.give_back.prepare_invoke();
        invocation.arg(units);
        self.bucket_args(&mut invocation, consumer, kind, rates);
        self.run::<i64>("give_back", true, invocation)
            .await
            .map(drop)
    }

    fn budget_args(&self, invocation: &mut redis::ScriptInvocation<'_>, record: &BudgetRecord) {
        let [epoch, rebuilding] = self.epoch_keys();
        invocation
            .key(self.budget_key(record.key, record.month))
            .key(epoch)
            .key(rebuilding)
            .arg(&self.replica)
            .arg(&self.incarnation)
            .arg(record.total)
            .arg(record.holding)
            .arg(SPEND_TTL_SECS)
            .arg(u64::try_from(HOLDING_LIFETIME.as_millis()).unwrap_or(u64::MAX));
    }

    /// Records `record` and asks for up to `want` more of `budget`, if `epoch` is current.
    pub async fn budget_grant(
        &self,
        record: &BudgetRecord<'_>,
        want: u64,
        budget: u64,
        epoch: &str,
        background: bool,
    ) -> Result<BudgetView, StoreError> {
        let mut invocation = self.budget_grant.prepare_invoke();
        self.budget_args(&mut invocation, record);
        invocation.arg(want).arg(budget).arg(epoch);
        let (granted, spent, committed): (i64, u64, u64) =
            self.run("budget_grant", background, invocation).await?;
        Ok(BudgetView {
            granted: u64::try_from(granted).ok(),
            spent,
            committed,
        })
    }

    /// Records `record` without asking for more.
    pub async fn budget_publish(
        &self,
        record: &BudgetRecord<'_>,
    ) -> Result<BudgetView, StoreError> {
        let mut invocation = self.budget_publish.prepare_invoke();
        self.budget_args(&mut invocation, record);
        let (spent, committed): (u64, u64) = self.run("budget_publish", true, invocation).await?;
        Ok(BudgetView {
            granted: None,
            spent,
            committed,
        })
    }

    /// The current epoch (made, with a rebuild window, if Redis has none) and whether a
    /// rebuild is under way.
    pub async fn epoch(
        &self,
        new_id: &str,
        window: Duration,
    ) -> Result<(String, bool), StoreError> {
        let mut invocation = self.epoch.prepare_invoke();
        for key in self.epoch_keys() {
            invocation.key(key);
        }
        invocation
            .arg(new_id)
            .arg(u64::try_from(window.as_millis()).unwrap_or(u64::MAX));
        let (epoch, rebuilding): (String, i64) = self.run("epoch", true, invocation).await?;
        Ok((epoch, rebuilding == 1))
    }
}
