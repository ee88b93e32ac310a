//! Audit lines for refused admin calls, bounded: a caller hammering the admin API with bad
//! tokens must not grow the audit log without limit. The first few refusals of each minute
//! are written one by one; the rest are counted and written as one summary line when the
//! minute is over. Every refusal is still counted in `keygate_admin_calls_total`.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::audit::{AuditEntry, AuditEvent, AuditLog, AuditResult};

/// Refusals written one by one per window.
pub const PER_WINDOW: u32 = 10;
const WINDOW: Duration = Duration::from_secs(60);

#[derive(Debug)]
struct Window {
    started: Instant,
    logged: u32,
    suppressed: u64,
}

/// Writes refused-call audit lines within the per-minute allowance.
#[derive(Debug)]
pub struct DeniedCalls {
    window: Mutex<Window>,
}

impl Default for DeniedCalls {
    fn default() -> Self {
        DeniedCalls {
            window: Mutex::new(Window {
                started: Instant::now(),
                logged: 0,
                suppressed: 0,
            }),
        }
    }
}

impl DeniedCalls {
    /// Records one refused call: its own audit line while the window allows, else a count.
    pub fn refused(&self, audit: &AuditLog, entry: AuditEntry, now: Instant) {
        let mut w = self.window.lock().unwrap_or_else(|p| p.into_inner());
        Self::roll(&mut w, audit, now);
        if w.logged < PER_WINDOW {
            w.logged += 1;
            audit.record(entry);
        } else {
            w.suppressed += 1;
        }
    }

    /// Writes the summary of a finished window (call on any admin call, so it is not held
    /// back until the next refusal).
    pub fn flush(&self, audit: &AuditLog, now: Instant) {
        let mut w = self.window.lock().unwrap_or_else(|p| p.into_inner());
        Self::roll(&mut w, audit, now);
    }

    fn roll(w: &mut Window, audit: &AuditLog, now: Instant) {
        if now.duration_since(w.started) < WINDOW {
            return;
        }
        if w.suppressed > 0 {
            audit.record(
                AuditEntry::new(AuditEvent::AdminCall, "keygate")
                    .result(AuditResult::Denied)
                    .reason(&format!(
                        "{} more refused admin calls in the minute before were not logged one by one",
                        w.suppressed
                    )),
            );
        }
        *w = Window {
            started: now,
            logged: 0,
            suppressed: 0,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_past_the_allowance_become_one_summary_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let audit = AuditLog::open(Some(&path)).unwrap();
        let calls = DeniedCalls::default();
        let start = Instant::now();
        let refusal = || {
            AuditEntry::new(AuditEvent::AdminCall, "mallory")
                .result(AuditResult::Denied)
                .reason("unauthenticated")
        };
        for _ in 0..1000 {
            calls.refused(&audit, refusal(), start);
        }
        let lines = || std::fs::read_to_string(&path).unwrap().lines().count();
        assert_eq!(lines(), PER_WINDOW as usize);
        calls.flush(&audit, start + WINDOW);
        assert_eq!(lines(), PER_WINDOW as usize + 1);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("990 more refused admin calls"), "{text}");
        calls.refused(&audit, refusal(), start + WINDOW);
        assert_eq!(lines(), PER_WINDOW as usize + 2, "a new window logs again");
    }
}
