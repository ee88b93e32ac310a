//! The background half of the shared limits: once per `limits.redis.sync_interval` it checks
//! the Redis epoch (rebuilding the shared totals from this replica's ledger when Redis came
//! back empty), publishes this replica's changed month totals and holdings, tops up the
//! allowances and leases in use, and gives back what idle ones hold. At shutdown it gives
//! everything back, so a restarted replica leaves nothing held in its old name.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::redis::{rebuild_window, BudgetRecord, RedisLimits};
use super::shared::{allowance_size, SharedStore};
use super::store::StoreError;
use crate::accounting::ledger::month_of;

/// Leases and allowances used within this long are kept topped up.
const ACTIVE: Duration = Duration::from_secs(2);
/// Leases and allowances unused for this long are given back.
const IDLE: Duration = Duration::from_secs(5);

/// What a sync pass did (for tests and the debug log).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Synced {
    pub rebuilt: bool,
    pub published: usize,
    pub granted: usize,
    pub given_back: usize,
}

impl SharedStore {
    /// The pause between sync passes.
    pub fn sync_interval(&self) -> Duration {
        **self.sync_interval.load()
    }

    /// One sync pass; stops at the first Redis error (the next pass starts over). Totals and
    /// holdings are published every `fresh() / 2` (or at once when `publish` is set): a
    /// replica's total plus holding only changes when it is granted more, which the grant
    /// itself records, so publishing more often would only cost Redis calls.
    pub async fn sync_once(&self, publish: bool) -> Result<Synced, StoreError> {
        let redis = self.redis.load_full();
        if !redis.available() {
            self.trusted.store(false, Ordering::Relaxed);
            return Err(StoreError("redis is down; retrying shortly".into()));
        }
        let mut synced = Synced::default();
        let month = month_of(SystemTime::now());
        let window = rebuild_window(self.sync_interval());
        let new_id = hex::encode(rand::random::<[u8; 8]>());
        let (epoch, rebuilding) = redis.epoch(&new_id, window).await?;
        if self.epoch.load().as_deref() != Some(&epoch) {
            self.trusted.store(false, Ordering::Relaxed);
            let first = self.epoch.load().is_none();
            self.allowances.republish_all();
            let mut totals = self.ledger.all_totals();
            totals.retain(|(m, _, _)| *m == month);
            synced.published += self.publish(&redis, totals).await?;
            self.epoch.store(Some(Arc::new(epoch)));
            synced.rebuilt = true;
            if !first {
                tracing::warn!(
                    "redis lost the shared limits; republished this replica's month totals"
                );
            }
        }
        self.trusted.store(!rebuilding, Ordering::Relaxed);
        if publish || synced.rebuilt || self.publish_due() {
            synced.published += self.publish(&redis, self.ledger.take_unpublished()).await?;
        }
        synced.granted += self.top_up(&redis, &month, !rebuilding).await?;
        synced.given_back += self.give_back_idle(&redis).await?;
        Ok(synced)
    }

    /// Whether the periodic publication is due (and if so, marks it done).
    fn publish_due(&self) -> bool {
        let mut at = self.published_at.lock().unwrap_or_else(|p| p.into_inner());
        let due = at.is_none_or(|t| t.elapsed() >= self.fresh() / 2);
        if due {
            *at = Some(Instant::now());
        }
        due
    }

    /// Records each changed total with this process's holding, and each changed holding.
    async fn publish(
        &self,
        redis: &RedisLimits,
        totals: Vec<(String, String, u64)>,
    ) -> Result<usize, StoreError> {
        let now = Instant::now();
        let mut records: HashMap<(String, Arc<str>), u64> = totals
            .into_iter()
            .map(|(month, key, total)| ((month, Arc::from(key)), total))
            .collect();
        // Recorded again often enough that an outage finds a fresh view of what was left
        // (and long before Redis would drop the holding as a stopped process's).
        for (key, month, _) in self.allowances.to_publish(now, self.fresh() / 2) {
            let total = self.ledger.month_total(&key, &month);
            records.insert((month, key), total);
        }
        let records: Vec<_> = records.into_iter().collect();
        for (done, ((month, key), total)) in records.iter().enumerate() {
            let record = BudgetRecord {
                key,
                month,
                total: *total,
                holding: self.allowances.outstanding(key),
            };
            match redis.budget_publish(&record).await {
                Ok(view) => self
                    .allowances
                    .observed(key, month, view.spent, view.committed),
                Err(e) => {
                    for ((month, key), _) in &records[done..] {
                        self.allowances.unpublished(key);
                        self.ledger.mark_unpublished(month, key);
                    }
                    return Err(e);
                }
            }
        }
        let published = records.len();
        Ok(published)
    }

    /// Tops up the leases and (when budgets are trusted) allowances in use.
    async fn top_up(
        &self,
        redis: &RedisLimits,
        month: &str,
        budgets: bool,
    ) -> Result<usize, StoreError> {
        let now = Instant::now();
        let replicas = self.replicas();
        let mut granted = 0;
        for work in self.leases.to_refill(now, ACTIVE) {
            let want = u64::try_from(work.units).unwrap_or(0);
            let grant = redis
                .grant(&work.consumer, work.kind, &work.rates, want, 0, true)
                .await?;
            let units = i64::try_from(grant.granted).unwrap_or(i64::MAX);
            self.leases
                .credit(&work.consumer, work.kind, &work.rates, units, replicas);
            granted += 1;
        }
        let Some(epoch) = self.epoch.load_full().filter(|_| budgets) else {
            return Ok(granted);
        };
        let target = |budget| allowance_size(budget, replicas);
        for (key, key_month, budget, missing) in self.allowances.to_top_up(now, ACTIVE, target) {
            if key_month != month {
                continue;
            }
            let record = BudgetRecord {
                key: &key,
                month,
                total: self.ledger.month_total(&key, month),
                holding: self.allowances.outstanding(&key),
            };
            let view = redis
                .budget_grant(&record, missing, budget, &epoch, true)
                .await?;
            match view.granted {
                Some(g) => {
                    self.allowances
                        .granted(&key, month, g, view.spent, view.committed);
                    granted += 1;
                }
                None => {
                    self.trusted.store(false, Ordering::Relaxed);
                    break;
                }
            }
        }
        Ok(granted)
    }

    /// Gives back what idle leases hold (or owe) and drops idle free allowances.
    async fn give_back_idle(&self, redis: &RedisLimits) -> Result<usize, StoreError> {
        let now = Instant::now();
        self.allowances.release_idle(now, IDLE);
        let idle = self.leases.take_idle(now, IDLE);
        let count = idle.len();
        for work in idle {
            redis
                .give_back(&work.consumer, work.kind, &work.rates, work.units)
                .await?;
        }
        Ok(count)
    }

    /// At shutdown: gives back every lease and free allowance and records the final totals,
    /// so nothing stays held in this process's name.
    pub async fn drain(&self) -> Result<(), StoreError> {
        let redis = self.redis.load_full();
        self.allowances.release_all();
        for work in self.leases.take_all() {
            redis
                .give_back(&work.consumer, work.kind, &work.rates, work.units)
                .await?;
        }
        self.publish(&redis, self.ledger.take_unpublished()).await?;
        Ok(())
    }
}
