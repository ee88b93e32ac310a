//! `notify:` in the config file: the webhooks and how deliveries are retried.

use std::time::Duration;

use serde::Deserialize;

use crate::serde_util::duration;

/// `notify:` in the config file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
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
#[derive(Clone, PartialEq, Deserialize)]
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
