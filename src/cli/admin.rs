//! `keygate revoke|suspend|resume|unthrottle|consumers|whoami|leaks report`: admin API calls to
//! one or many running keygates, as the operator the token (KEYGATE_ADMIN_TOKEN or
//! --token-file) or the client certificate (--tls-cert/--tls-key) names.
//! The replica that receives a command persists it (state file) and broadcasts it (Redis);
//! calling every replica as well makes the effect immediate even without Redis. With
//! `--config` naming a Vault consumer store, the command is also written there, so it
//! survives every replica restarting.

use std::net::ToSocketAddrs;
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use super::vault_store::Change;
use crate::admin::pb::admin_client::AdminClient;
use crate::admin::pb::{
    ConsumerRequest, KeyRequest, LeakedKey, ListConsumersRequest, ReportLeaksRequest, WhoAmIRequest,
};
use crate::config::ConsumerStatus;

/// Where the admin API is and how to authenticate.
#[derive(Debug, Args)]
pub struct Target {
    /// Comma-separated `host:port` list, or `dns:NAME:PORT` for every address NAME resolves to
    /// (a headless Kubernetes service reaches every replica).
    #[arg(
        long,
        env = "KEYGATE_ADMIN_TARGETS",
        default_value = "127.0.0.1:50052",
        global = true
    )]
    pub targets: String,
    /// File holding your operator token (else KEYGATE_ADMIN_TOKEN; neither is needed when
    /// your client certificate, --tls-cert, identifies you).
    #[arg(long, env = "KEYGATE_ADMIN_TOKEN_FILE", global = true)]
    pub token_file: Option<PathBuf>,
    /// The name `keygate rotate` and `credentials revoke` write into Vault's rotation records
    /// (`rotated_by`, `revoked_by`; default $USER). The audit log never uses it: it names the
    /// operator your token or certificate identifies.
    #[arg(long, global = true)]
    pub actor: Option<String>,
    /// keygate config. suspend, resume and revoke also write a Vault consumer store it names
    /// (with its Vault connection); rotate and credentials read its credentials, rotation
    /// policies and the rotator's Vault login from it.
    #[arg(short, long, env = "KEYGATE_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub tls: TlsArgs,
}

/// TLS to the admin API (`admin.tls` on the server). Giving any of these switches to https.
#[derive(Debug, Args)]
pub struct TlsArgs {
    /// PEM CA that signed the keygates' admin certificates.
    #[arg(long, env = "KEYGATE_ADMIN_TLS_CA", global = true)]
    pub tls_ca: Option<PathBuf>,
    /// Client certificate and key (PEM) when the server asks for mutual TLS.
    #[arg(
        long,
        env = "KEYGATE_ADMIN_TLS_CERT",
        global = true,
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,
    #[arg(
        long,
        env = "KEYGATE_ADMIN_TLS_KEY",
        global = true,
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,
    /// Name to verify in the server certificate (default: the target's host; for
    /// `dns:NAME:PORT`, NAME).
    #[arg(long, env = "KEYGATE_ADMIN_TLS_SERVER_NAME", global = true)]
    pub tls_server_name: Option<String>,
}

impl Target {
    /// The name written into Vault's rotation records: --actor, else $USER.
    pub fn actor(&self) -> String {
        self.actor
            .clone()
            .or_else(|| std::env::var("USER").ok())
            .unwrap_or_else(|| "unknown".into())
    }
}

impl TlsArgs {
    fn enabled(&self) -> bool {
        self.tls_ca.is_some() || self.tls_cert.is_some() || self.tls_server_name.is_some()
    }

    /// The client TLS settings for one target; None for plaintext.
    pub fn config(&self, server_name: Option<&str>) -> anyhow::Result<Option<ClientTlsConfig>> {
        if !self.enabled() {
            return Ok(None);
        }
        let read = |flag: &str, path: &PathBuf| {
            std::fs::read(path).with_context(|| format!("--{flag} {}", path.display()))
        };
        let mut tls = ClientTlsConfig::new();
        if let Some(ca) = &self.tls_ca {
            tls = tls.ca_certificate(Certificate::from_pem(read("tls-ca", ca)?));
        }
        if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
            tls = tls.identity(Identity::from_pem(
                read("tls-cert", cert)?,
                read("tls-key", key)?,
            ));
        }
        if let Some(name) = self.tls_server_name.as_deref().or(server_name) {
            tls = tls.domain_name(name);
        }
        Ok(Some(tls))
    }
}

