//! Limits shared by every replica through Redis: one atomic script call per decision covering
//! all of a consumer's windows, reconciliation and shared month spend as a second call off the
//! request path. Any Redis error or timeout returns `None` so the caller falls back to local
//! buckets (each replica taking its share); the fallback is logged once per outage and
//! counted, and Redis is tried again after a short pause, so sharing resumes on its own.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use metrics::counter;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::Script;

use super::bucket::Rate;
use super::local::Refusal;
use super::policy::Window;
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

/// KEYS: token buckets…, spend keys…; ARGV: #buckets, delta, charged, spend ttl, then
/// limit/window/capacity per bucket.
const RECONCILE: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local nb = tonumber(ARGV[1])
local delta = tonumber(ARGV[2])
local charged = tonumber(ARGV[3])
for i = 1, nb do
  local limit = tonumber(ARGV[5 + (i - 1) * 3])
  local window = tonumber(ARGV[6 + (i - 1) * 3])
  local cap = tonumber(ARGV[7 + (i - 1) * 3])
  local v = redis.call('HMGET', KEYS[i], 'l', 't')
  local level = tonumber(v[1]) or cap
  local ts = tonumber(v[2]) or now
  if now > ts then level = math.min(cap, level + (now - ts) * limit / window) end
  redis.call('HSET', KEYS[i], 'l', tostring(math.min(cap, level - delta)), 't', tostring(now))
  redis.call('PEXPIRE', KEYS[i], window * 2)
end
for i = nb + 1, #KEYS do
  if charged > 0 then redis.call('INCRBY', KEYS[i], charged) end
  redis.call('EXPIRE', KEYS[i], tonumber(ARGV[4]))
end
return 1
"#;

pub struct RedisLimits {
    conn: ConnectionManager,
    prefix: String,
    timeout: Duration,
    take: Script,
    reconcile: Script,
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
            reconcile: Script::new(RECONCILE),
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

    fn failed(&self, what: &str, error: &str) {
        self.failed_at_ms
            .store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
        counter!(telemetry::LIMITS_FALLBACK_TOTAL, "operation" => what.to_string()).increment(1);
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
        what: &str,
        invocation: redis::ScriptInvocation<'_>,
    ) -> Option<T> {
        if self.skip() {
            counter!(telemetry::LIMITS_FALLBACK_TOTAL, "operation" => what.to_string())
                .increment(1);
            return None;
        }
        let mut conn = self.conn.clone();
        match tokio::time::timeout(self.timeout, invocation.invoke_async::<T>(&mut conn)).await {
            Ok(Ok(v)) => {
                self.succeeded();
                Some(v)
            }
            Ok(Err(e)) => {
                self.failed(what, &e.to_string());
                None
            }
            Err(_) => {
                self.failed(what, "timed out");
                None
            }
        }
    }

    /// Takes `cost` from every bucket of one kind atomically. `None`: Redis unavailable.
    pub async fn take(
        &self,
        consumer: &str,
        kind: &str,
        rates: &[(Window, Rate)],
        cost: u64,
    ) -> Option<Result<(), Refusal>> {
        let mut invocation = self.take.prepare_invoke();
        invocation.arg(cost);
        for (window, rate) in rates {
            invocation.key(self.bucket_key(consumer, kind, *window));
            invocation
                .arg(rate.limit)
                .arg(rate.window.as_millis() as u64)
                .arg(rate.capacity);
        }
        let (ok, index, wait): (i64, usize, u64) = self.run("take", invocation).await?;
        if ok == 1 {
            return Some(Ok(()));
        }
        let (window, rate) = rates.get(index.saturating_sub(1)).copied()?;
        Some(Err(Refusal {
            window,
            limit: rate.limit,
            retry_after: Duration::from_millis(wait.max(1)),
        }))
    }

    /// The shared month-to-date spend of a ledger key.
    pub async fn month_spend(&self, key: &str, month: &str) -> Option<u64> {
        if self.skip() {
            return None;
        }
        let mut conn = self.conn.clone();
        let cmd = redis::cmd("GET").arg(self.spend_key(key, month)).clone();
        match tokio::time::timeout(self.timeout, cmd.query_async::<Option<u64>>(&mut conn)).await {
            Ok(Ok(v)) => {
                self.succeeded();
                Some(v.unwrap_or(0))
            }
            Ok(Err(e)) => {
                self.failed("spend", &e.to_string());
                None
            }
            Err(_) => {
                self.failed("spend", "timed out");
                None
            }
        }
    }

    /// Reconciles token buckets by `delta` and adds the charge to the shared month spend.
    /// Returns false when Redis was unavailable (the caller then reconciles locally).
    pub async fn reconcile(
        &self,
        consumer: &str,
        tokens: &[(Window, Rate)],
        delta: i64,
        spend_keys: &[Arc<str>],
        month: &str,
        charged: u64,
    ) -> bool {
        let mut invocation = self.reconcile.prepare_invoke();
        invocation
            .arg(tokens.len())
            .arg(delta)
            .arg(charged)
            .arg(SPEND_TTL_SECS);
        for (window, rate) in tokens {
            invocation.key(self.bucket_key(consumer, "tokens", *window));
            invocation
                .arg(rate.limit)
                .arg(rate.window.as_millis() as u64)
                .arg(rate.capacity);
        }
        for key in spend_keys {
            invocation.key(self.spend_key(key, month));
        }
        self.run::<i64>("reconcile", invocation).await.is_some()
    }
}
