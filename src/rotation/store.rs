//! The rotator's Vault side: the credential's KV versions (read, and write a new one with
//! check-and-set), its rotation record next to it (check-and-set on every step: one writer
//! wins), and the provider admin credential under its own path.

use std::sync::Arc;
use std::time::SystemTime;

use secrecy::SecretString;
use serde_json::{Map, Value};

use super::adapter::AdminSecret;
use super::record::RotationRecord;
use crate::vault::{kv, VaultError, VaultSession};

/// Why the store could not do what the rotation asked.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Vault(#[from] VaultError),
    /// Someone else wrote first (check-and-set).
    #[error("{path}: changed by someone else meanwhile (check-and-set)")]
    Conflict { path: String },
    #[error("{path}: {reason}")]
    Format { path: String, reason: String },
}

/// A credential version as the rotator sees it.
pub struct Version {
    pub version: u64,
    /// None: the version is a revocation tombstone (no `api_key`).
    pub key: Option<SecretString>,
    /// Every field but `api_key`.
    pub meta: Map<String, Value>,
    pub created: Option<SystemTime>,
}

impl std::fmt::Debug for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Version")
            .field("version", &self.version)
            .field("key", &self.key.as_ref().map(|_| "[redacted]"))
            .field("meta", &self.meta.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// One credential's KV entry and rotation record.
#[derive(Debug, Clone)]
pub struct VaultStore {
    session: Arc<VaultSession>,
    mount: String,
    path: String,
    record_path: String,
}

impl VaultStore {
    pub fn new(session: Arc<VaultSession>, mount: &str, path: &str, record_path: &str) -> Self {
        VaultStore {
            session,
            mount: mount.to_string(),
            path: path.to_string(),
            record_path: record_path.to_string(),
        }
    }

    /// `mount/path` of the credential, for messages.
    pub fn shown(&self) -> String {
        format!("{}/{}", self.mount, self.path)
    }

    /// The current version, or the one numbered `version`.
    pub async fn version(&self, version: Option<u64>) -> Result<Version, StoreError> {
        let read =
            kv::read_version(&self.session, "read", &self.mount, &self.path, version).await?;
        let Value::Object(mut meta) = read.data else {
            return Err(self.format("the entry is not a JSON object"));
        };
        let key = match meta.remove("api_key") {
            Some(Value::String(k)) if !k.trim().is_empty() => {
                Some(SecretString::from(k.trim().to_string()))
            }
            Some(Value::String(_)) | None => None,
            Some(_) => return Err(self.format("api_key is not a string")),
        };
        Ok(Version {
            version: read.version,
            key,
            meta,
            created: read.created,
        })
    }

    /// Writes `meta` plus `api_key` (or a tombstone without one) as a new version, only if
    /// version `cas` is still current; returns the new version number.
    pub async fn write(
        &self,
        key: Option<&SecretString>,
        mut meta: Map<String, Value>,
        cas: u64,
    ) -> Result<u64, StoreError> {
        if let Some(key) = key {
            use secrecy::ExposeSecret;
            meta.insert(
                "api_key".into(),
                Value::String(key.expose_secret().to_string()),
            );
        }
        let cas = u32::try_from(cas).map_err(|_| self.format("version number out of range"))?;
        kv::write(
            &self.session,
            &self.mount,
            &self.path,
            &Value::Object(meta),
            Some(cas),
        )
        .await
        .map_err(|e| conflict(e, &self.path))
    }

    /// The rotation record and the version to check-and-set against (0: none yet).
    pub async fn record(&self) -> Result<(RotationRecord, u64), StoreError> {
        match kv::read_version(
            &self.session,
            "read_record",
            &self.mount,
            &self.record_path,
            None,
        )
        .await
        {
            Ok(read) => serde_json::from_value(read.data)
                .map(|r| (r, read.version))
                .map_err(|e| StoreError::Format {
                    path: self.record_path.clone(),
                    reason: format!("not a rotation record: {e}"),
                }),
            Err(VaultError::NotFound { .. }) => Ok((RotationRecord::default(), 0)),
            Err(e) => Err(e.into()),
        }
    }

    /// Saves the record if it is still at version `cas`; returns its new version.
    pub async fn save(&self, record: &RotationRecord, cas: u64) -> Result<u64, StoreError> {
        let data = serde_json::to_value(record).map_err(|e| StoreError::Format {
            path: self.record_path.clone(),
            reason: e.to_string(),
        })?;
        let cas = u32::try_from(cas).map_err(|_| self.format("version number out of range"))?;
        kv::write(
            &self.session,
            &self.mount,
            &self.record_path,
            &data,
            Some(cas),
        )
        .await
        .map_err(|e| conflict(e, &self.record_path))
    }

    /// The admin credential at `path` (every string field, kept secret).
    pub async fn admin_secret(&self, path: &str) -> Result<AdminSecret, StoreError> {
        let data = kv::read(&self.session, &self.mount, path).await?;
        let Value::Object(fields) = data else {
            return Err(StoreError::Format {
                path: path.to_string(),
                reason: "the admin credential is not a JSON object".into(),
            });
        };
        Ok(AdminSecret(
            fields
                .into_iter()
                .filter_map(|(k, v)| match v {
                    Value::String(s) => Some((k, SecretString::from(s))),
                    _ => None,
                })
                .collect(),
        ))
    }

    fn format(&self, reason: &str) -> StoreError {
        StoreError::Format {
            path: self.shown(),
            reason: reason.into(),
        }
    }
}

/// Vault answers a failed check-and-set with 400.
fn conflict(e: VaultError, path: &str) -> StoreError {
    match e {
        VaultError::Status { status: 400, .. } => StoreError::Conflict {
            path: path.to_string(),
        },
        e => StoreError::Vault(e),
    }
}
