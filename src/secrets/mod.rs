//! Provider credentials: where they come from (`CredentialSource`) and the in-memory cache the
//! request path reads from without ever waiting.

pub mod cache;
pub mod file;
pub mod fingerprint;
pub mod inventory;
pub mod vault;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use secrecy::{ExposeSecret, SecretString};

pub use cache::CredentialCache;
pub use file::FileSource;
pub use fingerprint::Fingerprint;
pub use vault::VaultSource;

use crate::notify::redact::redact;
use crate::rotation::record::RotationRecord;

/// A provider API key plus when keygate obtained it, its fingerprint, and what the source
/// says about it. `Debug` never shows the key.
pub struct Credential {
    pub api_key: Arc<SecretString>,
    pub fetched_at: SystemTime,
    /// The key's non-secret name (revocations and the inventory use it).
    pub fingerprint: Fingerprint,
    /// The KV version (Vault); None for the file source.
    pub version: Option<u64>,
    /// When the source's current value was written (the KV version's time), if it knows.
    pub written_at: Option<SystemTime>,
    /// The entry's other fields that are safe to show (owner, rotated_at, key_id, …).
    pub meta: BTreeMap<String, String>,
}

impl Credential {
    /// A credential for `api_key`, fetched now.
    pub fn new(api_key: SecretString) -> Self {
        Credential {
            fingerprint: Fingerprint::of(api_key.expose_secret()),
            api_key: Arc::new(api_key),
            fetched_at: SystemTime::now(),
            version: None,
            written_at: None,
            meta: BTreeMap::new(),
        }
    }

    /// When the key became current: the entry's `rotated_at`, else when it was written.
    pub fn rotated_at(&self) -> Option<SystemTime> {
        self.meta
            .get("rotated_at")
            .and_then(|t| humantime::parse_rfc3339_weak(t).ok())
            .or(self.written_at)
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("api_key", &"[redacted]")
            .field("fingerprint", &self.fingerprint)
            .field("version", &self.version)
            .field("fetched_at", &self.fetched_at)
            .finish()
    }
}

/// The fields of a credential entry that may be shown (inventory, admin API): scalars other
/// than `api_key` whose names do not look like secrets, redacted and cut short.
pub fn public_meta<'a>(
    fields: impl Iterator<Item = (&'a str, Option<String>)>,
) -> BTreeMap<String, String> {
    let secret_name = |name: &str| {
        let n = name.to_ascii_lowercase();
        let keyish = n.contains("key") && n != "key_id" && n != "key_owner";
        keyish
            || ["secret", "token", "password", "private", "credential"]
                .iter()
                .any(|w| n.contains(w))
    };
    fields
        .filter(|(name, _)| !secret_name(name) && name.len() <= 64)
        .filter_map(|(name, value)| {
            Some((
                name.to_string(),
                redact(&value?).chars().take(256).collect(),
            ))
        })
        .collect()
}

/// A JSON or YAML scalar as text; None for anything else.
pub fn scalar_text(value: &serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Why a credential could not be loaded. Carries the reference, never the secret.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SecretError {
    #[error("{path}: cannot read secrets file: {reason}")]
    Io { path: String, reason: String },
    #[error("{path}: {reason}")]
    Format { path: String, reason: String },
    #[error("credential {reference:?} is not in the credential source")]
    Missing { reference: String },
    #[error("credential {reference:?} has an empty api_key")]
    Empty { reference: String },
    #[error("credential {reference:?}: {reason}")]
    Source { reference: String, reason: String },
    /// The source holds a revocation tombstone (an emergency revocation without a
    /// replacement): its consumers get 503 `credential_revoked` until a new key is stored.
    #[error(
        "credential {reference:?} was revoked; store a new key (keygate rotate) to serve it again"
    )]
    Revoked { reference: String },
}

/// Somewhere provider keys live: a local file now, Vault KV v2 next.
#[async_trait::async_trait]
pub trait CredentialSource: Send + Sync + fmt::Debug {
    /// Loads the named credentials. Each reference succeeds or fails on its own.
    async fn load(
        &self,
        references: &[Arc<str>],
    ) -> Vec<(Arc<str>, Result<Credential, SecretError>)>;

    /// The rotation records of `references` (None where there is none). Only Vault keeps
    /// records; other sources have none.
    async fn records(
        &self,
        _references: &[Arc<str>],
    ) -> Vec<(Arc<str>, Result<Option<RotationRecord>, SecretError>)> {
        Vec::new()
    }

    /// Where a reference's credential lives, for the inventory (`file path`, `vault mount/path`).
    fn location(&self, reference: &str) -> String;
}
