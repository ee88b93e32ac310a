//! Keeping secrets out of everything keygate sends or records: key ids instead of keys, and
//! redaction of free text (reasons, actors, request lines) before it reaches a webhook or the
//! audit log. Shared by [`crate::notify`] and [`crate::audit`].

use std::str::FromStr;

use serde::Serialize;

use crate::auth::KeyHash;

/// Free text longer than this is cut (reasons, actors, request lines).
pub const MAX_TEXT: usize = 1024;

/// A short, non-secret key identifier: `kid_` followed by 12 lowercase hex digits (the first
/// 6 bytes of the key's SHA-256), as printed by `keygate keys create`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct KeyId(String);

/// Why a string is not a key id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a key id is kid_ followed by 12 lowercase hex digits")]
pub struct KeyIdError;

impl KeyId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for KeyId {
    type Err = KeyIdError;

    fn from_str(s: &str) -> Result<Self, KeyIdError> {
        let hex = s.strip_prefix("kid_").ok_or(KeyIdError)?;
        if hex.len() == 12 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            Ok(KeyId(s.to_string()))
        } else {
            Err(KeyIdError)
        }
    }
}

impl From<&KeyHash> for KeyId {
    fn from(hash: &KeyHash) -> Self {
        KeyId(hash.key_id())
    }
}

impl std::fmt::Display for KeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Replaces anything that could be a credential with `[redacted]`: keygate keys, `sk-`/`sk_`
/// provider keys, and any token of 32+ characters mixing letters and digits (hashes, base64,
/// JWTs). Key ids and ordinary words pass. Also cuts the text to 1024 characters.
pub fn redact(text: &str) -> String {
    let is_token = |c: char| c.is_ascii_alphanumeric() || "_-+=.".contains(c);
    let secret = |t: &str| {
        let lower = t.to_ascii_lowercase();
        lower.contains("kg_live_")
            || lower.contains("kg_test_")
            || ((t.starts_with("sk-") || t.starts_with("sk_")) && t.len() >= 20)
            || (t.len() >= 32
                && t.bytes().any(|b| b.is_ascii_digit())
                && t.bytes().any(|b| b.is_ascii_alphabetic()))
    };
    let mut out = String::with_capacity(text.len().min(MAX_TEXT));
    let mut rest = text;
    while let Some(start) = rest.find(is_token) {
        out.push_str(&rest[..start]);
        rest = &rest[start..];
        let end = rest.find(|c: char| !is_token(c)).unwrap_or(rest.len());
        let token = &rest[..end];
        out.push_str(if secret(token) { "[redacted]" } else { token });
        rest = &rest[end..];
    }
    out.push_str(rest);
    out.chars()
        .filter(|c| !c.is_control() || *c == ' ')
        .take(MAX_TEXT)
        .collect()
}
