//! One credential's rotator: its Vault store, its provider adapter, the replicas, and the
//! check-and-set discipline every step follows (each step renews the run's lease and fails
//! with [`RotateError::Lost`] the moment another run has written the record).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::audit::entry::AuditEvent;
use crate::rotation::adapter::{AdapterError, ProviderAdapter};
use crate::rotation::record::{Holder, RotationRecord};
use crate::rotation::store::{StoreError, VaultStore};

use super::fleet::{Event, Fleet, FleetError};

/// Why a rotation could not start, or lost its claim. (A failure once it started is undone
/// and reported as a result, not as an error.)
#[derive(Debug, thiserror::Error)]
pub enum RotateError {
    #[error("{credential}: a rotation is under way ({phase} by {by} on {host}, pid {pid}): nothing done")]
    Busy {
        credential: String,
        phase: &'static str,
        by: String,
        host: String,
        pid: u32,
    },
    #[error("{credential}: the previous rotation's old key is in its grace period until {until}; it must be revoked before the next rotation")]
    InGrace { credential: String, until: String },
    #[error("{credential}: another run took over this rotation; it finishes it")]
    Lost { credential: String },
    #[error("{credential}: {what}")]
    Refused { credential: String, what: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Adapter(#[from] AdapterError),
}

/// The record as last read or written, and the version to check-and-set against.
#[derive(Debug)]
pub struct Tx {
    pub record: RotationRecord,
    pub cas: u64,
}

/// Everything one credential's rotation needs.
pub struct Rotator {
    pub reference: String,
    /// Who asked (audit and the record's `by`).
    pub actor: String,
    pub grace: Duration,
    pub lease: Duration,
    /// How long replicas get to confirm a switch.
    pub switch_within: Duration,
    pub store: VaultStore,
    pub adapter: Box<dyn ProviderAdapter>,
    pub fleet: Arc<dyn Fleet>,
    /// This run, as a record holder.
    pub me: Holder,
    /// What happened, in order, for the operator (never a key).
    pub log: std::sync::Mutex<Vec<String>>,
    /// Set when this run revoked an old key at the provider.
    pub old_revoked: std::sync::atomic::AtomicBool,
}

impl Rotator {
    /// The holder identity of this process.
    pub fn this_process() -> Holder {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "unknown".into());
        Holder {
            host,
            pid: std::process::id(),
            lease_until: None,
        }
    }

    /// Whether a process on this host is alive (Linux: it has a /proc entry).
    pub fn alive(pid: u32) -> bool {
        std::path::Path::new("/proc").join(pid.to_string()).exists()
    }

    /// Notes a step for the operator's output.
    pub fn say(&self, line: impl Into<String>) {
        let line = line.into();
        tracing::info!(credential = %self.reference, "{line}");
        if let Ok(mut log) = self.log.lock() {
            log.push(line);
        }
    }

    pub fn lines(&self) -> Vec<String> {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Reads the record afresh.
    pub async fn read(&self) -> Result<Tx, RotateError> {
        let (record, cas) = self.store.record().await?;
        Ok(Tx { record, cas })
    }

    /// Applies `change` to the record, renews this run's lease on the attempt, and saves it
    /// with check-and-set. Losing the race means another run owns the rotation now.
    pub async fn checkpoint(
        &self,
        tx: &mut Tx,
        change: impl FnOnce(&mut RotationRecord),
    ) -> Result<(), RotateError> {
        let mut next = tx.record.clone();
        change(&mut next);
        if let Some(attempt) = &mut next.attempt {
            if next.phase.held() {
                attempt.holder = Holder {
                    lease_until: Some(SystemTime::now() + self.lease),
                    ..self.me.clone()
                };
            }
        }
        match self.store.save(&next, tx.cas).await {
            Ok(cas) => {
                tx.record = next;
                tx.cas = cas;
                Ok(())
            }
            Err(StoreError::Conflict { .. }) => Err(RotateError::Lost {
                credential: self.reference.clone(),
            }),
            Err(e) => Err(e.into()),
        }
    }

    /// Tells one replica's audit log and webhooks; a failure is only logged (the record in
    /// Vault holds the outcome whatever happens).
    pub async fn report(&self, event: AuditEvent, tx: &Tx, detail: &str, reason: &str) {
        let (rotation, fingerprint) = tx
            .record
            .attempt
            .as_ref()
            .map(|a| (a.id.clone(), a.new_fingerprint.or(a.old_fingerprint)))
            .or_else(|| tx.record.last.as_ref().map(|l| (l.id.clone(), None)))
            .unwrap_or_default();
        let event = Event {
            event,
            credential: self.reference.clone(),
            rotation,
            fingerprint,
            detail: detail.to_string(),
            actor: self.actor.clone(),
            reason: reason.to_string(),
        };
        if let Err(e) = self.fleet.report(&event).await {
            self.say(format!(
                "could not record the outcome in a replica's audit log: {e}"
            ));
        }
    }

    pub fn refused(&self, what: impl Into<String>) -> RotateError {
        RotateError::Refused {
            credential: self.reference.clone(),
            what: what.into(),
        }
    }

    /// The switch, in words.
    pub fn switched(&self, result: &Result<usize, FleetError>) -> String {
        match result {
            Ok(n) => format!("{n} replica(s) confirmed"),
            Err(e) => e.to_string(),
        }
    }
}

/// A new id for a rotation: `rot_` and 12 hex digits.
pub fn rotation_id() -> String {
    format!("rot_{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff)
}
