//! Server TLS from PEM files, for the gRPC listener (Envoy → keygate) and the admin API. The
//! files are read and checked at startup, so a bad file stops `serve` with its field named.

use std::path::Path;

use tonic::transport::{Certificate, Identity, ServerTlsConfig};

/// Why a TLS setting could not be used.
#[derive(Debug, thiserror::Error)]
#[error("{section}.{field}: {reason}")]
pub struct TlsError {
    section: &'static str,
    field: &'static str,
    reason: String,
}

/// A server identity from `cert_file` and `key_file`; with `client_ca_file`, callers must
/// present a certificate that CA signed (mutual TLS).
pub fn server_config(
    section: &'static str,
    cert_file: &Path,
    key_file: &Path,
    client_ca_file: Option<&Path>,
) -> Result<ServerTlsConfig, TlsError> {
    let read = |field: &'static str, path: &Path| {
        std::fs::read(path).map_err(|e| TlsError {
            section,
            field,
            reason: format!("{}: {e}", path.display()),
        })
    };
    let identity = Identity::from_pem(read("cert_file", cert_file)?, read("key_file", key_file)?);
    let mut settings = ServerTlsConfig::new().identity(identity);
    if let Some(ca) = client_ca_file {
        settings = settings.client_ca_root(Certificate::from_pem(read("client_ca_file", ca)?));
    }
    Ok(settings)
}

/// Applies `settings` to a server builder; an unusable certificate or key names `cert_file`.
pub fn apply(
    section: &'static str,
    server: tonic::transport::Server,
    settings: ServerTlsConfig,
) -> Result<tonic::transport::Server, TlsError> {
    server.tls_config(settings).map_err(|e| TlsError {
        section,
        field: "cert_file",
        reason: format!("not a usable certificate and key: {e}"),
    })
}
