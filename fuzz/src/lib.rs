//! Shared pieces of keygate's fuzz targets: deterministic chunkings of one input, the Envoy
//! fixture (a pipeline built once from a small config with fixed consumer keys), and the
//! invariants several targets check.

use std::sync::{Arc, OnceLock};

use keygate::accounting::{Accounting, Ledger};
use keygate::config::LimitsConfig;
use keygate::gate::Gate;
use keygate::limits::Limiter;
use keygate::pipeline::Pipeline;
use keygate::secrets::CredentialCache;
use keygate::usage::PriceTable;

/// Splits `data` into chunks whose sizes follow from `seed`: one byte at a time, small and
/// ragged, or large. Deterministic, so a crash reproduces from its input alone.
pub fn chunks(data: &[u8], seed: u8) -> Vec<&[u8]> {
    let max = match seed & 7 {
        0 => return vec![data],
        1 => 1,
        2 => 2,
        3 => 3,
        4 => 7,
        5 => 16,
        6 => 64,
        _ => 512,
    };
    let mut state = u32::from(seed) | 0x9e37_0000;
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let n = (state as usize % max + 1).min(rest.len());
        let (head, tail) = rest.split_at(n);
        out.push(head);
        rest = tail;
    }
    out
}

mod keys;

pub use keys::*;

const CONFIG: &str = r#"
credentials: {source: file, path: secrets.yaml}
providers:
  openai:
    kind: openai
    credentials: {production: openai/production}
    limits: {requests_per_minute: 1000000000, tokens_per_minute: 1000000000000, monthly_budget_usd: 1000000000.0}
  anthropic: {kind: anthropic, credentials: {production: anthropic/production}}
  azure: {kind: azure_openai, credentials: {production: azure/production}}
  cohere: {kind: cohere, credentials: {development: cohere/development}}
  generic:
    kind: generic
    credentials: {production: generic/production}
    inject: {header: x-upstream-key, prefix: "Key "}
teams:
  fuzzers: {monthly_budget_usd: 1000000000.0}
consumers:
  - name: fuzz-openai
    team: fuzzers
    environment: production
    provider: openai
    keys: [{hash: "sha256:7965799baa91c68b9477277d65f65af74af61df24a302eb590291b0c2bee2082"}]
    scope: {routes: ["* /v1/**", "GET /v1/files/**", "POST /v1/batches"]}
    limits: {max_request_bytes: 1048576, default_max_tokens: 4096}
  - name: fuzz-anthropic
    environment: production
    provider: anthropic
    keys: [{hash: "sha256:4ca37b1118830d6375dff86dc302069259c01748f22b97ff91acc54ded93efc5"}]
    scope: {routes: ["POST /v1/messages", "POST /v1/messages/count_tokens", "GET /v1/models/*"]}
    limits: {tokens_per_day: 1000000000000}
  - name: fuzz-azure
    environment: production
    provider: azure
    keys: [{hash: "sha256:f8e33e6c214780115e8e6c59966a051c14cd5f380c10758e0819b026bdc6f21e"}]
    scope: {routes: ["* /openai/**"]}
  - name: fuzz-cohere
    environment: development
    provider: cohere
    keys: [{hash: "sha256:ee7b5314710198f1b2c24aaa149032de72e73289b637b654ea6a9483c197e50e", env: test}]
    scope: {routes: ["POST /v1/chat", "POST /v2/chat", "POST /v2/embed"]}
  - name: fuzz-generic
    environment: production
    provider: generic
    keys: [{hash: "sha256:abbc21129dc650a643d87d9f83dde745041e51a39fe449c6a3da262444acca4e"}]
    scope: {routes: ["* /**"]}
  - name: fuzz-suspended
    environment: production
    provider: openai
    status: suspended
    keys: [{hash: "sha256:8d1f3f8c78ba0816922e39df3c3f039c941be57740328f173620c3d5f6f03c6a"}]
    scope: {routes: ["* /v1/**"]}
"#;

/// A current-thread runtime and the gate built from [`CONFIG`], made once per process.
pub struct Fixture {
    pub runtime: tokio::runtime::Runtime,
    gate: Arc<Gate>,
}

