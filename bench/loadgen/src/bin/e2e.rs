//! End-to-end latency through real Envoy to the mock provider, without keygate (baseline) and
//! with keygate in each configuration of [`CONFIGURATIONS`] (ext_authz, ext_proc, usage
//! accounting, limits local and in Redis, Vault credentials). Open loop at fixed rates,
//! configurations interleaved in rounds, plus a closed-loop throughput probe.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Parser;
use keygate_bench::consumers::{Credentials, LimitsBackend};
use keygate_bench::e2e::{report, Cell, Configuration, Flavor, RunShape, Setup, CONFIGURATIONS};
use keygate_bench::envoy_cfg::Endpoint;
use keygate_bench::http_load::{closed_loop, open_loop, Pool};
use keygate_bench::procs::{built_bin, cpu_time, http_get, Child};
use keygate_bench::services::{start_bao, start_redis, BAO_ROOT_TOKEN};
use keygate_bench::stack::{start_envoy, start_keygate_with, start_mock, EnvoyKind, Keygate};
use keygate_bench::stats::{provenance, Recorder};
use keygate_bench::{envoy_cfg, until_ctrl_c};

#[derive(Debug, Parser)]
#[command(about = "End-to-end latency: Envoy → mock provider, with and without keygate")]
struct Args {
    /// Open-loop rates, requests/s.
    #[arg(long, default_value = "500,1000,2000", value_delimiter = ',')]
    rates: Vec<f64>,
    /// Rounds per rate; each round runs every configuration once, in rotated order.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Measured seconds per configuration per round.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds discarded at the start of every segment.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Seconds at 1,000 req/s per configuration before the first round (discarded).
    #[arg(long, default_value_t = 3.0)]
    initial_warmup: f64,
    /// Closed-loop probe: seconds per configuration per round (0 skips the probe).
    #[arg(long, default_value_t = 5.0)]
    probe_duration: f64,
    #[arg(long, default_value_t = 2)]
    probe_rounds: usize,
    /// Closed-loop probe: concurrent connections, each sending back to back.
    #[arg(long, default_value_t = 16)]
    probe_conns: usize,
    /// Consumers in keygate's registry.
    #[arg(long, default_value_t = 1000)]
    consumers: usize,
    /// Connection pool size per Envoy (open loop).
    #[arg(long, default_value_t = 64)]
    max_conns: usize,
    /// Only these configurations besides the baseline (ext_authz, ext_proc, ext_proc+usage,
    /// usage+limits, usage+redis, ext_proc+vault, ext_authz+uds, ext_proc+uds, null_authz,
    /// null_proc); default: all.
    /// For focused runs.
    #[arg(long, value_delimiter = ',')]
    configs: Vec<String>,
    /// Where the markdown table is written.
    #[arg(long, default_value = "bench/results/e2e.md")]
    out: PathBuf,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let report = runtime.block_on(until_ctrl_c(run(&args)))?;
    println!("{report}");
    keygate_bench::stats::write_result(&args.out, &report)?;
    eprintln!("e2e: wrote {}", args.out.display());
    Ok(())
}

