//! Issue 6, item 9: the cost of the local limit checks per request with 1 k, 100 k and 1 M
//! consumers, every one of them holding limiter state (the worst case: all recently active).
//!
//! `cargo bench --bench limits` (sizes: `KEYGATE_BENCH_CONSUMERS=1000,100000,1000000`).
//! Per size: `admit_request` (declared size + the request buckets of every window) and the
//! body phase plus settlement (`admit_body`: token buckets and the monthly budget with its
//! reservation; `settle`: reconciliation to the actual usage). Presented consumers rotate over
//! up to 65,536 spread through the registry, as in the decision benchmark.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test or benchmark fails by panicking

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::SystemTime;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use keygate::accounting::{Accounting, Ledger};
use keygate::auth::{Consumer, KeyHash, Registry};
use keygate::config::{ConsumersConfig, LimitsConfig};
use keygate::limits::{Cost, Limiter};
use keygate::usage::{PriceTable, RequestEstimate};

#[path = "sizes.rs"]
mod sizes;
use sizes::sizes;

const MAX_SAMPLE: usize = 65_536;

/// Provider limits on every window and a budget, all far above what the benchmark spends.
const CONFIG: &str = "listeners: {grpc: \"127.0.0.1:1\", admin: \"127.0.0.1:2\"}\n\
credentials: {source: file, path: secrets.yaml}\n\
providers:\n  openai: {kind: openai, credentials: {production: openai/production}, limits: \
{requests_per_second: 1000000000, requests_per_minute: 60000000000, requests_per_hour: \
3600000000000, requests_per_day: 86400000000000, tokens_per_minute: 1000000000000000, \
tokens_per_day: 1000000000000000000, monthly_budget_usd: 1000000000}}\n\
consumers:\n- {name: template, team: bench, environment: production, provider: openai, \
keys: [{hash: \"sha256:0000000000000000000000000000000000000000000000000000000000000000\"}], \
scope: {routes: [\"POST /v1/chat/completions\"]}}\n";

/// The limit paths never wait when the buckets are local: poll once, without a runtime.
fn now<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("a local limit check waited"),
    }
}

struct Fixture {
    consumers: usize,
    limiter: Arc<Limiter>,
    accounting: Arc<Accounting>,
    sample: Vec<Arc<Consumer>>,
}

fn fixture(n: usize) -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("keygate.yaml");
    std::fs::write(&path, CONFIG).expect("write config");
    let mut config = keygate::config::load(&path).expect("the benchmark config loads");
    let template = config.inline_consumers()[0].clone();
    let consumers = (0..n)
        .map(|i| {
            let mut c = template.clone();
            c.name = format!("c{i:07}");
            c.keys[0].hash = KeyHash::of(&format!("key-{i}"));
            c
        })
        .collect();
    config.consumers = ConsumersConfig::Inline(consumers);
    let registry = Registry::from_config(&config);
    let ledger = Arc::new(Ledger::in_memory());
    let accounting = Arc::new(Accounting::new(PriceTable::defaults(), ledger.clone()));
    let limiter = Arc::new(Limiter::new(ledger));
    limiter.configure(&LimitsConfig::default(), None);
    for c in registry.consumers() {
        now(limiter.admit_request(c, Some(98))).expect("never denied");
    }
    let m = n.clamp(1, MAX_SAMPLE);
    let sample_len = if m.is_power_of_two() {
        m
    } else {
        m.next_power_of_two() / 2
    };
    let stride = (n / sample_len).max(1);
    let sample = registry
        .consumers()
        .iter()
        .step_by(stride)
        .take(sample_len)
        .cloned()
        .collect();
    Fixture {
        consumers: n,
        limiter,
        accounting,
        sample,
    }
}

fn estimate() -> RequestEstimate {
    RequestEstimate {
        model: Some("gpt-4o-mini".into()),
        max_output_tokens: Some(5),
        prompt_tokens_estimate: 5,
        stream: false,
        body_bytes: 100,
    }
}

fn benches(c: &mut Criterion) {
    let fixtures: Vec<Fixture> = sizes().into_iter().map(fixture).collect();
    let mut g = c.benchmark_group("limits");
    for f in &fixtures {
        let mask = f.sample.len() - 1;
        let mut i = 0usize;
        g.bench_function(BenchmarkId::new("admit_request", f.consumers), |b| {
            b.iter(|| {
                i = i.wrapping_add(1);
                let consumer = &f.sample[i & mask];
                black_box(now(f.limiter.admit_request(consumer, Some(98))).is_ok())
            })
        });
        let estimate = estimate();
        g.bench_function(BenchmarkId::new("admit_body+settle", f.consumers), |b| {
            b.iter(|| {
                i = i.wrapping_add(1);
                let consumer = &f.sample[i & mask];
                let worst = consumer.limits.cost_bound(&estimate);
                let cost = Cost {
                    tokens: consumer.limits.token_reservation(&estimate),
                    micro_usd: f
                        .accounting
                        .price(consumer.provider.kind, &worst)
                        .unwrap_or(0),
                };
                let reservation = now(f.limiter.reserve(consumer, 98, cost, SystemTime::now()))
                    .expect("never denied");
                f.limiter.settle(consumer, &reservation, 12, 3);
                black_box(reservation.tokens)
            })
        });
    }
    g.finish();
}

criterion_group!(limits, benches);
criterion_main!(limits);
