//! Who may use a consumer: workload identities on their own, keys bound to identities, keys
//! bound to networks. The gate decides from the request and the caller the pipeline judged
//! (identity, address); config mistakes name their field.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

use std::net::IpAddr;
use std::sync::Arc;

use keygate::auth::{key, KeyEnv, KeyHash, Registry};
use keygate::config::Authentication;
use keygate::denial::DenyReason;
use keygate::denial_binding::BindingDenial;
use keygate::gate::{Authenticated, Gate, Refused};
use keygate::identity::SpiffeId;
use keygate::request::{Caller, Header, RequestView};
use keygate::secrets::CredentialCache;

const ML: &str = "spiffe://cluster.local/ns/ml/sa/trainer";
const WEB: &str = "spiffe://cluster.local/ns/web/sa/frontend";

struct Setup {
    gate: Gate,
    bound: String,
    networked: String,
    plain: String,
}

fn mint() -> String {
    key::reveal(&key::generate(KeyEnv::Live).unwrap()).to_string()
}

fn config(bound: &str, networked: &str, plain: &str) -> String {
    let h = |k: &str| KeyHash::of(k).to_string();
    format!(
        r#"
credentials: {{source: file, path: secrets.yaml}}
providers:
  openai: {{kind: openai, credentials: {{production: openai/production}}}}
consumers:
  - name: ml-namespace
    environment: production
    provider: openai
    authentication: identity
    identities: ["spiffe://cluster.local/ns/ml/sa/*"]
    scope: {{routes: ["POST /v1/chat/completions"]}}
  - name: ml-trainer
    environment: production
    provider: openai
    authentication: identity
    identities: ["{ML}"]
    scope: {{routes: ["POST /v1/chat/completions"]}}
  - name: bound
    environment: production
    provider: openai
    authentication: key_and_identity
    identities: ["{WEB}"]
    keys: [{{hash: "{}"}}]
    scope: {{routes: ["POST /v1/chat/completions"]}}
  - name: networked
    environment: production
    provider: openai
    allowed_sources: [10.0.0.0/8, "192.0.2.7"]
    keys: [{{hash: "{}"}}]
    scope: {{routes: ["POST /v1/chat/completions"]}}
  - name: plain
    environment: production
    provider: openai
    keys: [{{hash: "{}"}}]
    scope: {{routes: ["POST /v1/chat/completions"]}}
"#,
        h(bound),
        h(networked),
        h(plain)
    )
}

fn setup() -> Setup {
    let (bound, networked, plain) = (mint(), mint(), mint());
    let text = config(&bound, &networked, &plain);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keygate.yaml");
    std::fs::write(&path, text).unwrap();
    let config = keygate::config::load(&path).unwrap();
    let gate = Gate::new(
        Registry::from_config(&config),
        Arc::new(CredentialCache::new()),
    );
    Setup {
        gate,
        bound,
        networked,
        plain,
    }
}

fn authenticate(
    gate: &Gate,
    key: Option<&str>,
    identity: Option<&str>,
    address: &str,
) -> Result<Authenticated, Refused> {
    let bearer = key.map(|k| format!("Bearer {k}"));
    let headers = bearer
        .iter()
        .map(|value| Header {
            name: "authorization",
            value: value.as_bytes(),
        })
        .collect();
    let view = RequestView {
        method: "POST",
        path: "/v1/chat/completions",
        headers,
        header_count: 0,
        body_len: None,
        peer: None,
        peer_identity: None,
        body: None,
    };
    let caller = Caller {
        identity: identity.map(|t| SpiffeId::parse(t).unwrap()),
        address: Some(address.parse::<IpAddr>().unwrap()),
    };
    gate.authenticate(&view, &caller)
}

fn binding_denial(result: Result<Authenticated, Refused>) -> BindingDenial {
    match result {
        Err(Refused {
            reason: DenyReason::Binding(b),
            ..
        }) => b,
        Err(other) => panic!("expected a binding denial, got {:?}", other.reason),
        Ok(a) => panic!("expected a denial, {} was allowed", a.consumer.name),
    }
}

#[test]
fn an_identity_alone_authenticates_and_the_most_specific_pattern_decides() {
    let s = setup();
    let trainer = authenticate(&s.gate, None, Some(ML), "10.1.1.1").unwrap();
    assert_eq!(&*trainer.consumer.name, "ml-trainer");
    assert_eq!(
        (trainer.key_id, trainer.by),
        (None, Authentication::Identity)
    );
    let other = "spiffe://cluster.local/ns/ml/sa/notebook";
    let namespace = authenticate(&s.gate, None, Some(other), "10.1.1.1").unwrap();
    assert_eq!(&*namespace.consumer.name, "ml-namespace");
    // A placeholder an SDK insists on sending does not get in the way.
    let placeholder = authenticate(&s.gate, Some("unused"), Some(ML), "10.1.1.1").unwrap();
    assert_eq!(&*placeholder.consumer.name, "ml-trainer");
}

