//! The audit log: one JSON line per key creation, revocation, suspension, resume, throttle,
//! detection and admin call, appended to a file (and/or stderr).
//!
//! An entry cannot carry a secret: keys appear only as [`KeyId`]s (`kid_` + 12 hex digits,
//! validated), every free-text field passes through [`redact`], and fields are private so
//! nothing bypasses the setters. Writing never panics and never blocks on anything but the
//! file: failures are counted (`keygate_audit_errors_total`), logged, and the line goes to
//! stderr instead.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use metrics::counter;
use serde::Serialize;

use crate::detect::serde_helpers::rfc3339;
use crate::detect::{Action, Detection, DetectorKind, Evidence};
pub use crate::notify::redact::{redact, KeyId, KeyIdError};

/// `keygate_audit_errors_total`: audit lines that could not be written to the file.
pub const AUDIT_ERRORS_TOTAL: &str = "keygate_audit_errors_total";

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditEvent {
    KeyCreated,
    KeyRevoked,
    ConsumerSuspended,
    ConsumerResumed,
    ConsumerRevoked,
    ConsumerThrottled,
    ConsumerUnthrottled,
    Detection,
    AdminCall,
}

impl AuditEvent {
    pub fn as_str(self) -> &'static str {
        match self {
            AuditEvent::KeyCreated => "key_created",
            AuditEvent::KeyRevoked => "key_revoked",
            AuditEvent::ConsumerSuspended => "consumer_suspended",
            AuditEvent::ConsumerResumed => "consumer_resumed",
            AuditEvent::ConsumerRevoked => "consumer_revoked",
            AuditEvent::ConsumerThrottled => "consumer_throttled",
            AuditEvent::ConsumerUnthrottled => "consumer_unthrottled",
            AuditEvent::Detection => "detection",
            AuditEvent::AdminCall => "admin_call",
        }
    }
}

/// How it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditResult {
    Ok,
    /// Refused (bad credentials, not allowed, unknown consumer).
    Denied,
    Error,
}

/// One audit line. Built with [`AuditEntry::new`] or [`AuditEntry::from_detection`] and the
/// setters; the fields `at, event, actor, reason, consumer, key_id, detector, result` are
/// always present (null when unset).
#[derive(Debug, Clone, Serialize)]
pub struct AuditEntry {
    #[serde(with = "rfc3339")]
    at: SystemTime,
    event: AuditEvent,
    actor: String,
    reason: Option<String>,
    consumer: Option<String>,
    key_id: Option<KeyId>,
    detector: Option<DetectorKind>,
    result: AuditResult,
    #[serde(skip_serializing_if = "Option::is_none")]
    action: Option<Action>,
    #[serde(skip_serializing_if = "Option::is_none")]
    request: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    evidence: Option<Evidence>,
}

impl AuditEntry {
    /// `event` by `actor` (e.g. `admin`, `cli`, `detector`), now, result `ok`.
    pub fn new(event: AuditEvent, actor: &str) -> Self {
        AuditEntry {
            at: SystemTime::now(),
            event,
            actor: redact(actor),
            reason: None,
            consumer: None,
            key_id: None,
            detector: None,
            result: AuditResult::Ok,
            action: None,
            request: None,
            evidence: None,
        }
    }

    /// A detector firing, with its action and evidence.
    pub fn from_detection(d: &Detection) -> Self {
        let mut entry = AuditEntry::new(AuditEvent::Detection, "detector")
            .consumer(&d.consumer)
            .detector(d.detector)
            .action(d.action);
        entry.at = d.at;
        entry.evidence = Some(d.evidence.clone());
        entry
    }

    pub fn at(mut self, at: SystemTime) -> Self {
        self.at = at;
        self
    }

    pub fn reason(mut self, reason: &str) -> Self {
        self.reason = Some(redact(reason));
        self
    }

    pub fn consumer(mut self, consumer: &str) -> Self {
        self.consumer = Some(redact(consumer).chars().take(128).collect());
        self
    }

    pub fn key_id(mut self, key_id: KeyId) -> Self {
        self.key_id = Some(key_id);
        self
    }

    pub fn detector(mut self, detector: DetectorKind) -> Self {
        self.detector = Some(detector);
        self
    }

    pub fn action(mut self, action: Action) -> Self {
        self.action = Some(action);
        self
    }

    pub fn result(mut self, result: AuditResult) -> Self {
        self.result = result;
        self
    }

