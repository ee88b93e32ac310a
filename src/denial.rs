//! Where denials are built: the HTTP status, and a JSON body in the error shape of the
//! provider's own API so official SDKs raise their usual exception with keygate's message.

use std::time::Duration;

use serde_json::json;

use crate::auth::key::KeyFormatError;
use crate::path::PathError;
use crate::providers::ErrorShape;
use crate::retry_after::{reset_text, retry_seconds};

/// Why a request was denied. Messages never contain the presented key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DenyReason {
    MissingKey,
    MalformedKey(KeyFormatError),
    UnreadableCredential,
    ConflictingKeys,
    UnknownKey,
    ExpiredKey,
    /// The key was revoked by an operator (or a detector); the consumer may hold another.
    KeyRevoked,
    Suspended,
    Revoked,
    OutOfScope {
        method: String,
        path: String,
        sensitive: bool,
    },
    BadPath(PathError),
    /// A consumer key in the URL's query string, where proxies, logs and the provider see it.
    KeyInQuery,
    /// A budgeted key's request keygate cannot bound: not a JSON object, compressed, or
    /// naming no model.
    UnreadableRequest,
    /// With keygate's headers added, the request would have more headers than Envoy allows.
    TooManyHeaders {
        limit: usize,
    },
    CredentialUnavailable,
    /// An operator revoked the provider key this consumer's requests would use (emergency
    /// revocation) and no replacement is served yet.
    CredentialRevoked,
    /// The body is larger than the consumer's `max_request_bytes`.
    TooLarge {
        limit: u64,
    },
    /// A request-rate limit; `window` names it.
    RateLimited {
        window: &'static str,
        limit: u64,
        retry_after: Duration,
    },
    /// A token limit (reservation or debt).
    TokenLimited {
        window: &'static str,
        limit: u64,
        retry_after: Duration,
    },
    /// The consumer's (or its team's) monthly budget cannot cover this request.
    OverBudget {
        team: Option<String>,
    },
    /// The source address failed authentication too often.
    AuthFlood {
        retry_after: Duration,
    },
    /// Refused by the consumer's binding: identity, network or model (src/denial_binding.rs).
    Binding(crate::denial_binding::BindingDenial),
}

impl DenyReason {
    pub fn status(&self) -> u16 {
        match self {
            DenyReason::BadPath(_) | DenyReason::KeyInQuery | DenyReason::UnreadableRequest => 400,
            DenyReason::MissingKey
            | DenyReason::MalformedKey(_)
            | DenyReason::UnreadableCredential
            | DenyReason::ConflictingKeys
            | DenyReason::UnknownKey
            | DenyReason::ExpiredKey
            | DenyReason::KeyRevoked => 401,
            DenyReason::Suspended | DenyReason::Revoked | DenyReason::OutOfScope { .. } => 403,
            DenyReason::CredentialUnavailable | DenyReason::CredentialRevoked => 503,
            DenyReason::TooLarge { .. } => 413,
            DenyReason::TooManyHeaders { .. } => 431,
            DenyReason::RateLimited { .. }
            | DenyReason::TokenLimited { .. }
            | DenyReason::OverBudget { .. }
            | DenyReason::AuthFlood { .. } => 429,
            DenyReason::Binding(b) => b.status(),
        }
    }

