//! The provider keys the mock knows, for the admin APIs (mint, list, deactivate, delete,
//! regenerate) and for enforcement: with enforcement on, an inference request whose key is
//! unknown, deactivated, deleted or regenerated away gets the provider's own 401.
//!
//! Enforcement is off until a test turns it on (`POST /__mock/keys` with `"enforce": true`),
//! so every test that does not care about keys sees the mock it always saw.

use std::sync::{Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::response::new_id;

/// Which provider a key belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Provider {
    Openai,
    Anthropic,
    Azure,
}

/// A key's life at the provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Active,
    /// Anthropic's `inactive` or `archived`: refused until activated again.
    Inactive,
    /// Deleted (OpenAI), or an Azure slot value replaced by a regeneration.
    Deleted,
}

/// One provider key, as `GET /__mock/keys` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Key {
    pub id: String,
    pub value: String,
    pub provider: Provider,
    #[serde(default)]
    pub name: String,
    #[serde(default = "active")]
    pub status: Status,
    /// OpenAI: the project; Azure: the account.
    #[serde(default)]
    pub project: Option<String>,
    /// OpenAI: the service account that owns the key.
    #[serde(default)]
    pub owner: Option<String>,
    /// Minted through an admin API (as opposed to seeded by the test).
    #[serde(default)]
    pub minted: bool,
    #[serde(default)]
    pub created_at: f64,
    /// When the key stopped working (deleted, deactivated or regenerated).
    #[serde(default)]
    pub revoked_at: Option<f64>,
}

fn active() -> Status {
    Status::Active
}

/// What a test sends to `POST /__mock/keys`; every field is optional and adds to the state.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Seed {
    pub enforce: Option<bool>,
    #[serde(default)]
    pub keys: Vec<Key>,
    /// Admin keys (OpenAI and Anthropic admin API keys, Azure client secrets).
    #[serde(default)]
    pub admin_keys: Vec<String>,
    /// Delay answers to requests made with a key minted through an admin API by this many
    /// milliseconds (to hold a rotation between its mint and its health check).
    pub minted_latency_ms: Option<u64>,
    /// Refuse inference with keys minted through an admin API (a provider that issues keys
    /// that do not work, as one minted in the wrong project would not): a failing health check.
    pub refuse_minted: Option<bool>,
}

/// An OpenAI project service account (a key's owner).
#[derive(Debug, Clone, Serialize)]
pub struct ServiceAccount {
    pub id: String,
    pub name: String,
    pub project: String,
    pub created_at: f64,
}

#[derive(Debug, Default)]
struct State {
    enforce: bool,
    keys: Vec<Key>,
    accounts: Vec<ServiceAccount>,
    admin_keys: Vec<String>,
    /// Bearer tokens handed out by the mock Azure login.
    arm_tokens: Vec<String>,
    minted_latency_ms: u64,
    refuse_minted: bool,
}

/// How the mock judges one inference request's key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Enforcement is off, or the key is active; with the delay to apply, if any.
    Pass {
        delay_ms: u64,
    },
    Refused,
}

/// Every key and admin credential, behind one lock (the mock is a test fixture).
#[derive(Debug, Default)]
pub struct KeyStore {
    state: Mutex<State>,
}

pub fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

impl KeyStore {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies a test's seed.
    pub fn seed(&self, seed: Seed) {
        let mut state = self.lock();
        if let Some(enforce) = seed.enforce {
            state.enforce = enforce;
        }
        if let Some(ms) = seed.minted_latency_ms {
            state.minted_latency_ms = ms;
        }
        if let Some(refuse) = seed.refuse_minted {
            state.refuse_minted = refuse;
        }
        for mut key in seed.keys {
            if key.created_at == 0.0 {
                key.created_at = now();
            }
            state.keys.retain(|k| k.value != key.value);
            state.keys.push(key);
        }
        state.admin_keys.extend(seed.admin_keys);
    }

    pub fn snapshot(&self) -> Vec<Key> {
        self.lock().keys.clone()
    }

    /// The verdict on the key an inference request presents.
    pub fn judge(&self, presented: Option<&str>) -> Verdict {
        let state = self.lock();
        let found = presented.and_then(|p| state.keys.iter().find(|k| k.value == p));
        if !state.enforce {
            let delay_ms = match found {
                Some(k) if k.minted => state.minted_latency_ms,
                _ => 0,
            };
            return Verdict::Pass { delay_ms };
        }
        match found {
            Some(k) if k.minted && state.refuse_minted => Verdict::Refused,
            Some(k) if k.status == Status::Active => Verdict::Pass {
                delay_ms: if k.minted { state.minted_latency_ms } else { 0 },
            },
            _ => Verdict::Refused,
        }
    }

    /// Whether `presented` is one of the admin credentials.
    pub fn is_admin(&self, presented: Option<&str>) -> bool {
        let state = self.lock();
        presented.is_some_and(|p| {
            state.admin_keys.iter().any(|a| a == p) || state.arm_tokens.iter().any(|t| t == p)
        })
    }

