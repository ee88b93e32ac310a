//! Model allow-lists (`scope.models`): which models a consumer may call, and the model a request
//! names. Patterns are model names in which `*` stands for any run of characters
//! (`gpt-4o-mini`, `text-embedding-3-*`, `claude-*-haiku-*`); matching is exact and
//! case-sensitive, so a name that differs only in case is refused, never waved through.
//!
//! A request names its model in the JSON body's top-level `model` (OpenAI, Anthropic, Cohere
//! and most others) or, for Azure OpenAI, in the deployment of the path
//! (`/openai/deployments/{deployment}/…`), which then decides what runs. When a consumer has a
//! list, a request whose model cannot be read (not JSON, compressed, no or a non-string
//! `model`, the field twice) is refused: what it would run is unknown.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use serde::Deserialize;

use crate::providers::ProviderKind;

/// Longest model name or pattern accepted, in bytes.
pub const MAX_MODEL_LEN: usize = 256;

/// One allowed model or model pattern.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ModelPattern {
    /// The text between the `*`s (one part when there is none).
    parts: Vec<String>,
}

/// Why a model pattern in config is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelPatternError {
    #[error("a model pattern cannot be empty")]
    Empty,
    #[error("a model pattern is at most {MAX_MODEL_LEN} bytes")]
    TooLong,
    #[error("{0:?} has whitespace or control characters, which no model name has")]
    Characters(String),
}

impl ModelPattern {
    pub fn matches(&self, model: &str) -> bool {
        let Some((first, rest)) = self.parts.split_first() else {
            return false;
        };
        let Some(mut remaining) = model.strip_prefix(first.as_str()) else {
            return false;
        };
        let Some((last, middle)) = rest.split_last() else {
            return remaining.is_empty(); // no `*`: the whole name
        };
        for part in middle {
            match remaining.find(part.as_str()) {
                Some(at) => remaining = &remaining[at + part.len()..],
                None => return false,
            }
        }
        remaining.len() >= last.len() && remaining.ends_with(last.as_str())
    }
}

impl FromStr for ModelPattern {
    type Err = ModelPatternError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.is_empty() {
            return Err(ModelPatternError::Empty);
        }
        if text.len() > MAX_MODEL_LEN {
            return Err(ModelPatternError::TooLong);
        }
        if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(ModelPatternError::Characters(text.to_string()));
        }
        Ok(ModelPattern {
            parts: text.split('*').map(str::to_string).collect(),
        })
    }
}

impl fmt::Display for ModelPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.parts.join("*"))
    }
}

impl<'de> Deserialize<'de> for ModelPattern {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// What the request shows of its body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body<'a> {
    /// The request has no body.
    Absent,
    /// The whole body, as sent (`compressed`: it has a content coding).
    Whole { bytes: &'a [u8], compressed: bool },
    /// The request has a body the edge did not deliver (or only part of it).
    Unseen,
}

/// The model a request names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestModel<'a> {
    /// The request names no model and has no body to name one in (a `GET`).
    None,
    Named(Cow<'a, str>),
    /// The request has a body, but the model in it cannot be read.
    Unreadable,
}

impl RequestModel<'_> {
    /// The name, when one was read.
    pub fn name(&self) -> Option<&str> {
        match self {
            RequestModel::Named(name) => Some(name),
            _ => None,
        }
    }
}

/// The model the request names: Azure OpenAI's deployment in the path when there is one, else
/// the body's top-level `model`.
pub fn requested_model<'a>(kind: ProviderKind, path: &'a str, body: Body<'a>) -> RequestModel<'a> {
    if kind == ProviderKind::AzureOpenai {
        let path = path.split('?').next().unwrap_or_default();
        if let Some(deployment) = crate::usage::azure_deployment(path) {
            return named(Cow::Borrowed(deployment));
        }
    }
    match body {
        Body::Absent => RequestModel::None,
        Body::Unseen
        | Body::Whole {
            compressed: true, ..
        } => RequestModel::Unreadable,
        // An object only: serde would also read a struct from a JSON array.
        Body::Whole { bytes, .. } if bytes.trim_ascii_start().first() != Some(&b'{') => {
            RequestModel::Unreadable
        }
        Body::Whole { bytes, .. } => match serde_json::from_slice::<ModelField<'_>>(bytes) {
            Ok(ModelField { model: Some(model) }) => named(model),
            _ => RequestModel::Unreadable,
        },
    }
}

fn named(name: Cow<'_, str>) -> RequestModel<'_> {
    if name.is_empty() || name.len() > MAX_MODEL_LEN {
        return RequestModel::Unreadable;
    }
    RequestModel::Named(name)
}

/// Only the `model` member of a JSON object; a second `model` is an error, not a choice.
#[derive(Deserialize)]
struct ModelField<'a> {
    #[serde(borrow, default)]
    model: Option<Cow<'a, str>>,
}

/// Why a request's model is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelRefusal {
    NotAllowed(String),
    Unreadable,
}

