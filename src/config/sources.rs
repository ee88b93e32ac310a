//! Where credentials and consumers come from: a file, or Vault (connection and login).

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::consumers::ConsumerConfig;
use crate::serde_util::duration;

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
    pub(super) fn resolve_paths(&mut self, resolve: &impl Fn(&mut PathBuf)) {
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
