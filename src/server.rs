//! `keygate serve`: assembles the [`App`], binds the gRPC and admin listeners, runs the owned
//! background tasks and the reloader, and shuts everything down in order on SIGTERM/SIGINT:
//! listeners drain their in-flight streams, the background tasks stop, notifications get a
//! last attempt, the ledger is flushed.

use std::path::Path;
use std::sync::Arc;

use envoy_types::pb::envoy::service::auth::v3::authorization_server::AuthorizationServer;
use envoy_types::pb::envoy::service::ext_proc::v3::external_processor_server::ExternalProcessorServer;
use tokio::net::{TcpListener, UnixListener};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_stream::wrappers::{TcpListenerStream, UnixListenerStream};

use crate::admin::{self, bootstrap, AdminState};
use crate::app::App;
use crate::envoy::{AuthzService, ProcService};
use crate::pipeline::Pipeline;
use crate::reload::{self, Reloader};
use crate::secrets::CredentialCache;
use crate::tasks::Tasks;
use crate::telemetry;

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
    #[error(transparent)]
    App(#[from] crate::app::AppError),
    #[error(transparent)]
    Activate(#[from] crate::app::ActivateError),
    #[error(transparent)]
    Bootstrap(#[from] crate::admin::bootstrap::BootstrapError),
    #[error("gRPC server: {0}")]
    Grpc(#[from] tonic::transport::Error),
    #[error("a listener task failed: {0}")]
    Task(String),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error(transparent)]
    Alerts(#[from] crate::admin::github_alerts::AlertsError),
}

/// Runs until SIGTERM or SIGINT, then drains in-flight streams and stops.
pub async fn serve(config_path: &Path) -> Result<(), ServeError> {
    let metrics =
        telemetry::install_prometheus().map_err(|e| ServeError::Metrics(e.to_string()))?;
    let stop_signal = shutdown_signal().map_err(|source| ServeError::Bind {
        what: "signal handlers".into(),
        source,
    })?;
    let cache = Arc::new(CredentialCache::new());
    let prepared = reload::prepare(config_path, &cache, true).await?;
    let app = Arc::new(App::build(&prepared.config, cache)?);
    let (config, background) = app.activate(prepared, None)?;
    crate::heap::trim();

    let mut tasks = Tasks::new();
    app.start(&mut tasks, config.usage.source_window);
    let stop = tasks.stop_signal();
    let mut listeners: JoinSet<Result<(), ServeError>> = JoinSet::new();
    let grpc_tcp = TcpListener::bind(config.listeners.grpc)
        .await
        .map_err(|source| bind_error(&config.listeners.grpc, source))?;
    let admin_listener = TcpListener::bind(config.listeners.admin)
        .await
        .map_err(|source| bind_error(&config.listeners.admin, source))?;
    tracing::info!(
        grpc = %config.listeners.grpc,
        admin = %config.listeners.admin,
        consumers = app.gate.registry().consumers().len(),
        "keygate listening"
    );
    let grpc_tls = match &config.listeners.grpc_tls {
        Some(tls) => Some(crate::tls::server_config(
            "listeners.grpc_tls",
            &tls.cert_file,
            &tls.key_file,
            Some(&tls.client_ca_file),
        )?),
        None => None,
    };
    if grpc_tls.is_none() && !config.listeners.grpc.ip().is_loopback() {
        tracing::error!(
            grpc = %config.listeners.grpc,
            "listeners.grpc is reachable beyond loopback without listeners.grpc_tls: anyone who can reach it with a consumer key gets the provider key back; listen on loopback or a Unix socket (grpc_uds), or require Envoy's client certificate (grpc_tls)"
        );
    }
    listeners.spawn(grpc_server(
        app.pipeline.clone(),
        nodelay(TcpListenerStream::new(grpc_tcp)),
        grpc_tls,
        stop.clone(),
    ));
    if let Some(path) = &config.listeners.grpc_uds {
        let _ = std::fs::remove_file(path);
        let uds = UnixListener::bind(path).map_err(|source| bind_error(&path.display(), source))?;
        tracing::info!(path = %path.display(), "keygate listening on unix socket");
        listeners.spawn(grpc_server(
            app.pipeline.clone(),
            UnixListenerStream::new(uds),
            None,
            stop.clone(),
        ));
    }
    let admin_router = admin::router(AdminState {
        gate: app.gate.clone(),
        accounting: app.accounting.clone(),
        limiter: app.limiter.clone(),
        metrics,
    });
    if app.operators.load().is_empty() {
        tracing::warn!(
            env = %config.admin.token_env,
            "no admin operators (admin.operators, admin.operators_file) and no shared token (admin.token_file or the environment): the admin API is off"
        );
    } else {
        let service = bootstrap::admin_service(&app);
        let server = bootstrap::admin_server(&config)?;
        let listen = config.admin.listen;
        if !listen.ip().is_loopback() && config.admin.tls.is_none() {
            tracing::warn!(
                admin_grpc = %listen,
                "the admin API listens beyond loopback without admin.tls: bearer tokens cross the network in clear"
            );
        }
        let stop = stop.clone();
        listeners.spawn(async move {
            bootstrap::serve_admin(server, listen, service, stop)
                .await
                .map_err(ServeError::from)
        });
    }
    if let Some(github) = &config.leaks.github {
        let receiver = admin::github_alerts::receiver(&app, github)?;
        let listen = github.listen;
        let stop = stop.clone();
        listeners.spawn(async move {
            admin::github_alerts::serve(receiver, listen, stop)
                .await
                .map_err(ServeError::from)
        });
    }
    let mut admin_stop = stop.clone();
    listeners.spawn(async move {
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
        app: app.clone(),
    };
    let uds = config.listeners.grpc_uds.clone();
    tasks.spawn("reloader", move |stop| {
        reloader.run(config, background, stop)
    });

    let outcome = tokio::select! {
        _ = stop_signal => Ok(()),
        Some(done) = listeners.join_next() => match done {
            Ok(result) => result,
            Err(e) => Err(ServeError::Task(e.to_string())),
        },
    };
    tracing::info!("shutting down");
    tasks.signal_stop();
    while listeners.join_next().await.is_some() {}
    tasks.shutdown().await;
    app.shutdown().await;
    if let Some(path) = &uds {
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

/// ext_proc and ext_authz on one listener; with `tls`, only callers with a client
/// certificate from its CA are answered.
async fn grpc_server<S, IO, E>(
    pipeline: Pipeline,
    incoming: S,
    tls: Option<tonic::transport::ServerTlsConfig>,
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
    let proc_service = ExternalProcessorServer::new(ProcService::new(pipeline.clone()))
        .max_decoding_message_size(MAX_GRPC_MESSAGE)
        .max_encoding_message_size(MAX_GRPC_MESSAGE);
    let authz_service = AuthorizationServer::new(AuthzService::new(pipeline))
        .max_decoding_message_size(MAX_GRPC_MESSAGE)
        .max_encoding_message_size(MAX_GRPC_MESSAGE);
    let mut server = tonic::transport::Server::builder().tcp_nodelay(true);
    if let Some(tls) = tls {
        server = crate::tls::apply("listeners.grpc_tls", server, tls)?;
    }
    server
        .add_service(proc_service)
        .add_service(authz_service)
        .serve_with_incoming_shutdown(incoming, async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .await?;
    Ok(())
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
