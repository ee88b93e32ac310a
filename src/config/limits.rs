//! `limits:` and `teams:`, and the per-provider / per-consumer limit settings.

use std::time::Duration;

use serde::Deserialize;

use crate::serde_util::duration;

/// Per-provider defaults and per-consumer overrides; a consumer's value wins field by field.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LimitSettings {
    pub requests_per_second: Option<u64>,
    pub requests_per_minute: Option<u64>,
    pub requests_per_hour: Option<u64>,
    pub requests_per_day: Option<u64>,
    pub tokens_per_minute: Option<u64>,
    pub tokens_per_day: Option<u64>,
    /// Largest request body accepted (default 64 KiB); larger gets 413 and is never forwarded.
    pub max_request_bytes: Option<u64>,
    /// Calendar-month (UTC) budget in USD.
    pub monthly_budget_usd: Option<f64>,
    /// Output tokens reserved for a request that does not say `max_tokens`.
    pub default_max_tokens: Option<u64>,
}

impl LimitSettings {
    /// `self` with every unset field taken from `defaults`.
    pub fn over(&self, defaults: &LimitSettings) -> LimitSettings {
        LimitSettings {
            requests_per_second: self.requests_per_second.or(defaults.requests_per_second),
            requests_per_minute: self.requests_per_minute.or(defaults.requests_per_minute),
            requests_per_hour: self.requests_per_hour.or(defaults.requests_per_hour),
            requests_per_day: self.requests_per_day.or(defaults.requests_per_day),
            tokens_per_minute: self.tokens_per_minute.or(defaults.tokens_per_minute),
            tokens_per_day: self.tokens_per_day.or(defaults.tokens_per_day),
            max_request_bytes: self.max_request_bytes.or(defaults.max_request_bytes),
            monthly_budget_usd: self.monthly_budget_usd.or(defaults.monthly_budget_usd),
            default_max_tokens: self.default_max_tokens.or(defaults.default_max_tokens),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TeamConfig {
    pub monthly_budget_usd: Option<f64>,
}

/// Where limit state lives and the guards that are not per consumer.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    #[serde(default)]
    pub backend: LimitsBackend,
    #[serde(default)]
    pub redis: Option<RedisConfig>,
    /// Failed authentications allowed per source address per minute before that address is
    /// refused (429) for a while.
    #[serde(default = "default_unknown_key_limit")]
    pub failed_auth_per_minute: u64,
    /// Fraction of a budget at which a warning is logged and counted once per month.
    #[serde(default = "default_soft_threshold")]
    pub budget_soft_threshold: f64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            backend: LimitsBackend::Local,
            redis: None,
            failed_auth_per_minute: default_unknown_key_limit(),
            budget_soft_threshold: default_soft_threshold(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum LimitsBackend {
    #[default]
    Local,
    Redis,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// e.g. `redis://127.0.0.1:6379/0`.
    pub url: String,
    /// Per call a decision waits on (a lease that ran short); past it the decision is served
    /// by this replica's share. Background calls get ten times as long (at least 250 ms).
    #[serde(default = "default_redis_timeout", with = "duration")]
    pub timeout: Duration,
    /// How many replicas share the limits: while Redis is away each admits `1/replicas` of
    /// every limit and of what was left of each budget.
    #[serde(default = "default_replicas")]
    pub replicas: u32,
    /// Prefix of every key (no `{` or `}`: keygate adds the Redis Cluster hash tags).
    #[serde(default = "default_key_prefix")]
    pub key_prefix: String,
    /// How often leases and allowances are topped up and this replica's spend is published.
    #[serde(default = "default_sync_interval", with = "duration")]
    pub sync_interval: Duration,
}

fn default_unknown_key_limit() -> u64 {
    30
}
fn default_soft_threshold() -> f64 {
    0.8
}
fn default_redis_timeout() -> Duration {
    Duration::from_millis(5)
}
fn default_sync_interval() -> Duration {
    Duration::from_millis(100)
}
fn default_replicas() -> u32 {
    1
}
fn default_key_prefix() -> String {
    "keygate".into()
}
