//! Putting a config into service: build its credential source and consumer store, load
//! everything it references, and run the background refreshers. Nothing here is on the
//! request path; the gate only ever reads the results.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::task::JoinHandle;

use crate::auth::Registry;
use crate::config::{self, Config, CredentialsConfig, RotationConfig};
use crate::consumer_store::VaultConsumerStore;
use crate::gate::Gate;
use crate::secrets::{
    inventory, CredentialCache, CredentialSource, FileSource, Fingerprint, VaultSource,
};
use crate::telemetry;

/// Why a config could not be put into service.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error("credentials: {0}")]
    Credentials(String),
    #[error("consumers: {0}")]
    Consumers(String),
    #[error("{0}")]
    Activate(String),
}

/// A validated config with everything it needs, ready to swap in.
#[derive(Debug)]
pub struct Prepared {
    pub config: Config,
    pub registry: Registry,
    pub source: Arc<dyn CredentialSource>,
    pub store: Option<Arc<VaultConsumerStore>>,
}

/// Builds the credential source a config names.
pub fn source_for(config: &Config) -> Result<Arc<dyn CredentialSource>, LoadError> {
    Ok(match &config.credentials {
        CredentialsConfig::File { path } => Arc::new(FileSource::new(path.clone())),
        CredentialsConfig::Vault(v) => Arc::new(
            VaultSource::new(v, &config.rotation.record_template)
                .map_err(|e| LoadError::Credentials(e.to_string()))?,
        ),
    })
}

/// Loads a config file and everything it references into `cache`, without touching the gate.
/// With `wait`, credentials and consumers are retried until the config's startup timeout.
pub async fn prepare(
    path: &std::path::Path,
    cache: &CredentialCache,
    wait: bool,
) -> Result<Prepared, LoadError> {
    let mut config = config::load(path)?;
    let source = source_for(&config)?;
    let (_, max_stale) = config.credentials.freshness();
    let deadline = Instant::now()
        + if wait {
            startup_timeout(&config)
        } else {
            Duration::ZERO
        };
    let store = match (&config.consumers, config.consumer_vault()) {
        (config::ConsumersConfig::Vault(s), Some(conn)) => Some(Arc::new(
            VaultConsumerStore::new(s, conn).map_err(|e| LoadError::Consumers(e.to_string()))?,
        )),
        _ => None,
    };
    let registry = loop {
        let attempt = match &store {
            None => Ok(Registry::from_config(&config)),
            Some(store) => store
                .poll(&config.providers)
                .await
                .map(|poll| Registry::build(&config.providers, &config.teams, &poll.consumers))
                .map_err(|e| LoadError::Consumers(e.to_string())),
        };
        match attempt {
            Ok(r) => break r,
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(e) => retry_pause(&e).await,
        }
    };
    loop {
        match load_credentials(&*source, cache, &registry).await {
            Ok(()) => break,
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(e) => retry_pause(&e).await,
        }
    }
    cache
        .refresh_records(&*source, &registry.referenced_credentials())
        .await;
    cache.set_max_stale(max_stale);
    config.release_inline_consumers();
    Ok(Prepared {
        config,
        registry,
        source,
        store,
    })
}

fn startup_timeout(config: &Config) -> Duration {
    match &config.credentials {
        CredentialsConfig::Vault(v) => v.startup_timeout,
        CredentialsConfig::File { .. } => Duration::ZERO,
    }
}

async fn retry_pause(e: &LoadError) {
    tracing::warn!(error = %e, "not ready yet; retrying");
    tokio::time::sleep(Duration::from_millis(500)).await;
}

/// Loads every credential the registry references; fails if any has no servable value.
pub async fn load_credentials(
    source: &dyn CredentialSource,
    cache: &CredentialCache,
    registry: &Registry,
) -> Result<(), LoadError> {
    let refs = registry.referenced_credentials();
    let report = cache.refresh(source, &refs).await;
    for (reference, failure) in &report.failures {
        tracing::warn!(credential = %reference, error = %failure, "credential load failed");
    }
    for reference in &refs {
        let ok = !report.failures.iter().any(|(r, _)| r == reference);
        telemetry::record_secret_refresh(reference, ok);
    }
    let missing = cache.missing(&refs);
    if missing.is_empty() {
        return Ok(());
    }
    let lines: Vec<String> = missing
        .iter()
        .map(|reference| {
            let why = report
                .failures
                .iter()
                .find(|(r, _)| r == reference)
                .map_or_else(
                    || format!("credential {reference:?} is unavailable"),
                    |(_, e)| e.to_string(),
                );
            format!(
                "{}: {why}",
                registry.credential_fields(reference).join(", ")
            )
        })
        .collect();
    Err(LoadError::Credentials(lines.join("; ")))
}

