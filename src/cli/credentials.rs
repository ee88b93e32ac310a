//! `keygate credentials list` (the inventory, from the admin API's ListCredentials) and
//! `keygate credentials revoke CREDENTIAL|--provider NAME --reason …` (the emergency: every
//! replica stops using the key, Vault marks it revoked, the provider revokes it; `--rotate`
//! switches to a replacement first).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use clap::Subcommand;
use serde_json::json;

use super::admin::{connect, resolve, token, Target};
use super::fleet::AdminFleet;
use super::rotator_setup::{new_key, Setup};
use crate::admin::pb::{CredentialInfo, ListCredentialsRequest};
use crate::rotator::Fleet;

#[derive(Debug, Subcommand)]
pub enum CredentialsCommand {
    /// Every provider credential: source and version, fingerprint, metadata, age, consumers,
    /// rotation policy, next due, last rotation and health check.
    List {
        /// One JSON document instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Emergency: every replica stops using the credential's key at once (503
    /// credential_revoked, or the replacement with --rotate) and the provider revokes it.
    Revoke {
        /// The credential reference (e.g. openai/production).
        #[arg(required_unless_present = "provider")]
        credential: Option<String>,
        /// Every credential of this provider (its name under `providers:`).
        #[arg(long, conflicts_with = "credential")]
        provider: Option<String>,
        /// Why: the audit log, the webhooks and Vault's tombstone carry it.
        #[arg(long)]
        reason: String,
        /// Mint (or accept) a replacement and switch to it first: consumers keep working.
        #[arg(long)]
        rotate: bool,
        /// With --rotate, for accept-mode providers (Anthropic, generic): a file holding the
        /// replacement key.
        #[arg(long, conflicts_with = "new_key_stdin", requires = "rotate")]
        new_key_file: Option<PathBuf>,
        /// With --rotate, for accept-mode providers: read the replacement key from stdin.
        #[arg(long, requires = "rotate")]
        new_key_stdin: bool,
    },
}

pub fn run(command: CredentialsCommand, target: &Target) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    match command {
        CredentialsCommand::List { json } => runtime.block_on(list(target, json)),
        CredentialsCommand::Revoke {
            credential,
            provider,
            reason,
            rotate,
            new_key_file,
            new_key_stdin,
        } => {
            let supplied = new_key(new_key_file.as_deref(), new_key_stdin)?;
            runtime.block_on(revoke(
                target, credential, provider, &reason, rotate, supplied,
            ))
        }
    }
}

/// The inventory from the first replica that answers.
async fn inventory(target: &Target) -> anyhow::Result<Vec<CredentialInfo>> {
    let token = token(target)?;
    let mut last = None;
    for replica in resolve(&target.targets)? {
        let tls = target.tls.config(replica.name.as_deref())?;
        let listed = async {
            let mut client = connect(&replica.addr, tls, token.as_deref()).await?;
            let reply = client.list_credentials(ListCredentialsRequest {}).await?;
            anyhow::Ok(reply.into_inner().credentials)
        };
        match listed.await {
            Ok(credentials) => return Ok(credentials),
            Err(e) => last = Some(e.context(replica.addr)),
        }
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("--targets names no keygate")))
}

async fn list(target: &Target, as_json: bool) -> anyhow::Result<()> {
    let credentials = inventory(target).await?;
    if as_json {
        let docs: Vec<_> = credentials.iter().map(to_json).collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({ "credentials": docs }))?
        );
        return Ok(());
    }
    let now = SystemTime::now();
    for c in &credentials {
        println!(
            "{}  {}  {}  {} v{}",
            c.reference,
            c.state,
            if c.fingerprint.is_empty() {
                "-"
            } else {
                &c.fingerprint
            },
            c.source,
            c.version
        );
        println!(
            "  providers: {}  consumers ({}): {}",
            c.providers.join(", "),
            c.consumers.len(),
            c.consumers.join(", ")
        );
        let meta: Vec<String> = c.metadata.iter().map(|(k, v)| format!("{k}={v}")).collect();
        if !meta.is_empty() {
            println!("  {}", meta.join(" "));
        }
        let policy = match c.every_seconds {
            0 => "no rotation schedule".to_string(),
            every => format!(
                "policy: every {}, grace {}; next due {}",
                span(every),
                span(c.grace_seconds),
                when(c.next_due_unix)
            ),
        };
        println!(
            "  rotated {} ({} ago); {policy}",
            when(c.rotated_at_unix),
            ago(c.rotated_at_unix, now)
        );
        let mut rotation = vec![format!(
            "rotation: {}",
            if c.rotation_phase.is_empty() {
                "never"
            } else {
                &c.rotation_phase
            }
        )];
        if !c.last_rotation.is_empty() {
            rotation.push(format!("last {}", c.last_rotation));
        }
        if c.last_health_check_unix > 0 {
            rotation.push(format!(
                "health check {} at {}",
                if c.last_health_check_ok {
                    "ok"
                } else {
                    "FAILED"
                },
                when(c.last_health_check_unix)
            ));
        }
        if c.revoke_old_after_unix > 0 {
            rotation.push(format!(
                "old key revoked after {}",
                when(c.revoke_old_after_unix)
            ));
        }
        println!("  {}", rotation.join("; "));
    }
    Ok(())
}

