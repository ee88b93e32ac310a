//! `keygate keys create` and `keygate keys hash`.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use clap::{Args, Subcommand};

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

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The consumer this key is for.
    #[arg(long)]
    pub consumer: String,
    /// Key environment: `live`, or `test` for non-production consumers.
    #[arg(long, value_enum, default_value = "live")]
    pub env: EnvArg,
    /// Lifetime, e.g. `90d` or `12h`; the record gets an `expires` timestamp.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub expires: Option<Duration>,
    /// Where the hash goes: printed for a config file, or written to the Vault consumer store.
    #[arg(long, value_enum, default_value = "file")]
    pub store: StoreArg,
    /// keygate config naming the Vault consumer store (`--store vault`).
    #[arg(short, long, env = "KEYGATE_CONFIG")]
    pub config: Option<PathBuf>,
    /// For a new consumer in Vault (`--store vault`): its provider, e.g. `openai`.
    #[arg(long)]
    pub provider: Option<String>,
    /// For a new consumer in Vault: its environment, which picks the provider credential.
    #[arg(long)]
    pub environment: Option<String>,
    /// For a new consumer in Vault: its team (optional; a label only).
    #[arg(long)]
    pub team: Option<String>,
    /// A scope route such as "POST /v1/chat/completions"; repeat for several.
    #[arg(long = "route")]
    pub routes: Vec<String>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum EnvArg {
    Live,
    Test,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum, PartialEq, Eq)]
pub enum StoreArg {
    File,
    Vault,
}

impl From<EnvArg> for KeyEnv {
    fn from(e: EnvArg) -> Self {
        match e {
            EnvArg::Live => KeyEnv::Live,
            EnvArg::Test => KeyEnv::Test,
        }
    }
}

pub fn run(command: KeysCommand) -> anyhow::Result<()> {
    match command {
        KeysCommand::Create(args) => create(&args),
        KeysCommand::Hash => hash_stdin(),
    }
}

/// The stored form of a new key, as config YAML and Vault JSON both spell it.
pub struct KeyRecord {
    pub hash: KeyHash,
    pub env: KeyEnv,
    pub expires: Option<String>,
}

impl KeyRecord {
    pub fn to_json(&self) -> serde_json::Value {
        let mut v = serde_json::json!({"hash": self.hash.to_string(), "env": self.env.as_str()});
        if let Some(at) = &self.expires {
            v["expires"] = serde_json::Value::String(at.clone());
        }
        v
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
    match stored {
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
