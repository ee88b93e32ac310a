//! Semantic checks that serde cannot express, each reported with its field path.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use super::{Config, ConfigError, ConsumerConfig, ProviderConfig};
use crate::auth::key::KeyEnv;
use crate::providers::ProviderKind;

/// Names become Prometheus label values and log fields: keep them short and plain.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

const NAME_RULE: &str = "must be 1-64 characters of letters, digits, '-', '_' or '.'";

/// The production environment refuses `kg_test_` keys.
const PRODUCTION: &str = "production";

pub fn validate(file: &Path, config: &Config) -> Result<(), ConfigError> {
    let err = |field: String, msg: String| Err(ConfigError::field(file, field, msg));

    if config.providers.is_empty() {
        return err(
            "providers".into(),
            "at least one provider is required".into(),
        );
    }
    for (name, provider) in &config.providers {
        let at = format!("providers.{name}");
        if !valid_name(name) {
            return err(at, format!("provider name {NAME_RULE}"));
        }
        if provider.credentials.is_empty() {
            return err(
                format!("{at}.credentials"),
                "map at least one environment to a credential reference".into(),
            );
        }
        for (env, reference) in &provider.credentials {
            if !valid_name(env) {
                return err(
                    format!("{at}.credentials.{env}"),
                    format!("environment name {NAME_RULE}"),
                );
            }
            if !valid_reference(reference) {
                return err(
                    format!("{at}.credentials.{env}"),
                    format!("credential reference {reference:?} must look like \"provider/environment\""),
                );
            }
        }
        if provider.kind == ProviderKind::Generic {
            if let Some(field) = uncountable(&provider.limits) {
                return err(format!("{at}.limits.{field}"), GENERIC_LIMITS.into());
            }
        }
        match (&provider.inject, provider.kind) {
            (None, ProviderKind::Generic) => {
                return err(
                    format!("{at}.inject"),
                    "a generic provider must say which header carries the credential".into(),
                )
            }
            (Some(inject), _) if !crate::providers::valid_header_name(&inject.header) => {
                return err(
                    format!("{at}.inject.header"),
                    format!("{:?} is not a valid lowercase header name", inject.header),
                )
            }
            _ => {}
        }
    }

    if let super::ConsumersConfig::Vault(store) = &config.consumers {
        if store.path.trim_matches('/').is_empty() {
            return err(
                "consumers.path".into(),
                "name the KV path that holds one entry per consumer".into(),
            );
        }
        if config.consumer_vault().is_none() {
            return err(
                "consumers.vault".into(),
                "a Vault connection is needed (here, or credentials.source: vault)".into(),
            );
        }
    }
    if let super::CredentialsConfig::Vault(v) = &config.credentials {
        if !v.path_template.contains("{reference}") {
            return err(
                "credentials.path_template".into(),
                "must contain {reference}".into(),
            );
        }
    }
    if let Some(redis) = &config.limits.redis {
        redis
            .validate()
            .map_err(|(field, message)| ConfigError::field(file, field, message))?;
    }
    if config.limits.backend == super::LimitsBackend::Redis && config.limits.redis.is_none() {
        return err(
            "limits.redis".into(),
            "backend: redis needs a redis: section naming the servers".into(),
        );
    }
    if config.network.xff_num_trusted_hops > 16 {
        return err(
            "network.xff_num_trusted_hops".into(),
            "at most 16 trusted proxies".into(),
        );
    }
    if let Err((i, field, message)) = super::operators::check_operators(&config.admin.operators) {
        return err(format!("admin.operators[{i}].{field}"), message);
    }
    if let Some(github) = &config.leaks.github {
        if let Err((field, message)) = github.check() {
            return err(format!("leaks.github.{field}"), message);
        }
    }
    if let Err(e) = config.detect.validate() {
        return err("detect".into(), e.to_string());
    }
    validate_rotation(config)
        .map_err(|(field, message)| ConfigError::field(file, field, message))?;
    if let Err(e) = crate::usage::PriceTable::defaults().with_overrides(&config.usage.pricing) {
        return err(format!("usage.{}", e.path), e.message);
    }
    for (i, consumer) in config.inline_consumers().iter().enumerate() {
        let generic = config
            .providers
            .get(&consumer.provider)
            .is_some_and(|p| p.kind == ProviderKind::Generic);
        let team_budget = consumer
            .team
            .as_ref()
            .and_then(|team| config.teams.get(team))
            .is_some_and(|team| team.monthly_budget_usd.is_some());
        if generic && team_budget {
            return err(format!("consumers[{i}].team"), GENERIC_LIMITS.into());
        }
    }
    validate_consumers(config.inline_consumers(), &config.providers, |i| {
        format!("consumers[{i}]")
    })
    .map_err(|(field, message)| ConfigError::field(file, field, message))
}

