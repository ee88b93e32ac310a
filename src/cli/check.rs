//! `keygate check`: everything `serve` would load, without listening. The config's own files
//! (TLS certificates) are checked before the credentials, so an unreachable Vault does not
//! hide a bad certificate path.

use std::path::Path;

use std::collections::BTreeMap;

use crate::auth::Registry;
use crate::config::Config;
use crate::providers::ProviderKind;
use crate::secrets::CredentialCache;
use crate::usage::PriceTable;

pub fn run(path: &Path) -> anyhow::Result<()> {
    let config = crate::config::load(path)?;
    check_listeners(&config)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let cache = CredentialCache::new();
    let prepared = runtime.block_on(crate::reload::prepare(path, &cache, false))?;
    let (config, registry) = (prepared.config, prepared.registry);
    let unreferenced = unreferenced_credentials(&config, &registry);
    println!(
        "{}: ok ({} providers, {} consumers, {} credentials)",
        path.display(),
        config.providers.len(),
        registry.consumers().len(),
        registry.referenced_credentials().len()
    );
    for reference in unreferenced {
        println!("note: credential {reference:?} is configured but no consumer uses it");
    }
    for line in unpriced_notes(&config, &registry)? {
        println!("{line}");
    }
    Ok(())
}

/// Budgeted consumers may call models the price table does not list; say what those cost.
fn unpriced_notes(config: &Config, registry: &Registry) -> anyhow::Result<Vec<String>> {
    let prices = PriceTable::defaults().with_overrides(&config.usage.pricing)?;
    let mut budgeted: BTreeMap<&str, (ProviderKind, usize)> = BTreeMap::new();
    for consumer in registry.consumers() {
        if consumer.limits.budgeted() {
            let entry = budgeted
                .entry(&consumer.provider.name)
                .or_insert((consumer.provider.kind, 0));
            entry.1 += 1;
        }
    }
    let per_mtok = |micro: u64| micro as f64 / 1e6;
    Ok(budgeted
        .into_iter()
        .map(|(provider, (kind, n))| {
            let ceiling = prices.ceiling(kind);
            format!(
                "note: {n} consumer(s) of provider {provider:?} have a budget and may call models without a price: those are charged at the highest listed prices (${:.2} input, ${:.2} output per million tokens); add pricing entries for the models they use",
                per_mtok(ceiling.input.max(ceiling.cache_write)),
                per_mtok(ceiling.output)
            )
        })
        .collect())
}

/// The admin API's and the gRPC listener's TLS files, and a gRPC listener that would hand
/// provider keys to the network.
fn check_listeners(config: &Config) -> anyhow::Result<()> {
    crate::admin::bootstrap::admin_server(config)?;
    crate::admin::operators::Operators::load(
        &config.admin,
        crate::admin::bootstrap::admin_token(config),
    )?;
    if let Some(github) = &config.leaks.github {
        crate::admin::github_alerts::signing_keys(github)?;
    }
    match &config.listeners.grpc_tls {
        Some(tls) => {
            crate::tls::server_config(
                "listeners.grpc_tls",
                &tls.cert_file,
                &tls.key_file,
                Some(&tls.client_ca_file),
            )?;
        }
        None if !config.listeners.grpc.ip().is_loopback() => println!(
            "warning: listeners.grpc {} is reachable beyond loopback without listeners.grpc_tls: anyone who can reach it with a consumer key gets the provider key back",
            config.listeners.grpc
        ),
        None => {}
    }
    Ok(())
}

fn unreferenced_credentials(config: &Config, registry: &Registry) -> Vec<String> {
    let used = registry.referenced_credentials();
    config
        .providers
        .values()
        .flat_map(|p| p.credentials.values())
        .filter(|r| !used.iter().any(|u| &**u == r.as_str()))
        .cloned()
        .collect()
}