#[test]
fn an_unknown_identity_without_a_key_is_refused_and_a_key_still_works() {
    let s = setup();
    let refused = binding_denial(authenticate(&s.gate, None, Some(WEB), "10.1.1.1"));
    assert_eq!(
        refused,
        BindingDenial::UnknownIdentity {
            identity: WEB.into()
        }
    );
    assert_eq!(DenyReason::Binding(refused).status(), 403);
    // A key authenticates whatever the identity (authentication: key).
    let plain = authenticate(&s.gate, Some(&s.plain), Some(WEB), "10.1.1.1").unwrap();
    assert_eq!(
        (&*plain.consumer.name, plain.by),
        ("plain", Authentication::Key)
    );
    assert!(plain.key_id.is_some());
    // Without an identity, no key is still a missing key (401).
    let missing = authenticate(&s.gate, None, None, "10.1.1.1").unwrap_err();
    assert_eq!(missing.reason, DenyReason::MissingKey);
}

#[test]
fn a_bound_key_works_only_from_its_identity() {
    let s = setup();
    let ok = authenticate(&s.gate, Some(&s.bound), Some(WEB), "10.1.1.1").unwrap();
    assert_eq!(
        (&*ok.consumer.name, ok.by),
        ("bound", Authentication::KeyAndIdentity)
    );
    let elsewhere = authenticate(&s.gate, Some(&s.bound), Some(ML), "10.1.1.1");
    let Err(refused) = &elsewhere else {
        panic!("allowed from another identity")
    };
    assert_eq!(
        refused.consumer.as_ref().map(|c| c.name.to_string()),
        Some("bound".into())
    );
    assert!(refused.key_id.is_some(), "the key is named by its id");
    assert_eq!(
        binding_denial(elsewhere),
        BindingDenial::IdentityMismatch {
            presented: Some(ML.into())
        }
    );
    assert_eq!(
        binding_denial(authenticate(&s.gate, Some(&s.bound), None, "10.1.1.1")),
        BindingDenial::IdentityMismatch { presented: None }
    );
}

#[test]
fn a_key_bound_to_networks_works_only_from_them() {
    let s = setup();
    for inside in ["10.200.0.1", "192.0.2.7", "::ffff:10.0.0.1"] {
        assert!(
            authenticate(&s.gate, Some(&s.networked), None, inside).is_ok(),
            "{inside}"
        );
    }
    for outside in ["192.0.2.8", "172.16.0.1", "2001:db8::1"] {
        assert_eq!(
            binding_denial(authenticate(&s.gate, Some(&s.networked), None, outside)),
            BindingDenial::SourceNotAllowed {
                address: Some(outside.parse().unwrap())
            }
        );
    }
}

fn error_for(text: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keygate.yaml");
    std::fs::write(&path, text).unwrap();
    let err = keygate::config::load(&path)
        .expect_err("config should be rejected")
        .to_string();
    err.split_once(": ")
        .map(|(_, rest)| rest.to_string())
        .unwrap_or(err)
}

#[test]
fn binding_mistakes_name_their_field() {
    let base = config(&mint(), &mint(), &mint());
    let cases = [
        (
            base.replace("allowed_sources: [10.0.0.0/8", "allowed_sources: [10.0.0.1/8"),
            "consumers[3].allowed_sources[0]: 10.0.0.1/8 has host bits set; did you mean 10.0.0.0/8?",
        ),
        (
            base.replace("identities: [\"spiffe://cluster.local/ns/ml/sa/*\"]", "identities: [\"spiffe://cluster.local/ns/ml/sa/tr*\"]"),
            "consumers[0].identities[0]: '*' must be a whole path segment",
        ),
        (
            base.replace("    authentication: key_and_identity\n", ""),
            "consumers[2].identities: identities are used only with authentication: identity",
        ),
        (
            base.replace(&format!("    identities: [\"{WEB}\"]\n"), ""),
            "consumers[2].identities: list the workload identities",
        ),
        (
            base.replace("    authentication: key_and_identity\n", "    authentication: identity\n"),
            "consumers[2].keys: a consumer authenticated by identity alone holds no keys",
        ),
        (
            base.replace("identities: [\"spiffe://cluster.local/ns/ml/sa/*\"]", &format!("identities: [\"{ML}\"]")),
            "consumers[1].identities[0]: spiffe://cluster.local/ns/ml/sa/trainer and consumers[0].identities[0] (spiffe://cluster.local/ns/ml/sa/trainer) can name the same workload equally specifically",
        ),
        (
            base.replace("authentication: identity\n    identities: [\"spiffe://cluster.local/ns/ml/sa/*\"]", "authentication: identity\n    identities: [\"spiffe://cluster.local/ns/*/sa/trainer\"]")
                .replace(&format!("identities: [\"{ML}\"]"), "identities: [\"spiffe://cluster.local/ns/ml/sa/*\"]"),
            "consumers[1].identities[0]: spiffe://cluster.local/ns/ml/sa/* and consumers[0].identities[0] (spiffe://cluster.local/ns/*/sa/trainer)",
        ),
        (
            base.replace("authentication: identity\n", "authentication: mtls\n"),
            "consumers[0].authentication: unknown variant `mtls`",
        ),
        (
            base.replace("scope: {routes: [\"POST /v1/chat/completions\"]}\n  - name: plain", "scope: {routes: [\"POST /v1/chat/completions\"], models: []}\n  - name: plain"),
            "consumers[3].scope.models: list at least one model",
        ),
    ];
    for (text, want) in cases {
        let got = error_for(&text);
        assert!(got.starts_with(want), "want {want:?}\n got {got:?}");
    }
}
