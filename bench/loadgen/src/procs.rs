//! Child processes for the benchmarks (mock provider, keygate, Envoy) and where their binaries
//! are. A child is stopped when its [`Child`] drops, which also happens on panic and on Ctrl-C
//! (the binaries turn SIGINT into an early return); every child also gets
//! `PR_SET_PDEATHSIG = SIGKILL`, so it dies with the harness even if the harness is killed.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

/// The repository root: `$KEYGATE_REPO`, else two levels above this crate.
pub fn repo_root() -> PathBuf {
    match std::env::var_os("KEYGATE_REPO") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."),
    }
}

/// A binary built by cargo: `$KEYGATE_BENCH_BIN_DIR/NAME`, else `<repo>/target/release/NAME`.
pub fn built_bin(name: &str) -> PathBuf {
    match std::env::var_os("KEYGATE_BENCH_BIN_DIR") {
        Some(dir) => PathBuf::from(dir).join(name),
        None => repo_root().join("target/release").join(name),
    }
}

/// Envoy: `$ENVOY`, else the project's virtualenv, else `envoy` on PATH.
pub fn envoy_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("ENVOY") {
        return PathBuf::from(p);
    }
    let venv = repo_root().join(".venv/bin/envoy");
    if venv.exists() {
        venv
    } else {
        PathBuf::from("envoy")
    }
}

/// A loopback port that was free a moment ago (the same small race as the Python harness).
pub fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("binding a free port")?;
    Ok(l.local_addr()?.port())
}

pub fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// The status code of `GET path` on `addr` (one HTTP/1.1 request, then close).
pub fn http_status(addr: SocketAddr, path: &str) -> std::io::Result<u16> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head)?;
    std::str::from_utf8(&head[9..12])
        .ok()
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other("not an HTTP response"))
}

/// `GET path` on `addr`: the status and the body (for small answers such as /metrics).
pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    let status = raw
        .get(9..12)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other("not an HTTP response"))?;
    let body = raw.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    Ok((status, body.to_string()))
}

/// A running child process; stopped (SIGTERM, then SIGKILL after 5 s) on drop.
pub struct Child {
    pub name: String,
    child: std::process::Child,
    log: PathBuf,
    // Kept open so a child that writes more to stdout never gets SIGPIPE.
    _stdout: Option<std::process::ChildStdout>,
}

impl Child {
    /// Starts `cmd` with stdout and stderr appended to `<workdir>/<name>.log`.
    pub fn spawn(name: &str, mut cmd: Command, workdir: &Path) -> Result<Child> {
        let log = workdir.join(format!("{name}.log"));
        let file = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        cmd.stdout(file.try_clone()?).stderr(file);
        Self::start(name, cmd, log, false)
    }

    /// Starts `cmd` with stdout piped (stderr to the log) and returns the first stdout line.
    pub fn spawn_reading_line(
        name: &str,
        mut cmd: Command,
        workdir: &Path,
        timeout: Duration,
    ) -> Result<(Child, String)> {
        let log = workdir.join(format!("{name}.log"));
        cmd.stdout(Stdio::piped()).stderr(File::create(&log)?);
        let mut child = Self::start(name, cmd, log, true)?;
        let stdout = child
            ._stdout
            .take()
            .ok_or_else(|| anyhow!("{name}: no stdout"))?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let read = reader.read_line(&mut line).map(|_| line);
            let _ = tx.send((read, reader.into_inner()));
        });
        match rx.recv_timeout(timeout) {
            Ok((Ok(line), stdout)) if !line.is_empty() => {
                child._stdout = Some(stdout);
                Ok((child, line.trim().to_string()))
            }
            _ => bail!(
                "{name} printed no line within {timeout:?}\n{}",
                child.log_tail()
            ),
        }
    }

    fn start(name: &str, mut cmd: Command, log: PathBuf, piped: bool) -> Result<Child> {
        cmd.stdin(Stdio::null());
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {name}: {cmd:?}"))?;
        let stdout = if piped { child.stdout.take() } else { None };
        Ok(Child {
            name: name.to_string(),
            child,
            log,
            _stdout: stdout,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The last lines of the child's log, for error messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(30)..].join("\n");
        format!("--- {} ({}) ---\n{tail}", self.name, self.log.display())
    }

    /// Fails (with the log tail) if the child has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        match self.child.try_wait()? {
            None => Ok(()),
            Some(status) => bail!("{} exited: {status}\n{}", self.name, self.log_tail()),
        }
    }

    /// Polls `GET path` until it answers 200.
    pub fn wait_http_ok(&mut self, addr: SocketAddr, path: &str, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            self.check_alive()?;
            let status = http_status(addr, path);
            if matches!(status, Ok(200)) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "{}: http://{addr}{path} not 200 within {timeout:?} (last: {status:?})\n{}",
                    self.name,
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        if let Ok(pid) = libc::pid_t::try_from(self.child.id()) {
            // SAFETY: plain syscall on our own child's pid, which we have not reaped yet.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Resident and peak resident memory of a process, in KiB (VmRSS, VmHWM).
pub fn rss_kib(pid: u32) -> Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> Result<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| anyhow!("/proc/{pid}/status has no {name}"))
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

/// CPU time a process has used (user + system), from /proc/PID/stat.
pub fn cpu_time(pid: u32) -> Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| anyhow!("bad /proc/{pid}/stat"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> Result<u64> {
        fields
            .get(i)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| anyhow!("bad /proc/{pid}/stat field {i}"))
    };
    // SAFETY: sysconf has no preconditions.
    let hz = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).unwrap_or(100);
    let total = ticks(11)? + ticks(12)?;
    Ok(Duration::from_millis(total * 1000 / hz.max(1)))
}
