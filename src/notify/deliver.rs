//! One webhook's delivery loop: post, retry with exponential backoff, count.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::{payload, Inner, Notification, Sink};

/// How long a shutdown spends on what is still queued.
const DRAIN_DEADLINE: Duration = Duration::from_secs(3);

/// Delivers the queue of sink `index` until the notifier stops.
pub(super) async fn sink_loop(
    inner: &Inner,
    index: usize,
    mut rx: mpsc::Receiver<Arc<Notification>>,
) {
    let Some(sink) = inner.sinks.get(index) else {
        return;
    };
    let mut stop = inner.stop.subscribe();
    loop {
        if *stop.borrow_and_update() {
            break;
        }
        tokio::select! {
            biased;
            _ = stop.changed() => break,
            next = rx.recv() => match next {
                Some(n) => deliver(inner, sink, &n, inner.config.attempts).await,
                None => return,
            },
        }
    }
    drain(inner, sink, &mut rx).await;
}

/// At shutdown: one attempt per queued notification, within `DRAIN_DEADLINE`.
async fn drain(inner: &Inner, sink: &Sink, rx: &mut mpsc::Receiver<Arc<Notification>>) {
    let deadline = tokio::time::Instant::now() + DRAIN_DEADLINE;
    while let Ok(n) = rx.try_recv() {
        if tokio::time::timeout_at(deadline, deliver(inner, sink, &n, 1))
            .await
            .is_err()
        {
            inner.stats.count(&sink.name, "dropped");
            break;
        }
    }
    while rx.try_recv().is_ok() {
        inner.stats.count(&sink.name, "dropped");
    }
}

/// Whether a failed attempt is worth repeating.
enum Failure {
    Retryable(String),
    Permanent(String),
}

async fn deliver(inner: &Inner, sink: &Sink, n: &Notification, attempts: u32) {
    let body = match serde_json::to_vec(&payload::render(sink.webhook.format, n)) {
        Ok(body) => body,
        Err(e) => {
            inner.stats.count(&sink.name, "failed");
            tracing::warn!(sink = %sink.name, error = %e, "notification could not be rendered");
            return;
        }
    };
    let mut backoff = inner.config.backoff;
    for attempt in 1..=attempts {
        let failure = match post(inner, sink, body.clone()).await {
            Ok(()) => {
                inner.stats.count(&sink.name, "sent");
                return;
            }
            Err(f) => f,
        };
        let (retryable, error) = match failure {
            Failure::Retryable(e) => (true, e),
            Failure::Permanent(e) => (false, e),
        };
        if !retryable || attempt == attempts {
            inner.stats.count(&sink.name, "failed");
            tracing::warn!(sink = %sink.name, attempt, %error, "notification failed; giving up");
            return;
        }
        inner.stats.count(&sink.name, "retried");
        tracing::info!(sink = %sink.name, attempt, %error, "notification failed; retrying");
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(inner.config.max_backoff);
    }
}

async fn post(inner: &Inner, sink: &Sink, body: Vec<u8>) -> Result<(), Failure> {
    let webhook = &sink.webhook;
    let response = inner
        .client
        .post(webhook.url.clone())
        .timeout(webhook.timeout)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        // The URL is a secret (Slack's carry a token): strip it from the error.
        .map_err(|e| Failure::Retryable(e.without_url().to_string()))?;
    let status = response.status();
    if status.is_success() {
        Ok(())
    } else if status.is_server_error() || status.as_u16() == 429 || status.as_u16() == 408 {
        Err(Failure::Retryable(format!("HTTP {status}")))
    } else {
        Err(Failure::Permanent(format!("HTTP {status}")))
    }
}
