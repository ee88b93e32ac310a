//! The provider adapters against the mock provider's admin APIs, served in-process: each
//! mints (or refuses to), finds keys by the provider's redacted hint, health-checks a key and
//! revokes one, and the mock's enforcement shows the effect (a revoked key gets the
//! provider's 401). No error message carries a key.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

use std::collections::BTreeMap;
use std::time::Duration;

use keygate::rotation::adapter::{AdapterError, AdapterSettings, AdminSecret, Revoked};
use keygate::rotation::adapters;
use keygate::rotation::record::KeyRef;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{json, Value};

const ADMIN: &str = "sk-admin-adapter-test-0123456789abcdef";

struct Mock {
    base: String,
    http: reqwest::Client,
}

impl Mock {
    async fn start() -> Mock {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let app = mock_provider::router(mock_provider::Config::default());
        tokio::spawn(async move { axum::serve(listener, app).await });
        let mock = Mock {
            base,
            http: reqwest::Client::new(),
        };
        mock.post(
            "/__mock/keys",
            json!({"enforce": true, "admin_keys": [ADMIN]}),
        )
        .await;
        mock
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        serde_json::from_slice(&r.bytes().await.unwrap()).unwrap()
    }

    async fn keys(&self) -> Vec<Value> {
        let r = self
            .http
            .get(format!("{}/__mock/keys", self.base))
            .send()
            .await
            .unwrap();
        serde_json::from_slice(&r.bytes().await.unwrap()).unwrap()
    }

    async fn status_of(&self, value: &str) -> String {
        let keys = self.keys().await;
        let key = keys.iter().find(|k| k["value"] == value).unwrap();
        key["status"].as_str().unwrap().to_string()
    }
}

fn settings(mock: &Mock, admin: &[(&str, &str)], extra: &[(&str, &str)]) -> AdapterSettings {
    let mut settings: BTreeMap<String, String> = extra
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    settings.insert("api_base".into(), mock.base.clone());
    AdapterSettings {
        reference: "test/production".into(),
        admin: Some(AdminSecret(
            admin
                .iter()
                .map(|(k, v)| (k.to_string(), SecretString::from(v.to_string())))
                .collect(),
        )),
        settings,
        inject: ("authorization".into(), "Bearer ".into()),
        timeout: Duration::from_secs(5),
    }
}

fn secret(s: &str) -> SecretString {
    SecretString::from(s.to_string())
}

#[tokio::test]
async fn openai_mints_service_account_keys_and_deletes_them() {
    let mock = Mock::start().await;
    let existing = "sk-proj-existing-user-key-0123456789";
    mock.post(
        "/__mock/keys",
        json!({"keys": [{"id": "key_user", "value": existing, "provider": "openai", "project": "proj_a"}]}),
    )
    .await;
    let adapter = adapters::build(
        "openai",
        &settings(&mock, &[("api_key", ADMIN)], &[("project", "proj_a")]),
    )
    .unwrap();
    assert!(adapter.mints());

    let minted = adapter.mint("keygate-test-rot_1", None).await.unwrap();
    let value = minted.key.expose_secret().to_string();
    assert!(value.starts_with("sk-svcacct-"));
    assert!(minted
        .key_ref
        .owner
        .as_deref()
        .unwrap()
        .starts_with("svc_acct_"));
    assert!(!format!("{minted:?}").contains(&value));
    adapter.health_check(&minted.key).await.unwrap();
    assert_eq!(
        adapter.identify(&minted.key).await.unwrap(),
        Some(minted.key_ref.clone())
    );
    assert_eq!(
        adapter.identify(&secret(existing)).await.unwrap(),
        Some(KeyRef {
            id: "key_user".into(),
            owner: None
        })
    );

    assert_eq!(
        adapter.revoke(&minted.key_ref).await.unwrap(),
        Revoked::Done
    );
    assert_eq!(mock.status_of(&value).await, "deleted");
    let refused = adapter.health_check(&minted.key).await.unwrap_err();
    assert!(
        matches!(refused, AdapterError::Status { status: 401, .. }),
        "{refused}"
    );
    assert_eq!(
        adapter.revoke(&minted.key_ref).await.unwrap(),
        Revoked::Done,
        "revoking a revoked key is done, not an error"
    );

    // A mint whose answer was lost is found by its name.
    let lost = adapter.mint("keygate-test-rot_2", None).await.unwrap();
    assert_eq!(
        adapter.revoke_tagged("keygate-test-rot_2").await.unwrap(),
        1
    );
    assert_eq!(mock.status_of(lost.key.expose_secret()).await, "deleted");
    assert_eq!(mock.status_of(existing).await, "active");

    let wrong = adapters::build(
        "openai",
        &settings(
            &mock,
            &[("api_key", "sk-admin-wrong-000000000000")],
            &[("project", "proj_a")],
        ),
    )
    .unwrap();
    let e = wrong.mint("keygate-x", None).await.unwrap_err().to_string();
    assert!(e.contains("HTTP 401") && !e.contains("sk-admin"), "{e}");
}

