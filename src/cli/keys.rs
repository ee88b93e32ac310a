//! `keygate keys create` and `keygate keys hash`.

use std::io::{BufRead, Write};
use std::time::SystemTime;

use anyhow::Context;
use clap::Subcommand;

use super::key_record::{CreateArgs, KeyRecord, StoreArg};
use crate::audit::{AuditEntry, AuditEvent, AuditLog, AuditResult};
use crate::auth::{key, KeyEnv, KeyHash};

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Mint a new consumer key. The key is printed once on stdout. With `--store file` (the
    /// default) the record to paste under the consumer's `keys:` goes to stderr; with
    /// `--store vault` the key's hash is written to the consumer's entry in Vault.
    Create(CreateArgs),
    /// Read a key on stdin and print its stored form (`sha256:…`).
    Hash,
}

pub fn run(command: KeysCommand) -> anyhow::Result<()> {
    match command {
        KeysCommand::Create(args) => create(&args),
        KeysCommand::Hash => hash_stdin(),
    }
}

fn create(args: &CreateArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        crate::config::valid_consumer_name(&args.consumer),
        "--consumer must be 1-64 characters of letters, digits, '-', '_' or '.'"
    );
    let env: KeyEnv = args.env.into();
    let secret = key::generate(env).context("the OS random number generator failed")?;
    let text = key::reveal(&secret);
    let record = KeyRecord {
        hash: KeyHash::of(text),
        env,
        expires: args.expires.map(|lifetime| {
            humantime::format_rfc3339_seconds(SystemTime::now() + lifetime).to_string()
        }),
    };
    let stored = match args.store {
        StoreArg::File => None,
        StoreArg::Vault => Some(super::vault_store::add_key(args, &record)?),
    };
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}")?;
    out.flush()?;
    match &stored {
        Some(where_) => eprintln!(
            "stored {} for consumer {} in {where_}",
            record.hash.key_id(),
            args.consumer
        ),
        None => {
            let mut yaml = format!(
                "# consumer {}: add under its `keys:` ({})\n- hash: {}\n  env: {}\n",
                args.consumer,
                record.hash.key_id(),
                record.hash,
                record.env
            );
            if let Some(at) = &record.expires {
                yaml.push_str(&format!("  expires: {at}\n"));
            }
            eprint!("{yaml}");
        }
    }
    audit_creation(args, &record, stored.is_some())
}

/// Writes the key's creation to the audit log (`--audit-log`, or `admin.audit_log` of
/// `--config`), or prints the audit line to stderr as a YAML comment. The actor is the local
/// user: the CLI holds no operator credential for this command.
fn audit_creation(args: &CreateArgs, record: &KeyRecord, in_vault: bool) -> anyhow::Result<()> {
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    let mut reason = String::from(if in_vault {
        "stored in the Vault consumer store"
    } else {
        "record printed for the config file"
    });
    if let Some(at) = &record.expires {
        reason.push_str(&format!("; expires {at}"));
    }
    let entry = AuditEntry::new(AuditEvent::KeyCreated, &format!("{user} (local cli)"))
        .consumer(&args.consumer)
        .key_id(record.hash.key_id())
        .request("keygate", "keys create")
        .result(AuditResult::Ok)
        .reason(&reason);
    let path = match (&args.audit_log, &args.config) {
        (Some(path), _) => Some(path.clone()),
        (None, Some(config)) => {
            let config = crate::config::load(config)?;
            Some(config.admin.audit_log).filter(|p| !p.as_os_str().is_empty())
        }
        (None, None) => None,
    };
    match path {
        Some(path) => {
            AuditLog::open(Some(&path))?.record(entry);
            eprintln!("# audited in {}", path.display());
        }
        None => eprint!("# audit: {}", entry.to_line()?),
    }
    Ok(())
}

fn hash_stdin() -> anyhow::Result<()> {
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    let text = line.trim();
    let parsed = key::parse(text).map_err(|e| anyhow::anyhow!("not a keygate key: {e}"))?;
    println!("{}", KeyHash::of(parsed.as_str()));
    Ok(())
}
