//! Writes to the Vault consumer store from the CLI: new keys (`keys create --store vault`) and
//! the durable side of `suspend`, `resume` and `revoke`. The CLI writes with the operator's
//! Vault identity, so the keygate replicas themselves only ever need read access.

use std::path::Path;

use anyhow::{bail, Context};
use serde_json::{json, Value};

use super::key_record::{CreateArgs, KeyRecord};
use crate::auth::KeyHash;
use crate::config::{self, Config, ConsumerStatus, ConsumersConfig};
use crate::consumer_store::parse_entry;
use crate::vault::{kv, VaultError, VaultSession};

/// Check-and-set attempts before giving up on a store that keeps changing under us.
const CAS_ATTEMPTS: usize = 3;

/// The consumer store a keygate config names, opened for writing.
struct Store {
    config: Config,
    mount: String,
    base: String,
    session: VaultSession,
}

impl Store {
    /// None when the config keeps its consumers inline (the file store).
    fn open(config_path: &Path) -> anyhow::Result<Option<Store>> {
        let config = config::load(config_path)?;
        let ConsumersConfig::Vault(store) = &config.consumers else {
            return Ok(None);
        };
        let (mount, base) = (
            store.mount.clone(),
            store.path.trim_matches('/').to_string(),
        );
        let connection = config
            .consumer_vault()
            .context("no vault connection for the consumer store")?;
        let session = VaultSession::new(connection)?;
        Ok(Some(Store {
            config,
            mount,
            base,
            session,
        }))
    }

    fn entry_path(&self, consumer: &str) -> String {
        format!("{}/{consumer}", self.base)
    }

