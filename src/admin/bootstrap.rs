//! Starting the admin gRPC API for `keygate serve`: its token, its TLS, its listener.

use std::sync::Arc;

use tokio::sync::watch;

use super::denied_calls::DeniedCalls;
use super::grpc::AdminService;
use super::pb::admin_server::AdminServer;
use crate::app::App;
use crate::config::Config;

/// Why the admin API could not start.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error("cannot listen on {addr} (admin API): {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
}

/// The legacy shared admin token (see [`super::operators::shared_token`]).
pub use super::operators::shared_token as admin_token;

/// The admin gRPC server, with TLS when configured. Certificates are read and checked here,
/// at startup, so a bad file stops `serve` with the field named instead of failing later.
pub fn admin_server(config: &Config) -> Result<tonic::transport::Server, BootstrapError> {
    let server = tonic::transport::Server::builder();
    let Some(tls) = &config.admin.tls else {
        return Ok(server);
    };
    let settings = crate::tls::server_config(
        "admin.tls",
        &tls.cert_file,
        &tls.key_file,
        tls.client_ca_file.as_deref(),
    )?;
    Ok(crate::tls::apply("admin.tls", server, settings)?)
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

/// The service, with what it needs from the running keygate (its operators included).
pub fn admin_service(app: &Arc<App>) -> AdminService {
    AdminService {
        app: app.clone(),
        denied: DeniedCalls::default(),
    }
}
