//! Loading and hot-reloading configuration and credentials. A new config is fully validated,
//! and every credential it needs is loaded, before the registry is swapped; anything wrong
//! keeps the running config and is logged with its field path and counted.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};
use tokio::signal::unix::{signal, SignalKind};

use crate::auth::Registry;
use crate::config::{self, Config, CredentialsConfig};
use crate::gate::Gate;
use crate::secrets::{CredentialCache, CredentialSource, FileSource};
use crate::telemetry;

/// Why a config could not be put into service.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error("credentials: {0}")]
    Credentials(String),
}

/// Builds the credential source a config names.
pub fn source_for(config: &Config) -> Arc<dyn CredentialSource> {
    match &config.credentials {
        CredentialsConfig::File { path } => Arc::new(FileSource::new(path.clone())),
    }
}

/// Loads credentials for `registry` into `cache`; fails if any referenced one has no value.
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
        Ok(())
    } else {
        let names: Vec<&str> = missing.iter().map(|m| &**m).collect();
        let reasons: Vec<String> = report.failures.iter().map(|(_, e)| e.to_string()).collect();
        Err(LoadError::Credentials(format!(
            "unavailable: {} ({})",
            names.join(", "),
            reasons.join("; ")
        )))
    }
}

/// Loads a config file and everything it references, without touching the running gate.
pub async fn prepare(
    path: &Path,
    cache: &CredentialCache,
) -> Result<(Config, Registry), LoadError> {
    let config = config::load(path)?;
    let registry = Registry::from_config(&config);
    let source = source_for(&config);
    load_credentials(&*source, cache, &registry).await?;
    Ok((config, registry))
}

/// Watches for SIGHUP and for changes to the config or secrets file, and reloads.
pub struct Reloader {
    pub path: PathBuf,
    pub gate: Arc<Gate>,
    pub interval: std::time::Duration,
}

impl Reloader {
    pub async fn run(self, current: Config) {
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGHUP; file watching only");
                None
            }
        };
        let mut secrets_path = secrets_file(&current);
        let mut last = fingerprint(&self.path, secrets_path.as_deref());
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let forced = tokio::select! {
                _ = tick.tick() => false,
                Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => true,
            };
            let now = fingerprint(&self.path, secrets_path.as_deref());
            if !forced && now == last {
                continue;
            }
            last = now;
            tracing::info!(forced, path = %self.path.display(), "reloading configuration");
            match self.reload().await {
                Ok(config) => {
                    secrets_path = secrets_file(&config);
                    last = fingerprint(&self.path, secrets_path.as_deref());
                }
                Err(e) => {
                    telemetry::record_reload(false);
                    tracing::error!(error = %e, "reload rejected; keeping the running configuration");
                }
            }
        }
    }

    async fn reload(&self) -> Result<Config, LoadError> {
        let (config, registry) = prepare(&self.path, self.gate.credentials()).await?;
        telemetry::record_registry_size(registry.consumers().len());
        self.gate
            .set_trust_forwarded_for(config.network.trust_forwarded_for);
        self.gate.swap_registry(registry);
        telemetry::record_reload(true);
        tracing::info!(consumers = config.consumers.len(), "configuration reloaded");
        Ok(config)
    }
}

fn secrets_file(config: &Config) -> Option<PathBuf> {
    match &config.credentials {
        CredentialsConfig::File { path } => Some(path.clone()),
    }
}

type Fingerprint = Option<[u8; 32]>;

fn fingerprint(config: &Path, secrets: Option<&Path>) -> Fingerprint {
    let mut hasher = Sha256::new();
    hasher.update(std::fs::read(config).ok()?);
    if let Some(s) = secrets {
        hasher.update(std::fs::read(s).unwrap_or_default());
    }
    Some(hasher.finalize().into())
}
