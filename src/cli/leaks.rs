//! `keygate leaks report FILE`: the keygate keys in a gitleaks JSON report are sent to the
//! admin API by hash (the keys themselves never leave this machine), where each one keygate
//! knows is revoked on every replica and its owner notified. The answer is the same whatever
//! keygate knew.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};

use super::admin::{run, Command, Target};
use crate::admin::pb::LeakedKey;
use crate::leaks::gitleaks::read_report;

#[derive(Debug, Subcommand)]
pub enum LeaksCommand {
    /// Report the keygate keys in a gitleaks JSON report (`gitleaks … --report-format json
    /// --report-path FILE`, not redacted) to the target keygates.
    Report(ReportArgs),
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The gitleaks JSON report.
    pub file: PathBuf,
    /// The scanned repository's name, for the audit log and the owner's notification
    /// (default: taken from the findings' GitHub links, if any).
    #[arg(long)]
    pub repository: Option<String>,
    #[command(flatten)]
    pub target: Target,
}

pub fn report(args: &ReportArgs) -> anyhow::Result<()> {
    let bytes = std::fs::read(&args.file).with_context(|| format!("{}", args.file.display()))?;
    let read = read_report(&bytes, args.repository.as_deref())
        .with_context(|| format!("{}", args.file.display()))?;
    eprintln!(
        "{}: {} finding(s), {} keygate key(s); {} other finding(s) skipped",
        args.file.display(),
        read.findings,
        read.leaks.len(),
        read.skipped
    );
    if read.leaks.is_empty() {
        if read.skipped > 0 {
            eprintln!("no keygate key to report (a report made with gitleaks --redact hides them: only their hashes would be sent)");
        }
        return Ok(());
    }
    let leaks = read
        .leaks
        .into_iter()
        .map(|l| LeakedKey {
            key_hash: l.hash.to_string(),
            env: l.env.as_str().into(),
            repository: l.location.repository.unwrap_or_default(),
            file: l.location.file.unwrap_or_default(),
            line: l.location.line.unwrap_or_default(),
            commit: l.location.commit.unwrap_or_default(),
            url: l.location.url.unwrap_or_default(),
            kind: l.location.kind.unwrap_or_default(),
        })
        .collect();
    run(&args.target, Command::ReportLeaks(leaks))
}
