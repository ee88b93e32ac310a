//! What only the shared store has, against a real `redis-server`: replicas share one limit
//! within what their leases hold, decisions come from the lease without a Redis call, an
//! outage admits each replica's share, a Redis that comes back empty is rebuilt from the
//! replicas' ledgers, and a restarted replica's spend counts exactly once.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

mod common;

use std::time::{Duration, Instant, SystemTime};

use common::limits::{consumers, Replica, Store};
use keygate::denial::DenyReason;

/// `cmdstat_evalsha` calls so far (every script call after the first load is one).
fn script_calls(store: &Store) -> u64 {
    let Store::Redis(server) = store else {
        panic!("redis only")
    };
    let client = redis::Client::open(server.url()).unwrap();
    let mut conn = client.get_connection().unwrap();
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut conn)
        .unwrap();
    let calls = |name: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(&format!("cmdstat_{name}:calls=")))
            .and_then(|rest| rest.split(',').next())
            .map_or(0, |n| n.parse::<u64>().unwrap())
    };
    calls("evalsha") + calls("eval")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_admit_within_one_percent_of_a_shared_limit() {
    let store = Store::redis();
    let (_dir, consumers) = consumers("{requests_per_minute: 3000}", None);
    let replicas = [
        store.replica("shared", 3).await,
        store.replica("shared", 3).await,
        store.replica("shared", 3).await,
    ];
    let c = &consumers[0];
    let started = Instant::now();
    let mut admitted = 0u64;
    for i in 0..6000 {
        if replicas[i % 3].limiter.admit_request(c, None).await.is_ok() {
            admitted += 1;
        }
    }
    let refilled = (started.elapsed().as_secs_f64() * 50.0).ceil() as u64;
    println!("3 replicas, limit 3000/min: admitted {admitted} (+{refilled} refilled meanwhile)");
    assert!(
        admitted >= 2970 && admitted <= 3000 + refilled,
        "admitted {admitted}: the leases hold at most 1 % of the limit unused"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_come_from_the_lease_not_from_redis() {
    let store = Store::redis();
    let (_dir, consumers) = consumers("{requests_per_minute: 100000}", None);
    let replica = store.replica("lease", 1).await;
    let c = &consumers[0];
    replica.limiter.admit_request(c, None).await.unwrap();
    let before = script_calls(&store);
    for _ in 0..500 {
        replica.limiter.admit_request(c, None).await.unwrap();
    }
    let calls = script_calls(&store) - before;
    assert!(
        calls <= 1,
        "500 decisions from a 1,000-unit lease made {calls} Redis calls"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_redis_is_down_each_replica_admits_its_share() {
    let mut store = Store::redis();
    let (_dir, consumers) = consumers("{requests_per_minute: 30}", None);
    let replica = store.replica("fallback", 3).await;
    let c = &consumers[0];
    replica.limiter.admit_request(c, None).await.unwrap();
    store.server().stop();
    let mut admitted = 0;
    for _ in 0..30 {
        if replica.limiter.admit_request(c, None).await.is_ok() {
            admitted += 1;
        }
    }
    assert_eq!(
        admitted, 11,
        "the one unit its lease still held, then a third of 30 per minute"
    );
}

/// Reserves and charges one micro-dollar at a time until refused; returns how many.
async fn spend_until_refused(
    replica: &Replica,
    c: &std::sync::Arc<keygate::auth::Consumer>,
) -> u64 {
    let now = SystemTime::now();
    let mut spent = 0;
    while let Ok(r) = replica.reserve(c, 1, now).await {
        replica.charge(c, &r, 1, now);
        spent += 1;
        assert!(spent <= 1_000, "a budget of hundreds admitted a thousand");
    }
    spent
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_admits_each_replica_its_share_of_what_was_left() {
    let mut store = Store::redis();
    let (_dir, consumers) = consumers("{monthly_budget_usd: 0.0003}", None);
    let (a, b, c) = (
        store.replica("outage", 3).await,
        store.replica("outage", 3).await,
        store.replica("outage", 3).await,
    );
    let stranger = store.replica("outage", 3).await;
    let alpha = &consumers[0];
    let now = SystemTime::now();
    for (replica, spend) in [(&a, 60), (&b, 10), (&c, 10)] {
        let r = replica.reserve(alpha, spend, now).await.unwrap();
        replica.charge(alpha, &r, spend, now);
    }
    for replica in [&a, &b, &c] {
        replica.shared().await;
    }
    store.server().stop();
    let mut during = 0;
    for replica in [&a, &b, &c] {
        let admitted = spend_until_refused(replica, alpha).await;
        assert!(
            admitted <= 220 / 3,
            "one replica admitted {admitted} of 220 left"
        );
        during += admitted;
    }
    assert_eq!(
        spend_until_refused(&stranger, alpha).await,
        0,
        "a replica with no recent view of the budget admits nothing while Redis is away"
    );
    let total = 80 + during;
    println!("budget 300, spent 80 before the outage, {during} during it: {total}");
    assert!(total <= 300, "spent {total} of a 300 budget");
    assert!(during >= 210, "each replica admitted its share: {during}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_comes_back_empty_is_rebuilt_from_the_ledgers() {
    let mut store = Store::redis();
    let (dir, consumers) = consumers("{monthly_budget_usd: 0.0003}", None);
    let ledger = dir.path().join("a.ledger");
    let (a, b) = (
        store.replica_at(&ledger, "rebuild", 2).await,
        store.replica("rebuild", 2).await,
    );
    let alpha = &consumers[0];
    let now = SystemTime::now();
    let r = a.reserve(alpha, 100, now).await.unwrap();
    a.charge(alpha, &r, 100, now);
    // b's 100 is a charge it no longer holds an allowance for (idle allowances are dropped):
    // after the outage only its ledger knows it.
    let used = keygate::usage::Usage {
        input_tokens: 100,
        model: Some("gpt-test".into()),
        ..Default::default()
    };
    b.accounting.charge(alpha, &used, false, now);
    for replica in [&a, &b] {
        replica.shared().await;
    }
    // Replica a restarts while Redis is away: its 100 spent is only in its ledger file.
    a.limiter.drain().await;
    a.ledger.flush().unwrap();
    drop(a);
    let _syncing = b.syncing();
    store.server().restart_empty();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let a = store.replica_at(&ledger, "rebuild", 2).await;
    assert_eq!(
        a.reserve(alpha, 101, now).await.unwrap_err(),
        DenyReason::OverBudget { team: None },
        "both replicas' 200 spent were rebuilt: 100 left, not 300"
    );
    a.reserve(alpha, 100, now).await.expect("the 100 left");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_replica_counts_its_spend_once_and_holds_nothing() {
    let store = Store::redis();
    let (dir, consumers) = consumers("{monthly_budget_usd: 0.0003}", None);
    let ledger = dir.path().join("a.ledger");
    let alpha = &consumers[0];
    let now = SystemTime::now();
    let a = store.replica_at(&ledger, "restart", 2).await;
    let r = a.reserve(alpha, 100, now).await.unwrap();
    a.charge(alpha, &r, 100, now);
    let held = a.reserve(alpha, 50, now).await.unwrap();
    a.limiter.settle(alpha, &held, 0, 0);
    a.shared().await;
    a.limiter.drain().await;
    a.ledger.flush().unwrap();
    drop(a);
    let restarted = store.replica_at(&ledger, "restart", 2).await;
    restarted.shared().await;
    let b = store.replica("restart", 2).await;
    assert_eq!(
        b.reserve(alpha, 201, now).await.unwrap_err(),
        DenyReason::OverBudget { team: None },
        "the restarted replica's 100 counts (once: 200 are left)"
    );
    b.reserve(alpha, 200, now)
        .await
        .expect("nothing stays held in the stopped process's name");
}
