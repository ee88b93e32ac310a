//! `leaks:` in the config file: where secret scanners report leaked keygate keys. Today one
//! receiver, GitHub's secret-scanning partner alerts, on a listener of its own.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

/// `leaks:`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaksConfig {
    /// GitHub secret-scanning partner alerts; off when absent.
    #[serde(default)]
    pub github: Option<GithubAlertsConfig>,
}

/// The receiver of GitHub's secret-scanning alerts.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GithubAlertsConfig {
    /// Its own listener (default 127.0.0.1:50053), so it can be published to GitHub through
    /// an ingress without publishing `/metrics` or the admin API.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// GitHub's signing keys, as `api.github.com/meta/public_keys/secret_scanning` lists them:
    /// a request signed by any other key, or unsigned, is refused.
    pub public_keys: Vec<PublicKeyConfig>,
    /// Larger bodies are refused with 413 before they are read (default 1 MiB).
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
}

/// One ECDSA P-256 public key, PEM inline (`key`) or in a file (`key_file`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublicKeyConfig {
    /// GitHub's `key_identifier`, sent as `Github-Public-Key-Identifier`.
    pub key_identifier: String,
    #[serde(default)]
    pub key: Option<String>,
    /// Relative to this config file.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 50053))
}

fn default_max_body() -> usize {
    1024 * 1024
}

impl GithubAlertsConfig {
    /// The failing field and why: every key named and given once, a sane body bound.
    pub fn check(&self) -> Result<(), (String, String)> {
        if self.public_keys.is_empty() {
            return Err((
                "public_keys".into(),
                "list GitHub's secret-scanning public keys (key_identifier and key or key_file)"
                    .into(),
            ));
        }
        for (i, key) in self.public_keys.iter().enumerate() {
            if key.key_identifier.trim().is_empty() {
                return Err((
                    format!("public_keys[{i}].key_identifier"),
                    "must not be empty".into(),
                ));
            }
            if key.key.is_some() == key.key_file.is_some() {
                return Err((
                    format!("public_keys[{i}]"),
                    "give exactly one of key (PEM) and key_file".into(),
                ));
            }
        }
        if self.max_body_bytes == 0 || self.max_body_bytes > 64 * 1024 * 1024 {
            return Err((
                "max_body_bytes".into(),
                "must be between 1 and 67108864".into(),
            ));
        }
        Ok(())
    }
}
