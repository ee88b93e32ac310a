//! The overrides and their durable state file.
//!
//! Every change is applied at once (the compiled [`Overrides`] the gate reads are swapped) and
//! written atomically (temp file + rename). Replicas may share the file: a writer takes an
//! exclusive lock on `<file>.lock`, re-reads the file and applies its action on top, so one
//! replica never overwrites another's action. Revocations are final and never lost: a merge
//! keeps every revoked key and consumer from both sides, and a state file that is found empty
//! or deleted is written again from memory instead of dropping what it held.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use super::action::Action;
use crate::auth::{OverrideState, Overrides};
use crate::config::ConsumerStatus;

/// Why the state file could not be read or written.
#[derive(Debug, thiserror::Error)]
#[error("admin.state_file {path}: {reason}")]
pub struct StateError {
    path: String,
    reason: String,
}

/// What a read of the state file found.
#[derive(Debug, PartialEq)]
pub enum FileState {
    /// Missing, or empty: nothing written yet, or lost.
    Absent,
    Present(OverrideState),
}

/// Reads a state file.
pub fn read_state(path: &Path) -> Result<FileState, StateError> {
    match std::fs::read_to_string(path) {
        Ok(text) if text.trim().is_empty() => Ok(FileState::Absent),
        Ok(text) => serde_yaml::from_str(&text)
            .map(FileState::Present)
            .map_err(|e| state_error(path, &e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(FileState::Absent),
        Err(e) => Err(state_error(path, &e)),
    }
}

fn state_error(path: &Path, e: &dyn std::fmt::Display) -> StateError {
    StateError {
        path: path.display().to_string(),
        reason: e.to_string(),
    }
}

/// `base` with every revocation of `other` added: revoked keys and revoked consumers survive
/// any merge.
fn keep_revocations(mut base: OverrideState, other: &OverrideState) -> OverrideState {
    base.revoked_keys.extend(other.revoked_keys.iter().copied());
    for (fingerprint, credential) in &other.revoked_credentials {
        base.revoked_credentials
            .entry(*fingerprint)
            .or_insert_with(|| credential.clone());
    }
    for (consumer, status) in &other.status {
        if *status == ConsumerStatus::Revoked {
            base.status
                .insert(consumer.clone(), ConsumerStatus::Revoked);
        }
    }
    base
}

/// Applies `action` to `state`; returns whether anything changed. A revoked consumer stays
/// revoked whatever follows.
fn apply_to(state: &mut OverrideState, action: &Action) -> bool {
    let mut set = |consumer: &str, status: ConsumerStatus| {
        let current = state.status.get(consumer).copied();
        if current == Some(ConsumerStatus::Revoked) || current == Some(status) {
            return false;
        }
        state.status.insert(consumer.to_string(), status);
        true
    };
    match action {
        Action::Suspend { consumer } => set(consumer, ConsumerStatus::Suspended),
        Action::Resume { consumer } => set(consumer, ConsumerStatus::Active),
        Action::RevokeConsumer { consumer } => set(consumer, ConsumerStatus::Revoked),
        Action::RevokeKey { key_id } => state.revoked_keys.insert(*key_id),
        Action::RevokeCredential {
            credential,
            fingerprint,
        } => state
            .revoked_credentials
            .insert(*fingerprint, credential.clone())
            .is_none(),
    }
}

/// The overrides in memory, their state file, and the compiled form the gate reads.
#[derive(Debug)]
pub struct OverrideStore {
    state: Mutex<OverrideState>,
    path: PathBuf,
    compiled: Arc<ArcSwap<Overrides>>,
}

impl OverrideStore {
    /// Loads the state file and publishes it to `compiled` (the gate's overrides).
    pub fn open(path: PathBuf, compiled: Arc<ArcSwap<Overrides>>) -> Result<Self, StateError> {
        let state = match read_state(&path)? {
            FileState::Present(s) => s,
            FileState::Absent => OverrideState::default(),
        };
        compiled.store(Arc::new(Overrides::compile(&state)));
        Ok(OverrideStore {
            state: Mutex::new(state),
            path,
            compiled,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn snapshot(&self) -> OverrideState {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, OverrideState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn publish(&self, state: &OverrideState) {
        self.compiled.store(Arc::new(Overrides::compile(state)));
    }

    /// Applies an action; returns whether anything changed. With `persist`, the action is
    /// written on top of the file's current content under the file lock (the replica that
    /// received the command does this; replicas applying a broadcast do not).
    pub fn apply(&self, action: &Action, persist: bool) -> Result<bool, StateError> {
        let mut state = self.lock();
        if !persist {
            let changed = apply_to(&mut state, action);
            if changed {
                self.publish(&state);
            }
            return Ok(changed);
        }
        let _file_lock = self.lock_file()?;
        let base = match read_state(&self.path) {
            Ok(FileState::Present(on_disk)) => keep_revocations(on_disk, &state),
            Ok(FileState::Absent) => state.clone(),
            Err(e) => {
                tracing::warn!(error = %e, "state file unreadable; writing it again from memory");
                state.clone()
            }
        };
        let mut next = base;
        let changed = apply_to(&mut next, action);
        write_atomically(&self.path, &next)?;
        let changed = changed || *state != next;
        *state = next;
        self.publish(&state);
        Ok(changed)
    }

    /// Takes the file's state after it changed on disk (another replica wrote it), keeping
    /// every revocation this replica holds. A file found empty or deleted is written again
    /// from memory; an unreadable one leaves the current state in force.
    pub fn reload(&self) -> Result<(), StateError> {
        let mut state = self.lock();
        let fresh = match read_state(&self.path)? {
            FileState::Present(on_disk) => on_disk,
            FileState::Absent if *state == OverrideState::default() => return Ok(()),
            FileState::Absent => {
                tracing::warn!(path = %self.path.display(), "state file is empty or missing; writing it again from memory");
                let _file_lock = self.lock_file()?;
                if let FileState::Absent = read_state(&self.path)? {
                    write_atomically(&self.path, &state)?;
                }
                return Ok(());
            }
        };
        let merged = keep_revocations(fresh.clone(), &state);
        if merged != fresh {
            let _file_lock = self.lock_file()?;
            write_atomically(&self.path, &merged)?;
        }
        if *state != merged {
            *state = merged;
            self.publish(&state);
        }
        Ok(())
    }

    /// An exclusive lock on `<state file>.lock`, released when dropped.
    fn lock_file(&self) -> Result<File, StateError> {
        let mut name = self.path.as_os_str().to_owned();
        name.push(".lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(PathBuf::from(name))
            .map_err(|e| state_error(&self.path, &e))?;
        file.lock().map_err(|e| state_error(&self.path, &e))?;
        Ok(file)
    }
}

fn write_atomically(path: &Path, state: &OverrideState) -> Result<(), StateError> {
    let fail = |e: &dyn std::fmt::Display| state_error(path, e);
    let text = serde_yaml::to_string(state).map_err(|e| fail(&e))?;
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    std::fs::write(&tmp, text).map_err(|e| fail(&e))?;
    std::fs::rename(&tmp, path).map_err(|e| fail(&e))
}
