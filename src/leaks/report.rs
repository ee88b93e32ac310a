//! One leaked key as a scanner reports it: the key's hash (never the key), and where it was
//! found. Locations come from outside (a GitHub alert, a gitleaks report), so every field is
//! cleaned before it can reach an audit line or a notification: no keys, no credentials in
//! URLs, no control characters, bounded lengths.

use serde::Serialize;

use crate::auth::hash::KeyHash;
use crate::auth::key::{self, KeyEnv};

/// Longest key text: `kg_live_` + 30 + `_` + 6.
const KEY_LEN: usize = 45;
/// Longest location field kept.
const MAX_FIELD: usize = 512;

/// Which scanner reported the leak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scanner {
    /// GitHub's secret-scanning partner alerts.
    Github,
    /// A gitleaks JSON report (`keygate leaks report`).
    Gitleaks,
}

impl Scanner {
    pub fn as_str(self) -> &'static str {
        match self {
            Scanner::Github => "github",
            Scanner::Gitleaks => "gitleaks",
        }
    }
}

/// Where a leaked key was found; every field cleaned (see the module docs).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LeakLocation {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The scanner's own word for where it looked (GitHub's `source`: `content`, `commit`,
    /// `issue_comment`, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

impl LeakLocation {
    /// Cleans every field: see [`clean_text`], [`clean_commit`] and [`clean_url`].
    pub fn cleaned(self) -> Self {
        LeakLocation {
            repository: self.repository.as_deref().and_then(clean_text),
            file: self.file.as_deref().and_then(clean_text),
            line: self.line.filter(|l| *l > 0),
            commit: self.commit.as_deref().and_then(clean_commit),
            url: self.url.as_deref().and_then(clean_url),
            kind: self.kind.as_deref().and_then(clean_text),
        }
    }

    /// `repository file:line @commit (url)`, for one-line summaries.
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        if let Some(r) = &self.repository {
            parts.push(r.clone());
        }
        match (&self.file, self.line) {
            (Some(f), Some(l)) => parts.push(format!("{f}:{l}")),
            (Some(f), None) => parts.push(f.clone()),
            _ => {}
        }
        if let Some(c) = &self.commit {
            parts.push(format!("@{}", &c[..c.len().min(12)]));
        }
        if let Some(u) = &self.url {
            parts.push(format!("({u})"));
        }
        if parts.is_empty() {
            "an unknown location".into()
        } else {
            parts.join(" ")
        }
    }
}

/// A leaked keygate key: its hash and environment (enough to find it), and where it was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leak {
    pub hash: KeyHash,
    pub env: KeyEnv,
    pub scanner: Scanner,
    pub location: LeakLocation,
}

/// Every well-formed keygate key (valid checksum) in `text`, each once.
pub fn find_keys(text: &str) -> Vec<&str> {
    let mut found: Vec<&str> = Vec::new();
    let bytes = text.as_bytes();
    let mut at = 0;
    while let Some(i) = text[at..].find("kg_").map(|i| i + at) {
        let glued = i > 0 && (bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_');
        let end = i + KEY_LEN;
        let candidate = text.get(i..end.min(text.len())).unwrap_or_default();
        let glued_after = bytes
            .get(end)
            .is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'_');
        if !glued && !glued_after && key::parse(candidate).is_ok() {
            if !found.contains(&candidate) {
                found.push(candidate);
            }
            at = end;
        } else {
            at = i + 3;
        }
    }
    found
}

/// A leak of `key_text` (a well-formed key) found at `location`.
pub fn leak_of(key_text: &str, scanner: Scanner, location: LeakLocation) -> Option<Leak> {
    let parsed = key::parse(key_text).ok()?;
    Some(Leak {
        hash: KeyHash::of(parsed.as_str()),
        env: parsed.env,
        scanner,
        location: location.cleaned(),
    })
}

/// Free text from a report: keys and long secret-looking tokens removed (the same rule as
/// the audit log's), control characters dropped, at most 512 characters; None when empty.
pub fn clean_text(text: &str) -> Option<String> {
    let cleaned: String = crate::notify::redact::redact(text)
        .chars()
        .take(MAX_FIELD)
        .collect();
    let cleaned = cleaned.trim().to_string();
    (!cleaned.is_empty()).then_some(cleaned)
}

/// A commit id: 7 to 64 hex digits, lowercased; anything else is dropped.
pub fn clean_commit(text: &str) -> Option<String> {
    let t = text.trim();
    ((7..=64).contains(&t.len()) && t.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| t.to_ascii_lowercase())
}

/// An http(s) URL without user info, query or fragment (they can carry credentials), whose
/// path holds no keygate key; anything else is dropped.
pub fn clean_url(text: &str) -> Option<String> {
    let mut url = url::Url::parse(text.trim()).ok()?;
    if !matches!(url.scheme(), "http" | "https") {
        return None;
    }
    url.set_query(None);
    url.set_fragment(None);
    url.set_username("").ok()?;
    url.set_password(None).ok()?;
    let text = url.to_string();
    let lower = text.to_ascii_lowercase();
    if lower.contains("kg_live_") || lower.contains("kg_test_") || text.len() > MAX_FIELD {
        return None;
    }
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::key::{generate, reveal};

    #[test]
    fn keys_are_found_once_with_a_valid_checksum_and_not_glued_into_words() {
        let secret = generate(KeyEnv::Live).unwrap();
        let k = reveal(&secret);
        let mut typo = k.to_string();
        typo.replace_range(10..11, if &k[10..11] == "A" { "B" } else { "A" });
        let text = format!("API_KEY={k}\n\"{k}\" {typo} x{k} {k}_tail");
        assert_eq!(find_keys(&text), vec![k]);
        assert!(find_keys("kg_live_").is_empty());
        assert!(find_keys("kg_").is_empty());
    }

    #[test]
    fn locations_lose_keys_credentials_and_control_characters() {
        let secret = generate(KeyEnv::Test).unwrap();
        let k = reveal(&secret);
        let location = LeakLocation {
            repository: Some(format!("octo/repo\n{k}")),
            file: Some("config/.env".into()),
            line: Some(0),
            commit: Some("0123456789ABCDEF0123456789abcdef01234567".into()),
            url: Some(format!(
                "https://user:pass@github.com/octo/repo/blob/abc/f?token={k}#L1"
            )),
            kind: Some("content".into()),
        }
        .cleaned();
        let json = serde_json::to_string(&location).unwrap();
        assert!(!json.contains(&k[8..38]), "{json}");
        assert!(!json.contains("pass") && !json.contains("token="), "{json}");
        assert_eq!(location.line, None);
        assert_eq!(
            location.commit.as_deref(),
            Some("0123456789abcdef0123456789abcdef01234567")
        );
        assert_eq!(
            location.url.as_deref(),
            Some("https://github.com/octo/repo/blob/abc/f")
        );
        assert_eq!(clean_commit("not-a-commit"), None);
        assert_eq!(clean_url("javascript:alert(1)"), None);
        assert_eq!(clean_url(&format!("https://x.example/{k}")), None);
        assert!(location.summary().contains("config/.env"));
    }
}
