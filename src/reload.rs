//! Hot reload: on SIGHUP, when the config or secrets file changes, or when the admin API asks
//! for a credential refresh, prepare the new config completely, then put it into service
//! ([`App::activate`]: every section a running process can apply). Anything wrong keeps the
//! running config; the error is logged with its field path and counted.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

use crate::app::App;
use crate::config::{Config, CredentialsConfig};
use crate::runtime::{Background, LoadError};
use crate::tasks::stopped;
use crate::telemetry;

pub use crate::runtime::prepare;

/// Watches for SIGHUP and for changes to the config or secrets file, and reloads.
pub struct Reloader {
    pub path: PathBuf,
    pub app: Arc<App>,
}

impl Reloader {
    /// Runs until `stop`; `_background` (the running config's refreshers) is replaced, and so
    /// aborted, on every successful reload, and dropped when this returns.
    pub async fn run(
        self,
        mut current: Config,
        mut _background: Background,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGHUP; file watching only");
                None
            }
        };
        let mut last = fingerprint(&self.path, secrets_file(&current).as_deref())
            .map(|f| (f, fingerprint_files(&admin_files(&current))));
        loop {
            let forced = tokio::select! {
                _ = tokio::time::sleep(current.reload.watch_interval) => false,
                Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => true,
                _ = self.app.refresh.notified() => true,
                _ = stopped(&mut stop) => return,
            };
            let now = fingerprint(&self.path, secrets_file(&current).as_deref())
                .map(|f| (f, fingerprint_files(&admin_files(&current))));
            if !forced && now == last {
                continue;
            }
            last = now;
            tracing::info!(forced, path = %self.path.display(), "reloading configuration");
            match self.reload(&current).await {
                Ok((config, next)) => {
                    _background = next;
                    current = config;
                    last = fingerprint(&self.path, secrets_file(&current).as_deref())
                        .map(|f| (f, fingerprint_files(&admin_files(&current))));
                    telemetry::record_reload(true);
                    let _ = tokio::task::spawn_blocking(crate::heap::trim).await;
                    let consumers = self.app.gate.registry().consumers().len();
                    tracing::info!(consumers, "configuration reloaded");
                }
                Err(e) => {
                    telemetry::record_reload(false);
                    tracing::error!(error = %e, "reload rejected; keeping the running configuration");
                }
            }
        }
    }

    async fn reload(&self, running: &Config) -> Result<(Config, Background), LoadError> {
        let prepared = prepare(&self.path, self.app.gate.credentials(), false).await?;
        self.app
            .activate(prepared, Some(running))
            .map_err(|e| LoadError::Activate(e.to_string()))
    }
}

fn secrets_file(config: &Config) -> Option<PathBuf> {
    match &config.credentials {
        CredentialsConfig::File { path } => Some(path.clone()),
        CredentialsConfig::Vault(_) => None,
    }
}

/// Other files whose change is a reload: the admin operators file and the shared token's.
fn admin_files(config: &Config) -> Vec<PathBuf> {
    [&config.admin.operators_file, &config.admin.token_file]
        .into_iter()
        .flatten()
        .cloned()
        .collect()
}

type Fingerprint = Option<[u8; 32]>;

/// The content of `files` (a missing one counts as empty).
fn fingerprint_files(files: &[PathBuf]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    for f in files {
        hasher.update(std::fs::read(f).unwrap_or_default());
        hasher.update([0]);
    }
    hasher.finalize().into()
}

fn fingerprint(config: &Path, secrets: Option<&Path>) -> Fingerprint {
    let mut hasher = Sha256::new();
    hasher.update(std::fs::read(config).ok()?);
    if let Some(s) = secrets {
        hasher.update(std::fs::read(s).unwrap_or_default());
    }
    Some(hasher.finalize().into())
}
