//! Workload identities: SPIFFE IDs (`spiffe://cluster.local/ns/ml/sa/trainer`) as Envoy reports
//! the peer of a verified mTLS connection, and the patterns a consumer lists to name the
//! workloads it belongs to. A pattern is a SPIFFE ID in which any path segment may be `*`
//! (exactly one segment): `spiffe://cluster.local/ns/ml/sa/*` is every service account of the
//! namespace `ml`, `spiffe://cluster.local/ns/*/sa/trainer` the service account `trainer` in
//! any namespace. The trust domain is always literal.

pub mod xfcc;

use std::fmt;
use std::str::FromStr;

/// Longest SPIFFE ID accepted, in bytes (the SPIFFE specification's bound).
pub const MAX_LEN: usize = 2048;

const SCHEME: &str = "spiffe://";

/// Why a text is not a SPIFFE ID or identity pattern.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("must start with \"spiffe://\"")]
    Scheme,
    #[error("is longer than {MAX_LEN} bytes")]
    TooLong,
    #[error("trust domain {0:?} must be lowercase letters, digits, '.', '-' or '_'")]
    TrustDomain(String),
    #[error("needs a path after the trust domain, e.g. spiffe://cluster.local/ns/NAMESPACE/sa/SERVICE_ACCOUNT")]
    NoPath,
    #[error("path segment {0:?} must be letters, digits, '.', '-' or '_' (and not '.' or '..')")]
    Segment(String),
    #[error("'*' must be a whole path segment")]
    PartialWildcard,
}

/// A verified workload identity: a syntactically valid SPIFFE ID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpiffeId<'a> {
    text: &'a str,
}

impl<'a> SpiffeId<'a> {
    /// Parses an identity as Envoy or a trusted proxy reports it; anything else (a DNS name,
    /// a certificate subject, a malformed URI) is not an identity.
    pub fn parse(text: &'a str) -> Result<Self, IdentityError> {
        let (_, segments) = split(text)?;
        if let Some(bad) = segments.iter().find(|s| !valid_segment(s)) {
            return Err(IdentityError::Segment(bad.to_string()));
        }
        Ok(SpiffeId { text })
    }

    pub fn as_str(&self) -> &'a str {
        self.text
    }
}

impl fmt::Display for SpiffeId<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.text)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Segment {
    Literal(String),
    /// `*`: exactly one segment.
    Any,
}

/// One identity a consumer lists: an exact SPIFFE ID or a pattern with `*` segments.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdentityPattern {
    trust_domain: String,
    segments: Vec<Segment>,
}

impl IdentityPattern {
    /// Whether `id` is one of the identities this pattern names.
    pub fn matches(&self, id: &SpiffeId<'_>) -> bool {
        let Ok((domain, segments)) = split(id.as_str()) else {
            return false;
        };
        domain == self.trust_domain
            && segments.len() == self.segments.len()
            && segments.iter().zip(&self.segments).all(|(s, p)| match p {
                Segment::Any => true,
                Segment::Literal(l) => l == s,
            })
    }

    /// An exact SPIFFE ID (no `*`).
    pub fn is_exact(&self) -> bool {
        self.segments
            .iter()
            .all(|s| matches!(s, Segment::Literal(_)))
    }

    /// How many path segments are literal: of two patterns that match an identity, the one
    /// with more literal segments is the more specific.
    pub fn specificity(&self) -> usize {
        self.segments
            .iter()
            .filter(|s| matches!(s, Segment::Literal(_)))
            .count()
    }

    /// Whether some identity matches both patterns.
    pub fn overlaps(&self, other: &IdentityPattern) -> bool {
        self.trust_domain == other.trust_domain
            && self.segments.len() == other.segments.len()
            && self
                .segments
                .iter()
                .zip(&other.segments)
                .all(|(a, b)| match (a, b) {
                    (Segment::Literal(x), Segment::Literal(y)) => x == y,
                    _ => true,
                })
    }
}

impl FromStr for IdentityPattern {
    type Err = IdentityError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (domain, raw) = split(text)?;
        let mut segments = Vec::with_capacity(raw.len());
        for segment in raw {
            segments.push(match segment {
                "*" => Segment::Any,
                s if s.contains('*') => return Err(IdentityError::PartialWildcard),
                s if valid_segment(s) => Segment::Literal(s.to_string()),
                s => return Err(IdentityError::Segment(s.to_string())),
            });
        }
        Ok(IdentityPattern {
            trust_domain: domain.to_string(),
            segments,
        })
    }
}

impl fmt::Display for IdentityPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SCHEME}{}", self.trust_domain)?;
        for segment in &self.segments {
            f.write_str("/")?;
            f.write_str(match segment {
                Segment::Literal(l) => l,
                Segment::Any => "*",
            })?;
        }
        Ok(())
    }
}

