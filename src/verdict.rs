//! keygate's decision about one request, as other components see it: the edges publish it
//! (Envoy dynamic metadata, namespace `keygate`, for later filters and the access log). It
//! names the consumer, never its key: the key appears only as its id (`kid_…`).
//!
//! A field is present only once known: the outcome when the decision is final, the model
//! once read, the usage once the response is settled (ext_proc only).

use std::net::IpAddr;
use std::sync::Arc;

use crate::auth::key_id::KeyId;
use crate::config::Authentication;

/// The settled usage of a response.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SettledUsage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// What was charged, in millionths of a US dollar.
    pub micro_usd: u64,
    /// The usage was estimated (the response carried none keygate could read).
    pub estimated: bool,
}

/// What keygate decided about a request, field by field as it became known.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Verdict {
    /// `allowed` or a denial's outcome label; set when the decision is final.
    pub outcome: Option<&'static str>,
    pub consumer: Option<Arc<str>>,
    pub team: Option<Arc<str>>,
    pub provider: Option<Arc<str>>,
    /// The id of the key that authenticated the request (none for identity alone).
    pub key_id: Option<KeyId>,
    /// How the consumer was authenticated: `key`, `identity` or `key_and_identity`.
    pub authenticated_by: Option<Authentication>,
    /// The caller's verified workload identity (SPIFFE ID), whether it was needed or not.
    pub identity: Option<String>,
    /// The client address keygate judged the request by.
    pub client_address: Option<IpAddr>,
    /// The model the request names (Azure OpenAI: the deployment).
    pub model: Option<String>,
    pub usage: Option<SettledUsage>,
}

/// One field as published: its name and value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Text(String),
    Number(f64),
    Flag(bool),
}

impl Verdict {
    /// The fields that are known, with their published names. Documented in docs/envoy.md
    /// ("keygate's decision in Envoy's metadata"); the names are an interface.
    pub fn fields(&self) -> Vec<(&'static str, Value)> {
        let text = |s: &str| Value::Text(s.to_string());
        let mut out = Vec::new();
        let mut put = |name, value: Option<Value>| {
            if let Some(v) = value {
                out.push((name, v));
            }
        };
        put("outcome", self.outcome.map(text));
        put("consumer", self.consumer.as_deref().map(text));
        put("team", self.team.as_deref().map(text));
        put("provider", self.provider.as_deref().map(text));
        put("key_id", self.key_id.as_ref().map(|k| text(&k.to_string())));
        put(
            "authenticated_by",
            self.authenticated_by.map(|a| text(a.as_str())),
        );
        put("identity", self.identity.as_deref().map(text));
        put(
            "client_address",
            self.client_address.map(|ip| text(&ip.to_string())),
        );
        put("model", self.model.as_deref().map(text));
        if let Some(usage) = self.usage {
            let n = |v: u64| Some(Value::Number(v as f64));
            put("input_tokens", n(usage.input_tokens));
            put("output_tokens", n(usage.output_tokens));
            put(
                "tokens",
                n(usage.input_tokens.saturating_add(usage.output_tokens)),
            );
            put("usd", Some(Value::Number(usage.micro_usd as f64 / 1e6)));
            put("usage_estimated", Some(Value::Flag(usage.estimated)));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_known_fields_are_published() {
        let verdict = Verdict {
            outcome: Some("unknown_key"),
            client_address: Some("10.0.0.7".parse().unwrap()),
            ..Verdict::default()
        };
        assert_eq!(
            verdict.fields(),
            vec![
                ("outcome", Value::Text("unknown_key".into())),
                ("client_address", Value::Text("10.0.0.7".into())),
            ]
        );
        let settled = Verdict {
            usage: Some(SettledUsage {
                input_tokens: 12,
                output_tokens: 30,
                micro_usd: 1_500,
                estimated: false,
            }),
            ..Verdict::default()
        };
        let fields = settled.fields();
        assert!(fields.contains(&("tokens", Value::Number(42.0))));
        assert!(fields.contains(&("usd", Value::Number(0.0015))));
        assert!(fields.contains(&("usage_estimated", Value::Flag(false))));
    }
}
