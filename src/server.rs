//! `keygate serve`: wires config, credentials, the gate, the gRPC and admin listeners, the
//! reloader and graceful shutdown together.

use std::path::Path;
use std::sync::Arc;

use envoy_types::pb::envoy::service::auth::v3::authorization_server::AuthorizationServer;
use envoy_types::pb::envoy::service::ext_proc::v3::external_processor_server::ExternalProcessorServer;
use tokio::net::{TcpListener, UnixListener};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{watch, Notify};
use tokio_stream::wrappers::{TcpListenerStream, UnixListenerStream};

use crate::accounting::{Accounting, Ledger};
use crate::admin::{self, bootstrap, AdminState};
use crate::auth::Registry;
use crate::containment::Containment;
use crate::envoy::{AuthzService, ProcService};
use crate::gate::Gate;
use crate::limits::Limiter;
use crate::reload::{self, Reloader};
use crate::secrets::CredentialCache;
use crate::telemetry;
use crate::usage::PriceTable;

/// Large prompts arrive as one body message in BUFFERED mode; tonic's default is 4 MiB.
pub const MAX_GRPC_MESSAGE: usize = 64 * 1024 * 1024;

/// Why `serve` stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Load(#[from] crate::runtime::LoadError),
    #[error("cannot listen on {what}: {source}")]
    Bind {
        what: String,
        source: std::io::Error,
    },
    #[error("metrics: {0}")]
    Metrics(String),
    #[error("{0}")]
    Ledger(String),
    #[error(transparent)]
    Activate(#[from] crate::reload::ActivateError),
    #[error(transparent)]
    Bootstrap(#[from] crate::admin::bootstrap::BootstrapError),
    #[error("gRPC server: {0}")]
    Grpc(#[from] tonic::transport::Error),
}

/// Runs until SIGTERM or SIGINT, then drains in-flight streams.
pub async fn serve(config_path: &Path) -> Result<(), ServeError> {
    let metrics =
        telemetry::install_prometheus().map_err(|e| ServeError::Metrics(e.to_string()))?;
    let stop_signal = shutdown_signal().map_err(|source| ServeError::Bind {
        what: "signal handlers".into(),
        source,
    })?;
    let cache = Arc::new(CredentialCache::new());
    let prepared = reload::prepare(config_path, &cache, true).await?;
    let gate = Arc::new(Gate::new(Registry::default(), cache));
    let accounting = Arc::new(open_accounting(&prepared.config)?);
    let limiter = Arc::new(Limiter::new(accounting.clone()));
    let (config, background) = reload::activate(prepared, &gate, &accounting, &limiter)?;
    crate::heap::trim();
    let containment = bootstrap::start_containment(&config, &gate, &accounting, &limiter)?;
    let refresh = Arc::new(Notify::new());
    let services = Services {
        gate: gate.clone(),
        accounting: accounting.clone(),
        limiter: limiter.clone(),
        containment: containment.clone(),
    };

    let (stop_tx, stop_rx) = watch::channel(false);
    let grpc_tcp = TcpListener::bind(config.listeners.grpc)
        .await
        .map_err(|source| bind_error(&config.listeners.grpc, source))?;
    let admin_listener = TcpListener::bind(config.listeners.admin)
        .await
        .map_err(|source| bind_error(&config.listeners.admin, source))?;
    tracing::info!(
        grpc = %config.listeners.grpc,
        admin = %config.listeners.admin,
        consumers = gate.registry().consumers().len(),
        "keygate listening"
    );

    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(grpc_server(
        services.clone(),
        nodelay(TcpListenerStream::new(grpc_tcp)),
        stop_rx.clone(),
    ));
    if let Some(path) = &config.listeners.grpc_uds {
        let _ = std::fs::remove_file(path);
        let uds = UnixListener::bind(path).map_err(|source| bind_error(&path.display(), source))?;
        tracing::info!(path = %path.display(), "keygate listening on unix socket");
        tasks.spawn(grpc_server(
            services.clone(),
            UnixListenerStream::new(uds),
            stop_rx.clone(),
        ));
    }
    let admin_router = admin::router(AdminState {
        gate: gate.clone(),
        accounting: accounting.clone(),
        metrics,
    });
    match bootstrap::admin_token(&config) {
        Some(token) => {
            let service =
                bootstrap::admin_service(&gate, &accounting, &containment, &refresh, token);
            let server = bootstrap::admin_server(&config)?;
            let listen = config.admin.listen;
            if !listen.ip().is_loopback() && config.admin.tls.is_none() {
                tracing::warn!(
                    admin_grpc = %listen,
                    "the admin API listens beyond loopback without admin.tls: bearer tokens cross the network in clear"
                );
            }
            let stop = stop_rx.clone();
            tasks.spawn(async move {
                bootstrap::serve_admin(server, listen, service, stop)
                    .await
                    .map_err(ServeError::from)
            });
        }
        None => tracing::warn!(
            env = %config.admin.token_env,
            "no admin token configured (admin.token_file or the environment): the admin API is off"
        ),
    }
    let upkeep = tokio::spawn(upkeep(
        accounting.clone(),
        limiter.clone(),
        containment.clone(),
        config.usage.source_window,
    ));
    let mut admin_stop = stop_rx.clone();
    tasks.spawn(async move {
        axum::serve(admin_listener, admin_router)
            .with_graceful_shutdown(async move {
                let _ = admin_stop.wait_for(|s| *s).await;
            })
            .await
            .map_err(|source| ServeError::Bind {
                what: "admin".into(),
                source,
            })
    });
    let reloader = Reloader {
        path: config_path.to_path_buf(),
        gate: gate.clone(),
        accounting: accounting.clone(),
        limiter: limiter.clone(),
        refresh: refresh.clone(),
    };
    let reload_task = tokio::spawn(reloader.run(config.clone(), background));

    let outcome = tokio::select! {
        _ = stop_signal => Ok(()),
        Some(done) = tasks.join_next() => match done {
            Ok(result) => result,
            Err(e) => Err(ServeError::Metrics(format!("task failed: {e}"))),
        },
    };
    tracing::info!("shutting down");
    reload_task.abort();
    let _ = stop_tx.send(true);
    while tasks.join_next().await.is_some() {}
    upkeep.abort();
    flush_ledger(&accounting);
    if let Some(path) = &config.listeners.grpc_uds {
        let _ = std::fs::remove_file(path);
    }
    outcome
}

/// Disables Nagle on every accepted connection: tonic only does so for listeners it binds
/// itself, and small gRPC frames held back by Nagle meet the peer's delayed ACK (~40 ms).
fn nodelay(
    incoming: TcpListenerStream,
) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use tokio_stream::StreamExt;
    incoming.map(|conn| {
        conn.inspect(|tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(error = %e, "set_nodelay failed");
            }
        })
    })
}