#[derive(Debug, Subcommand)]
pub enum RevokeCommand {
    /// Revoke every key of a consumer (403 until the store says otherwise).
    Consumer {
        name: String,
        #[arg(long)]
        reason: String,
    },
    /// Revoke one key by id (`kid_…`, printed by `keys create` and `consumers list`).
    Key {
        key_id: String,
        #[arg(long)]
        reason: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConsumersCommand {
    /// Consumers with status, last use, month-to-date spend and key ids.
    List,
}

/// What to do on every target.
pub enum Command {
    Revoke(RevokeCommand),
    Suspend { name: String, reason: String },
    Resume { name: String, reason: String },
    Consumers(ConsumersCommand),
    Unthrottle { name: String, reason: String },
    WhoAmI,
    ReportLeaks(Vec<LeakedKey>),
}

/// The operator token: --token-file, else KEYGATE_ADMIN_TOKEN; none when a client
/// certificate identifies the caller instead.
pub fn token(target: &Target) -> anyhow::Result<Option<String>> {
    let token = match &target.token_file {
        Some(path) => {
            Some(std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?)
        }
        None => std::env::var("KEYGATE_ADMIN_TOKEN").ok(),
    };
    match token.map(|t| t.trim().to_string()) {
        Some(t) if !t.is_empty() => Ok(Some(t)),
        Some(_) => bail!("the admin token is empty"),
        None if target.tls.tls_cert.is_some() => Ok(None),
        None => bail!("set KEYGATE_ADMIN_TOKEN or --token-file, or give a client certificate (--tls-cert/--tls-key)"),
    }
}

/// One keygate to call: its socket address, and for `dns:` targets the name it was found by
/// (the name its TLS certificate carries).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub addr: String,
    pub name: Option<String>,
}

/// Expands `--targets` into socket addresses.
pub fn resolve(targets: &str) -> anyhow::Result<Vec<Resolved>> {
    let mut out = Vec::new();
    for t in targets.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        match t.strip_prefix("dns:") {
            Some(name_port) => {
                let addrs = name_port
                    .to_socket_addrs()
                    .with_context(|| format!("cannot resolve {name_port}"))?;
                let name = name_port.rsplit_once(':').map(|(n, _)| n.to_string());
                out.extend(addrs.map(|a| Resolved {
                    addr: a.to_string(),
                    name: name.clone(),
                }));
            }
            None => out.push(Resolved {
                addr: t.to_string(),
                name: None,
            }),
        }
    }
    if out.is_empty() {
        bail!("--targets names no keygate");
    }
    Ok(out)
}

pub fn run(target: &Target, command: Command) -> anyhow::Result<()> {
    let token = token(target)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut failures = 0;
    for resolved in resolve(&target.targets)? {
        let addr = &resolved.addr;
        let tls = target.tls.config(resolved.name.as_deref())?;
        match runtime.block_on(call(addr, tls, token.as_deref(), &command)) {
            Ok(line) => println!("{addr}: {line}"),
            Err(e) => {
                failures += 1;
                eprintln!("{addr}: error: {e:#}");
            }
        }
    }
    if let (Some(path), Some(change)) = (&target.config, command.durable_change()) {
        match super::vault_store::persist(path, &change) {
            Ok(Some(written)) => println!("store: {written}"),
            Ok(None) => println!(
                "store: consumers are inline in {}; each replica's admin.state_file holds the change",
                path.display()
            ),
            Err(e) => {
                failures += 1;
                eprintln!("store: error: {e:#}");
            }
        }
    }
    if failures > 0 {
        bail!("{failures} step(s) failed");
    }
    Ok(())
}

impl Command {
    /// What the command changes in the consumer store; None for read-only commands.
    fn durable_change(&self) -> Option<Change<'_>> {
        fn status(consumer: &str, status: ConsumerStatus) -> Change<'_> {
            Change::Status { consumer, status }
        }
        match self {
            Command::Revoke(RevokeCommand::Consumer { name, .. }) => {
                Some(status(name, ConsumerStatus::Revoked))
            }
            Command::Revoke(RevokeCommand::Key { key_id, .. }) => {
                Some(Change::RevokeKey { key_id })
            }
            Command::Suspend { name, .. } => Some(status(name, ConsumerStatus::Suspended)),
            Command::Resume { name, .. } => Some(status(name, ConsumerStatus::Active)),
            Command::Consumers(_)
            | Command::Unthrottle { .. }
            | Command::WhoAmI
            | Command::ReportLeaks(_) => None,
        }
    }
}

