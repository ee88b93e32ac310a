//! The shared limits on Redis as it is run at scale, every server real and started by the
//! test: a three-node Redis Cluster (each consumer's buckets in the consumer's slot, so
//! consumers spread over the nodes; every budget in the key prefix's slot, with the epoch),
//! and a Sentinel group whose master is killed while replicas keep deciding.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use common::limits::{consumers, Replica, Store};
use common::redis_cluster::RedisCluster;
use common::redis_sentinel::RedisSentinel;
use keygate::auth::Consumer;
use keygate::denial::DenyReason;

/// Three replicas take turns admitting `decisions` requests of `c`; returns how many passed
/// and how many the window refilled meanwhile at `per_second`.
async fn admit_in_turn(
    replicas: &[Replica],
    c: &Arc<Consumer>,
    decisions: usize,
    per_second: f64,
) -> (u64, u64) {
    let started = Instant::now();
    let mut admitted = 0;
    for i in 0..decisions {
        if replicas[i % replicas.len()]
            .limiter
            .admit_request(c, None)
            .await
            .is_ok()
        {
            admitted += 1;
        }
    }
    let refilled = (started.elapsed().as_secs_f64() * per_second).ceil() as u64;
    (admitted, refilled)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_cluster_three_replicas_share_each_consumers_limit_within_one_percent() {
    let store = Store::Cluster(RedisCluster::start());
    let (_dir, consumers) = consumers("{requests_per_minute: 3000}", None);
    let replicas = [
        store.replica("cluster-rpm", 3).await,
        store.replica("cluster-rpm", 3).await,
        store.replica("cluster-rpm", 3).await,
    ];
    for c in &consumers {
        let (admitted, refilled) = admit_in_turn(&replicas, c, 6000, 50.0).await;
        println!(
            "cluster, 3 replicas, {} limited to 3000/min: admitted {admitted} (+{refilled} refilled)",
            c.name
        );
        assert!(
            admitted >= 2970 && admitted <= 3000 + refilled,
            "{} admitted {admitted}: the leases hold at most 1 % of the limit unused",
            c.name
        );
    }
    let Store::Cluster(cluster) = &store else {
        unreachable!()
    };
    let (alpha, beta) = (&*consumers[0].name, &*consumers[1].name);
    assert_ne!(cluster.slot(alpha), cluster.slot(beta));
    let node_of = |consumer: &str| {
        let by_node = cluster.keys_by_node(&format!("kg-test-cluster-rpm:b:{{{consumer}}}:*"));
        let holding: Vec<usize> = (0..by_node.len())
            .filter(|&n| !by_node[n].is_empty())
            .collect();
        assert_eq!(
            holding.len(),
            1,
            "{consumer}'s buckets are on exactly one node: {by_node:?}"
        );
        holding[0]
    };
    assert_ne!(
        node_of(alpha),
        node_of(beta),
        "alpha's and beta's buckets hash to slots on different nodes"
    );
}

/// Each replica in turn reserves and charges one micro-dollar of `c` until all three are
/// refused; returns the total admitted.
async fn spend_in_turn(replicas: &[Replica], c: &Arc<Consumer>) -> u64 {
    let now = SystemTime::now();
    let mut spent = 0;
    let mut refused = vec![false; replicas.len()];
    while refused.contains(&false) {
        for (i, replica) in replicas.iter().enumerate() {
            match replica.reserve(c, 1, now).await {
                Ok(r) => {
                    replica.charge(c, &r, 1, now);
                    spent += 1;
                    refused[i] = false;
                }
                Err(_) => refused[i] = true,
            }
        }
        assert!(spent <= 1_000, "a budget of hundreds admitted a thousand");
    }
    spent
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_cluster_a_team_budget_is_shared_by_consumers_in_other_slots() {
    let store = Store::Cluster(RedisCluster::start());
    let (_dir, consumers) = consumers("{}", Some(0.0003));
    let replicas = [
        store.replica("cluster-budget", 3).await,
        store.replica("cluster-budget", 3).await,
        store.replica("cluster-budget", 3).await,
    ];
    let (alpha, beta) = (&consumers[0], &consumers[1]);
    let by_alpha = spend_in_turn(&replicas, alpha).await;
    let now = SystemTime::now();
    for replica in &replicas {
        assert_eq!(
            replica.reserve(beta, 1, now).await.unwrap_err(),
            DenyReason::OverBudget {
                team: Some("ml".into())
            },
            "alpha's spend on three replicas counts against beta's team on every replica"
        );
    }
    println!("cluster, team budget 300 micro-dollars: alpha spent {by_alpha} on 3 replicas");
    assert!(
        (297..=300).contains(&by_alpha),
        "spent {by_alpha} of a 300 budget (allowances hold 1 of it per replica)"
    );
    let Store::Cluster(cluster) = &store else {
        unreachable!()
    };
    let budgets = cluster.keys_by_node("{kg-test-cluster-budget}:*");
    let holding: Vec<&Vec<String>> = budgets.iter().filter(|keys| !keys.is_empty()).collect();
    assert_eq!(
        holding.len(),
        1,
        "the budgets and the epoch share one slot: {budgets:?}"
    );
    assert!(
        holding[0].iter().any(|k| k.ends_with(":epoch"))
            && holding[0].iter().any(|k| k.contains(":budget:")),
        "{holding:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_sentinel_failover_limits_are_shared_through_the_new_master() {
    let mut store = Store::Sentinel(RedisSentinel::start());
    let (_dir, consumers) = consumers("{requests_per_minute: 3000}", None);
    let replicas = [
        store.replica("sentinel", 3).await,
        store.replica("sentinel", 3).await,
        store.replica("sentinel", 3).await,
    ];
    let syncing: Vec<_> = replicas.iter().map(Replica::syncing).collect();
    let (alpha, beta) = (&consumers[0], &consumers[1]);
    for i in 0..300 {
        replicas[i % 3]
            .limiter
            .admit_request(alpha, None)
            .await
            .expect("300 of 3000 per minute");
    }
    let Store::Sentinel(group) = &mut store else {
        unreachable!()
    };
    group.replicated();
    group.kill_master();
    // Alpha keeps asking while the master is dead and the sentinels promote the replica:
    // every decision is served (from the lease, then from this replica's share), none errs.
    let started = Instant::now();
    let mut during = 0;
    while !group.promoted() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the sentinels promoted the replica"
        );
        let replica = &replicas[during % 3];
        if let Err(e) = replica.limiter.admit_request(alpha, None).await {
            panic!("decision {during} during the failover: {e:?}");
        }
        during += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "failover from port {} to {} in {:?}; {during} decisions meanwhile, all admitted",
        group.master.port,
        group.replica.port,
        started.elapsed()
    );
    for replica in &replicas {
        replica.shared().await;
    }
    let (admitted, refilled) = admit_in_turn(&replicas, beta, 6000, 50.0).await;
    println!("after the failover, beta limited to 3000/min: admitted {admitted} (+{refilled})");
    assert!(
        admitted >= 2970 && admitted <= 3000 + refilled,
        "beta admitted {admitted}: one limit shared through the new master, not three shares"
    );
    let Store::Sentinel(group) = &store else {
        unreachable!()
    };
    let mut new_master = group.replica.connection();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("kg-test-sentinel:b:*")
        .query(&mut new_master)
        .unwrap();
    assert!(
        keys.iter().any(|k| k.contains("{alpha}")) && keys.iter().any(|k| k.contains("{beta}")),
        "alpha's bucket from before the failover and beta's from after are on the new master: {keys:?}"
    );
    drop(syncing);
}
