//! The storage seam of the limits: where bucket levels and month-to-date spend live.
//!
//! [`LimitStore`] is implemented by [`LocalStore`](super::local::LocalStore) (this process;
//! spend from this replica's ledger) and [`SharedStore`](super::shared::SharedStore) (shared
//! by every replica through Redis, deciding from local leases). The limiter decides what to
//! take and when; a store only keeps counts.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use super::bucket::Rate;
use super::policy::Window;

/// Which of a consumer's bucket sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Requests,
    Tokens,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Requests => "requests",
            Kind::Tokens => "tokens",
        }
    }
}

/// Which limit refused, and when to retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    pub window: Window,
    pub limit: u64,
    pub retry_after: Duration,
}

/// Redis could not answer (down or too slow); the shared store falls back to its share.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("limits store unavailable: {0}")]
pub struct StoreError(pub String);

/// Bucket levels and budgets, local or shared. A store always answers: the shared one decides
/// from its leases, and from this replica's share while Redis is away.
pub trait LimitStore: Send + Sync {
    /// Takes `cost` from every bucket of `kind` (one per rate, in order), all or none; a
    /// refusal names the bucket that would wait longest.
    fn take(
        &self,
        consumer: &Arc<str>,
        kind: Kind,
        rates: &[(Window, Rate)],
        cost: u64,
    ) -> impl Future<Output = Result<(), Refusal>> + Send;

    /// Moves every bucket of `kind` by `delta` after the fact (positive takes more, negative
    /// gives back), never refusing; a bucket may go into debt.
    fn adjust(&self, consumer: &Arc<str>, kind: Kind, rates: &[(Window, Rate)], delta: i64);

    /// Reserves `micro_usd` of `key`'s monthly `budget` (a consumer, or a team's key) for
    /// `month`; false when spend, reservations in flight and this one would pass it.
    fn reserve_budget(
        &self,
        key: &Arc<str>,
        month: &str,
        budget: u64,
        micro_usd: u64,
    ) -> impl Future<Output = bool> + Send;

    /// Ends a reservation of `reserved` that was charged `actual` (already in the ledger).
    fn settle_budget(&self, key: &Arc<str>, month: &str, reserved: u64, actual: u64);
}
