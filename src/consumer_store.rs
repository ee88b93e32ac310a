//! Consumers kept in Vault KV v2, one entry per consumer under a path: the entry name is the
//! consumer name and its data is the consumer without `name`. Every replica polls cheaply
//! (a list plus one metadata read per entry) and reads an entry's data only when its version
//! changed, so a new, suspended or deleted consumer takes effect within one poll.

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;
use tokio::sync::Mutex;

use crate::config::{
    validate_consumer, validate_consumers, ConsumerConfig, ProviderConfig, VaultConsumers,
};
use crate::vault::{kv, VaultError, VaultSession};

/// An entry's version and its parsed consumer, or why it was refused.
type Seen = (u64, Result<ConsumerConfig, String>);

#[derive(Debug)]
pub struct VaultConsumerStore {
    session: VaultSession,
    mount: String,
    path: String,
    /// name → (version, parsed consumer or why it was refused).
    seen: Mutex<HashMap<String, Seen>>,
}

/// One poll's result.
#[derive(Debug)]
pub struct Poll {
    pub consumers: Vec<ConsumerConfig>,
    /// False when nothing changed since the previous poll (no registry swap needed).
    pub changed: bool,
}

impl VaultConsumerStore {
    pub fn new(
        store: &VaultConsumers,
        connection: &crate::config::VaultConnection,
    ) -> Result<Self, VaultError> {
        Ok(VaultConsumerStore {
            session: VaultSession::new(connection)?,
            mount: store.mount.clone(),
            path: store.path.trim_matches('/').to_string(),
            seen: Mutex::new(HashMap::new()),
        })
    }

    /// Lists the store and re-reads entries whose version changed. A consumer entry that does
    /// not validate is left out (its keys stop working) and logged; a failing Vault call fails
    /// the whole poll so the caller keeps its current registry.
    pub async fn poll(
        &self,
        providers: &BTreeMap<String, ProviderConfig>,
    ) -> Result<Poll, VaultError> {
        let names: Vec<String> = kv::list(&self.session, &self.mount, &self.path)
            .await?
            .into_iter()
            .filter(|n| !n.ends_with('/'))
            .collect();
        let mut seen = self.seen.lock().await;
        let mut changed = seen.len() != names.len() || names.iter().any(|n| !seen.contains_key(n));
        let mut next = HashMap::with_capacity(names.len());
        for name in names {
            let entry_path = format!("{}/{name}", self.path);
            let version = kv::current_version(&self.session, &self.mount, &entry_path).await?;
            let entry = match seen.remove(&name) {
                Some((v, parsed)) if v == version => (v, parsed),
                _ => {
                    changed = true;
                    let data = kv::read(&self.session, &self.mount, &entry_path).await?;
                    let parsed = parse_entry(&name, data, providers);
                    if let Err(e) = &parsed {
                        tracing::error!(consumer = %name, path = %entry_path, error = %e, "consumer entry refused");
                    }
                    (version, parsed)
                }
            };
            next.insert(name, entry);
        }
        *seen = next;
        let mut consumers: Vec<ConsumerConfig> = seen
            .values()
            .filter_map(|(_, c)| c.as_ref().ok().cloned())
            .collect();
        consumers.sort_by(|a, b| a.name.cmp(&b.name));
        validate_consumers(&consumers, providers, |i| {
            format!("consumer {:?}", consumers[i].name)
        })
        .map_err(|(field, reason)| VaultError::Format {
            operation: "list",
            path: self.path.clone(),
            reason: format!("{field}: {reason}"),
        })?;
        Ok(Poll { consumers, changed })
    }
}

/// Turns a stored entry into a consumer, with field-path errors.
pub fn parse_entry(
    name: &str,
    mut data: Value,
    providers: &BTreeMap<String, ProviderConfig>,
) -> Result<ConsumerConfig, String> {
    let Value::Object(map) = &mut data else {
        return Err("the entry is not a JSON object".into());
    };
    if map.contains_key("name") {
        return Err("name: leave it out; the entry name is the consumer name".into());
    }
    map.insert("name".into(), Value::String(name.to_string()));
    let consumer: ConsumerConfig = serde_path_to_error::deserialize(data).map_err(|e| {
        let at = e.path().to_string();
        format!("{at}: {}", e.into_inner())
    })?;
    validate_consumer(&consumer, providers)
        .map_err(|(field, message)| format!("{}: {message}", field.trim_start_matches('.')))?;
    Ok(consumer)
}
