//! Item 1 of issue 3: end-to-end latency through real Envoy to the mock provider, without keygate
//! (baseline), with keygate via ext_authz and via ext_proc (request headers only). Open loop at
//! fixed rates, configurations interleaved in rounds, plus a closed-loop throughput probe.

use std::path::PathBuf;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use keygate_bench::http_load::{closed_loop, open_loop, Pool};
use keygate_bench::procs::{cpu_time, Child};
use keygate_bench::stack::{start_envoy, start_keygate, start_mock, EnvoyKind};
use keygate_bench::stats::{against, fmt_delta, fmt_ms, provenance, table, Recorder, QUANTILES};
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
    /// Only these configurations besides the baseline (ext_authz, ext_proc, ext_proc+usage);
    /// default: all that exist. For focused profiling runs.
    #[arg(long, value_delimiter = ',')]
    configs: Vec<String>,
    /// Where the markdown table is written.
    #[arg(long, default_value = "bench/results/e2e.md")]
    out: PathBuf,
}

struct Setup {
    kind: EnvoyKind,
    label: &'static str,
    pool: Arc<Pool>,
    envoy: Child,
}

/// Everything measured for one configuration at one rate.
#[derive(Default)]
struct Cell {
    total: Recorder,
    rounds: Vec<Recorder>,
    /// CPU seconds used by envoy, keygate, mock, generator; and requests sent.
    cpu: [f64; 4],
    sent: f64,
}

const D_ROW: &str = "d. + keygate via ext_proc with response phases (usage accounting)";
const NOT_YET: &str = "not yet (usage accounting: issue 5)";

fn label(kind: EnvoyKind) -> &'static str {
    match kind {
        EnvoyKind::Baseline => "a. baseline (Envoy → mock, no keygate)",
        EnvoyKind::ExtAuthz => "b. + keygate via ext_authz",
        EnvoyKind::ExtProcHeaders => "c. + keygate via ext_proc, request headers only",
        EnvoyKind::ExtProcUsage => D_ROW,
    }
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
    let keygate = start_keygate(dir, args.consumers, &[], Duration::from_secs(120))?;
    let mut setups = Vec::new();
    let mut kinds = vec![
        EnvoyKind::Baseline,
        EnvoyKind::ExtAuthz,
        EnvoyKind::ExtProcHeaders,
    ];
    // Row d once the shipped ext_proc config sends response phases to keygate.
    let usage_shipped = envoy_cfg::has_response_phases(&EnvoyKind::ExtProcUsage.shipped())?;
    if usage_shipped {
        kinds.push(EnvoyKind::ExtProcUsage);
    }
    kinds.retain(|k| {
        *k == EnvoyKind::Baseline
            || args.configs.is_empty()
            || args.configs.iter().any(|c| c == k.name())
    });
    for kind in kinds {
        let (envoy, addr) = start_envoy(dir, kind, keygate.grpc.port(), mock_port)?;
        let extra: &[(&str, &str)] = match kind {
            EnvoyKind::Baseline => &[("x-keygate-provider", "openai")],
            _ => &[],
        };
        let pool = Pool::new(addr, args.max_conns, &keygate.keys, extra)?;
        pool.request().await.with_context(|| {
            format!(
                "{}: the first request did not get a 200\n{}\n{}",
                kind.name(),
                envoy.log_tail(),
                keygate.child.log_tail()
            )
        })?;
        setups.push(Setup {
            kind,
            label: label(kind),
            pool,
            envoy,
        });
    }
    for s in &setups {
        eprintln!(
            "e2e: warming up {} ({}s)",
            s.kind.name(),
            args.initial_warmup
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
            keygate.child.pid(),
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
                    "e2e: {rate} req/s round {} {:<9} p50 {:.3} ms p99 {:.3} ms errors {}",
                    round + 1,
                    s.kind.name(),
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
                    "e2e: probe round {} {:<9} {:.0} req/s",
                    round + 1,
                    setups[i].kind.name(),
                    rec.rate()
                );
                probes[i].merge(&rec);
            }
        }
    }
    Ok(report(args, &setups, &cells, &probes, usage_shipped))
}

fn cpu_of(pids: &[u32; 4]) -> [f64; 4] {
    pids.map(|p| cpu_time(p).map_or(0.0, |d| d.as_secs_f64()))
}

