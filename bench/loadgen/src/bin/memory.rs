//! keygate's resident memory with N consumers loaded, then with all N active. For each N it
//! writes a config (provider limits on every window, local buckets), runs `keygate serve`,
//! waits for /readyz = 200, lets it settle and reads VmRSS and VmHWM (peak) from
//! /proc/PID/status; then it sends one ext_authz check per consumer key, so every consumer has
//! its limiter buckets, metric series and detector state, and reads them again. Bytes per
//! consumer are marginal: (RSS(N) − RSS(1)) / N.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use clap::Parser;
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use keygate_bench::consumers::{self, GenOptions, LimitsBackend, HELD};
use keygate_bench::decisions::check_request;
use keygate_bench::procs::{free_port, loopback, rss_kib};
use keygate_bench::stack::serve;
use keygate_bench::stats::{against, provenance, table, write_result};
use tonic::transport::Endpoint;

#[derive(Debug, Parser)]
#[command(about = "keygate's resident memory per consumer")]
struct Args {
    #[arg(long, default_value = "1000,100000,1000000", value_delimiter = ',')]
    consumers: Vec<usize>,
    /// Seconds to wait after /readyz before reading memory.
    #[arg(long, default_value_t = 2.0)]
    settle: f64,
    /// Seconds keygate may take to load the largest config.
    #[arg(long, default_value_t = 900.0)]
    ready_timeout: f64,
    /// Concurrent ext_authz checks while activating every consumer.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    #[arg(long, default_value = "bench/results/memory.md")]
    out: PathBuf,
}

struct Sample {
    consumers: usize,
    config_mb: f64,
    load_s: f64,
    rss_kib: u64,
    hwm_kib: u64,
    /// After one allowed request from every consumer.
    active_rss_kib: u64,
    activate_s: f64,
}

fn measure(n: usize, args: &Args) -> Result<Sample> {
    let dir = tempfile::Builder::new().prefix("keygate-mem-").tempdir()?;
    let (grpc, admin) = (loopback(free_port()?), loopback(free_port()?));
    let mut opts = GenOptions::new(n, grpc, admin);
    opts.sample = n;
    opts.limits = Some(LimitsBackend::Local);
    opts.limits_policy = HELD;
    let generated = consumers::write(dir.path(), &opts)?;
    let config_mb = std::fs::metadata(&generated.config)?.len() as f64 / 1e6;
    let started = Instant::now();
    let timeout = Duration::from_secs_f64(args.ready_timeout);
    let kg = serve(dir.path(), generated, grpc, admin, &[], timeout)?;
    let load_s = started.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_secs_f64(args.settle));
    let (rss_kib, hwm_kib) = rss_kib(kg.child.pid())?;
    eprintln!(
        "memory: {n} consumers: config {config_mb:.1} MB, ready in {load_s:.1} s, \
         VmRSS {rss_kib} KiB, VmHWM {hwm_kib} KiB"
    );
    let started = Instant::now();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(activate(kg.grpc, &kg.keys, args.concurrency))?;
    let activate_s = started.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_secs_f64(args.settle));
    let (active_rss_kib, _) = keygate_bench::procs::rss_kib(kg.child.pid())?;
    eprintln!("memory: {n} consumers active after {activate_s:.1} s: VmRSS {active_rss_kib} KiB");
    Ok(Sample {
        consumers: n,
        config_mb,
        load_s,
        rss_kib,
        hwm_kib,
        active_rss_kib,
        activate_s,
    })
}

/// One ext_authz check per key, `concurrency` at a time; fails unless every one is allowed.
async fn activate(grpc: SocketAddr, keys: &[String], concurrency: usize) -> Result<()> {
    let channel = Endpoint::from_shared(format!("http://{grpc}"))?
        .connect()
        .await?;
    let keys: Arc<[String]> = keys.into();
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let (channel, keys, next) = (channel.clone(), keys.clone(), next.clone());
        tasks.spawn(async move {
            let mut client = AuthorizationClient::new(channel);
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(key) = keys.get(i) else {
                    return Ok::<(), anyhow::Error>(());
                };
                let status = client.check(check_request(key)).await?.into_inner().status;
                if status.as_ref().is_none_or(|s| s.code != 0) {
                    bail!("consumer {i} was not allowed: {status:?}");
                }
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    Ok(())
}

fn main() -> Result<()> {
    let args = Args::parse();
    let base = measure(1, &args)?;
    let mut rows = vec![row(&base, None)];
    for &n in &args.consumers {
        let s = measure(n, &args)?;
        rows.push(row(&s, Some(&base)));
    }
    let headers = [
        "consumers",
        "config file MB",
        "start → ready s",
        "VmRSS MiB",
        "VmHWM (peak) MiB",
        "RSS bytes / consumer, loaded",
        "peak bytes / consumer",
        "all active: s to activate",
        "all active: VmRSS MiB",
        "all active: RSS bytes / consumer (target ≤ 1024)",
    ];
    let report = format!(
        "## keygate resident memory\n\n{}\n\n`keygate serve` on a generated config (one key \
         and three routes per consumer; provider limits on every request and token window and \
         a monthly budget, local buckets), read {} s after /readyz answered 200 (*loaded*). \
         Then one ext_authz check per consumer key, all allowed, and read again {} s later \
         (*all active*): every consumer now also holds its limiter buckets (the daily bucket \
         refills one request per 864 s, so none is evicted as idle during the run), its \
         per-consumer metric series and its detector state — the worst case where every \
         consumer was active in the last hours. Per-consumer figures are marginal: \
         (value(N) − value(1 consumer)) / N.\n\n{}",
        provenance(),
        args.settle,
        args.settle,
        table(&headers, &rows)
    );
    println!("{report}");
    write_result(&args.out, &report)?;
    eprintln!("memory: wrote {}", args.out.display());
    Ok(())
}

fn row(s: &Sample, base: Option<&Sample>) -> Vec<String> {
    let per = |v: u64, b: u64| (v.saturating_sub(b) * 1024) as f64 / s.consumers as f64;
    let (rss, hwm, active) = match base {
        Some(b) => {
            let active = per(s.active_rss_kib, b.active_rss_kib);
            (
                format!("{:.0}", per(s.rss_kib, b.rss_kib)),
                format!("{:.0}", per(s.hwm_kib, b.hwm_kib)),
                against(active, 1024.0, format!("{active:.0}")),
            )
        }
        None => ("(base)".into(), "(base)".into(), "(base)".into()),
    };
    vec![
        s.consumers.to_string(),
        format!("{:.1}", s.config_mb),
        format!("{:.2}", s.load_s),
        format!("{:.1}", s.rss_kib as f64 / 1024.0),
        format!("{:.1}", s.hwm_kib as f64 / 1024.0),
        rss,
        hwm,
        format!("{:.1}", s.activate_s),
        format!("{:.1}", s.active_rss_kib as f64 / 1024.0),
        active,
    ]
}
