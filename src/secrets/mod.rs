//! Provider credentials: where they come from (`CredentialSource`) and the in-memory cache the
//! request path reads from without ever waiting.

pub mod cache;
pub mod file;
pub mod vault;

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use secrecy::SecretString;

pub use cache::CredentialCache;
pub use file::FileSource;
pub use vault::VaultSource;

/// A provider API key plus when keygate obtained it. `Debug` never shows the key.
pub struct Credential {
    pub api_key: Arc<SecretString>,
    pub fetched_at: SystemTime,
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("api_key", &"[redacted]")
            .field("fetched_at", &self.fetched_at)
            .finish()
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
}

/// Somewhere provider keys live: a local file now, Vault KV v2 next.
#[async_trait::async_trait]
pub trait CredentialSource: Send + Sync + fmt::Debug {
    /// Loads the named credentials. Each reference succeeds or fails on its own.
    async fn load(
        &self,
        references: &[Arc<str>],
    ) -> Vec<(Arc<str>, Result<Credential, SecretError>)>;
}
