//! Where denials are built: the HTTP status, and a JSON body in the error shape of the
//! provider's own API so official SDKs raise their usual exception with keygate's message.

use serde_json::json;

use crate::auth::KeyFormatError;
use crate::path::PathError;
use crate::providers::ErrorShape;

/// Why a request was denied. Messages never contain the presented key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DenyReason {
    MissingKey,
    MalformedKey(KeyFormatError),
    UnreadableCredential,
    ConflictingKeys,
    UnknownKey,
    ExpiredKey,
    Suspended,
    Revoked,
    OutOfScope {
        method: String,
        path: String,
        sensitive: bool,
    },
    BadPath(PathError),
    CredentialUnavailable,
}

impl DenyReason {
    pub fn status(&self) -> u16 {
        match self {
            DenyReason::BadPath(_) => 400,
            DenyReason::MissingKey
            | DenyReason::MalformedKey(_)
            | DenyReason::UnreadableCredential
            | DenyReason::ConflictingKeys
            | DenyReason::UnknownKey
            | DenyReason::ExpiredKey => 401,
            DenyReason::Suspended | DenyReason::Revoked | DenyReason::OutOfScope { .. } => 403,
            DenyReason::CredentialUnavailable => 503,
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
            DenyReason::Suspended => "suspended",
            DenyReason::Revoked => "revoked",
            DenyReason::OutOfScope { .. } => "out_of_scope",
            DenyReason::BadPath(_) => "bad_path",
            DenyReason::CredentialUnavailable => "credential_unavailable",
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
            DenyReason::Suspended => "consumer_suspended",
            DenyReason::Revoked => "consumer_revoked",
            DenyReason::OutOfScope { .. } => "out_of_scope",
            DenyReason::BadPath(_) => "invalid_path",
            DenyReason::CredentialUnavailable => "credential_unavailable",
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
            DenyReason::CredentialUnavailable => {
                "keygate: the provider credential is unavailable right now; retry later.".into()
            }
        }
    }

    fn openai_type(&self) -> &'static str {
        match self.status() {
            400 => "invalid_request_error",
            401 => "authentication_error",
            403 => "permission_error",
            _ => "api_error",
        }
    }

    fn anthropic_type(&self) -> &'static str {
        match self.status() {
            400 => "invalid_request_error",
            401 => "authentication_error",
            403 => "permission_error",
            _ => "api_error",
        }
    }
}

/// A denial ready for any edge to send: status, extra headers and body.
#[derive(Debug, Clone)]
pub struct Denial {
    pub reason: DenyReason,
    pub shape: ErrorShape,
    pub headers: Vec<(String, String)>,
}

impl Denial {
    pub fn new(reason: DenyReason, shape: ErrorShape) -> Self {
        Denial {
            reason,
            shape,
            headers: Vec::new(),
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
    fn statuses_follow_the_design_contract() {
        assert_eq!(DenyReason::MissingKey.status(), 401);
        assert_eq!(DenyReason::Revoked.status(), 403);
        assert_eq!(DenyReason::BadPath(PathError::DotSegment).status(), 400);
        assert_eq!(DenyReason::CredentialUnavailable.status(), 503);
    }
}
