//! Operator overrides on top of the configured registry: consumers suspended, resumed or
//! revoked and keys revoked at runtime (admin API, CLI, detectors), without a restart. The
//! set is small, swapped atomically, and persisted by the admin layer.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::config::ConsumerStatus;

/// The serializable form (the state file, broadcasts).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OverrideState {
    /// consumer → status that replaces the configured one.
    #[serde(default)]
    pub status: BTreeMap<String, ConsumerStatus>,
    /// Revoked key ids (`kid_` + 12 hex digits of the key hash).
    #[serde(default)]
    pub revoked_keys: BTreeSet<String>,
}

/// The compiled form the gate reads.
#[derive(Debug, Default)]
pub struct Overrides {
    status: HashMap<String, ConsumerStatus>,
    revoked: HashSet<[u8; 6]>,
}

/// Parses `kid_` + 12 hex digits.
pub fn parse_key_id(text: &str) -> Option<[u8; 6]> {
    let hex_part = text.strip_prefix("kid_")?;
    let mut out = [0u8; 6];
    hex::decode_to_slice(hex_part, &mut out).ok()?;
    Some(out)
}

impl Overrides {
    pub fn compile(state: &OverrideState) -> Self {
        Overrides {
            status: state.status.iter().map(|(k, v)| (k.clone(), *v)).collect(),
            revoked: state
                .revoked_keys
                .iter()
                .filter_map(|k| parse_key_id(k))
                .collect(),
        }
    }

    /// The status override for a consumer, if any.
    pub fn status(&self, consumer: &str) -> Option<ConsumerStatus> {
        if self.status.is_empty() {
            return None;
        }
        self.status.get(consumer).copied()
    }

    pub fn key_revoked(&self, id: &[u8; 6]) -> bool {
        !self.revoked.is_empty() && self.revoked.contains(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_ids_round_trip_and_garbage_is_ignored() {
        let hash = crate::auth::KeyHash::of("kg_live_x");
        let id = hash.key_id();
        assert_eq!(parse_key_id(&id), Some(hash.id_bytes()));
        assert_eq!(parse_key_id("kid_zz"), None);
        let state = OverrideState {
            status: BTreeMap::from([("a".into(), ConsumerStatus::Suspended)]),
            revoked_keys: BTreeSet::from([id, "garbage".into()]),
        };
        let o = Overrides::compile(&state);
        assert_eq!(o.status("a"), Some(ConsumerStatus::Suspended));
        assert_eq!(o.status("b"), None);
        assert!(o.key_revoked(&hash.id_bytes()));
    }
}
