//! The spend ledger: micro-dollars per consumer per calendar month (UTC), in memory for reads
//! and persisted to an embedded redb file so a restart loses nothing. Writes are flushed in
//! the background (at least every second) and on shutdown.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

/// key: "YYYY-MM/consumer" → micro-dollars.
const SPEND: TableDefinition<&str, u64> = TableDefinition::new("spend_micro_usd");
/// key: "replica" → this ledger's replica id (shared limits name its totals by it).
const META: TableDefinition<&str, &str> = TableDefinition::new("meta");

/// Why the ledger file could not be used.
#[derive(Debug, thiserror::Error)]
#[error("ledger {path}: {reason}")]
pub struct LedgerError {
    path: String,
    reason: String,
}

#[derive(Default)]
struct State {
    /// `YYYY-MM/consumer` → micro-dollars. The sets below share these keys, not copies.
    totals: HashMap<Arc<str>, u64>,
    /// Keys changed since the last flush (none kept for a ledger without a file).
    dirty: HashSet<Arc<str>>,
    /// Keys changed since shared limits last published them.
    unpublished: HashSet<Arc<str>>,
}

pub struct Ledger {
    state: Mutex<State>,
    db: Option<(Database, String)>,
    replica: String,
}

/// A fresh random replica id (hex).
fn new_replica_id() -> String {
    let bytes: [u8; 8] = rand::random();
    hex::encode(bytes)
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger")
            .field("persistent", &self.db.is_some())
            .finish()
    }
}

/// The ledger key of a team's shared budget (consumer names cannot contain `:`).
pub fn team_key(team: &str) -> String {
    format!("team:{team}")
}

/// The calendar month (UTC) of a time, as `YYYY-MM`.
pub fn month_of(time: SystemTime) -> String {
    let text = humantime::format_rfc3339_seconds(time).to_string();
    text.get(..7).unwrap_or("0000-00").to_string()
}

impl Ledger {
    /// A ledger that lives only in memory (tests, or `usage.ledger: ""`).
    pub fn in_memory() -> Self {
        Ledger {
            state: Mutex::new(State::default()),
            db: None,
            replica: new_replica_id(),
        }
    }

    /// This ledger's replica id: stable across restarts for a ledger file, so the totals a
    /// replica publishes to shared limits are replaced, never added twice.
    pub fn replica(&self) -> &str {
        &self.replica
    }

    /// Opens (or creates) the ledger file and loads every stored month.
    pub fn open(path: &Path) -> Result<Self, LedgerError> {
        let shown = path.display().to_string();
        let fail = |reason: String| LedgerError {
            path: shown.clone(),
            reason,
        };
        let db = Database::create(path).map_err(|e| fail(e.to_string()))?;
        let mut totals = HashMap::new();
        let replica = {
            let txn = db.begin_write().map_err(|e| fail(e.to_string()))?;
            txn.open_table(SPEND).map_err(|e| fail(e.to_string()))?;
            let replica = {
                let mut meta = txn.open_table(META).map_err(|e| fail(e.to_string()))?;
                let stored = meta
                    .get("replica")
                    .map_err(|e| fail(e.to_string()))?
                    .map(|v| v.value().to_string());
                match stored {
                    Some(id) => id,
                    None => {
                        let id = new_replica_id();
                        meta.insert("replica", id.as_str())
                            .map_err(|e| fail(e.to_string()))?;
                        id
                    }
                }
            };
            txn.commit().map_err(|e| fail(e.to_string()))?;
            replica
        };
        let txn = db.begin_read().map_err(|e| fail(e.to_string()))?;
        let table = txn.open_table(SPEND).map_err(|e| fail(e.to_string()))?;
        for entry in table.iter().map_err(|e| fail(e.to_string()))? {
            let (k, v) = entry.map_err(|e| fail(e.to_string()))?;
            totals.insert(Arc::from(k.value()), v.value());
        }
        drop(table);
        drop(txn);
        Ok(Ledger {
            state: Mutex::new(State {
                totals,
                dirty: HashSet::new(),
                unpublished: HashSet::new(),
            }),
            db: Some((db, shown)),
            replica,
        })
    }

    fn key(month: &str, consumer: &str) -> String {
        format!("{month}/{consumer}")
    }

    /// Adds spend to a consumer's month and returns the new month-to-date total.
    pub fn add(&self, consumer: &str, micro_usd: u64, at: SystemTime) -> u64 {
        let key = Ledger::key(&month_of(at), consumer);
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let (key, total) = match state.totals.get_key_value(key.as_str()) {
            Some((k, v)) => (k.clone(), v.saturating_add(micro_usd)),
            None => (Arc::from(key), micro_usd),
        };
        state.totals.insert(key.clone(), total);
        if self.db.is_some() {
            state.dirty.insert(key.clone());
        }
        state.unpublished.insert(key);
        total
    }

    /// A consumer's spend in the month of `at`.
    pub fn month_to_date(&self, consumer: &str, at: SystemTime) -> u64 {
        self.month_total(consumer, &month_of(at))
    }

    /// A consumer's (or a team key's) spend in `month` (`YYYY-MM`).
    pub fn month_total(&self, consumer: &str, month: &str) -> u64 {
        let key = Ledger::key(month, consumer);
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.totals.get(key.as_str()).copied().unwrap_or(0)
    }

    /// Every consumer's spend in the month of `at`.
    pub fn month(&self, at: SystemTime) -> Vec<(String, u64)> {
        let prefix = format!("{}/", month_of(at));
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state
            .totals
            .iter()
            .filter_map(|(k, v)| k.strip_prefix(&prefix).map(|c| (c.to_string(), *v)))
            .collect()
    }

