//! What a consumer may call: `METHOD /path` patterns matched against the normalized path.
//!
//! Scope is deny by default. Endpoints that can leak or destroy data or run up unbounded cost
//! (fine-tuning, files, batches, organization administration) stay denied even under a
//! wildcard: a route must name them literally.

use std::fmt;
use std::str::FromStr;

const METHODS: [&str; 7] = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"];

/// Path prefixes (as segments) that only a literal route may open.
const SENSITIVE: &[&[&str]] = &[
    &["v1", "fine_tuning"],
    &["v1", "fine-tunes"],
    &["v1", "finetuning"],
    &["v1", "files"],
    &["v1", "uploads"],
    &["v1", "batches"],
    &["v1", "messages", "batches"],
    &["v1", "organization"],
    &["v1", "organizations"],
    &["v1", "datasets"],
    // Azure OpenAI: the same endpoints under /openai (classic) and /openai/v1.
    &["openai", "files"],
    &["openai", "uploads"],
    &["openai", "fine_tuning"],
    &["openai", "fine-tunes"],
    &["openai", "batches"],
    &["openai", "v1", "files"],
    &["openai", "v1", "uploads"],
    &["openai", "v1", "fine_tuning"],
    &["openai", "v1", "batches"],
];

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Segment {
    Literal(String),
    /// `*`: exactly one segment.
    One,
    /// `**` (last only): zero or more segments.
    Rest,
}

/// One allowed route, e.g. `POST /v1/chat/completions` or `GET /v1/models/**`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RoutePattern {
    /// `None` means any method (`*`).
    method: Option<&'static str>,
    segments: Vec<Segment>,
}

/// Why a route pattern in config is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("expected \"METHOD /path\", e.g. \"POST /v1/chat/completions\"")]
    Shape,
    #[error("unknown method {0:?} (use one of GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS or *)")]
    Method(String),
    #[error("path pattern must start with '/'")]
    NotAbsolute,
    #[error("'**' may only be the last segment")]
    RestNotLast,
    #[error("segment {0:?} has characters that never appear in a normalized path")]
    BadSegment(String),
}

impl FromStr for RoutePattern {
    type Err = RouteError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut parts = s.split_whitespace();
        let (Some(method), Some(path), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(RouteError::Shape);
        };
        let method = match method {
            "*" => None,
            m => Some(
                *METHODS
                    .iter()
                    .find(|known| **known == m)
                    .ok_or_else(|| RouteError::Method(m.to_string()))?,
            ),
        };
        if !path.starts_with('/') {
            return Err(RouteError::NotAbsolute);
        }
        let raw: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let mut segments = Vec::with_capacity(raw.len());
        for (i, seg) in raw.iter().enumerate() {
            segments.push(match *seg {
                "*" => Segment::One,
                "**" if i + 1 == raw.len() => Segment::Rest,
                "**" => return Err(RouteError::RestNotLast),
                lit if lit == "."
                    || lit == ".."
                    || !lit.bytes().all(|b| (0x21..0x7f).contains(&b) && b != b'\\') =>
                {
                    return Err(RouteError::BadSegment(lit.to_string()))
                }
                lit => Segment::Literal(lit.to_string()),
            });
        }
        Ok(RoutePattern { method, segments })
    }
}

impl fmt::Display for RoutePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.method.unwrap_or("*"))?;
        f.write_str(" ")?;
        if self.segments.is_empty() {
            return f.write_str("/");
        }
        for seg in &self.segments {
            f.write_str("/")?;
            f.write_str(match seg {
                Segment::Literal(l) => l,
                Segment::One => "*",
                Segment::Rest => "**",
            })?;
        }
        Ok(())
    }
}

