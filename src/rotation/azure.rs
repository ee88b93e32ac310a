//! Azure OpenAI: an account has two keys, `key1` and `key2`. A rotation regenerates the one
//! not in use through Azure Resource Manager (`…/accounts/{account}/regenerateKey`), switches
//! to it, and after the grace period regenerates the old one, which revokes its value.
//!
//! Settings: `subscription`, `resource_group`, `account`, `endpoint` (the resource's
//! `https://{name}.openai.azure.com`, for the health check), optional `management_base`
//! (default `https://management.azure.com`), `login_base` (default
//! `https://login.microsoftonline.com`), `api_version` (default `2023-05-01`).
//! Admin credential: an Entra ID service principal, `tenant_id`, `client_id`, `client_secret`.

use reqwest::Method;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{json, Value};

use super::adapter::{AdapterError, AdapterSettings, Minted, ProviderAdapter, Revoked};
use super::http::{text, Http};
use super::record::KeyRef;

const NAME: &str = "azure_openai";
const SLOTS: [&str; 2] = ["key1", "key2"];

pub struct Azure {
    http: Http,
    account_url: String,
    endpoint: String,
    login_url: String,
    api_version: String,
    client_id: String,
    client_secret: SecretString,
}

impl std::fmt::Debug for Azure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Azure")
            .field("account_url", &self.account_url)
            .finish_non_exhaustive()
    }
}

pub fn build(settings: &AdapterSettings) -> Result<Box<dyn ProviderAdapter>, AdapterError> {
    let admin = settings.admin(NAME)?;
    let management = settings
        .optional("management_base")
        .unwrap_or_else(|| "https://management.azure.com".into());
    let login = settings
        .optional("login_base")
        .unwrap_or_else(|| "https://login.microsoftonline.com".into());
    Ok(Box::new(Azure {
        http: Http::new(NAME, settings.timeout)?,
        account_url: format!(
            "{management}/subscriptions/{}/resourceGroups/{}/providers/Microsoft.CognitiveServices/accounts/{}",
            settings.required(NAME, "subscription")?,
            settings.required(NAME, "resource_group")?,
            settings.required(NAME, "account")?,
        ),
        endpoint: settings.required(NAME, "endpoint")?,
        login_url: format!("{login}/{}/oauth2/v2.0/token", admin.field(NAME, "tenant_id")?),
        api_version: settings
            .optional("api_version")
            .unwrap_or_else(|| "2023-05-01".into()),
        client_id: admin.field(NAME, "client_id")?.to_string(),
        client_secret: SecretString::from(admin.field(NAME, "client_secret")?.to_string()),
    }))
}

fn other(slot: &str) -> &'static str {
    if slot == SLOTS[0] {
        SLOTS[1]
    } else {
        SLOTS[0]
    }
}

impl Azure {
    /// A management-API token from the service principal (client credentials).
    async fn token(&self) -> Result<SecretString, AdapterError> {
        let call = "entra id login";
        let form: String = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", "client_credentials")
            .append_pair("client_id", &self.client_id)
            .append_pair("client_secret", self.client_secret.expose_secret())
            .append_pair("scope", "https://management.azure.com/.default")
            .finish();
        let request = self
            .http
            .request(Method::POST, &self.login_url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form);
        let answer = self.http.call(call, request, None).await?;
        text(&answer, "access_token")
            .map(|t| SecretString::from(t.to_string()))
            .ok_or_else(|| self.http.format(call, "no access_token"))
    }

    /// `listKeys` or `regenerateKey`: both answer `{key1, key2}`.
    async fn keys(
        &self,
        operation: &str,
        body: Option<&Value>,
    ) -> Result<[SecretString; 2], AdapterError> {
        let token = self.token().await?;
        let url = format!(
            "{}/{operation}?api-version={}",
            self.account_url, self.api_version
        );
        let request = self
            .http
            .request(Method::POST, &url)
            .bearer_auth(token.expose_secret());
        let answer = self
            .http
            .call(operation, request, body.or(Some(&json!({}))))
            .await?;
        match (text(&answer, "key1"), text(&answer, "key2")) {
            (Some(a), Some(b)) => Ok([
                SecretString::from(a.to_string()),
                SecretString::from(b.to_string()),
            ]),
            _ => Err(self.http.format(operation, "no key1 and key2")),
        }
    }

    async fn regenerate(&self, slot: &str) -> Result<SecretString, AdapterError> {
        let name = if slot == SLOTS[0] { "Key1" } else { "Key2" };
        let [key1, key2] = self
            .keys("regenerateKey", Some(&json!({ "keyName": name })))
            .await?;
        Ok(if slot == SLOTS[0] { key1 } else { key2 })
    }
}

#[async_trait::async_trait]
impl ProviderAdapter for Azure {
    fn name(&self) -> &'static str {
        NAME
    }

    fn mints(&self) -> bool {
        true
    }

    fn planned(&self, current: Option<&KeyRef>) -> Option<KeyRef> {
        current.map(|c| KeyRef {
            id: other(&c.id).to_string(),
            owner: None,
        })
    }

    async fn mint(&self, _tag: &str, current: Option<&KeyRef>) -> Result<Minted, AdapterError> {
        let Some(current) = current.filter(|c| SLOTS.contains(&c.id.as_str())) else {
            return Err(AdapterError::Call {
                adapter: NAME,
                call: "regenerateKey".into(),
                reason: "the key in use is neither key1 nor key2 of the account: cannot tell which one is unused".into(),
            });
        };
        let slot = other(&current.id);
        Ok(Minted {
            key: self.regenerate(slot).await?,
            key_ref: KeyRef {
                id: slot.to_string(),
                owner: None,
            },
        })
    }

    async fn identify(&self, key: &SecretString) -> Result<Option<KeyRef>, AdapterError> {
        let keys = self.keys("listKeys", None).await?;
        Ok(SLOTS
            .iter()
            .zip(keys.iter())
            .find(|(_, value)| value.expose_secret() == key.expose_secret().trim())
            .map(|(slot, _)| KeyRef {
                id: (*slot).to_string(),
                owner: None,
            }))
    }

    async fn health_check(&self, key: &SecretString) -> Result<(), AdapterError> {
        let request = self
            .http
            .request(
                Method::GET,
                &format!("{}/openai/models?api-version=2024-10-21", self.endpoint),
            )
            .header("api-key", key.expose_secret());
        self.http.call("list models", request, None).await.map(drop)
    }

    async fn revoke(&self, key: &KeyRef) -> Result<Revoked, AdapterError> {
        if !SLOTS.contains(&key.id.as_str()) {
            return Err(AdapterError::Call {
                adapter: NAME,
                call: "regenerateKey".into(),
                reason: format!("{:?} is not key1 or key2", key.id),
            });
        }
        self.regenerate(&key.id).await.map(|_| Revoked::Done)
    }

    async fn revoke_tagged(&self, _tag: &str) -> Result<usize, AdapterError> {
        // A regeneration has no name; the slot is recorded before minting (`planned`).
        Ok(0)
    }
}
