//! Undoing a rotation. Before the new key was stored, undoing is revoking it at the provider.
//! After, the previous KV version becomes current again (written as a new version, as Vault's
//! own `kv rollback` does), every replica is switched back and confirms, and only then is
//! the new key revoked. A step that cannot be undone safely (a replica that cannot confirm,
//! the provider refusing) leaves the record at `rolling_back`: the rotation is counted as
//! failed, and the next run continues the rollback.

use std::time::SystemTime;

use super::context::{RotateError, Rotator, Tx};
use super::fleet::Expect;
use super::transaction::fingerprint_of;
use crate::audit::entry::AuditEvent;
use crate::rotation::adapter::Revoked;
use crate::rotation::record::{Phase, RotationResult};

impl Rotator {
    /// The new key never became current: revoke it and end as rolled back.
    pub(super) async fn roll_back_unstored(
        &self,
        tx: &mut Tx,
        step: &str,
        why: &str,
    ) -> Result<RotationResult, RotateError> {
        self.say(format!("{step} failed: {why}; rolling back"));
        self.checkpoint(tx, |r| {
            r.phase = Phase::RollingBack;
            if let Some(a) = &mut r.attempt {
                a.failure = Some(format!("{step}: {why}"));
            }
        })
        .await?;
        if let Err(detail) = self.revoke_new(tx).await {
            return self.fail(tx, step, &format!("{why}; {detail}")).await;
        }
        self.finish_rolled_back(tx, step, why).await
    }

    /// The new key was stored: restore the previous version, switch back, revoke the new key.
    pub(super) async fn roll_back_stored(
        &self,
        tx: &mut Tx,
        step: &str,
        why: &str,
    ) -> Result<RotationResult, RotateError> {
        self.say(format!("{step} failed: {why}; rolling back"));
        self.checkpoint(tx, |r| {
            r.phase = Phase::RollingBack;
            if let Some(a) = &mut r.attempt {
                a.failure = Some(format!("{step}: {why}"));
            }
        })
        .await?;
        let Some(attempt) = tx.record.attempt.clone() else {
            return Err(self.refused("the record lost its attempt"));
        };
        let current = self.store.version(None).await?;
        let current_fp = fingerprint_of(&current);
        if current_fp.is_some() && current_fp == attempt.new_fingerprint {
            let Some(previous) = attempt.previous_version else {
                return self.fail(tx, step, "no previous version to restore").await;
            };
            let old = self.store.version(Some(previous)).await?;
            match self
                .store
                .write(old.key.as_ref(), old.meta, current.version)
                .await
            {
                Ok(v) => self.say(format!("restored version {previous} as version {v}")),
                Err(e) => {
                    return self
                        .fail(
                            tx,
                            step,
                            &format!("{why}; restoring version {previous} failed: {e}"),
                        )
                        .await
                }
            }
        } else if current_fp != attempt.old_fingerprint {
            let detail = format!(
                "{why}; the credential changed in Vault meanwhile, so the rollback leaves it alone"
            );
            return self.fail(tx, step, &detail).await;
        }
        let expect = match attempt.old_fingerprint {
            Some(fp) => Expect::Serving(fp),
            None => Expect::Revoked,
        };
        let back = self
            .fleet
            .switch(&self.reference, expect, self.switch_within)
            .await;
        if back.is_err() {
            let detail = format!(
                "{why}; switching back: {} (the new key stays valid until every replica confirms the old one)",
                self.switched(&back)
            );
            return self.fail(tx, step, &detail).await;
        }
        self.say(format!("switched back: {}", self.switched(&back)));
        if let Err(detail) = self.revoke_new(tx).await {
            return self.fail(tx, step, &format!("{why}; {detail}")).await;
        }
        self.finish_rolled_back(tx, step, why).await
    }

    /// Revokes the attempt's new key at the provider (by id, else by the tag it was minted
    /// under).
    async fn revoke_new(&self, tx: &Tx) -> Result<(), String> {
        let Some(attempt) = &tx.record.attempt else {
            return Ok(());
        };
        let result = match &attempt.new_key {
            Some(key) => self.adapter.revoke(key).await.map(|r| match r {
                Revoked::Done => format!("revoked the new key {} at the provider", key.id),
                Revoked::Manual => format!("revoke the new key {} at the provider by hand", key.id),
            }),
            None if self.adapter.mints() => {
                self.adapter.revoke_tagged(&attempt.tag).await.map(|n| {
                    format!(
                        "revoked {n} key(s) minted as {} at the provider",
                        attempt.tag
                    )
                })
            }
            None => {
                Ok("the new key was never identified at the provider: revoke it by hand".into())
            }
        };
        match result {
            Ok(line) => {
                self.say(line);
                Ok(())
            }
            Err(e) => Err(format!("revoking the new key failed: {e}")),
        }
    }

    async fn finish_rolled_back(
        &self,
        tx: &mut Tx,
        step: &str,
        why: &str,
    ) -> Result<RotationResult, RotateError> {
        let summary = self.summary(tx);
        let now = SystemTime::now();
        self.checkpoint(tx, |r| r.finish(RotationResult::RolledBack, step, why, now))
            .await?;
        // The replicas re-read the record (keygate_rotation_total moves now).
        let expect = match fingerprint_of(&self.store.version(None).await?) {
            Some(fp) => Expect::Serving(fp),
            None => Expect::Revoked,
        };
        let _ = self
            .fleet
            .switch(&self.reference, expect, self.switch_within)
            .await;
        self.report(
            AuditEvent::RotationRolledBack,
            tx,
            &format!("{summary}: {step} failed: {why}"),
            why,
        )
        .await;
        self.say("rolled back: the previous key is current, the new key is revoked");
        Ok(RotationResult::RolledBack)
    }

    /// Something could not be undone: count the rotation as failed, keep the record where
    /// it is (the next run continues), tell the operator.
    pub(super) async fn fail(
        &self,
        tx: &mut Tx,
        step: &str,
        detail: &str,
    ) -> Result<RotationResult, RotateError> {
        self.say(format!("FAILED at {step}: {detail}"));
        let now = SystemTime::now();
        let (step_owned, detail_owned) = (step.to_string(), detail.to_string());
        self.checkpoint(tx, move |r| {
            *r.counts
                .entry(RotationResult::Failed.as_str().into())
                .or_insert(0) += 1;
            r.last = Some(crate::rotation::record::Outcome {
                id: r.attempt.as_ref().map(|a| a.id.clone()).unwrap_or_default(),
                result: RotationResult::Failed,
                at: Some(now),
                by: r.attempt.as_ref().map(|a| a.by.clone()).unwrap_or_default(),
                step: step_owned,
                detail: detail_owned,
            });
        })
        .await?;
        let _ = self
            .fleet
            .switch(&self.reference, Expect::Any, self.switch_within)
            .await;
        self.report(
            AuditEvent::RotationFailed,
            tx,
            &format!("{}: {detail}", self.summary(tx)),
            detail,
        )
        .await;
        Ok(RotationResult::Failed)
    }
}
