//! Which store the limiter counts in: this process, or Redis shared by every replica with this
//! process as the fallback. A Redis failure never fails a decision: the operation is served
//! locally at this replica's share of each limit, and counted (`keygate_limits_fallback_total`).

use std::sync::Arc;

use super::bucket::Rate;
use super::local::LocalStore;
use super::policy::Window;
use super::redis::RedisLimits;
use super::store::{Kind, LimitStore, Refusal};

pub enum Backend {
    Local(LocalStore),
    Shared {
        redis: Arc<RedisLimits>,
        fallback: LocalStore,
    },
}

impl Backend {
    /// The local store decisions fall back to.
    fn local(&self) -> &LocalStore {
        match self {
            Backend::Local(local)
            | Backend::Shared {
                fallback: local, ..
            } => local,
        }
    }

    /// The share of each limit this replica enforces when it counts locally.
    pub fn share(&self) -> u32 {
        self.local().share()
    }

    pub async fn take(
        &self,
        consumer: &Arc<str>,
        kind: Kind,
        rates: &[(Window, Rate)],
        cost: u64,
    ) -> Result<(), Refusal> {
        if let Backend::Shared { redis, .. } = self {
            if let Ok(result) = redis.take(consumer, kind, rates, cost).await {
                return result;
            }
        }
        self.local().take_now(consumer, kind, rates, cost)
    }

    pub async fn adjust(
        &self,
        consumer: &Arc<str>,
        kind: Kind,
        rates: &[(Window, Rate)],
        delta: i64,
    ) {
        if let Backend::Shared { redis, .. } = self {
            if redis.adjust(consumer, kind, rates, delta).await.is_ok() {
                return;
            }
        }
        self.local().adjust_now(consumer, kind, rates, delta);
    }

    /// Month-to-date spend: shared when Redis answers, else this replica's ledger.
    pub async fn spent(&self, key: &str, month: &str) -> u64 {
        if let Backend::Shared { redis, .. } = self {
            if let Ok(spent) = redis.spent(key, month).await {
                return spent;
            }
        }
        self.local().spent_now(key, month)
    }

    /// Publishes a charge to the shared spend (this replica's ledger already holds it).
    pub async fn add_spend(&self, keys: &[Arc<str>], month: &str, micro_usd: u64) {
        if let Backend::Shared { redis, .. } = self {
            let _ = redis.add_spend(keys, month, micro_usd).await;
        }
    }
}
