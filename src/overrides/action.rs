//! One operator action on the overrides: what the admin API, the CLI, the detectors and the
//! replicas' broadcast all speak.

use serde::{Deserialize, Serialize};

use crate::auth::key_id::KeyId;
use crate::secrets::fingerprint::Fingerprint;

/// Suspend, resume or revoke a consumer, revoke one key, or revoke a provider credential's
/// key (emergency: its consumers get 503 `credential_revoked` while it is the one served).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Action {
    Suspend {
        consumer: String,
    },
    Resume {
        consumer: String,
    },
    RevokeConsumer {
        consumer: String,
    },
    RevokeKey {
        key_id: KeyId,
    },
    RevokeCredential {
        credential: String,
        fingerprint: Fingerprint,
    },
}

impl Action {
    pub fn name(&self) -> &'static str {
        match self {
            Action::Suspend { .. } => "suspend",
            Action::Resume { .. } => "resume",
            Action::RevokeConsumer { .. } => "revoke_consumer",
            Action::RevokeKey { .. } => "revoke_key",
            Action::RevokeCredential { .. } => "revoke_credential",
        }
    }

    /// The consumer the action names, if it names one.
    pub fn consumer(&self) -> Option<&str> {
        match self {
            Action::Suspend { consumer }
            | Action::Resume { consumer }
            | Action::RevokeConsumer { consumer } => Some(consumer),
            Action::RevokeKey { .. } | Action::RevokeCredential { .. } => None,
        }
    }

    /// The consumer name or key id acted on, for logs.
    pub fn target(&self) -> String {
        match self {
            Action::RevokeKey { key_id } => key_id.to_string(),
            Action::RevokeCredential {
                credential,
                fingerprint,
            } => format!("{credential} {fingerprint}"),
            other => other.consumer().unwrap_or_default().to_string(),
        }
    }
}
