//! Anthropic: its admin API cannot create keys, so a rotation accepts the new key from the
//! operator (made in the Console, handed in on stdin or a file). The admin API finds both
//! keys by their `partial_key_hint` and deactivates the old one after the grace period
//! (`POST /v1/organizations/api_keys/{id}` with `{"status": "inactive"}`).
//!
//! Settings: `api_base` (default `https://api.anthropic.com`).
//! Admin credential: `api_key` (an Anthropic admin key, `sk-ant-admin…`).

use reqwest::Method;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{json, Value};

use super::adapter::{
    hint_matches, AdapterError, AdapterSettings, Minted, ProviderAdapter, Revoked,
};
use super::http::{text, Http};
use super::record::KeyRef;

const NAME: &str = "anthropic";
const VERSION: &str = "2023-06-01";

pub struct Anthropic {
    http: Http,
    base: String,
    admin_key: SecretString,
}

impl std::fmt::Debug for Anthropic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Anthropic")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

pub fn build(settings: &AdapterSettings) -> Result<Box<dyn ProviderAdapter>, AdapterError> {
    Ok(Box::new(Anthropic {
        http: Http::new(NAME, settings.timeout)?,
        base: settings
            .optional("api_base")
            .unwrap_or_else(|| "https://api.anthropic.com".into()),
        admin_key: SecretString::from(settings.admin(NAME)?.field(NAME, "api_key")?.to_string()),
    }))
}

impl Anthropic {
    fn admin(&self, method: Method, rest: &str) -> reqwest::RequestBuilder {
        self.http
            .request(
                method,
                &format!("{}/v1/organizations/api_keys{rest}", self.base),
            )
            .header("x-api-key", self.admin_key.expose_secret())
            .header("anthropic-version", VERSION)
    }
}

#[async_trait::async_trait]
impl ProviderAdapter for Anthropic {
    fn name(&self) -> &'static str {
        NAME
    }

    fn mints(&self) -> bool {
        false
    }

    async fn mint(&self, _tag: &str, _current: Option<&KeyRef>) -> Result<Minted, AdapterError> {
        Err(AdapterError::Unsupported(
            "Anthropic's admin API cannot create keys: create one in the Console and pass it with --new-key-file or on stdin",
        ))
    }

    async fn identify(&self, key: &SecretString) -> Result<Option<KeyRef>, AdapterError> {
        let call = "list api keys";
        let answer = self
            .http
            .call(call, self.admin(Method::GET, "?limit=1000"), None)
            .await?;
        let Some(keys) = answer.get("data").and_then(Value::as_array) else {
            return Err(self.http.format(call, "no data list"));
        };
        let mut found = keys.iter().filter(|k| {
            text(k, "partial_key_hint")
                .is_some_and(|hint| hint_matches(hint, key.expose_secret().trim()))
        });
        let (Some(one), None) = (found.next(), found.next()) else {
            return Ok(None);
        };
        Ok(text(one, "id").map(|id| KeyRef {
            id: id.to_string(),
            owner: None,
        }))
    }

    async fn health_check(&self, key: &SecretString) -> Result<(), AdapterError> {
        let request = self
            .http
            .request(Method::GET, &format!("{}/v1/models", self.base))
            .header("x-api-key", key.expose_secret())
            .header("anthropic-version", VERSION);
        self.http.call("list models", request, None).await.map(drop)
    }

    async fn revoke(&self, key: &KeyRef) -> Result<Revoked, AdapterError> {
        let call = "deactivate api key";
        let request = self.admin(Method::POST, &format!("/{}", key.id));
        let answer = self
            .http
            .send(call, request, Some(&json!({ "status": "inactive" })))
            .await?;
        match answer.status {
            200..=299 | 404 => Ok(Revoked::Done),
            status => Err(self.http.status(call, status)),
        }
    }

    async fn revoke_tagged(&self, _tag: &str) -> Result<usize, AdapterError> {
        Ok(0)
    }
}