/// Background work for one prepared config; dropped (aborted) when the config is replaced.
pub struct Background {
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Background {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Starts the credential refresher and, with a consumer store, the consumer poller.
pub fn spawn_background(prepared: &Prepared, gate: &Arc<Gate>) -> Background {
    let (refresh_every, _) = prepared.config.credentials.freshness();
    let mut tasks = vec![tokio::spawn(refresh_credentials(
        prepared.source.clone(),
        gate.clone(),
        refresh_every,
        Arc::new(prepared.config.rotation.clone()),
    ))];
    if let (Some(store), config::ConsumersConfig::Vault(settings)) =
        (&prepared.store, &prepared.config.consumers)
    {
        tasks.push(tokio::spawn(poll_consumers(
            store.clone(),
            prepared.source.clone(),
            gate.clone(),
            prepared.config.providers.clone(),
            prepared.config.teams.clone(),
            settings.refresh,
        )));
    }
    Background { tasks }
}

async fn refresh_credentials(
    source: Arc<dyn CredentialSource>,
    gate: Arc<Gate>,
    every: Duration,
    rotation: Arc<RotationConfig>,
) {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stale_before: Vec<Arc<str>> = Vec::new();
    loop {
        let refs = gate.registry().referenced_credentials();
        let before = versions(gate.credentials(), &refs);
        let report = gate.credentials().refresh(&*source, &refs).await;
        let changed: Vec<Arc<str>> = refs
            .iter()
            .zip(before)
            .filter(|(r, v)| versions(gate.credentials(), std::slice::from_ref(r))[0] != *v)
            .map(|(r, _)| r.clone())
            .collect();
        if !changed.is_empty() {
            gate.credentials().refresh_records(&*source, &changed).await;
        }
        publish_inventory(&gate, &rotation, &*source, &refs);
        for (reference, failure) in &report.failures {
            tracing::warn!(credential = %reference, error = %failure, "credential refresh failed; serving the last good value");
        }
        let now = SystemTime::now();
        let mut stale_now = Vec::new();
        for reference in &refs {
            telemetry::record_secret_refresh(
                reference,
                !report.failures.iter().any(|(r, _)| r == reference),
            );
            if let Some((age, stale)) = gate.credentials().age(reference, now) {
                telemetry::record_secret_age(reference, age, stale);
                if stale {
                    stale_now.push(reference.clone());
                }
            }
        }
        for reference in stale_now.iter().filter(|r| !stale_before.contains(r)) {
            tracing::error!(credential = %reference, "credential is past max_stale: requests needing it get 503");
        }
        stale_before = stale_now;
        tick.tick().await;
    }
}

/// The KV version and fingerprint each reference is served at (a change means a new key).
fn versions(cache: &CredentialCache, refs: &[Arc<str>]) -> Vec<Option<(Option<u64>, Fingerprint)>> {
    refs.iter()
        .map(|r| cache.get(r).map(|c| (c.version, c.fingerprint)))
        .collect()
}

/// Publishes the rotation metrics for the credentials `refs`.
pub fn publish_inventory(
    gate: &Gate,
    rotation: &RotationConfig,
    source: &dyn CredentialSource,
    refs: &[Arc<str>],
) {
    let registry = gate.registry();
    let overrides = gate.overrides();
    let entries = inventory::inventory(
        &inventory::Sources {
            registry: &registry,
            cache: gate.credentials(),
            overrides: &overrides,
            rotation,
            source: Some(source),
        },
        refs,
        false,
    );
    inventory::publish(&entries);
}

async fn poll_consumers(
    store: Arc<VaultConsumerStore>,
    source: Arc<dyn CredentialSource>,
    gate: Arc<Gate>,
    providers: std::collections::BTreeMap<String, config::ProviderConfig>,
    teams: std::collections::BTreeMap<String, config::TeamConfig>,
    every: Duration,
) {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match store.poll(&providers).await {
            Ok(poll) if !poll.changed => telemetry::record_registry_refresh("unchanged"),
            Ok(poll) => {
                let registry = Registry::build(&providers, &teams, &poll.consumers);
                if let Err(e) = load_credentials(&*source, gate.credentials(), &registry).await {
                    tracing::warn!(error = %e, "new consumers reference unavailable credentials");
                }
                telemetry::record_registry_size(registry.consumers().len());
                gate.swap_registry(registry);
                telemetry::record_registry_refresh("ok");
                tracing::info!(
                    consumers = poll.consumers.len(),
                    "consumer registry updated from vault"
                );
                drop(poll);
                let _ = tokio::task::spawn_blocking(crate::heap::trim).await;
            }
            Err(e) => {
                telemetry::record_registry_refresh("error");
                tracing::warn!(error = %e, "consumer store poll failed; keeping the current registry");
            }
        }
    }
}
