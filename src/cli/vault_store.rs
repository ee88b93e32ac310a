//! Writing consumer keys to the Vault consumer store (`keygate keys create --store vault`).

use anyhow::{bail, Context};
use serde_json::{json, Value};

use super::keys::{CreateArgs, KeyRecord};
use crate::config::{self, ConsumersConfig};
use crate::consumer_store::parse_entry;
use crate::vault::{kv, VaultError, VaultSession};

/// Adds the key to the consumer's entry (creating the consumer from the policy flags when it
/// does not exist), with check-and-set so a concurrent writer is never overwritten.
/// Returns where it was written.
pub fn add_key(args: &CreateArgs, record: &KeyRecord) -> anyhow::Result<String> {
    let path = args
        .config
        .as_ref()
        .context("--store vault needs --config (or KEYGATE_CONFIG) naming the consumer store")?;
    let config = config::load(path)?;
    let ConsumersConfig::Vault(store) = &config.consumers else {
        bail!(
            "{}: consumers are not in vault (set consumers: {{source: vault, path: …}})",
            path.display()
        );
    };
    let connection = config
        .consumer_vault()
        .context("no vault connection for the consumer store")?;
    let entry_path = format!("{}/{}", store.path.trim_matches('/'), args.consumer);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let session = VaultSession::new(connection)?;
        let (mut entry, version) = match kv::current_version(&session, &store.mount, &entry_path).await {
            Ok(version) => (kv::read(&session, &store.mount, &entry_path).await?, Some(version)),
            Err(VaultError::NotFound { .. }) => (new_consumer(args)?, None),
            Err(e) => return Err(e.into()),
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
        parse_entry(&args.consumer, entry.clone(), &config.providers)
            .map_err(|e| anyhow::anyhow!("the consumer entry would be invalid: {e}"))?;
        let cas = version.map(|v| u32::try_from(v).unwrap_or(u32::MAX)).unwrap_or(0);
        let written = kv::write(&session, &store.mount, &entry_path, &entry, Some(cas)).await?;
        Ok(format!("vault {}/{} (version {written})", store.mount, entry_path))
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
