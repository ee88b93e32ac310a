//! Limits shared by every replica through Redis: one atomic script call per decision covering
//! all of a consumer's windows, reconciliation and shared month spend as a second call off the
//! request path. Any Redis error or timeout is a [`StoreError`] so the caller falls back to local
//! buckets (each replica taking its share); the fallback is logged once per outage and
//! counted, and Redis is tried again after a short pause, so sharing resumes on its own.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use metrics::counter;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::Script;

use super::bucket::Rate;
use super::policy::Window;
use super::store::{Kind, LimitStore, Refusal, StoreError};
use crate::config::RedisConfig;
use crate::telemetry;

/// While Redis is failing, skip it for this long between attempts (no timeout per request).
const RETRY_PAUSE: Duration = Duration::from_millis(500);
/// Shared month spend is kept a little over two months.
const SPEND_TTL_SECS: u64 = 70 * 86_400;

const TAKE: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local cost = tonumber(ARGV[1])
local levels = {}
local worst_i, worst_wait = 0, 0
for i = 1, #KEYS do
  local limit = tonumber(ARGV[2 + (i - 1) * 3])
  local window = tonumber(ARGV[3 + (i - 1) * 3])
  local cap = tonumber(ARGV[4 + (i - 1) * 3])
  local per_ms = limit / window
  local v = redis.call('HMGET', KEYS[i], 'l', 't')
  local level = tonumber(v[1]) or cap
  local ts = tonumber(v[2]) or now
  if now > ts then level = math.min(cap, level + (now - ts) * per_ms) end
  levels[i] = level
  local need = math.min(cost, cap)
  if level < need then
    local wait = math.ceil((need - level) / per_ms)
    if wait > worst_wait then worst_wait = wait; worst_i = i end
  end
end
if worst_i > 0 then return {0, worst_i, worst_wait} end
for i = 1, #KEYS do
  local window = tonumber(ARGV[3 + (i - 1) * 3])
  redis.call('HSET', KEYS[i], 'l', tostring(levels[i] - cost), 't', tostring(now))
  redis.call('PEXPIRE', KEYS[i], window * 2)
end
return {1, 0, 0}
"#;

/// KEYS: buckets; ARGV: delta, then limit/window/capacity per bucket.
const ADJUST: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local delta = tonumber(ARGV[1])
for i = 1, #KEYS do
  local limit = tonumber(ARGV[2 + (i - 1) * 3])
  local window = tonumber(ARGV[3 + (i - 1) * 3])
  local cap = tonumber(ARGV[4 + (i - 1) * 3])
  local v = redis.call('HMGET', KEYS[i], 'l', 't')
  local level = tonumber(v[1]) or cap
  local ts = tonumber(v[2]) or now
  if now > ts then level = math.min(cap, level + (now - ts) * limit / window) end
  redis.call('HSET', KEYS[i], 'l', tostring(math.min(cap, level - delta)), 't', tostring(now))
  redis.call('PEXPIRE', KEYS[i], window * 2)
end
return 1
"#;

/// KEYS: spend keys; ARGV: charge, ttl in seconds.
const ADD_SPEND: &str = r#"
for i = 1, #KEYS do
  redis.call('INCRBY', KEYS[i], ARGV[1])
  redis.call('EXPIRE', KEYS[i], tonumber(ARGV[2]))
end
return 1
"#;

pub struct RedisLimits {
    conn: ConnectionManager,
    prefix: String,
    timeout: Duration,
    take: Script,
    adjust: Script,
    add_spend: Script,
    down: AtomicBool,
    /// Milliseconds since `started` of the last failure (for the retry pause).
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

/// Why Redis could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("limits.redis.url: {0}")]
pub struct RedisSetupError(String);

impl RedisLimits {
    /// Prepares a lazily connecting client: keygate starts (in fallback) even if Redis is down.
    pub fn connect(config: &RedisConfig) -> Result<Arc<Self>, RedisSetupError> {
        let client =
            redis::Client::open(config.url.as_str()).map_err(|e| RedisSetupError(e.to_string()))?;
        let manager_config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(config.timeout))
            .set_connection_timeout(Some(Duration::from_millis(250)))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let conn = client
            .get_connection_manager_lazy(manager_config)
            .map_err(|e| RedisSetupError(e.to_string()))?;
        Ok(Arc::new(RedisLimits {
            conn,
            prefix: config.key_prefix.clone(),
            timeout: config.timeout,
            take: Script::new(TAKE),
            adjust: Script::new(ADJUST),
            add_spend: Script::new(ADD_SPEND),
            down: AtomicBool::new(false),
            failed_at_ms: AtomicU64::new(0),
            started: Instant::now(),
        }))
    }

    fn bucket_key(&self, consumer: &str, kind: &str, window: Window) -> String {
        format!("{}:b:{consumer}:{kind}:{}", self.prefix, window.as_str())
    }

