//! The audit log: one JSON line per key creation, revocation, suspension, resume, throttle,
//! detection and admin call, appended to a file (and/or stderr).
//!
//! An entry cannot carry a secret: keys appear only as [`KeyId`]s (`kid_` + 12 hex digits,
//! validated), every free-text field passes through [`redact`], and fields are private so
//! nothing bypasses the setters. Writing never panics and never blocks on anything but the
//! file: failures are counted (`keygate_audit_errors_total`), logged, and the line goes to
//! stderr instead.

pub mod entry;
pub mod log;

pub use entry::{AuditEntry, AuditEvent, AuditResult};
pub use log::{AuditError, AuditLog};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::KeyId;
    use crate::auth::{key, KeyEnv, KeyHash};
    use crate::notify::redact;
    use crate::notify::redact::MAX_TEXT;
    use std::path::Path;

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
                .key_id(hash.key_id())
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
        assert_eq!(first["key_id"], hash.key_id().to_string());
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
