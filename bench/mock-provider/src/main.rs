//! `mock-provider` command line: bind, announce the address, serve until
//! SIGTERM / SIGINT.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use axum::serve::ListenerExt;
use clap::Parser;
use mock_provider::{router, Config};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// How long in-flight requests get to finish after a shutdown signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Mock OpenAI / Anthropic upstream for keygate tests and benchmarks.
#[derive(Debug, Parser)]
#[command(name = "mock-provider", version, about)]
struct Cli {
    /// Address to listen on, e.g. 127.0.0.1:8089 (port 0 picks a free port).
    #[arg(long)]
    listen: String,
    /// Delay every response by this many milliseconds (x-mock-latency-ms
    /// overrides it per request).
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Do not record requests (GET /__mock/requests stays empty).
    #[arg(long)]
    no_record: bool,
    /// Keep at most this many recorded requests (oldest dropped first).
    #[arg(long, default_value_t = 10_000)]
    record_limit: usize,
    /// Largest accepted request body in bytes.
    #[arg(long, default_value_t = 32 * 1024 * 1024)]
    max_body_bytes: usize,
    /// Tokio worker threads (default: one per CPU).
    #[arg(long)]
    workers: Option<usize>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();

    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if let Some(n) = cli.workers {
        builder.worker_threads(n.max(1));
    }
    let runtime = match builder.build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mock-provider: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mock-provider: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> std::io::Result<()> {
    let config = Config {
        latency_ms: cli.latency_ms,
        record: !cli.no_record,
        record_limit: cli.record_limit,
        max_body_bytes: cli.max_body_bytes,
    };
    let listener = TcpListener::bind(&cli.listen).await?;
    let addr = listener.local_addr()?;
    // Handlers exist before anyone can learn the port, so an early SIGTERM is graceful too.
    let stop_signal = shutdown_signal()?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on {addr}")?;
        out.flush()?;
    }
    tracing::info!(%addr, ?config, "mock-provider started");

    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!("set_nodelay failed: {e}");
        }
    });
    let (stop_tx, mut stop_rx) = watch::channel(false);
    let graceful = {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    };
    let server = axum::serve(listener, router(config)).with_graceful_shutdown(graceful);
    let signals = tokio::spawn(async move {
        stop_signal.await;
        let _ = stop_tx.send(true);
    });

    // Streams that are still running (e.g. slow SSE) get a short grace
    // period, then the process exits regardless.
    let result = tokio::select! {
        r = server => r,
        _ = async {
            let _ = stop_rx.wait_for(|stop| *stop).await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } => Ok(()),
    };
    signals.abort();
    result
}

/// Registers SIGTERM and SIGINT handlers now and returns a future that resolves on either.
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = int.recv() => tracing::info!("SIGINT received, shutting down"),
            _ = term.recv() => tracing::info!("SIGTERM received, shutting down"),
        }
    })
}
