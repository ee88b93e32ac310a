//! `keygate admin token create`: a new operator token. The token is printed once on stdout;
//! the operator entry to add under `admin.operators` (or to `admin.operators_file`), which
//! holds only the token's SHA-256, goes to stderr.

use std::io::Write;

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use rand::rngs::OsRng;
use rand::TryRngCore;

use crate::auth::KeyHash;
use crate::config::operators::{valid_operator_name, SHARED_TOKEN_OPERATOR};

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Operator credentials.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Mint a token for one operator.
    Create(TokenArgs),
}

#[derive(Debug, Args)]
pub struct TokenArgs {
    /// The operator's name, as the audit log will show it (e.g. alice@example.com).
    #[arg(long)]
    pub name: String,
    #[arg(long, value_enum, default_value = "operator")]
    pub role: RoleArg,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum RoleArg {
    ReadOnly,
    Operator,
}

/// Token prefix: recognisable in a scanner rule and in a leaked file.
pub const TOKEN_PREFIX: &str = "kgadm_";

pub fn run(command: AdminCommand) -> anyhow::Result<()> {
    let AdminCommand::Token {
        command: TokenCommand::Create(args),
    } = command;
    anyhow::ensure!(
        valid_operator_name(&args.name) && args.name != SHARED_TOKEN_OPERATOR,
        "--name must be 1-64 characters of letters, digits, '-', '_', '.' or '@' (and not {SHARED_TOKEN_OPERATOR})"
    );
    let mut random = [0u8; 32];
    OsRng
        .try_fill_bytes(&mut random)
        .context("the OS random number generator failed")?;
    let token = format!("{TOKEN_PREFIX}{}", hex::encode(random));
    let role = match args.role {
        RoleArg::ReadOnly => "read_only",
        RoleArg::Operator => "operator",
    };
    let mut out = std::io::stdout().lock();
    writeln!(out, "{token}")?;
    out.flush()?;
    eprint!(
        "# add under admin.operators (or to admin.operators_file); hand the token to {name} only\n- name: {name}\n  role: {role}\n  token_sha256: \"{hash}\"\n",
        name = args.name,
        hash = KeyHash::of(&token),
    );
    Ok(())
}
