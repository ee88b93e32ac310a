//! The storage seam of the limits: where bucket levels and month-to-date spend live.
//!
//! [`LimitStore`] is implemented by [`LocalStore`](super::local::LocalStore) (this process;
//! spend from this replica's ledger) and [`RedisLimits`](super::redis::RedisLimits) (shared by
//! every replica). The limiter decides what to take and when; a store only keeps counts.

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

/// The store could not answer (Redis down or too slow); the caller falls back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("limits store unavailable: {0}")]
pub struct StoreError(pub String);

/// Bucket levels and spend, local or shared.
pub trait LimitStore: Send + Sync {
    /// Takes `cost` from every bucket of `kind` (one per rate, in order), all or none; a
    /// refusal names the bucket that would wait longest.
    fn take(
        &self,
        consumer: &Arc<str>,
        kind: Kind,
        rates: &[(Window, Rate)],
        cost: u64,
    ) -> impl Future<Output = Result<Result<(), Refusal>, StoreError>> + Send;

    /// Moves every bucket of `kind` by `delta` after the fact (positive takes more, negative
    /// gives back), never refusing; a bucket may go into debt.
    fn adjust(
        &self,
        consumer: &Arc<str>,
        kind: Kind,
        rates: &[(Window, Rate)],
        delta: i64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Month-to-date spend of a budget key (a consumer, or a team's key), in micro-dollars.
    fn spent(&self, key: &str, month: &str)
        -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Adds a settled charge to the month's spend of each key.
    fn add_spend(
        &self,
        keys: &[Arc<str>],
        month: &str,
        micro_usd: u64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}