async fn run(args: &Args) -> Result<String> {
    let workdir = tempfile::Builder::new().prefix("keygate-e2e-").tempdir()?;
    let dir = workdir.path();
    let (mock, mock_port) = start_mock(dir)?;
    let usage = EnvoyKind::ExtProcUsage.shipped();
    if !envoy_cfg::has_response_phases(&usage)? {
        bail!("{} sends no response phases to keygate", usage.display());
    }
    let chosen: Vec<Configuration> = CONFIGURATIONS
        .into_iter()
        .filter(|c| {
            c.envoy == EnvoyKind::Baseline
                || args.configs.is_empty()
                || args.configs.iter().any(|n| n == c.name)
        })
        .collect();
    let mut services = Vec::new();
    let mut keygates: Vec<(Flavor, Keygate)> = Vec::new();
    let mut setups = Vec::new();
    for config in chosen {
        let keygate = match keygates.iter().position(|(f, _)| *f == config.flavor) {
            Some(i) => i,
            None => {
                let kg = start_flavor(dir, config.flavor, args.consumers, &mut services)?;
                keygates.push((config.flavor, kg));
                keygates.len() - 1
            }
        };
        let kg = &keygates[keygate].1;
        let (endpoint, tag) = match (&kg.uds, config.uds) {
            (Some(path), true) => (Endpoint::Uds(path.clone()), "-uds"),
            (None, true) => bail!("{}: its keygate serves no Unix socket", config.name),
            (_, false) => (Endpoint::Port(kg.grpc.port()), ""),
        };
        let (envoy, addr) = start_envoy(dir, config.envoy, tag, endpoint, mock_port)?;
        let extra: &[(&str, &str)] = match (config.envoy, config.flavor) {
            (EnvoyKind::Baseline, _) | (_, Flavor::Null) => &[("x-keygate-provider", "openai")],
            _ => &[],
        };
        let pool = Pool::new(addr, args.max_conns, &kg.keys, extra)?;
        pool.request().await.with_context(|| {
            format!(
                "{}: the first request did not get a 200\n{}\n{}",
                config.name,
                envoy.log_tail(),
                kg.child.log_tail()
            )
        })?;
        setups.push(Setup {
            config,
            pool,
            envoy,
            keygate,
        });
    }
    for s in &setups {
        eprintln!(
            "e2e: warming up {} ({}s)",
            s.config.name, args.initial_warmup
        );
        let warm = Duration::from_secs_f64(args.initial_warmup);
        open_loop(&s.pool, 1000.0, Duration::ZERO, warm).await?;
    }
    let (warmup, measure) = (
        Duration::from_secs_f64(args.warmup),
        Duration::from_secs_f64(args.duration),
    );
    let pids = |s: &Setup| {
        [
            s.envoy.pid(),
            keygates[s.keygate].1.child.pid(),
            mock.pid(),
            std::process::id(),
        ]
    };
    let mut cells: Vec<Vec<Cell>> = Vec::new();
    for &rate in &args.rates {
        let mut row: Vec<Cell> = setups.iter().map(|_| Cell::default()).collect();
        for round in 0..args.rounds {
            for k in 0..setups.len() {
                let i = (k + round) % setups.len();
                let s = &setups[i];
                let before = cpu_of(&pids(s));
                let rec = open_loop(&s.pool, rate, warmup, measure).await?;
                let after = cpu_of(&pids(s));
                let cell = &mut row[i];
                for (c, (a, b)) in cell.cpu.iter_mut().zip(after.iter().zip(before.iter())) {
                    *c += a - b;
                }
                cell.sent += rate * (warmup + measure).as_secs_f64();
                eprintln!(
                    "e2e: {rate} req/s round {} {:<14} p50 {:.3} ms p99 {:.3} ms errors {}",
                    round + 1,
                    s.config.name,
                    rec.ms(0.5),
                    rec.ms(0.99),
                    rec.errors
                );
                cell.total.merge(&rec);
                cell.rounds.push(rec);
            }
        }
        cells.push(row);
    }
    let mut probes: Vec<Recorder> = setups.iter().map(|_| Recorder::new()).collect();
    if args.probe_duration > 0.0 {
        let d = Duration::from_secs_f64(args.probe_duration);
        for round in 0..args.probe_rounds {
            for k in 0..setups.len() {
                let i = (k + round) % setups.len();
                let rec = closed_loop(&setups[i].pool, args.probe_conns, warmup, d).await?;
                eprintln!(
                    "e2e: probe round {} {:<14} {:.0} req/s",
                    round + 1,
                    setups[i].config.name,
                    rec.rate()
                );
                probes[i].merge(&rec);
            }
        }
    }
    let notes = notes(&keygates);
    let shape = RunShape {
        rates: args.rates.clone(),
        rounds: args.rounds,
        duration: args.duration,
        warmup: args.warmup,
        consumers: args.consumers,
        max_conns: args.max_conns,
        probe_duration: args.probe_duration,
        probe_rounds: args.probe_rounds,
        probe_conns: args.probe_conns,
    };
    Ok(report(
        &shape,
        &provenance(),
        &setups,
        &cells,
        &probes,
        &notes,
    ))
}