impl Fixture {
    /// A pipeline with fresh limiter and ledger state, so one input's spend or refusals never
    /// change how the next input is answered.
    pub fn pipeline(&self) -> Pipeline {
        let ledger = Arc::new(Ledger::in_memory());
        let accounting = Arc::new(Accounting::new(PriceTable::defaults(), ledger.clone()));
        let limiter = Arc::new(Limiter::new(ledger));
        limiter.configure(&LimitsConfig::default(), None);
        Pipeline::new(self.gate.clone(), limiter, accounting, None)
    }
}

pub fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(build_fixture)
}

fn build_fixture() -> Fixture {
    for key in [
        OPENAI_KEY,
        ANTHROPIC_KEY,
        AZURE_KEY,
        COHERE_KEY,
        GENERIC_KEY,
        SUSPENDED_KEY,
    ] {
        assert!(keygate::auth::key::parse(key).is_ok(), "fixture key {key}");
    }
    let dir = std::env::temp_dir().join(format!("keygate-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let config = dir.join("keygate.yaml");
    std::fs::write(&config, CONFIG).expect("write config");
    let secrets = format!(
        "openai/production: {{api_key: {}}}\nanthropic/production: {{api_key: {}}}\n\
         azure/production: {{api_key: {}}}\ncohere/development: {{api_key: {}}}\n\
         generic/production: {{api_key: {}}}\n",
        SECRETS[0], SECRETS[1], SECRETS[2], SECRETS[3], SECRETS[4]
    );
    std::fs::write(dir.join("secrets.yaml"), secrets).expect("write secrets");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let cache = CredentialCache::new();
    let registry = runtime
        .block_on(keygate::reload::prepare(&config, &cache, false))
        .expect("fixture config loads")
        .registry;
    let _ = std::fs::remove_dir_all(&dir);
    Fixture {
        runtime,
        gate: Arc::new(Gate::new(registry, Arc::new(cache))),
    }
}

/// A denial body must be JSON a client SDK can parse, and must not carry a provider secret
/// (unless the client sent that text itself: denials may quote the request's path).
pub fn check_denial_body(body: &[u8], input: &[u8]) {
    if let Err(e) = serde_json::from_slice::<serde_json::Value>(body) {
        panic!(
            "denial body is not JSON ({e}): {:?}",
            String::from_utf8_lossy(body)
        );
    }
    assert_no_secret(body, input, "denial body");
}

/// On an allow, every header that can carry a consumer key and every inbound `x-keygate-*`
/// header must be removed or overwritten before the request goes upstream: `request` is the
/// names the client sent, `removed` and `set` the names in the mutation.
pub fn check_allow_mutation<'a>(
    request: impl IntoIterator<Item = &'a str>,
    removed: &[String],
    set: &[&str],
) {
    for name in request {
        let sensitive = keygate::auth::extract::CREDENTIAL_HEADERS.contains(&name)
            || name.starts_with("x-keygate-");
        if sensitive {
            assert!(
                removed.iter().any(|r| r == name) || set.contains(&name),
                "an allow forwards the client's {name:?} header"
            );
        }
    }
}

/// Panics if `bytes` contains a provider secret of the fixture that `input` (what the client
/// sent, also read with its percent-escapes decoded, as path normalization does) does not.
pub fn assert_no_secret(bytes: &[u8], input: &[u8], what: &str) {
    let holds = |haystack: &[u8], secret: &str| {
        haystack
            .windows(secret.len())
            .any(|w| w == secret.as_bytes())
    };
    let decoded = percent_decoded(input);
    for secret in SECRETS {
        assert!(
            !holds(bytes, secret) || holds(input, secret) || holds(&decoded, secret),
            "{what} leaks a provider secret"
        );
    }
}

fn percent_decoded(input: &[u8]) -> Vec<u8> {
    let hex = |b: u8| char::from(b).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        let escape = match input.get(i..i + 3) {
            Some([b'%', h, l]) => hex(*h).zip(hex(*l)).map(|(h, l)| h << 4 | l),
            _ => None,
        };
        match escape {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(input[i]);
                i += 1;
            }
        }
    }
    out
}
