//! Fan-out of operator actions to every replica through Redis pub/sub, so a revocation on one
//! replica takes effect on all of them in well under a second. The state file and the
//! consumer store remain the safety net for a replica that was disconnected.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use metrics::histogram;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_stream::StreamExt;

use super::action::Action;
use super::store::OverrideStore;
use crate::limits::redis_link::{Endpoint, RedisSetupError};
use crate::tasks::stopped;
use crate::telemetry;

#[derive(Debug, Serialize, Deserialize)]
struct Message {
    action: Action,
    /// Wall-clock milliseconds when the command was received (for the propagation metric).
    at_ms: u64,
    origin: String,
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Publishes actions and applies the ones other replicas publish.
#[derive(Debug, Clone)]
pub struct Broadcaster {
    endpoint: Endpoint,
    channel: String,
    origin: String,
}

impl Broadcaster {
    /// Broadcasts through the Redis of `limits.redis` (a server, a Cluster node that answers,
    /// or a Sentinel group's current master).
    pub fn new(
        redis: &crate::config::RedisConfig,
        origin: String,
    ) -> Result<Self, RedisSetupError> {
        Ok(Broadcaster {
            endpoint: Endpoint::new(redis)?,
            channel: format!("{}:admin", redis.key_prefix),
            origin,
        })
    }

    /// Publishes one action; failures are logged (the state file still carries it).
    pub async fn publish(&self, action: &Action, at_ms: u64) {
        let message = Message {
            action: action.clone(),
            at_ms,
            origin: self.origin.clone(),
        };
        let Ok(payload) = serde_json::to_string(&message) else {
            return;
        };
        let result = async {
            let mut last = None;
            for client in self.endpoint.clients().await? {
                let sent = async {
                    let mut conn = client.get_multiplexed_async_connection().await?;
                    redis::cmd("PUBLISH")
                        .arg(&self.channel)
                        .arg(&payload)
                        .query_async::<i64>(&mut conn)
                        .await
                };
                match sent.await {
                    Ok(n) => return Ok(n),
                    Err(e) => last = Some(e),
                }
            }
            Err(last.unwrap_or_else(|| {
                redis::RedisError::from((redis::ErrorKind::Io, "no redis server to publish on"))
            }))
        };
        match tokio::time::timeout(Duration::from_secs(1), result).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "admin broadcast failed; other replicas catch up from the state file")
            }
            Err(_) => tracing::warn!(
                "admin broadcast timed out; other replicas catch up from the state file"
            ),
        }
    }

    /// Subscribes until `stop` (reconnecting), applying other replicas' actions.
    pub async fn run(self, store: Arc<OverrideStore>, mut stop: watch::Receiver<bool>) {
        tokio::select! {
            _ = self.subscribe(&store) => {}
            _ = stopped(&mut stop) => {}
        }
    }

    async fn subscribe(&self, store: &OverrideStore) {
        let mut next = 0usize;
        loop {
            // A server that failed is followed by the next one (Cluster nodes in turn).
            next = next.wrapping_add(1);
            let client = match self.endpoint.clients().await {
                Ok(clients) => clients.get(next % clients.len().max(1)).cloned(),
                Err(e) => {
                    tracing::debug!(error = %e, "admin broadcast: redis unavailable");
                    None
                }
            };
            let Some(client) = client else {
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            };
            match client.get_async_pubsub().await {
                Ok(mut pubsub) => {
                    if let Err(e) = pubsub.subscribe(&self.channel).await {
                        tracing::warn!(error = %e, "admin broadcast subscribe failed");
                    } else {
                        let mut stream = pubsub.on_message();
                        while let Some(msg) = stream.next().await {
                            let Ok(payload) = msg.get_payload::<String>() else {
                                continue;
                            };
                            self.receive(store, &payload);
                        }
                    }
                }
                Err(e) => tracing::debug!(error = %e, "admin broadcast: redis unavailable"),
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    fn receive(&self, store: &OverrideStore, payload: &str) {
        let Ok(message) = serde_json::from_str::<Message>(payload) else {
            tracing::warn!("admin broadcast: unreadable message ignored");
            return;
        };
        if message.origin == self.origin {
            return;
        }
        match store.apply(&message.action, false) {
            Ok(_) => {
                let seconds = now_ms().saturating_sub(message.at_ms) as f64 / 1000.0;
                histogram!(telemetry::REVOCATION_PROPAGATION_SECONDS, "path" => "broadcast")
                    .record(seconds);
                tracing::info!(
                    action = message.action.name(),
                    target = %message.action.target(),
                    propagation_s = seconds,
                    "applied broadcast admin action"
                );
            }
            Err(e) => tracing::warn!(error = %e, "admin broadcast: action refused"),
        }
    }
}
