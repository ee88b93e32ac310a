//! Webhook bodies: the generic JSON document and Slack's `{text, blocks}`. Both are built only
//! from a [`Notification`]'s fields, which hold no secret.

use std::fmt::Write as _;

use serde_json::{json, Map, Value};

use super::config::WebhookFormat;
use super::notification::Notification;
use crate::audit::entry::AuditEvent;
use crate::detect::action::Action;

pub(super) fn format_name(format: WebhookFormat) -> &'static str {
    match format {
        WebhookFormat::Generic => "generic",
        WebhookFormat::Slack => "slack",
    }
}

/// The body for `format`.
pub(super) fn render(format: WebhookFormat, n: &Notification) -> Value {
    match format {
        WebhookFormat::Generic => generic(n),
        WebhookFormat::Slack => slack(n),
    }
}

/// What was done: a detection's action, or the admin event as a verb.
fn action_name(n: &Notification) -> &'static str {
    if let Some(action) = &n.action {
        return action.as_str();
    }
    match n.event {
        AuditEvent::KeyCreated => "create_key",
        AuditEvent::KeyRevoked => "revoke_key",
        AuditEvent::ConsumerSuspended => "suspend",
        AuditEvent::ConsumerResumed => "resume",
        AuditEvent::ConsumerRevoked => "revoke",
        AuditEvent::ConsumerThrottled => "throttle",
        AuditEvent::ConsumerUnthrottled => "unthrottle",
        AuditEvent::Detection => "alert",
        AuditEvent::AdminCall => "admin_call",
        AuditEvent::KeyLeaked => "revoke_key",
        AuditEvent::CredentialRevoked => "revoke_credential",
        AuditEvent::CredentialRotated => "rotate_credential",
        AuditEvent::RotationRolledBack => "roll_back_rotation",
        AuditEvent::RotationFailed => "rotation_failed",
        AuditEvent::OldKeyRevoked => "revoke_old_key",
    }
}

fn at(n: &Notification) -> String {
    humantime::format_rfc3339_seconds(n.at).to_string()
}

/// `{"source": "keygate", "event", "consumer", "detector", "severity", "action", "evidence",
/// "at", "summary"}` plus `throttle`, `key_id`, `actor` and `reason` when they apply.
pub(super) fn generic(n: &Notification) -> Value {
    let mut doc = json!({
        "source": "keygate",
        "event": n.event.as_str(),
        "consumer": n.consumer.as_deref(),
        "detector": n.detector.map(|d| d.as_str()),
        "severity": n.severity.as_str(),
        "action": action_name(n),
        "evidence": n.evidence.as_ref().map_or(Value::Object(Map::new()), |e| json!(e)),
        "at": at(n),
        "summary": summary(n),
    });
    if let Some(Action::Throttle { factor, period }) = n.action {
        doc["throttle"] = json!({
            "factor": factor,
            "period": humantime::format_duration(period).to_string(),
        });
    }
    if let Some((scanner, location)) = &n.leak {
        doc["leak"] = json!({"scanner": scanner.as_str(), "location": location});
    }
    for (field, value) in [
        ("team", n.team.as_deref()),
        ("key_id", n.key_id.map(|k| k.to_string()).as_deref()),
        ("actor", n.actor.as_deref()),
        ("reason", n.reason.as_deref()),
        ("credential", n.credential.as_deref()),
    ] {
        if let Some(v) = value {
            doc[field] = json!(v);
        }
    }
    doc
}

