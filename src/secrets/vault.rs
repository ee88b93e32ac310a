//! The Vault KV v2 credential source: `<mount>/<path_template>` per reference, field `api_key`.
//! Any bad answer (403, 404, missing or non-string `api_key`, garbage, timeout) fails that
//! reference only; the cache then keeps serving the last good value up to `max_stale`.

use std::sync::Arc;
use std::time::SystemTime;

use secrecy::SecretString;
use serde_json::Value;

use super::{Credential, CredentialSource, SecretError};
use crate::config::VaultCredentials;
use crate::vault::{kv, VaultError, VaultSession};

#[derive(Debug)]
pub struct VaultSource {
    session: Arc<VaultSession>,
    mount: String,
    path_template: String,
}

impl VaultSource {
    pub fn new(config: &VaultCredentials) -> Result<Self, VaultError> {
        Ok(VaultSource {
            session: Arc::new(VaultSession::new(&config.vault)?),
            mount: config.mount.clone(),
            path_template: config.path_template.clone(),
        })
    }

    /// The KV path (under the mount) that holds a reference's credential.
    pub fn path_for(&self, reference: &str) -> String {
        self.path_template.replace("{reference}", reference)
    }

    async fn load_one(&self, reference: &str) -> Result<Credential, SecretError> {
        let path = self.path_for(reference);
        let data = kv::read(&self.session, &self.mount, &path)
            .await
            .map_err(|e| SecretError::Source {
                reference: reference.to_string(),
                reason: e.to_string(),
            })?;
        let bad = |reason: &str| SecretError::Source {
            reference: reference.to_string(),
            reason: format!("vault read {}/{path}: {reason}", self.mount),
        };
        let api_key = match data.get("api_key") {
            Some(Value::String(s)) if !s.trim().is_empty() => s.trim().to_string(),
            Some(Value::String(_)) => return Err(bad("api_key is empty")),
            Some(_) => return Err(bad("api_key is not a string")),
            None => return Err(bad("the entry has no api_key field")),
        };
        Ok(Credential {
            api_key: Arc::new(SecretString::from(api_key)),
            fetched_at: SystemTime::now(),
        })
    }
}

#[async_trait::async_trait]
impl CredentialSource for VaultSource {
    async fn load(
        &self,
        references: &[Arc<str>],
    ) -> Vec<(Arc<str>, Result<Credential, SecretError>)> {
        let mut out = Vec::with_capacity(references.len());
        for reference in references {
            out.push((reference.clone(), self.load_one(reference).await));
        }
        out
    }
}
