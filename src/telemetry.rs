//! Metric names, their registration, and tracing setup. Label values come from the registry
//! (consumer and provider names) or fixed enums, never from request input. The families with
//! a series per consumer (requests, responses, bytes, tokens, spend, month-to-date spend,
//! source addresses) are kept and rendered by [`crate::accounting::meters`], not the
//! `metrics` registry.

use std::time::Duration;

use metrics::{
    counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Unit,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub const REQUESTS_TOTAL: &str = "keygate_requests_total";
pub const DECISION_SECONDS: &str = "keygate_decision_seconds";
pub const CONFIG_RELOAD_TOTAL: &str = "keygate_config_reload_total";
pub const REGISTRY_CONSUMERS: &str = "keygate_registry_consumers";
pub const SECRET_REFRESH_TOTAL: &str = "keygate_secret_refresh_total";
pub const READY: &str = "keygate_ready";
pub const SECRET_AGE_SECONDS: &str = "keygate_secret_age_seconds";
pub const SECRET_STALE: &str = "keygate_secret_stale";
pub const VAULT_REQUESTS_TOTAL: &str = "keygate_vault_requests_total";
pub const REGISTRY_REFRESH_TOTAL: &str = "keygate_registry_refresh_total";
pub const RESPONSES_TOTAL: &str = "keygate_responses_total";
pub const TOKENS_TOTAL: &str = "keygate_tokens_total";
pub const SPEND_USD_TOTAL: &str = "keygate_spend_usd_total";
pub const SPEND_MONTH_TO_DATE: &str = "keygate_spend_month_to_date_usd";
pub const BUDGET_USD: &str = "keygate_budget_usd";
pub const USAGE_ESTIMATED_TOTAL: &str = "keygate_usage_estimated_total";
pub const USAGE_UNPRICED_TOTAL: &str = "keygate_usage_unpriced_total";
pub const USAGE_CLAMPED_TOTAL: &str = "keygate_usage_clamped_total";
pub const REQUEST_BYTES_TOTAL: &str = "keygate_request_bytes_total";
pub const RESPONSE_BYTES_TOTAL: &str = "keygate_response_bytes_total";
pub const UPSTREAM_SECONDS: &str = "keygate_upstream_seconds";
pub const TIME_TO_FIRST_TOKEN_SECONDS: &str = "keygate_time_to_first_token_seconds";
pub const SOURCE_ADDRESSES: &str = "keygate_source_addresses";
pub const LEDGER_FLUSH_TOTAL: &str = "keygate_ledger_flush_total";
pub const BUDGET_THRESHOLD_TOTAL: &str = "keygate_budget_threshold_total";
pub const LIMITS_FALLBACK_TOTAL: &str = "keygate_limits_fallback_total";
/// Decisions in Redis mode that waited for one Redis call because this replica's lease or
/// allowance ran short (the background sync keeps them topped up; this should stay near 0).
pub const LIMITS_LEASE_MISS_TOTAL: &str = "keygate_limits_lease_miss_total";
/// Calls to Redis by operation and result (`ok`, `error`).
pub const LIMITS_REDIS_CALLS_TOTAL: &str = "keygate_limits_redis_calls_total";
/// Exchanges parked between their request phase and an observed response.
pub const HANDOVER_PARKED: &str = "keygate_exchanges_parked";
/// Parked exchanges by what became of them (`claimed` by the response observer, `unmatched`
/// ticket, `expired` or `overflow`: unobserved and charged their worst case).
pub const HANDOVER_TOTAL: &str = "keygate_exchange_handovers_total";
pub const REVOCATION_PROPAGATION_SECONDS: &str = "keygate_revocation_propagation_seconds";
pub const ADMIN_CALLS_TOTAL: &str = "keygate_admin_calls_total";
/// Detections returned by the detectors (after their cooldown), by consumer, detector and
/// the action taken.
pub const DETECTIONS_TOTAL: &str = "keygate_detections_total";
/// Notification deliveries by sink and result: `sent`, `retried` (an attempt failed and will
/// be retried), `failed` (gave up) or `dropped` (queue full, or left at shutdown).
pub const NOTIFICATIONS_TOTAL: &str = "keygate_notifications_total";
/// Audit lines that could not be written to the audit file.
pub const AUDIT_ERRORS_TOTAL: &str = "keygate_audit_errors_total";
/// Leaked keys reported by secret scanners, by scanner and what keygate did: `revoked`,
/// `already_revoked`, `unknown_key` or `failed`.
pub const LEAK_REPORTS_TOTAL: &str = "keygate_leak_reports_total";
/// GitHub secret-scanning alert requests by result: `ok`, `unsigned`, `bad_signature`,
/// `too_large`, `bad_request`.
pub const LEAK_ALERTS_TOTAL: &str = "keygate_leak_alerts_total";
/// When each provider credential's current key became current (rotated, or written).
pub const CREDENTIAL_ROTATED_TIMESTAMP: &str = "keygate_credential_rotated_timestamp_seconds";
/// The rotation policy's period (`rotation.credentials.<ref>.every`).
pub const CREDENTIAL_ROTATION_INTERVAL: &str = "keygate_credential_rotation_interval_seconds";
/// Rotations by credential and result (`ok`, `rolled_back`, `failed`), as the durable
/// rotation record counts them: every replica reports the same totals.
pub const ROTATION_TOTAL: &str = "keygate_rotation_total";

/// The label value used for requests whose key matched no consumer.
pub const UNKNOWN: &str = "unknown";

/// Installs the global Prometheus recorder and describes every metric.
pub fn install_prometheus() -> Result<PrometheusHandle, metrics_exporter_prometheus::BuildError> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full(DECISION_SECONDS.to_string()),
            &[
                0.000_005, 0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.005,
                0.01,
            ],
        )?
        .set_buckets_for_metric(
            Matcher::Suffix("_upstream_seconds".to_string()),
            &[
                0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
            ],
        )?
        .set_buckets_for_metric(
            Matcher::Full(REVOCATION_PROPAGATION_SECONDS.to_string()),
            &[
                0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ],
        )?
        .set_buckets_for_metric(
            Matcher::Full(TIME_TO_FIRST_TOKEN_SECONDS.to_string()),
            &[
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ],
        )?
        .install_recorder()?;
    describe();
    Ok(handle)
}

