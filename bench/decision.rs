//! Item 2 of issue 3: the decision core with 1 k, 100 k and 1 M consumers loaded.
//!
//! `cargo bench --bench decision` (sizes: `KEYGATE_BENCH_CONSUMERS=1000,100000,1000000`).
//! Per size it measures key parse + checksum, SHA-256, registry lookup (hash included), the
//! decision core (parse + lookup + scope check) and the whole `Gate::decide` (path normalization,
//! header handling and the header rewrite too) with no metrics recorder, and at the end the
//! pipeline's whole request phase (`Pipeline::admit`) with keygate's Prometheus recorder
//! installed, as `keygate serve` runs it. Presented keys
//! rotate over up to 65,536 consumers spread through the registry, so registry lookups miss the
//! cache as they would in production, while the presented key itself is hot (see `keyed`).
//! `criterion-table` (bench/loadgen) turns the results into markdown.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test or benchmark fails by panicking

use std::hint::black_box;
use std::sync::Arc;
use std::time::SystemTime;

use criterion::measurement::WallTime;
use criterion::{
    criterion_group, criterion_main, BatchSize, BenchmarkGroup, BenchmarkId, Criterion,
};
use keygate::accounting::{Accounting, Ledger};
use keygate::auth::{key, KeyEnv, KeyHash, Lookup};
use keygate::gate::Gate;
use keygate::limits::Limiter;
use keygate::pipeline::{Admission, Phases, Pipeline};
use keygate::request::{Header, RequestView};
use keygate::secrets::CredentialCache;
use keygate::usage::PriceTable;

#[path = "sizes.rs"]
mod sizes;
use sizes::sizes;

const PATH: &str = "/v1/chat/completions";
const MAX_SAMPLE: usize = 65_536;

struct Fixture {
    consumers: usize,
    gate: Arc<Gate>,
    /// Bearer header values (`Bearer kg_live_…`); a power-of-two count.
    bearers: Vec<String>,
}

/// A gate with `n` consumers: the config header goes through `keygate::reload::prepare` (which
/// also loads the credential), then the registry is built from `n` consumers made in memory,
/// which is much faster than parsing a million-consumer YAML file and gives the same registry.
fn fixture(n: usize) -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let template_key = key::generate(KeyEnv::Live).expect("OS RNG");
    let config_text = format!(
        "listeners: {{grpc: \"127.0.0.1:1\", admin: \"127.0.0.1:2\"}}\n\
         credentials: {{source: file, path: secrets.yaml}}\n\
         providers:\n  openai: {{kind: openai, credentials: {{production: openai/production}}}}\n\
         consumers:\n- {{name: template, team: bench, environment: production, provider: openai, \
         keys: [{{hash: \"{}\"}}], scope: {{routes: [\"POST /v1/chat/completions\", \
         \"POST /v1/embeddings\", \"GET /v1/models\"]}}}}\n",
        KeyHash::of(key::reveal(&template_key))
    );
    std::fs::write(dir.path().join("keygate.yaml"), config_text).expect("write config");
    std::fs::write(
        dir.path().join("secrets.yaml"),
        "openai/production:\n  api_key: sk-bench-UPSTREAM\n",
    )
    .expect("write secrets");
    let cache = Arc::new(CredentialCache::new());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let prepared = runtime
        .block_on(keygate::reload::prepare(
            &dir.path().join("keygate.yaml"),
            &cache,
            false,
        ))
        .expect("prepare the benchmark config");
    // `prepare` releases the consumer list once the registry holds it: read the template anew.
    let template = keygate::config::load(&dir.path().join("keygate.yaml"))
        .expect("load the benchmark config")
        .inline_consumers()[0]
        .clone();
    // The largest power of two <= min(n, MAX_SAMPLE), so rotation is a mask.
    let m = n.clamp(1, MAX_SAMPLE);
    let sample = if m.is_power_of_two() {
        m
    } else {
        m.next_power_of_two() / 2
    };
    let stride = (n / sample.max(1)).max(1);
    let mut bearers = Vec::with_capacity(sample);
    let consumers: Vec<_> = (0..n)
        .map(|i| {
            let secret = key::generate(KeyEnv::Live).expect("OS RNG");
            let text = key::reveal(&secret);
            if i % stride == 0 && bearers.len() < sample {
                bearers.push(format!("Bearer {text}"));
            }
            let mut c = template.clone();
            c.name = format!("c{i:07}");
            c.keys[0].hash = KeyHash::of(text);
            c
        })
        .collect();
    let mut config = prepared.config;
    config.consumers = keygate::config::ConsumersConfig::Inline(consumers);
    let registry = keygate::auth::Registry::from_config(&config);
    Fixture {
        consumers: n,
        gate: Arc::new(Gate::new(registry, cache)),
        bearers,
    }
}

