//! Operator overrides on top of the configured registry: consumers suspended, resumed or
//! revoked and keys revoked at runtime (admin API, CLI, detectors), without a restart. The
//! set is small and swapped atomically; `crate::overrides` persists and shares it.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use serde::{Deserialize, Serialize};

use super::KeyId;
use crate::config::ConsumerStatus;
use crate::secrets::fingerprint::Fingerprint;

/// The serializable form (the state file, broadcasts).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OverrideState {
    /// consumer → status that replaces the configured one.
    #[serde(default)]
    pub status: BTreeMap<String, ConsumerStatus>,
    /// Revoked key ids.
    #[serde(default)]
    pub revoked_keys: BTreeSet<KeyId>,
    /// Revoked provider keys: fingerprint → the credential reference it was served for.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub revoked_credentials: BTreeMap<Fingerprint, String>,
}

/// The compiled form the gate reads.
#[derive(Debug, Default)]
pub struct Overrides {
    status: HashMap<String, ConsumerStatus>,
    revoked: HashSet<KeyId>,
    revoked_credentials: HashSet<Fingerprint>,
}

impl Overrides {
    pub fn compile(state: &OverrideState) -> Self {
        Overrides {
            status: state.status.iter().map(|(k, v)| (k.clone(), *v)).collect(),
            revoked: state.revoked_keys.iter().copied().collect(),
            revoked_credentials: state.revoked_credentials.keys().copied().collect(),
        }
    }

    /// Whether an operator revoked this provider key.
    pub fn credential_revoked(&self, fingerprint: &Fingerprint) -> bool {
        !self.revoked_credentials.is_empty() && self.revoked_credentials.contains(fingerprint)
    }

    /// The status override for a consumer, if any.
    pub fn status(&self, consumer: &str) -> Option<ConsumerStatus> {
        if self.status.is_empty() {
            return None;
        }
        self.status.get(consumer).copied()
    }

    pub fn key_revoked(&self, id: &KeyId) -> bool {
        !self.revoked.is_empty() && self.revoked.contains(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compiled_overrides_answer_status_and_revoked_keys() {
        let hash = crate::auth::KeyHash::of("kg_live_x");
        let state = OverrideState {
            status: BTreeMap::from([("a".into(), ConsumerStatus::Suspended)]),
            revoked_keys: BTreeSet::from([hash.key_id()]),
            revoked_credentials: BTreeMap::from([(Fingerprint::of("sk-a"), "a/b".into())]),
        };
        let o = Overrides::compile(&state);
        assert_eq!(o.status("a"), Some(ConsumerStatus::Suspended));
        assert_eq!(o.status("b"), None);
        assert!(o.key_revoked(&hash.key_id()));
        assert!(!o.key_revoked(&crate::auth::KeyHash::of("kg_live_y").key_id()));
        assert!(o.credential_revoked(&Fingerprint::of("sk-a")));
        assert!(!o.credential_revoked(&Fingerprint::of("sk-b")));
    }

    #[test]
    fn a_state_file_naming_a_garbage_key_id_is_refused() {
        let text = "revoked_keys: [kid_zz]\n";
        assert!(serde_yaml::from_str::<OverrideState>(text).is_err());
    }
}
