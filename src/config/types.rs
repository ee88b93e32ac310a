//! The configuration schema's root, and the sections with no file of their own (listeners,
//! network, reload, usage, admin). Unknown fields are errors everywhere.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::consumers::{ConsumerConfig, ProviderConfig};
use super::limits::{LimitsConfig, TeamConfig};
use super::sources::{ConsumersConfig, CredentialsConfig, VaultConnection};
use crate::serde_util::duration;

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
    /// Where secret scanners report leaked keys (GitHub secret-scanning alerts).
    #[serde(default)]
    pub leaks: super::leaks::LeaksConfig,
    /// Provider credential rotation policies and the rotator's access.
    #[serde(default)]
    pub rotation: super::rotation::RotationConfig,
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
        if let Some(vault) = &mut self.rotation.vault {
            vault.resolve_paths(&resolve);
        }
        if let Some(uds) = &mut self.listeners.grpc_uds {
            resolve(uds);
        }
        if let Some(tls) = &mut self.listeners.grpc_tls {
            resolve(&mut tls.cert_file);
            resolve(&mut tls.key_file);
            resolve(&mut tls.client_ca_file);
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
        if let Some(file) = &mut self.admin.operators_file {
            resolve(file);
        }
        if let Some(github) = &mut self.leaks.github {
            for key in &mut github.public_keys {
                if let Some(file) = &mut key.key_file {
                    resolve(file);
                }
            }
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

impl Config {
    /// The Vault connection the rotator logs in with: `rotation.vault`, else the credentials'.
    pub fn rotator_vault(&self) -> Option<&VaultConnection> {
        match (&self.rotation.vault, &self.credentials) {
            (Some(v), _) => Some(v),
            (None, CredentialsConfig::Vault(v)) => Some(&v.vault),
            _ => None,
        }
    }

    /// Every credential reference a provider maps an environment to, with the provider's
    /// name and kind (the first provider naming it, by name).
    pub fn credential_references(
        &self,
    ) -> BTreeMap<String, (String, crate::providers::ProviderKind)> {
        let mut out = BTreeMap::new();
        for (name, provider) in &self.providers {
            for reference in provider.credentials.values() {
                out.entry(reference.clone())
                    .or_insert_with(|| (name.clone(), provider.kind));
            }
        }
        out
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
    /// Mutual TLS on the gRPC listener, for deployments where Envoy reaches keygate over a
    /// network: only a caller with a certificate from `client_ca_file` (Envoy) gets an answer,
    /// and every answer to an allowed request carries a provider key.
    #[serde(default)]
    pub grpc_tls: Option<GrpcTls>,
    #[serde(default = "default_admin")]
    pub admin: SocketAddr,
}

/// PEM files for the gRPC listener's mutual TLS, relative to this config file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrpcTls {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// The CA that signs Envoy's client certificate; required: a server-only TLS listener
    /// would still answer anyone.
    pub client_ca_file: PathBuf,
}

impl Default for Listeners {
    fn default() -> Self {
        Listeners {
            grpc: default_grpc(),
            grpc_uds: None,
            grpc_tls: None,
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
    /// Bound, in bytes, on the JSON response bodies keygate assembles at once to read their
    /// usage (default 128 MiB); a body past it is forwarded unread and charged the worst case.
    #[serde(default = "default_max_assembled")]
    pub max_assembled_bytes: u64,
}

impl Default for UsageConfig {
    fn default() -> Self {
        UsageConfig {
            include_usage: true,
            pricing: Vec::new(),
            ledger: default_ledger(),
            source_window: default_source_window(),
            max_assembled_bytes: default_max_assembled(),
        }
    }
}

fn default_max_assembled() -> u64 {
    128 * 1024 * 1024
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
    /// Operators with their own credentials and roles (applied on reload).
    #[serde(default)]
    pub operators: Vec<super::operators::OperatorConfig>,
    /// More operators, from a file of its own (`operators: [...]`), re-read on reload.
    #[serde(default)]
    pub operators_file: Option<PathBuf>,
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
            operators: Vec::new(),
            operators_file: None,
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

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkConfig {
    /// How many trusted proxies stand in front of Envoy (Envoy's `xff_num_trusted_hops`). The
    /// client address is then the entry that many places left of the rightmost one in
    /// `x-forwarded-for` (the rightmost is the peer Envoy appended); 0 (the default) uses the
    /// peer itself. Entries further left are written by the client and never trusted.
    #[serde(default)]
    pub xff_num_trusted_hops: u32,
    /// Older spelling of `xff_num_trusted_hops: 1`.
    #[serde(default)]
    pub trust_forwarded_for: bool,
    /// Envoy's limit on a request's headers (`max_request_headers_count`, 100 by default):
    /// a request that keygate's own headers would take past it gets a 431 from keygate
    /// instead of an empty error from Envoy.
    #[serde(default = "default_max_request_headers")]
    pub max_request_headers: usize,
    /// Take the caller's workload identity from `x-forwarded-client-cert` (its last element,
    /// which the nearest proxy appended) instead of Envoy's own TLS peer: only when a proxy
    /// that verifies client certificates (a mesh sidecar) is the only way in to Envoy.
    #[serde(default)]
    pub trust_forwarded_client_cert: bool,
}

fn default_max_request_headers() -> usize {
    100
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            xff_num_trusted_hops: 0,
            trust_forwarded_for: false,
            max_request_headers: default_max_request_headers(),
            trust_forwarded_client_cert: false,
        }
    }
}

impl NetworkConfig {
    /// The trusted hops in force, whichever way they were written.
    pub fn trusted_hops(&self) -> u32 {
        if self.xff_num_trusted_hops == 0 && self.trust_forwarded_for {
            1
        } else {
            self.xff_num_trusted_hops
        }
    }
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
