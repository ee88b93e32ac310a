//! The adapter registry: a provider's adapter is one file in this folder plus one line here.

use super::adapter::{AdapterError, AdapterSettings, ProviderAdapter};
use super::{anthropic, azure, generic, openai};
use crate::providers::ProviderKind;

type Build = fn(&AdapterSettings) -> Result<Box<dyn ProviderAdapter>, AdapterError>;

/// Every adapter by name.
const ADAPTERS: &[(&str, Build)] = &[
    ("openai", openai::build),
    ("azure_openai", azure::build),
    ("anthropic", anthropic::build),
    ("generic", generic::build),
];

/// The adapter for a provider kind when the policy names none.
pub fn default_for(kind: ProviderKind) -> &'static str {
    match kind {
        ProviderKind::Openai => "openai",
        ProviderKind::AzureOpenai => "azure_openai",
        ProviderKind::Anthropic => "anthropic",
        ProviderKind::Cohere | ProviderKind::Generic => "generic",
    }
}

/// The adapter names keygate knows.
pub fn names() -> Vec<&'static str> {
    ADAPTERS.iter().map(|(name, _)| *name).collect()
}

/// Builds the named adapter.
pub fn build(
    name: &str,
    settings: &AdapterSettings,
) -> Result<Box<dyn ProviderAdapter>, AdapterError> {
    match ADAPTERS.iter().find(|(n, _)| *n == name) {
        Some((_, build)) => build(settings),
        None => Err(AdapterError::Setting {
            adapter: "rotation",
            name: "adapter".into(),
            reason: format!("unknown adapter {name:?} (known: {})", names().join(", ")),
        }),
    }
}
