//! The credential cache the request path reads. Reads are a lock-free snapshot load; refreshes
//! happen in the background and replace the snapshot atomically. A failed refresh keeps the
//! last good value, served for at most `max_stale` after its last successful load.
//!
//! DESIGN.md suggested moka here. The set of credentials is small and known from config, and
//! a TTL cache would evict entries and make a request wait on the source; an atomically swapped
//! map refreshed ahead of need is both simpler and never blocks.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;

use super::{Credential, CredentialSource, SecretError};
use crate::rotation::record::RotationRecord;

type Snapshot = HashMap<Arc<str>, Arc<Credential>>;
type Records = HashMap<Arc<str>, Arc<RotationRecord>>;

#[derive(Debug)]
pub struct CredentialCache {
    current: ArcSwap<Snapshot>,
    /// References whose source holds a revocation tombstone (not served; `credential_revoked`).
    revoked: ArcSwap<HashSet<Arc<str>>>,
    /// The last rotation record read per credential (inventory and rotation metrics).
    records: ArcSwap<Records>,
    /// How long a value may be served after its last successful load, in milliseconds.
    max_stale_ms: AtomicU64,
}

impl Default for CredentialCache {
    fn default() -> Self {
        CredentialCache {
            current: ArcSwap::default(),
            revoked: ArcSwap::default(),
            records: ArcSwap::default(),
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

    /// Whether the source says the reference was revoked (a tombstone), rather than just
    /// unavailable.
    pub fn revoked(&self, reference: &str) -> bool {
        let revoked = self.revoked.load();
        !revoked.is_empty() && revoked.contains(reference)
    }

    /// The last rotation record read for a reference.
    pub fn record(&self, reference: &str) -> Option<Arc<RotationRecord>> {
        self.records.load().get(reference).cloned()
    }

    /// Reads the rotation records of `references` from `source`; a failed read keeps the
    /// record last read.
    pub async fn refresh_records(&self, source: &dyn CredentialSource, references: &[Arc<str>]) {
        let results = source.records(references).await;
        self.records.rcu(|old| {
            let mut next: Records = (**old).clone();
            for (reference, result) in &results {
                match result {
                    Ok(Some(record)) => {
                        next.insert(reference.clone(), Arc::new(record.clone()));
                    }
                    Ok(None) => {
                        next.remove(reference);
                    }
                    Err(_) => {}
                }
            }
            next
        });
        for (reference, result) in results {
            if let Err(e) = result {
                tracing::warn!(credential = %reference, error = %e, "rotation record unreadable; keeping the last one read");
            }
        }
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
    /// secrets file no longer has (or has with an empty key), or whose Vault entry is a
    /// revocation tombstone, is dropped at once, so its consumers get 503 from this refresh
    /// on. Other failures (a source unreachable or answering badly, Vault's 404 included) keep
    /// the last good value, up to `max_stale`. Values for references
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
        let mut tombstoned = Vec::new();
        for (reference, result) in results {
            match result {
                Ok(credential) => fresh.push((reference, Arc::new(credential))),
                Err(e) => {
                    if matches!(
                        e,
                        SecretError::Missing { .. }
                            | SecretError::Empty { .. }
                            | SecretError::Revoked { .. }
                    ) {
                        removed.push(reference.clone());
                        tombstoned
                            .push((reference.clone(), matches!(e, SecretError::Revoked { .. })));
                    }
                    report.failures.push((reference, e));
                }
            }
        }
        self.revoked.rcu(|old| {
            let mut next = (**old).clone();
            for (reference, _) in &fresh {
                next.remove(reference);
            }
            for (reference, revoked) in &tombstoned {
                if *revoked {
                    next.insert(reference.clone());
                } else {
                    next.remove(reference);
                }
            }
            next
        });
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
        fn location(&self, _: &str) -> String {
            "scripted".into()
        }

        async fn load(
            &self,
            references: &[Arc<str>],
        ) -> Vec<(Arc<str>, Result<Credential, SecretError>)> {
            let next = self.0.lock().unwrap().remove(0);
            references
                .iter()
                .map(|r| {
                    let result = match next {
                        Ok(key) => Ok(Credential::new(SecretString::from(key.to_string()))),
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

    /// A source that has the credential, then no longer does (deleted, or revoked).
    #[derive(Debug)]
    struct Removed(Mutex<bool>, bool);

    #[async_trait::async_trait]
    impl CredentialSource for Removed {
        fn location(&self, _: &str) -> String {
            "removed".into()
        }

        async fn load(
            &self,
            references: &[Arc<str>],
        ) -> Vec<(Arc<str>, Result<Credential, SecretError>)> {
            let present = std::mem::replace(&mut *self.0.lock().unwrap(), false);
            references
                .iter()
                .map(|r| {
                    let result = if present {
                        Ok(Credential::new(SecretString::from("v1".to_string())))
                    } else if self.1 {
                        Err(SecretError::Revoked {
                            reference: r.to_string(),
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
        for revoked in [false, true] {
            let cache = CredentialCache::new();
            let source = Removed(Mutex::new(true), revoked);
            let refs: Vec<Arc<str>> = vec!["a/b".into()];
            cache.refresh(&source, &refs).await;
            assert!(cache.get("a/b").is_some());
            cache.refresh(&source, &refs).await;
            assert!(
                cache.get("a/b").is_none(),
                "gone from the source: not served for up to max_stale"
            );
            assert_eq!(
                cache.revoked("a/b"),
                revoked,
                "only a tombstone reads as revoked"
            );
        }
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
