//! Starting the containment machinery and the admin gRPC API for `keygate serve`.

use std::path::Path;
use std::sync::Arc;

use secrecy::SecretString;
use tokio::sync::{watch, Notify};

use super::broadcast::Broadcaster;
use super::grpc::AdminService;
use super::pb::admin_server::AdminServer;
use super::state::OverrideStore;
use crate::accounting::Accounting;
use crate::audit::AuditLog;
use crate::config::Config;
use crate::containment::Containment;
use crate::detect::Detectors;
use crate::gate::Gate;
use crate::limits::Limiter;
use crate::notify::Notifier;

/// Why containment could not start.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error("admin.audit_log: {0}")]
    Audit(String),
    #[error(transparent)]
    State(#[from] super::state::StateError),
    #[error("notify: {0}")]
    Notify(String),
    #[error("limits.redis.url (admin broadcast): {0}")]
    Broadcast(String),
    #[error("admin.tls.{field}: {reason}")]
    Tls { field: &'static str, reason: String },
    #[error("cannot listen on {addr} (admin API): {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
}

/// Builds detectors, notifier, audit log, overrides and the broadcast channel, and spawns
/// their background tasks.
pub fn start_containment(
    config: &Config,
    gate: &Arc<Gate>,
    accounting: &Arc<Accounting>,
    limiter: &Arc<Limiter>,
) -> Result<Arc<Containment>, BootstrapError> {
    let audit_path = (!config.admin.audit_log.as_os_str().is_empty())
        .then_some(config.admin.audit_log.as_path());
    let audit = AuditLog::open(audit_path)
        .map_err(|e| BootstrapError::Audit(e.to_string()))?
        .shared();
    let store = Arc::new(OverrideStore::open(
        config.admin.state_file.clone(),
        gate.clone(),
    )?);
    let notifier = if config.notify.webhooks.is_empty() {
        None
    } else {
        let n = Notifier::new(config.notify.clone())
            .map_err(|e| BootstrapError::Notify(e.to_string()))?;
        let runner = n.clone();
        tokio::spawn(async move { runner.run().await });
        Some(n)
    };
    let broadcaster = match &config.limits.redis {
        Some(redis) => {
            let origin = format!("{}-{}", std::process::id(), config.listeners.grpc);
            let b = Broadcaster::new(&redis.url, &redis.key_prefix, origin)
                .map_err(|e| BootstrapError::Broadcast(e.to_string()))?;
            tokio::spawn(b.clone().run(store.clone()));
            Some(b)
        }
        None => None,
    };
    let containment = Arc::new(Containment::new(
        Detectors::new(config.detect.clone()),
        notifier,
        audit,
        store,
        broadcaster,
        limiter.clone(),
        accounting.clone(),
        gate.clone(),
    ));
    tokio::spawn(containment.clone().run());
    Ok(containment)
}

/// The admin token, from its file or environment variable; None disables the admin API.
pub fn admin_token(config: &Config) -> Option<SecretString> {
    let text = match &config.admin.token_file {
        Some(path) => std::fs::read_to_string(path).ok()?,
        None => std::env::var(&config.admin.token_env).ok()?,
    };
    let text = text.trim();
    (!text.is_empty()).then(|| SecretString::from(text.to_string()))
}

/// The admin gRPC server, with TLS when configured. Certificates are read and checked here,
/// at startup, so a bad file stops `serve` with the field named instead of failing later.
pub fn admin_server(config: &Config) -> Result<tonic::transport::Server, BootstrapError> {
    let server = tonic::transport::Server::builder();
    let Some(tls) = &config.admin.tls else {
        return Ok(server);
    };
    let read = |field: &'static str, path: &Path| {
        std::fs::read(path).map_err(|e| BootstrapError::Tls {
            field,
            reason: format!("{}: {e}", path.display()),
        })
    };
    let identity = tonic::transport::Identity::from_pem(
        read("cert_file", &tls.cert_file)?,
        read("key_file", &tls.key_file)?,
    );
    let mut settings = tonic::transport::ServerTlsConfig::new().identity(identity);
    if let Some(ca) = &tls.client_ca_file {
        settings = settings.client_ca_root(tonic::transport::Certificate::from_pem(read(
            "client_ca_file",
            ca,
        )?));
    }
    server
        .tls_config(settings)
        .map_err(|e| BootstrapError::Tls {
            field: "cert_file",
            reason: format!("not a usable certificate and key: {e}"),
        })
}

/// Serves the admin gRPC API until `stop`.
pub async fn serve_admin(
    mut server: tonic::transport::Server,
    listen: std::net::SocketAddr,
    service: AdminService,
    mut stop: watch::Receiver<bool>,
) -> Result<(), BootstrapError> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| BootstrapError::Bind {
            addr: listen.to_string(),
            source,
        })?;
    tracing::info!(admin_grpc = %listen, "admin API listening");
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    let result = server
        .add_service(AdminServer::new(service))
        .serve_with_incoming_shutdown(incoming, async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .await;
    if let Err(e) = result {
        tracing::error!(error = %e, "admin API stopped");
    }
    Ok(())
}

/// The service, with what it needs from the running server.
pub fn admin_service(
    gate: &Arc<Gate>,
    accounting: &Arc<Accounting>,
    containment: &Arc<Containment>,
    refresh: &Arc<Notify>,
    token: SecretString,
) -> AdminService {
    AdminService {
        gate: gate.clone(),
        accounting: accounting.clone(),
        containment: containment.clone(),
        refresh: refresh.clone(),
        token,
    }
}

/// True when a path names a file (an empty path means "not configured").
pub fn configured(path: &Path) -> bool {
    !path.as_os_str().is_empty()
}
