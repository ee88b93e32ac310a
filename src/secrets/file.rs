//! The embedded-default credential source: a YAML file mapping references to keys.
//!
//! ```yaml
//! openai/production:
//!   api_key: sk-proj-…
//!   owner: ml-platform   # optional metadata, ignored by the request path
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::{Credential, CredentialSource, SecretError};

#[derive(Deserialize)]
struct Entry {
    api_key: SecretString,
    #[serde(flatten)]
    metadata: BTreeMap<String, serde_yaml::Value>,
}

impl Entry {
    fn credential(&self) -> Credential {
        let mut credential = Credential::new(SecretString::from(
            self.api_key.expose_secret().trim().to_string(),
        ));
        credential.meta = super::public_meta(self.metadata.iter().map(|(k, v)| {
            let text = serde_json::to_value(v)
                .ok()
                .as_ref()
                .and_then(super::scalar_text);
            (k.as_str(), text)
        }));
        credential
    }
}

#[derive(Debug)]
pub struct FileSource {
    path: PathBuf,
}

impl FileSource {
    pub fn new(path: PathBuf) -> Self {
        FileSource { path }
    }

    fn read(&self) -> Result<BTreeMap<String, Entry>, SecretError> {
        let shown = self.path.display().to_string();
        let text = std::fs::read_to_string(&self.path).map_err(|e| SecretError::Io {
            path: shown.clone(),
            reason: e.to_string(),
        })?;
        let de = serde_yaml::Deserializer::from_str(&text);
        serde_path_to_error::deserialize(de).map_err(|e| {
            let at = e.path().to_string();
            SecretError::Format {
                path: shown,
                reason: format!("{at}: {}", first_clause(&e.into_inner().to_string())),
            }
        })
    }
}

/// Keep serde's error category and location but nothing that could quote file content.
fn first_clause(message: &str) -> String {
    message
        .split(", expected")
        .next()
        .unwrap_or(message)
        .to_string()
}

#[async_trait::async_trait]
impl CredentialSource for FileSource {
    async fn load(
        &self,
        references: &[Arc<str>],
    ) -> Vec<(Arc<str>, Result<Credential, SecretError>)> {
        let entries = match self.read() {
            Ok(entries) => entries,
            Err(e) => {
                return references
                    .iter()
                    .map(|r| (r.clone(), Err(e.clone())))
                    .collect();
            }
        };
        references
            .iter()
            .map(|r| {
                let result = match entries.get(&**r) {
                    None => Err(SecretError::Missing {
                        reference: r.to_string(),
                    }),
                    Some(e) if e.api_key.expose_secret().trim().is_empty() => {
                        Err(SecretError::Empty {
                            reference: r.to_string(),
                        })
                    }
                    Some(e) => Ok(e.credential()),
                };
                (r.clone(), result)
            })
            .collect()
    }

    fn location(&self, reference: &str) -> String {
        format!("file {} ({reference})", self.path.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(text: &str) -> (tempfile::TempDir, FileSource) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets.yaml");
        std::fs::write(&path, text).unwrap();
        (dir, FileSource::new(path))
    }

    #[tokio::test]
    async fn loads_present_references_and_reports_missing_ones() {
        let (_d, src) = source(
            "openai/production:\n  api_key: sk-test-123\n  owner: ml\n  rotated_at: 2026-01-02T03:04:05Z\n  admin_token: sk-other-secret-value\n",
        );
        let refs: Vec<Arc<str>> = vec!["openai/production".into(), "anthropic/production".into()];
        let out = src.load(&refs).await;
        let ok = out[0].1.as_ref().unwrap();
        assert_eq!(ok.api_key.expose_secret(), "sk-test-123");
        assert_eq!(ok.meta.get("owner").map(String::as_str), Some("ml"));
        assert!(ok.rotated_at().is_some());
        assert!(!ok.meta.contains_key("admin_token"), "{:?}", ok.meta);
        assert!(matches!(out[1].1, Err(SecretError::Missing { .. })));
    }

    #[tokio::test]
    async fn malformed_files_fail_without_echoing_content() {
        let (_d, src) = source("openai/production:\n  api_key: [sk-secret-value]\n");
        let out = src.load(&["openai/production".into()]).await;
        let err = out[0].1.as_ref().unwrap_err().to_string();
        assert!(err.contains("openai/production"), "{err}");
        assert!(!err.contains("sk-secret-value"), "{err}");
    }

    #[tokio::test]
    async fn empty_keys_are_rejected() {
        let (_d, src) = source("a/b:\n  api_key: '  '\n");
        let out = src.load(&["a/b".into()]).await;
        assert!(matches!(out[0].1, Err(SecretError::Empty { .. })));
    }

    #[test]
    fn credential_debug_is_redacted() {
        let c = Credential::new(SecretString::from("sk-hidden".to_string()));
        assert!(!format!("{c:?}").contains("sk-hidden"));
    }
}
