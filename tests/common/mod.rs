//! Shared fixtures for the Rust integration tests: a gate built from a real config file.

#![allow(dead_code)]

pub mod limits;
pub mod redis_cluster;
pub mod redis_sentinel;
pub mod redis_server;

use std::path::PathBuf;
use std::sync::Arc;

use keygate::auth::{key, KeyEnv, KeyHash};
use keygate::gate::Gate;
use keygate::secrets::CredentialCache;

pub const OPENAI_SECRET: &str = "sk-proj-upstream-secret-0001";
pub const ANTHROPIC_SECRET: &str = "sk-ant-upstream-secret-0002";

/// Keys minted for one fixture; only their hashes go into the config.
pub struct Keys {
    pub openai: String,
    pub anthropic: String,
    pub suspended: String,
    pub revoked: String,
    pub expired: String,
    pub second_openai: String,
    pub wide: String,
}

pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub keys: Keys,
    pub gate: Arc<Gate>,
}

fn mint(env: KeyEnv) -> String {
    key::reveal(&key::generate(env).unwrap()).to_string()
}

pub fn config_text(keys: &Keys) -> String {
    let h = |k: &str| KeyHash::of(k).to_string();
    format!(
        r#"
credentials: {{source: file, path: secrets.yaml}}
providers:
  openai: {{kind: openai, credentials: {{production: openai/production}}}}
  anthropic: {{kind: anthropic, credentials: {{production: anthropic/production}}}}
consumers:
  - name: team-a
    environment: production
    provider: openai
    keys: [{{hash: "{}"}}, {{hash: "{}"}}]
    scope: {{routes: ["POST /v1/chat/completions", "GET /v1/models"]}}
  - name: team-b
    environment: production
    provider: anthropic
    keys: [{{hash: "{}"}}]
    scope: {{routes: ["POST /v1/messages"]}}
  - name: paused
    environment: production
    provider: openai
    status: suspended
    keys: [{{hash: "{}"}}]
    scope: {{routes: ["* /v1/**"]}}
  - name: gone
    environment: production
    provider: openai
    status: revoked
    keys: [{{hash: "{}"}}]
    scope: {{routes: ["* /v1/**"]}}
  - name: old
    environment: production
    provider: openai
    keys: [{{hash: "{}", expires: "2020-01-01T00:00:00Z"}}]
    scope: {{routes: ["* /v1/**"]}}
  - name: wide
    environment: production
    provider: openai
    keys: [{{hash: "{}"}}]
    scope: {{routes: ["* /v1/**"]}}
"#,
        h(&keys.openai),
        h(&keys.second_openai),
        h(&keys.anthropic),
        h(&keys.suspended),
        h(&keys.revoked),
        h(&keys.expired),
        h(&keys.wide),
    )
}

pub fn fixture() -> Fixture {
    let keys = Keys {
        openai: mint(KeyEnv::Live),
        anthropic: mint(KeyEnv::Live),
        suspended: mint(KeyEnv::Live),
        revoked: mint(KeyEnv::Live),
        expired: mint(KeyEnv::Live),
        second_openai: mint(KeyEnv::Live),
        wide: mint(KeyEnv::Live),
    };
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("keygate.yaml");
    std::fs::write(&config, config_text(&keys)).unwrap();
    std::fs::write(
        dir.path().join("secrets.yaml"),
        format!(
            "openai/production: {{api_key: {OPENAI_SECRET}}}\nanthropic/production: {{api_key: {ANTHROPIC_SECRET}}}\n"
        ),
    )
    .unwrap();
    let cache = CredentialCache::new();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let registry = rt
        .block_on(keygate::reload::prepare(&config, &cache, false))
        .unwrap()
        .registry;
    let gate = Arc::new(Gate::new(registry, Arc::new(cache)));
    Fixture {
        dir,
        config,
        keys,
        gate,
    }
}
