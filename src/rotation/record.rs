//! A credential's rotation record: the durable state of its rotations, kept in Vault next to
//! the credential (`<credential path>.rotation`) and written only with check-and-set, so that
//! one writer wins every step and any replica, scheduled run or re-run sees what happened.
//!
//! The record never holds a key: the provider's key ids, fingerprints and KV version numbers
//! only. The old key's value stays in the credential's KV version history, which is the
//! rollback.
//!
//! A rotation moves `idle → minting → minted → stored → grace → (revoking →) idle`; a failure
//! moves it through `rolling_back` to `idle`. Every step renews the holder's lease; a run that
//! finds a step whose holder is gone (lease expired, or a dead process on the same host)
//! takes it over and completes or undoes it.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::secrets::fingerprint::Fingerprint;
use crate::serde_util::rfc3339_opt;

/// Where a credential's rotation stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Nothing under way.
    #[default]
    Idle,
    /// A run claimed the credential and is asking the provider for a key.
    Minting,
    /// The new key exists at the provider (and passed, or is passing, its health check).
    Minted,
    /// The new key is the credential's current KV version; replicas are being switched.
    Stored,
    /// Every replica switched; the old key is revoked at the provider after `revoke_after`.
    Grace,
    /// A run is revoking the old key at the provider (after the grace period).
    Revoking,
    /// A failed rotation is being undone: previous version current again, new key revoked.
    RollingBack,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Idle => "idle",
            Phase::Minting => "minting",
            Phase::Minted => "minted",
            Phase::Stored => "stored",
            Phase::Grace => "grace",
            Phase::Revoking => "revoking",
            Phase::RollingBack => "rolling_back",
        }
    }

    /// A run holds the credential (takeover only once its holder is gone).
    pub fn held(self) -> bool {
        !matches!(self, Phase::Idle | Phase::Grace)
    }
}

/// How a rotation ended, the `result` label of `keygate_rotation_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RotationResult {
    /// Switched; the old key is revoked after the grace period.
    Ok,
    /// Something failed and the rotation was undone: previous key current, new key revoked.
    RolledBack,
    /// Something failed and could not be undone by itself (or the old key could not be
    /// revoked): an operator must look.
    Failed,
}

impl RotationResult {
    pub const ALL: [RotationResult; 3] = [
        RotationResult::Ok,
        RotationResult::RolledBack,
        RotationResult::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RotationResult::Ok => "ok",
            RotationResult::RolledBack => "rolled_back",
            RotationResult::Failed => "failed",
        }
    }
}

/// The provider's name for a key (never the key): its id, and the service account or other
/// owner the provider files it under, where there is one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRef {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

/// The run holding a step, and until when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    pub host: String,
    pub pid: u32,
    #[serde(default, with = "rfc3339_opt")]
    pub lease_until: Option<SystemTime>,
}

/// One rotation (or emergency replacement) from claim to the old key's revocation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    /// `rot_` + 12 hex digits.
    pub id: String,
    /// The name the minted key carries at the provider (finds it when a mint's answer was lost).
    pub tag: String,
    pub by: String,
    #[serde(default, with = "rfc3339_opt")]
    pub started_at: Option<SystemTime>,
    pub holder: Holder,
    #[serde(default)]
    pub emergency: bool,
    /// The KV version that was current when the rotation started (the rollback target).
    #[serde(default)]
    pub previous_version: Option<u64>,
    #[serde(default)]
    pub old_fingerprint: Option<Fingerprint>,
    #[serde(default)]
    pub old_key: Option<KeyRef>,
    #[serde(default)]
    pub new_fingerprint: Option<Fingerprint>,
    #[serde(default)]
    pub new_key: Option<KeyRef>,
    #[serde(default)]
    pub new_version: Option<u64>,
    /// Grace period, in seconds.
    #[serde(default)]
    pub grace_secs: u64,
    #[serde(default, with = "rfc3339_opt")]
    pub revoke_after: Option<SystemTime>,
    /// Why a rollback started.
    #[serde(default)]
    pub failure: Option<String>,
}

