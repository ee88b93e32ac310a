//! Starting the pieces of a benchmark stack on free loopback ports: the mock provider, keygate
//! (release build, `keygate serve`) and Envoy on a rendered shipped config.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};

use crate::consumers::{self, GenOptions, Generated};
use crate::envoy_cfg::{self, Endpoint, Ports, Variant};
use crate::procs::{self, built_bin, envoy_bin, free_port, loopback, Child};

/// The mock provider with `--no-record`; returns it and its port.
pub fn start_mock(workdir: &Path) -> Result<(Child, u16)> {
    let mut cmd = Command::new(built_bin("mock-provider"));
    cmd.args(["--listen", "127.0.0.1:0", "--no-record"]);
    let (child, line) =
        Child::spawn_reading_line("mock-provider", cmd, workdir, Duration::from_secs(20))?;
    let port = line
        .rsplit(':')
        .next()
        .and_then(|p| p.trim().parse().ok())
        .ok_or_else(|| anyhow!("mock-provider printed {line:?}, expected 'listening on ADDR'"))?;
    Ok((child, port))
}

pub struct Keygate {
    pub child: Child,
    pub grpc: SocketAddr,
    /// The Unix socket it also serves on, when the config set `listeners.grpc_uds`.
    pub uds: Option<PathBuf>,
    pub admin: SocketAddr,
    /// Sampled consumer keys that keygate allows for `consumers::ROUTES`.
    pub keys: Vec<String>,
}

/// Generates a config with `consumers` consumers in `workdir` and serves it (see [`serve`]).
pub fn start_keygate(
    workdir: &Path,
    consumers: usize,
    wrapper: &[String],
    ready_timeout: Duration,
) -> Result<Keygate> {
    start_keygate_with(workdir, consumers, wrapper, ready_timeout, |_| {})
}

/// [`start_keygate`] with the generated config adjusted by `configure` (limits, credentials).
pub fn start_keygate_with(
    workdir: &Path,
    consumers: usize,
    wrapper: &[String],
    ready_timeout: Duration,
    configure: impl FnOnce(&mut GenOptions),
) -> Result<Keygate> {
    let grpc = loopback(free_port()?);
    let admin = loopback(free_port()?);
    let mut opts = GenOptions::new(consumers, grpc, admin);
    configure(&mut opts);
    let generated = consumers::write(workdir, &opts)?;
    let mut keygate = serve(workdir, generated, grpc, admin, wrapper, ready_timeout)?;
    keygate.uds = opts.grpc_uds;
    Ok(keygate)
}

/// Runs `keygate serve` on a generated config (listening on `grpc` and `admin`), prefixed by
/// `wrapper` (e.g. `taskset -c 1`), until /readyz answers 200. `$KEYGATE_BIN` overrides the
/// binary (e.g. to measure a patched build).
pub fn serve(
    workdir: &Path,
    generated: Generated,
    grpc: SocketAddr,
    admin: SocketAddr,
    wrapper: &[String],
    ready_timeout: Duration,
) -> Result<Keygate> {
    let keygate = std::env::var_os("KEYGATE_BIN")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| built_bin("keygate"));
    let mut cmd = match wrapper.split_first() {
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg(&keygate);
            c
        }
        None => Command::new(&keygate),
    };
    cmd.arg("serve").arg("--config").arg(&generated.config);
    if std::env::var_os("KEYGATE_LOG").is_none() {
        cmd.env("KEYGATE_LOG", "warn");
    }
    let mut child = Child::spawn("keygate", cmd, workdir)
        .with_context(|| format!("is {} built?", keygate.display()))?;
    child.wait_http_ok(admin, "/readyz", ready_timeout)?;
    Ok(Keygate {
        child,
        grpc,
        uds: None,
        admin,
        keys: generated.keys,
    })
}

/// Which shipped config an Envoy runs, and how it is changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnvoyKind {
    Baseline,
    ExtAuthz,
    ExtProcHeaders,
    ExtProcUsage,
    /// ext_proc with the request headers and the request body (BUFFERED), nothing else.
    ExtProcBody,
    /// The shipped ext_proc config with held responses (before issue 16).
    ExtProcHeld,
}

impl EnvoyKind {
    pub fn name(self) -> &'static str {
        match self {
            EnvoyKind::Baseline => "baseline",
            EnvoyKind::ExtAuthz => "ext_authz",
            EnvoyKind::ExtProcHeaders => "ext_proc",
            EnvoyKind::ExtProcUsage => "ext_proc+usage",
            EnvoyKind::ExtProcBody => "ext_proc+body",
            EnvoyKind::ExtProcHeld => "ext_proc+held",
        }
    }

    pub fn shipped(self) -> PathBuf {
        let file = match self {
            EnvoyKind::ExtAuthz => "ext_authz.yaml",
            _ => "ext_proc.yaml",
        };
        procs::repo_root().join("envoy").join(file)
    }

    fn variant(self) -> Variant {
        match self {
            EnvoyKind::Baseline => Variant::Baseline,
            EnvoyKind::ExtProcHeaders => Variant::RequestHeadersOnly,
            EnvoyKind::ExtProcBody => Variant::RequestHeadersAndBody,
            EnvoyKind::ExtProcHeld => Variant::HeldResponses,
            EnvoyKind::ExtAuthz | EnvoyKind::ExtProcUsage => Variant::AsShipped,
        }
    }
}

/// Envoy with `--concurrency 1 --use-dynamic-base-id`; returns it and its listener address.
/// `tag` tells apart two Envoys of the same kind in the work directory.
pub fn start_envoy(
    workdir: &Path,
    kind: EnvoyKind,
    tag: &str,
    keygate: Endpoint,
    upstream_port: u16,
) -> Result<(Child, SocketAddr)> {
    let ports = Ports {
        listen: free_port()?,
        admin: free_port()?,
        keygate,
        upstream: upstream_port,
    };
    let name = format!("envoy-{}{tag}", kind.name());
    let config = workdir.join(format!("{name}.yaml"));
    envoy_cfg::render(&kind.shipped(), &config, &ports, kind.variant())?;
    let mut cmd = Command::new(envoy_bin());
    cmd.arg("-c").arg(&config);
    cmd.args(["--concurrency", "1", "--log-level", "warn"]);
    cmd.args(["--use-dynamic-base-id", "--base-id-path"]);
    cmd.arg(workdir.join(format!("{name}.base-id")));
    let mut child = Child::spawn(&name, cmd, workdir)
        .with_context(|| format!("starting Envoy ({})", envoy_bin().display()))?;
    child.wait_http_ok(loopback(ports.admin), "/ready", Duration::from_secs(30))?;
    Ok((child, loopback(ports.listen)))
}