fn to_json(c: &CredentialInfo) -> serde_json::Value {
    json!({
        "reference": c.reference, "providers": c.providers, "source": c.source,
        "version": c.version, "fingerprint": c.fingerprint, "state": c.state,
        "metadata": c.metadata, "rotated_at": when(c.rotated_at_unix), "consumers": c.consumers,
        "every_seconds": c.every_seconds, "grace_seconds": c.grace_seconds,
        "next_due": when(c.next_due_unix), "rotation_phase": c.rotation_phase,
        "last_rotation": c.last_rotation, "last_health_check": when(c.last_health_check_unix),
        "last_health_check_ok": c.last_health_check_ok,
        "revoke_old_after": when(c.revoke_old_after_unix), "rotations": c.rotations,
    })
}

fn when(unix: i64) -> String {
    match u64::try_from(unix) {
        Ok(secs) if secs > 0 => {
            humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(secs)).to_string()
        }
        _ => "-".into(),
    }
}

fn ago(unix: i64, now: SystemTime) -> String {
    let Ok(secs) = u64::try_from(unix) else {
        return "-".into();
    };
    match now.duration_since(UNIX_EPOCH + Duration::from_secs(secs)) {
        Ok(age) if secs > 0 => span(age.as_secs()),
        _ => "-".into(),
    }
}

fn span(secs: u64) -> String {
    humantime::format_duration(Duration::from_secs(secs)).to_string()
}

async fn revoke(
    target: &Target,
    credential: Option<String>,
    provider: Option<String>,
    reason: &str,
    rotate: bool,
    supplied: Option<secrecy::SecretString>,
) -> anyhow::Result<()> {
    if reason.trim().is_empty() {
        bail!("--reason says why (the audit log and the webhooks carry it)");
    }
    let fleet = Arc::new(AdminFleet::new(target)?);
    let setup = Setup::load(target.config.as_deref());
    let references = match (&credential, &provider, &setup) {
        (Some(c), _, _) => vec![c.clone()],
        (None, Some(p), Ok(setup)) => setup.of_provider(p)?,
        (None, Some(p), Err(_)) => {
            let config = crate::config::load(
                target
                    .config
                    .as_deref()
                    .context("--provider needs --config")?,
            )?;
            config
                .providers
                .get(p)
                .map(|p| p.credentials.values().cloned().collect())
                .context("no such provider")?
        }
        (None, None, _) => bail!("name a credential or --provider"),
    };
    if supplied.is_some() && references.len() > 1 {
        bail!(
            "one new key cannot replace {} credentials; revoke them one by one",
            references.len()
        );
    }
    let Ok(setup) = setup else {
        return revoke_on_replicas(target, &fleet, &references, reason).await;
    };
    for reference in references {
        let rotator = setup
            .rotator(&reference, &target.actor(), fleet.clone())
            .await?;
        let done = rotator.revoke_now(reason, rotate, supplied.clone()).await;
        for line in rotator.lines() {
            println!("{reference}: {line}");
        }
        let done = done?;
        println!(
            "{reference}: revoked on {} replica(s){}{}",
            done.replicas,
            if done.replaced {
                ", replaced"
            } else {
                "; consumers get 503 credential_revoked"
            },
            if done.at_provider {
                ", revoked at the provider"
            } else {
                "; REVOKE IT AT THE PROVIDER BY HAND"
            }
        );
    }
    Ok(())
}

/// Without Vault (a secrets file): revoke the key the replicas serve, by its fingerprint.
async fn revoke_on_replicas(
    target: &Target,
    fleet: &AdminFleet,
    references: &[String],
    reason: &str,
) -> anyhow::Result<()> {
    let served = inventory(target).await?;
    for reference in references {
        let Some(info) = served.iter().find(|c| c.reference == *reference) else {
            bail!("the replicas serve no credential {reference:?}");
        };
        let fingerprint = info
            .fingerprint
            .parse()
            .context("the replicas serve no key for it")?;
        let started = std::time::Instant::now();
        let n = fleet.revoke(reference, fingerprint, reason).await?;
        println!(
            "{reference}: {fingerprint} revoked on {n} replica(s) in {:.3}s; the credentials are not in Vault: replace the key in the secrets file and REVOKE IT AT THE PROVIDER BY HAND",
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}
