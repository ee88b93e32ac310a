//! Where keygate's per-consumer memory goes, by counting allocations: a counting global
//! allocator measures the live heap of a parsed `Config`, the peak while parsing the YAML, the
//! `Registry` built from it, and what stays held as `serve` holds it: the registry plus two
//! copies of the config (`serve`'s and the reloader's) once the consumer list is released.
//! Then what one allowed request adds per consumer, component by component: limiter buckets,
//! detector state and the per-consumer metrics record with its source address (the cost of
//! one series in the `metrics` registry is measured beside it). It installs no Prometheus
//! recorder while it measures startup, so a per-consumer series set there is not counted:
//! check `/metrics` of a running `serve` for those.

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use std::future::Future;
use std::net::IpAddr;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use anyhow::Result;
use clap::Parser;
use keygate::accounting::{Accounting, Ledger};
use keygate::auth::{Consumer, Registry};
use keygate::config::LimitsConfig;
use keygate::consumer_state::ConsumerSlots;
use keygate::detect::{DetectConfig, Detectors, Observation};
use keygate::limits::Limiter;
use keygate::usage::PriceTable;
use keygate_bench::consumers::{self, GenOptions, LimitsBackend, HELD};
use keygate_bench::procs::loopback;
use keygate_bench::stats::{provenance, table, write_result};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
static BLOCKS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator and only updates counters.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let now = LIVE.fetch_add(layout.size(), Relaxed) + layout.size();
        PEAK.fetch_max(now, Relaxed);
        BLOCKS.fetch_add(1, Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Relaxed);
        BLOCKS.fetch_sub(1, Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[derive(Debug, Parser)]
#[command(about = "Live heap per consumer held by keygate's Config and Registry")]
struct Args {
    #[arg(long, default_value_t = 100_000)]
    consumers: usize,
    #[arg(long, default_value = "bench/results/memory-breakdown.md")]
    out: PathBuf,
}

/// Local limit checks never wait: poll once, without a runtime.
fn poll_once<F: Future>(future: F) -> Option<F::Output> {
    match pin!(future).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(out) => Some(out),
        Poll::Pending => None,
    }
}

fn snapshot() -> (usize, usize) {
    (LIVE.load(Relaxed), BLOCKS.load(Relaxed))
}

/// What `keygate serve` holds once started, measured around the same calls it makes
/// (prepare, `App::build`, activate): the registry plus every index and cache built from it.
fn serve_startup(config: &std::path::Path, row: &mut impl FnMut(&str, usize, usize)) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (before, blocks_before) = snapshot();
    let held = {
        let _guard = rt.enter();
        let cache = Arc::new(keygate::secrets::CredentialCache::new());
        let prepared = rt.block_on(keygate::reload::prepare(config, &cache, false))?;
        let app = keygate::app::App::build(&prepared.config, cache)?;
        let (config, background) = app.activate(prepared, None)?;
        (app, config, background)
    };
    let (after, blocks_after) = snapshot();
    row(
        "everything `serve` holds once started (prepare, `App::build`, activate)",
        after - before,
        blocks_after - blocks_before,
    );
    drop(held);
    Ok(())
}

