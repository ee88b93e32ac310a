//! What a run does first with what earlier runs left: a held step whose holder is gone is
//! taken over and finished or undone; an old key whose grace period is over is revoked at
//! the provider, exactly once (the run that moves the record to `revoking` does it).

use std::time::SystemTime;

use super::context::{RotateError, Rotator, Tx};
use super::transaction::fingerprint_of;
use crate::audit::entry::AuditEvent;
use crate::rotation::adapter::Revoked;
use crate::rotation::record::{Phase, RotationResult};

impl Rotator {
    /// Leaves the record idle, or explains why it cannot: another live run holds it, or the
    /// old key's grace period is not over (`early`: revoke it anyway, for an emergency).
    /// `Some(Ok)`: it finished a rotation an earlier run had left halfway (the key changed).
    pub async fn settle(
        &self,
        tx: &mut Tx,
        early: bool,
    ) -> Result<Option<RotationResult>, RotateError> {
        for _ in 0..4 {
            let phase = tx.record.phase;
            match phase {
                Phase::Idle => return Ok(None),
                Phase::Grace if early || tx.record.grace_over(SystemTime::now()) => {
                    self.finish_grace(tx).await?;
                }
                Phase::Grace => {
                    let until = tx
                        .record
                        .attempt
                        .as_ref()
                        .and_then(|a| a.revoke_after)
                        .map_or("-".into(), |t| {
                            humantime::format_rfc3339_seconds(t).to_string()
                        });
                    return Err(RotateError::InGrace {
                        credential: self.reference.clone(),
                        until,
                    });
                }
                held => {
                    if !tx
                        .record
                        .can_take_over(SystemTime::now(), &self.me, Rotator::alive)
                    {
                        let attempt = tx.record.attempt.clone();
                        let (by, host, pid) = attempt
                            .map(|a| (a.by, a.holder.host, a.holder.pid))
                            .unwrap_or_default();
                        return Err(RotateError::Busy {
                            credential: self.reference.clone(),
                            phase: held.as_str(),
                            by,
                            host,
                            pid,
                        });
                    }
                    if let Some(RotationResult::Ok) = self.recover(tx).await? {
                        return Ok(Some(RotationResult::Ok));
                    }
                }
            }
            *tx = self.read().await?;
        }
        Err(self.refused("the rotation record keeps changing; try again"))
    }

    /// Takes over a step whose holder is gone and finishes or undoes it.
    async fn recover(&self, tx: &mut Tx) -> Result<Option<RotationResult>, RotateError> {
        let phase = tx.record.phase;
        let Some(attempt) = tx.record.attempt.clone() else {
            self.checkpoint(tx, |r| r.phase = Phase::Idle).await?;
            return Ok(None);
        };
        self.checkpoint(tx, |_| {}).await?;
        self.say(format!(
            "taking over rotation {} (left at `{}` by {} on {}, pid {})",
            attempt.id,
            phase.as_str(),
            attempt.by,
            attempt.holder.host,
            attempt.holder.pid
        ));
        let current = self.store.version(None).await?;
        let stored = attempt.new_fingerprint.is_some()
            && fingerprint_of(&current) == attempt.new_fingerprint;
        let result = match phase {
            Phase::Revoking => {
                self.finish_grace(tx).await?;
                return Ok(None);
            }
            Phase::Minting | Phase::Minted if stored => {
                // The run died after Vault took the key but before it said so.
                self.checkpoint(tx, |r| {
                    r.phase = Phase::Stored;
                    if let Some(a) = &mut r.attempt {
                        a.new_version = Some(current.version);
                    }
                })
                .await?;
                self.complete_stored(tx).await?
            }
            Phase::Minting | Phase::Minted => {
                let why = "the run died before the new key was stored; its key was lost with it";
                self.roll_back_unstored(tx, "recover", why).await?
            }
            Phase::Stored if stored => self.complete_stored(tx).await?,
            Phase::Stored | Phase::RollingBack if attempt.new_version.is_some() || stored => {
                let why = attempt
                    .failure
                    .clone()
                    .unwrap_or_else(|| "the credential changed in Vault meanwhile".into());
                self.roll_back_stored(tx, "recover", &why).await?
            }
            Phase::Stored | Phase::RollingBack => {
                let why = attempt
                    .failure
                    .clone()
                    .unwrap_or_else(|| "the run died".into());
                self.roll_back_unstored(tx, "recover", &why).await?
            }
            Phase::Idle | Phase::Grace => return Ok(None),
        };
        Ok(Some(result))
    }

