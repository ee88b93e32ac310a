//! A logged-in Vault client: token, AppRole or Kubernetes login, renewal before expiry, and a
//! fresh login when renewal fails. Operations borrow the client for one call at a time.

use std::time::{Duration, Instant};

use secrecy::{ExposeSecret, SecretString};
use tokio::sync::{Mutex, RwLock};
use vaultrs::client::{Client, VaultClient, VaultClientSettingsBuilder};

use super::VaultError;
use crate::config::{VaultAuth, VaultConnection};
use crate::telemetry;

/// Renew once less than this fraction of the token's lifetime is left.
const RENEW_WHEN_LEFT: f64 = 0.5;

#[derive(Debug, Default)]
struct TokenState {
    logged_in: bool,
    /// None: the token does not expire (e.g. a root token).
    expires_at: Option<Instant>,
    ttl: Duration,
    /// The lifetime the last login granted; a renewal that returns much less has hit the
    /// token's max TTL.
    login_ttl: Duration,
    renewable: bool,
}

/// One Vault connection with its login state.
pub struct VaultSession {
    client: RwLock<VaultClient>,
    connection: VaultConnection,
    token: Mutex<TokenState>,
}

impl std::fmt::Debug for VaultSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaultSession")
            .field("address", &self.connection.address)
            .finish_non_exhaustive()
    }
}

impl VaultSession {
    /// Builds the client; no network call yet.
    pub fn new(connection: &VaultConnection) -> Result<Self, VaultError> {
        url::Url::parse(&connection.address)
            .map_err(|e| VaultError::Config(format!("address {:?}: {e}", connection.address)))?;
        let mut settings = VaultClientSettingsBuilder::default();
        settings
            .address(&connection.address)
            .token("")
            // keygate's own per-call timeout fires first and reports "timed out"; this is a backstop.
            .timeout(Some(connection.timeout + Duration::from_secs(1)))
            .verify(true);
        if let Some(ca) = &connection.ca_cert {
            settings.ca_certs(vec![ca.display().to_string()]);
        }
        if let Some(ns) = &connection.namespace {
            settings.namespace(Some(ns.clone()));
        }
        let settings = settings
            .build()
            .map_err(|e| VaultError::Config(e.to_string()))?;
        let client =
            VaultClient::new(settings).map_err(|e| VaultError::Config(format!("client: {e}")))?;
        Ok(VaultSession {
            client: RwLock::new(client),
            connection: connection.clone(),
            token: Mutex::new(TokenState::default()),
        })
    }

