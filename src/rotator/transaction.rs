//! `keygate rotate CREDENTIAL`, one transaction: claim the credential's record, mint (or
//! accept) a key, health-check it, store it as a new KV version, switch every replica and
//! confirm, then leave the old key for the grace period. Every step is checkpointed in the
//! record first, so a run that dies anywhere can be finished or undone by the next one
//! (`recover.rs`); any failure rolls back (`rollback.rs`).

use std::time::{Duration, SystemTime};

use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value};

use super::context::{rotation_id, RotateError, Rotator, Tx};
use super::fleet::Expect;
use crate::audit::entry::AuditEvent;
use crate::rotation::adapter::Minted;
use crate::rotation::record::{Attempt, HealthCheck, KeyRef, Phase, RotationResult};
use crate::rotation::store::{StoreError, Version};
use crate::secrets::fingerprint::Fingerprint;

/// Fields a rotation writes next to `api_key` (and drops from the previous version's).
const ROTATION_FIELDS: &[&str] = &[
    "rotated_at",
    "rotated_by",
    "key_id",
    "key_owner",
    "previous_version",
    "rotation_id",
    "revoked",
    "revoked_at",
    "revoked_by",
    "revoked_reason",
];

/// Why a new key is not stored: it is not (`No`), or nobody can tell (`Unknown`, Vault
/// unreachable: then nothing may be undone).
enum Unstored {
    No(String),
    Unknown(String),
}

/// The fingerprint of a version's key (None for a tombstone).
pub(super) fn fingerprint_of(version: &Version) -> Option<Fingerprint> {
    version
        .key
        .as_ref()
        .map(|k| Fingerprint::of(k.expose_secret()))
}

/// Health-check attempts (a freshly minted key can take a moment to work everywhere).
const HEALTH_ATTEMPTS: u32 = 3;
const HEALTH_PAUSE: Duration = Duration::from_millis(700);

