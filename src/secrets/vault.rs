//! The Vault KV v2 credential source: `<mount>/<path_template>` per reference, field `api_key`.
//! Any bad answer (403, 404, missing or non-string `api_key`, garbage, timeout) fails that
//! reference only; the cache then keeps serving the last good value up to `max_stale`. An
//! entry marked `revoked: true` without an `api_key` is a revocation tombstone. Rotation
//! records are read next to the credentials (`rotation.record_template`).

use std::sync::Arc;

use secrecy::SecretString;
use serde_json::Value;

use super::{Credential, CredentialSource, SecretError};
use crate::config::VaultCredentials;
use crate::rotation::record::RotationRecord;
use crate::vault::{kv, VaultError, VaultSession};

#[derive(Debug)]
pub struct VaultSource {
    session: Arc<VaultSession>,
    mount: String,
    path_template: String,
    record_template: String,
}

impl VaultSource {
    pub fn new(config: &VaultCredentials, record_template: &str) -> Result<Self, VaultError> {
        Ok(VaultSource {
            session: Arc::new(VaultSession::new(&config.vault)?),
            mount: config.mount.clone(),
            path_template: config.path_template.clone(),
            record_template: record_template.to_string(),
        })
    }

    /// The KV path (under the mount) that holds a reference's credential.
    pub fn path_for(&self, reference: &str) -> String {
        self.path_template.replace("{reference}", reference)
    }

    async fn load_one(&self, reference: &str) -> Result<Credential, SecretError> {
        let path = self.path_for(reference);
        let read = kv::read_version(&self.session, "read", &self.mount, &path, None)
            .await
            .map_err(|e| SecretError::Source {
                reference: reference.to_string(),
                reason: e.to_string(),
            })?;
        let bad = |reason: &str| SecretError::Source {
            reference: reference.to_string(),
            reason: format!("vault read {}/{path}: {reason}", self.mount),
        };
        let data = read.data;
        let revoked = data.get("revoked").and_then(Value::as_bool) == Some(true);
        let api_key = match data.get("api_key") {
            Some(Value::String(s)) if !s.trim().is_empty() => s.trim().to_string(),
            None | Some(Value::String(_)) if revoked => {
                return Err(SecretError::Revoked {
                    reference: reference.to_string(),
                })
            }
            Some(Value::String(_)) => return Err(bad("api_key is empty")),
            Some(_) => return Err(bad("api_key is not a string")),
            None => return Err(bad("the entry has no api_key field")),
        };
        let mut credential = Credential::new(SecretString::from(api_key));
        credential.version = Some(read.version);
        credential.written_at = read.created;
        if let Value::Object(fields) = &data {
            credential.meta = super::public_meta(
                fields
                    .iter()
                    .filter(|(k, _)| k.as_str() != "api_key")
                    .map(|(k, v)| (k.as_str(), super::scalar_text(v))),
            );
        }
        Ok(credential)
    }

    async fn record_of(&self, reference: &str) -> Result<Option<RotationRecord>, SecretError> {
        let path = self
            .record_template
            .replace("{path}", &self.path_for(reference));
        let fail = |reason: String| SecretError::Source {
            reference: reference.to_string(),
            reason,
        };
        match kv::read_version(&self.session, "read_record", &self.mount, &path, None).await {
            Ok(read) => serde_json::from_value(read.data)
                .map(Some)
                .map_err(|e| fail(format!("{}/{path}: not a rotation record: {e}", self.mount))),
            Err(VaultError::NotFound { .. }) => Ok(None),
            Err(e) => Err(fail(e.to_string())),
        }
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

    async fn records(
        &self,
        references: &[Arc<str>],
    ) -> Vec<(Arc<str>, Result<Option<RotationRecord>, SecretError>)> {
        let mut out = Vec::with_capacity(references.len());
        for reference in references {
            out.push((reference.clone(), self.record_of(reference).await));
        }
        out
    }

    fn location(&self, reference: &str) -> String {
        format!("vault {}/{}", self.mount, self.path_for(reference))
    }
}
