//! The configuration schema. Unknown fields are errors everywhere.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::Deserialize;

use crate::auth::hash::KeyHash;
use crate::auth::key::KeyEnv;
use crate::providers::ProviderKind;
use crate::scope::RoutePattern;
use crate::serde_util::{duration, rfc3339_opt};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub listeners: Listeners,
    pub credentials: CredentialsConfig,
    pub providers: BTreeMap<String, ProviderConfig>,
    #[serde(default)]
    pub consumers: ConsumersConfig,
    #[serde(default)]
    pub network: NetworkConfig,
    #[serde(default)]
    pub reload: ReloadConfig,
    #[serde(default)]
    pub usage: UsageConfig,
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Optional per-team budgets, shared by every consumer of the team.
    #[serde(default)]
    pub teams: BTreeMap<String, TeamConfig>,
    #[serde(default)]
    pub admin: AdminConfig,
    /// Abuse detectors and their actions.
    #[serde(default)]
    pub detect: crate::detect::config::DetectConfig,
    /// Webhooks that receive detections and admin actions.
    #[serde(default)]
    pub notify: crate::notify::config::NotifyConfig,
}

/// The admin gRPC API (suspend, resume, revoke, list, refresh). It is served only when an
/// admin token is available: never unauthenticated.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    #[serde(default = "default_admin_listen")]
    pub listen: SocketAddr,
    /// File holding the bearer token (preferred); else the environment variable `token_env`.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    #[serde(default = "default_admin_token_env")]
    pub token_env: String,
    /// Durable overrides (suspensions, revocations), reloaded when it changes; replicas
    /// sharing a volume share it. Relative to this config file.
    #[serde(default = "default_state_file")]
    pub state_file: PathBuf,
    /// JSON-lines audit log; empty logs audit lines to stderr only.
    #[serde(default)]
    pub audit_log: PathBuf,
    /// Serve the admin API over TLS (required once it listens beyond loopback).
    #[serde(default)]
    pub tls: Option<AdminTls>,
}

/// PEM files for the admin API's TLS, relative to this config file. With `client_ca_file`,
/// callers must also present a client certificate that CA signed (mutual TLS).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminTls {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    #[serde(default)]
    pub client_ca_file: Option<PathBuf>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: default_admin_listen(),
            token_file: None,
            token_env: default_admin_token_env(),
            state_file: default_state_file(),
            audit_log: PathBuf::new(),
            tls: None,
        }
    }
}

fn default_admin_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 50052))
}
fn default_admin_token_env() -> String {
    "KEYGATE_ADMIN_TOKEN".into()
}
fn default_state_file() -> PathBuf {
    PathBuf::from("keygate-state.yaml")
}

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
    /// Per call; past it the decision falls back to local buckets.
    #[serde(default = "default_redis_timeout", with = "duration")]
    pub timeout: Duration,
    /// How many replicas share the limits: in fallback each takes `1/replicas` of every limit.
    #[serde(default = "default_replicas")]
    pub replicas: u32,
    #[serde(default = "default_key_prefix")]
    pub key_prefix: String,
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
fn default_replicas() -> u32 {
    1
}
fn default_key_prefix() -> String {
    "keygate".into()
}

/// Usage accounting: request rewriting, prices and the spend ledger.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageConfig {
    /// Add `stream_options.include_usage: true` to OpenAI streaming requests that lack it, so
    /// every stream ends with exact usage.
    #[serde(default = "default_true")]
    pub include_usage: bool,
    /// Price overrides on top of the shipped table (provider + model pattern → USD per 1M tokens).
    #[serde(default)]
    pub pricing: Vec<crate::usage::PriceEntry>,
    /// Spend ledger file (redb), relative to this config file; empty keeps it in memory only.
    #[serde(default = "default_ledger")]
    pub ledger: PathBuf,
    /// Window of `keygate_source_addresses`.
    #[serde(default = "default_source_window", with = "duration")]
    pub source_window: Duration,
}

