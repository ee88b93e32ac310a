//! Provider kinds: how each expects its credential and what its error bodies look like.

use serde::Deserialize;

/// The wire dialect of an upstream AI provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    Openai,
    Anthropic,
    AzureOpenai,
    Cohere,
    Generic,
}

/// The JSON shape of error bodies the provider's SDKs know how to parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorShape {
    /// `{"error":{"message","type","code"}}`, understood by OpenAI, Azure OpenAI and most clones.
    OpenAi,
    /// `{"type":"error","error":{"type","message"}}`.
    Anthropic,
}

impl ProviderKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Openai => "openai",
            ProviderKind::Anthropic => "anthropic",
            ProviderKind::AzureOpenai => "azure_openai",
            ProviderKind::Cohere => "cohere",
            ProviderKind::Generic => "generic",
        }
    }

    /// The header the provider reads its key from and the prefix before the key.
    pub fn default_injection(self) -> (&'static str, &'static str) {
        match self {
            ProviderKind::Openai | ProviderKind::Cohere | ProviderKind::Generic => {
                ("authorization", "Bearer ")
            }
            ProviderKind::Anthropic => ("x-api-key", ""),
            ProviderKind::AzureOpenai => ("api-key", ""),
        }
    }

    pub fn error_shape(self) -> ErrorShape {
        match self {
            ProviderKind::Anthropic => ErrorShape::Anthropic,
            _ => ErrorShape::OpenAi,
        }
    }
}

/// Lowercase RFC 7230 token characters; Envoy rejects anything else in a header name.
pub fn valid_header_name(name: &str) -> bool {
    !name.is_empty()
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b"!#$%&'*+-.^_`|~".contains(&b)
        })
}
