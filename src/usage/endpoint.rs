//! Which kind of provider endpoint a request called: generations and embeddings are billed in
//! tokens, so a successful answer without a usage block is still charged an estimate.

/// What kind of endpoint a request called, for charging responses that carry no usage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// Chat, completions, messages, responses: input and output tokens.
    Generation,
    /// Embeddings: input tokens only.
    Embedding,
    Other,
}

impl Endpoint {
    /// Classifies a request path (without its query).
    pub fn of(path: &str) -> Self {
        const GENERATION: [&str; 6] = [
            "/chat/completions",
            "/completions",
            "/messages",
            "/responses",
            "/chat",
            "/generate",
        ];
        if GENERATION.iter().any(|end| path.ends_with(end)) {
            Endpoint::Generation
        } else if path.ends_with("/embeddings") || path.ends_with("/embed") {
            Endpoint::Embedding
        } else {
            Endpoint::Other
        }
    }
}

/// The request field that caps a generation's output at this path, where keygate can write
/// one: OpenAI (and Azure) chat completions take `max_completion_tokens` (the o-series refuse
/// `max_tokens`), legacy completions and Cohere `max_tokens`, the Responses API
/// `max_output_tokens`. Anthropic requires `max_tokens` of every client already.
pub fn output_cap_field(dialect: super::Dialect, path: &str) -> Option<&'static str> {
    use super::Dialect;
    match dialect {
        Dialect::OpenAi if path.ends_with("/chat/completions") => Some("max_completion_tokens"),
        Dialect::OpenAi if path.ends_with("/completions") => Some("max_tokens"),
        Dialect::OpenAi if path.ends_with("/responses") => Some("max_output_tokens"),
        Dialect::Cohere if path.ends_with("/chat") || path.ends_with("/generate") => {
            Some("max_tokens")
        }
        _ => None,
    }
}

/// The Azure OpenAI deployment a path names (`/openai/deployments/{name}/…`): the model a
/// request uses when its body names none.
pub fn azure_deployment(path: &str) -> Option<&str> {
    let rest = path.strip_prefix("/openai/deployments/")?;
    let name = rest.split('/').next()?;
    (!name.is_empty()).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::Endpoint;

    #[test]
    fn classifies_provider_paths() {
        for path in [
            "/v1/chat/completions",
            "/v1/completions",
            "/v1/messages",
            "/v1/responses",
            "/v2/chat",
            "/openai/deployments/gpt-4o/chat/completions",
        ] {
            assert_eq!(Endpoint::of(path), Endpoint::Generation, "{path}");
        }
        assert_eq!(Endpoint::of("/v1/embeddings"), Endpoint::Embedding);
        assert_eq!(Endpoint::of("/v2/embed"), Endpoint::Embedding);
        for path in [
            "/v1/models",
            "/v1/moderations",
            "/v1/messages/count_tokens",
            "/v1/files",
        ] {
            assert_eq!(Endpoint::of(path), Endpoint::Other, "{path}");
        }
    }

    #[test]
    fn output_cap_fields_and_azure_deployments() {
        use super::{azure_deployment, output_cap_field};
        use crate::usage::Dialect;
        assert_eq!(
            output_cap_field(Dialect::OpenAi, "/v1/chat/completions"),
            Some("max_completion_tokens")
        );
        assert_eq!(
            output_cap_field(Dialect::OpenAi, "/v1/completions"),
            Some("max_tokens")
        );
        assert_eq!(
            output_cap_field(Dialect::OpenAi, "/v1/responses"),
            Some("max_output_tokens")
        );
        assert_eq!(output_cap_field(Dialect::OpenAi, "/v1/embeddings"), None);
        assert_eq!(output_cap_field(Dialect::Anthropic, "/v1/messages"), None);
        assert_eq!(
            azure_deployment("/openai/deployments/gpt-4o-prod/chat/completions"),
            Some("gpt-4o-prod")
        );
        assert_eq!(azure_deployment("/v1/chat/completions"), None);
    }
}