fn describe() {
    describe_histogram!(
        DECISION_SECONDS,
        Unit::Seconds,
        "Time keygate spent deciding a request."
    );
    describe_counter!(
        CONFIG_RELOAD_TOTAL,
        "Configuration reload attempts by result."
    );
    describe_gauge!(REGISTRY_CONSUMERS, "Consumers in the active registry.");
    describe_counter!(
        SECRET_REFRESH_TOTAL,
        "Provider credential loads by credential and result."
    );
    describe_gauge!(
        READY,
        "1 when keygate has its config and every referenced credential."
    );
    describe_counter!(
        USAGE_ESTIMATED_TOTAL,
        "Responses charged an estimate because usage was missing."
    );
    describe_counter!(
        USAGE_UNPRICED_TOTAL,
        "Responses whose model has no price in the price table (charged at the provider's highest prices)."
    );
    describe_counter!(
        USAGE_CLAMPED_TOTAL,
        "Responses whose reported usage was implausible and clamped to the per-response ceiling."
    );
    describe_histogram!(
        UPSTREAM_SECONDS,
        Unit::Seconds,
        "Time from keygate's allow to the upstream response headers."
    );
    describe_histogram!(
        TIME_TO_FIRST_TOKEN_SECONDS,
        Unit::Seconds,
        "Time from keygate's allow to the first streamed body bytes."
    );
    describe_counter!(
        LEDGER_FLUSH_TOTAL,
        "Spend ledger flushes to disk by result."
    );
    describe_counter!(
        BUDGET_THRESHOLD_TOTAL,
        "Consumers crossing the budget soft threshold (once per month)."
    );
    describe_counter!(
        LIMITS_FALLBACK_TOTAL,
        "Limit decisions served by this replica's share because Redis was unavailable."
    );
    describe_counter!(
        LIMITS_LEASE_MISS_TOTAL,
        "Limit decisions that waited for Redis because the local lease ran short."
    );
    describe_gauge!(
        HANDOVER_PARKED,
        "Exchanges waiting for their response to be observed (one per request in flight)."
    );
    describe_counter!(
        HANDOVER_TOTAL,
        "Parked exchanges by result: claimed by the response observer, unmatched, expired, overflow."
    );
    describe_counter!(
        LIMITS_REDIS_CALLS_TOTAL,
        "Calls to Redis by the shared limits, by operation and result."
    );
    describe_gauge!(
        SECRET_AGE_SECONDS,
        Unit::Seconds,
        "Time since the credential was last loaded successfully."
    );
    describe_gauge!(
        SECRET_STALE,
        "1 when the credential is past max_stale and requests needing it get 503."
    );
    describe_counter!(
        VAULT_REQUESTS_TOTAL,
        "Calls to Vault by operation and result."
    );
    describe_counter!(REGISTRY_REFRESH_TOTAL, "Consumer store polls by result.");
    describe_histogram!(
        REVOCATION_PROPAGATION_SECONDS,
        Unit::Seconds,
        "Time from an admin command to its effect on this replica."
    );
    describe_counter!(ADMIN_CALLS_TOTAL, "Admin API calls by method and result.");
    describe_counter!(
        DETECTIONS_TOTAL,
        "Detections by consumer, detector and the action taken."
    );
    describe_counter!(
        NOTIFICATIONS_TOTAL,
        "Notification deliveries by sink and result (sent, retried, failed)."
    );
    describe_counter!(
        AUDIT_ERRORS_TOTAL,
        "Audit lines that could not be written to the audit file."
    );
    describe_counter!(
        LEAK_REPORTS_TOTAL,
        "Leaked keys reported by scanners, by scanner and outcome."
    );
    describe_counter!(
        LEAK_ALERTS_TOTAL,
        "GitHub secret-scanning alert requests by result."
    );
    describe_gauge!(
        CREDENTIAL_ROTATED_TIMESTAMP,
        Unit::Seconds,
        "Unix time at which the provider credential's current key became current."
    );
    describe_gauge!(
        CREDENTIAL_ROTATION_INTERVAL,
        Unit::Seconds,
        "How often the credential's rotation policy rotates it."
    );
    describe_counter!(
        ROTATION_TOTAL,
        "Rotations by credential and result (ok, rolled_back, failed), from the rotation record; every replica reports the same totals."
    );
}

