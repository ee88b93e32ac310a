//! OpenAI: keys are minted as project service-account keys through the admin API
//! (`POST /v1/organization/projects/{project}/service_accounts` returns the new key once),
//! found by their redacted value in the project's key list, and revoked by deleting the
//! project key (and the service account keygate created for it).
//!
//! Settings: `project` (required), `api_base` (default `https://api.openai.com`).
//! Admin credential: `api_key` (an OpenAI admin key).

use reqwest::Method;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{json, Value};

use super::adapter::{
    hint_matches, AdapterError, AdapterSettings, Minted, ProviderAdapter, Revoked,
};
use super::http::{text, Http};
use super::record::KeyRef;

const NAME: &str = "openai";

pub struct OpenAi {
    http: Http,
    base: String,
    project: String,
    admin_key: SecretString,
}

impl std::fmt::Debug for OpenAi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAi")
            .field("base", &self.base)
            .field("project", &self.project)
            .finish_non_exhaustive()
    }
}

pub fn build(settings: &AdapterSettings) -> Result<Box<dyn ProviderAdapter>, AdapterError> {
    Ok(Box::new(OpenAi {
        http: Http::new(NAME, settings.timeout)?,
        base: settings
            .optional("api_base")
            .unwrap_or_else(|| "https://api.openai.com".into()),
        project: settings.required(NAME, "project")?,
        admin_key: SecretString::from(settings.admin(NAME)?.field(NAME, "api_key")?.to_string()),
    }))
}

impl OpenAi {
    fn project_url(&self, rest: &str) -> String {
        format!(
            "{}/v1/organization/projects/{}/{rest}",
            self.base, self.project
        )
    }

    async fn admin(
        &self,
        call: &str,
        method: Method,
        url: &str,
        body: Option<&Value>,
    ) -> Result<Value, AdapterError> {
        let request = self
            .http
            .request(method, url)
            .bearer_auth(self.admin_key.expose_secret());
        self.http.call(call, request, body).await
    }

    async fn list(&self, call: &str, what: &str) -> Result<Vec<Value>, AdapterError> {
        let answer = self
            .admin(call, Method::GET, &self.project_url(what), None)
            .await?;
        match answer.get("data").and_then(Value::as_array) {
            Some(items) => Ok(items.clone()),
            None => Err(self.http.format(call, "no data list")),
        }
    }

    /// Deletes a resource; a 404 means it is already gone.
    async fn delete(&self, call: &str, url: &str) -> Result<(), AdapterError> {
        let request = self
            .http
            .request(Method::DELETE, url)
            .bearer_auth(self.admin_key.expose_secret());
        let answer = self.http.send(call, request, None).await?;
        match answer.status {
            200..=299 | 404 => Ok(()),
            status => Err(self.http.status(call, status)),
        }
    }
}

#[async_trait::async_trait]
impl ProviderAdapter for OpenAi {
    fn name(&self) -> &'static str {
        NAME
    }

    fn mints(&self) -> bool {
        true
    }

    async fn mint(&self, tag: &str, _current: Option<&KeyRef>) -> Result<Minted, AdapterError> {
        let call = "create service account";
        let answer = self
            .admin(
                call,
                Method::POST,
                &self.project_url("service_accounts"),
                Some(&json!({ "name": tag })),
            )
            .await?;
        let account = text(&answer, "id").ok_or_else(|| self.http.format(call, "no id"))?;
        let key = answer.get("api_key").unwrap_or(&Value::Null);
        match (text(key, "value"), text(key, "id")) {
            (Some(value), Some(id)) => Ok(Minted {
                key: SecretString::from(value.to_string()),
                key_ref: KeyRef {
                    id: id.to_string(),
                    owner: Some(account.to_string()),
                },
            }),
            _ => Err(self.http.format(call, "no api_key with value and id")),
        }
    }

    async fn identify(&self, key: &SecretString) -> Result<Option<KeyRef>, AdapterError> {
        let keys = self.list("list project keys", "api_keys").await?;
        let mut found = keys.iter().filter(|k| {
            text(k, "redacted_value").is_some_and(|hint| hint_matches(hint, key.expose_secret()))
        });
        let (Some(one), None) = (found.next(), found.next()) else {
            return Ok(None);
        };
        let owner = one
            .pointer("/owner/service_account/id")
            .and_then(Value::as_str)
            .map(str::to_string);
        Ok(text(one, "id").map(|id| KeyRef {
            id: id.to_string(),
            owner,
        }))
    }

    async fn health_check(&self, key: &SecretString) -> Result<(), AdapterError> {
        let request = self
            .http
            .request(Method::GET, &format!("{}/v1/models", self.base))
            .bearer_auth(key.expose_secret());
        self.http.call("list models", request, None).await.map(drop)
    }

    async fn revoke(&self, key: &KeyRef) -> Result<Revoked, AdapterError> {
        self.delete(
            "delete project key",
            &self.project_url(&format!("api_keys/{}", key.id)),
        )
        .await?;
        if let Some(account) = key.owner.as_deref().filter(|a| a.starts_with("svc_acct_")) {
            let accounts = self
                .list("list service accounts", "service_accounts")
                .await?;
            let ours = accounts.iter().any(|a| {
                text(a, "id") == Some(account)
                    && text(a, "name").is_some_and(|n| n.starts_with("keygate-"))
            });
            if ours {
                self.delete(
                    "delete service account",
                    &self.project_url(&format!("service_accounts/{account}")),
                )
                .await?;
            }
        }
        Ok(Revoked::Done)
    }

    async fn revoke_tagged(&self, tag: &str) -> Result<usize, AdapterError> {
        let accounts = self
            .list("list service accounts", "service_accounts")
            .await?;
        let mut n = 0;
        for account in accounts.iter().filter(|a| text(a, "name") == Some(tag)) {
            if let Some(id) = text(account, "id") {
                self.delete(
                    "delete service account",
                    &self.project_url(&format!("service_accounts/{id}")),
                )
                .await?;
                n += 1;
            }
        }
        Ok(n)
    }
}