fn bind_error(what: &dyn std::fmt::Display, source: std::io::Error) -> ServeError {
    ServeError::Bind {
        what: what.to_string(),
        source,
    }
}

/// What the gRPC edges share.
#[derive(Clone)]
struct Services {
    gate: Arc<Gate>,
    accounting: Arc<Accounting>,
    limiter: Arc<Limiter>,
    containment: Arc<Containment>,
}

async fn grpc_server<S, IO, E>(
    services: Services,
    incoming: S,
    mut stop: watch::Receiver<bool>,
) -> Result<(), ServeError>
where
    S: tokio_stream::Stream<Item = Result<IO, E>> + Send + 'static,
    IO: tonic::transport::server::Connected
        + tokio::io::AsyncRead
        + tokio::io::AsyncWrite
        + Unpin
        + Send
        + 'static,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let proc_service = ExternalProcessorServer::new(ProcService::new(
        services.gate.clone(),
        services.accounting.clone(),
        services.limiter.clone(),
        services.containment.clone(),
    ))
    .max_decoding_message_size(MAX_GRPC_MESSAGE)
    .max_encoding_message_size(MAX_GRPC_MESSAGE);
    let authz_service = AuthorizationServer::new(AuthzService::new(
        services.gate.clone(),
        services.limiter.clone(),
        services.containment.clone(),
    ))
    .max_decoding_message_size(MAX_GRPC_MESSAGE)
    .max_encoding_message_size(MAX_GRPC_MESSAGE);
    tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .add_service(proc_service)
        .add_service(authz_service)
        .serve_with_incoming_shutdown(incoming, async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .await?;
    Ok(())
}

/// Opens the spend ledger the config names (memory-only when the path is empty).
fn open_accounting(config: &crate::config::Config) -> Result<Accounting, ServeError> {
    let ledger = if config.usage.ledger.as_os_str().is_empty() {
        Ledger::in_memory()
    } else {
        Ledger::open(&config.usage.ledger).map_err(|e| ServeError::Ledger(e.to_string()))?
    };
    Ok(Accounting::new(PriceTable::defaults(), ledger))
}

/// Periodic, off-request-path work: flush the ledger every second, publish source counts and
/// month-to-date spend.
async fn upkeep(
    accounting: Arc<Accounting>,
    limiter: Arc<Limiter>,
    containment: Arc<Containment>,
    source_window: std::time::Duration,
) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    let mut n: u64 = 0;
    loop {
        tick.tick().await;
        flush_ledger(&accounting);
        if let Err(e) = containment.store.reload() {
            tracing::warn!(error = %e, "state file unreadable; keeping the current overrides");
        }
        if n.is_multiple_of(5) {
            accounting.publish_sources(source_window);
        }
        if n.is_multiple_of(30) {
            accounting.publish_month_to_date(std::time::SystemTime::now());
        }
        if n.is_multiple_of(60) {
            limiter.evict_idle();
        }
        n += 1;
    }
}

fn flush_ledger(accounting: &Accounting) {
    match accounting.ledger.flush() {
        Ok(0) => {}
        Ok(_) => metrics::counter!(telemetry::LEDGER_FLUSH_TOTAL, "result" => "ok").increment(1),
        Err(e) => {
            metrics::counter!(telemetry::LEDGER_FLUSH_TOTAL, "result" => "error").increment(1);
            tracing::error!(error = %e, "spend ledger flush failed");
        }
    }
}

/// Registers SIGTERM and SIGINT handlers at once (before any listener is announced, so an
/// early signal still shuts down gracefully) and resolves on either.
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {},
            _ = int.recv() => {},
        }
    })
}