    /// A bearer token for the Azure management API, if `client_secret` is an admin key.
    pub fn arm_login(&self, client_secret: &str) -> Option<String> {
        let mut state = self.lock();
        if !state.admin_keys.iter().any(|a| a == client_secret) {
            return None;
        }
        let token = format!("mock-arm-{}{}", new_id(""), new_id(""));
        state.arm_tokens.push(token.clone());
        Some(token)
    }

    /// Mints a key and returns it.
    pub fn mint(
        &self,
        provider: Provider,
        prefix: &str,
        name: &str,
        project: Option<&str>,
        owner: Option<&str>,
    ) -> Key {
        let key = Key {
            id: new_id(match provider {
                Provider::Anthropic => "apikey_",
                _ => "key_",
            }),
            value: format!("{prefix}{}{}", new_id(""), new_id("")),
            provider,
            name: name.to_string(),
            status: Status::Active,
            project: project.map(str::to_string),
            owner: owner.map(str::to_string),
            minted: true,
            created_at: now(),
            revoked_at: None,
        };
        self.lock().keys.push(key.clone());
        key
    }

    /// Creates a service account in `project` with one key (OpenAI's create call).
    pub fn create_service_account(&self, project: &str, name: &str) -> (ServiceAccount, Key) {
        let account = ServiceAccount {
            id: new_id("svc_acct_"),
            name: name.to_string(),
            project: project.to_string(),
            created_at: now(),
        };
        self.lock().accounts.push(account.clone());
        let key = self.mint(
            Provider::Openai,
            "sk-svcacct-",
            "Secret Key",
            Some(project),
            Some(&account.id),
        );
        (account, key)
    }

    pub fn service_accounts(&self, project: &str) -> Vec<ServiceAccount> {
        self.lock()
            .accounts
            .iter()
            .filter(|a| a.project == project)
            .cloned()
            .collect()
    }

    /// Deletes a service account and every key it owns; false when there is none.
    pub fn delete_service_account(&self, project: &str, id: &str) -> bool {
        let removed = {
            let mut state = self.lock();
            let before = state.accounts.len();
            state
                .accounts
                .retain(|a| !(a.project == project && a.id == id));
            state.accounts.len() != before
        };
        if removed {
            self.delete_owned(id);
        }
        removed
    }

    /// The service account that owns `key`, if any.
    pub fn account(&self, id: &str) -> Option<ServiceAccount> {
        self.lock().accounts.iter().find(|a| a.id == id).cloned()
    }

    /// Keys of `provider` (and `project`, when given) that are not deleted.
    pub fn list(&self, provider: Provider, project: Option<&str>) -> Vec<Key> {
        self.lock()
            .keys
            .iter()
            .filter(|k| k.provider == provider && k.status != Status::Deleted)
            .filter(|k| project.is_none() || k.project.as_deref() == project)
            .cloned()
            .collect()
    }

    /// Sets a key's status by id; returns the key after the change.
    pub fn set_status(&self, provider: Provider, id: &str, status: Status) -> Option<Key> {
        let mut state = self.lock();
        let key = state
            .keys
            .iter_mut()
            .find(|k| k.provider == provider && k.id == id && k.status != Status::Deleted)?;
        if key.status != status {
            key.status = status;
            key.revoked_at = match status {
                Status::Active => None,
                _ => Some(now()),
            };
        }
        Some(key.clone())
    }

    /// Deletes every live key `owner` owns; returns how many.
    pub fn delete_owned(&self, owner: &str) -> usize {
        let mut state = self.lock();
        let mut n = 0;
        for key in state.keys.iter_mut() {
            if key.owner.as_deref() == Some(owner) && key.status != Status::Deleted {
                key.status = Status::Deleted;
                key.revoked_at = Some(now());
                n += 1;
            }
        }
        n
    }

    /// The live value of an Azure account's slot (`key1` or `key2`).
    pub fn azure_slot(&self, account: &str, slot: &str) -> Option<String> {
        self.lock()
            .keys
            .iter()
            .find(|k| {
                k.provider == Provider::Azure
                    && k.project.as_deref() == Some(account)
                    && k.id == slot
                    && k.status == Status::Active
            })
            .map(|k| k.value.clone())
    }

    /// Replaces an Azure slot's value: the old one stops working at once.
    pub fn azure_regenerate(&self, account: &str, slot: &str) -> String {
        let value = format!("{}{}", new_id("").to_lowercase(), new_id("").to_lowercase());
        let mut state = self.lock();
        for key in state.keys.iter_mut() {
            if key.provider == Provider::Azure
                && key.project.as_deref() == Some(account)
                && key.id == slot
                && key.status == Status::Active
            {
                key.status = Status::Deleted;
                key.revoked_at = Some(now());
            }
        }
        state.keys.push(Key {
            id: slot.to_string(),
            value: value.clone(),
            provider: Provider::Azure,
            name: slot.to_string(),
            status: Status::Active,
            project: Some(account.to_string()),
            owner: None,
            minted: true,
            created_at: now(),
            revoked_at: None,
        });
        value
    }
}

/// `sk-abc…wxyz`: the redacted form the providers' key listings show.
pub fn redacted(value: &str) -> String {
    let head: String = value.chars().take(7).collect();
    let tail: String = value
        .chars()
        .rev()
        .take(4)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    format!("{head}...{tail}")
}

#[cfg(test)]
mod tests;