/// Checks the request's model against a consumer's list; an empty list allows every model.
pub fn check(allowed: &[ModelPattern], model: &RequestModel<'_>) -> Result<(), ModelRefusal> {
    if allowed.is_empty() {
        return Ok(());
    }
    match model {
        RequestModel::None => Ok(()),
        RequestModel::Unreadable => Err(ModelRefusal::Unreadable),
        RequestModel::Named(name) if allowed.iter().any(|p| p.matches(name)) => Ok(()),
        RequestModel::Named(name) => Err(ModelRefusal::NotAllowed(name.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> ModelPattern {
        s.parse().unwrap()
    }

    fn whole(bytes: &[u8]) -> Body<'_> {
        Body::Whole {
            bytes,
            compressed: false,
        }
    }

    #[test]
    fn patterns_match_whole_names() {
        assert!(p("gpt-4o-mini").matches("gpt-4o-mini"));
        assert!(!p("gpt-4o-mini").matches("gpt-4o-mini-2024-07-18"));
        assert!(!p("gpt-4o-mini").matches("GPT-4o-mini"));
        assert!(p("text-embedding-3-*").matches("text-embedding-3-small"));
        assert!(p("text-embedding-3-*").matches("text-embedding-3-"));
        assert!(!p("text-embedding-3-*").matches("text-embedding-ada-002"));
        assert!(p("claude-*-haiku-*").matches("claude-3-5-haiku-20241022"));
        assert!(!p("claude-*-haiku-*").matches("claude-3-5-sonnet-20241022"));
        assert!(p("*-mini").matches("o4-mini") && !p("*-mini").matches("o4-mini-high"));
        assert!(p("*").matches("anything"));
        assert!(p("a*a").matches("aa") && !p("a*a").matches("a"));
        assert_eq!(p("text-embedding-3-*").to_string(), "text-embedding-3-*");
        assert_eq!("".parse::<ModelPattern>(), Err(ModelPatternError::Empty));
        assert!("gpt 4".parse::<ModelPattern>().is_err());
    }

    #[test]
    fn reads_the_model_a_request_names() {
        let openai = ProviderKind::Openai;
        let path = "/v1/chat/completions";
        let model = |body| requested_model(openai, path, body);
        assert_eq!(
            model(whole(br#"{"model":"gpt-4o-mini","messages":[]}"#)).name(),
            Some("gpt-4o-mini")
        );
        assert_eq!(
            model(whole(br#"{"messages":[],"model":"gpt-\u0034o"}"#)).name(),
            Some("gpt-4o")
        );
        assert_eq!(model(Body::Absent), RequestModel::None);
        for unreadable in [
            whole(b"not json"),
            whole(br#"{"messages":[]}"#),
            whole(br#"{"model":42}"#),
            whole(br#"{"model":""}"#),
            whole(br#"[{"model":"gpt-4o-mini"}]"#),
            whole(br#"["gpt-4o-mini"]"#),
            whole(br#"{"model":null}"#),
            whole(br#"{"model":"gpt-4o-mini","model":"gpt-4.5-preview"}"#),
            Body::Whole {
                bytes: br#"{"model":"gpt-4o-mini"}"#,
                compressed: true,
            },
            Body::Unseen,
        ] {
            assert_eq!(
                model(unreadable),
                RequestModel::Unreadable,
                "{unreadable:?}"
            );
        }
        let long = format!(r#"{{"model":"{}"}}"#, "x".repeat(MAX_MODEL_LEN + 1));
        assert_eq!(model(whole(long.as_bytes())), RequestModel::Unreadable);
    }

    #[test]
    fn azure_names_its_model_in_the_path() {
        let azure = ProviderKind::AzureOpenai;
        let deployed = "/openai/deployments/gpt4o-prod/chat/completions?api-version=2024-10-21";
        let body = whole(br#"{"model":"something-else"}"#);
        assert_eq!(
            requested_model(azure, deployed, body).name(),
            Some("gpt4o-prod")
        );
        assert_eq!(
            requested_model(azure, "/openai/v1/chat/completions", body).name(),
            Some("something-else")
        );
        // Only Azure routes by deployment.
        assert_eq!(
            requested_model(ProviderKind::Openai, deployed, body).name(),
            Some("something-else")
        );
    }

    #[test]
    fn check_against_a_list() {
        let list = [p("gpt-4o-mini"), p("text-embedding-3-*")];
        let named = |s: &'static str| RequestModel::Named(Cow::Borrowed(s));
        assert_eq!(check(&list, &named("gpt-4o-mini")), Ok(()));
        assert_eq!(check(&list, &named("text-embedding-3-large")), Ok(()));
        assert_eq!(
            check(&list, &named("gpt-4.5-preview")),
            Err(ModelRefusal::NotAllowed("gpt-4.5-preview".into()))
        );
        assert_eq!(
            check(&list, &RequestModel::Unreadable),
            Err(ModelRefusal::Unreadable)
        );
        assert_eq!(check(&list, &RequestModel::None), Ok(()));
        assert_eq!(check(&[], &RequestModel::Unreadable), Ok(()));
    }
}