/// The last finished rotation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    pub id: String,
    pub result: RotationResult,
    #[serde(default, with = "rfc3339_opt")]
    pub at: Option<SystemTime>,
    pub by: String,
    /// The step that decided it (`switch`, `health_check`, …).
    pub step: String,
    pub detail: String,
}

/// The last health check of a key the rotator was about to use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthCheck {
    #[serde(default, with = "rfc3339_opt")]
    pub at: Option<SystemTime>,
    pub ok: bool,
    pub fingerprint: Fingerprint,
    #[serde(default)]
    pub detail: String,
}

/// An emergency revocation of the credential's key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    #[serde(default, with = "rfc3339_opt")]
    pub at: Option<SystemTime>,
    pub by: String,
    pub reason: String,
    pub fingerprint: Option<Fingerprint>,
    /// Whether the provider revoked it (false: by hand, or it failed; see `detail`).
    pub at_provider: bool,
    #[serde(default)]
    pub detail: String,
}

/// How many emergency revocations a record remembers.
const REVOCATIONS_KEPT: usize = 10;

/// The whole record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RotationRecord {
    #[serde(default)]
    pub phase: Phase,
    #[serde(default)]
    pub attempt: Option<Attempt>,
    /// Rotations by result, ever (the durable `keygate_rotation_total`).
    #[serde(default)]
    pub counts: BTreeMap<String, u64>,
    #[serde(default)]
    pub last: Option<Outcome>,
    #[serde(default)]
    pub last_health_check: Option<HealthCheck>,
    /// When the current key became current through a rotation.
    #[serde(default, with = "rfc3339_opt")]
    pub rotated_at: Option<SystemTime>,
    #[serde(default)]
    pub revocations: Vec<Revocation>,
}

impl RotationRecord {
    pub fn count(&self, result: RotationResult) -> u64 {
        self.counts.get(result.as_str()).copied().unwrap_or(0)
    }

    /// Whether a run identified as `me` may take over the held step: its lease ran out, or
    /// its holder was a process on this host that is gone (`alive` answers for a pid).
    pub fn can_take_over(&self, now: SystemTime, me: &Holder, alive: impl Fn(u32) -> bool) -> bool {
        let Some(attempt) = &self.attempt else {
            return true;
        };
        let holder = &attempt.holder;
        let expired = holder.lease_until.is_none_or(|until| until <= now);
        let dead_here = holder.host == me.host && holder.pid != me.pid && !alive(holder.pid);
        expired || dead_here
    }

    /// Ends the attempt with `result`: counted, remembered as `last`, and (unless it switched
    /// to the new key, which leaves the grace period) back to idle.
    pub fn finish(&mut self, result: RotationResult, step: &str, detail: &str, now: SystemTime) {
        *self.counts.entry(result.as_str().to_string()).or_insert(0) += 1;
        let (id, by) = self
            .attempt
            .as_ref()
            .map(|a| (a.id.clone(), a.by.clone()))
            .unwrap_or_default();
        self.last = Some(Outcome {
            id,
            result,
            at: Some(now),
            by,
            step: step.to_string(),
            detail: detail.to_string(),
        });
        if result == RotationResult::Ok {
            self.rotated_at = Some(now);
            self.phase = Phase::Grace;
            if let Some(a) = &mut self.attempt {
                a.revoke_after = Some(now + Duration::from_secs(a.grace_secs));
            }
        } else {
            self.phase = Phase::Idle;
            self.attempt = None;
        }
    }

    /// Remembers an emergency revocation (the last few).
    pub fn remember(&mut self, revocation: Revocation) {
        self.revocations.push(revocation);
        let excess = self.revocations.len().saturating_sub(REVOCATIONS_KEPT);
        self.revocations.drain(..excess);
    }

    /// The old key's grace period is over: it is due for revocation.
    pub fn grace_over(&self, now: SystemTime) -> bool {
        self.phase == Phase::Grace
            && self
                .attempt
                .as_ref()
                .and_then(|a| a.revoke_after)
                .is_none_or(|t| t <= now)
    }
}

