//! Webhook notifications for detections and admin actions, never on the request path.
//!
//! [`Notifier::send`] only pushes into one bounded queue per webhook (full → dropped and
//! counted), so a dead or slow webhook never delays a decision or another webhook.
//! [`Notifier::run`] is the delivery loop: the caller spawns it once on its runtime
//! (`tokio::spawn({ let n = notifier.clone(); async move { n.run().await } })`; it is not
//! spawned by `new`, so constructing a notifier needs no runtime and tests control delivery).
//! Each webhook gets its own task posting with a per-request timeout and retries with
//! exponential backoff (3 attempts, 200 ms → 2 s by default).
//!
//! Nothing secret goes out: consumers are registry names, keys appear only as key ids, and
//! free text is [`redact()`]ed. Webhook URLs are themselves secrets (Slack's carry a token), so
//! they are never logged or printed; logs and metrics name a webhook by its `name`.

pub mod config;
mod deliver;
pub mod notification;
mod payload;
pub mod redact;

#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use metrics::counter;

use crate::telemetry::NOTIFICATIONS_TOTAL;
use tokio::sync::{mpsc, watch};

pub use config::{NotifyConfig, NotifyError, Webhook, WebhookFormat};
pub use notification::Notification;
pub use redact::redact;

/// Delivery counters since start (also exported as [`NOTIFICATIONS_TOTAL`]).
#[derive(Debug, Default)]
pub struct NotifyStats {
    pub sent: AtomicU64,
    pub retried: AtomicU64,
    pub failed: AtomicU64,
    pub dropped: AtomicU64,
}

impl NotifyStats {
    fn count(&self, sink: &str, result: &'static str) {
        let field = match result {
            "sent" => &self.sent,
            "retried" => &self.retried,
            "failed" => &self.failed,
            _ => &self.dropped,
        };
        field.fetch_add(1, Ordering::Relaxed);
        counter!(NOTIFICATIONS_TOTAL, "sink" => sink.to_string(), "result" => result).increment(1);
    }
}

struct Sink {
    webhook: Webhook,
    name: Arc<str>,
    tx: mpsc::Sender<Arc<Notification>>,
}

struct Inner {
    sinks: Vec<Sink>,
    receivers: Mutex<Option<Vec<mpsc::Receiver<Arc<Notification>>>>>,
    client: reqwest::Client,
    config: NotifyConfig,
    stats: NotifyStats,
    stop: watch::Sender<bool>,
}

/// Queues notifications for every configured webhook. Cheap to clone.
#[derive(Clone)]
pub struct Notifier {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.inner.sinks.iter().map(|s| &*s.name).collect();
        f.debug_struct("Notifier").field("sinks", &names).finish()
    }
}

impl Notifier {
    /// Validates `config` and builds the queues; delivery starts with [`Notifier::run`].
    pub fn new(config: NotifyConfig) -> Result<Self, NotifyError> {
        if config.queue == 0 {
            return Err(NotifyError::Zero("queue"));
        }
        if config.attempts == 0 {
            return Err(NotifyError::Zero("attempts"));
        }
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("keygate/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| NotifyError::Client(e.without_url().to_string()))?;
        let mut sinks = Vec::new();
        let mut receivers = Vec::new();
        for (i, webhook) in config.webhooks.iter().enumerate() {
            if !matches!(webhook.url.scheme(), "http" | "https") {
                return Err(NotifyError::Scheme(i));
            }
            let name = match &webhook.name {
                Some(n) => n.clone(),
                None => format!("{}-{i}", payload::format_name(webhook.format)),
            };
            if sinks.iter().any(|s: &Sink| *s.name == *name) {
                return Err(NotifyError::DuplicateName(i, name));
            }
            let (tx, rx) = mpsc::channel(config.queue);
            sinks.push(Sink {
                webhook: webhook.clone(),
                name: name.into(),
                tx,
            });
            receivers.push(rx);
        }
        Ok(Notifier {
            inner: Arc::new(Inner {
                sinks,
                receivers: Mutex::new(Some(receivers)),
                client,
                config,
                stats: NotifyStats::default(),
                stop: watch::channel(false).0,
            }),
        })
    }

    /// Queues `notification` for every webhook without waiting. Returns how many accepted it;
    /// the others had a full queue (counted as `dropped`).
    pub fn send(&self, notification: Notification) -> usize {
        let notification = Arc::new(notification);
        let mut queued = 0;
        for sink in &self.inner.sinks {
            match sink.tx.try_send(notification.clone()) {
                Ok(()) => queued += 1,
                Err(_) => {
                    self.inner.stats.count(&sink.name, "dropped");
                    tracing::warn!(sink = %sink.name, "notification queue full; dropped");
                }
            }
        }
        queued
    }

    pub fn stats(&self) -> &NotifyStats {
        &self.inner.stats
    }

    /// Delivers until [`Notifier::shutdown`]; call once (a second call returns at once).
    pub async fn run(&self) {
        let taken = self
            .inner
            .receivers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let Some(receivers) = taken else {
            tracing::warn!("Notifier::run called twice; the second call does nothing");
            return;
        };
        let mut tasks = tokio::task::JoinSet::new();
        for (index, rx) in receivers.into_iter().enumerate() {
            let inner = self.inner.clone();
            tasks.spawn(async move { deliver::sink_loop(&inner, index, rx).await });
        }
        while tasks.join_next().await.is_some() {}
    }

    /// Stops delivery: each webhook finishes its current notification, gives the queued
    /// ones one attempt each within a few seconds, and counts the rest as dropped.
    pub fn shutdown(&self) {
        self.inner.stop.send_replace(true);
    }
}

/// The notifier in force and its delivery task, replaced when a reload changes `notify:`.
/// Sending with no webhook configured does nothing.
#[derive(Debug, Default)]
pub struct Notifications {
    current: arc_swap::ArcSwapOption<Notifier>,
    /// Delivery tasks: the current notifier's, and replaced ones still draining.
    runners: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl Notifications {
    /// Puts `notifier` in force and starts its delivery (needs a Tokio runtime).
    pub fn start(notifier: Option<Notifier>) -> Self {
        let notifications = Notifications::default();
        notifications.replace(notifier);
        notifications
    }

    /// Queues `notification` for every webhook of the current notifier.
    pub fn send(&self, notification: Notification) {
        if let Some(notifier) = self.current.load_full() {
            notifier.send(notification);
        }
    }

    /// The current notifier, if any.
    pub fn current(&self) -> Option<Arc<Notifier>> {
        self.current.load_full()
    }

    /// Puts `next` in force and starts its delivery; the notifier it replaces gives what it
    /// still holds one attempt and stops.
    pub fn replace(&self, next: Option<Notifier>) {
        let runner = next.as_ref().map(|n| {
            let n = n.clone();
            tokio::spawn(async move { n.run().await })
        });
        if let Some(old) = self.current.swap(next.map(Arc::new)) {
            old.shutdown();
        }
        let mut runners = self.runners.lock().unwrap_or_else(|p| p.into_inner());
        runners.retain(|r| !r.is_finished());
        runners.extend(runner);
    }

    /// Stops delivery and waits for every delivery task to finish.
    pub async fn shutdown(&self) {
        if let Some(current) = self.current.swap(None) {
            current.shutdown();
        }
        let runners = std::mem::take(&mut *self.runners.lock().unwrap_or_else(|p| p.into_inner()));
        for runner in runners {
            let _ = runner.await;
        }
    }
}