    fn spend_key(&self, key: &str, month: &str) -> String {
        format!("{}:spend:{month}:{key}", self.prefix)
    }

    fn skip(&self) -> bool {
        self.down.load(Ordering::Relaxed)
            && (self.started.elapsed().as_millis() as u64)
                .saturating_sub(self.failed_at_ms.load(Ordering::Relaxed))
                < RETRY_PAUSE.as_millis() as u64
    }

    fn failed(&self, what: &'static str, error: &str) {
        self.failed_at_ms
            .store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
        counter!(telemetry::LIMITS_FALLBACK_TOTAL, "operation" => what).increment(1);
        if !self.down.swap(true, Ordering::Relaxed) {
            tracing::error!(error, "redis unavailable: limits fall back to local buckets (each replica takes its share)");
        }
    }

    fn succeeded(&self) {
        if self.down.swap(false, Ordering::Relaxed) {
            tracing::info!("redis is back: limits are shared again");
        }
    }

    async fn run<T: redis::FromRedisValue>(
        &self,
        what: &'static str,
        invocation: redis::ScriptInvocation<'_>,
    ) -> Result<T, StoreError> {
        if self.skip() {
            counter!(telemetry::LIMITS_FALLBACK_TOTAL, "operation" => what).increment(1);
            return Err(StoreError("redis is down; retrying shortly".into()));
        }
        let mut conn = self.conn.clone();
        let outcome =
            tokio::time::timeout(self.timeout, invocation.invoke_async::<T>(&mut conn)).await;
        self.settle_call(
            what,
            outcome
                .map_err(|_| ())
                .map(|r| r.map_err(|e| e.to_string())),
        )
    }

    fn settle_call<T>(
        &self,
        what: &'static str,
        outcome: Result<Result<T, String>, ()>,
    ) -> Result<T, StoreError> {
        let error = match outcome {
            Ok(Ok(v)) => {
                self.succeeded();
                return Ok(v);
            }
            Ok(Err(e)) => e,
            Err(()) => "timed out".to_string(),
        };
        self.failed(what, &error);
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
            invocation.key(self.bucket_key(consumer, kind.as_str(), *window));
            invocation
                .arg(rate.limit)
                .arg(rate.window.as_millis() as u64)
                .arg(rate.capacity);
        }
    }
}

impl LimitStore for RedisLimits {
    async fn take(
        &self,
        consumer: &Arc<str>,
        kind: Kind,
        rates: &[(Window, Rate)],
        cost: u64,
    ) -> Result<Result<(), Refusal>, StoreError> {
        if rates.is_empty() {
            return Ok(Ok(()));
        }
        let mut invocation = self.take.prepare_invoke();
        invocation.arg(cost);
        self.bucket_args(&mut invocation, consumer, kind, rates);
        let (ok, index, wait): (i64, usize, u64) = self.run("take", invocation).await?;
        if ok == 1 {
            return Ok(Ok(()));
        }
        let (window, rate) = rates
            .get(index.saturating_sub(1))
            .copied()
            .ok_or_else(|| StoreError(format!("take named bucket {index} of {}", rates.len())))?;
        Ok(Err(Refusal {
            window,
            limit: rate.limit,
            retry_after: Duration::from_millis(wait.max(1)),
        }))
    }

    async fn adjust(
        &self,
        consumer: &Arc<str>,
        kind: Kind,
        rates: &[(Window, Rate)],
        delta: i64,
    ) -> Result<(), StoreError> {
        if rates.is_empty() || delta == 0 {
            return Ok(());
        }
        let mut invocation = self.adjust.prepare_invoke();
        invocation.arg(delta);
        self.bucket_args(&mut invocation, consumer, kind, rates);
        self.run::<i64>("reconcile", invocation).await.map(drop)
    }

    async fn spent(&self, key: &str, month: &str) -> Result<u64, StoreError> {
        if self.skip() {
            return Err(StoreError("redis is down; retrying shortly".into()));
        }
        let mut conn = self.conn.clone();
        let cmd = redis::cmd("GET").arg(self.spend_key(key, month)).clone();
        let outcome =
            tokio::time::timeout(self.timeout, cmd.query_async::<Option<u64>>(&mut conn)).await;
        self.settle_call(
            "spend",
            outcome
                .map_err(|_| ())
                .map(|r| r.map(Option::unwrap_or_default).map_err(|e| e.to_string())),
        )
    }

    async fn add_spend(
        &self,
        keys: &[Arc<str>],
        month: &str,
        micro_usd: u64,
    ) -> Result<(), StoreError> {
        if keys.is_empty() || micro_usd == 0 {
            return Ok(());
        }
        let mut invocation = self.add_spend.prepare_invoke();
        invocation.arg(micro_usd).arg(SPEND_TTL_SECS);
        for key in keys {
            invocation.key(self.spend_key(key, month));
        }
        self.run::<i64>("reconcile", invocation).await.map(drop)
    }
}