    /// Runs one Vault operation with a valid token, a timeout, and a count in
    /// `keygate_vault_requests_total{operation,result}`.
    pub async fn call<T, F>(
        &self,
        operation: &'static str,
        path: &str,
        f: F,
    ) -> Result<T, VaultError>
    where
        F: AsyncFnOnce(&VaultClient) -> Result<T, vaultrs::error::ClientError>,
    {
        self.ensure_token().await?;
        let guard = self.client.read().await;
        let result = match tokio::time::timeout(self.connection.timeout, f(&guard)).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(VaultError::from_client(operation, path, e)),
            Err(_) => Err(VaultError::Timeout {
                operation,
                path: path.to_string(),
            }),
        };
        telemetry::record_vault_request(operation, result.is_ok());
        if matches!(result, Err(VaultError::Forbidden { .. })) {
            // The token may have been revoked: log in again on the next call.
            self.token.lock().await.logged_in = false;
        }
        result
    }

    /// Logs in when needed, renews a token that is past half its lifetime, and logs in again
    /// when renewal fails.
    async fn ensure_token(&self) -> Result<(), VaultError> {
        let mut state = self.token.lock().await;
        if state.logged_in {
            let Some(expires_at) = state.expires_at else {
                return Ok(());
            };
            let left = expires_at.saturating_duration_since(Instant::now());
            if left.as_secs_f64() > state.ttl.as_secs_f64() * RENEW_WHEN_LEFT {
                return Ok(());
            }
            if state.renewable && !left.is_zero() {
                match self.renew(state.login_ttl).await {
                    Ok(next) if !capped(&next) => {
                        *state = next;
                        return Ok(());
                    }
                    Ok(_) => tracing::info!("vault token reached its max TTL; logging in again"),
                    Err(e) => {
                        tracing::warn!(error = %e, "vault token renewal failed; logging in again")
                    }
                }
            }
        }
        *state = self.login().await?;
        Ok(())
    }

    async fn renew(&self, login_ttl: Duration) -> Result<TokenState, VaultError> {
        let client = self.client.read().await;
        let result = tokio::time::timeout(self.connection.timeout, client.renew(None)).await;
        let ok = matches!(result, Ok(Ok(_)));
        telemetry::record_vault_request("renew", ok);
        match result {
            Ok(Ok(auth)) => Ok(TokenState {
                login_ttl,
                ..token_state(auth.lease_duration, auth.renewable)
            }),
            Ok(Err(e)) => Err(VaultError::from_client("renew", "auth/token/renew-self", e)),
            Err(_) => Err(VaultError::Timeout {
                operation: "renew",
                path: "auth/token/renew-self".into(),
            }),
        }
    }

    async fn login(&self) -> Result<TokenState, VaultError> {
        let method = self.method_name();
        let outcome = tokio::time::timeout(self.connection.timeout, self.login_inner()).await;
        let result = match outcome {
            Ok(r) => r,
            Err(_) => Err(VaultError::Login {
                method,
                reason: "timed out".into(),
            }),
        };
        telemetry::record_vault_request("login", result.is_ok());
        if result.is_ok() {
            tracing::info!(method, "logged in to vault");
        }
        result
    }

    async fn login_inner(&self) -> Result<TokenState, VaultError> {
        let method = self.method_name();
        let fail = |reason: String| VaultError::Login { method, reason };
        let auth = match &self.connection.auth {
            VaultAuth::Token {
                token_file,
                token_env,
            } => {
                let token = read_token(token_file.as_deref(), token_env).map_err(fail)?;
                let mut client = self.client.write().await;
                client.set_token(token.expose_secret());
                let lookup = client.lookup().await.map_err(|e| {
                    fail(VaultError::from_client("login", "auth/token/lookup-self", e).to_string())
                })?;
                return Ok(token_state(lookup.ttl, lookup.renewable.unwrap_or(false)));
            }
            VaultAuth::Approle {
                mount,
                role_id,
                secret_id_file,
            } => {
                let secret_id = read_secret_file(secret_id_file).map_err(fail)?;
                let client = self.client.read().await;
                vaultrs::auth::approle::login(&*client, mount, role_id, secret_id.expose_secret())
                    .await
            }
            VaultAuth::Kubernetes {
                mount,
                role,
                jwt_file,
            } => {
                let jwt = read_secret_file(jwt_file).map_err(fail)?;
                let client = self.client.read().await;
                vaultrs::auth::kubernetes::login(&*client, mount, role, jwt.expose_secret()).await
            }
        };
        let auth =
            auth.map_err(|e| fail(VaultError::from_client("login", method, e).to_string()))?;
        self.client.write().await.set_token(&auth.client_token);
        Ok(token_state(auth.lease_duration, auth.renewable))
    }

    fn method_name(&self) -> &'static str {
        match self.connection.auth {
            VaultAuth::Token { .. } => "token",
            VaultAuth::Approle { .. } => "approle",
            VaultAuth::Kubernetes { .. } => "kubernetes",
        }
    }
}

fn token_state(ttl_secs: u64, renewable: bool) -> TokenState {
    let ttl = Duration::from_secs(ttl_secs);
    TokenState {
        logged_in: true,
        expires_at: (ttl_secs > 0).then(|| Instant::now() + ttl),
        ttl,
        login_ttl: ttl,
        renewable,
    }
}

/// True when a renewal could not extend the token past the renewal threshold, because Vault
/// capped it at the token's max TTL: renewing again would only shorten it further, and the
/// token would expire under a request, so the caller logs in afresh instead.
fn capped(renewed: &TokenState) -> bool {
    renewed.ttl.as_secs_f64() <= renewed.login_ttl.as_secs_f64() * RENEW_WHEN_LEFT
}

fn read_token(file: Option<&std::path::Path>, env: &str) -> Result<SecretString, String> {
    if let Some(path) = file {
        return read_secret_file(path);
    }
    match std::env::var(env) {
        Ok(v) if !v.trim().is_empty() => Ok(SecretString::from(v.trim().to_string())),
        _ => Err(format!("no token: set ${env} or auth.token_file")),
    }
}

fn read_secret_file(path: &std::path::Path) -> Result<SecretString, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let text = text.trim();
    if text.is_empty() {
        return Err(format!("{}: empty", path.display()));
    }
    Ok(SecretString::from(text.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn renewed(ttl: u64, login_ttl: u64) -> TokenState {
        TokenState {
            login_ttl: Duration::from_secs(login_ttl),
            ..token_state(ttl, true)
        }
    }

    #[test]
    fn a_renewal_cut_short_by_max_ttl_means_log_in_again() {
        assert!(!capped(&renewed(3600, 3600)));
        assert!(!capped(&renewed(2000, 3600)));
        assert!(capped(&renewed(1800, 3600)));
        assert!(capped(&renewed(1, 3600)));
    }
}
