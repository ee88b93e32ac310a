//! Where keygate's per-consumer memory goes, by counting allocations: a counting global
//! allocator measures the live heap of a parsed `Config`, the peak while parsing the YAML, the
//! `Registry` built from it, and what stays held as `serve` holds it: the registry plus two
//! copies of the config (`serve`'s and the reloader's) once the consumer list is released.

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use anyhow::Result;
use clap::Parser;
use keygate::auth::Registry;
use keygate_bench::consumers::{self, GenOptions};
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

fn snapshot() -> (usize, usize) {
    (LIVE.load(Relaxed), BLOCKS.load(Relaxed))
}

fn main() -> Result<()> {
    let args = Args::parse();
    let n = args.consumers;
    let dir = tempfile::tempdir()?;
    let opts = GenOptions::new(n, loopback(1), loopback(2));
    let generated = consumers::write(dir.path(), &opts)?;
    let mut rows = Vec::new();
    let mut row = |what: &str, bytes: usize, blocks: usize| {
        rows.push(vec![
            what.to_string(),
            format!("{:.0}", bytes as f64 / n as f64),
            format!("{:.1}", blocks as f64 / n as f64),
        ]);
    };

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
    drop((registry, second, config));

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