/// The `rotation:` section: policies name credentials the providers use, grace is shorter than
/// the rotation period, and the record lives beside (not on) the credential.
fn validate_rotation(config: &Config) -> Result<(), (String, String)> {
    let rotation = &config.rotation;
    if !rotation.record_template.contains("{path}") || rotation.record_template == "{path}" {
        return Err((
            "rotation.record_template".into(),
            "must contain {path} and differ from it (the record lives beside the credential)"
                .into(),
        ));
    }
    if rotation.lease < std::time::Duration::from_secs(1) {
        return Err(("rotation.lease".into(), "at least 1s".into()));
    }
    let references = config.credential_references();
    for (reference, policy) in &rotation.credentials {
        let at = format!("rotation.credentials.{reference}");
        if !references.contains_key(reference) {
            return Err((
                at,
                format!("no provider uses credential {reference:?} (providers.*.credentials)"),
            ));
        }
        if let Some(every) = policy.every {
            if every.is_zero() || policy.grace >= every {
                return Err((
                    format!("{at}.grace"),
                    "the grace period must be shorter than `every` (the old key is revoked before the next rotation)".into(),
                ));
            }
        }
        for (name, value) in [
            ("adapter", policy.adapter.as_deref()),
            ("admin_credential", policy.admin_credential.as_deref()),
        ] {
            if value.is_some_and(|v| v.trim().is_empty()) {
                return Err((format!("{at}.{name}"), "must not be empty".into()));
            }
        }
    }
    Ok(())
}

/// Checks a list of consumers against the providers; `label(i)` names entry `i` in errors.
/// Returns the failing field path and message.
pub fn validate_consumers(
    consumers: &[ConsumerConfig],
    providers: &BTreeMap<String, ProviderConfig>,
    label: impl Fn(usize) -> String,
) -> Result<(), (String, String)> {
    let mut names: HashMap<&str, usize> = HashMap::new();
    let mut hashes = HashMap::new();
    for (i, consumer) in consumers.iter().enumerate() {
        let at = label(i);
        if let Some(first) = names.insert(&consumer.name, i) {
            return Err((
                format!("{at}.name"),
                format!("{:?} is already used by {}", consumer.name, label(first)),
            ));
        }
        validate_consumer(consumer, providers).map_err(|(f, m)| (format!("{at}{f}"), m))?;
        for (k, key) in consumer.keys.iter().enumerate() {
            if let Some(owner) = hashes.insert(key.hash, i) {
                return Err((
                    format!("{at}.keys[{k}].hash"),
                    format!("the same key hash is already listed under {}", label(owner)),
                ));
            }
        }
    }
    super::bindings::validate_identity_overlaps(consumers, label)
}

/// Checks one consumer; the returned field path is relative (`.provider`, `.keys[0].env`).
pub fn validate_consumer(
    consumer: &ConsumerConfig,
    providers: &BTreeMap<String, ProviderConfig>,
) -> Result<(), (String, String)> {
    let err = |field: String, msg: String| Err((field, msg));
    if !valid_name(&consumer.name) {
        return err(".name".into(), format!("consumer name {NAME_RULE}"));
    }
    let Some(provider) = providers.get(&consumer.provider) else {
        let known: Vec<&str> = providers.keys().map(String::as_str).collect();
        return err(
            ".provider".into(),
            format!(
                "unknown provider {:?} (known: {})",
                consumer.provider,
                known.join(", ")
            ),
        );
    };
    if !provider.credentials.contains_key(&consumer.environment) {
        return err(
            ".environment".into(),
            format!(
                "provider {:?} has no credential for environment {:?}",
                consumer.provider, consumer.environment
            ),
        );
    }
    if consumer.keys.len() > 2 {
        return err(
            ".keys".into(),
            "at most two keys per consumer (the rotation overlap)".into(),
        );
    }
    for (k, key) in consumer.keys.iter().enumerate() {
        if key.env == KeyEnv::Test && consumer.environment == PRODUCTION {
            return err(
                format!(".keys[{k}].env"),
                "test keys cannot be used by a production consumer".into(),
            );
        }
    }
    if consumer.scope.routes.is_empty() {
        return err(
            ".scope.routes".into(),
            "list at least one route; scope is deny by default".into(),
        );
    }
    super::bindings::validate_binding(consumer)?;
    if provider.kind == ProviderKind::Generic {
        if let Some(field) = uncountable(&consumer.limits) {
            return err(format!(".limits.{field}"), GENERIC_LIMITS.into());
        }
    }
    Ok(())
}

/// Why token limits and budgets are refused on `kind: generic` providers.
const GENERIC_LIMITS: &str = "a generic provider's answers carry no usage keygate can read, so token limits and budgets could never be enforced; use request limits, or a provider kind keygate reads";

/// The first limit that needs token usage to be enforced.
fn uncountable(limits: &super::LimitSettings) -> Option<&'static str> {
    [
        ("tokens_per_minute", limits.tokens_per_minute.is_some()),
        ("tokens_per_day", limits.tokens_per_day.is_some()),
        ("monthly_budget_usd", limits.monthly_budget_usd.is_some()),
    ]
    .into_iter()
    .find_map(|(field, set)| set.then_some(field))
}

fn valid_reference(reference: &str) -> bool {
    let mut parts = reference.split('/');
    let ok = parts.next().is_some_and(valid_name);
    ok && parts.all(valid_name)
}
