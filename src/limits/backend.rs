//! Which store the limiter counts in: this process alone, or Redis shared by every replica
//! (decided from local leases, with this replica's share as the counted fallback).

use std::sync::Arc;

use super::bucket::Rate;
use super::local::LocalStore;
use super::policy::Window;
use super::shared::SharedStore;
use super::store::{Kind, LimitStore, Refusal};

pub enum Backend {
    Local(LocalStore),
    Shared(Arc<SharedStore>),
}

impl Backend {
    /// Spent on `key` this `month` by every replica as of the last contact with Redis
    /// (shared store only).
    pub fn spent_seen(&self, key: &str, month: &str) -> Option<u64> {
        match self {
            Backend::Local(_) => None,
            Backend::Shared(shared) => shared.spent_seen(key, month),
        }
    }
}

impl LimitStore for Backend {
    async fn take(
        &self,
        consumer: &Arc<str>,
        kind: Kind,
        rates: &[(Window, Rate)],
        cost: u64,
    ) -> Result<(), Refusal> {
        match self {
            Backend::Local(local) => local.take_now(consumer, kind, rates, cost),
            Backend::Shared(shared) => shared.take(consumer, kind, rates, cost).await,
        }
    }

    fn adjust(&self, consumer: &Arc<str>, kind: Kind, rates: &[(Window, Rate)], delta: i64) {
        match self {
            Backend::Local(local) => local.adjust(consumer, kind, rates, delta),
            Backend::Shared(shared) => shared.adjust(consumer, kind, rates, delta),
        }
    }

    async fn reserve_budget(&self, key: &Arc<str>, month: &str, budget: u64, cost: u64) -> bool {
        match self {
            Backend::Local(local) => local.reserve_budget(key, month, budget, cost).await,
            Backend::Shared(shared) => shared.reserve_budget(key, month, budget, cost).await,
        }
    }

    fn settle_budget(&self, key: &Arc<str>, month: &str, reserved: u64, actual: u64) {
        match self {
            Backend::Local(local) => local.settle_budget(key, month, reserved, actual),
            Backend::Shared(shared) => shared.settle_budget(key, month, reserved, actual),
        }
    }
}