impl<'de> serde::Deserialize<'de> for RoutePattern {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl RoutePattern {
    fn matches(&self, method: &str, path: &[&str]) -> bool {
        if self.method.is_some_and(|m| m != method) {
            return false;
        }
        let mut i = 0;
        for seg in &self.segments {
            match seg {
                Segment::Rest => return true,
                Segment::One if i < path.len() => i += 1,
                Segment::Literal(l) if path.get(i) == Some(&l.as_str()) => i += 1,
                _ => return false,
            }
        }
        i == path.len()
    }

    /// True when the pattern's literal prefix spells out `prefix`.
    fn names(&self, prefix: &[&str]) -> bool {
        prefix.len() <= self.segments.len()
            && prefix
                .iter()
                .zip(&self.segments)
                .all(|(want, seg)| matches!(seg, Segment::Literal(l) if l == want))
    }
}

/// Why a request falls outside a consumer's scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScopeDenial {
    /// No route allows this method and path.
    NotAllowed,
    /// A wildcard would allow it, but sensitive endpoints must be named literally.
    SensitiveNotNamed,
}

/// Checks a normalized path against a consumer's routes.
pub fn check(
    routes: &[RoutePattern],
    method: &str,
    normalized_path: &str,
) -> Result<(), ScopeDenial> {
    let segments: Vec<&str> = normalized_path
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let sensitive = sensitive_prefix(&segments);
    let mut wildcard_hit = false;
    for route in routes.iter().filter(|r| r.matches(method, &segments)) {
        match sensitive {
            Some(prefix) if !route.names(prefix) => wildcard_hit = true,
            _ => return Ok(()),
        }
    }
    Err(if wildcard_hit {
        ScopeDenial::SensitiveNotNamed
    } else {
        ScopeDenial::NotAllowed
    })
}

/// The sensitive endpoint a path reaches, matched the way providers route: case-insensitive,
/// ignoring `;parameters` and trailing dots or spaces on a segment (`/v1/Files`,
/// `/openai/FILES`, `/v1/files;x` and `/v1/files.` all reach the files API).
fn sensitive_prefix(segments: &[&str]) -> Option<&'static &'static [&'static str]> {
    SENSITIVE.iter().find(|prefix| {
        segments.len() >= prefix.len()
            && prefix
                .iter()
                .zip(segments)
                .all(|(want, seg)| same_endpoint(seg, want))
    })
}

