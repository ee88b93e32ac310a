//! The credential cache the request path reads. Reads are a lock-free snapshot load; refreshes
//! happen in the background and replace the snapshot atomically. A failed refresh keeps the
//! last good value.
//!
//! DESIGN.md suggested moka here. The set of credentials is small and known from config, and
//! a TTL cache would evict entries and make a request wait on the source; an atomically swapped
//! map refreshed ahead of need is both simpler and never blocks.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;

use super::{Credential, CredentialSource, SecretError};

type Snapshot = HashMap<Arc<str>, Arc<Credential>>;

#[derive(Debug, Default)]
pub struct CredentialCache {
    current: ArcSwap<Snapshot>,
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

    /// The current credential for a reference, if one was ever loaded.
    pub fn get(&self, reference: &str) -> Option<Arc<Credential>> {
        self.current.load().get(reference).cloned()
    }

    /// True when every reference has a value.
    pub fn has_all(&self, references: &[Arc<str>]) -> bool {
        let snap = self.current.load();
        references.iter().all(|r| snap.contains_key(r))
    }

    /// The references that have no value.
    pub fn missing(&self, references: &[Arc<str>]) -> Vec<Arc<str>> {
        let snap = self.current.load();
        references
            .iter()
            .filter(|r| !snap.contains_key(*r))
            .cloned()
            .collect()
    }

    /// Loads `references` from `source`; successes replace old values, failures keep them.
    /// Values for other references stay, so a rejected reload never strands the running config.
    pub async fn refresh(
        &self,
        source: &dyn CredentialSource,
        references: &[Arc<str>],
    ) -> RefreshReport {
        let results = source.load(references).await;
        let old = self.current.load_full();
        let mut next: Snapshot = (*old).clone();
        let mut report = RefreshReport::default();
        for (reference, result) in results {
            match result {
                Ok(credential) => {
                    report.loaded += 1;
                    next.insert(reference, Arc::new(credential));
                }
                Err(e) => report.failures.push((reference, e)),
            }
        }
        self.current.store(Arc::new(next));
        report
    }
}