impl Default for UsageConfig {
    fn default() -> Self {
        UsageConfig {
            include_usage: true,
            pricing: Vec::new(),
            ledger: default_ledger(),
            source_window: default_source_window(),
        }
    }
}

fn default_true() -> bool {
    true
}
fn default_ledger() -> PathBuf {
    PathBuf::from("keygate-ledger.redb")
}
fn default_source_window() -> Duration {
    Duration::from_secs(3600)
}

impl Config {
    pub(crate) fn resolve_paths(&mut self, base: &Path) {
        let resolve = |path: &mut PathBuf| {
            if path.is_relative() {
                *path = base.join(&*path);
            }
        };
        match &mut self.credentials {
            CredentialsConfig::File { path } => resolve(path),
            CredentialsConfig::Vault(v) => v.vault.resolve_paths(&resolve),
        }
        if let ConsumersConfig::Vault(store) = &mut self.consumers {
            if let Some(vault) = &mut store.vault {
                vault.resolve_paths(&resolve);
            }
        }
        if let Some(uds) = &mut self.listeners.grpc_uds {
            resolve(uds);
        }
        if !self.usage.ledger.as_os_str().is_empty() {
            resolve(&mut self.usage.ledger);
        }
        for path in [&mut self.admin.state_file, &mut self.admin.audit_log] {
            if !path.as_os_str().is_empty() {
                resolve(path);
            }
        }
        if let Some(token) = &mut self.admin.token_file {
            resolve(token);
        }
        if let Some(tls) = &mut self.admin.tls {
            resolve(&mut tls.cert_file);
            resolve(&mut tls.key_file);
            if let Some(ca) = &mut tls.client_ca_file {
                resolve(ca);
            }
        }
    }

    /// Drops the inline consumer list once a registry holds it. The config stays in memory
    /// for the life of the process (listeners, credentials, reload and detector settings), and
    /// with many consumers the list is most of it: at 1 M consumers, about 1 KB each.
    pub fn release_inline_consumers(&mut self) {
        if let ConsumersConfig::Inline(list) = &mut self.consumers {
            *list = Vec::new();
        }
    }

    /// The consumers written inline in the file (none when they live in a store).
    pub fn inline_consumers(&self) -> &[ConsumerConfig] {
        match &self.consumers {
            ConsumersConfig::Inline(list) => list,
            ConsumersConfig::Vault(_) => &[],
        }
    }

    /// The Vault connection for the consumer store: its own, or the credentials' one.
    pub fn consumer_vault(&self) -> Option<&VaultConnection> {
        match (&self.consumers, &self.credentials) {
            (ConsumersConfig::Vault(store), _) if store.vault.is_some() => store.vault.as_ref(),
            (ConsumersConfig::Vault(_), CredentialsConfig::Vault(v)) => Some(&v.vault),
            _ => None,
        }
    }
}

/// Where keygate listens. The admin port is loopback by default: it serves metrics and health.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listeners {
    /// ext_proc and ext_authz share one gRPC port.
    #[serde(default = "default_grpc")]
    pub grpc: SocketAddr,
    /// Optional Unix domain socket serving the same gRPC services (for sidecars).
    #[serde(default)]
    pub grpc_uds: Option<PathBuf>,
    #[serde(default = "default_admin")]
    pub admin: SocketAddr,
}

impl Default for Listeners {
    fn default() -> Self {
        Listeners {
            grpc: default_grpc(),
            grpc_uds: None,
            admin: default_admin(),
        }
    }
}

fn default_grpc() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 50051))
}

fn default_admin() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9090))
}

/// Where provider credentials come from.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "source", rename_all = "snake_case", deny_unknown_fields)]
pub enum CredentialsConfig {
    /// A YAML file mapping credential references to `{api_key: ...}`.
    File { path: PathBuf },
    /// Vault (or OpenBao) KV v2.
    Vault(Box<VaultCredentials>),
}

