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
}
