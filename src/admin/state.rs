//! The operator overrides and their durable state file. Every change is applied to the gate
//! at once and written atomically (temp file + rename); the file is re-read on change (the
//! reconciliation safety net for replicas that missed a broadcast).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::auth::overrides::parse_key_id;
use crate::auth::{OverrideState, Overrides};
use crate::config::ConsumerStatus;
use crate::gate::Gate;

/// One operator action, as sent over the broadcast channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Action {
    Suspend { consumer: String },
    Resume { consumer: String },
    RevokeConsumer { consumer: String },
    RevokeKey { key_id: String },
}

impl Action {
    pub fn name(&self) -> &'static str {
        match self {
            Action::Suspend { .. } => "suspend",
            Action::Resume { .. } => "resume",
            Action::RevokeConsumer { .. } => "revoke_consumer",
            Action::RevokeKey { .. } => "revoke_key",
        }
    }

    pub fn target(&self) -> &str {
        match self {
            Action::Suspend { consumer }
            | Action::Resume { consumer }
            | Action::RevokeConsumer { consumer } => consumer,
            Action::RevokeKey { key_id } => key_id,
        }
    }
}

/// Why the state file could not be read or written.
#[derive(Debug, thiserror::Error)]
#[error("admin.state_file {path}: {reason}")]
pub struct StateError {
    path: String,
    reason: String,
}

#[derive(Debug)]
pub struct OverrideStore {
    state: Mutex<OverrideState>,
    path: PathBuf,
    gate: Arc<Gate>,
}

/// Reads a state file; a missing file is an empty state.
pub fn read_state(path: &Path) -> Result<OverrideState, StateError> {
    let fail = |reason: String| StateError {
        path: path.display().to_string(),
        reason,
    };
    match std::fs::read_to_string(path) {
        Ok(text) if text.trim().is_empty() => Ok(OverrideState::default()),
        Ok(text) => serde_yaml::from_str(&text).map_err(|e| fail(e.to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(OverrideState::default()),
        Err(e) => Err(fail(e.to_string())),
    }
}

impl OverrideStore {
    /// Loads the state file and applies it to the gate.
    pub fn open(path: PathBuf, gate: Arc<Gate>) -> Result<Self, StateError> {
        let state = read_state(&path)?;
        gate.set_overrides(Overrides::compile(&state));
        Ok(OverrideStore {
            state: Mutex::new(state),
            path,
            gate,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn snapshot(&self) -> OverrideState {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Applies an action; returns whether anything changed. `persist` writes the file (the
    /// replica that received the command does; replicas applying a broadcast do not).
    pub fn apply(&self, action: &Action, persist: bool) -> Result<bool, StateError> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let changed = match action {
            Action::Suspend { consumer } => {
                state
                    .status
                    .insert(consumer.clone(), ConsumerStatus::Suspended)
                    != Some(ConsumerStatus::Suspended)
            }
            Action::Resume { consumer } => {
                state
                    .status
                    .insert(consumer.clone(), ConsumerStatus::Active)
                    != Some(ConsumerStatus::Active)
            }
            Action::RevokeConsumer { consumer } => {
                state
                    .status
                    .insert(consumer.clone(), ConsumerStatus::Revoked)
                    != Some(ConsumerStatus::Revoked)
            }
            Action::RevokeKey { key_id } => {
                if parse_key_id(key_id).is_none() {
                    return Err(StateError {
                        path: self.path.display().to_string(),
                        reason: format!("{key_id:?} is not a key id (kid_ + 12 hex digits)"),
                    });
                }
                state.revoked_keys.insert(key_id.clone())
            }
        };
        self.gate.set_overrides(Overrides::compile(&state));
        if persist && changed {
            write_atomically(&self.path, &state)?;
        }
        Ok(changed)
    }

    /// Replaces the state with the file's (after it changed on disk).
    pub fn reload(&self) -> Result<(), StateError> {
        let fresh = read_state(&self.path)?;
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if *state != fresh {
            self.gate.set_overrides(Overrides::compile(&fresh));
            *state = fresh;
        }
        Ok(())
    }
}

fn write_atomically(path: &Path, state: &OverrideState) -> Result<(), StateError> {
    let fail = |e: &dyn std::fmt::Display| StateError {
        path: path.display().to_string(),
        reason: e.to_string(),
    };
    let text = serde_yaml::to_string(state).map_err(|e| fail(&e))?;
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).map_err(|e| fail(&e))?;
    std::fs::rename(&tmp, path).map_err(|e| fail(&e))
}