/// The admin API client, with the operator's bearer token (if any) on every call.
pub type Client = AdminClient<InterceptedService<Channel, Auth>>;

/// Adds `authorization` to every admin call when the operator has a token.
#[derive(Clone)]
pub struct Auth {
    bearer: Option<MetadataValue<Ascii>>,
}

impl Interceptor for Auth {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(bearer) = &self.bearer {
            req.metadata_mut().insert("authorization", bearer.clone());
        }
        Ok(req)
    }
}

/// Connects to one keygate's admin API.
pub async fn connect(
    addr: &str,
    tls: Option<ClientTlsConfig>,
    token: Option<&str>,
) -> anyhow::Result<Client> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut endpoint = Endpoint::from_shared(format!("{scheme}://{addr}"))?
        .connect_timeout(std::time::Duration::from_secs(2))
        .timeout(std::time::Duration::from_secs(5));
    if let Some(tls) = tls {
        endpoint = endpoint.tls_config(tls)?;
    }
    let channel = endpoint.connect().await?;
    let bearer = token
        .map(|t| format!("Bearer {t}").parse())
        .transpose()
        .context("the admin token is not a valid header value")?;
    Ok(AdminClient::with_interceptor(channel, Auth { bearer }))
}

async fn call(
    addr: &str,
    tls: Option<ClientTlsConfig>,
    token: Option<&str>,
    command: &Command,
) -> anyhow::Result<String> {
    let mut client = connect(addr, tls, token).await?;
    let reply = match command {
        Command::Revoke(RevokeCommand::Consumer { name, reason }) => client
            .revoke_consumer(ConsumerRequest {
                consumer: name.clone(),
                reason: reason.clone(),
            })
            .await?
            .into_inner(),
        Command::Revoke(RevokeCommand::Key { key_id, reason }) => client
            .revoke_key(KeyRequest {
                key_id: key_id.clone(),
                reason: reason.clone(),
            })
            .await?
            .into_inner(),
        Command::Suspend { name, reason } => client
            .suspend_consumer(ConsumerRequest {
                consumer: name.clone(),
                reason: reason.clone(),
            })
            .await?
            .into_inner(),
        Command::Resume { name, reason } => client
            .resume_consumer(ConsumerRequest {
                consumer: name.clone(),
                reason: reason.clone(),
            })
            .await?
            .into_inner(),
        Command::Unthrottle { name, reason } => client
            .unthrottle_consumer(ConsumerRequest {
                consumer: name.clone(),
                reason: reason.clone(),
            })
            .await?
            .into_inner(),
        Command::WhoAmI => {
            let me = client.who_am_i(WhoAmIRequest {}).await?.into_inner();
            return Ok(format!(
                "{} (role {}, by {})",
                me.name, me.role, me.authenticated_by
            ));
        }
        Command::ReportLeaks(leaks) => {
            let mut received = 0;
            let mut message = String::from("no leaks to report");
            for chunk in leaks.chunks(1000) {
                let reply = client
                    .report_leaks(ReportLeaksRequest {
                        leaks: chunk.to_vec(),
                    })
                    .await?
                    .into_inner();
                received += reply.received;
                message = reply.message;
            }
            return Ok(format!("{received} sent: {message}"));
        }
        Command::Consumers(ConsumersCommand::List) => {
            let list = client
                .list_consumers(ListConsumersRequest {})
                .await?
                .into_inner();
            let mut out = String::from("\n");
            for c in list.consumers {
                out.push_str(&format!(
                    "  {:<24} {:<10} {:<10} mtd ${:<10.4} last_seen {:<12} keys {}\n",
                    c.name,
                    c.status,
                    c.provider,
                    c.month_to_date_usd,
                    c.last_seen_unix,
                    c.key_ids.join(",")
                ));
            }
            return Ok(out);
        }
    };
    Ok(reply.message)
}