    /// Reads an entry with its version (None when absent), for a check-and-set write.
    async fn read(&self, consumer: &str) -> Result<Option<(Value, u64)>, VaultError> {
        let path = self.entry_path(consumer);
        let version = match kv::current_version(&self.session, &self.mount, &path).await {
            Ok(v) => v,
            Err(VaultError::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        // Read after the version: a write in between makes the check-and-set fail, not lose data.
        let entry = kv::read(&self.session, &self.mount, &path).await?;
        Ok(Some((entry, version)))
    }

    /// Validates the entry as keygate will read it, then writes it only over `version`
    /// (0: only if absent). Returns the new version, or None when someone wrote first.
    async fn write(
        &self,
        consumer: &str,
        entry: &Value,
        version: u64,
    ) -> anyhow::Result<Option<u64>> {
        parse_entry(consumer, entry.clone(), &self.config.providers)
            .map_err(|e| anyhow::anyhow!("the consumer entry would be invalid: {e}"))?;
        let cas = u32::try_from(version).unwrap_or(u32::MAX);
        match kv::write(
            &self.session,
            &self.mount,
            &self.entry_path(consumer),
            entry,
            Some(cas),
        )
        .await
        {
            Ok(v) => Ok(Some(v)),
            Err(VaultError::Status { status: 400, .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    fn describe(&self, consumer: &str, version: u64) -> String {
        format!(
            "vault {}/{} (version {version})",
            self.mount,
            self.entry_path(consumer)
        )
    }
}

fn block_on<T>(f: impl std::future::Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(f)
}

/// Adds the key to the consumer's entry (creating the consumer from the policy flags when it
/// does not exist), with check-and-set so a concurrent writer is never overwritten.
/// Returns where it was written.
pub fn add_key(args: &CreateArgs, record: &KeyRecord) -> anyhow::Result<String> {
    let path = args
        .config
        .as_ref()
        .context("--store vault needs --config (or KEYGATE_CONFIG) naming the consumer store")?;
    let Some(store) = Store::open(path)? else {
        bail!(
            "{}: consumers are not in vault (set consumers: {{source: vault, path: …}})",
            path.display()
        );
    };
    block_on(async {
        for _ in 0..CAS_ATTEMPTS {
            let (mut entry, version) = match store.read(&args.consumer).await? {
                Some(found) => found,
                None => (new_consumer(args)?, 0),
            };
            let keys = entry
                .get_mut("keys")
                .and_then(Value::as_array_mut)
                .context("the stored consumer has no keys list")?;
            if keys.len() >= 2 {
                bail!(
                    "consumer {} already holds two keys (the rotation overlap); remove the older one first",
                    args.consumer
                );
            }
            keys.push(record.to_json());
            if let Some(written) = store.write(&args.consumer, &entry, version).await? {
                return Ok(store.describe(&args.consumer, written));
            }
        }
        bail!(
            "consumer {} kept changing in vault; try again",
            args.consumer
        )
    })
}

fn new_consumer(args: &CreateArgs) -> anyhow::Result<Value> {
    let (Some(provider), Some(environment)) = (&args.provider, &args.environment) else {
        bail!(
            "consumer {} is not in the store yet: give --provider, --environment and at least one --route",
            args.consumer
        );
    };
    if args.routes.is_empty() {
        bail!("a new consumer needs at least one --route (scope is deny by default)");
    }
    let mut entry = json!({
        "environment": environment,
        "provider": provider,
        "keys": [],
        "scope": {"routes": args.routes},
    });
    if let Some(team) = &args.team {
        entry["team"] = Value::String(team.clone());
    }
    Ok(entry)
}

/// What an admin command makes durable in the store.
pub enum Change<'a> {
    Status {
        consumer: &'a str,
        status: ConsumerStatus,
    },
    RevokeKey {
        key_id: &'a str,
    },
}

/// Makes an admin command durable in the Vault consumer store named by `config_path`.
/// Returns what was written, or None when the config keeps its consumers inline (then the
/// receiving replica's `admin.state_file` is the durable record).
pub fn persist(config_path: &Path, change: &Change<'_>) -> anyhow::Result<Option<String>> {
    let Some(store) = Store::open(config_path)? else {
        return Ok(None);
    };
    block_on(async {
        for _ in 0..CAS_ATTEMPTS {
            let (consumer, mut entry, version) = match change {
                Change::Status { consumer, .. } => {
                    let (entry, version) = store.read(consumer).await?.with_context(|| {
                        format!("consumer {consumer} is not in the vault store")
                    })?;
                    (consumer.to_string(), entry, version)
                }
                Change::RevokeKey { key_id } => find_key_holder(&store, key_id).await?,
            };
            let outcome = match change {
                Change::Status { status, .. } => set_status(&consumer, &mut entry, *status)?,
                Change::RevokeKey { key_id } => remove_key(&mut entry, key_id),
            };
            if !outcome {
                return Ok(Some(format!(
                    "{} already says so",
                    store.describe(&consumer, version)
                )));
            }
            if let Some(written) = store.write(&consumer, &entry, version).await? {
                return Ok(Some(store.describe(&consumer, written)));
            }
        }
        bail!("the vault consumer store kept changing; try again")
    })
}

/// Sets `status`; false when it already is. A revoked consumer is never made active again.
fn set_status(consumer: &str, entry: &mut Value, status: ConsumerStatus) -> anyhow::Result<bool> {
    let current = entry
        .get("status")
        .and_then(Value::as_str)
        .unwrap_or("active");
    if current == status.as_str() {
        return Ok(false);
    }
    if current == ConsumerStatus::Revoked.as_str() {
        bail!("consumer {consumer} is revoked in the store; revocation is final");
    }
    entry["status"] = Value::String(status.as_str().to_string());
    Ok(true)
}

/// Drops the key whose id is `key_id` from the entry; false when it holds no such key.
fn remove_key(entry: &mut Value, key_id: &str) -> bool {
    let Some(keys) = entry.get_mut("keys").and_then(Value::as_array_mut) else {
        return false;
    };
    let before = keys.len();
    keys.retain(|k| key_id_of(k).as_deref() != Some(key_id));
    keys.len() != before
}

fn key_id_of(key: &Value) -> Option<String> {
    let hash: KeyHash = key.get("hash")?.as_str()?.parse().ok()?;
    Some(hash.key_id().to_string())
}

/// The consumer entry holding the key with this id (a scan of the store: admin-time only).
async fn find_key_holder(store: &Store, key_id: &str) -> anyhow::Result<(String, Value, u64)> {
    for name in kv::list(&store.session, &store.mount, &store.base).await? {
        if name.ends_with('/') {
            continue;
        }
        let Some((entry, version)) = store.read(&name).await? else {
            continue;
        };
        let holds = entry
            .get("keys")
            .and_then(Value::as_array)
            .is_some_and(|keys| keys.iter().any(|k| key_id_of(k).as_deref() == Some(key_id)));
        if holds {
            return Ok((name, entry, version));
        }
    }
    bail!("no consumer in the vault store holds key {key_id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_changes_refuse_to_undo_a_revocation() {
        let mut entry = json!({"status": "suspended"});
        assert!(set_status("c", &mut entry, ConsumerStatus::Active).unwrap());
        assert_eq!(entry["status"], "active");
        assert!(!set_status("c", &mut entry, ConsumerStatus::Active).unwrap());
        let mut revoked = json!({"status": "revoked"});
        assert!(set_status("c", &mut revoked, ConsumerStatus::Active).is_err());
        assert_eq!(revoked["status"], "revoked");
    }

    #[test]
    fn revoking_a_key_removes_only_that_key() {
        let (a, b) = (KeyHash::of("kg_live_a"), KeyHash::of("kg_live_b"));
        let mut entry = json!({"keys": [{"hash": a.to_string()}, {"hash": b.to_string()}]});
        assert!(remove_key(&mut entry, &a.key_id().to_string()));
        assert_eq!(entry["keys"].as_array().unwrap().len(), 1);
        assert_eq!(entry["keys"][0]["hash"], b.to_string());
        assert!(!remove_key(&mut entry, &a.key_id().to_string()));
    }
}