impl Rotator {
    /// Rotates the credential. `supplied` is the new key for accept-mode providers.
    /// `emergency` skips the grace period (the old key is revoked right after the switch).
    /// Ok(None): nothing to do; Ok(Some(result)): how the rotation ended.
    pub async fn rotate(
        &self,
        supplied: Option<SecretString>,
        emergency: bool,
    ) -> Result<RotationResult, RotateError> {
        match (self.adapter.mints(), supplied.is_some()) {
            (false, false) => {
                return Err(self.refused(format!(
                    "the {} adapter cannot mint keys: create the new key at the provider and pass it with --new-key-file FILE or --new-key-stdin",
                    self.adapter.name()
                )))
            }
            (true, true) => {
                return Err(self.refused(format!(
                    "the {} adapter mints the new key itself; --new-key-file/--new-key-stdin are for accept-mode providers",
                    self.adapter.name()
                )))
            }
            _ => {}
        }
        let mut tx = self.read().await?;
        if let Some(finished) = self.settle(&mut tx, emergency).await? {
            self.say("the interrupted rotation is finished: no other rotation started");
            return Ok(finished);
        }
        let current = self.store.version(None).await?;
        let old_fingerprint = fingerprint_of(&current);
        let old_key = self.old_key_ref(&current).await?;
        let id = rotation_id();
        let attempt = Attempt {
            tag: format!("keygate-{}-{id}", self.reference.replace('/', "-")),
            id,
            by: self.actor.clone(),
            started_at: Some(SystemTime::now()),
            holder: self.me.clone(),
            emergency,
            previous_version: Some(current.version),
            old_fingerprint,
            old_key: old_key.clone(),
            new_fingerprint: None,
            new_key: self.adapter.planned(old_key.as_ref()),
            new_version: None,
            grace_secs: if emergency { 0 } else { self.grace.as_secs() },
            revoke_after: None,
            failure: None,
        };
        let (id, tag) = (attempt.id.clone(), attempt.tag.clone());
        self.checkpoint(&mut tx, |r| {
            r.phase = Phase::Minting;
            r.attempt = Some(attempt);
        })
        .await?;
        self.say(format!(
            "rotation {id} started by {} (current version {}, {})",
            self.actor,
            current.version,
            old_fingerprint.map_or("no key".into(), |f| f.to_string())
        ));

        let minted = match supplied {
            None => match self.adapter.mint(&tag, old_key.as_ref()).await {
                Ok(m) => m,
                Err(e) => {
                    return self
                        .roll_back_unstored(&mut tx, "mint", &e.to_string())
                        .await
                }
            },
            Some(key) => {
                let key_ref = match self.adapter.identify(&key).await {
                    Ok(found) => found,
                    Err(e) => {
                        return self
                            .roll_back_unstored(&mut tx, "identify", &e.to_string())
                            .await
                    }
                };
                if key_ref.is_none() {
                    self.say("the new key was not found through the provider's admin API: it cannot be revoked automatically later");
                }
                Minted {
                    key,
                    key_ref: key_ref.unwrap_or(KeyRef {
                        id: String::new(),
                        owner: None,
                    }),
                }
            }
        };
        let new_fingerprint = Fingerprint::of(minted.key.expose_secret());
        let new_key = (!minted.key_ref.id.is_empty()).then(|| minted.key_ref.clone());
        self.checkpoint(&mut tx, |r| {
            r.phase = Phase::Minted;
            if let Some(a) = &mut r.attempt {
                a.new_fingerprint = Some(new_fingerprint);
                a.new_key = new_key.clone();
            }
        })
        .await?;
        self.say(format!(
            "new key {new_fingerprint} ({})",
            new_key
                .as_ref()
                .map_or("not found at the provider", |k| k.id.as_str())
        ));

        if let Err(detail) = self.health_check(&mut tx, &minted.key).await? {
            return self
                .roll_back_unstored(&mut tx, "health_check", &detail)
                .await;
        }
        let stored = match self.store_new(&current, &minted, &id).await {
            Ok(version) => version,
            Err(Unstored::No(detail)) => return self.roll_back_unstored(&mut tx, "store", &detail).await,
            Err(Unstored::Unknown(detail)) => {
                return Err(self.refused(format!(
                    "{detail}; the record keeps rotation {id} at `minted`: run keygate rotate again to finish or undo it"
                )))
            }
        };
        self.checkpoint(&mut tx, |r| {
            r.phase = Phase::Stored;
            if let Some(a) = &mut r.attempt {
                a.new_version = Some(stored);
            }
        })
        .await?;
        self.say(format!(
            "stored as version {stored} of {}",
            self.store.shown()
        ));
        self.switch_and_finish(&mut tx, new_fingerprint).await
    }

    /// Switches every replica to the stored key and confirms; finishes the rotation (grace
    /// period, or at once for an emergency) or rolls it back.
    pub(super) async fn switch_and_finish(
        &self,
        tx: &mut Tx,
        fingerprint: Fingerprint,
    ) -> Result<RotationResult, RotateError> {
        let started = std::time::Instant::now();
        let switched = self
            .fleet
            .switch(
                &self.reference,
                Expect::Serving(fingerprint),
                self.switch_within,
            )
            .await;
        let detail = self.switched(&switched);
        if switched.is_err() {
            return self.roll_back_stored(tx, "switch", &detail).await;
        }
        self.say(format!(
            "switched: {detail} in {:.2}s",
            started.elapsed().as_secs_f64()
        ));
        let now = SystemTime::now();
        self.checkpoint(tx, |r| r.finish(RotationResult::Ok, "switch", &detail, now))
            .await?;
        // The replicas re-read the record: keygate_rotation_total and the inventory move now.
        let _ = self
            .fleet
            .switch(&self.reference, Expect::Any, self.switch_within)
            .await;
        self.report(AuditEvent::CredentialRotated, tx, &self.summary(tx), "")
            .await;
        let emergency = tx
            .record
            .attempt
            .as_ref()
            .is_some_and(|a| a.emergency || a.grace_secs == 0);
        if emergency {
            self.finish_grace(tx).await?;
        } else if let Some(until) = tx.record.attempt.as_ref().and_then(|a| a.revoke_after) {
            self.say(format!(
                "the old key stays valid at the provider until {} (grace), then the next `keygate rotate` run revokes it",
                humantime::format_rfc3339_seconds(until)
            ));
        }
        Ok(RotationResult::Ok)
    }