impl CredentialsConfig {
    /// How often credentials are re-read in the background, and how long a value may be
    /// served after refreshes started failing.
    pub fn freshness(&self) -> (Duration, Duration) {
        match self {
            CredentialsConfig::File { .. } => (default_refresh_interval(), default_max_stale()),
            CredentialsConfig::Vault(v) => (v.refresh_interval, v.max_stale),
        }
    }
}

/// Provider keys in Vault KV v2: `<mount>/data/<path_template with {reference}>`, field `api_key`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VaultCredentials {
    pub vault: VaultConnection,
    #[serde(default = "default_mount")]
    pub mount: String,
    /// e.g. `ai-providers/{reference}` → `secret/data/ai-providers/openai/production`.
    #[serde(default = "default_path_template")]
    pub path_template: String,
    #[serde(default = "default_refresh_interval", with = "duration")]
    pub refresh_interval: Duration,
    #[serde(default = "default_max_stale", with = "duration")]
    pub max_stale: Duration,
    /// How long startup waits for every referenced credential before giving up.
    #[serde(default = "default_startup_timeout", with = "duration")]
    pub startup_timeout: Duration,
}

/// How to reach and log in to Vault.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VaultConnection {
    /// e.g. `https://vault.internal:8200`.
    pub address: String,
    #[serde(default)]
    pub namespace: Option<String>,
    /// PEM bundle to trust for Vault's TLS certificate.
    #[serde(default)]
    pub ca_cert: Option<PathBuf>,
    #[serde(default = "default_vault_timeout", with = "duration")]
    pub timeout: Duration,
    pub auth: VaultAuth,
}

impl VaultConnection {
    fn resolve_paths(&mut self, resolve: &impl Fn(&mut PathBuf)) {
        if let Some(ca) = &mut self.ca_cert {
            resolve(ca);
        }
        match &mut self.auth {
            VaultAuth::Token { token_file, .. } => {
                if let Some(f) = token_file {
                    resolve(f);
                }
            }
            VaultAuth::Approle { secret_id_file, .. } => resolve(secret_id_file),
            VaultAuth::Kubernetes { jwt_file, .. } => resolve(jwt_file),
        }
    }
}

/// Vault login methods. Secrets are read from files or the environment, never from config.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "method", rename_all = "snake_case", deny_unknown_fields)]
pub enum VaultAuth {
    /// A token from `token_file`, else from the environment variable `token_env`.
    Token {
        #[serde(default)]
        token_file: Option<PathBuf>,
        #[serde(default = "default_token_env")]
        token_env: String,
    },
    Approle {
        #[serde(default = "default_approle_mount")]
        mount: String,
        role_id: String,
        secret_id_file: PathBuf,
    },
    Kubernetes {
        #[serde(default = "default_kubernetes_mount")]
        mount: String,
        role: String,
        #[serde(default = "default_jwt_file")]
        jwt_file: PathBuf,
    },
}

/// Consumers inline in this file, or one KV entry per consumer in Vault.
#[derive(Debug, Clone)]
pub enum ConsumersConfig {
    Inline(Vec<ConsumerConfig>),
    Vault(Box<VaultConsumers>),
}

impl Default for ConsumersConfig {
    fn default() -> Self {
        ConsumersConfig::Inline(Vec::new())
    }
}

/// `consumers: {source: vault, path: keygate/consumers}`: each entry's key is the consumer
/// name and its data is the consumer without `name`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VaultConsumers {
    pub source: ConsumerSourceKind,
    #[serde(default = "default_mount")]
    pub mount: String,
    pub path: String,
    #[serde(default = "default_consumer_refresh", with = "duration")]
    pub refresh: Duration,
    /// Defaults to the credentials' Vault connection.
    #[serde(default)]
    pub vault: Option<VaultConnection>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ConsumerSourceKind {
    Vault,
}

