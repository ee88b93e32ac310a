//! Building a credential's [`Rotator`] from the config: its Vault store (the rotator's own
//! Vault login, `rotation.vault`, else the credentials'), its policy, its provider adapter
//! with the admin credential read from Vault, and the replicas.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use secrecy::SecretString;

use crate::config::{self, Config, CredentialsConfig};
use crate::rotation::adapter::AdapterSettings;
use crate::rotation::adapters;
use crate::rotation::store::VaultStore;
use crate::rotator::{Fleet, Rotator};
use crate::vault::VaultSession;

/// Bound on every provider call.
const PROVIDER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the replicas get to confirm a switch.
const SWITCH_WITHIN: Duration = Duration::from_secs(5);

/// The config and the rotator's Vault session, shared by every credential of one run.
pub struct Setup {
    pub config: Config,
    session: Arc<VaultSession>,
}

impl Setup {
    pub fn load(path: Option<&Path>) -> anyhow::Result<Setup> {
        let Some(path) = path else {
            bail!(
                "--config (or KEYGATE_CONFIG) names the keygate config whose credentials to rotate"
            );
        };
        let config = config::load(path)?;
        if !matches!(config.credentials, CredentialsConfig::Vault(_)) {
            bail!("rotation keeps its record and the keys in Vault: it needs credentials.source: vault");
        }
        let Some(connection) = config.rotator_vault() else {
            bail!("no Vault connection for the rotator (rotation.vault or credentials.vault)");
        };
        let session = Arc::new(VaultSession::new(connection)?);
        Ok(Setup { config, session })
    }

    /// Every credential with a `rotation:` entry (`--due` finishes their grace periods and
    /// interrupted rotations, and rotates those whose `every` says so).
    pub fn managed(&self) -> Vec<String> {
        self.config.rotation.credentials.keys().cloned().collect()
    }

    /// Every credential reference one provider (by name) maps an environment to.
    pub fn of_provider(&self, provider: &str) -> anyhow::Result<Vec<String>> {
        let Some(p) = self.config.providers.get(provider) else {
            bail!("no provider named {provider:?} in the config");
        };
        let mut refs: Vec<String> = p.credentials.values().cloned().collect();
        refs.sort();
        refs.dedup();
        Ok(refs)
    }

    /// The rotator for one credential.
    pub async fn rotator(
        &self,
        reference: &str,
        actor: &str,
        fleet: Arc<dyn Fleet>,
    ) -> anyhow::Result<Rotator> {
        let CredentialsConfig::Vault(vault) = &self.config.credentials else {
            bail!("credentials.source must be vault");
        };
        let references = self.config.credential_references();
        let Some((provider_name, kind)) = references.get(reference) else {
            bail!("no provider uses credential {reference:?} (providers.*.credentials)");
        };
        let Some(policy) = self.config.rotation.policy(reference) else {
            bail!("credential {reference:?} has no entry under rotation.credentials: add one (adapter settings, admin credential, grace, optionally every)");
        };
        let policy = Some(policy);
        let path = vault.path_template.replace("{reference}", reference);
        let store = VaultStore::new(
            self.session.clone(),
            &vault.mount,
            &path,
            &self.config.rotation.record_path(&path),
        );
        let admin = match policy.and_then(|p| p.admin_credential.as_deref()) {
            Some(admin_path) => Some(store.admin_secret(admin_path).await.with_context(|| {
                format!("the admin credential at {}/{admin_path}", vault.mount)
            })?),
            None => None,
        };
        let provider = &self.config.providers[provider_name];
        let inject = match &provider.inject {
            Some(i) => (i.header.clone(), i.prefix.clone()),
            None => {
                let (h, p) = kind.default_injection();
                (h.to_string(), p.to_string())
            }
        };
        let adapter_name = policy
            .and_then(|p| p.adapter.clone())
            .unwrap_or_else(|| adapters::default_for(*kind).to_string());
        let settings = AdapterSettings {
            reference: reference.to_string(),
            admin,
            settings: policy.map(|p| p.settings.clone()).unwrap_or_default(),
            inject,
            timeout: PROVIDER_TIMEOUT,
        };
        let adapter = adapters::build(&adapter_name, &settings)
            .with_context(|| format!("rotation.credentials.{reference}"))?;
        Ok(Rotator {
            reference: reference.to_string(),
            actor: actor.to_string(),
            grace: policy.map_or(Duration::from_secs(24 * 3600), |p| p.grace),
            lease: self.config.rotation.lease,
            switch_within: SWITCH_WITHIN,
            store,
            adapter,
            fleet,
            me: Rotator::this_process(),
            log: std::sync::Mutex::new(Vec::new()),
            old_revoked: std::sync::atomic::AtomicBool::new(false),
        })
    }
}

/// The new key for an accept-mode provider: from a file, or one line on stdin.
pub fn new_key(file: Option<&Path>, stdin: bool) -> anyhow::Result<Option<SecretString>> {
    let text = match (file, stdin) {
        (Some(path), _) => std::fs::read_to_string(path)
            .with_context(|| format!("--new-key-file {}", path.display()))?,
        (None, true) => {
            let mut line = String::new();
            std::io::stdin()
                .read_line(&mut line)
                .context("reading the new key from stdin")?;
            line
        }
        (None, false) => return Ok(None),
    };
    let key = text.trim();
    if key.is_empty() || key.contains(char::is_whitespace) {
        bail!("the new key must be one word on one line");
    }
    Ok(Some(SecretString::from(key.to_string())))
}