impl<'de> serde::Deserialize<'de> for IdentityPattern {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The trust domain and the path segments of a SPIFFE ID; segments are not checked here.
fn split(text: &str) -> Result<(&str, Vec<&str>), IdentityError> {
    if text.len() > MAX_LEN {
        return Err(IdentityError::TooLong);
    }
    let rest = text.strip_prefix(SCHEME).ok_or(IdentityError::Scheme)?;
    let (domain, path) = rest.split_once('/').ok_or(IdentityError::NoPath)?;
    let domain_ok = !domain.is_empty()
        && domain.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_')
        });
    if !domain_ok {
        return Err(IdentityError::TrustDomain(domain.to_string()));
    }
    if path.is_empty() {
        return Err(IdentityError::NoPath);
    }
    Ok((domain, path.split('/').collect()))
}

fn valid_segment(segment: &str) -> bool {
    !segment.is_empty()
        && segment != "."
        && segment != ".."
        && segment
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(text: &str) -> SpiffeId<'_> {
        SpiffeId::parse(text).unwrap()
    }

    fn pattern(text: &str) -> IdentityPattern {
        text.parse().unwrap()
    }

    #[test]
    fn exact_namespace_and_service_account_patterns() {
        let trainer = id("spiffe://cluster.local/ns/ml/sa/trainer");
        assert!(pattern("spiffe://cluster.local/ns/ml/sa/trainer").matches(&trainer));
        assert!(pattern("spiffe://cluster.local/ns/ml/sa/*").matches(&trainer));
        assert!(pattern("spiffe://cluster.local/ns/*/sa/trainer").matches(&trainer));
        assert!(!pattern("spiffe://cluster.local/ns/ml/sa/other").matches(&trainer));
        assert!(!pattern("spiffe://cluster.local/ns/ml2/sa/*").matches(&trainer));
        // A segment wildcard is one segment: neither shorter nor longer identities match.
        assert!(!pattern("spiffe://cluster.local/ns/ml/*").matches(&trainer));
        assert!(!pattern("spiffe://cluster.local/ns/ml/sa/trainer/*").matches(&trainer));
        // The trust domain is part of the identity.
        assert!(!pattern("spiffe://other.local/ns/ml/sa/trainer").matches(&trainer));
        // Paths are case-sensitive.
        assert!(!pattern("spiffe://cluster.local/ns/ML/sa/trainer").matches(&trainer));
    }

    #[test]
    fn malformed_identities_are_not_identities() {
        for bad in [
            "",
            "cluster.local/ns/ml/sa/x",
            "https://cluster.local/ns/ml",
            "spiffe://",
            "spiffe://cluster.local",
            "spiffe://cluster.local/",
            "spiffe://Cluster.local/ns/x",
            "spiffe://cluster.local/ns//sa/x",
            "spiffe://cluster.local/ns/../sa/x",
            "spiffe://cluster.local/ns/ml/sa/x?y",
            "spiffe://cluster.local/ns/ml/sa/*",
            "spiffe://cluster.local/ns/ml/sa/x/",
        ] {
            assert!(SpiffeId::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            SpiffeId::parse(&format!("spiffe://a/{}", "x".repeat(MAX_LEN))),
            Err(IdentityError::TooLong)
        );
    }

    #[test]
    fn pattern_errors_say_what_is_wrong() {
        let err = |t: &str| t.parse::<IdentityPattern>().unwrap_err();
        assert_eq!(err("cluster.local/ns/x"), IdentityError::Scheme);
        assert_eq!(
            err("spiffe://cluster.local/ns/ml/sa/train*"),
            IdentityError::PartialWildcard
        );
        assert_eq!(err("spiffe://cluster.local"), IdentityError::NoPath);
        assert!(matches!(
            err("spiffe://*/ns/x"),
            IdentityError::TrustDomain(_)
        ));
        assert_eq!(
            pattern("spiffe://cluster.local/ns/ml/sa/*").to_string(),
            "spiffe://cluster.local/ns/ml/sa/*"
        );
    }

    #[test]
    fn specificity_and_overlap() {
        let exact = pattern("spiffe://td/ns/ml/sa/a");
        let namespace = pattern("spiffe://td/ns/ml/sa/*");
        let account = pattern("spiffe://td/ns/*/sa/a");
        assert!(exact.is_exact() && !namespace.is_exact());
        assert!(exact.specificity() > namespace.specificity());
        assert_eq!(namespace.specificity(), account.specificity());
        assert!(namespace.overlaps(&account) && account.overlaps(&exact));
        assert!(!namespace.overlaps(&pattern("spiffe://td/ns/other/sa/*")));
        assert!(!namespace.overlaps(&pattern("spiffe://td/ns/ml/sa/*/x")));
    }
}
