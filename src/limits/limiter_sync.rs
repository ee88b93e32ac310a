//! The limiter's background half: the shared store's sync loop, its readiness, and draining
//! it at shutdown. Local limits have nothing to sync.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::backend::Backend;
use super::limiter::Limiter;

impl Limiter {
    /// Keeps the shared store's leases and allowances topped up and its totals published
    /// until `stop`, then gives back what it holds. Does nothing in local mode.
    pub async fn sync(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        loop {
            let backend = self.backend.load_full();
            let pause = match &*backend {
                Backend::Shared(shared) => {
                    if let Err(e) = shared.sync_once(false).await {
                        tracing::debug!(error = %e, "limits sync pass stopped early");
                    }
                    shared.sync_interval()
                }
                Backend::Local(_) => Duration::from_secs(1),
            };
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                () = crate::tasks::stopped(&mut stop) => break,
            }
        }
        if let Backend::Shared(shared) = &*self.backend.load_full() {
            if let Err(e) = shared.drain().await {
                tracing::warn!(error = %e, "could not give back the shared limits held at shutdown");
            }
        }
    }

    /// One sync pass of the shared store now (tests; the `sync` loop runs it periodically).
    /// True when budgets are shared after it (Redis answered, its epoch current, no rebuild).
    pub async fn sync_now(&self) -> bool {
        match &*self.backend.load_full() {
            Backend::Shared(shared) => shared.sync_once(true).await.is_ok() && shared.is_trusted(),
            Backend::Local(_) => false,
        }
    }

    /// Whether the limits can decide as configured (see `SharedStore::is_ready`); a local
    /// store always can.
    pub fn is_ready(&self) -> bool {
        match &*self.backend.load_full() {
            Backend::Shared(shared) => shared.is_ready(),
            Backend::Local(_) => true,
        }
    }

    /// Gives back everything the shared store holds, as at shutdown (tests).
    pub async fn drain(&self) {
        if let Backend::Shared(shared) = &*self.backend.load_full() {
            let _ = shared.drain().await;
        }
    }
}
