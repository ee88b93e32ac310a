//! Item 3 of issue 3: keygate alone over gRPC. keygate is pinned to one core with `taskset`; a
//! tonic client (pinned to another core, one HTTP/2 connection like one Envoy worker) drives
//! ext_authz `Check` calls and ext_proc streams (one stream per decision, request headers only,
//! like Envoy) closed-loop at each concurrency, and reports decisions/s and latency.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::CheckRequest;
use envoy_types::pb::envoy::service::ext_proc::v3::external_processor_client::ExternalProcessorClient;
use envoy_types::pb::envoy::service::ext_proc::v3::processing_response::Response as Out;
use envoy_types::pb::envoy::service::ext_proc::v3::ProcessingRequest;
use keygate_bench::decisions::{check_request, proc_request};
use keygate_bench::procs::cpu_time;
use keygate_bench::stack::start_keygate;
use keygate_bench::stats::{against, fmt_ms, provenance, table, write_result, Recorder};
use keygate_bench::until_ctrl_c;
use tonic::transport::Channel;

#[derive(Debug, Parser)]
#[command(about = "keygate alone: gRPC decisions/s and latency, keygate pinned to one core")]
struct Args {
    #[arg(long, default_value = "1,16,64", value_delimiter = ',')]
    concurrency: Vec<usize>,
    /// Measured seconds per service and concurrency.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    #[arg(long, default_value_t = 1000)]
    consumers: usize,
    /// The core keygate is pinned to (`taskset -c`); negative: not pinned.
    #[arg(long, default_value_t = 1, allow_hyphen_values = true)]
    keygate_cpu: i32,
    /// The core the client is pinned to; negative: not pinned.
    #[arg(long, default_value_t = 0, allow_hyphen_values = true)]
    client_cpu: i32,
    #[arg(long, default_value = "bench/results/grpc.md")]
    out: PathBuf,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Service {
    ExtAuthz,
    ExtProc,
}

impl Service {
    fn name(self) -> &'static str {
        match self {
            Service::ExtAuthz => "ext_authz Check",
            Service::ExtProc => "ext_proc stream (request headers)",
        }
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.client_cpu >= 0 {
        pin_self(args.client_cpu)?;
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let report = runtime.block_on(until_ctrl_c(run(&args)))?;
    println!("{report}");
    write_result(&args.out, &report)?;
    eprintln!("grpc-load: wrote {}", args.out.display());
    Ok(())
}

fn pin_self(cpu: i32) -> Result<()> {
    let cpu = usize::try_from(cpu)?;
    // SAFETY: a zeroed cpu_set_t is valid; CPU_SET and sched_setaffinity only touch that set.
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if rc != 0 {
        bail!(
            "cannot pin the client to CPU {cpu}: {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

async fn run(args: &Args) -> Result<String> {
    let workdir = tempfile::Builder::new().prefix("keygate-grpc-").tempdir()?;
    let wrapper: Vec<String> = if args.keygate_cpu >= 0 {
        vec!["taskset".into(), "-c".into(), args.keygate_cpu.to_string()]
    } else {
        Vec::new()
    };
    let kg = start_keygate(
        workdir.path(),
        args.consumers,
        &wrapper,
        Duration::from_secs(120),
    )?;
    let channel = Channel::from_shared(format!("http://{}", kg.grpc))?
        .tcp_nodelay(true)
        .connect()
        .await
        .context("connecting to keygate")?;
    let checks: Vec<CheckRequest> = kg.keys.iter().map(|k| check_request(k)).collect();
    let procs: Vec<ProcessingRequest> = kg.keys.iter().map(|k| proc_request(k)).collect();
    let mut rows = Vec::new();
    for service in [Service::ExtAuthz, Service::ExtProc] {
        // One decision first: a wrong answer means the benchmark cannot run at all.
        decide(service, &channel, &checks[0], &procs[0])
            .await
            .with_context(|| {
                format!(
                    "{}: first decision failed\n{}",
                    service.name(),
                    kg.child.log_tail()
                )
            })?;
        for &c in &args.concurrency {
            let warm = Duration::from_secs_f64(args.warmup);
            load(service, &channel, &checks, &procs, c, Duration::ZERO, warm).await?;
            let cpu0 = cpu_time(kg.child.pid())?;
            let started = Instant::now();
            let measure = Duration::from_secs_f64(args.duration);
            let rec = load(
                service,
                &channel,
                &checks,
                &procs,
                c,
                Duration::ZERO,
                measure,
            )
            .await?;
            let wall = started.elapsed().as_secs_f64();
            let cpu = (cpu_time(kg.child.pid())? - cpu0).as_secs_f64();
            let rate = rec.rate();
            eprintln!(
                "grpc-load: {} c={c}: {rate:.0}/s p99 {:.3} ms, keygate CPU {:.0}%",
                service.name(),
                rec.ms(0.99),
                100.0 * cpu / wall
            );
            rows.push(vec![
                service.name().to_string(),
                c.to_string(),
                against(-rate, -30_000.0, format!("{rate:.0}")),
                fmt_ms(rec.ms(0.5)),
                fmt_ms(rec.ms(0.99)),
                rec.errors.to_string(),
                format!("{:.0}%", 100.0 * cpu / wall),
                format!("{:.0}", rec.count() as f64 / cpu.max(1e-9)),
            ]);
        }
    }
    let pinned = if args.keygate_cpu >= 0 {
        format!(
            "keygate pinned to CPU {} (`taskset -c {0}`)",
            args.keygate_cpu
        )
    } else {
        "keygate not pinned".to_string()
    };
    let headers = [
        "service",
        "concurrency",
        "decisions/s (target ≥ 30,000)",
        "p50 ms",
        "p99 ms",
        "errors",
        "keygate CPU",
        "decisions per keygate CPU-second",
    ];
    Ok(format!(
        "## keygate alone over gRPC\n\n{}\n\n{pinned}, client pinned to CPU {}; one HTTP/2 \
         connection (as from one Envoy worker); closed loop, {} s per row after {} s of warm-up; \
         {} consumers loaded; every decision is an allow. *keygate CPU* is its user+system time \
         over the wall time (100% = the whole pinned core).\n\n{}",
        provenance(),
        args.client_cpu,
        args.duration,
        args.warmup,
        args.consumers,
        table(&headers, &rows)
    ))
}

/// `concurrency` workers, each issuing decisions back to back for `warmup + measure`.
async fn load(
    service: Service,
    channel: &Channel,
    checks: &[CheckRequest],
    procs: &[ProcessingRequest],
    concurrency: usize,
    warmup: Duration,
    measure: Duration,
) -> Result<Recorder> {
    let start = Instant::now() + warmup;
    let end = start + measure;
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..concurrency {
        let (channel, checks, procs) = (channel.clone(), checks.to_vec(), procs.to_vec());
        tasks.spawn(async move {
            let mut r = Recorder::new();
            let mut i = w;
            loop {
                let sent = Instant::now();
                if sent >= end {
                    break;
                }
                i = (i + 1) % checks.len();
                let outcome = decide(service, &channel, &checks[i], &procs[i]).await;
                if sent >= start {
                    match outcome {
                        Ok(()) => r.ok(sent.elapsed()),
                        Err(_) => r.error(),
                    }
                }
            }
            r
        });
    }
    let mut total = Recorder::new();
    while let Some(done) = tasks.join_next().await {
        total.merge(&done?);
    }
    total.seconds = measure.as_secs_f64();
    Ok(total)
}

/// One decision; Ok only for an allow.
async fn decide(
    service: Service,
    channel: &Channel,
    check: &CheckRequest,
    proc: &ProcessingRequest,
) -> Result<()> {
    match service {
        Service::ExtAuthz => {
            let response = AuthorizationClient::new(channel.clone())
                .check(check.clone())
                .await?
                .into_inner();
            match response.status {
                Some(s) if s.code == 0 => Ok(()),
                other => bail!("not allowed: {other:?}"),
            }
        }
        Service::ExtProc => {
            let mut client = ExternalProcessorClient::new(channel.clone());
            let mut stream = client
                .process(tokio_stream::once(proc.clone()))
                .await?
                .into_inner();
            let first = stream.message().await?;
            while stream.message().await?.is_some() {}
            match first.and_then(|m| m.response) {
                Some(Out::RequestHeaders(_)) => Ok(()),
                other => bail!("not allowed: {other:?}"),
            }
        }
    }
}
