//! Any other provider: accept mode only. The operator hands in the new key; keygate
//! health-checks it with a GET it is told about, switches to it, and reminds the operator to
//! revoke the old key by hand after the grace period (there is no API to call).
//!
//! Settings: `api_base` (required), `health_path` (default `/v1/models`). The key is sent the
//! way the provider's `inject` says.

use reqwest::Method;
use secrecy::{ExposeSecret, SecretString};

use super::adapter::{AdapterError, AdapterSettings, Minted, ProviderAdapter, Revoked};
use super::http::Http;
use super::record::KeyRef;

const NAME: &str = "generic";

#[derive(Debug)]
pub struct Generic {
    http: Http,
    health_url: String,
    header: String,
    prefix: String,
}

pub fn build(settings: &AdapterSettings) -> Result<Box<dyn ProviderAdapter>, AdapterError> {
    let path = settings
        .optional("health_path")
        .unwrap_or_else(|| "/v1/models".into());
    Ok(Box::new(Generic {
        http: Http::new(NAME, settings.timeout)?,
        health_url: format!("{}{path}", settings.required(NAME, "api_base")?),
        header: settings.inject.0.clone(),
        prefix: settings.inject.1.clone(),
    }))
}

#[async_trait::async_trait]
impl ProviderAdapter for Generic {
    fn name(&self) -> &'static str {
        NAME
    }

    fn mints(&self) -> bool {
        false
    }

    async fn mint(&self, _tag: &str, _current: Option<&KeyRef>) -> Result<Minted, AdapterError> {
        Err(AdapterError::Unsupported(
            "a generic provider has no admin API: pass the new key with --new-key-file or on stdin",
        ))
    }

    async fn identify(&self, _key: &SecretString) -> Result<Option<KeyRef>, AdapterError> {
        Ok(None)
    }

    async fn health_check(&self, key: &SecretString) -> Result<(), AdapterError> {
        let value = format!("{}{}", self.prefix, key.expose_secret());
        let request = self
            .http
            .request(Method::GET, &self.health_url)
            .header(self.header.as_str(), value);
        self.http
            .call("health check", request, None)
            .await
            .map(drop)
    }

    async fn revoke(&self, _key: &KeyRef) -> Result<Revoked, AdapterError> {
        Ok(Revoked::Manual)
    }

    async fn revoke_tagged(&self, _tag: &str) -> Result<usize, AdapterError> {
        Ok(0)
    }
}
