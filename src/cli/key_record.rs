//! A new consumer key's creation: the command's arguments, and the record of the key that the
//! config file or the Vault consumer store keeps.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::auth::{KeyEnv, KeyHash};

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
    /// Audit log to append the key's creation to (default: `admin.audit_log` of --config;
    /// without either, the audit line is printed to stderr as a `# audit:` comment).
    #[arg(long, env = "KEYGATE_AUDIT_LOG")]
    pub audit_log: Option<PathBuf>,
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
