//! `keygate rotate CREDENTIAL` and `keygate rotate --due`. Prints each step (fingerprints and
//! provider key ids, never a key) and exits non-zero when a rotation did not happen or did
//! not end well. `--due` is what a schedule runs: it finishes or undoes interrupted
//! rotations, revokes old keys whose grace period is over, and rotates what its policy says
//! is due; where another run is at it, it says so and leaves it (exit 0).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use anyhow::bail;
use clap::Args;

use super::admin::Target;
use super::fleet::AdminFleet;
use super::rotator_setup::{new_key, Setup};
use crate::rotation::record::{next_due, RotationResult};
use crate::rotator::{RotateError, Rotator};

#[derive(Debug, Args)]
pub struct RotateArgs {
    /// The credential reference to rotate now (e.g. openai/production).
    #[arg(required_unless_present = "due")]
    pub credential: Option<String>,
    /// Rotate every credential whose policy says it is due; finish what earlier runs left.
    #[arg(long, conflicts_with = "credential")]
    pub due: bool,
    /// Accept-mode providers (Anthropic, generic): a file holding the new key.
    #[arg(long, conflicts_with = "new_key_stdin")]
    pub new_key_file: Option<PathBuf>,
    /// Accept-mode providers: read the new key from stdin (one line).
    #[arg(long)]
    pub new_key_stdin: bool,
}

pub fn run(args: RotateArgs, target: &Target) -> anyhow::Result<()> {
    let setup = Setup::load(target.config.as_deref())?;
    let supplied = new_key(args.new_key_file.as_deref(), args.new_key_stdin)?;
    let fleet: Arc<AdminFleet> = Arc::new(AdminFleet::new(target)?);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        match args.credential {
            Some(reference) => {
                let rotator = setup.rotator(&reference, &target.actor(), fleet).await?;
                let result = rotator.rotate(supplied, false).await;
                print_lines(&rotator);
                match result? {
                    RotationResult::Ok => {
                        println!("{reference}: rotated");
                        Ok(())
                    }
                    other => bail!("{reference}: rotation {}", other.as_str()),
                }
            }
            None => due(&setup, target, fleet).await,
        }
    })
}

fn print_lines(rotator: &Rotator) {
    for line in rotator.lines() {
        println!("{}: {line}", rotator.reference);
    }
}

/// `--due`: every scheduled credential, one after the other.
async fn due(setup: &Setup, target: &Target, fleet: Arc<AdminFleet>) -> anyhow::Result<()> {
    let mut failures = 0;
    for reference in setup.managed() {
        let rotator = setup
            .rotator(&reference, &target.actor(), fleet.clone())
            .await?;
        let outcome = due_one(&rotator, setup).await;
        print_lines(&rotator);
        match outcome {
            Ok(line) => println!("{reference}: {line}"),
            Err(e) => {
                failures += 1;
                eprintln!("{reference}: error: {e:#}");
            }
        }
    }
    if failures > 0 {
        bail!("{failures} credential(s) need attention");
    }
    Ok(())
}

async fn due_one(rotator: &Rotator, setup: &Setup) -> anyhow::Result<String> {
    let mut tx = rotator.read().await?;
    match rotator.settle(&mut tx, false).await {
        Ok(Some(_)) => return Ok("finished the rotation an earlier run left halfway".into()),
        Ok(None) => {}
        Err(RotateError::InGrace { until, .. }) => {
            return Ok(format!(
                "not due: the last rotation's old key is revoked after {until}"
            ))
        }
        Err(e @ (RotateError::Busy { .. } | RotateError::Lost { .. })) => {
            return Ok(format!("left alone: {e}"))
        }
        Err(e) => return Err(e.into()),
    }
    let every = setup
        .config
        .rotation
        .policy(&rotator.reference)
        .and_then(|p| p.every);
    let current = rotator.store.version(None).await?;
    let from_entry = current
        .meta
        .get("rotated_at")
        .and_then(|v| v.as_str())
        .and_then(|t| humantime::parse_rfc3339_weak(t).ok());
    let rotated_at = [from_entry, current.created, tx.record.rotated_at]
        .into_iter()
        .flatten()
        .max();
    if every.is_none() {
        return Ok("no schedule (rotation.credentials.*.every): rotated on demand only".into());
    }
    match next_due(rotated_at, every) {
        Some(due) if due > SystemTime::now() => {
            return Ok(format!(
                "not due until {}",
                humantime::format_rfc3339_seconds(due)
            ))
        }
        _ => {}
    }
    if !rotator.adapter.mints() {
        bail!(
            "due, but the {} adapter cannot mint keys: run `keygate rotate {} --new-key-file FILE` with a key made at the provider",
            rotator.adapter.name(),
            rotator.reference
        );
    }
    match rotator.rotate(None, false).await {
        Ok(RotationResult::Ok) => Ok("rotated".into()),
        Ok(other) => bail!("rotation {}", other.as_str()),
        Err(e @ (RotateError::Busy { .. } | RotateError::Lost { .. })) => {
            Ok(format!("left alone: {e}"))
        }
        Err(e) => Err(e.into()),
    }
}
