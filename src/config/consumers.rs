//! Providers and consumers: who may call what, with which credential and key.

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde::Deserialize;

use super::limits::LimitSettings;
use crate::auth::hash::KeyHash;
use crate::auth::key::KeyEnv;
use crate::cidr::Cidr;
use crate::identity::IdentityPattern;
use crate::model_scope::ModelPattern;
use crate::providers::ProviderKind;
use crate::scope::RoutePattern;
use crate::serde_util::rfc3339_opt;

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
    /// What authenticates the consumer: its key (default), its workload identity, or both.
    #[serde(default)]
    pub authentication: Authentication,
    /// The workload identities (SPIFFE IDs or patterns) that authenticate it, or that its
    /// keys are bound to.
    #[serde(default)]
    pub identities: Vec<IdentityPattern>,
    /// The client addresses its requests may come from (CIDR ranges); empty: anywhere.
    #[serde(default)]
    pub allowed_sources: Vec<Cidr>,
    #[serde(default)]
    pub keys: Vec<KeyConfig>,
    pub scope: ScopeConfig,
    #[serde(default)]
    pub limits: LimitSettings,
    /// A tripwire: any use of this consumer's keys is a critical detection and is refused.
    #[serde(default)]
    pub canary: bool,
}

/// What authenticates a consumer's requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Authentication {
    /// A consumer key, from wherever it is presented.
    #[default]
    Key,
    /// The caller's verified workload identity alone: no key.
    Identity,
    /// A consumer key, presented from one of the consumer's identities.
    KeyAndIdentity,
}

impl Authentication {
    pub fn as_str(self) -> &'static str {
        match self {
            Authentication::Key => "key",
            Authentication::Identity => "identity",
            Authentication::KeyAndIdentity => "key_and_identity",
        }
    }
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
    /// Model names or patterns (`*` = any characters) the consumer may call; absent: any.
    #[serde(default)]
    pub models: Option<Vec<ModelPattern>>,
}