impl<'de> Deserialize<'de> for ConsumersConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Either;
        impl<'de> serde::de::Visitor<'de> for Either {
            type Value = ConsumersConfig;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a list of consumers or {source: vault, path: ...}")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                seq: A,
            ) -> Result<Self::Value, A::Error> {
                Vec::deserialize(serde::de::value::SeqAccessDeserializer::new(seq))
                    .map(ConsumersConfig::Inline)
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<Self::Value, A::Error> {
                VaultConsumers::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(|v| ConsumersConfig::Vault(Box::new(v)))
            }
            fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
                Ok(ConsumersConfig::default())
            }
        }
        d.deserialize_any(Either)
    }
}

fn default_mount() -> String {
    "secret".into()
}
fn default_path_template() -> String {
    "ai-providers/{reference}".into()
}
fn default_refresh_interval() -> Duration {
    Duration::from_secs(30)
}
fn default_max_stale() -> Duration {
    Duration::from_secs(3600)
}
fn default_startup_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_vault_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_consumer_refresh() -> Duration {
    Duration::from_secs(5)
}
fn default_token_env() -> String {
    "VAULT_TOKEN".into()
}
fn default_approle_mount() -> String {
    "approle".into()
}
fn default_kubernetes_mount() -> String {
    "kubernetes".into()
}
fn default_jwt_file() -> PathBuf {
    PathBuf::from("/var/run/secrets/kubernetes.io/serviceaccount/token")
}

/// One upstream AI provider and the credential to use for each consumer environment.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    pub kind: ProviderKind,
    /// environment name → credential reference such as `openai/production`.
    pub credentials: BTreeMap<String, String>,
    /// How the credential is sent upstream; required for `generic`, optional override otherwise.
    #[serde(default)]
    pub inject: Option<InjectConfig>,
    /// Defaults for this provider's consumers.
    #[serde(default)]
    pub limits: LimitSettings,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InjectConfig {
    pub header: String,
    #[serde(default)]
    pub prefix: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ConsumerStatus {
    #[default]
    Active,
    Suspended,
    Revoked,
}

impl ConsumerStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ConsumerStatus::Active => "active",
            ConsumerStatus::Suspended => "suspended",
            ConsumerStatus::Revoked => "revoked",
        }
    }
}

/// A team or service that holds consumer keys.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsumerConfig {
    pub name: String,
    #[serde(default)]
    pub team: Option<String>,
    pub environment: String,
    pub provider: String,
    #[serde(default)]
    pub status: ConsumerStatus,
    pub keys: Vec<KeyConfig>,
    pub scope: ScopeConfig,
    #[serde(default)]
    pub limits: LimitSettings,
    /// A tripwire: any use of this consumer's keys is a critical detection and is refused.
    #[serde(default)]
    pub canary: bool,
}

/// One stored key: its hash and optional expiry. A consumer holds at most two (rotation overlap).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    pub hash: KeyHash,
    #[serde(default = "default_key_env")]
    pub env: KeyEnv,
    #[serde(default, with = "rfc3339_opt")]
    pub expires: Option<SystemTime>,
}

fn default_key_env() -> KeyEnv {
    KeyEnv::Live
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScopeConfig {
    /// `METHOD /path` patterns; `*` matches one segment, a trailing `**` any rest.
    pub routes: Vec<RoutePattern>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkConfig {
    /// Use the first `x-forwarded-for` address as the client address. Only behind a trusted proxy.
    #[serde(default)]
    pub trust_forwarded_for: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReloadConfig {
    /// How often the config and secrets files are checked for changes; SIGHUP reloads at once.
    #[serde(default = "default_watch_interval", with = "duration")]
    pub watch_interval: std::time::Duration,
}

impl Default for ReloadConfig {
    fn default() -> Self {
        ReloadConfig {
            watch_interval: default_watch_interval(),
        }
    }
}

fn default_watch_interval() -> std::time::Duration {
    std::time::Duration::from_secs(2)
}