    /// Bounded label value for metrics.
    pub fn outcome(&self) -> &'static str {
        match self {
            DenyReason::MissingKey => "missing_key",
            DenyReason::MalformedKey(_)
            | DenyReason::UnreadableCredential
            | DenyReason::ConflictingKeys => "malformed_key",
            DenyReason::UnknownKey => "unknown_key",
            DenyReason::ExpiredKey => "expired_key",
            DenyReason::KeyRevoked => "revoked_key",
            DenyReason::Suspended => "suspended",
            DenyReason::Revoked => "revoked",
            DenyReason::OutOfScope { .. } => "out_of_scope",
            DenyReason::BadPath(_) => "bad_path",
            DenyReason::KeyInQuery => "key_in_query",
            DenyReason::UnreadableRequest => "unreadable_request",
            DenyReason::TooManyHeaders { .. } => "too_many_headers",
            DenyReason::CredentialUnavailable => "credential_unavailable",
            DenyReason::CredentialRevoked => "credential_revoked",
            DenyReason::TooLarge { .. } => "too_large",
            DenyReason::RateLimited { .. } => "rate_limited",
            DenyReason::TokenLimited { .. } => "token_limited",
            DenyReason::OverBudget { .. } => "over_budget",
            DenyReason::AuthFlood { .. } => "auth_flood",
            DenyReason::Binding(b) => b.outcome(),
        }
    }

    fn code(&self) -> &'static str {
        match self {
            DenyReason::MissingKey => "missing_api_key",
            DenyReason::MalformedKey(_)
            | DenyReason::UnreadableCredential
            | DenyReason::ConflictingKeys => "invalid_api_key",
            DenyReason::UnknownKey => "invalid_api_key",
            DenyReason::ExpiredKey => "expired_api_key",
            DenyReason::KeyRevoked => "revoked_api_key",
            DenyReason::Suspended => "consumer_suspended",
            DenyReason::Revoked => "consumer_revoked",
            DenyReason::OutOfScope { .. } => "out_of_scope",
            DenyReason::BadPath(_) => "invalid_path",
            DenyReason::KeyInQuery => "key_in_query",
            DenyReason::UnreadableRequest => "unreadable_request",
            DenyReason::TooManyHeaders { .. } => "request_header_fields_too_large",
            DenyReason::CredentialUnavailable => "credential_unavailable",
            DenyReason::CredentialRevoked => "credential_revoked",
            DenyReason::TooLarge { .. } => "request_too_large",
            DenyReason::RateLimited { .. } => "rate_limit_exceeded",
            DenyReason::TokenLimited { .. } => "rate_limit_exceeded",
            // OpenAI's own code for an exhausted quota; its SDK raises RateLimitError.
            DenyReason::OverBudget { .. } => "insufficient_quota",
            DenyReason::AuthFlood { .. } => "too_many_failed_authentications",
            DenyReason::Binding(b) => b.code(),
        }
    }

    pub fn message(&self) -> String {
        match self {
            DenyReason::MissingKey => {
                "keygate: no API key provided. Send your keygate consumer key as \
                'Authorization: Bearer kg_…', 'x-api-key' or 'api-key'."
                    .into()
            }
            DenyReason::MalformedKey(e) => format!("keygate: malformed API key: {e}."),
            DenyReason::KeyRevoked => "keygate: this API key has been revoked.".into(),
            DenyReason::UnreadableCredential => {
                "keygate: the credential header is not a bearer token in plain text.".into()
            }
            DenyReason::ConflictingKeys => {
                "keygate: the request carries more than one different API key.".into()
            }
            DenyReason::UnknownKey => "keygate: unknown API key.".into(),
            DenyReason::ExpiredKey => {
                "keygate: this API key has expired; ask for a new one.".into()
            }
            DenyReason::Suspended => "keygate: this consumer is suspended.".into(),
            DenyReason::Revoked => "keygate: this consumer's access has been revoked.".into(),
            DenyReason::OutOfScope {
                method,
                path,
                sensitive,
            } => {
                let mut m = format!("keygate: this key's scope does not allow {method} {path}.");
                if *sensitive {
                    m.push_str(" Fine-tuning, files, batches and organization endpoints must be named explicitly in the scope.");
                }
                m
            }
            DenyReason::BadPath(e) => format!("keygate: {e}."),
            DenyReason::KeyInQuery => "keygate: a keygate API key in the URL is refused (URLs end up in logs); send it in the Authorization header, and replace this key.".into(),
            DenyReason::CredentialUnavailable => {
                "keygate: the provider credential is unavailable right now; retry later.".into()
            }
            DenyReason::UnreadableRequest => "keygate: this key has a budget, so its requests must be uncompressed JSON that names the model (for Azure OpenAI, in the deployment path): keygate must bound what a request can cost before it is sent.".into(),
            DenyReason::CredentialRevoked => {
                "keygate: the provider credential for this key was revoked by an operator; requests fail until a replacement is in place."
                    .into()
            }
            DenyReason::TooManyHeaders { limit } => format!(
                "keygate: the request has too many headers (with keygate's own, more than {limit}); send fewer."
            ),
            DenyReason::TooLarge { limit } => {
                format!(
                    "keygate: the request body is larger than this key's limit of {limit} bytes."
                )
            }
            DenyReason::RateLimited {
                window,
                limit,
                retry_after,
            } => format!(
                "keygate: rate limit reached: {limit} requests per {window}. Retry in {}.",
                reset_text(*retry_after)
            ),
            DenyReason::TokenLimited {
                window,
                limit,
                retry_after,
            } => format!(
                "keygate: token limit reached: {limit} tokens per {window}. Retry in {}.",
                reset_text(*retry_after)
            ),
            DenyReason::OverBudget { team: None } => {
                "keygate: this key's monthly budget is exhausted; it resets on the 1st (UTC)."
                    .into()
            }
            DenyReason::OverBudget { team: Some(team) } => format!(
                "keygate: team {team}'s monthly budget is exhausted; it resets on the 1st (UTC)."
            ),
            DenyReason::AuthFlood { retry_after } => format!(
                "keygate: too many failed authentications from this address. Retry in {}.",
                reset_text(*retry_after)
            ),
            DenyReason::Binding(b) => b.message(),
        }
    }

    fn openai_type(&self) -> &'static str {
        match self.status() {
            400 | 413 | 431 => "invalid_request_error",
            401 => "authentication_error",
            403 => "permission_error",
            429 if matches!(self, DenyReason::OverBudget { .. }) => "insufficient_quota",
            429 => "rate_limit_error",
            _ => "api_error",
        }
    }

    fn anthropic_type(&self) -> &'static str {
        match self.status() {
            400 | 431 => "invalid_request_error",
            401 => "authentication_error",
            403 => "permission_error",
            413 => "request_too_large",
            429 => "rate_limit_error",
            _ => "api_error",
        }
    }

    /// `retry-after` and the `x-ratelimit-*` headers OpenAI clients already read.
    pub fn headers(&self) -> Vec<(String, String)> {
        let (kind, limit, retry_after) = match self {
            DenyReason::RateLimited {
                limit, retry_after, ..
            } => ("requests", *limit, *retry_after),
            DenyReason::TokenLimited {
                limit, retry_after, ..
            } => ("tokens", *limit, *retry_after),
            DenyReason::AuthFlood { retry_after } => {
                return vec![("retry-after".into(), retry_seconds(*retry_after))]
            }
            _ => return Vec::new(),
        };
        vec![
            ("retry-after".into(), retry_seconds(retry_after)),
            (format!("x-ratelimit-limit-{kind}"), limit.to_string()),
            (format!("x-ratelimit-remaining-{kind}"), "0".into()),
            (format!("x-ratelimit-reset-{kind}"), reset_text(retry_after)),
        ]
    }
}