fn report(
    args: &Args,
    setups: &[Setup],
    cells: &[Vec<Cell>],
    probes: &[Recorder],
    usage_shipped: bool,
) -> String {
    let not_yet = !usage_shipped;
    let mut out = String::from("## End-to-end latency through Envoy (open loop)\n\n");
    out += &format!("{}\n\n", provenance());
    out += &format!(
        "{} round(s) × {} s per configuration and rate, each segment preceded by {} s of \
         discarded warm-up; configurations interleaved within every round, order rotated per \
         round. {} consumers loaded. `POST /v1/chat/completions` over HTTP/1.1 keep-alive \
         (pool of ≤ {} connections per Envoy); latency runs from the *scheduled* send time to \
         the last response byte. Envoy `--concurrency 1`; generator, Envoy, keygate and mock \
         share the machine. Times in ms; *added* = configuration − baseline at the same \
         percentile.\n\nConfigurations, all rendered from envoy/*.yaml the way \
         tests/harness/envoy_config.py does: a = ext_proc.yaml with the ext_proc filter removed \
         (the client sends the `x-keygate-provider: openai` header keygate would add); b = \
         ext_authz.yaml; c = ext_proc.yaml with `processing_mode` set to request headers only \
         and mode overrides off; d = ext_proc.yaml as shipped (response headers always, \
         request/response bodies as keygate asks for usage accounting).\n\n",
        args.rounds, args.duration, args.warmup, args.consumers, args.max_conns
    );
    let mut headers = vec!["rate", "configuration", "achieved req/s"];
    headers.extend(QUANTILES.iter().map(|(_, n)| *n));
    headers.push("errors");
    let added: Vec<String> = QUANTILES
        .iter()
        .map(|(_, n)| format!("added {n}"))
        .collect();
    headers.extend(added.iter().map(String::as_str));
    let mut rows = Vec::new();
    for (rate, row) in args.rates.iter().zip(cells) {
        let base = &row[0].total;
        for (s, cell) in setups.iter().zip(row) {
            let r = &cell.total;
            let mut line = vec![
                format!("{rate}"),
                s.label.into(),
                format!("{:.0}", r.rate()),
            ];
            line.extend(QUANTILES.iter().map(|(q, _)| fmt_ms(r.ms(*q))));
            line.push(r.errors.to_string());
            line.extend(QUANTILES.iter().map(|(q, _)| match s.kind {
                EnvoyKind::Baseline => "—".into(),
                _ => fmt_delta(r.ms(*q) - base.ms(*q)),
            }));
            rows.push(line);
        }
        if not_yet {
            let mut d = vec![format!("{rate}"), D_ROW.into(), NOT_YET.into()];
            d.extend(std::iter::repeat_n(String::new(), headers.len() - 3));
            rows.push(d);
        }
    }
    out += &table(&headers, &rows);
    out += &targets(args, setups, cells);
    out += &per_round(args, setups, cells);
    out += &cpu_table(args, setups, cells);
    if args.probe_duration > 0.0 {
        out += &format!(
            "\n### Closed-loop max throughput\n\n{} connection(s) each sending the next request \
             as soon as the previous one finished, {} round(s) × {} s per configuration.\n\n",
            args.probe_conns, args.probe_rounds, args.probe_duration
        );
        let rows: Vec<Vec<String>> = setups
            .iter()
            .zip(probes)
            .map(|(s, r)| {
                let mut line = vec![s.label.to_string(), format!("{:.0}", r.rate())];
                line.extend([0.5, 0.99].map(|q| fmt_ms(r.ms(q))));
                line.push(r.errors.to_string());
                line
            })
            .collect();
        out += &table(&["configuration", "req/s", "p50", "p99", "errors"], &rows);
        if not_yet {
            out += &format!("| {D_ROW} | {NOT_YET} | | | |\n");
        }
    }
    for s in setups {
        let last = s
            .pool
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(e) = last.as_ref() {
            out += &format!("\nLast error seen by {}: `{e}`\n", s.kind.name());
        }
    }
    out
}

/// The targets at 1,000 req/s: added p50 ≤ 0.15 ms, added p99 ≤ 0.5 ms, no errors.
fn targets(args: &Args, setups: &[Setup], cells: &[Vec<Cell>]) -> String {
    let Some(at) = args.rates.iter().position(|r| (*r - 1000.0).abs() < 0.5) else {
        return String::new();
    };
    let row = &cells[at];
    let base = &row[0].total;
    let mut rows = Vec::new();
    let targeted = [EnvoyKind::ExtAuthz, EnvoyKind::ExtProcHeaders];
    for (s, cell) in setups.iter().zip(row) {
        if !targeted.contains(&s.kind) {
            continue;
        }
        let r = &cell.total;
        let (p50, p99) = (r.ms(0.5) - base.ms(0.5), r.ms(0.99) - base.ms(0.99));
        rows.push(vec![
            s.label.to_string(),
            against(p50, 0.15, fmt_delta(p50)),
            against(p99, 0.5, fmt_delta(p99)),
            against(r.errors as f64, 0.0, r.errors.to_string()),
        ]);
    }
    let headers = [
        "configuration",
        "added p50 ≤ 0.15 ms",
        "added p99 ≤ 0.5 ms",
        "no errors",
    ];
    format!("\n### Targets at 1,000 req/s\n\n{}", table(&headers, &rows))
}

fn per_round(args: &Args, setups: &[Setup], cells: &[Vec<Cell>]) -> String {
    let mut headers = vec!["rate".to_string(), "configuration".to_string()];
    headers.extend((1..=args.rounds).map(|r| format!("round {r}")));
    let mut rows = Vec::new();
    for (rate, row) in args.rates.iter().zip(cells) {
        for (s, cell) in setups.iter().zip(row).skip(1) {
            let mut line = vec![format!("{rate}"), s.kind.name().to_string()];
            for (r, b) in cell.rounds.iter().zip(&row[0].rounds) {
                let d = |q| fmt_delta(r.ms(q) - b.ms(q));
                line.push(format!("{} / {}", d(0.5), d(0.99)));
            }
            rows.push(line);
        }
    }
    let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
    format!(
        "\n### Added latency per round (p50 / p99, ms; round n of a configuration vs round n \
         of the baseline)\n\n{}",
        table(&headers, &rows)
    )
}

fn cpu_table(args: &Args, setups: &[Setup], cells: &[Vec<Cell>]) -> String {
    let mut rows = Vec::new();
    for (rate, row) in args.rates.iter().zip(cells) {
        for (s, cell) in setups.iter().zip(row) {
            let mut line = vec![format!("{rate}"), s.kind.name().to_string()];
            line.extend(
                cell.cpu
                    .iter()
                    .map(|c| format!("{:.1}", c * 1e6 / cell.sent.max(1.0))),
            );
            rows.push(line);
        }
    }
    let headers = [
        "rate",
        "configuration",
        "envoy",
        "keygate",
        "mock",
        "generator",
    ];
    format!(
        "\n### CPU time per request (µs, from /proc/PID/stat over all rounds)\n\n{}",
        table(&headers, &rows)
    )
}
