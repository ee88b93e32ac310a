//! `keygate check`: everything `serve` would load, without listening.

use std::path::Path;

use crate::auth::Registry;
use crate::secrets::CredentialCache;

pub fn run(path: &Path) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let cache = CredentialCache::new();
    let prepared = runtime.block_on(crate::reload::prepare(path, &cache, false))?;
    let (config, registry) = (prepared.config, prepared.registry);
    crate::admin::bootstrap::admin_server(&config)?;
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
    Ok(())
}

fn unreferenced_credentials(config: &crate::config::Config, registry: &Registry) -> Vec<String> {
    let used = registry.referenced_credentials();
    config
        .providers
        .values()
        .flat_map(|p| p.credentials.values())
        .filter(|r| !used.iter().any(|u| &**u == r.as_str()))
        .cloned()
        .collect()
}
