//! Hot reload: on SIGHUP or when the config or secrets file changes, prepare the new config
//! completely, then swap the registry and restart the background work. Anything wrong keeps
//! the running config; the error is logged with its field path and counted.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};
use tokio::signal::unix::{signal, SignalKind};

use crate::accounting::Accounting;
use crate::config::{Config, CredentialsConfig, LimitsBackend};
use crate::gate::Gate;
use crate::limits::redis::RedisLimits;
use crate::limits::Limiter;
use crate::runtime::{self, Background, LoadError, Prepared};
use crate::telemetry;

pub use crate::runtime::prepare;

/// Puts a prepared config into service and returns its background work.
pub fn activate(
    prepared: Prepared,
    gate: &Arc<Gate>,
    accounting: &Accounting,
    limiter: &Limiter,
) -> Result<(Config, Background), ActivateError> {
    accounting.configure(&prepared.config.usage)?;
    let limits = &prepared.config.limits;
    let redis = match (limits.backend, &limits.redis) {
        (LimitsBackend::Redis, Some(redis)) => Some(RedisLimits::connect(redis)?),
        _ => None,
    };
    limiter.configure(limits, redis);
    let background = runtime::spawn_background(&prepared, gate);
    telemetry::record_registry_size(prepared.registry.consumers().len());
    telemetry::record_budgets(&prepared.registry);
    gate.set_trust_forwarded_for(prepared.config.network.trust_forwarded_for);
    gate.swap_registry(prepared.registry);
    Ok((prepared.config, background))
}

/// Watches for SIGHUP and for changes to the config or secrets file, and reloads.
pub struct Reloader {
    pub path: PathBuf,
    pub gate: Arc<Gate>,
    pub accounting: Arc<Accounting>,
    pub limiter: Arc<Limiter>,
    /// Forces a reload (and so a credential refresh), like SIGHUP: the admin API's
    /// RefreshCredentials.
    pub refresh: Arc<tokio::sync::Notify>,
}

/// Why a prepared config could not be switched on.
#[derive(Debug, thiserror::Error)]
pub enum ActivateError {
    #[error("usage.{0}")]
    Pricing(#[from] crate::usage::PricingError),
    #[error(transparent)]
    Redis(#[from] crate::limits::redis::RedisSetupError),
}

impl Reloader {
    /// Runs forever; `_background` (the running config's refreshers) is replaced, and so
    /// aborted, on every successful reload.
    pub async fn run(self, mut current: Config, mut _background: Background) {
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGHUP; file watching only");
                None
            }
        };
        let mut last = fingerprint(&self.path, secrets_file(&current).as_deref());
        loop {
            let forced = tokio::select! {
                _ = tokio::time::sleep(current.reload.watch_interval) => false,
                Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => true,
                _ = self.refresh.notified() => true,
            };
            let now = fingerprint(&self.path, secrets_file(&current).as_deref());
            if !forced && now == last {
                continue;
            }
            last = now;
            tracing::info!(forced, path = %self.path.display(), "reloading configuration");
            match self.reload().await {
                Ok((config, next)) => {
                    _background = next;
                    current = config;
                    last = fingerprint(&self.path, secrets_file(&current).as_deref());
                    telemetry::record_reload(true);
                    let _ = tokio::task::spawn_blocking(crate::heap::trim).await;
                    let consumers = self.gate.registry().consumers().len();
                    tracing::info!(consumers, "configuration reloaded");
                }
                Err(e) => {
                    telemetry::record_reload(false);
                    tracing::error!(error = %e, "reload rejected; keeping the running configuration");
                }
            }
        }
    }

    async fn reload(&self) -> Result<(Config, Background), LoadError> {
        let prepared = prepare(&self.path, self.gate.credentials(), false).await?;
        activate(prepared, &self.gate, &self.accounting, &self.limiter)
            .map_err(|e| LoadError::Activate(e.to_string()))
    }
}

fn secrets_file(config: &Config) -> Option<PathBuf> {
    match &config.credentials {
        CredentialsConfig::File { path } => Some(path.clone()),
        CredentialsConfig::Vault(_) => None,
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
