//! KV v2 operations keygate needs, each counted and bounded by the session's timeout.

use serde_json::Value;
use vaultrs::api::kv2::requests::SetSecretRequestOptions;
use vaultrs::kv2;

use super::{VaultError, VaultSession};

/// Reads the latest version's data as JSON.
pub async fn read(session: &VaultSession, mount: &str, path: &str) -> Result<Value, VaultError> {
    session
        .call("read", path, async |c| {
            kv2::read::<Value>(c, mount, path).await
        })
        .await
}

/// The entry names directly under `path` (a trailing `/` marks a folder).
pub async fn list(
    session: &VaultSession,
    mount: &str,
    path: &str,
) -> Result<Vec<String>, VaultError> {
    match session
        .call("list", path, async |c| kv2::list(c, mount, path).await)
        .await
    {
        Err(VaultError::NotFound { .. }) => Ok(Vec::new()),
        other => other,
    }
}

/// The current version number of an entry (cheap change detection).
pub async fn current_version(
    session: &VaultSession,
    mount: &str,
    path: &str,
) -> Result<u64, VaultError> {
    session
        .call("metadata", path, async |c| {
            kv2::read_metadata(c, mount, path).await
        })
        .await
        .map(|m| m.current_version)
}

/// Writes a new version; with `cas`, only if the current version is still `cas`.
pub async fn write(
    session: &VaultSession,
    mount: &str,
    path: &str,
    data: &Value,
    cas: Option<u32>,
) -> Result<u64, VaultError> {
    session
        .call("write", path, async |c| match cas {
            Some(cas) => {
                kv2::set_with_options(c, mount, path, data, SetSecretRequestOptions { cas }).await
            }
            None => kv2::set(c, mount, path, data).await,
        })
        .await
        .map(|m| m.version)
}

/// Deletes an entry and all its versions.
pub async fn delete(session: &VaultSession, mount: &str, path: &str) -> Result<(), VaultError> {
    session
        .call("delete", path, async |c| {
            kv2::delete_metadata(c, mount, path).await
        })
        .await
}

/// One KV v2 version: its data, its number and when it was written.
#[derive(Debug)]
pub struct Version {
    pub data: Value,
    pub version: u64,
    pub created: Option<std::time::SystemTime>,
}

/// Reads a version (the latest when `version` is None) with its metadata; `operation` labels
/// the call in `keygate_vault_requests_total`.
pub async fn read_version(
    session: &VaultSession,
    operation: &'static str,
    mount: &str,
    path: &str,
    version: Option<u64>,
) -> Result<Version, VaultError> {
    let endpoint = vaultrs::api::kv2::requests::ReadSecretRequest::builder()
        .mount(mount)
        .path(path)
        .version(version)
        .build()
        .map_err(|e| VaultError::Config(format!("read {path}: {e}")))?;
    let answer = session
        .call(operation, path, async |c| {
            vaultrs::api::exec_with_result(c, endpoint).await
        })
        .await?;
    Ok(Version {
        data: answer.data,
        version: answer.metadata.version,
        created: humantime::parse_rfc3339_weak(&answer.metadata.created_time).ok(),
    })
}
