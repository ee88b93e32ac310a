//! `keygate credentials revoke CREDENTIAL --reason …`: the credential's key is compromised.
//! Every replica stops using it at once (the admin API's RevokeCredential on every target,
//! persisted and broadcast like any revocation): its consumers get 503 `credential_revoked`,
//! or with `--rotate` the replacement minted and switched to first. Vault keeps the
//! revocation as a tombstone version (so a replica started later does not serve the key
//! either), the provider revokes the key, and the rotation record remembers who and why.

use std::time::SystemTime;

use secrecy::SecretString;
use serde_json::{Map, Value};

use super::context::{RotateError, Rotator};
use super::fleet::Expect;
use super::transaction::fingerprint_of;
use crate::rotation::adapter::Revoked;
use crate::rotation::record::{KeyRef, Revocation, RotationResult};
use crate::rotation::store::StoreError;

/// What the emergency did, for the operator.
#[derive(Debug, Default)]
pub struct Revocations {
    /// A replacement is served (with `--rotate`).
    pub replaced: bool,
    /// Replicas that applied the revocation.
    pub replicas: usize,
    /// The provider no longer accepts the key.
    pub at_provider: bool,
}

impl Rotator {
    /// Revokes the credential's current key everywhere; with `replace`, mints (or accepts)
    /// and switches to a replacement first. `supplied` is an accept-mode replacement.
    pub async fn revoke_now(
        &self,
        reason: &str,
        replace: bool,
        supplied: Option<SecretString>,
    ) -> Result<Revocations, RotateError> {
        let current = self.store.version(None).await?;
        let Some(old) = fingerprint_of(&current) else {
            self.say("the credential holds no key (already revoked); nothing to revoke");
            return Ok(Revocations::default());
        };
        let old_key = current
            .meta
            .get("key_id")
            .and_then(Value::as_str)
            .filter(|id| !id.is_empty())
            .map(|id| KeyRef {
                id: id.to_string(),
                owner: current
                    .meta
                    .get("key_owner")
                    .and_then(Value::as_str)
                    .map(str::to_string),
            });
        let mut done = Revocations::default();
        if replace {
            match self.rotate(supplied, true).await {
                Ok(RotationResult::Ok) => {
                    done.replaced = true;
                    done.at_provider = self.old_revoked.load(std::sync::atomic::Ordering::Relaxed);
                }
                Ok(other) => self.say(format!(
                    "no replacement ({}): revoking without one; consumers get 503 credential_revoked",
                    other.as_str()
                )),
                Err(e) => self.say(format!(
                    "no replacement ({e}): revoking without one; consumers get 503 credential_revoked"
                )),
            }
        }
        let started = std::time::Instant::now();
        match self.fleet.revoke(&self.reference, old, reason).await {
            Ok(n) => {
                done.replicas = n;
                self.say(format!(
                    "{old} revoked on {n} replica(s) in {:.3}s",
                    started.elapsed().as_secs_f64()
                ));
            }
            Err(e) => self.say(format!("revoking {old} on the replicas: {e}")),
        }
        if !done.replaced {
            self.tombstone(&current.meta, current.version, reason).await;
            let _ = self
                .fleet
                .switch(&self.reference, Expect::Revoked, self.switch_within)
                .await;
            done.at_provider = self
                .revoke_at_provider(&current.key, old_key.as_ref())
                .await;
        }
        self.remember(old, reason, done.at_provider).await?;
        Ok(done)
    }

    /// Writes a version without `api_key` that says who revoked it and why.
    async fn tombstone(&self, meta: &Map<String, Value>, version: u64, reason: &str) {
        let mut data = Map::new();
        for keep in ["owner", "scope", "key_id", "key_owner"] {
            if let Some(v) = meta.get(keep) {
                data.insert(keep.into(), v.clone());
            }
        }
        let now = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
        for (k, v) in [
            ("revoked", Value::Bool(true)),
            ("revoked_at", Value::String(now)),
            ("revoked_by", Value::String(self.actor.clone())),
            (
                "revoked_reason",
                Value::String(crate::notify::redact::redact(reason)),
            ),
            ("previous_version", Value::String(version.to_string())),
        ] {
            data.insert(k.into(), v);
        }
        match self.store.write(None, data, version).await {
            Ok(v) => self.say(format!(
                "vault: version {v} of {} marks it revoked",
                self.store.shown()
            )),
            Err(StoreError::Conflict { .. }) => self
                .say("vault: the credential changed meanwhile; its new version is left as it is"),
            Err(e) => self.say(format!("vault: could not write the revocation: {e}")),
        }
    }

    async fn revoke_at_provider(&self, key: &Option<SecretString>, known: Option<&KeyRef>) -> bool {
        let key_ref = match (known, key) {
            (Some(k), _) => Some(k.clone()),
            (None, Some(key)) => self.adapter.identify(key).await.ok().flatten(),
            (None, None) => None,
        };
        let Some(key_ref) = key_ref else {
            self.say("provider: the key was not found through the admin API: revoke it by hand");
            return false;
        };
        match self.adapter.revoke(&key_ref).await {
            Ok(Revoked::Done) => {
                self.say(format!("provider: {} revoked", key_ref.id));
                true
            }
            Ok(Revoked::Manual) => {
                self.say(format!(
                    "provider: revoke {} by hand (no API for it)",
                    key_ref.id
                ));
                false
            }
            Err(e) => {
                self.say(format!(
                    "provider: revoking {} failed: {e}; revoke it by hand",
                    key_ref.id
                ));
                false
            }
        }
    }

    /// Adds the revocation to the record (retrying once if another run wrote meanwhile).
    async fn remember(
        &self,
        fingerprint: crate::secrets::Fingerprint,
        reason: &str,
        at_provider: bool,
    ) -> Result<(), RotateError> {
        let entry = Revocation {
            at: Some(SystemTime::now()),
            by: self.actor.clone(),
            reason: crate::notify::redact::redact(reason),
            fingerprint: Some(fingerprint),
            at_provider,
            detail: String::new(),
        };
        for _ in 0..3 {
            let mut tx = self.read().await?;
            let mut record = tx.record.clone();
            record.remember(entry.clone());
            match self.store.save(&record, tx.cas).await {
                Ok(cas) => {
                    tx.cas = cas;
                    return Ok(());
                }
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(self
            .refused("the rotation record keeps changing; the revocation is not recorded in it"))
    }
}