/// Marks every response keygate itself sends, so Envoy can tell keygate's denials from the
/// provider's answers (the shipped config skips its response observer on it) and a client can
/// tell who refused it.
pub const DENIED_HEADER: (&str, &str) = ("x-keygate-denied", "true");

/// A denial ready for any edge to send: status, extra headers and body.
#[derive(Debug, Clone)]
pub struct Denial {
    pub reason: DenyReason,
    pub shape: ErrorShape,
    pub headers: Vec<(String, String)>,
}

impl Denial {
    pub fn new(reason: DenyReason, shape: ErrorShape) -> Self {
        let mut headers = reason.headers();
        headers.push((DENIED_HEADER.0.into(), DENIED_HEADER.1.into()));
        Denial {
            reason,
            shape,
            headers,
        }
    }

    pub fn status(&self) -> u16 {
        self.reason.status()
    }

    /// The JSON body in the provider's error shape.
    pub fn body(&self) -> Vec<u8> {
        let message = self.reason.message();
        let value = match self.shape {
            ErrorShape::OpenAi => json!({
                "error": {
                    "message": message,
                    "type": self.reason.openai_type(),
                    "param": null,
                    "code": self.reason.code(),
                }
            }),
            ErrorShape::Anthropic => json!({
                "type": "error",
                "error": { "type": self.reason.anthropic_type(), "message": message }
            }),
        };
        value.to_string().into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openai_shape_has_message_type_and_code() {
        let d = Denial::new(DenyReason::UnknownKey, ErrorShape::OpenAi);
        let v: serde_json::Value = serde_json::from_slice(&d.body()).unwrap();
        assert_eq!(d.status(), 401);
        assert_eq!(v["error"]["code"], "invalid_api_key");
        assert_eq!(v["error"]["type"], "authentication_error");
        assert!(v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("unknown API key"));
    }

    #[test]
    fn anthropic_shape_is_typed_error() {
        let d = Denial::new(DenyReason::Suspended, ErrorShape::Anthropic);
        let v: serde_json::Value = serde_json::from_slice(&d.body()).unwrap();
        assert_eq!(d.status(), 403);
        assert_eq!(v["type"], "error");
        assert_eq!(v["error"]["type"], "permission_error");
    }

    #[test]
    fn rate_limit_denials_carry_openai_headers() {
        let d = Denial::new(
            DenyReason::RateLimited {
                window: "minute",
                limit: 60,
                retry_after: Duration::from_millis(1500),
            },
            ErrorShape::OpenAi,
        );
        assert_eq!(d.status(), 429);
        let h: std::collections::HashMap<_, _> = d.headers.iter().cloned().collect();
        assert_eq!(h["retry-after"], "2");
        assert_eq!(h["x-ratelimit-limit-requests"], "60");
        assert_eq!(h["x-ratelimit-remaining-requests"], "0");
        assert_eq!(h["x-ratelimit-reset-requests"], "2s");
        assert_eq!(h["x-keygate-denied"], "true");
        let v: serde_json::Value = serde_json::from_slice(&d.body()).unwrap();
        assert_eq!(v["error"]["type"], "rate_limit_error");
        assert!(v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("60 requests per minute"));
    }

    #[test]
    fn over_budget_is_openais_insufficient_quota() {
        let d = Denial::new(DenyReason::OverBudget { team: None }, ErrorShape::OpenAi);
        let v: serde_json::Value = serde_json::from_slice(&d.body()).unwrap();
        assert_eq!(
            (d.status(), v["error"]["code"].as_str()),
            (429, Some("insufficient_quota"))
        );
    }

    #[test]
    fn statuses_follow_the_design_contract() {
        assert_eq!(DenyReason::MissingKey.status(), 401);
        assert_eq!(DenyReason::Revoked.status(), 403);
        assert_eq!(DenyReason::BadPath(PathError::DotSegment).status(), 400);
        assert_eq!(DenyReason::CredentialUnavailable.status(), 503);
        assert_eq!(DenyReason::CredentialRevoked.status(), 503);
        assert_eq!(
            DenyReason::CredentialRevoked.outcome(),
            "credential_revoked"
        );
    }
}
