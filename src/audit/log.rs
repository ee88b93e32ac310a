//! The append-only audit file. Writing never panics and never blocks on anything but the
//! file: failures are counted (`keygate_audit_errors_total`), logged, and the line goes to
//! stderr instead.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use metrics::counter;

use super::entry::AuditEntry;
use crate::telemetry::AUDIT_ERRORS_TOTAL;

/// Why the audit file could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("audit log {path}: {source}")]
pub struct AuditError {
    path: String,
    #[source]
    source: std::io::Error,
}

/// The append-only audit log. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct AuditLog {
    path: Option<PathBuf>,
    file: Mutex<Option<File>>,
    stderr: bool,
    errors: AtomicU64,
}

fn open_append(path: &Path) -> Result<File, AuditError> {
    let mut options = OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path).map_err(|source| AuditError {
        path: path.display().to_string(),
        source,
    })
}

impl AuditLog {
    /// Appends to `path` (created `0600` if missing), or writes to stderr only when `None`.
    pub fn open(path: Option<&Path>) -> Result<Self, AuditError> {
        let file = path.map(open_append).transpose()?;
        Ok(AuditLog {
            path: path.map(Path::to_path_buf),
            stderr: file.is_none(),
            file: Mutex::new(file),
            errors: AtomicU64::new(0),
        })
    }

    /// Also copies every line to stderr when a file is used.
    pub fn with_stderr(mut self, on: bool) -> Self {
        self.stderr = on || self.path.is_none();
        self
    }

    /// Shares it.
    pub fn shared(self) -> Arc<Self> {
        Arc::new(self)
    }

    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Lines that could not be written to the file (they went to stderr).
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// Reopens the file (after log rotation moved it away).
    pub fn reopen(&self) -> Result<(), AuditError> {
        if let Some(path) = &self.path {
            let file = open_append(path)?;
            *self.file.lock().unwrap_or_else(|p| p.into_inner()) = Some(file);
        }
        Ok(())
    }

    /// Appends one line: a single write under the lock, then a flush. Never panics.
    pub fn record(&self, entry: AuditEntry) {
        let line = match entry.to_line() {
            Ok(line) => line,
            Err(e) => {
                self.failed(&format!("serialize: {e}"));
                return;
            }
        };
        let mut to_stderr = self.stderr;
        if self.path.is_some() {
            let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
            let written = match file.as_mut() {
                Some(f) => f
                    .write_all(line.as_bytes())
                    .and_then(|()| f.flush())
                    .map_err(|e| e.to_string()),
                None => Err("not open".to_string()),
            };
            if let Err(e) = written {
                drop(file);
                self.failed(&e);
                to_stderr = true;
            }
        }
        if to_stderr {
            let mut err = std::io::stderr().lock();
            let _ = err.write_all(line.as_bytes()).and_then(|()| err.flush());
        }
    }

    fn failed(&self, error: &str) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        counter!(AUDIT_ERRORS_TOTAL).increment(1);
        tracing::warn!(error, "audit log write failed; the line goes to stderr");
    }
}
