//! Budgets across calendar months and restarts, with an explicit clock: spend in one month
//! blocks that month only, a restart (reopened ledger) keeps it, and the next month admits
//! again; and a detector's throttle. The suite that runs on both limit stores is
//! `limits_backends.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test or benchmark fails by panicking

use std::sync::Arc;
use std::time::SystemTime;

use keygate::accounting::{Accounting, Ledger};
use keygate::auth::Consumer;
use keygate::denial::DenyReason;
use keygate::limits::{Cost, Limiter};
use keygate::usage::{PriceTable, RequestEstimate, Usage};

fn at(text: &str) -> SystemTime {
    humantime::parse_rfc3339(text).unwrap()
}

/// Loads the one consumer of a config made of `body` plus the file credentials.
fn load_consumer(dir: &std::path::Path, body: &str) -> Arc<keygate::auth::Consumer> {
    let config = dir.join("keygate.yaml");
    std::fs::write(
        dir.join("secrets.yaml"),
        "openai/production: {api_key: sk-x}\n",
    )
    .unwrap();
    std::fs::write(
        &config,
        format!("credentials: {{source: file, path: secrets.yaml}}\n{body}"),
    )
    .unwrap();
    let loaded = keygate::config::load(&config).unwrap();
    keygate::auth::Registry::from_config(&loaded).consumers()[0].clone()
}

fn consumer(dir: &std::path::Path) -> Arc<keygate::auth::Consumer> {
    load_consumer(
        dir,
        r#"
providers:
  openai: {kind: openai, credentials: {production: openai/production}}
usage:
  pricing: [{provider: openai, model: gpt-test, input_per_mtok_usd: 1.0, output_per_mtok_usd: 1.0}]
consumers:
  - name: capped
    environment: production
    provider: openai
    keys: [{hash: "sha256:0000000000000000000000000000000000000000000000000000000000000001"}]
    scope: {routes: ["POST /v1/chat/completions"]}
    limits: {monthly_budget_usd: 0.0001, default_max_tokens: 10}
"#,
    )
}

fn limiter(ledger: Ledger) -> (Arc<Accounting>, Arc<Limiter>) {
    let prices = PriceTable::defaults()
        .with_overrides(&[serde_yaml::from_str("{provider: openai, model: gpt-test, input_per_mtok_usd: 1.0, output_per_mtok_usd: 1.0}").unwrap()])
        .unwrap();
    let ledger = Arc::new(ledger);
    let accounting = Arc::new(Accounting::new(prices, ledger.clone()));
    (accounting, Arc::new(Limiter::new(ledger)))
}

/// The body phase's reservation, priced as the pipeline prices it.
async fn admit_body_at(
    limiter: &Limiter,
    c: &Consumer,
    body_len: u64,
    estimate: &RequestEstimate,
    at: SystemTime,
) -> Result<keygate::limits::Reservation, DenyReason> {
    let prices = PriceTable::defaults()
        .with_overrides(&[serde_yaml::from_str("{provider: openai, model: gpt-test, input_per_mtok_usd: 1.0, output_per_mtok_usd: 1.0}").unwrap()])
        .unwrap();
    let worst = c.limits.cost_bound(estimate);
    let cost = Cost {
        tokens: c.limits.token_reservation(estimate),
        micro_usd: prices.cost_for(c.provider.kind, &worst).unwrap_or(0),
    };
    limiter.reserve(c, body_len, cost, at).await
}

fn estimate() -> RequestEstimate {
    RequestEstimate {
        model: Some("gpt-test".into()),
        max_output_tokens: Some(10),
        prompt_tokens_estimate: 10,
        stream: false,
        body_bytes: 10,
    }
}

#[tokio::test]
async fn budget_blocks_its_month_survives_a_restart_and_resets_next_month() {
    let dir = tempfile::tempdir().unwrap();
    let c = consumer(dir.path());
    let path = dir.path().join("ledger.redb");
    let nov = at("2026-11-29T10:00:00Z");
    {
        let (accounting, limiter) = limiter(Ledger::open(&path).unwrap());
        let reservation = admit_body_at(&limiter, &c, 100, &estimate(), nov)
            .await
            .expect("fits the budget");
        assert_eq!(reservation.micro_usd, 20);
        let used = Usage {
            input_tokens: 50,
            output_tokens: 40,
            model: Some("gpt-test".into()),
            ..Usage::default()
        };
        let charge = accounting.charge(&c, &used, false, nov);
        limiter.settle(&c, &reservation, used.total_tokens(), charge.micro_usd);
        assert_eq!(charge.month_to_date_micro_usd, 90);
        let denied = admit_body_at(&limiter, &c, 100, &estimate(), nov)
            .await
            .unwrap_err();
        assert_eq!(
            denied,
            DenyReason::OverBudget { team: None },
            "90 spent + 20 reserved > 100"
        );
        accounting.ledger.flush().unwrap();
    }
    let (_, limiter) = limiter(Ledger::open(&path).unwrap());
    assert!(
        admit_body_at(&limiter, &c, 100, &estimate(), nov)
            .await
            .is_err(),
        "still denied after a restart"
    );
    let dec = at("2026-12-01T00:00:01Z");
    assert!(
        admit_body_at(&limiter, &c, 100, &estimate(), dec)
            .await
            .is_ok(),
        "a new month has a new budget"
    );
}

#[tokio::test]
async fn a_detector_throttle_tightens_request_limits_for_its_period() {
    let dir = tempfile::tempdir().unwrap();
    let c = load_consumer(
        dir.path(),
        r#"
providers:
  openai: {kind: openai, credentials: {production: openai/production}, limits: {requests_per_minute: 40}}
consumers:
  - name: busy
    environment: production
    provider: openai
    keys: [{hash: "sha256:0000000000000000000000000000000000000000000000000000000000000002"}]
    scope: {routes: ["GET /v1/models"]}
"#,
    );
    let (_, limiter) = limiter(Ledger::in_memory());
    limiter.throttle(&c.name, 0.25, std::time::Duration::from_secs(60));
    let mut admitted = 0;
    while limiter.admit_request(&c, None).await.is_ok() {
        admitted += 1;
        assert!(admitted <= 40, "the throttle was not applied");
    }
    assert_eq!(admitted, 10, "a quarter of 40 per minute");
}

#[tokio::test]
async fn unthrottle_lifts_a_detector_throttle_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let c = load_consumer(
        dir.path(),
        r#"
providers:
  openai: {kind: openai, credentials: {production: openai/production}, limits: {requests_per_minute: 40}}
consumers:
  - name: busy
    environment: production
    provider: openai
    keys: [{hash: "sha256:0000000000000000000000000000000000000000000000000000000000000003"}]
    scope: {routes: ["GET /v1/models"]}
"#,
    );
    let (_, limiter) = limiter(Ledger::in_memory());
    assert!(!limiter.unthrottle(&c.name), "nothing to lift yet");
    limiter.throttle(&c.name, 0.25, std::time::Duration::from_secs(60));
    while limiter.admit_request(&c, None).await.is_ok() {}
    assert!(limiter.unthrottle(&c.name));
    let mut admitted = 0;
    while limiter.admit_request(&c, None).await.is_ok() {
        admitted += 1;
        assert!(admitted <= 40);
    }
    assert_eq!(admitted, 30, "the rest of the consumer's own 40 per minute");
    assert!(!limiter.unthrottle(&c.name));
}