/// Whether a path segment names the endpoint `want` (lowercase), as a provider would route it.
fn same_endpoint(segment: &str, want: &str) -> bool {
    let mut s = segment.split(';').next().unwrap_or_default();
    loop {
        let trimmed = s.trim_end_matches(['.', ' ']);
        match trimmed.strip_suffix("%20") {
            Some(rest) => s = rest,
            None => {
                s = trimmed;
                break;
            }
        }
    }
    s.eq_ignore_ascii_case(want)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routes(list: &[&str]) -> Vec<RoutePattern> {
        list.iter().map(|r| r.parse().unwrap()).collect()
    }

    #[test]
    fn parses_and_displays_patterns() {
        for text in [
            "POST /v1/chat/completions",
            "* /v1/**",
            "GET /v1/models/*",
            "GET /",
        ] {
            assert_eq!(text.parse::<RoutePattern>().unwrap().to_string(), text);
        }
    }

    #[test]
    fn rejects_bad_patterns_precisely() {
        assert_eq!(
            "POTS /v1".parse::<RoutePattern>().unwrap_err(),
            RouteError::Method("POTS".into())
        );
        assert_eq!(
            "/v1".parse::<RoutePattern>().unwrap_err(),
            RouteError::Shape
        );
        assert_eq!(
            "GET v1".parse::<RoutePattern>().unwrap_err(),
            RouteError::NotAbsolute
        );
        assert_eq!(
            "GET /**/x".parse::<RoutePattern>().unwrap_err(),
            RouteError::RestNotLast
        );
        assert!(matches!(
            "GET /v1/../x".parse::<RoutePattern>(),
            Err(RouteError::BadSegment(_))
        ));
        assert_eq!(
            "POTS /v1".parse::<RoutePattern>().unwrap_err().to_string(),
            "unknown method \"POTS\" (use one of GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS or *)"
        );
    }

    #[test]
    fn matches_method_literals_and_wildcards() {
        let r = routes(&["POST /v1/chat/completions", "GET /v1/models/*"]);
        assert_eq!(check(&r, "POST", "/v1/chat/completions"), Ok(()));
        assert_eq!(
            check(&r, "GET", "/v1/chat/completions"),
            Err(ScopeDenial::NotAllowed)
        );
        assert_eq!(
            check(&r, "POST", "/v1/chat/completions/x"),
            Err(ScopeDenial::NotAllowed)
        );
        assert_eq!(check(&r, "GET", "/v1/models/gpt-4o"), Ok(()));
        assert_eq!(check(&r, "GET", "/v1/models"), Err(ScopeDenial::NotAllowed));
        assert_eq!(
            check(&r, "GET", "/v1/models/a/b"),
            Err(ScopeDenial::NotAllowed)
        );
    }

    #[test]
    fn sensitive_endpoints_need_a_literal_route() {
        let wide = routes(&["* /v1/**", "GET /v1/*"]);
        assert_eq!(check(&wide, "POST", "/v1/embeddings"), Ok(()));
        for path in [
            "/v1/files",
            "/v1/files/abc/content",
            "/v1/fine_tuning/jobs",
            "/v1/batches",
            "/v1/organization/api_keys",
            "/v1/messages/batches",
        ] {
            assert_eq!(
                check(&wide, "GET", path),
                Err(ScopeDenial::SensitiveNotNamed),
                "{path}"
            );
        }
        let named = routes(&["GET /v1/files/**", "POST /v1/fine_tuning/jobs"]);
        assert_eq!(check(&named, "GET", "/v1/files/abc"), Ok(()));
        assert_eq!(check(&named, "POST", "/v1/fine_tuning/jobs"), Ok(()));
        assert_eq!(
            check(&named, "GET", "/v1/fine_tuning/jobs"),
            Err(ScopeDenial::NotAllowed)
        );
    }

    #[test]
    fn sensitive_endpoints_are_recognised_however_a_client_spells_them() {
        let wide = routes(&["* /v1/**", "* /openai/**"]);
        for path in [
            "/v1/Files",
            "/v1/FILES/file-abc",
            "/openai/FILES",
            "/v1/files;x",
            "/v1/files.",
            "/v1/files%20",
            "/v1/Fine_Tuning/jobs",
            "/openai/v1/Batches",
        ] {
            assert_eq!(
                check(&wide, "POST", path),
                Err(ScopeDenial::SensitiveNotNamed),
                "{path}"
            );
        }
        assert_eq!(check(&wide, "POST", "/v1/filesystem"), Ok(()));
    }

    #[test]
    fn azure_sensitive_endpoints_need_a_literal_route() {
        let wide = routes(&["* /openai/**"]);
        assert_eq!(
            check(&wide, "POST", "/openai/deployments/gpt-4o/chat/completions"),
            Ok(())
        );
        for path in [
            "/openai/files",
            "/openai/files/file-1/content",
            "/openai/fine_tuning/jobs",
            "/openai/batches",
            "/openai/uploads",
            "/openai/v1/files",
            "/openai/v1/fine_tuning/jobs",
            "/openai/v1/batches",
        ] {
            assert_eq!(
                check(&wide, "POST", path),
                Err(ScopeDenial::SensitiveNotNamed),
                "{path}"
            );
        }
        let named = routes(&["GET /openai/files"]);
        assert_eq!(check(&named, "GET", "/openai/files"), Ok(()));
    }

    #[test]
    fn empty_scope_denies_everything() {
        assert_eq!(check(&[], "GET", "/"), Err(ScopeDenial::NotAllowed));
    }
}
