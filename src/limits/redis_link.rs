//! How keygate reaches Redis: one server, a Redis Cluster, or the master a group of Sentinels
//! names. [`Link`] runs a script call on whichever it is, so nothing above
//! [`RedisLimits`](super::redis::RedisLimits) knows which; [`Endpoint`] gives the admin
//! broadcast a server to publish and subscribe on.
//!
//! Standalone and Cluster connections reconnect by themselves (the cluster connection also
//! follows slot moves). A Sentinel master is looked up again after any failed call, which is
//! how a failover is followed: until the sentinels name a new master every call fails and
//! the shared store serves decisions from this replica's share.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use metrics::counter;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::cluster::{ClusterClientBuilder, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClient, SentinelServerType};
use redis::{
    AsyncConnectionConfig, Client, FromRedisValue, RedisFuture, RedisResult, ScriptInvocation,
};

use crate::config::{RedisConfig, RedisServers, SentinelConfig};
use crate::telemetry;

/// Why Redis could not be set up, at the config field that names it.
#[derive(Debug, thiserror::Error)]
#[error("{field}: {message}")]
pub struct RedisSetupError {
    pub field: &'static str,
    pub message: String,
}

impl RedisSetupError {
    fn at(field: &'static str) -> impl Fn(redis::RedisError) -> RedisSetupError {
        move |e| RedisSetupError {
            field,
            message: e.to_string(),
        }
    }
}

/// The field of `limits.redis` that names the servers.
fn servers(config: &RedisConfig) -> Result<RedisServers<'_>, RedisSetupError> {
    config.servers().ok_or(RedisSetupError {
        field: "limits.redis",
        message: "name exactly one of url, cluster or sentinel".into(),
    })
}

/// A connection to the Redis that holds the shared limits, whatever kind it is.
pub(super) enum Link {
    /// One server; the connection manager reconnects by itself.
    Standalone(ConnectionManager),
    /// A Redis Cluster; each script call goes to the node that owns its keys' slot.
    Cluster(ClusterConnection),
    /// The master of a Sentinel group, looked up again after a failed call.
    Sentinel(Box<SentinelLink>),
}

impl Link {
    /// Prepares a link that connects on first use: keygate starts (in fallback) while Redis
    /// is down. `response_timeout` bounds one reply.
    pub(super) fn open(
        config: &RedisConfig,
        response_timeout: Duration,
    ) -> Result<Link, RedisSetupError> {
        let connect_timeout = Duration::from_millis(250);
        match servers(config)? {
            RedisServers::Standalone(url) => {
                let at = RedisSetupError::at("limits.redis.url");
                let manager_config = ConnectionManagerConfig::new()
                    .set_response_timeout(Some(response_timeout))
                    .set_connection_timeout(Some(connect_timeout))
                    .set_number_of_retries(1)
                    .set_max_delay(Duration::from_millis(500));
                let client = Client::open(url).map_err(&at)?;
                let manager = client
                    .get_connection_manager_lazy(manager_config)
                    .map_err(&at)?;
                Ok(Link::Standalone(manager))
            }
            RedisServers::Cluster(nodes) => {
                let client = ClusterClientBuilder::new(nodes.iter().map(String::as_str))
                    .retries(2)
                    .min_retry_wait(10)
                    .max_retry_wait(100)
                    .build()
                    .map_err(RedisSetupError::at("limits.redis.cluster"))?;
                let cluster_config = ClusterConfig::new()
                    .set_connection_timeout(connect_timeout)
                    .set_response_timeout(response_timeout);
                Ok(Link::Cluster(
                    client.get_pending_async_connection_with_config(cluster_config),
                ))
            }
            RedisServers::Sentinel(sentinel) => Ok(Link::Sentinel(Box::new(SentinelLink {
                sentinels: tokio::sync::Mutex::new(sentinel_client(sentinel)?),
                master: Mutex::new(None),
                address: Mutex::new(None),
                config: AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(connect_timeout))
                    .set_response_timeout(Some(response_timeout)),
            }))),
        }
    }

    /// Runs one script call. The future is boxed: the three connection kinds' futures nested
    /// in every caller's would overflow the compiler's layout depth limit.
    pub(super) fn invoke<'a, T: FromRedisValue + Send + 'a>(
        &'a self,
        invocation: &'a ScriptInvocation<'_>,
    ) -> RedisFuture<'a, T> {
        Box::pin(async move {
            match self {
                Link::Standalone(manager) => invocation.invoke_async(&mut manager.clone()).await,
                Link::Cluster(cluster) => invocation.invoke_async(&mut cluster.clone()).await,
                Link::Sentinel(link) => {
                    let mut master = link.master().await?;
                    invocation.invoke_async(&mut master).await
                }
            }
        })
    }

    /// After a failed or timed-out call: a Sentinel link forgets its master (it may have
    /// failed over), so the next call asks the sentinels again.
    pub(super) fn failed(&self) {
        if let Link::Sentinel(link) = self {
            *link.master.lock().unwrap_or_else(|p| p.into_inner()) = None;
        }
    }
}

