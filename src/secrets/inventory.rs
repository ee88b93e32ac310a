//! The credential inventory: every provider credential a replica serves, where it comes from,
//! what it is (fingerprint, KV version, the entry's metadata), who uses it, its rotation
//! policy and record. `ListCredentials` answers with it, and the rotation metrics are
//! published from it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use metrics::{counter, gauge};

use super::{CredentialCache, CredentialSource, Fingerprint};
use crate::auth::overrides::Overrides;
use crate::auth::registry::Registry;
use crate::config::RotationConfig;
use crate::rotation::record::{next_due, RotationRecord, RotationResult};
use crate::telemetry;

/// One credential as this replica knows it. Holds no secret.
#[derive(Debug, Clone)]
pub struct Entry {
    pub reference: Arc<str>,
    pub providers: Vec<String>,
    /// `vault secret/ai-providers/openai/production`, `file /etc/keygate/secrets.yaml (…)`.
    pub source: String,
    pub version: Option<u64>,
    pub fingerprint: Option<Fingerprint>,
    /// `ok`, `stale`, `unavailable` or `revoked`.
    pub state: &'static str,
    pub meta: BTreeMap<String, String>,
    pub rotated_at: Option<SystemTime>,
    pub consumers: Vec<String>,
    pub every: Option<Duration>,
    pub grace: Option<Duration>,
    pub next_due: Option<SystemTime>,
    pub record: Option<Arc<RotationRecord>>,
}

/// Everything the inventory is built from.
pub struct Sources<'a> {
    pub registry: &'a Registry,
    pub cache: &'a CredentialCache,
    pub overrides: &'a Overrides,
    pub rotation: &'a RotationConfig,
    pub source: Option<&'a dyn CredentialSource>,
}

/// The inventory of the credentials `references`, by reference. `with_users` lists the
/// consumers and providers of each (a walk over every consumer: for listings, not metrics).
pub fn inventory(s: &Sources<'_>, references: &[Arc<str>], with_users: bool) -> Vec<Entry> {
    let mut users: BTreeMap<Arc<str>, (Vec<String>, Vec<String>)> = references
        .iter()
        .map(|r| (r.clone(), Default::default()))
        .collect();
    if with_users {
        for consumer in s.registry.consumers() {
            let Some((consumers, providers)) = users.get_mut(&consumer.credential) else {
                continue;
            };
            consumers.push(consumer.name.to_string());
            if !providers.iter().any(|p| **p == *consumer.provider.name) {
                providers.push(consumer.provider.name.to_string());
            }
        }
    }
    let now = SystemTime::now();
    users
        .into_iter()
        .map(|(reference, (consumers, providers))| {
            let served = s.cache.get(&reference);
            let stale = s.cache.age(&reference, now).is_some_and(|(_, stale)| stale);
            let state = match &served {
                Some(c) if s.overrides.credential_revoked(&c.fingerprint) => "revoked",
                Some(_) => "ok",
                None if s.cache.revoked(&reference) => "revoked",
                None if stale => "stale",
                None => "unavailable",
            };
            let policy = s.rotation.policy(&reference);
            let record = s.cache.record(&reference);
            let rotated_at = served
                .as_ref()
                .and_then(|c| c.rotated_at())
                .into_iter()
                .chain(record.as_ref().and_then(|r| r.rotated_at))
                .max();
            let every = policy.and_then(|p| p.every);
            Entry {
                source: s
                    .source
                    .map_or_else(String::new, |src| src.location(&reference)),
                version: served.as_ref().and_then(|c| c.version),
                fingerprint: served.as_ref().map(|c| c.fingerprint),
                meta: served.as_ref().map(|c| c.meta.clone()).unwrap_or_default(),
                state,
                rotated_at,
                every,
                grace: policy.map(|p| p.grace),
                next_due: next_due(rotated_at, every),
                record,
                consumers,
                providers,
                reference,
            }
        })
        .collect()
}

/// Publishes the rotation metrics: when each key became current, the policy's period, and
/// the rotations by result (every replica reports the record's durable totals).
pub fn publish(entries: &[Entry]) {
    for e in entries {
        let credential = e.reference.to_string();
        if let Some(t) = e.rotated_at {
            gauge!(telemetry::CREDENTIAL_ROTATED_TIMESTAMP, "credential" => credential.clone())
                .set(unix(t) as f64);
        }
        if let Some(every) = e.every {
            gauge!(telemetry::CREDENTIAL_ROTATION_INTERVAL, "credential" => credential.clone())
                .set(every.as_secs_f64());
        }
        // Every credential with a rotation policy has its series from the start (at 0), so
        // that the first failure is an increase the rotation-failed alert sees.
        if e.grace.is_none() && e.record.is_none() {
            continue;
        }
        for result in RotationResult::ALL {
            let total = e.record.as_ref().map_or(0, |r| r.count(result));
            counter!(telemetry::ROTATION_TOTAL, "credential" => credential.clone(), "result" => result.as_str())
                .absolute(total);
        }
    }
}

/// Seconds since the Unix epoch (0 before it).
pub fn unix(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
