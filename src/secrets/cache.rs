//! The credential cache the request path reads. Reads are a lock-free snapshot load; refreshes
//! happen in the background and replace the snapshot atomically. A failed refresh keeps the
//! last good value, served for at most `max_stale` after its last successful load.
//!
//! DESIGN.md suggested moka here. The set of credentials is small and known from config, and
//! a TTL cache would evict entries and make a request wait on the source; an atomically swapped
//! map refreshed ahead of need is both simpler and never blocks.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;

use super::{Credential, CredentialSource, SecretError};

type Snapshot = HashMap<Arc<str>, Arc<Credential>>;

#[derive(Debug)]
pub struct CredentialCache {
    current: ArcSwap<Snapshot>,
    /// How long a value may be served after its last successful load, in milliseconds.
    max_stale_ms: AtomicU64,
}

impl Default for CredentialCache {
    fn default() -> Self {
        CredentialCache {
            current: ArcSwap::default(),
            max_stale_ms: AtomicU64::new(u64::MAX),
        }
    }
}

/// What one refresh did, for logs, metrics and readiness.
#[derive(Debug, Default)]
pub struct RefreshReport {
    pub loaded: usize,
    pub failures: Vec<(Arc<str>, SecretError)>,
}

impl CredentialCache {
    pub fn new() -> Self {
        CredentialCache::default()
    }

    /// Sets the bound past which a value that could not be refreshed is no longer served.
    pub fn set_max_stale(&self, max_stale: Duration) {
        let ms = u64::try_from(max_stale.as_millis()).unwrap_or(u64::MAX);
        self.max_stale_ms.store(ms, Ordering::Relaxed);
    }

    /// The current credential for a reference, unless it was never loaded or its last
    /// successful load is older than `max_stale` (the source has failed too long: fail closed).
    pub fn get(&self, reference: &str) -> Option<Arc<Credential>> {
        let credential = self.current.load().get(reference).cloned()?;
        (!self.is_stale(&credential, SystemTime::now())).then_some(credential)
    }

    /// The age of the last loaded value and whether it is past `max_stale` (for metrics).
    pub fn age(&self, reference: &str, now: SystemTime) -> Option<(Duration, bool)> {
        let snap = self.current.load();
        let credential = snap.get(reference)?;
        let age = now
            .duration_since(credential.fetched_at)
            .unwrap_or_default();
        Some((age, self.is_stale(credential, now)))
    }

    fn is_stale(&self, credential: &Credential, now: SystemTime) -> bool {
        let age = now
            .duration_since(credential.fetched_at)
            .unwrap_or_default();
        u64::try_from(age.as_millis()).unwrap_or(u64::MAX)
            > self.max_stale_ms.load(Ordering::Relaxed)
    }

    /// The references that have no servable value.
    pub fn missing(&self, references: &[Arc<str>]) -> Vec<Arc<str>> {
        references
            .iter()
            .filter(|r| self.get(r).is_none())
            .cloned()
            .collect()
    }

    /// Loads `references` from `source`; successes replace old values, and a reference the
    /// secrets file no longer has (or has with an empty key) is dropped at once, so its
    /// consumers get 503 from this refresh on. Other failures (a source unreachable or
    /// answering badly, Vault's 404 included) keep the last good value, up to `max_stale`. Values for references
    /// not asked about stay, so a rejected reload never strands the running config.
    pub async fn refresh(
        &self,
        source: &dyn CredentialSource,
        references: &[Arc<str>],
    ) -> RefreshReport {
        let results = source.load(references).await;
        let mut report = RefreshReport::default();
        let mut fresh = Vec::new();
        let mut removed = Vec::new();
        for (reference, result) in results {
            match result {
                Ok(credential) => fresh.push((reference, Arc::new(credential))),
                Err(e) => {
                    if matches!(e, SecretError::Missing { .. } | SecretError::Empty { .. }) {
                        removed.push(reference.clone());
                    }
                    report.failures.push((reference, e));
                }
            }
        }
        report.loaded = fresh.len();
        self.current.rcu(|old| {
            let mut next: Snapshot = (**old).clone();
            next.extend(fresh.iter().cloned());
            for reference in &removed {
                next.remove(reference);
            }
            next
        });
        report
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::{ExposeSecret, SecretString};
    use std::sync::Mutex;

    #[derive(Debug)]
    struct Scripted(Mutex<Vec<Result<&'static str, ()>>>);

    #[async_trait::async_trait]
    impl CredentialSource for Scripted {
        async fn load(
            &self,
            references: &[Arc<str>],
        ) -> Vec<(Arc<str>, Result<Credential, SecretError>)> {
            let next = self.0.lock().unwrap().remove(0);
            references
                .iter()
                .map(|r| {
                    let result = match next {
                        Ok(key) => Ok(Credential {
                            api_key: Arc::new(SecretString::from(key.to_string())),
                            fetched_at: SystemTime::now(),
                        }),
                        Err(()) => Err(SecretError::Source {
                            reference: r.to_string(),
                            reason: "unreachable".into(),
                        }),
                    };
                    (r.clone(), result)
                })
                .collect()
        }
    }

    /// A source that has the credential, then no longer does.
    #[derive(Debug)]
    struct Removed(Mutex<bool>);

    #[async_trait::async_trait]
    impl CredentialSource for Removed {
        async fn load(
            &self,
            references: &[Arc<str>],
        ) -> Vec<(Arc<str>, Result<Credential, SecretError>)> {
            let present = std::mem::replace(&mut *self.0.lock().unwrap(), false);
            references
                .iter()
                .map(|r| {
                    let result = if present {
                        Ok(Credential {
                            api_key: Arc::new(SecretString::from("v1".to_string())),
                            fetched_at: SystemTime::now(),
                        })
                    } else {
                        Err(SecretError::Missing {
                            reference: r.to_string(),
                        })
                    };
                    (r.clone(), result)
                })
                .collect()
        }
    }

    #[tokio::test]
    async fn a_credential_the_source_no_longer_has_is_dropped_at_once() {
        let cache = CredentialCache::new();
        let source = Removed(Mutex::new(true));
        let refs: Vec<Arc<str>> = vec!["a/b".into()];
        cache.refresh(&source, &refs).await;
        assert!(cache.get("a/b").is_some());
        cache.refresh(&source, &refs).await;
        assert!(
            cache.get("a/b").is_none(),
            "removed from the source: not served for up to max_stale"
        );
    }

    #[tokio::test]
    async fn failures_keep_the_last_good_value_until_max_stale() {
        let cache = CredentialCache::new();
        let source = Scripted(Mutex::new(vec![Ok("v1"), Err(()), Ok("v2")]));
        let refs: Vec<Arc<str>> = vec!["a/b".into()];
        assert_eq!(cache.refresh(&source, &refs).await.loaded, 1);
        let report = cache.refresh(&source, &refs).await;
        assert_eq!(report.failures.len(), 1);
        assert_eq!(cache.get("a/b").unwrap().api_key.expose_secret(), "v1");
        cache.set_max_stale(Duration::ZERO);
        std::thread::sleep(Duration::from_millis(5));
        assert!(
            cache.get("a/b").is_none(),
            "past max_stale the value is not served"
        );
        assert_eq!(cache.missing(&refs).len(), 1);
        cache.refresh(&source, &refs).await;
        cache.set_max_stale(Duration::from_secs(60));
        assert_eq!(cache.get("a/b").unwrap().api_key.expose_secret(), "v2");
    }
}
