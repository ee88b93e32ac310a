//! Usage from a whole (already decompressed) JSON response body.

use super::{anthropic, cohere, openai, Dialect, Usage, UsageError};

/// Reads the usage block of a JSON response body in `dialect`.
///
/// `Ok(None)` when the body is valid JSON but carries no usage block (an error body, an
/// embeddings clone that omits usage, a non-object). Fields of unexpected types read as
/// absent; only a body that is not JSON at all, or has duplicate keys where usage is read, is
/// an error.
pub fn parse_body(dialect: Dialect, body: &[u8]) -> Result<Option<Usage>, UsageError> {
    match dialect {
        Dialect::OpenAi => openai::parse_body(body),
        Dialect::Anthropic => anthropic::parse_body(body),
        Dialect::Cohere => cohere::parse_body(body),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dispatches_per_dialect() {
        let anthropic = include_bytes!("fixtures/mock_anthropic_message.json");
        let u = parse_body(Dialect::Anthropic, anthropic).unwrap().unwrap();
        assert_eq!(u.input_tokens, 24);
        // The same body read as OpenAI counts input without the cache fields.
        let u = parse_body(Dialect::OpenAi, anthropic).unwrap().unwrap();
        assert_eq!(u.input_tokens, 6);
        assert_eq!(parse_body(Dialect::Cohere, anthropic).unwrap(), None);
    }

    #[test]
    fn invalid_and_misshapen_json() {
        for dialect in [Dialect::OpenAi, Dialect::Anthropic, Dialect::Cohere] {
            assert!(matches!(
                parse_body(dialect, b""),
                Err(UsageError::InvalidJson(_))
            ));
            assert!(matches!(
                parse_body(dialect, b"{\"a\":1} trailing"),
                Err(UsageError::InvalidJson(_))
            ));
            assert_eq!(parse_body(dialect, b"null").unwrap(), None);
            assert_eq!(parse_body(dialect, b"{}").unwrap(), None);
        }
        let duplicated = br#"{"usage":{"prompt_tokens":1},"usage":{"prompt_tokens":2}}"#;
        assert!(matches!(
            parse_body(Dialect::OpenAi, duplicated),
            Err(UsageError::UnexpectedShape(_))
        ));
    }
}