    /// Drops from memory the totals of months before `keep_from` (`YYYY-MM`) that are
    /// already on disk; the ledger file keeps them. Budgets and shared limits read only the
    /// current month (the previous one around its end), so without this the in-memory ledger
    /// would grow by a key per consumer every month the process runs. Returns how many
    /// totals were dropped.
    pub fn forget_before(&self, keep_from: &str) -> usize {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let State {
            totals,
            dirty,
            unpublished,
        } = &mut *state;
        let old = |k: &Arc<str>| k.get(..7).is_some_and(|month| month < keep_from);
        unpublished.retain(|k| !old(k));
        let before = totals.len();
        totals.retain(|k, _| !old(k) || dirty.contains(k));
        before - totals.len()
    }

    /// The (month, key, total) of every key changed since the last call: what shared limits
    /// must publish.
    pub fn take_unpublished(&self) -> Vec<(String, String, u64)> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let keys = std::mem::take(&mut state.unpublished);
        keys.into_iter()
            .filter_map(|k| {
                let total = *state.totals.get(&*k)?;
                let (month, key) = k.split_once('/')?;
                Some((month.to_string(), key.to_string(), total))
            })
            .collect()
    }

    /// Puts a key back among the unpublished (its publication failed).
    pub fn mark_unpublished(&self, month: &str, key: &str) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let key = Ledger::key(month, key);
        let key = match state.totals.get_key_value(key.as_str()) {
            Some((k, _)) => k.clone(),
            None => Arc::from(key),
        };
        state.unpublished.insert(key);
    }

    /// Every (month, key, total): what a rebuild of shared limits publishes.
    pub fn all_totals(&self) -> Vec<(String, String, u64)> {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state
            .totals
            .iter()
            .filter_map(|(k, v)| {
                let (month, key) = k.split_once('/')?;
                Some((month.to_string(), key.to_string(), *v))
            })
            .collect()
    }

    /// Writes changed totals to disk in one transaction.
    pub fn flush(&self) -> Result<usize, LedgerError> {
        let Some((db, shown)) = &self.db else {
            return Ok(0);
        };
        let fail = |e: &dyn std::fmt::Display| LedgerError {
            path: shown.clone(),
            reason: e.to_string(),
        };
        let batch: Vec<(Arc<str>, u64)> = {
            let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            let dirty = std::mem::take(&mut state.dirty);
            dirty
                .into_iter()
                .filter_map(|k| state.totals.get(&*k).map(|v| (k, *v)))
                .collect()
        };
        if batch.is_empty() {
            return Ok(0);
        }
        let written = (|| {
            let txn = db.begin_write().map_err(|e| fail(&e))?;
            {
                let mut table = txn.open_table(SPEND).map_err(|e| fail(&e))?;
                for (k, v) in &batch {
                    table.insert(&**k, *v).map_err(|e| fail(&e))?;
                }
            }
            txn.commit().map_err(|e| fail(&e))
        })();
        if let Err(e) = written {
            // Keep the keys dirty so the next flush writes them; totals stay in memory.
            let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            state.dirty.extend(batch.into_iter().map(|(k, _)| k));
            return Err(e);
        }
        Ok(batch.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn old_months_leave_memory_once_written_and_stay_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.redb");
        let ledger = Ledger::open(&path).unwrap();
        ledger.add("a", 5, at("2026-09-10T00:00:00Z"));
        ledger.add("a", 7, at("2026-11-10T00:00:00Z"));
        assert_eq!(ledger.forget_before("2026-10"), 0, "not written yet");
        ledger.flush().unwrap();
        assert_eq!(ledger.forget_before("2026-10"), 1);
        assert_eq!(ledger.month_total("a", "2026-09"), 0, "gone from memory");
        assert_eq!(ledger.month_total("a", "2026-11"), 7);
        assert!(ledger
            .take_unpublished()
            .iter()
            .all(|(m, _, _)| m == "2026-11"));
        drop(ledger);
        let reopened = Ledger::open(&path).unwrap();
        assert_eq!(reopened.month_total("a", "2026-09"), 5, "kept in the file");
    }

    fn at(text: &str) -> SystemTime {
        humantime::parse_rfc3339(text).unwrap()
    }

    #[test]
    fn months_are_utc_calendar_months() {
        assert_eq!(month_of(at("2026-11-30T23:59:59Z")), "2026-11");
        assert_eq!(month_of(at("2026-12-01T00:00:00Z")), "2026-12");
    }

    #[test]
    fn spend_survives_a_reopen_and_months_are_separate() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.redb");
        let nov = at("2026-11-15T12:00:00Z");
        {
            let ledger = Ledger::open(&path).unwrap();
            assert_eq!(ledger.add("team-a", 1_500, nov), 1_500);
            assert_eq!(
                ledger.add("team-a", 500, nov + Duration::from_secs(60)),
                2_000
            );
            ledger.add("team-b", 7, nov);
            assert_eq!(ledger.flush().unwrap(), 2);
            assert_eq!(ledger.flush().unwrap(), 0, "nothing dirty after a flush");
        }
        let ledger = Ledger::open(&path).unwrap();
        assert_eq!(ledger.month_to_date("team-a", nov), 2_000);
        assert_eq!(
            ledger.month_to_date("team-a", at("2026-12-01T00:00:01Z")),
            0
        );
        let mut month = ledger.month(nov);
        month.sort();
        assert_eq!(month, vec![("team-a".into(), 2_000), ("team-b".into(), 7)]);
    }
}
