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

mod deliver;
mod payload;
pub mod redact;

#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use metrics::counter;
use serde::Deserialize;
use tokio::sync::{mpsc, watch};

use crate::audit::AuditEvent;
use crate::detect::serde_helpers::duration;
use crate::detect::{Action, Detection, DetectorKind, Evidence, Severity};
pub use redact::{redact, KeyId};

/// `keygate_notifications_total{sink,result}`; result is `sent`, `retried` (an attempt failed
/// and will be retried), `failed` (gave up) or `dropped` (queue full, or left at shutdown).
pub const NOTIFICATIONS_TOTAL: &str = "keygate_notifications_total";

/// `notify:` in the config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyConfig {
    #[serde(default)]
    pub webhooks: Vec<Webhook>,
    /// Notifications waiting per webhook; more are dropped (default 1024).
    #[serde(default = "default_queue")]
    pub queue: usize,
    /// Attempts per notification and webhook (default 3).
    #[serde(default = "default_attempts")]
    pub attempts: u32,
    /// Wait before the second attempt, doubled for each later one (default 200 ms) …
    #[serde(default = "default_backoff", with = "duration")]
    pub backoff: Duration,
    /// … up to this (default 2 s).
    #[serde(default = "default_max_backoff", with = "duration")]
    pub max_backoff: Duration,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        NotifyConfig {
            webhooks: Vec::new(),
            queue: default_queue(),
            attempts: default_attempts(),
            backoff: default_backoff(),
            max_backoff: default_max_backoff(),
        }
    }
}

fn default_queue() -> usize {
    1024
}
fn default_attempts() -> u32 {
    3
}
fn default_backoff() -> Duration {
    Duration::from_millis(200)
}
fn default_max_backoff() -> Duration {
    Duration::from_secs(2)
}
fn default_timeout() -> Duration {
    Duration::from_secs(5)
}

/// One webhook.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Webhook {
    /// The `sink` label and the name in logs (default `<format>-<index>`); never the URL.
    #[serde(default)]
    pub name: Option<String>,
    /// `http(s)://…`. Treated as a secret: never logged.
    #[serde(deserialize_with = "parse_url")]
    pub url: url::Url,
    #[serde(default)]
    pub format: WebhookFormat,
    /// Per request (default 5 s).
    #[serde(default = "default_timeout", with = "duration")]
    pub timeout: Duration,
}

fn parse_url<'de, D: serde::Deserializer<'de>>(d: D) -> Result<url::Url, D::Error> {
    let text = String::deserialize(d)?;
    // The error names the problem, never the URL (it may carry a token).
    url::Url::parse(&text)
        .map_err(|e| serde::de::Error::custom(format!("invalid webhook URL ({e})")))
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhook")
            .field("name", &self.name)
            .field(
                "url",
                &format_args!(
                    "{}://{}/…",
                    self.url.scheme(),
                    self.url.host_str().unwrap_or("")
                ),
            )
            .field("format", &self.format)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// Payload shape.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WebhookFormat {
    /// `{"source": "keygate", "consumer", "detector", "severity", "action", "evidence", "at", …}`.
    #[default]
    Generic,
    /// Slack incoming-webhook `{"text", "blocks"}`.
    Slack,
}

/// Why a notify config is unusable.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("notify.webhooks[{0}].url: only http and https webhooks are supported")]
    Scheme(usize),
    #[error("notify.webhooks[{0}].name: {1:?} is used twice")]
    DuplicateName(usize, String),
    #[error("notify.{0}: must be greater than zero")]
    Zero(&'static str),
    #[error("notify: cannot build the HTTP client: {0}")]
    Client(String),
}

/// What a notification is about: a detector firing, or an admin or CLI action.
#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    event: AuditEvent,
    consumer: Option<Arc<str>>,
    key_id: Option<KeyId>,
    detector: Option<DetectorKind>,
    severity: Severity,
    action: Option<Action>,
    evidence: Option<Evidence>,
    actor: Option<String>,
    reason: Option<String>,
    at: SystemTime,
}

impl Notification {
    /// A detector fired.
    pub fn from_detection(d: &Detection) -> Self {
        Notification {
            event: AuditEvent::Detection,
            consumer: Some(d.consumer.clone()),
            key_id: None,
            detector: Some(d.detector),
            severity: d.severity,
            action: Some(d.action),
            evidence: Some(d.evidence.clone()),
            actor: None,
            reason: None,
            at: d.at,
        }
    }

    /// An admin did something (revoked a key, suspended or resumed a consumer, …). Severity
    /// is `warning`; `actor` and `reason` are redacted.
    pub fn admin(
        event: AuditEvent,
        consumer: Option<Arc<str>>,
        key_id: Option<KeyId>,
        actor: &str,
        reason: Option<&str>,
    ) -> Self {
        Notification {
            event,
            consumer,
            key_id,
            detector: None,
            severity: Severity::Warning,
            action: None,
            evidence: None,
            actor: Some(redact(actor)),
            reason: reason.map(redact),
            at: SystemTime::now(),
        }
    }

    /// The same notification, stamped `at` (tests, replays).
    pub fn at(mut self, at: SystemTime) -> Self {
        self.at = at;
        self
    }
}

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