    /// Finishes a rotation whose key is stored: health-check it again (it is read back from
    /// Vault), then switch, or roll back.
    async fn complete_stored(&self, tx: &mut Tx) -> Result<RotationResult, RotateError> {
        let current = self.store.version(None).await?;
        let (Some(key), Some(fingerprint)) = (&current.key, fingerprint_of(&current)) else {
            return self
                .roll_back_stored(tx, "recover", "the stored key is gone")
                .await;
        };
        if let Err(e) = self.adapter.health_check(key).await {
            return self
                .roll_back_stored(tx, "health_check", &e.to_string())
                .await;
        }
        self.say("health check of the stored key: ok");
        self.switch_and_finish(tx, fingerprint).await
    }

    /// Revokes the previous rotation's old key at the provider. The run that moves the
    /// record from `grace` to `revoking` is the one that revokes (check-and-set): exactly
    /// once, whoever comes first. A failure puts it back to `grace` and counts as failed.
    pub async fn finish_grace(&self, tx: &mut Tx) -> Result<(), RotateError> {
        if tx.record.phase == Phase::Grace {
            self.checkpoint(tx, |r| r.phase = Phase::Revoking).await?;
        }
        let Some(attempt) = tx.record.attempt.clone() else {
            self.checkpoint(tx, |r| r.phase = Phase::Idle).await?;
            return Ok(());
        };
        let outcome = match &attempt.old_key {
            None => Ok(Revoked::Manual),
            Some(key) => self.adapter.revoke(key).await,
        };
        let old = attempt
            .old_fingerprint
            .map_or("the old key".into(), |f| f.to_string());
        match outcome {
            Ok(done) => {
                if done == Revoked::Done && attempt.old_key.is_some() {
                    self.old_revoked
                        .store(true, std::sync::atomic::Ordering::Relaxed);
                }
                let detail = match (done, &attempt.old_key) {
                    (Revoked::Done, Some(k)) => format!("{old} ({}) revoked at the provider", k.id),
                    _ => format!("{old}: revoke it at the provider by hand (the provider has no API for it, or it was not found)"),
                };
                self.checkpoint(tx, |r| {
                    r.phase = Phase::Idle;
                    r.attempt = None;
                })
                .await?;
                let _ = self
                    .fleet
                    .switch(
                        &self.reference,
                        crate::rotator::Expect::Any,
                        self.switch_within,
                    )
                    .await;
                self.say(format!("grace period over: {detail}"));
                let event = crate::rotator::fleet::Event {
                    event: AuditEvent::OldKeyRevoked,
                    credential: self.reference.clone(),
                    rotation: attempt.id.clone(),
                    fingerprint: attempt.old_fingerprint,
                    detail,
                    actor: self.actor.clone(),
                    reason: String::new(),
                };
                if let Err(e) = self.fleet.report(&event).await {
                    self.say(format!(
                        "could not record the outcome in a replica's audit log: {e}"
                    ));
                }
                Ok(())
            }
            Err(e) => {
                let detail = format!("revoking the old key {old} failed: {e}");
                let now = SystemTime::now();
                let step_detail = detail.clone();
                self.checkpoint(tx, move |r| {
                    r.phase = Phase::Grace;
                    *r.counts
                        .entry(RotationResult::Failed.as_str().into())
                        .or_insert(0) += 1;
                    r.last = Some(crate::rotation::record::Outcome {
                        id: attempt.id.clone(),
                        result: RotationResult::Failed,
                        at: Some(now),
                        by: attempt.by.clone(),
                        step: "revoke_old".into(),
                        detail: step_detail,
                    });
                })
                .await?;
                self.report(AuditEvent::RotationFailed, tx, &detail, &detail)
                    .await;
                Err(self.refused(detail))
            }
        }
    }
}