    /// `old fp → new fp (version N)` for audit lines and notifications.
    pub(super) fn summary(&self, tx: &Tx) -> String {
        let Some(a) = &tx.record.attempt else {
            return String::new();
        };
        let fp = |f: Option<Fingerprint>| f.map_or("none".to_string(), |f| f.to_string());
        format!(
            "rotation {}: {} -> {} (version {})",
            a.id,
            fp(a.old_fingerprint),
            fp(a.new_fingerprint),
            a.new_version.map_or("-".into(), |v| v.to_string())
        )
    }

    /// The provider's name for the key in use: from the entry (`key_id`), else found
    /// through the admin API. An admin API failure stops the rotation before it starts.
    async fn old_key_ref(&self, current: &Version) -> Result<Option<KeyRef>, RotateError> {
        let text = |name: &str| {
            current
                .meta
                .get(name)
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        if let Some(id) = text("key_id").filter(|id| !id.is_empty()) {
            return Ok(Some(KeyRef {
                id,
                owner: text("key_owner"),
            }));
        }
        let Some(key) = &current.key else {
            return Ok(None);
        };
        let found = self.adapter.identify(key).await?;
        if found.is_none() {
            self.say("the current key was not found through the provider's admin API: revoke it by hand after the grace period");
        }
        Ok(found)
    }

    /// Health-checks `key` against the provider (a few attempts) and records the result.
    /// Ok(Err(detail)) when the key does not work.
    async fn health_check(
        &self,
        tx: &mut Tx,
        key: &SecretString,
    ) -> Result<Result<(), String>, RotateError> {
        let mut last = String::new();
        for attempt in 1..=HEALTH_ATTEMPTS {
            match self.adapter.health_check(key).await {
                Ok(()) => {
                    last.clear();
                    break;
                }
                Err(e) => last = e.to_string(),
            }
            if attempt < HEALTH_ATTEMPTS {
                tokio::time::sleep(HEALTH_PAUSE).await;
            }
        }
        let check = HealthCheck {
            at: Some(SystemTime::now()),
            ok: last.is_empty(),
            fingerprint: Fingerprint::of(key.expose_secret()),
            detail: last.clone(),
        };
        self.checkpoint(tx, |r| r.last_health_check = Some(check))
            .await?;
        if last.is_empty() {
            self.say("health check: ok");
            Ok(Ok(()))
        } else {
            self.say(format!("health check failed: {last}"));
            Ok(Err(last))
        }
    }

    /// Writes the new key as a new version (check-and-set on the version read at the start).
    /// When the write's answer was lost, reads back to learn whether it happened.
    async fn store_new(
        &self,
        current: &Version,
        minted: &Minted,
        id: &str,
    ) -> Result<u64, Unstored> {
        let mut meta: Map<String, Value> = current
            .meta
            .iter()
            .filter(|(k, _)| !ROTATION_FIELDS.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let now = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
        for (name, value) in [
            ("rotated_at", Some(now)),
            ("rotated_by", Some(self.actor.clone())),
            (
                "key_id",
                Some(minted.key_ref.id.clone()).filter(|id| !id.is_empty()),
            ),
            ("key_owner", minted.key_ref.owner.clone()),
            ("previous_version", Some(current.version.to_string())),
            ("rotation_id", Some(id.to_string())),
        ] {
            if let Some(value) = value {
                meta.insert(name.into(), Value::String(value));
            }
        }
        match self
            .store
            .write(Some(&minted.key), meta, current.version)
            .await
        {
            Ok(version) => Ok(version),
            Err(StoreError::Conflict { .. }) => Err(Unstored::No(
                "the credential changed in Vault during the rotation".into(),
            )),
            Err(e) => {
                let wanted = Fingerprint::of(minted.key.expose_secret());
                match self.store.version(None).await {
                    Ok(now) if fingerprint_of(&now) == Some(wanted) => Ok(now.version),
                    Ok(_) => Err(Unstored::No(format!("vault write failed: {e}"))),
                    Err(_) => Err(Unstored::Unknown(format!(
                        "vault write failed and the credential cannot be read back: {e}"
                    ))),
                }
            }
        }
    }
}
