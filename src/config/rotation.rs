//! The `rotation:` section: which provider credentials keygate rotates, how often, how long
//! the old key lives on after a switch, and how the rotator reaches each provider's admin API.
//!
//! ```yaml
//! rotation:
//!   lease: 2m                      # a rotation that makes no progress this long may be taken over
//!   vault:                         # the rotator's own Vault login (write on the credentials,
//!     address: https://vault:8200  #   read on the admin credentials); default: credentials.vault
//!     auth: {method: kubernetes, role: keygate-rotator}
//!   credentials:
//!     openai/production:
//!       every: 30d                 # `keygate rotate --due` rotates it once this old
//!       grace: 24h                 # the old key is revoked at the provider this long after the switch
//!       admin_credential: ai-providers-admin/openai   # KV path (credentials.mount) of the admin key
//!       settings: {project: proj_abc}                 # what the provider's adapter needs
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::sources::VaultConnection;
use crate::serde_util::{duration, duration_opt};

/// Rotation of provider credentials (`keygate rotate`, `keygate credentials`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RotationConfig {
    /// How long a rotation may go without progress before another run may take it over.
    #[serde(default = "default_lease", with = "duration")]
    pub lease: Duration,
    /// The rotator's Vault connection; the credentials' one when absent.
    #[serde(default)]
    pub vault: Option<VaultConnection>,
    /// The KV path of a credential's rotation record: `{path}` is the credential's own path.
    #[serde(default = "default_record_template")]
    pub record_template: String,
    /// credential reference → its rotation policy.
    #[serde(default)]
    pub credentials: BTreeMap<String, CredentialRotation>,
}

impl Default for RotationConfig {
    fn default() -> Self {
        RotationConfig {
            lease: default_lease(),
            vault: None,
            record_template: default_record_template(),
            credentials: BTreeMap::new(),
        }
    }
}

/// One credential's rotation policy and provider access.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialRotation {
    /// Rotate once the key is this old (`keygate rotate --due`); none: only on demand.
    #[serde(default, with = "duration_opt")]
    pub every: Option<Duration>,
    /// How long the old key keeps working at the provider after every replica switched.
    #[serde(default = "default_grace", with = "duration")]
    pub grace: Duration,
    /// The provider adapter (`openai`, `azure_openai`, `anthropic`, `generic`); default: the
    /// kind of the provider that uses this credential.
    #[serde(default)]
    pub adapter: Option<String>,
    /// KV path (under the credentials' mount) of the provider admin credential.
    #[serde(default)]
    pub admin_credential: Option<String>,
    /// Adapter settings (e.g. `project`, `api_base`, `subscription`); each adapter documents
    /// and checks its own.
    #[serde(default)]
    pub settings: BTreeMap<String, String>,
}

fn default_lease() -> Duration {
    Duration::from_secs(120)
}
fn default_grace() -> Duration {
    Duration::from_secs(24 * 3600)
}
fn default_record_template() -> String {
    "{path}.rotation".into()
}

impl RotationConfig {
    /// The policy for a credential reference, if it has one.
    pub fn policy(&self, reference: &str) -> Option<&CredentialRotation> {
        self.credentials.get(reference)
    }

    /// The record path for a credential stored at `path`.
    pub fn record_path(&self, path: &str) -> String {
        self.record_template.replace("{path}", path)
    }
}
