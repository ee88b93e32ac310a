//! The limits suite, run on both stores behind the seam: this process's buckets and budgets,
//! and a real `redis-server` shared by replicas (decided from leases and allowances). Request
//! windows, token reservation and reconciliation, budgets across months, concurrent
//! reservations, team budgets. What only the shared store has is in `limits_shared.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

mod common;

use std::time::{Duration, SystemTime};

use common::limits::{at, consumers, Store};
use keygate::denial::DenyReason;

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
    let replica = store.replica("windows", 1).await;
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
    let replica = store.replica("tokens", 1).await;
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
    let second = replica
        .reserve(c, 600, now)
        .await
        .expect("the unused 500 tokens of the first reservation came back");
    replica.charge(c, &second, 1600, now);
    assert!(
        replica.reserve(c, 10, now).await.is_err(),
        "an answer longer than reserved leaves the bucket in debt"
    );
}

async fn a_budget_blocks_its_month_and_the_next_month_admits(store: Store) {
    let (_dir, consumers) = consumers("{monthly_budget_usd: 0.0001}", None);
    let replica = store.replica("budget", 1).await;
    let c = &consumers[0];
    let nov = at("2026-11-29T10:00:00Z");
    let r = replica.reserve(c, 20, nov).await.expect("fits the budget");
    assert_eq!(r.micro_usd, 20);
    replica.charge(c, &r, 90, nov);
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
    let replica = store.replica("concurrent", 1).await;
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
    let replica = store.replica("team", 1).await;
    let (alpha, beta) = (&consumers[0], &consumers[1]);
    let now = SystemTime::now();
    let r = replica.reserve(alpha, 50, now).await.unwrap();
    replica.charge(alpha, &r, 95, now);
    assert_eq!(
        replica.reserve(beta, 10, now).await.unwrap_err(),
        DenyReason::OverBudget {
            team: Some("ml".into())
        },
        "alpha's spend counts against beta's team"
    );
}
