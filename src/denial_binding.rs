//! Denials of a request by what binds its consumer: the caller's workload identity, its
//! network address, and the model it names. All are 403s (the caller is known, or its
//! identity verified, and not allowed this), each with its own outcome label.

use std::net::IpAddr;

/// Longest identity or model name quoted in a message, in characters.
const QUOTED: usize = 200;

/// Why a request was refused by its consumer's binding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BindingDenial {
    /// A key bound to workload identities, presented from another identity or none.
    IdentityMismatch { presented: Option<String> },
    /// No consumer is authenticated by this identity, and no key was presented.
    UnknownIdentity { identity: String },
    /// The client address is outside the consumer's `allowed_sources` (or unknown).
    SourceNotAllowed { address: Option<IpAddr> },
    /// The model is not in the consumer's `scope.models`.
    ModelNotAllowed { model: String },
    /// The consumer has `scope.models`, and the request's model cannot be read.
    ModelUnreadable,
}

impl BindingDenial {
    pub fn status(&self) -> u16 {
        403
    }

    /// Bounded label value for metrics.
    pub fn outcome(&self) -> &'static str {
        match self {
            BindingDenial::IdentityMismatch { .. } => "identity_mismatch",
            BindingDenial::UnknownIdentity { .. } => "unknown_identity",
            BindingDenial::SourceNotAllowed { .. } => "source_not_allowed",
            BindingDenial::ModelNotAllowed { .. } => "model_not_allowed",
            BindingDenial::ModelUnreadable => "model_unreadable",
        }
    }

    /// The `code` of OpenAI's error shape.
    pub fn code(&self) -> &'static str {
        self.outcome()
    }

    pub fn message(&self) -> String {
        match self {
            BindingDenial::IdentityMismatch { presented: Some(id) } => format!(
                "keygate: this API key is bound to other workload identities; it was presented from {}.",
                quote(id)
            ),
            BindingDenial::IdentityMismatch { presented: None } => "keygate: this API key is bound to workload identities; it was presented without one (no verified client certificate).".into(),
            BindingDenial::UnknownIdentity { identity } => format!(
                "keygate: no consumer is authenticated by the workload identity {}, and the request carries no API key.",
                quote(identity)
            ),
            BindingDenial::SourceNotAllowed { address: Some(ip) } => {
                format!("keygate: this API key may not be used from {ip}.")
            }
            BindingDenial::SourceNotAllowed { address: None } => "keygate: this API key may be used only from listed addresses, and this request's address is unknown.".into(),
            BindingDenial::ModelNotAllowed { model } => format!(
                "keygate: this key's scope does not allow the model {}.",
                quote(model)
            ),
            BindingDenial::ModelUnreadable => "keygate: this key may call only listed models, and keygate cannot read this request's model: send an uncompressed JSON body with a \"model\" field (for Azure OpenAI, the deployment in the path).".into(),
        }
    }
}

/// A caller-supplied name as quoted in a message: bounded, in quotes.
fn quote(text: &str) -> String {
    format!("{:?}", text.chars().take(QUOTED).collect::<String>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_quote_bounded_names() {
        let long = BindingDenial::ModelNotAllowed {
            model: "m".repeat(1000),
        };
        assert!(long.message().len() < 300);
        let mismatch = BindingDenial::IdentityMismatch {
            presented: Some("spiffe://td/ns/a/sa/b".into()),
        };
        assert!(mismatch.message().contains("\"spiffe://td/ns/a/sa/b\""));
        assert_eq!(mismatch.status(), 403);
        assert_eq!(mismatch.outcome(), "identity_mismatch");
    }
}