fn sentinel_client(sentinel: &SentinelConfig) -> Result<SentinelClient, RedisSetupError> {
    SentinelClient::build(
        sentinel.urls.iter().map(String::as_str).collect(),
        sentinel.master.clone(),
        None,
        SentinelServerType::Master,
    )
    .map_err(RedisSetupError::at("limits.redis.sentinel"))
}

/// The master of a Sentinel group, and where it was last found.
pub(super) struct SentinelLink {
    /// One lookup at a time.
    sentinels: tokio::sync::Mutex<SentinelClient>,
    master: Mutex<Option<MultiplexedConnection>>,
    address: Mutex<Option<String>>,
    config: AsyncConnectionConfig,
}

impl SentinelLink {
    fn cached(&self) -> Option<MultiplexedConnection> {
        self.master
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// A connection to the current master: the last one found, or asked of the sentinels
    /// (counted as operation `master_lookup`; a changed address is logged).
    async fn master(&self) -> RedisResult<MultiplexedConnection> {
        if let Some(conn) = self.cached() {
            return Ok(conn);
        }
        let mut sentinels = self.sentinels.lock().await;
        if let Some(conn) = self.cached() {
            return Ok(conn);
        }
        let found = async {
            let client = sentinels.async_get_client().await?;
            let conn = client
                .get_multiplexed_async_connection_with_config(&self.config)
                .await?;
            Ok::<_, redis::RedisError>((client.get_connection_info().addr().to_string(), conn))
        }
        .await;
        let result = if found.is_ok() { "ok" } else { "error" };
        counter!(telemetry::LIMITS_REDIS_CALLS_TOTAL, "operation" => "master_lookup", "result" => result)
            .increment(1);
        let (address, conn) = found?;
        let previous = self
            .address
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .replace(address.clone());
        match previous {
            Some(previous) if previous != address => {
                tracing::warn!(from = %previous, to = %address, "redis sentinel: the master moved; limits are shared through the new master")
            }
            None => tracing::info!(master = %address, "redis sentinel: master found"),
            Some(_) => {}
        }
        *self.master.lock().unwrap_or_else(|p| p.into_inner()) = Some(conn.clone());
        Ok(conn)
    }
}

/// Where the admin broadcast publishes and subscribes. A Cluster forwards a publish on any
/// node to subscribers on every node, so its nodes are tried in order; a Sentinel group is
/// used through its current master.
#[derive(Clone)]
pub enum Endpoint {
    Nodes(Vec<Client>),
    Sentinel(Arc<tokio::sync::Mutex<SentinelClient>>),
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Nodes(nodes) => write!(f, "Endpoint::Nodes({})", nodes.len()),
            Endpoint::Sentinel(_) => f.write_str("Endpoint::Sentinel"),
        }
    }
}

impl Endpoint {
    pub fn new(config: &RedisConfig) -> Result<Endpoint, RedisSetupError> {
        Ok(match servers(config)? {
            RedisServers::Standalone(url) => Endpoint::Nodes(vec![
                Client::open(url).map_err(RedisSetupError::at("limits.redis.url"))?
            ]),
            RedisServers::Cluster(nodes) => Endpoint::Nodes(
                nodes
                    .iter()
                    .map(|url| Client::open(url.as_str()))
                    .collect::<RedisResult<_>>()
                    .map_err(RedisSetupError::at("limits.redis.cluster"))?,
            ),
            RedisServers::Sentinel(sentinel) => Endpoint::Sentinel(Arc::new(
                tokio::sync::Mutex::new(sentinel_client(sentinel)?),
            )),
        })
    }

    /// The servers to try, in order (boxed for the same reason as [`Link::invoke`]).
    pub fn clients(&self) -> RedisFuture<'_, Vec<Client>> {
        Box::pin(async move {
            match self {
                Endpoint::Nodes(nodes) => Ok(nodes.clone()),
                Endpoint::Sentinel(sentinels) => {
                    Ok(vec![sentinels.lock().await.async_get_client().await?])
                }
            }
        })
    }
}
