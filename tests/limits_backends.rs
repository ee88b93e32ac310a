//! The limits suite, run on both stores behind the seam: this process's buckets and a real
//! `redis-server` shared by replicas. Request windows, token reservation and reconciliation,
//! budgets across months, team budgets; then what only Redis has: limits shared between
//! replicas, and the counted fallback to each replica's share when Redis goes away.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

mod common;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use common::redis_server::RedisServer;
use keygate::accounting::{Accounting, Ledger};
use keygate::auth::{Consumer, Registry};
use keygate::config::{LimitsBackend, LimitsConfig, RedisConfig};
use keygate::denial::DenyReason;
use keygate::limits::redis::RedisLimits;
use keygate::limits::{Cost, Limiter, Reservation};
use keygate::usage::{PriceTable, Usage};

/// Where a test's limiters count.
enum Store {
    Local,
    Redis(RedisServer),
}

/// One replica: its limiter, ledger and accounting.
struct Replica {
    limiter: Arc<Limiter>,
    accounting: Arc<Accounting>,
}

const PRICE: &str =
    "{provider: openai, model: gpt-test, input_per_mtok_usd: 1.0, output_per_mtok_usd: 1.0}";

fn consumers(limits: &str, team_budget: Option<f64>) -> (tempfile::TempDir, Vec<Arc<Consumer>>) {
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
    fn redis() -> Store {
        Store::Redis(RedisServer::start())
    }

    /// A replica counting in this store; `replicas` is the share each takes in fallback.
    fn replica(&self, prefix: &str, replicas: u32) -> Replica {
        let ledger = Arc::new(Ledger::in_memory());
        let prices = PriceTable::defaults()
            .with_overrides(&[serde_yaml::from_str(PRICE).unwrap()])
            .unwrap();
        let accounting = Arc::new(Accounting::new(prices, ledger.clone()));
        let limiter = Arc::new(Limiter::new(ledger));
        match self {
            Store::Local => limiter.configure(&LimitsConfig::default(), None),
            Store::Redis(server) => {
                let redis = RedisConfig {
                    url: server.url(),
                    timeout: Duration::from_millis(500),
                    replicas,
                    key_prefix: format!("kg-test-{prefix}"),
                };
                let config = LimitsConfig {
                    backend: LimitsBackend::Redis,
                    redis: Some(redis.clone()),
                    ..LimitsConfig::default()
                };
                limiter.configure(&config, Some(RedisLimits::connect(&redis).unwrap()));
            }
        }
        Replica {
            limiter,
            accounting,
        }
    }
}

impl Replica {
    async fn reserve(
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
    fn charge(&self, c: &Arc<Consumer>, r: &Reservation, tokens: u64, at: SystemTime) {
        let used = Usage {
            input_tokens: tokens,
            model: Some("gpt-test".into()),
            ..Usage::default()
        };
        let charge = self.accounting.charge(c, &used, false, at);
        self.limiter.settle_at(c, r, tokens, charge.micro_usd, at);
    }
}

fn at(text: &str) -> SystemTime {
    humantime::parse_rfc3339(text).unwrap()
}

/// Waits for the background reconciliation a shared store does after a settle.
async fn settled() {
    tokio::time::sleep(Duration::from_millis(200)).await;
}

macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn local() {
                super::$name(super::Store::Local).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn redis() {
                super::$name(super::Store::redis()).await
            }
        }
    )*};
}

on_both_stores!(
    request_windows_refuse_past_the_limit_and_name_the_window,
    token_reservations_are_reconciled_to_actual_usage,
    a_budget_blocks_its_month_and_the_next_month_admits,
    concurrent_reservations_cannot_overshoot_a_budget,
    a_team_budget_is_shared_by_its_consumers,
);

async fn request_windows_refuse_past_the_limit_and_name_the_window(store: Store) {
    let (_dir, consumers) = consumers("{requests_per_minute: 5}", None);
    let replica = store.replica("windows", 1);
    let c = &consumers[0];
    for _ in 0..5 {
        replica.limiter.admit_request(c, None).await.unwrap();
    }
    match replica.limiter.admit_request(c, None).await {
        Err(DenyReason::RateLimited {
            window,
            limit,
            retry_after,
        }) => {
            assert_eq!((window, limit), ("minute", 5));
            assert!(
                retry_after > Duration::from_secs(11) && retry_after <= Duration::from_secs(12),
                "{retry_after:?}"
            );
        }
        other => panic!("the 6th request in a minute: {other:?}"),
    }
    replica
        .limiter
        .admit_request(&consumers[1], None)
        .await
        .expect("another consumer has its own window");
}

