//! GitHub secret-scanning partner alerts: the request body (a JSON list of
//! `{token, type, url, source}`) read into [`Leak`]s, and the answer GitHub takes back (a list
//! of `{token_hash, token_type, label}`).
//!
//! The label says only whether the token is a well-formed keygate key (its checksum holds):
//! `true_positive` for every one, known, unknown or already revoked alike, so the answer
//! never tells whether a key exists. The token itself is never echoed, only its SHA-256.

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::report::{find_keys, leak_of, Leak, LeakLocation, Scanner};

/// Why an alert body could not be read.
#[derive(Debug, thiserror::Error)]
#[error("not a secret-scanning alert: {0}")]
pub struct AlertError(String);

/// One match in an alert.
#[derive(Deserialize)]
struct Item {
    token: SecretString,
    #[serde(default, rename = "type")]
    kind: String,
    #[serde(default)]
    url: String,
    #[serde(default)]
    source: String,
}

/// What GitHub gets back for one match.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct Feedback {
    pub token_hash: String,
    pub token_type: String,
    pub label: &'static str,
}

/// The leaks in an alert body, and the feedback for each match (in order).
pub fn read_alert(body: &[u8]) -> Result<(Vec<Leak>, Vec<Feedback>), AlertError> {
    let items: Vec<Item> =
        serde_json::from_slice(body).map_err(|e| AlertError(classify(&e).into()))?;
    let mut leaks = Vec::new();
    let mut feedback = Vec::with_capacity(items.len());
    for item in items {
        let token = item.token.expose_secret();
        let key = find_keys(token).into_iter().find(|k| *k == token.trim());
        let location = location_of(&item.url, &item.source);
        if let Some(leak) = key.and_then(|k| leak_of(k, Scanner::Github, location)) {
            leaks.push(leak);
        }
        feedback.push(Feedback {
            token_hash: hex::encode(Sha256::digest(token.as_bytes())),
            token_type: item.kind.chars().take(128).collect(),
            label: if key.is_some() {
                "true_positive"
            } else {
                "false_positive"
            },
        });
    }
    Ok((leaks, feedback))
}

/// The error's category only: serde's message could quote the body (and so a token).
fn classify(e: &serde_json::Error) -> &'static str {
    match e.classify() {
        serde_json::error::Category::Io => "unreadable",
        serde_json::error::Category::Syntax => "invalid JSON",
        serde_json::error::Category::Data => "expected a list of {token, type, url, source}",
        serde_json::error::Category::Eof => "truncated JSON",
    }
}

/// The location an alert's `url` and `source` give. A GitHub file URL
/// (`https://github.com/OWNER/REPO/blob/COMMIT/PATH`) also names the repository, the commit and
/// the file; a commit URL (`…/commit/COMMIT`) the repository and the commit.
pub fn location_of(url: &str, source: &str) -> LeakLocation {
    let mut location = LeakLocation {
        url: Some(url.to_string()).filter(|u| !u.is_empty()),
        kind: Some(source.to_ascii_lowercase()).filter(|s| !s.is_empty()),
        ..LeakLocation::default()
    };
    if let Ok(parsed) = url::Url::parse(url) {
        if parsed.host_str() == Some("github.com") {
            let segments: Vec<&str> = parsed
                .path_segments()
                .map(Iterator::collect)
                .unwrap_or_default();
            if let [owner, repo, rest @ ..] = segments.as_slice() {
                location.repository = Some(format!("{owner}/{repo}"));
                match rest {
                    ["blob", commit, path @ ..] if !path.is_empty() => {
                        location.commit = Some((*commit).to_string());
                        location.file = Some(path.join("/"));
                    }
                    ["commit", commit, ..] => location.commit = Some((*commit).to_string()),
                    _ => {}
                }
            }
        }
    }
    location
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::key::{generate, reveal, KeyEnv};
    use crate::auth::KeyHash;

    #[test]
    fn an_alert_reads_into_leaks_with_the_location_and_labels_by_shape_only() {
        let secret = generate(KeyEnv::Live).unwrap();
        let k = reveal(&secret);
        let body = format!(
            r#"[{{"token":"{k}","type":"keygate_consumer_key","url":"https://github.com/octo/app/blob/0123456789abcdef0123456789abcdef01234567/config/.env","source":"content"}},
               {{"token":"kg_live_notakey","type":"keygate_consumer_key","url":"","source":"commit"}}]"#
        );
        let (leaks, feedback) = read_alert(body.as_bytes()).unwrap();
        assert_eq!(leaks.len(), 1);
        let leak = &leaks[0];
        assert_eq!(leak.hash, KeyHash::of(k));
        assert_eq!(leak.location.repository.as_deref(), Some("octo/app"));
        assert_eq!(leak.location.file.as_deref(), Some("config/.env"));
        assert_eq!(leak.location.kind.as_deref(), Some("content"));
        assert_eq!(leak.location.commit.as_deref().map(str::len), Some(40));
        assert_eq!(feedback[0].label, "true_positive");
        assert_eq!(feedback[1].label, "false_positive");
        assert_eq!(
            feedback[0].token_hash,
            hex::encode(Sha256::digest(k.as_bytes()))
        );
        let answer = serde_json::to_string(&feedback).unwrap();
        assert!(!answer.contains(k), "the token is never echoed");
    }

    #[test]
    fn a_bad_body_names_no_token() {
        let secret = generate(KeyEnv::Live).unwrap();
        let k = reveal(&secret);
        for body in [
            format!(r#"[{{"token":"{k}""#),
            format!(r#"{{"token":"{k}"}}"#),
        ] {
            let e = read_alert(body.as_bytes()).err().unwrap().to_string();
            assert!(!e.contains(&k[8..]), "{e}");
        }
    }
}