fn view<'a>(bearer: &'a str) -> RequestView<'a> {
    let h = |name, value: &'a str| Header {
        name,
        value: value.as_bytes(),
    };
    RequestView {
        method: "POST",
        path: PATH,
        headers: vec![
            h(":authority", "127.0.0.1:10000"),
            h(":path", PATH),
            h(":method", "POST"),
            h(":scheme", "http"),
            h("content-type", "application/json"),
            h("content-length", "98"),
            h("authorization", bearer),
            h("user-agent", "keygate-bench/0.1"),
            h("x-forwarded-proto", "http"),
            h("x-request-id", "5a1c7c0e-8d4f-4b8e-9a53-0c2f7b5e9d11"),
        ],
        peer: None,
        header_count: 0,
        body_len: None,
        peer_identity: None,
        body: None,
    }
}

/// Times `op` on a fresh copy of the next presented `Bearer …` value, in batches of 64: the key
/// text is hot in cache, as it is right after the edge read the request, while the registry
/// entries it leads to are as cold as a random consumer's would be.
fn keyed<O>(
    g: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    f: &Fixture,
    mut op: impl FnMut(&str) -> O,
) {
    let mask = f.bearers.len() - 1;
    let mut i = 0usize;
    g.bench_function(BenchmarkId::new(name, f.consumers), |b| {
        b.iter_batched_ref(
            || {
                i = i.wrapping_add(1);
                f.bearers[i & mask].clone()
            },
            |bearer| black_box(op(black_box(bearer.as_str()))),
            BatchSize::NumIterations(64),
        )
    });
}

fn key_of(bearer: &str) -> &str {
    bearer.strip_prefix("Bearer ").unwrap_or(bearer)
}

fn core_benches(c: &mut Criterion, f: &Fixture) {
    let registry = f.gate.registry();
    let now = SystemTime::now();
    let mut g = c.benchmark_group("decision");
    keyed(&mut g, "parse", f, |b| key::parse(key_of(b)).is_ok());
    keyed(&mut g, "hash", f, |b| KeyHash::of(key_of(b)));
    keyed(&mut g, "lookup", f, |b| {
        let Ok(parsed) = key::parse(key_of(b)) else {
            return false;
        };
        matches!(registry.lookup(&parsed, now), Lookup::Found(..))
    });
    keyed(&mut g, "core", f, |b| {
        let Ok(parsed) = key::parse(key_of(b)) else {
            return false;
        };
        let Lookup::Found(consumer, _) = registry.lookup(&parsed, now) else {
            return false;
        };
        keygate::scope::check(&consumer.routes, "POST", black_box(PATH)).is_ok()
    });
    g.finish();
    decide_bench(c, f, "gate_decide");
}

/// The whole `Gate::decide`, including building the request's 10-header `RequestView` (which
/// the Envoy edges do for every request too).
fn decide_bench(c: &mut Criterion, f: &Fixture, name: &str) {
    let mut g = c.benchmark_group("decision");
    keyed(&mut g, name, f, |b| f.gate.decide(&view(b)).outcome());
    g.finish();
}

/// The pipeline's whole request phase (`Pipeline::admit`, header-only as ext_authz runs it):
/// the failed-auth guard, `Gate::authenticate`, the request limits (none configured), the
/// credential rewrite, and the outcome metric and decision histogram.
fn admit_bench(c: &mut Criterion, f: &Fixture) {
    let ledger = Arc::new(Ledger::in_memory());
    let accounting = Arc::new(Accounting::new(PriceTable::defaults(), ledger.clone()));
    let pipeline = Pipeline::new(
        f.gate.clone(),
        Arc::new(Limiter::new(ledger)),
        accounting,
        None,
    );
    let mut g = c.benchmark_group("decision");
    keyed(&mut g, "admit_with_metrics", f, |b| {
        matches!(
            ready(pipeline.admit(&view(b), Phases::HeadersOnly)),
            Admission::Allowed(_)
        )
    });
    g.finish();
}

/// Polls a future that never waits (local limits) to completion.
fn ready<F: std::future::Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let waker = std::task::Waker::noop();
    match future
        .as_mut()
        .poll(&mut std::task::Context::from_waker(waker))
    {
        std::task::Poll::Ready(out) => out,
        std::task::Poll::Pending => panic!("a local admission waited"),
    }
}

fn benches(c: &mut Criterion) {
    let fixtures: Vec<Fixture> = sizes()
        .into_iter()
        .map(|n| {
            let started = std::time::Instant::now();
            let f = fixture(n);
            let allowed = f.gate.decide(&view(&f.bearers[0])).outcome();
            eprintln!(
                "decision: {n} consumers built in {:.1?} ({allowed})",
                started.elapsed()
            );
            f
        })
        .collect();
    for f in &fixtures {
        core_benches(c, f);
    }
    // As `keygate serve` runs: the whole request phase, whose outcome updates Prometheus
    // counters and a histogram.
    if keygate::telemetry::install_prometheus().is_ok() {
        for f in &fixtures {
            admit_bench(c, f);
        }
    }
}

criterion_group!(decision, benches);
criterion_main!(decision);