/// When a credential rotated at `rotated_at` is next due under a policy of `every`.
pub fn next_due(rotated_at: Option<SystemTime>, every: Option<Duration>) -> Option<SystemTime> {
    Some(rotated_at? + every?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holder(host: &str, pid: u32, until: SystemTime) -> Holder {
        Holder {
            host: host.into(),
            pid,
            lease_until: Some(until),
        }
    }

    fn attempt(h: Holder) -> Attempt {
        Attempt {
            id: "rot_000000000001".into(),
            tag: "keygate-a-b-rot_000000000001".into(),
            by: "alice".into(),
            started_at: None,
            holder: h,
            emergency: false,
            previous_version: Some(3),
            old_fingerprint: None,
            old_key: None,
            new_fingerprint: None,
            new_key: None,
            new_version: None,
            grace_secs: 60,
            revoke_after: None,
            failure: None,
        }
    }

    #[test]
    fn a_held_step_is_taken_over_only_when_its_holder_is_gone() {
        let now = SystemTime::now();
        let later = now + Duration::from_secs(60);
        let me = holder("host-a", 10, later);
        let mut record = RotationRecord {
            phase: Phase::Minted,
            attempt: Some(attempt(holder("host-b", 20, later))),
            ..RotationRecord::default()
        };
        assert!(
            !record.can_take_over(now, &me, |_| false),
            "another host's live lease"
        );
        assert!(record.can_take_over(later, &me, |_| true), "lease expired");
        record.attempt = Some(attempt(holder("host-a", 20, later)));
        assert!(
            record.can_take_over(now, &me, |_| false),
            "dead process on this host"
        );
        assert!(
            !record.can_take_over(now, &me, |_| true),
            "live process on this host"
        );
    }

    #[test]
    fn finishing_counts_and_starts_the_grace_period_only_on_success() {
        let now = SystemTime::now();
        let mut record = RotationRecord {
            phase: Phase::Stored,
            attempt: Some(attempt(holder("h", 1, now))),
            ..RotationRecord::default()
        };
        record.finish(RotationResult::Ok, "switch", "", now);
        assert_eq!(record.phase, Phase::Grace);
        assert_eq!(record.count(RotationResult::Ok), 1);
        assert_eq!(record.rotated_at, Some(now));
        assert!(!record.grace_over(now));
        assert!(record.grace_over(now + Duration::from_secs(60)));

        record.phase = Phase::Minted;
        record.finish(RotationResult::RolledBack, "health_check", "401", now);
        assert_eq!(record.phase, Phase::Idle);
        assert!(record.attempt.is_none());
        assert_eq!(record.count(RotationResult::RolledBack), 1);
        assert_eq!(record.last.as_ref().unwrap().step, "health_check");
    }

    #[test]
    fn the_record_round_trips_through_json_without_surprises() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let mut record = RotationRecord {
            phase: Phase::Minting,
            attempt: Some(attempt(holder("h", 1, now))),
            ..RotationRecord::default()
        };
        record.remember(Revocation {
            at: Some(now),
            by: "bob".into(),
            reason: "leak".into(),
            fingerprint: Some(Fingerprint::of("sk-x")),
            at_provider: true,
            detail: String::new(),
        });
        let json = serde_json::to_value(&record).unwrap();
        assert_eq!(json["phase"], "minting");
        assert_eq!(
            json["attempt"]["holder"]["lease_until"],
            "2027-01-15T08:00:00Z"
        );
        let back: RotationRecord = serde_json::from_value(json).unwrap();
        assert_eq!(back, record);
        assert_eq!(
            serde_json::from_str::<RotationRecord>("{}").unwrap(),
            RotationRecord::default()
        );
    }

    #[test]
    fn due_is_rotated_at_plus_every() {
        let t = SystemTime::UNIX_EPOCH;
        let day = Duration::from_secs(86_400);
        assert_eq!(next_due(Some(t), Some(day)), Some(t + day));
        assert_eq!(next_due(None, Some(day)), None);
        assert_eq!(next_due(Some(t), None), None);
    }
}
