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

/// Where shared limits live and how keygate uses them. Exactly one of `url`, `cluster` and
/// `sentinel` names the servers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// One Redis server, e.g. `redis://127.0.0.1:6379/0`.
    #[serde(default)]
    pub url: Option<String>,
    /// A Redis Cluster: the URLs of some of its nodes (the rest are discovered from them).
    #[serde(default)]
    pub cluster: Option<Vec<String>>,
    /// A master watched by Redis Sentinel: keygate asks the sentinels where it is, and asks
    /// again after a failover.
    #[serde(default)]
    pub sentinel: Option<SentinelConfig>,
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

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            url: None,
            cluster: None,
            sentinel: None,
            timeout: default_redis_timeout(),
            replicas: default_replicas(),
            key_prefix: default_key_prefix(),
            sync_interval: default_sync_interval(),
        }
    }
}

/// `limits.redis.sentinel`: the sentinels to ask and the master group they watch.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SentinelConfig {
    /// Sentinel URLs, e.g. `redis://10.0.0.5:26379`; the first that answers is used.
    pub urls: Vec<String>,
    /// The master group's name in the sentinels' config (`sentinel monitor <name> ...`).
    pub master: String,
}

/// The servers a [`RedisConfig`] names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedisServers<'a> {
    Standalone(&'a str),
    Cluster(&'a [String]),
    Sentinel(&'a SentinelConfig),
}

impl RedisConfig {
    /// The servers named, or `None` unless exactly one of `url`, `cluster` and `sentinel` is
    /// set (validation refuses such a config).
    pub fn servers(&self) -> Option<RedisServers<'_>> {
        match (&self.url, &self.cluster, &self.sentinel) {
            (Some(url), None, None) => Some(RedisServers::Standalone(url)),
            (None, Some(nodes), None) => Some(RedisServers::Cluster(nodes)),
            (None, None, Some(sentinel)) => Some(RedisServers::Sentinel(sentinel)),
            _ => None,
        }
    }

    /// Checks what serde cannot; returns the failing field path and why.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let err = |field: &str, msg: &str| Err((format!("limits.redis{field}"), msg.to_string()));
        if self.replicas == 0 {
            return err(
                ".replicas",
                "must be at least 1: while Redis is away each replica enforces 1/replicas of every limit",
            );
        }
        match self.servers() {
            None => {
                return err(
                    "",
                    "name the servers with exactly one of url (one server), cluster (Redis Cluster nodes) or sentinel (sentinels and master)",
                )
            }
            Some(RedisServers::Standalone(url)) => check_url(".url", url)?,
            Some(RedisServers::Cluster(nodes)) => {
                if nodes.is_empty() {
                    return err(".cluster", "list at least one node of the cluster");
                }
                for (i, url) in nodes.iter().enumerate() {
                    check_url(&format!(".cluster[{i}]"), url)?;
                }
            }
            Some(RedisServers::Sentinel(sentinel)) => {
                if sentinel.urls.is_empty() {
                    return err(".sentinel.urls", "list at least one sentinel");
                }
                for (i, url) in sentinel.urls.iter().enumerate() {
                    check_url(&format!(".sentinel.urls[{i}]"), url)?;
                }
                if sentinel.master.trim().is_empty() {
                    return err(
                        ".sentinel.master",
                        "name the master group the sentinels watch",
                    );
                }
            }
        }
        if self.key_prefix.is_empty() || self.key_prefix.contains(['{', '}']) {
            return err(
                ".key_prefix",
                "must be non-empty, without { or } (keygate adds the Redis Cluster hash tags)",
            );
        }
        if self.sync_interval < Duration::from_millis(10)
            || self.sync_interval > Duration::from_secs(10)
        {
            return err(".sync_interval", "must be between 10ms and 10s");
        }
        Ok(())
    }
}

/// A Redis URL the client can use (`redis://`, `rediss://`, `unix://`).
fn check_url(field: &str, url: &str) -> Result<(), (String, String)> {
    let at = || format!("limits.redis{field}");
    if url.trim().is_empty() {
        return Err((at(), "name the Redis server".into()));
    }
    redis::IntoConnectionInfo::into_connection_info(url)
        .map(drop)
        .map_err(|e| (at(), format!("{url:?} is not a Redis URL: {e}")))
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