fn main() -> Result<()> {
    let args = Args::parse();
    let n = args.consumers;
    let dir = tempfile::tempdir()?;
    let mut opts = GenOptions::new(n, loopback(1), loopback(2));
    opts.limits = Some(LimitsBackend::Local);
    opts.limits_policy = HELD;
    let generated = consumers::write(dir.path(), &opts)?;
    let mut rows = Vec::new();
    let mut row = |what: &str, bytes: usize, blocks: usize| {
        rows.push(vec![
            what.to_string(),
            format!("{:.0}", bytes as f64 / n as f64),
            format!("{:.1}", blocks as f64 / n as f64),
        ]);
    };

    serve_startup(&generated.config, &mut row)?;
    let (live0, blocks0) = snapshot();
    PEAK.store(live0, Relaxed);
    let config = keygate::config::load(&generated.config)?;
    let (live1, blocks1) = snapshot();
    let parse_peak = PEAK.load(Relaxed) - live0;
    row(
        "parsed `Config` (live after load)",
        live1 - live0,
        blocks1 - blocks0,
    );
    row("peak while reading + parsing the YAML", parse_peak, 0);
    let mut config = config;
    let registry = Registry::from_config(&config);
    let (live2, blocks2) = snapshot();
    row("`Registry` built from it", live2 - live1, blocks2 - blocks1);
    config.release_inline_consumers();
    let (live3, blocks3) = snapshot();
    row(
        "`Config` after its consumer list is released",
        (live3 + live1).saturating_sub(live2 + live0),
        (blocks3 + blocks1).saturating_sub(blocks2 + blocks0),
    );
    let second = config.clone();
    let (live4, blocks4) = snapshot();
    row(
        "a second `Config` (the reloader's clone)",
        live4 - live3,
        blocks4 - blocks3,
    );
    row(
        "total held: Registry + 2 × released Config",
        live4 - live0,
        blocks4 - blocks0,
    );
    // 16 bytes of glibc malloc header/rounding per block is the usual minimum on x86-64.
    row(
        "same, with ~16 B of malloc overhead per block",
        live4 - live0 + 16 * (blocks4 - blocks0),
        blocks4 - blocks0,
    );
    let now = Instant::now();
    let source = Some(IpAddr::from([10, 0, 0, 7]));
    let mut step = |what: &str, op: &mut dyn FnMut(&Arc<Consumer>)| {
        let (before, blocks_before) = snapshot();
        for c in registry.consumers() {
            op(c);
        }
        let (after, blocks_after) = snapshot();
        row(what, after - before, blocks_after - blocks_before);
    };
    let ledger = Arc::new(Ledger::in_memory());
    let slots = Arc::new(ConsumerSlots::default());
    let accounting = Arc::new(Accounting::with_slots(
        PriceTable::defaults(),
        ledger.clone(),
        slots.clone(),
    ));
    let limiter = Limiter::with_slots(ledger, slots.clone());
    limiter.configure(&LimitsConfig::default(), None);
    step(
        "active: its slot (one map entry; the record pointer, buckets and detector state inline)",
        &mut |c| {
            slots.get_or_make(&c.name);
        },
    );
    step(
        "active: limiter buckets (request + token windows, beyond the slot)",
        &mut |c| {
            let _ = poll_once(limiter.admit_request(c, Some(98)));
        },
    );
    let detectors = Detectors::with_slots(DetectConfig::default(), slots.clone());
    step(
        "active: detector state (beyond the slot: its learned address)",
        &mut |c| {
            detectors.observe(&c.name, Observation::request(now, source));
        },
    );
    step(
        "active: metrics record, ext_authz (requests by outcome, the source-address gauge; beyond the slot)",
        &mut |c| {
            accounting
                .meters
                .record(&c.name, &c.provider.name)
                .outcome("allowed");
        },
    );
    step(
        "active: its source address (in the metrics record)",
        &mut |c| {
            if let Some(ip) = source {
                let record = accounting.meters.record(&c.name, &c.provider.name);
                accounting.meters.saw(&record, ip, now);
            }
        },
    );
    let mut published = false;
    step("active: the source-address gauge, published", &mut |_| {
        if !std::mem::replace(&mut published, true) {
            accounting.publish_sources(std::time::Duration::from_secs(3600));
        }
    });
    let model: Arc<str> = "gpt-4o-mini".into();
    step(
        "active: metrics, full mode (plus responses, bytes, tokens and spend of one model, month to date)",
        &mut |c| {
            let record = accounting.meters.record(&c.name, &c.provider.name);
            record.request_bytes(512);
            record.response(200);
            record.response_bytes(900);
            record.charge(&model, [120, 30, 0, 0, 0], 105);
            record.set_month_to_date(105);
        },
    );
    let now_wall = std::time::SystemTime::now();
    step("active: the month-to-date ledger entry", &mut |c| {
        accounting.ledger.add(&c.name, 105, now_wall);
    });
    let recorder = keygate::telemetry::install_prometheus();
    step(
        "for comparison: one series per consumer in the `metrics` registry (what `keygate_requests_total` cost before)",
        &mut |c| {
            metrics::counter!(keygate::telemetry::REQUESTS_TOTAL, "consumer" => c.name.clone(), "provider" => c.provider.name.clone(), "outcome" => "allowed").increment(1);
        },
    );
    drop((
        registry, second, config, limiter, detectors, recorder, slots,
    ));

    let report = format!(
        "## Where the memory per consumer goes (counting allocator, {n} consumers)\n\n{}\n\n\
         `mem-breakdown`: live heap bytes and heap blocks per consumer, counted by a global \
         allocator wrapper around the same library calls `keygate serve` makes.\n\n{}",
        provenance(),
        table(
            &["what", "bytes / consumer", "heap blocks / consumer"],
            &rows
        )
    );
    println!("{report}");
    write_result(&args.out, &report)?;
    eprintln!("mem-breakdown: wrote {}", args.out.display());
    Ok(())
}