/// Observes the time one admission took.
pub fn record_decision_time(elapsed: Duration) {
    histogram!(DECISION_SECONDS).record(elapsed.as_secs_f64());
}

pub fn record_reload(ok: bool) {
    counter!(CONFIG_RELOAD_TOTAL, "result" => if ok { "ok" } else { "error" }).increment(1);
}

pub fn record_registry_size(consumers: usize) {
    gauge!(REGISTRY_CONSUMERS).set(consumers as f64);
}

pub fn record_secret_refresh(credential: &str, ok: bool) {
    counter!(SECRET_REFRESH_TOTAL, "credential" => credential.to_string(), "result" => if ok { "ok" } else { "error" })
        .increment(1);
}

pub fn record_secret_age(credential: &str, age: Duration, stale: bool) {
    gauge!(SECRET_AGE_SECONDS, "credential" => credential.to_string()).set(age.as_secs_f64());
    gauge!(SECRET_STALE, "credential" => credential.to_string()).set(if stale { 1.0 } else { 0.0 });
}

pub fn record_vault_request(operation: &'static str, ok: bool) {
    counter!(VAULT_REQUESTS_TOTAL, "operation" => operation, "result" => if ok { "ok" } else { "error" }).increment(1);
}

pub fn record_registry_refresh(result: &'static str) {
    counter!(REGISTRY_REFRESH_TOTAL, "result" => result).increment(1);
}

pub fn record_ready(ready: bool) {
    gauge!(READY).set(if ready { 1.0 } else { 0.0 });
}

/// Log output format.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Sets up tracing to stderr; `KEYGATE_LOG` (or `RUST_LOG`) filters, default `info`.
/// Crates that would log secret-bearing HTTP bodies are always capped.
pub fn init_tracing(format: LogFormat) {
    init_tracing_with(format, &["rustify=warn", "reqwest=info", "vaultrs=info"]);
}

/// Tracing for the one-shot commands (`keygate rotate`, `keygate credentials`): warnings only
/// unless `KEYGATE_LOG` says otherwise. Without `KEYGATE_LOG`, the Vault client's own lines
/// are off: it logs every non-2xx answer as an error (including the 404 of a credential that
/// has no rotation record yet), and the commands report every Vault failure themselves.
pub fn init_cli_tracing() {
    if std::env::var_os("KEYGATE_LOG").is_some() {
        init_tracing(LogFormat::Text);
    } else {
        std::env::set_var("KEYGATE_LOG", "warn");
        init_tracing_with(
            LogFormat::Text,
            &["rustify=off", "reqwest=info", "vaultrs=off"],
        );
    }
}

fn init_tracing_with(format: LogFormat, caps: &[&str]) {
    let mut filter = tracing_subscriber::EnvFilter::try_from_env("KEYGATE_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // These HTTP layers log request and response bodies at debug level, and Vault's bodies
    // carry provider keys: cap them whatever the user asked for.
    for &directive in caps {
        if let Ok(d) = directive.parse() {
            filter = filter.add_directive(d);
        }
    }
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}
