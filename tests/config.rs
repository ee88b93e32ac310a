//! Config validation: every mistake is reported with its exact field path.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test or benchmark fails by panicking

use std::path::PathBuf;

const BASE: &str = r#"
credentials: {source: file, path: secrets.yaml}
providers:
  openai: {kind: openai, credentials: {production: openai/production, staging: openai/staging}}
consumers:
  - name: a
    environment: production
    provider: openai
    keys: [{hash: "sha256:0000000000000000000000000000000000000000000000000000000000000001"}]
    scope: {routes: ["POST /v1/chat/completions"]}
  - name: b
    environment: staging
    provider: openai
    keys: [{hash: "sha256:0000000000000000000000000000000000000000000000000000000000000002", env: test}]
    scope: {routes: ["GET /v1/models"]}
"#;

fn write(dir: &tempfile::TempDir, text: &str) -> PathBuf {
    let path = dir.path().join("keygate.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

fn error_for(text: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, text);
    let err = keygate::config::load(&path)
        .expect_err("config should be rejected")
        .to_string();
    err.split_once(": ")
        .map(|(_, rest)| rest.to_string())
        .unwrap_or(err)
}

#[test]
fn base_config_is_valid() {
    let dir = tempfile::tempdir().unwrap();
    let config = keygate::config::load(&write(&dir, BASE)).unwrap();
    assert_eq!(config.inline_consumers().len(), 2);
    assert_eq!(config.listeners.grpc.to_string(), "127.0.0.1:50051");
}

#[test]
fn errors_name_the_field_path() {
    let cases = [
        (BASE.replace("GET /v1/models", "POTS /v1/models"), "consumers[1].scope.routes[0]: unknown method \"POTS\""),
        (BASE.replace("provider: openai\n    keys: [{hash: \"sha256:0000000000000000000000000000000000000000000000000000000000000002\"", "provider: opneai\n    keys: [{hash: \"sha256:0000000000000000000000000000000000000000000000000000000000000002\""), "consumers[1].provider: unknown provider \"opneai\""),
        (BASE.replace("environment: staging", "environment: qa"), "consumers[1].environment: provider \"openai\" has no credential for environment \"qa\""),
        (BASE.replace("0000000000000000000000000000000000000000000000000000000000000002", "0000000000000000000000000000000000000000000000000000000000000001"), "consumers[1].keys[0].hash: the same key hash"),
        (BASE.replace("sha256:0000000000000000000000000000000000000000000000000000000000000002", "md5:abc"), "consumers[1].keys[0].hash: expected \"sha256:\""),
        (BASE.replace("name: b", "name: \"b b\""), "consumers[1].name: consumer name must be"),
        (BASE.replace("name: b", "name: a"), "consumers[1].name: \"a\" is already used by consumers[0]"),
        (BASE.replace("env: test", "env: prod"), "consumers[1].keys[0].env: unknown variant `prod`"),
        (BASE.replace("environment: staging", "environment: staging\n    colour: red"), "consumers[1].colour: unknown field `colour`"),
        (BASE.replace("kind: openai", "kind: openia"), "providers.openai.kind: unknown variant `openia`"),
        (BASE.replace("{routes: [\"GET /v1/models\"]}", "{routes: []}"), "consumers[1].scope.routes: list at least one route"),
        (BASE.replace("environment: staging", "environment: production").replace("name: b", "name: b2"), "consumers[1].keys[0].env: test keys cannot be used by a production consumer"),
        (BASE.replace("[{hash: \"sha256:0000000000000000000000000000000000000000000000000000000000000001\"}]", "[{hash: \"sha256:0000000000000000000000000000000000000000000000000000000000000001\", expires: tomorrow}]"), "consumers[0].keys[0].expires: invalid timestamp \"tomorrow\""),
        (BASE.replace("openai/staging", "openai staging"), "providers.openai.credentials.staging: credential reference"),
        (format!("listeners: {{grpc: nowhere}}\n{BASE}"), "listeners.grpc: invalid socket address syntax"),
        (BASE.replace("providers:\n  openai: {kind: openai", "providers:\n  g: {kind: generic, credentials: {x: g/x}}\n  openai: {kind: openai"), "providers.g.inject: a generic provider must say which header"),
        (BASE.replace("providers:\n  openai: {kind: openai", "providers:\n  g: {kind: generic, credentials: {x: g/x}, inject: {header: x-key}, limits: {tokens_per_minute: 10}}\n  openai: {kind: openai"), "providers.g.limits.tokens_per_minute: a generic provider's answers carry no usage"),
        (format!("teams: {{ml: {{monthly_budget_usd: 5}}}}\n{}", BASE.replace("providers:\n  openai: {kind: openai", "providers:\n  g: {kind: generic, credentials: {production: g/x}, inject: {header: x-key}}\n  openai: {kind: openai").replace("  - name: a\n    environment: production\n    provider: openai", "  - name: a\n    team: ml\n    environment: production\n    provider: g")), "consumers[0].team: a generic provider's answers carry no usage"),
        (BASE.replace("    scope: {routes: [\"GET /v1/models\"]}", "    scope: {routes: [\"GET /v1/models\"]}\nlimits: {redis: {url: \"redis://x\", replicas: 0}}"), "limits.redis.replicas: must be at least 1"),
        (BASE.replace("    scope: {routes: [\"GET /v1/models\"]}", "    scope: {routes: [\"GET /v1/models\"]}\nlimits: {backend: redis}"), "limits.redis: backend: redis needs"),
        (BASE.replace("    scope: {routes: [\"GET /v1/models\"]}", "    scope: {routes: [\"GET /v1/models\"]}\nlimits: {redis: {url: \"redis://x\", cluster: [\"redis://y\"]}}"), "limits.redis: name the servers with exactly one of url"),
        (BASE.replace("    scope: {routes: [\"GET /v1/models\"]}", "    scope: {routes: [\"GET /v1/models\"]}\nlimits: {redis: {}}"), "limits.redis: name the servers with exactly one of url"),
        (BASE.replace("    scope: {routes: [\"GET /v1/models\"]}", "    scope: {routes: [\"GET /v1/models\"]}\nlimits: {redis: {cluster: []}}"), "limits.redis.cluster: list at least one node"),
        (BASE.replace("    scope: {routes: [\"GET /v1/models\"]}", "    scope: {routes: [\"GET /v1/models\"]}\nlimits: {redis: {cluster: [\"redis://a:7000\", \"http://b:7001\"]}}"), "limits.redis.cluster[1]: \"http://b:7001\" is not a Redis URL"),
        (BASE.replace("    scope: {routes: [\"GET /v1/models\"]}", "    scope: {routes: [\"GET /v1/models\"]}\nlimits: {redis: {url: \" \"}}"), "limits.redis.url: name the Redis server"),
        (BASE.replace("    scope: {routes: [\"GET /v1/models\"]}", "    scope: {routes: [\"GET /v1/models\"]}\nlimits: {redis: {sentinel: {urls: [], master: m}}}"), "limits.redis.sentinel.urls: list at least one sentinel"),
        (BASE.replace("    scope: {routes: [\"GET /v1/models\"]}", "    scope: {routes: [\"GET /v1/models\"]}\nlimits: {redis: {sentinel: {urls: [\"redis://s:26379\", \"s2\"], master: m}}}"), "limits.redis.sentinel.urls[1]: \"s2\" is not a Redis URL"),
        (BASE.replace("    scope: {routes: [\"GET /v1/models\"]}", "    scope: {routes: [\"GET /v1/models\"]}\nlimits: {redis: {sentinel: {urls: [\"redis://s:26379\"], master: \" \"}}}"), "limits.redis.sentinel.master: name the master group"),
        (BASE.replace("    scope: {routes: [\"GET /v1/models\"]}", "    scope: {routes: [\"GET /v1/models\"]}\nlimits: {redis: {sentinel: {urls: [\"redis://s:26379\"]}}}"), "limits.redis.sentinel: missing field `master`"),
        (BASE.replace("\", env: test}]", "\", env: test}, {hash: \"sha256:0000000000000000000000000000000000000000000000000000000000000003\", env: test}, {hash: \"sha256:0000000000000000000000000000000000000000000000000000000000000004\", env: test}]"), "consumers[1].keys: at most two keys per consumer"),
    ];
    for (text, want) in cases {
        let got = error_for(&text);
        assert!(
            got.starts_with(want),
            "\nwant prefix: {want}\n       got: {got}"
        );
    }
}

#[test]
fn syntax_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, "providers: [unclosed");
    let err = keygate::config::load(&path).unwrap_err().to_string();
    assert!(err.starts_with(&path.display().to_string()), "{err}");
}

