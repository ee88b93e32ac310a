//! Limiter replicas for the limits suites: each with its own ledger and accounting, counting
//! in this process or in a real Redis shared with the other replicas (one `redis-server`, a
//! three-node Redis Cluster, or a Sentinel group).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::redis_cluster::RedisCluster;
use super::redis_sentinel::RedisSentinel;
use super::redis_server::RedisServer;
use keygate::accounting::{Accounting, Ledger};
use keygate::auth::{Consumer, Registry};
use keygate::config::{LimitsBackend, LimitsConfig, RedisConfig};
use keygate::denial::DenyReason;
use keygate::limits::{Cost, Limiter, Reservation};
use keygate::usage::{PriceTable, Usage};

/// Where a test's limiters count.
pub enum Store {
    Local,
    Redis(RedisServer),
    Cluster(RedisCluster),
    Sentinel(RedisSentinel),
}

/// One replica: its limiter, ledger and accounting.
pub struct Replica {
    pub limiter: Arc<Limiter>,
    pub accounting: Arc<Accounting>,
    pub ledger: Arc<Ledger>,
}

const PRICE: &str =
    "{provider: openai, model: gpt-test, input_per_mtok_usd: 1.0, output_per_mtok_usd: 1.0}";

/// Consumers `alpha` and `beta` of team `ml`, each with `limits`; the team has `team_budget`.
pub fn consumers(
    limits: &str,
    team_budget: Option<f64>,
) -> (tempfile::TempDir, Vec<Arc<Consumer>>) {
    let dir = tempfile::tempdir().unwrap();
    let teams = team_budget.map_or(String::new(), |b| {
        format!("teams: {{ml: {{monthly_budget_usd: {b}}}}}\n")
    });
    let consumer = |name: &str, n: u8| {
        format!(
            "  - {{name: {name}, team: ml, environment: production, provider: openai, keys: [{{hash: \"sha256:{n:064x}\"}}], scope: {{routes: [\"POST /v1/chat/completions\"]}}, limits: {limits}}}\n"
        )
    };
    let text = format!(
        "credentials: {{source: file, path: secrets.yaml}}\nproviders:\n  openai: {{kind: openai, credentials: {{production: openai/production}}}}\n{teams}consumers:\n{}{}",
        consumer("alpha", 1),
        consumer("beta", 2)
    );
    std::fs::write(dir.path().join("keygate.yaml"), text).unwrap();
    std::fs::write(
        dir.path().join("secrets.yaml"),
        "openai/production: {api_key: sk-x}\n",
    )
    .unwrap();
    let config = keygate::config::load(&dir.path().join("keygate.yaml")).unwrap();
    let registry = Registry::from_config(&config);
    (dir, registry.consumers().to_vec())
}

impl Store {
    pub fn redis() -> Store {
        Store::Redis(RedisServer::start())
    }

    pub fn server(&mut self) -> &mut RedisServer {
        match self {
            Store::Redis(server) => server,
            _ => panic!("only a single-server store has one server"),
        }
    }

    /// The `limits.redis` servers of this store (`None`: local).
    fn servers(&self) -> Option<RedisConfig> {
        let (url, cluster, sentinel) = match self {
            Store::Local => return None,
            Store::Redis(server) => (Some(server.url()), None, None),
            Store::Cluster(cluster) => (None, Some(cluster.urls()), None),
            Store::Sentinel(group) => (None, None, Some(group.config())),
        };
        Some(RedisConfig {
            url,
            cluster,
            sentinel,
            ..RedisConfig::default()
        })
    }

    /// A replica counting in this store; `replicas` is how many share it.
    pub async fn replica(&self, prefix: &str, replicas: u32) -> Replica {
        self.replica_with(Arc::new(Ledger::in_memory()), prefix, replicas)
            .await
    }

    /// A replica whose ledger is the file at `path` (kept across its restarts).
    pub async fn replica_at(&self, path: &Path, prefix: &str, replicas: u32) -> Replica {
        let ledger = Arc::new(Ledger::open(path).unwrap());
        self.replica_with(ledger, prefix, replicas).await
    }

    async fn replica_with(&self, ledger: Arc<Ledger>, prefix: &str, replicas: u32) -> Replica {
        let prices = PriceTable::defaults()
            .with_overrides(&[serde_yaml::from_str(PRICE).unwrap()])
            .unwrap();
        let accounting = Arc::new(Accounting::new(prices, ledger.clone()));
        let limiter = Arc::new(Limiter::new(ledger.clone()));
        match self.servers() {
            None => limiter.configure(&LimitsConfig::default(), None),
            Some(servers) => {
                let redis = RedisConfig {
                    timeout: Duration::from_millis(500),
                    replicas,
                    key_prefix: format!("kg-test-{prefix}"),
                    sync_interval: Duration::from_millis(20),
                    ..servers
                };
                let config = LimitsConfig {
                    backend: LimitsBackend::Redis,
                    redis: Some(redis.clone()),
                    ..LimitsConfig::default()
                };
                limiter.configure(&config, Some(limiter.connect_redis(&redis).unwrap()));
            }
        }
        let replica = Replica {
            limiter,
            accounting,
            ledger,
        };
        if !matches!(self, Store::Local) {
            replica.shared().await;
        }
        replica
    }
}

impl Replica {
    /// Runs the background sync loop, as keygate does, until the returned sender is dropped.
    pub fn syncing(&self) -> tokio::sync::watch::Sender<bool> {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        tokio::spawn(self.limiter.clone().sync(stopped));
        stop
    }

    /// Syncs until budgets are granted from Redis (past the rebuild window of a new epoch).
    pub async fn shared(&self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !self.limiter.sync_now().await {
            assert!(
                Instant::now() < deadline,
                "the shared store never became usable"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Reserves `tokens` input tokens of `gpt-test` ($1 per million: one micro-dollar each).
    pub async fn reserve(
        &self,
        c: &Consumer,
        tokens: u64,
        at: SystemTime,
    ) -> Result<Reservation, DenyReason> {
        let worst = Usage {
            input_tokens: tokens,
            model: Some("gpt-test".into()),
            ..Usage::default()
        };
        let cost = Cost {
            tokens,
            micro_usd: self.accounting.price(c.provider.kind, &worst).unwrap_or(0),
        };
        self.limiter.reserve(c, 100, cost, at).await
    }

    /// Charges `tokens` at $1/M and settles the reservation, as the exchange does.
    pub fn charge(&self, c: &Arc<Consumer>, r: &Reservation, tokens: u64, at: SystemTime) {
        let used = Usage {
            input_tokens: tokens,
            model: Some("gpt-test".into()),
            ..Usage::default()
        };
        let charge = self.accounting.charge(c, &used, false, at);
        self.limiter.settle(c, r, tokens, charge.micro_usd);
    }
}

pub fn at(text: &str) -> SystemTime {
    humantime::parse_rfc3339(text).unwrap()
}