    /// The admin call, as `METHOD /path` (the query is dropped).
    pub fn request(mut self, method: &str, path: &str) -> Self {
        let path = path.split('?').next().unwrap_or_default();
        self.request = Some(redact(&format!("{method} {path}")));
        self
    }

    pub fn event(&self) -> AuditEvent {
        self.event
    }

    /// The JSON line, newline included.
    pub fn to_line(&self) -> Result<String, serde_json::Error> {
        let mut line = serde_json::to_string(self)?;
        line.push('\n');
        Ok(line)
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{key, KeyEnv, KeyHash};
    use crate::notify::redact::MAX_TEXT;

    fn lines(path: &Path) -> Vec<serde_json::Value> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn lines_are_json_with_the_fixed_fields_and_append_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = AuditLog::open(Some(&path)).unwrap();
        let hash = KeyHash::of("kg_test_whatever");
        log.record(
            AuditEntry::new(AuditEvent::KeyRevoked, "admin")
                .consumer("team-a")
                .key_id(KeyId::from(&hash))
                .reason("laptop stolen")
                .request("POST", "/admin/keys/kid_0123456789ab/revoke?token=x"),
        );
        drop(log);
        let log = AuditLog::open(Some(&path)).unwrap();
        log.record(AuditEntry::new(AuditEvent::AdminCall, "admin").result(AuditResult::Denied));
        let all = lines(&path);
        assert_eq!(all.len(), 2);
        let first = &all[0];
        assert_eq!(first["event"], "key_revoked");
        assert_eq!(first["key_id"], hash.key_id());
        assert_eq!(first["request"], "POST /admin/keys/kid_0123456789ab/revoke");
        assert_eq!(first["result"], "ok");
        for field in [
            "at", "event", "actor", "reason", "consumer", "key_id", "detector", "result",
        ] {
            assert!(all[1].get(field).is_some(), "{field} missing");
        }
        assert!(all[1]["reason"].is_null());
        assert_eq!(all[1]["result"], "denied");
        humantime::parse_rfc3339(first["at"].as_str().unwrap()).unwrap();
        assert_eq!(log.errors(), 0);
    }

    #[test]
    fn concurrent_writers_never_interleave() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = AuditLog::open(Some(&path)).unwrap().shared();
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let log = log.clone();
                std::thread::spawn(move || {
                    for i in 0..250 {
                        let reason = format!("{t}-{i} {}", "x".repeat(900));
                        log.record(AuditEntry::new(AuditEvent::AdminCall, "admin").reason(&reason));
                    }
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        assert_eq!(lines(&path).len(), 2000);
    }

    #[test]
    fn nothing_secret_gets_in() {
        let secret = key::generate(KeyEnv::Live).unwrap();
        let text = key::reveal(&secret);
        let hash = KeyHash::of(text).to_string();
        assert!(text.parse::<KeyId>().is_err());
        assert!("kid_0123456789AB".parse::<KeyId>().is_err());
        assert!("kid_0123456789ab".parse::<KeyId>().is_ok());
        let entry = AuditEntry::new(AuditEvent::KeyCreated, &format!("cli {text}"))
            .consumer(text)
            .reason(&format!("rotated {text}; old {hash}, sk-proj-abcdefghijklmnopqrstuv, jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.sig"))
            .request("GET", &format!("/admin?key={text}"));
        let line = entry.to_line().unwrap();
        assert!(!line.contains(&text[8..38]), "{line}");
        assert!(!line.contains(&hash[7..]), "{line}");
        assert!(!line.contains("sk-proj"), "{line}");
        assert!(!line.contains("eyJzdWIi"), "{line}");
        assert_eq!(
            redact("suspend team-a: 20x spike, kid_0123456789ab"),
            "suspend team-a: 20x spike, kid_0123456789ab"
        );
        assert_eq!(redact("a\nb"), "ab");
        assert_eq!(redact(&"word ".repeat(1000)).len(), MAX_TEXT);
    }

    #[test]
    fn stderr_only_and_unwritable_files_never_panic() {
        let log = AuditLog::open(None).unwrap();
        log.record(AuditEntry::new(AuditEvent::AdminCall, "admin"));
        assert_eq!(log.errors(), 0);
        assert!(AuditLog::open(Some(Path::new("/nonexistent/dir/audit.jsonl"))).is_err());
    }
}
