//! Item 4 of issue 3: keygate's resident memory with N consumers loaded. For each N it writes
//! a config, runs `keygate serve` on it, waits for /readyz = 200, lets it settle and reads VmRSS
//! and VmHWM (peak) from /proc/PID/status. Bytes per consumer are marginal: (RSS(N) − RSS(1)) / N.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Result;
use clap::Parser;
use keygate_bench::consumers::{self, GenOptions};
use keygate_bench::procs::{free_port, loopback, rss_kib};
use keygate_bench::stack::serve;
use keygate_bench::stats::{against, provenance, table, write_result};

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
    #[arg(long, default_value = "bench/results/memory.md")]
    out: PathBuf,
}

struct Sample {
    consumers: usize,
    config_mb: f64,
    load_s: f64,
    rss_kib: u64,
    hwm_kib: u64,
}

fn measure(n: usize, args: &Args) -> Result<Sample> {
    let dir = tempfile::Builder::new().prefix("keygate-mem-").tempdir()?;
    let (grpc, admin) = (loopback(free_port()?), loopback(free_port()?));
    let generated = consumers::write(dir.path(), &GenOptions::new(n, grpc, admin))?;
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
    Ok(Sample {
        consumers: n,
        config_mb,
        load_s,
        rss_kib,
        hwm_kib,
    })
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
        "RSS bytes / consumer (target ≤ 1024)",
        "peak bytes / consumer",
    ];
    let report = format!(
        "## keygate resident memory\n\n{}\n\n`keygate serve` on a generated config (one key \
         and three routes per consumer), read {} s after /readyz answered 200. Per-consumer \
         figures are marginal: (value(N) − value(1 consumer)) / N.\n\n{}",
        provenance(),
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
    let (rss, hwm) = match base {
        Some(b) => {
            let rss = per(s.rss_kib, b.rss_kib);
            (
                against(rss, 1024.0, format!("{rss:.0}")),
                format!("{:.0}", per(s.hwm_kib, b.hwm_kib)),
            )
        }
        None => ("(base)".into(), "(base)".into()),
    };
    vec![
        s.consumers.to_string(),
        format!("{:.1}", s.config_mb),
        format!("{:.2}", s.load_s),
        format!("{:.1}", s.rss_kib as f64 / 1024.0),
        format!("{:.1}", s.hwm_kib as f64 / 1024.0),
        rss,
        hwm,
    ]
}
