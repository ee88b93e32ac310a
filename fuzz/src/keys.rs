//! The Envoy fixture's consumer keys and provider secrets, shared with the seed generator
//! (`fuzz/seeds`), which includes this file.

/// Consumer keys of the Envoy fixture. They are only valid against its config.
pub const OPENAI_KEY: &str = "kg_live_FuzzOpenAIKey00000000000000000_2EN2wl";
pub const ANTHROPIC_KEY: &str = "kg_live_FuzzAnthropicKey00000000000000_3B8N3a";
pub const AZURE_KEY: &str = "kg_live_FuzzAzureKey000000000000000000_1WXOzy";
pub const COHERE_KEY: &str = "kg_test_FuzzCohereKey00000000000000000_2xnHWz";
pub const GENERIC_KEY: &str = "kg_live_FuzzGenericKey0000000000000000_1nVXfn";
pub const SUSPENDED_KEY: &str = "kg_live_FuzzSuspendedKey00000000000000_2vEDjm";

/// Provider secrets of the fixture: no response keygate sends back to a client may hold one.
pub const SECRETS: [&str; 5] = [
    "sk-fuzz-openai-upstream-secret",
    "sk-ant-fuzz-upstream-secret",
    "azure-fuzz-upstream-secret",
    "cohere-fuzz-upstream-secret",
    "generic-fuzz-upstream-secret",
];