async fn token_reservations_are_reconciled_to_actual_usage(store: Store) {
    let (_dir, consumers) = consumers("{tokens_per_minute: 1000}", None);
    let replica = store.replica("tokens", 1);
    let c = &consumers[0];
    let now = SystemTime::now();
    let first = replica.reserve(c, 600, now).await.unwrap();
    assert!(
        matches!(
            replica.reserve(c, 600, now).await,
            Err(DenyReason::TokenLimited {
                window: "minute",
                limit: 1000,
                ..
            })
        ),
        "600 + 600 reserved > 1,000 per minute"
    );
    replica.charge(c, &first, 100, now);
    settled().await;
    let second = replica
        .reserve(c, 600, now)
        .await
        .expect("the unused 500 tokens of the first reservation came back");
    replica.charge(c, &second, 1600, now);
    settled().await;
    assert!(
        replica.reserve(c, 10, now).await.is_err(),
        "an answer longer than reserved leaves the bucket in debt"
    );
}

async fn a_budget_blocks_its_month_and_the_next_month_admits(store: Store) {
    let (_dir, consumers) = consumers("{monthly_budget_usd: 0.0001}", None);
    let replica = store.replica("budget", 1);
    let c = &consumers[0];
    let nov = at("2026-11-29T10:00:00Z");
    let r = replica.reserve(c, 20, nov).await.expect("fits the budget");
    assert_eq!(r.micro_usd, 20);
    replica.charge(c, &r, 90, nov);
    settled().await;
    assert_eq!(
        replica.reserve(c, 20, nov).await.unwrap_err(),
        DenyReason::OverBudget { team: None },
        "90 spent + 20 reserved > 100"
    );
    let dec = at("2026-12-01T00:00:01Z");
    replica
        .reserve(c, 20, dec)
        .await
        .expect("a new month has a new budget");
}

async fn concurrent_reservations_cannot_overshoot_a_budget(store: Store) {
    let (_dir, consumers) = consumers("{monthly_budget_usd: 0.0001}", None);
    let replica = store.replica("concurrent", 1);
    let c = &consumers[0];
    let now = SystemTime::now();
    let mut held = Vec::new();
    while let Ok(r) = replica.reserve(c, 20, now).await {
        held.push(r);
        assert!(held.len() <= 5, "reservations past the budget");
    }
    assert_eq!(
        held.len(),
        5,
        "5 × 20 micro-dollars fill a 100 micro-dollar budget"
    );
    let last = held.pop().unwrap();
    replica.limiter.settle(c, &last, 0, 0);
    replica
        .reserve(c, 20, now)
        .await
        .expect("a released reservation frees room");
}

async fn a_team_budget_is_shared_by_its_consumers(store: Store) {
    let (_dir, consumers) = consumers("{}", Some(0.0001));
    let replica = store.replica("team", 1);
    let (alpha, beta) = (&consumers[0], &consumers[1]);
    let now = SystemTime::now();
    let r = replica.reserve(alpha, 50, now).await.unwrap();
    replica.charge(alpha, &r, 95, now);
    settled().await;
    assert_eq!(
        replica.reserve(beta, 10, now).await.unwrap_err(),
        DenyReason::OverBudget {
            team: Some("ml".into())
        },
        "alpha's spend counts against beta's team"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_sharing_redis_share_one_limit() {
    let store = Store::redis();
    let (_dir, consumers) = consumers("{requests_per_minute: 30}", None);
    let (a, b) = (store.replica("shared", 2), store.replica("shared", 2));
    let c = &consumers[0];
    let mut admitted = 0;
    for i in 0..60 {
        let replica = if i % 2 == 0 { &a } else { &b };
        if replica.limiter.admit_request(c, None).await.is_ok() {
            admitted += 1;
        }
    }
    assert_eq!(
        admitted, 30,
        "two replicas admit the one shared limit, not twice it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_redis_is_down_each_replica_admits_its_share() {
    let mut store = Store::redis();
    let (_dir, consumers) = consumers("{requests_per_minute: 30}", None);
    let replica = store.replica("fallback", 3);
    let c = &consumers[0];
    replica.limiter.admit_request(c, None).await.unwrap();
    if let Store::Redis(server) = &mut store {
        server.stop();
    }
    let mut admitted = 0;
    for _ in 0..30 {
        if replica.limiter.admit_request(c, None).await.is_ok() {
            admitted += 1;
        }
    }
    assert_eq!(admitted, 10, "a third of 30 per minute while Redis is away");
}
