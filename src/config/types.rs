//! The configuration schema. Unknown fields are errors everywhere.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::Deserialize;

use crate::auth::{KeyEnv, KeyHash};
use crate::providers::ProviderKind;
use crate::scope::RoutePattern;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub listeners: Listeners,
    pub credentials: CredentialsConfig,
    pub providers: BTreeMap<String, ProviderConfig>,
    #[serde(default)]
    pub consumers: Vec<ConsumerConfig>,
    #[serde(default)]
    pub network: NetworkConfig,
    #[serde(default)]
    pub reload: ReloadConfig,
}

impl Config {
    pub(crate) fn resolve_paths(&mut self, base: &Path) {
        let CredentialsConfig::File { path } = &mut self.credentials;
        if path.is_relative() {
            *path = base.join(&*path);
        }
        if let Some(uds) = &mut self.listeners.grpc_uds {
            if uds.is_relative() {
                *uds = base.join(&*uds);
            }
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
    #[serde(default = "default_watch_interval", with = "humantime_serde_compat")]
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

mod rfc3339_opt {
    use serde::Deserialize;
    use std::time::SystemTime;

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<Option<SystemTime>, D::Error> {
        let Some(text) = Option::<String>::deserialize(d)? else {
            return Ok(None);
        };
        humantime::parse_rfc3339_weak(&text).map(Some).map_err(|e| {
            serde::de::Error::custom(format!(
                "invalid timestamp {text:?} ({e}); use RFC 3339 like 2027-01-31T00:00:00Z"
            ))
        })
    }
}

mod humantime_serde_compat {
    use serde::Deserialize;
    use std::time::Duration;

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(|e| {
            serde::de::Error::custom(format!(
                "invalid duration {text:?} ({e}); use e.g. 2s, 500ms, 1m"
            ))
        })
    }
}
