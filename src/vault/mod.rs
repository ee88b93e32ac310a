//! Vault (and OpenBao) access shared by the credential source, the consumer store and the CLI:
//! one logged-in session per connection, and KV v2 operations that are timed and counted.

pub mod kv;
pub mod session;

pub use session::VaultSession;

/// Why a Vault operation failed. Messages carry paths and statuses, never secret values.
#[derive(Debug, Clone, thiserror::Error)]
pub enum VaultError {
    #[error("vault configuration: {0}")]
    Config(String),
    #[error("vault login ({method}) failed: {reason}")]
    Login {
        method: &'static str,
        reason: String,
    },
    #[error("vault {operation} {path}: permission denied (403)")]
    Forbidden {
        operation: &'static str,
        path: String,
    },
    #[error("vault {operation} {path}: not found (404)")]
    NotFound {
        operation: &'static str,
        path: String,
    },
    #[error("vault {operation} {path}: HTTP {status}")]
    Status {
        operation: &'static str,
        path: String,
        status: u16,
    },
    #[error("vault {operation} {path}: {reason}")]
    Transport {
        operation: &'static str,
        path: String,
        reason: String,
    },
    #[error("vault {operation} {path}: timed out")]
    Timeout {
        operation: &'static str,
        path: String,
    },
    #[error("vault {operation} {path}: unexpected answer: {reason}")]
    Format {
        operation: &'static str,
        path: String,
        reason: String,
    },
}

impl VaultError {
    /// Maps a vaultrs error without keeping its text where it could quote a response body.
    pub(crate) fn from_client(
        operation: &'static str,
        path: &str,
        e: vaultrs::error::ClientError,
    ) -> Self {
        use vaultrs::error::ClientError as C;
        let path = path.to_string();
        match e {
            C::APIError { code: 403, .. } => VaultError::Forbidden { operation, path },
            C::APIError { code: 404, .. } => VaultError::NotFound { operation, path },
            C::APIError { code, .. } => VaultError::Status {
                operation,
                path,
                status: code,
            },
            C::JsonParseError { .. } | C::ResponseEmptyError | C::ResponseDataEmptyError => {
                VaultError::Format {
                    operation,
                    path,
                    reason: "the response is not the JSON Vault sends".into(),
                }
            }
            C::RestClientError { source } => VaultError::Transport {
                operation,
                path,
                reason: transport_reason(&source),
            },
            other => VaultError::Transport {
                operation,
                path,
                reason: variant_name(&other),
            },
        }
    }
}

fn transport_reason(e: &rustify::errors::ClientError) -> String {
    use rustify::errors::ClientError as R;
    match e {
        R::ResponseParseError { .. } => "the response is not valid JSON".into(),
        R::ServerResponseError { code, .. } => format!("HTTP {code}"),
        R::RequestError { .. } | R::ReqwestBuildError { .. } => {
            "cannot connect, or the connection failed".into()
        }
        other => variant_name(other),
    }
}

/// The variant name of an error, which names the failure kind without any payload.
fn variant_name(e: &impl std::fmt::Debug) -> String {
    let text = format!("{e:?}");
    text.split(|c: char| !c.is_alphanumeric())
        .next()
        .unwrap_or("error")
        .to_string()
}
