//! Writes a keygate config with N consumers (and its secrets file) for the benchmarks, plus a
//! sample of the consumer keys, one per line, in `<out>/keys.txt`.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use clap::Parser;
use keygate_bench::consumers::{self, Credentials, GenOptions, LimitsBackend};

#[derive(Debug, Parser)]
#[command(about = "Write a keygate config with N consumers for benchmarks")]
struct Args {
    /// Number of consumers (one live key each).
    #[arg(long, default_value_t = 1000)]
    consumers: usize,
    /// Directory for keygate.yaml, secrets.yaml and keys.txt.
    #[arg(long)]
    out: PathBuf,
    /// How many keys to write to keys.txt (spread evenly over the consumers).
    #[arg(long, default_value_t = 64)]
    keys: usize,
    #[arg(long, default_value = "127.0.0.1:50051")]
    grpc: SocketAddr,
    #[arg(long, default_value = "127.0.0.1:9090")]
    admin: SocketAddr,
    /// keygate's config watch interval.
    #[arg(long, default_value = "1h")]
    watch_interval: String,
    /// Never-denying limits on the provider: `local`, or a `redis://…` URL.
    #[arg(long)]
    limits: Option<String>,
    /// Read the provider key from this Vault (OpenBao) address instead of secrets.yaml.
    #[arg(long)]
    vault: Option<String>,
    /// The Vault token keygate logs in with (written to vault-token).
    #[arg(long, env = "VAULT_TOKEN", default_value = "root")]
    vault_token: String,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let started = Instant::now();
    let mut opts = GenOptions::new(args.consumers, args.grpc, args.admin);
    opts.sample = args.keys;
    opts.watch_interval = args.watch_interval;
    opts.limits = args.limits.map(|l| match l.as_str() {
        "local" => LimitsBackend::Local,
        url => LimitsBackend::Redis(url.to_string()),
    });
    if let Some(address) = args.vault {
        opts.credentials = Credentials::Vault {
            address,
            token: args.vault_token,
        };
    }
    let generated = consumers::write(&args.out, &opts)?;
    let mut keys = std::fs::File::create(args.out.join("keys.txt"))?;
    for k in &generated.keys {
        writeln!(keys, "{k}")?;
    }
    let size = std::fs::metadata(&generated.config)?.len();
    eprintln!(
        "gen-config: {} consumers -> {} ({:.1} MB) in {:.1?}; {} keys in {}",
        args.consumers,
        generated.config.display(),
        size as f64 / 1e6,
        started.elapsed(),
        generated.keys.len(),
        args.out.join("keys.txt").display()
    );
    Ok(())
}