/// Slack incoming-webhook shape: `text` is the notification fallback, `blocks` the message.
pub(super) fn slack(n: &Notification) -> Value {
    let title = match (n.detector, n.consumer.as_deref()) {
        (Some(d), Some(c)) => format!("keygate: {} on {c}", d.as_str().replace('_', " ")),
        (None, Some(c)) => format!("keygate: {} ({c})", n.event.as_str().replace('_', " ")),
        _ => format!("keygate: {}", n.event.as_str().replace('_', " ")),
    };
    let mut fields = vec![
        field("Severity", n.severity.as_str()),
        field("Action", action_name(n)),
    ];
    if let Some(c) = &n.consumer {
        fields.insert(0, field("Consumer", &format!("`{}`", escape(c))));
    }
    if let Some(t) = &n.team {
        fields.push(field("Team", &escape(t)));
    }
    if let Some(d) = n.detector {
        fields.push(field("Detector", d.as_str()));
    }
    if let Some((scanner, location)) = &n.leak {
        fields.push(field(
            "Found by",
            &format!("{} at {}", scanner.as_str(), escape(&location.summary())),
        ));
    }
    if let Some(k) = &n.key_id {
        fields.push(field("Key", &format!("`{k}`")));
    }
    if let Some(a) = &n.actor {
        fields.push(field("By", &escape(a)));
    }
    if let Some(c) = &n.credential {
        fields.push(field("Credential", &escape(c)));
    }
    let mut blocks = vec![
        json!({"type": "header", "text": {"type": "plain_text", "text": truncate(&title, 150)}}),
        json!({"type": "section", "text": {"type": "mrkdwn", "text": escape(&summary(n))}, "fields": fields}),
    ];
    if let Some(e) = &n.evidence {
        let evidence = serde_json::to_string_pretty(e).unwrap_or_default();
        blocks.push(json!({"type": "section", "text": {"type": "mrkdwn",
            "text": truncate(&format!("```{}```", escape(&evidence)), 2900)}}));
    }
    blocks.push(json!({"type": "context", "elements": [
        {"type": "mrkdwn", "text": format!("keygate · {}", at(n))}
    ]}));
    json!({ "text": summary(n), "blocks": blocks })
}

fn field(name: &str, value: &str) -> Value {
    json!({"type": "mrkdwn", "text": format!("*{name}*\n{value}")})
}

/// Slack's three control characters in mrkdwn text.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn truncate(text: &str, max: usize) -> String {
    text.chars().take(max).collect()
}

/// One line saying what happened and why.
pub(super) fn summary(n: &Notification) -> String {
    let mut s = format!("keygate: {}", n.severity.as_str());
    match n.detector {
        Some(d) => {
            let _ = write!(s, " {}", d.as_str());
        }
        None => {
            let _ = write!(s, " {}", n.event.as_str());
        }
    }
    if let Some(c) = &n.consumer {
        let _ = write!(s, " for consumer {c}");
    }
    if let Some(t) = &n.team {
        let _ = write!(s, " (team {t})");
    }
    if let Some(k) = &n.key_id {
        let _ = write!(s, " key {k}");
    }
    if let Some(c) = &n.credential {
        let _ = write!(s, " credential {c}");
    }
    let _ = write!(s, ", action {}", action_name(n));
    if let Some(Action::Throttle { factor, period }) = n.action {
        let _ = write!(
            s,
            " to {:.0}% for {}",
            factor * 100.0,
            humantime::format_duration(period)
        );
    }
    if let Some(a) = &n.actor {
        let _ = write!(s, " by {a}");
    }
    let mut why = Vec::new();
    if let Some(e) = &n.evidence {
        if let (Some(r), Some(b)) = (e.request_rate, e.baseline_request_rate) {
            why.push(format!("{r} req/s vs baseline {b} req/s"));
        }
        if let (Some(t), Some(b)) = (e.token_rate, e.baseline_token_rate) {
            why.push(format!("{t} tokens/s vs baseline {b}"));
        }
        if let (Some(p), Some(b)) = (e.projected_micro_usd, e.budget_micro_usd) {
            why.push(format!(
                "projected ${:.2} against a ${:.2} budget",
                p as f64 / 1e6,
                b as f64 / 1e6
            ));
        }
        if let Some(count) = e.new_address_count {
            why.push(format!("{count} new source addresses"));
        }
        if let Some(source) = e.source {
            why.push(format!("used from {source}"));
        }
    }
    if let Some((scanner, location)) = &n.leak {
        why.push(format!(
            "found by {} at {}",
            scanner.as_str(),
            location.summary()
        ));
    }
    if let Some(r) = &n.reason {
        why.push(r.clone());
    }
    if !why.is_empty() {
        let _ = write!(s, ": {}", why.join("; "));
    }
    s
}
