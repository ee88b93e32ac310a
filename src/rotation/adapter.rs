//! The seam between a rotation and a provider: one [`ProviderAdapter`] per provider, each in
//! its own file, registered in [`super::adapters`]. An adapter either mints keys through the
//! provider's admin API or accepts one the operator made (providers whose admin API cannot
//! create keys); it health-checks a key, finds a key's id, and revokes keys.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

use super::record::KeyRef;

/// The fields of the admin credential's KV entry (e.g. `api_key`, or `tenant_id`,
/// `client_id` and `client_secret`), each kept secret.
#[derive(Default)]
pub struct AdminSecret(pub BTreeMap<String, SecretString>);

impl fmt::Debug for AdminSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

impl AdminSecret {
    /// A field's value, or the error naming the missing field.
    pub fn field(&self, adapter: &'static str, name: &str) -> Result<&str, AdapterError> {
        self.0
            .get(name)
            .map(|s| s.expose_secret())
            .filter(|s| !s.trim().is_empty())
            .ok_or_else(|| AdapterError::Setting {
                adapter,
                name: format!("admin credential field {name}"),
                reason: "missing or empty".into(),
            })
    }
}

/// Everything an adapter is built from.
#[derive(Debug, Default)]
pub struct AdapterSettings {
    /// The credential reference being rotated (for names and messages).
    pub reference: String,
    /// The admin credential from Vault, if the policy names one.
    pub admin: Option<AdminSecret>,
    /// `rotation.credentials.<ref>.settings`.
    pub settings: BTreeMap<String, String>,
    /// The header and prefix the provider reads its key from (its `inject`).
    pub inject: (String, String),
    /// Bound on every call to the provider.
    pub timeout: Duration,
}

impl AdapterSettings {
    /// A setting, or the error naming it.
    pub fn required(&self, adapter: &'static str, name: &str) -> Result<String, AdapterError> {
        self.optional(name).ok_or_else(|| AdapterError::Setting {
            adapter,
            name: format!("settings.{name}"),
            reason: "required".into(),
        })
    }

    pub fn optional(&self, name: &str) -> Option<String> {
        self.settings
            .get(name)
            .map(|v| v.trim().trim_end_matches('/').to_string())
            .filter(|v| !v.is_empty())
    }

    pub fn admin(&self, adapter: &'static str) -> Result<&AdminSecret, AdapterError> {
        self.admin.as_ref().ok_or_else(|| AdapterError::Setting {
            adapter,
            name: "admin_credential".into(),
            reason: "this adapter needs the provider's admin credential".into(),
        })
    }
}

/// A freshly minted key and the provider's name for it.
pub struct Minted {
    pub key: SecretString,
    pub key_ref: KeyRef,
}

impl fmt::Debug for Minted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Minted")
            .field("key", &"[redacted]")
            .field("key_ref", &self.key_ref)
            .finish()
    }
}

/// What revoking did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revoked {
    /// The provider no longer accepts the key (or already did not).
    Done,
    /// The provider has no API for it: an operator must revoke it by hand.
    Manual,
}

/// Why a provider call failed. Carries the call and the status, never a key or a body.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AdapterError {
    #[error("{adapter}: {name}: {reason}")]
    Setting {
        adapter: &'static str,
        name: String,
        reason: String,
    },
    #[error("{adapter}: {call}: HTTP {status}")]
    Status {
        adapter: &'static str,
        call: String,
        status: u16,
    },
    #[error("{adapter}: {call}: {reason}")]
    Call {
        adapter: &'static str,
        call: String,
        reason: String,
    },
    #[error("{adapter}: {0}", adapter = .0)]
    Unsupported(&'static str),
}

/// One provider's key management.
#[async_trait::async_trait]
pub trait ProviderAdapter: Send + Sync + fmt::Debug {
    /// The adapter's name (`openai`, `azure_openai`, `anthropic`, `generic`).
    fn name(&self) -> &'static str;

    /// True when the adapter mints keys; false when the operator hands one in (accept mode).
    fn mints(&self) -> bool;

    /// The key a mint will (re)create, when the adapter knows before minting (Azure's
    /// unused slot); recorded first, so a run that dies mid-mint can be undone.
    fn planned(&self, _current: Option<&KeyRef>) -> Option<KeyRef> {
        None
    }

    /// Mints a key named `tag`; `current` is the key in use (Azure regenerates the other one).
    async fn mint(&self, tag: &str, current: Option<&KeyRef>) -> Result<Minted, AdapterError>;

    /// The provider's name for `key`, found through its admin API; None when it is not found
    /// or the provider cannot tell.
    async fn identify(&self, key: &SecretString) -> Result<Option<KeyRef>, AdapterError>;

    /// A cheap authenticated read with `key` (listing models).
    async fn health_check(&self, key: &SecretString) -> Result<(), AdapterError>;

    /// Revokes a key at the provider; `Done` also when it was already gone.
    async fn revoke(&self, key: &KeyRef) -> Result<Revoked, AdapterError>;

    /// Revokes every key minted under `tag` (a mint whose answer was lost); how many.
    async fn revoke_tagged(&self, tag: &str) -> Result<usize, AdapterError>;
}

/// Whether a provider's redacted form of a key (`sk-abc...wxyz`, `sk-ant-api03-R2D...igAA`)
/// matches `key`: the same head and tail.
pub fn hint_matches(hint: &str, key: &str) -> bool {
    let Some((head, tail)) = hint.split_once("...") else {
        return false;
    };
    !head.is_empty()
        && !tail.is_empty()
        && key.len() > head.len() + tail.len()
        && key.starts_with(head)
        && key.ends_with(tail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_match_head_and_tail_only() {
        assert!(hint_matches("sk-abc...wxyz", "sk-abcdefwxyz"));
        assert!(!hint_matches("sk-abc...wxyz", "sk-abcdefwxyZ"));
        assert!(
            !hint_matches("sk-abc...wxyz", "sk-abcwxyz"),
            "too short to hold both"
        );
        assert!(
            !hint_matches("sk-abcwxyz", "sk-abcwxyz"),
            "no ellipsis, no match"
        );
    }

    #[test]
    fn debug_never_shows_secrets() {
        let admin = AdminSecret(BTreeMap::from([(
            "api_key".to_string(),
            SecretString::from("sk-admin-secret"),
        )]));
        let minted = Minted {
            key: SecretString::from("sk-minted-secret"),
            key_ref: KeyRef {
                id: "key_1".into(),
                owner: None,
            },
        };
        let text = format!("{admin:?} {minted:?}");
        assert!(!text.contains("secret\""), "{text}");
        assert!(
            !text.contains("sk-admin") && !text.contains("sk-minted"),
            "{text}"
        );
    }
}
