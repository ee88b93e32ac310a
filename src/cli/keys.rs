//! `keygate keys create` and `keygate keys hash`.

use std::io::{BufRead, Write};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use clap::Subcommand;

use crate::auth::{key, KeyEnv, KeyHash};

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Mint a new consumer key. The key is printed once on stdout; the record to paste under
    /// the consumer's `keys:` goes to stderr. Only the hash is ever stored.
    Create {
        /// The consumer this key is for (used in the printed record).
        #[arg(long)]
        consumer: String,
        /// Key environment: `live`, or `test` for non-production consumers.
        #[arg(long, value_enum, default_value = "live")]
        env: EnvArg,
        /// Lifetime, e.g. `90d` or `12h`; the record gets an `expires` timestamp.
        #[arg(long, value_parser = humantime::parse_duration)]
        expires: Option<Duration>,
    },
    /// Read a key on stdin and print its stored form (`sha256:…`).
    Hash,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum EnvArg {
    Live,
    Test,
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
        KeysCommand::Create {
            consumer,
            env,
            expires,
        } => create(&consumer, env.into(), expires),
        KeysCommand::Hash => hash_stdin(),
    }
}

fn create(consumer: &str, env: KeyEnv, expires: Option<Duration>) -> anyhow::Result<()> {
    anyhow::ensure!(
        crate::config::valid_consumer_name(consumer),
        "--consumer must be 1-64 characters of letters, digits, '-', '_' or '.'"
    );
    let secret = key::generate(env).context("the OS random number generator failed")?;
    let text = key::reveal(&secret);
    let hash = KeyHash::of(text);
    let mut record = format!(
        "# consumer {consumer}: add under its `keys:` ({})\n- hash: {hash}\n  env: {env}\n",
        hash.key_id()
    );
    if let Some(lifetime) = expires {
        let at = SystemTime::now() + lifetime;
        record.push_str(&format!(
            "  expires: {}\n",
            humantime::format_rfc3339_seconds(at)
        ));
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}")?;
    out.flush()?;
    eprint!("{record}");
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
