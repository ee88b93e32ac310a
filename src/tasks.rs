//! Owned background tasks: every loop keygate starts is spawned here with a stop signal, and
//! shutdown stops them all and waits for them (each gets a bounded time to finish).

use std::future::Future;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;

/// How long shutdown waits for the tasks before aborting what is left.
const GRACE: Duration = Duration::from_secs(10);

/// The running background tasks and their shared stop signal.
pub struct Tasks {
    set: JoinSet<()>,
    stop: watch::Sender<bool>,
}

impl Default for Tasks {
    fn default() -> Self {
        Tasks::new()
    }
}

impl Tasks {
    pub fn new() -> Self {
        Tasks {
            set: JoinSet::new(),
            stop: watch::channel(false).0,
        }
    }

    /// A receiver that turns true when shutdown starts.
    pub fn stop_signal(&self) -> watch::Receiver<bool> {
        self.stop.subscribe()
    }

    /// Spawns `task`, named for the log, handing it the stop signal.
    pub fn spawn<F, Fut>(&mut self, name: &'static str, task: F)
    where
        F: FnOnce(watch::Receiver<bool>) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let running = task(self.stop.subscribe());
        self.set.spawn(async move {
            running.await;
            tracing::debug!(task = name, "background task stopped");
        });
    }

    /// Signals every task to stop, without waiting.
    pub fn signal_stop(&self) {
        self.stop.send_replace(true);
    }

    /// Signals stop and waits for every task, aborting the ones still running after the
    /// grace period.
    pub async fn shutdown(mut self) {
        self.stop.send_replace(true);
        let drained = tokio::time::timeout(GRACE, async {
            while self.set.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                left = self.set.len(),
                "background tasks did not stop in time; aborting them"
            );
            self.set.shutdown().await;
        }
    }
}

/// Sleeps until `stop` turns true (for `tokio::select!` in loops).
pub async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