/// Starts the keygate for a flavor, and the service it needs (kept alive in `services`).
fn start_flavor(
    dir: &Path,
    flavor: Flavor,
    consumers: usize,
    services: &mut Vec<Child>,
) -> Result<Keygate> {
    let sub = dir.join(format!("keygate-{flavor:?}").to_lowercase());
    std::fs::create_dir_all(&sub)?;
    let timeout = Duration::from_secs(120);
    let setting = match flavor {
        Flavor::Null => return start_null(&sub),
        Flavor::Plain => Setting::Uds(sub.join("grpc.sock")),
        Flavor::LocalLimits => Setting::Limits(LimitsBackend::Local),
        Flavor::RedisLimits => {
            let (redis, url) = start_redis(&sub)?;
            services.push(redis);
            Setting::Limits(LimitsBackend::Redis(url))
        }
        Flavor::VaultCredentials => {
            let (bao, address) = start_bao(&sub)?;
            services.push(bao);
            Setting::Vault(Credentials::Vault {
                address,
                token: BAO_ROOT_TOKEN.into(),
            })
        }
    };
    start_keygate_with(&sub, consumers, &[], timeout, |opts| match setting {
        Setting::Uds(path) => opts.grpc_uds = Some(path),
        Setting::Limits(backend) => opts.limits = Some(backend),
        Setting::Vault(credentials) => opts.credentials = credentials,
    })
}

/// `null-processor` in keygate's place; its "keys" are never checked.
fn start_null(dir: &Path) -> Result<Keygate> {
    let cmd = std::process::Command::new(built_bin("null-processor"));
    let (child, line) =
        Child::spawn_reading_line("null-processor", cmd, dir, Duration::from_secs(20))?;
    let grpc: std::net::SocketAddr = line
        .rsplit(' ')
        .next()
        .and_then(|a| a.trim().parse().ok())
        .with_context(|| format!("null-processor printed {line:?}"))?;
    Ok(Keygate {
        child,
        grpc,
        uds: None,
        admin: grpc,
        keys: vec!["not-checked".into()],
    })
}

enum Setting {
    Uds(PathBuf),
    Limits(LimitsBackend),
    Vault(Credentials),
}

/// Facts from keygate's own metrics after the run: Redis fallbacks, Vault calls, denials.
fn notes(keygates: &[(Flavor, Keygate)]) -> Vec<String> {
    let mut notes = Vec::new();
    for (flavor, kg) in keygates.iter().filter(|(f, _)| *f != Flavor::Null) {
        let Ok((200, metrics)) = http_get(kg.admin, "/metrics") else {
            notes.push(format!("{flavor:?}: /metrics unreadable after the run"));
            continue;
        };
        let sum_where = |prefix: &str, keep: &dyn Fn(&str) -> bool| -> f64 {
            metrics
                .lines()
                .filter(|l| l.starts_with(prefix) && keep(l))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum()
        };
        // An empty f64 sum is -0.0; adding 0.0 makes it print as 0.
        let sum_where = |prefix: &str, keep: &dyn Fn(&str) -> bool| sum_where(prefix, keep) + 0.0;
        let sum = |prefix: &str| sum_where(prefix, &|_| true);
        let denied = sum_where("keygate_requests_total{", &|l| {
            !l.contains("outcome=\"allowed\"")
        });
        let mut facts = vec![format!("{denied:.0} requests denied")];
        match flavor {
            Flavor::RedisLimits => facts.push(format!(
                "{:.0} Redis fallbacks, {:.0} decisions that waited for Redis (lease or \
                 allowance short), {:.0} Redis calls in all (background sync included)",
                sum("keygate_limits_fallback_total"),
                sum("keygate_limits_lease_miss_total"),
                sum("keygate_limits_redis_calls_total")
            )),
            Flavor::VaultCredentials => facts.push(format!(
                "{:.0} Vault calls for the whole run (background refresh only)",
                sum("keygate_vault_requests_total")
            )),
            _ => {}
        }
        notes.push(format!(
            "keygate {flavor:?} after the run: {}.",
            facts.join(", ")
        ));
    }
    notes
}

fn cpu_of(pids: &[u32; 4]) -> [f64; 4] {
    pids.map(|p| cpu_time(p).map_or(0.0, |d| d.as_secs_f64()))
}