#[tokio::test]
async fn azure_regenerates_the_unused_slot_and_later_the_old_one() {
    let mock = Mock::start().await;
    let (k1, k2) = (
        "azurekeyoneazurekeyone000000001",
        "azurekeytwoazurekeytwo000000002",
    );
    mock.post(
        "/__mock/keys",
        json!({"keys": [
            {"id": "key1", "value": k1, "provider": "azure", "project": "acct"},
            {"id": "key2", "value": k2, "provider": "azure", "project": "acct"}]}),
    )
    .await;
    let s = settings(
        &mock,
        &[
            ("tenant_id", "tenant"),
            ("client_id", "client"),
            ("client_secret", ADMIN),
        ],
        &[
            ("subscription", "sub"),
            ("resource_group", "rg"),
            ("account", "acct"),
            ("endpoint", &mock.base),
            ("management_base", &mock.base),
            ("login_base", &mock.base),
        ],
    );
    let adapter = adapters::build("azure_openai", &s).unwrap();
    let current = adapter.identify(&secret(k1)).await.unwrap().unwrap();
    assert_eq!(current.id, "key1");
    assert_eq!(adapter.planned(Some(&current)).unwrap().id, "key2");

    let minted = adapter.mint("unused", Some(&current)).await.unwrap();
    assert_eq!(minted.key_ref.id, "key2");
    assert_ne!(minted.key.expose_secret(), k2);
    adapter.health_check(&minted.key).await.unwrap();
    adapter.health_check(&secret(k1)).await.unwrap();
    assert!(
        adapter.health_check(&secret(k2)).await.is_err(),
        "the unused slot's old value is gone"
    );

    assert_eq!(adapter.revoke(&current).await.unwrap(), Revoked::Done);
    assert!(adapter.health_check(&secret(k1)).await.is_err());
    adapter.health_check(&minted.key).await.unwrap();
    assert!(
        adapter.mint("x", None).await.is_err(),
        "which slot is in use must be known"
    );
}

#[tokio::test]
async fn anthropic_accepts_keys_and_deactivates_the_old_one() {
    let mock = Mock::start().await;
    let old = mock
        .post(
            "/__mock/console_keys",
            json!({"provider": "anthropic", "name": "old"}),
        )
        .await;
    let new = mock
        .post(
            "/__mock/console_keys",
            json!({"provider": "anthropic", "name": "new"}),
        )
        .await;
    let adapter =
        adapters::build("anthropic", &settings(&mock, &[("api_key", ADMIN)], &[])).unwrap();
    assert!(!adapter.mints());
    assert!(matches!(
        adapter.mint("x", None).await.unwrap_err(),
        AdapterError::Unsupported(_)
    ));
    let old_key = secret(old["value"].as_str().unwrap());
    let found = adapter.identify(&old_key).await.unwrap().unwrap();
    assert_eq!(found.id, old["id"].as_str().unwrap());
    adapter
        .health_check(&secret(new["value"].as_str().unwrap()))
        .await
        .unwrap();
    assert_eq!(adapter.revoke(&found).await.unwrap(), Revoked::Done);
    assert_eq!(
        mock.status_of(old["value"].as_str().unwrap()).await,
        "inactive"
    );
    assert!(adapter.health_check(&old_key).await.is_err());
}

#[tokio::test]
async fn generic_is_accept_only_and_revokes_by_hand() {
    let mock = Mock::start().await;
    let key = "generic-provider-key-0123456789";
    mock.post(
        "/__mock/keys",
        json!({"keys": [{"id": "g", "value": key, "provider": "openai"}]}),
    )
    .await;
    let mut s = settings(&mock, &[], &[]);
    s.admin = None;
    let adapter = adapters::build("generic", &s).unwrap();
    assert!(!adapter.mints());
    adapter.health_check(&secret(key)).await.unwrap();
    assert!(adapter
        .health_check(&secret("generic-wrong"))
        .await
        .is_err());
    let key_ref = KeyRef {
        id: "g".into(),
        owner: None,
    };
    assert_eq!(adapter.revoke(&key_ref).await.unwrap(), Revoked::Manual);
    assert!(adapters::build("nope", &s).is_err());
}