#[test]
fn every_shipped_config_is_valid() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let config = keygate::config::load(&root.join("examples/keygate.yaml")).unwrap();
    assert!(!config.inline_consumers().is_empty());
}

#[tokio::test]
async fn an_unavailable_credential_is_reported_at_the_field_that_references_it() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("secrets.yaml"),
        "openai/production: {api_key: sk-present-0123456789}\n",
    )
    .unwrap();
    let config = keygate::config::load(&write(&dir, BASE)).unwrap();
    let registry = keygate::auth::Registry::from_config(&config);
    let source = keygate::secrets::FileSource::new(dir.path().join("secrets.yaml"));
    let cache = keygate::secrets::CredentialCache::new();
    let err = keygate::runtime::load_credentials(&source, &cache, &registry)
        .await
        .expect_err("openai/staging is not in the secrets file")
        .to_string();
    assert!(
        err.contains(
            "providers.openai.credentials.staging: credential \"openai/staging\" is not in the credential source"
        ),
        "{err}"
    );
    assert!(!err.contains("production"), "{err}");
    assert!(!err.contains("sk-present"), "{err}");
}

#[test]
fn rotation_policies_are_checked_with_field_paths() {
    let with = |rotation: &str| format!("{BASE}rotation:\n{rotation}");
    let dir = tempfile::tempdir().unwrap();
    let config = keygate::config::load(&write(
        &dir,
        &with("  credentials:\n    openai/production: {every: 30d}\n"),
    ))
    .unwrap();
    let policy = config.rotation.policy("openai/production").unwrap();
    assert_eq!(
        policy.grace,
        std::time::Duration::from_secs(24 * 3600),
        "grace defaults to 24h"
    );
    assert_eq!(
        policy.every,
        Some(std::time::Duration::from_secs(30 * 86400))
    );
    let cases = [
        ("  credentials:\n    openai/prod: {every: 30d}\n", "rotation.credentials.openai/prod: no provider uses credential \"openai/prod\""),
        ("  credentials:\n    openai/production: {every: 1d, grace: 2d}\n", "rotation.credentials.openai/production.grace: the grace period must be shorter than `every`"),
        ("  credentials:\n    openai/production: {admin_credential: \" \"}\n", "rotation.credentials.openai/production.admin_credential: must not be empty"),
        ("  record_template: \"{path}\"\n", "rotation.record_template: must contain {path} and differ from it"),
        ("  credentials:\n    openai/production: {evry: 30d}\n", "unknown field `evry`"),
    ];
    for (rotation, expected) in cases {
        let err = error_for(&with(rotation));
        assert!(err.contains(expected), "{rotation}: {err}");
    }
}
